from __future__ import annotations

import pytest

from pyntpd.config import MAX_INCLUDE_DEPTH, parser
from pyntpd.config.parser import MAX_TOTAL_BYTES, MAX_TOTAL_LINES

from .helpers import messages, only_error, only_warning, parse


def test_included_file_is_parsed_in_place():
    result = parse(
        "server a.example\nincludefile /etc/ntp/more.conf\nserver c.example\n",
        files={"/etc/ntp/more.conf": "server b.example\n"},
    )
    assert not result.diagnostics, messages(result)
    assert [s.address for s in result.config.servers] == ["a.example", "b.example", "c.example"]
    assert result.config.files == ("ntp.conf", "/etc/ntp/more.conf")


def test_diagnostics_in_an_included_file_name_that_file():
    result = parse("includefile /etc/ntp/more.conf", files={"/etc/ntp/more.conf": "\nsever x\n"})
    assert only_error(result).startswith("/etc/ntp/more.conf:2:1: error: unknown directive 'sever'")


def test_relative_include_is_taken_from_the_including_files_directory():
    result = parse(
        "includefile conf.d/local.conf",
        "/etc/ntp/ntp.conf",
        files={"/etc/ntp/conf.d/local.conf": "server b.example"},
    )
    assert [s.address for s in result.config.servers] == ["b.example"]
    assert "taken as '/etc/ntp/conf.d/local.conf'" in only_warning(result)


def test_missing_include_file_is_a_warning():
    assert only_warning(parse("includefile /etc/ntp/crypto/pw")) == (
        "ntp.conf:1:13: warning: include file '/etc/ntp/crypto/pw' does not exist; skipped"
    )


def test_unreadable_include_file_is_an_error():
    result = parse("includefile /etc/ntp/x", files={"/etc/ntp/x": b"<EACCES>"})
    assert "cannot read include file '/etc/ntp/x': Permission denied" in only_error(result)


def test_include_loop_is_an_error_and_stops():
    result = parse(
        "includefile /a.conf",
        "/main.conf",
        files={"/a.conf": "includefile /b.conf\n", "/b.conf": "includefile /a.conf\n"},
    )
    assert "include loop (/a.conf -> /b.conf -> /a.conf); not read" in only_error(result)


def test_self_include_is_a_loop():
    result = parse("includefile /main.conf", "/main.conf", files={"/main.conf": ""})
    assert "include loop (/main.conf -> /main.conf)" in only_error(result)


def test_include_depth_beyond_the_limit_is_an_error():
    files = {f"/inc{i}.conf": f"includefile /inc{i + 1}.conf\n" for i in range(20)}
    result = parse("includefile /inc0.conf", "/main.conf", files=files)
    assert f"nested more than {MAX_INCLUDE_DEPTH} levels deep" in only_error(result)
    assert len(result.config.files) == MAX_INCLUDE_DEPTH + 1


def test_include_at_the_depth_limit_is_read():
    files = {
        f"/inc{i}.conf": f"includefile /inc{i + 1}.conf\n" for i in range(MAX_INCLUDE_DEPTH - 1)
    }
    files[f"/inc{MAX_INCLUDE_DEPTH - 1}.conf"] = "server deep.example\n"
    result = parse("includefile /inc0.conf", "/main.conf", files=files)
    assert not result.diagnostics, messages(result)
    assert result.config.servers[0].address == "deep.example"


def test_included_file_with_invalid_utf8_reports_it_in_that_file():
    result = parse("includefile /x.conf", files={"/x.conf": b"server a\xff.example\n"})
    assert str(result.errors[0]) == (
        "/x.conf:1:9: error: invalid UTF-8 byte 0xFF; replaced with U+FFFD; save the file as UTF-8"
    )


def test_includefile_without_name_is_an_error():
    assert "missing file name after 'includefile'" in only_error(parse("includefile"))


@pytest.fixture
def small_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The totals' bounds at 1/10 (5,000 lines, 400 KiB): the same code, parsed faster."""
    monkeypatch.setattr(parser, "MAX_TOTAL_LINES", 5_000)
    monkeypatch.setattr(parser, "MAX_TOTAL_BYTES", 400 << 10)


def test_a_file_included_again_and_again_stops_at_the_total_line_bound_with_one_error(
        small_bounds: None) -> None:
    big = "".join(f"restrict 10.0.{i // 250}.{i % 250} nomodify\n" for i in range(1000))
    text = "server a.example\n" + "includefile /etc/ntp/big.conf\n" * 20
    result = parse(text, files={"/etc/ntp/big.conf": big})
    errors = [str(d) for d in result.errors]
    assert errors == [
        "ntp.conf:6:13: error: include file '/etc/ntp/big.conf' not read: with it the "
        "configuration would exceed 5000 lines or 400 KiB (it has 1001 lines, 4026 are read "
        "already); include each file once, and keep lists that long out of ntp.conf",
        "ntp.conf:6:13: error: 15 more includefile line(s) after this one not read "
        "either, for the same reason",
    ]
    assert result.config.files == ("ntp.conf", *["/etc/ntp/big.conf"] * 4)


def test_the_total_size_is_bounded_too(small_bounds: None) -> None:
    wide = ("# " + "x" * 1000 + "\n") * 100  # 101 lines, about 100 KB
    result = parse("includefile /w\n" * 5, files={"/w": wide})
    (error,) = [str(d) for d in result.errors]  # the fifth: four fit in 400 KiB
    assert error.startswith("ntp.conf:5:13: error: include file '/w' not read: with it the "
                            "configuration would exceed 5000 lines")


def test_a_configuration_within_the_bounds_is_read_whole(small_bounds: None) -> None:
    files = {f"/p{n}": "".join(f"restrict 10.{n}.{i // 250}.{i % 250} nomodify\n"
                                for i in range(1000)) for n in range(4)}
    result = parse("".join(f"includefile /p{n}\n" for n in range(4)), files=files)
    assert not result.errors and len(result.config.restrictions) == 4000


def test_the_bounds_leave_room_for_any_real_configuration() -> None:
    assert (MAX_TOTAL_LINES, MAX_TOTAL_BYTES) == (50_000, 4 << 20)
