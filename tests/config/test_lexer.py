from __future__ import annotations

from pyntpd.config.diagnostics import DiagnosticSink
from pyntpd.config.lexer import MAX_LINE_LENGTH, lex

from .helpers import messages, only_error, only_warning, parse


def _lex(text: str) -> tuple[list[list[str]], DiagnosticSink]:
    sink = DiagnosticSink()
    lines = lex(text, "f", sink)
    return [[t.text for t in line.tokens] for line in lines], sink


def test_comment_runs_to_end_of_line():
    lines, sink = _lex("server a # prefer\n# whole line\n")
    assert lines == [["server", "a"]]
    assert not sink.items


def test_tokens_are_split_on_spaces_and_tabs():
    lines, _ = _lex("server\t a \t iburst")
    assert lines == [["server", "a", "iburst"]]


def test_token_columns_are_one_based():
    sink = DiagnosticSink()
    (line,) = lex("  server  a", "f", sink)
    assert [(t.line, t.col) for t in line.tokens] == [(1, 3), (1, 11)]


def test_quoted_string_keeps_spaces_and_hash():
    lines, sink = _lex('driftfile "/var/lib/my drift#1"')
    assert lines == [["driftfile", "/var/lib/my drift#1"]]
    assert not sink.items


def test_unterminated_quote_is_an_error_and_drops_the_line():
    lines, sink = _lex('driftfile "/var/lib/drift\nserver b')
    assert lines == [["server", "b"]]
    assert [str(d) for d in sink.items] == [
        "f:1:11: error: unterminated quoted string; line ignored"
    ]


def test_crlf_line_endings_are_accepted_silently():
    lines, sink = _lex("server a\r\nserver b\r\n")
    assert lines == [["server", "a"], ["server", "b"]]
    assert not sink.items


def test_nbsp_separates_tokens_with_one_warning_listing_lines():
    text = "server\u00a0a\nserver b\nserver\u00a0c\u00a0iburst\n"
    lines, sink = _lex(text)
    assert lines == [["server", "a"], ["server", "b"], ["server", "c", "iburst"]]
    (warning,) = sink.items
    assert str(warning).startswith(
        "f:1:7: warning: non-breaking spaces used as separators on lines 1, 3 "
        "(copied from a web page?); treated as spaces"
    )


def test_nbsp_inside_a_comment_is_not_reported():
    lines, sink = _lex("#\u00a0comment\u00a0only\nserver a # x\u00a0y\n")
    assert lines == [["server", "a"]]
    assert not sink.items


def test_other_unicode_spaces_are_separators_and_named_in_the_warning():
    lines, sink = _lex("server\u3000a\u2003iburst")
    assert lines == [["server", "a", "iburst"]]
    (warning,) = sink.items
    assert "Unicode space characters (U+2003, U+3000) used as separators on line 1" in str(
        warning
    )


def test_byte_order_mark_at_start_is_a_separator():
    lines, sink = _lex("\ufeffserver a")
    assert lines == [["server", "a"]]
    assert "U+FEFF" in str(sink.items[0])


def test_nul_byte_is_an_error_and_drops_the_line():
    lines, sink = _lex("server a\x00b\nserver c")
    assert lines == [["server", "c"]]
    assert [str(d) for d in sink.items] == ["f:1:9: error: NUL byte; line ignored"]


def test_control_character_is_an_error():
    lines, sink = _lex("server a\x07")
    assert lines == []
    assert "control character U+0007" in str(sink.items[0])


def test_control_character_in_a_comment_is_an_error():
    _lines, sink = _lex("server a # hidden\x1b[2K")
    assert "f:1:18: error: control character U+001B" in str(sink.items[0])


def test_bidi_override_is_an_error():
    lines, sink = _lex("server a\u202eb")
    assert lines == []
    assert "U+202E" in str(sink.items[0])


def test_line_longer_than_limit_is_an_error_and_ignored():
    lines, sink = _lex("server " + "a" * MAX_LINE_LENGTH + "\nserver b")
    assert lines == [["server", "b"]]
    assert str(sink.items[0]).startswith(f"f:1:{MAX_LINE_LENGTH + 1}: error: line is")


def test_line_at_the_limit_is_accepted():
    _lines, sink = _lex("#" * MAX_LINE_LENGTH)
    assert not sink.items


def test_blank_file_gives_an_empty_config():
    result = parse("\n\n   \n# nothing\n")
    assert not result.diagnostics
    assert result.config.servers == ()


def test_nbsp_warning_is_reported_once_per_file_through_the_parser():
    result = parse("server\u00a0a.example\nserver\u00a0b.example\n")
    assert "non-breaking spaces used as separators on lines 1, 2" in only_warning(result)


def test_control_character_line_is_not_configured():
    result = parse("server a.example\x01\n")
    assert "control character U+0001" in only_error(result)
    assert result.config.servers == ()


def test_replacement_character_from_bad_utf8_is_just_a_bad_token():
    result = parse("sérver a\n")
    assert messages(result) == [
        "ntp.conf:1:1: error: unknown directive 'sérver'; did you mean 'server'?"
    ]
