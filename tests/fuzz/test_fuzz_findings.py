"""What the fuzz harnesses found, one test per input, named for it. The inputs themselves are
kept in the seed corpora as fuzz/corpus/<harness>/regress_*, so every smoke run replays them."""

from __future__ import annotations

import math

import pytest

from pyntpd.cli.plot import SetData, read_lines, summary_rows
from pyntpd.config.keys import parse_keys
from pyntpd.proto.control import (
    MAX_DATA_LEN,
    ControlDrop,
    ControlResponder,
    ControlSnapshot,
    Opcode,
)
from pyntpd.proto.control_client import (
    ControlProtocolError,
    MruEntry,
    MruSession,
    request,
    split_address,
)
from pyntpd.stats.statsformat import StatsParseError, parse_loopstats, parse_peerstats
from tests.support import LOCAL_CONF, Pyntpd, config_file, exchange, query

NOW = 1000.0  # its nonce stamp, 000003e8, starts with zeros
CLIENT = 0x7F000001


# --- control responder (fuzz_control) --------------------------------------------------------


def test_read_mru_whose_nonce_has_bytes_outside_ascii_is_dropped_not_raised() -> None:
    body = b"nonce=2b49d200ffd80e9c\xff\xff\xff\xff9139, frags=2"
    reply = ControlResponder(b"k").handle(request(Opcode.READ_MRU, 1, 0, body), CLIENT, 0,
                                          NOW, ControlSnapshot())
    assert reply.fragments == [] and reply.drop is ControlDrop.BAD_NONCE


def test_pyntpd_drops_that_read_mru_without_a_traceback() -> None:
    """It was a TypeError out of the serving loop's batch: logged with a traceback for each
    such datagram, and the mode 6 requests queued behind it in the batch went unanswered."""
    body = b"nonce=2b49d200ffd80e9c\xff\xff\xff\xff9139, frags=2"
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as daemon:
        assert exchange(daemon.port, request(Opcode.READ_MRU, 1, 0, body), timeout=0.5) is None
        assert exchange(daemon.port, request(Opcode.REQ_NONCE, 2)) is not None
        assert query(daemon.port).header.stratum == 11
        assert "Traceback" not in daemon.output()


@pytest.mark.parametrize("stamp", ["+00003e8", " 00003e8", "0000_3e8"])
def test_nonce_whose_stamp_int_would_read_with_a_sign_blank_or_underscore_is_refused(
        stamp: str) -> None:
    responder = ControlResponder(b"k")
    nonce = responder.make_nonce(CLIENT, NOW)
    assert responder.check_nonce(nonce, CLIENT, NOW)
    assert not responder.check_nonce(stamp + nonce[8:], CLIENT, NOW)


# --- pyntpq's mrulist session (fuzz_control_client) ------------------------------------------


def test_mrulist_nonce_with_bytes_outside_ascii_is_a_protocol_error() -> None:
    with pytest.raises(ControlProtocolError, match="malformed mrulist nonce"):
        MruSession().take_nonce(b"nonce=5\xd4nonce=6b49d20ce74991d39")


def test_mrulist_answer_carrying_a_quoted_nonce_with_a_comma_is_a_protocol_error() -> None:
    session = MruSession(nonce="0" * 24)
    with pytest.raises(ControlProtocolError, match="malformed mrulist nonce"):
        session.feed(b'nonce="ab, frags=9999", now=0x00000001.00000000')


@pytest.mark.parametrize("text", ["[fe80::1%\ufffd]:123", "[fe80::1%" + "e" * 80 + "]:123",
                                  '[fe80::1%a"b]:123'])
def test_mrulist_address_that_could_not_be_named_back_is_not_an_entry(text: str) -> None:
    assert split_address(text) is None


def _entries(count: int) -> list[MruEntry]:
    return [MruEntry(f"2001:db8:ffff:ffff:ffff:ffff:ffff:{i:x}", 65535, 1, (1 << 63) + i, 1, 3,
                     4, 0) for i in range(count)]


def test_mrulist_request_names_fewer_entries_when_all_would_not_fit_a_datagram() -> None:
    session = MruSession(params={"laddr": "1" * 200}, nonce="0" * 24)
    session.newest = _entries(4)
    data = session.next_request()
    assert len(data) <= MAX_DATA_LEN
    assert b"addr.0=" in data and b"addr.3=" not in data


def test_mrulist_request_that_cannot_name_one_entry_is_a_protocol_error() -> None:
    session = MruSession(params={"laddr": "1" * 400}, nonce="0" * 24)
    session.newest = _entries(1)
    with pytest.raises(ControlProtocolError, match="does not fit"):
        session.next_request()


# --- statistics lines (fuzz_statsformat) ---------------------------------------------------


def test_loopstats_line_with_a_310_digit_mjd_is_refused_not_overflowed() -> None:
    with pytest.raises(StatsParseError, match="out of range"):
        parse_loopstats("5" * 310 + " 751 0.001 0190 6.51 0.5 7544")


def test_peerstats_line_dated_after_9999_is_refused() -> None:
    with pytest.raises(StatsParseError, match="out of range"):
        parse_peerstats("2973483 0.0 192.0.2.1 9614 0.1 0.1 0.1 0.1")


def test_plot_summary_of_a_line_with_a_60_digit_mjd_skips_it() -> None:
    line = "5" + "7" * 57 + "0935 751 0.001 0190 6.51 0.5 7544\n"
    last_day = "2973482 86399.5 0.001 1 0.5 0.5 6\n"
    loop = SetData("loopstats")
    read_lines("fuzz", [line, last_day], parse_loopstats, -math.inf, math.inf, loop)
    assert loop.skipped == 1 and len(loop.records) == 1
    assert summary_rows(loop, SetData("peerstats"))[0][0] == "time span"


# --- keys file (fuzz_keys) -----------------------------------------------------------------


def _said(text: str) -> str:
    return " ".join(str(d) for d in parse_keys(text, "keys")[1])


@pytest.mark.parametrize("line", [
    '14 MD5"0123456789abcdef',  # a type glued to its key
    "9 MD53456789abc",  # a missing blank
    "111 a4ff97a5e74 mmmm",  # no type
    "a4ff97a5e74",  # a key alone on a line
    "655367",  # a key of digits alone on a line
])
def test_keys_line_in_error_never_echoes_what_may_be_the_key(line: str) -> None:
    said = _said(line)
    assert "error" in said
    for secret in ("0123456789abcdef", "3456789abc", "a4ff97a5e74", "655367"):
        assert secret not in said
