from __future__ import annotations

from pyntpd.config import Diagnostic
from pyntpd.config.diagnostics import suggest


def test_str_has_file_line_col_severity_message_and_hint():
    d = Diagnostic("error", "ntp.conf", 23, 28, "unknown option 'perfer' for 'server'",
                   "did you mean 'prefer'?")
    assert str(d) == (
        "ntp.conf:23:28: error: unknown option 'perfer' for 'server'; did you mean 'prefer'?"
    )


def test_str_without_hint_has_no_trailing_separator():
    assert str(Diagnostic("warning", "f", 1, 2, "m")) == "f:1:2: warning: m"


def test_str_of_a_whole_file_diagnostic_has_no_line_and_column():
    assert str(Diagnostic("error", "/etc/ntp.conf", 0, 0, "cannot read")) == (
        "/etc/ntp.conf: error: cannot read"
    )


def test_suggest_finds_the_closest_keyword():
    assert suggest("perfer", ["prefer", "iburst", "burst"]) == "did you mean 'prefer'?"


def test_suggest_names_the_lower_case_keyword_for_wrong_case():
    hint = suggest("Server", ["server", "pool"])
    assert hint == "did you mean 'server'? (keywords are lower case)"


def test_suggest_returns_none_when_nothing_is_close():
    assert suggest("zzzzzz", ["server", "pool"]) is None
