"""The mode 6 client layer: requests, reassembly of hostile or lossy answers, payloads, mrulist."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyntpd.proto.control import (
    CERR_BADASSOC,
    ControlHeader,
    ControlResponder,
    ControlSnapshot,
    MruItem,
    Opcode,
    PeerInfo,
    encode,
    parse_request,
)
from pyntpd.proto.control_client import (
    Association,
    Collector,
    ControlProtocolError,
    ControlResponseError,
    MruSession,
    parse_assocs,
    parse_timestamp,
    parse_vars,
    peer_row,
    request,
    typed,
)
from pyntpd.proto.timestamp import unix_to_ntp

NOW = 1_800_000_000.0


def fragment(offset: int, data: bytes, more: bool, sequence: int = 7,
             opcode: int = Opcode.READVAR, error: bool = False, status: int = 0) -> bytes:
    header = ControlHeader(version=2, opcode=opcode, sequence=sequence, offset=offset,
                           response=True, more=more, error=error, status=status)
    return encode(header, data)


def split(data: bytes, size: int) -> list[bytes]:
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    return [fragment(i * size, c, i < len(chunks) - 1) for i, c in enumerate(chunks)]


def test_a_request_is_a_valid_mode6_request() -> None:
    header, data = parse_request(request(Opcode.READVAR, 0x1234, 5, b"stratum"))
    assert (header.opcode, header.sequence, header.associd, data) == (2, 0x1234, 5, b"stratum")
    assert header.version == 2 and not header.response


def test_a_single_fragment_completes_the_response() -> None:
    response = Collector(Opcode.READVAR, 7).add(fragment(0, b"stratum=2", False))
    assert response is not None and response.data == b"stratum=2"


def test_fragments_out_of_order_are_joined_by_offset() -> None:
    payload = bytes(range(256)) * 8
    frags = split(payload, 100)
    random.Random(1).shuffle(frags)
    collector = Collector(Opcode.READVAR, 7)
    results = [collector.add(f) for f in frags]
    assert results[-1] is not None and results[-1].data == payload
    assert all(r is None for r in results[:-1])


def test_a_missing_fragment_leaves_the_response_incomplete() -> None:
    frags = split(b"x" * 1000, 300)
    collector = Collector(Opcode.READVAR, 7)
    assert [collector.add(f) for f in frags[:1] + frags[2:]] == [None] * (len(frags) - 1)


def test_duplicate_and_overlapping_fragments_are_ignored() -> None:
    collector = Collector(Opcode.READVAR, 7)
    assert collector.add(fragment(0, b"a" * 8, True)) is None
    assert collector.add(fragment(0, b"a" * 8, True)) is None
    assert collector.add(fragment(4, b"zzzzzzzz", True)) is None
    response = collector.add(fragment(8, b"b" * 4, False))
    assert response is not None and response.data == b"a" * 8 + b"b" * 4
    assert collector.ignored == {"duplicate": 1, "overlapping": 1}


def test_absurd_offsets_and_counts_are_ignored() -> None:
    collector = Collector(Opcode.READVAR, 7)
    assert collector.add(fragment(0xFFF0, b"x" * 32, False)) is None  # past 64 KiB
    assert collector.add(fragment(0, b"", True)) is None  # empty, yet "more"
    lying = bytearray(fragment(0, b"abcd", False))
    struct.pack_into("!H", lying, 10, 400)  # count beyond the datagram
    assert collector.add(bytes(lying)) is None
    assert collector.add(b"\x16") is None  # not even a header
    assert sum(collector.ignored.values()) == 4


def test_answers_to_other_requests_are_ignored() -> None:
    collector = Collector(Opcode.READVAR, 7)
    assert collector.add(fragment(0, b"old", False, sequence=6)) is None
    assert collector.add(fragment(0, b"stat", False, opcode=Opcode.READSTAT)) is None
    assert collector.add(request(Opcode.READVAR, 7)) is None  # a request, not a response
    assert collector.add(fragment(0, b"ok", False)) is not None


def test_fragments_beyond_the_last_one_are_ignored() -> None:
    collector = Collector(Opcode.READVAR, 7)
    assert collector.add(fragment(4, b"tail", False)) is None
    assert collector.add(fragment(8, b"more", True)) is None
    assert collector.ignored == {"beyond the last fragment": 1}


def test_an_error_answer_raises_with_its_code() -> None:
    with pytest.raises(ControlResponseError) as info:
        Collector(Opcode.READVAR, 7).add(fragment(0, b"", False, error=True,
                                                  status=CERR_BADASSOC << 8))
    assert info.value.code == CERR_BADASSOC


def test_too_many_fragments_stop_the_collection() -> None:
    collector = Collector(Opcode.READVAR, 7, max_fragments=4)
    for i in range(4):
        collector.add(fragment(i * 4, b"abcd", True))
    with pytest.raises(ControlProtocolError):
        collector.add(fragment(16, b"abcd", True))


def test_the_responders_fragmented_answer_reassembles() -> None:
    peers = tuple(PeerInfo(associd=i, srcadr=f"192.0.2.{i}") for i in range(1, 40))
    snap = ControlSnapshot(peers=peers, stratum=3, leap=0)
    responder = ControlResponder(b"k" * 32)
    frags = responder.respond(request(Opcode.READSTAT, 9), "c", 0, NOW, snap)
    collector = Collector(Opcode.READSTAT, 9)
    response = [collector.add(f) for f in reversed(frags)][-1]
    assert response is not None
    assert [a.associd for a in parse_assocs(response.data)] == list(range(1, 40))


def test_variables_keep_their_order_and_quotes() -> None:
    got = parse_vars(b'version="ntpd 4.2.8p15, x", stratum=2,\r\nrefid=192.0.2.1\r\n')
    assert got == {"version": '"ntpd 4.2.8p15, x"', "stratum": "2", "refid": "192.0.2.1"}


def test_associations_are_sorted_and_their_length_checked() -> None:
    assocs = parse_assocs(struct.pack("!HHHH", 9, 0x961A, 3, 0x9114))
    assert [(a.associd, a.tally, a.condition) for a in assocs] == [
        (3, "x", "falsetick"), (9, "*", "sys.peer")]
    with pytest.raises(ControlProtocolError):
        parse_assocs(b"\0\1\0")


def test_values_are_typed_for_json() -> None:
    stamp = unix_to_ntp(NOW)
    text = f"0x{stamp >> 32:08x}.{stamp & 0xFFFFFFFF:08x}"
    assert typed("reftime", text, NOW) == pytest.approx(NOW, abs=1e-6)
    assert typed("reach", "0xff", NOW) == 255
    assert typed("stratum", "2", NOW) == 2
    assert typed("offset", "-0.012345", NOW) == -0.012345
    assert typed("version", '"pyntpd 1"', NOW) == "pyntpd 1"
    assert typed("filtdelay", '"0.12 0.13"', NOW) == [0.12, 0.13]
    assert typed("refid", "GPS", NOW) == "GPS"
    assert parse_timestamp("0xnothex.0") is None


def test_a_peer_row_decodes_what_ntpq_shows() -> None:
    now = unix_to_ntp(NOW)
    rec = unix_to_ntp(NOW - 37)
    variables = parse_vars(
        f"srcadr=192.0.2.7, srcport=123, dstadr=192.0.2.1, stratum=2, refid=203.0.113.9, "
        f"hmode=3, hpoll=6, ppoll=10, reach=0xfe, delay=1.234567, offset=-0.5, jitter=0.25, "
        f"rec=0x{rec >> 32:08x}.{rec & 0xFFFFFFFF:08x}".encode())
    row = peer_row(Association(4, 0x9424), variables, now)
    assert (row.tally, row.type, row.when, row.poll, row.reach) == ("+", "u", 37, 64, 0xFE)
    assert (row.stratum, row.refid, row.delay, row.offset) == (2, "203.0.113.9", 1.234567, -0.5)


def _mru_snapshot(count: int) -> ControlSnapshot:
    items = tuple(MruItem(addr=f"10.0.{i // 250}.{i % 250 + 1}", port=1000 + i,
                          first=NOW - 500 + i, last=NOW - 100 + i / 10, count=i + 1,
                          mode_version=(4 << 3) | 3) for i in range(count))
    return ControlSnapshot(clock=unix_to_ntp(NOW), mru=items, leap=0, stratum=2)


def _drive(session: MruSession, responder: ControlResponder, snap: ControlSnapshot) -> None:
    def ask(opcode: int, data: bytes = b"") -> bytes:
        collector = Collector(opcode, 1)
        for frag in responder.respond(request(opcode, 1, 0, data), "c", 0, NOW, snap):
            response = collector.add(frag)
            if response is not None:
                return response.data
        raise AssertionError("incomplete answer")

    session.take_nonce(ask(Opcode.REQ_NONCE))
    while not session.feed(ask(Opcode.READ_MRU, session.next_request())):
        pass


def test_mrulist_continues_until_the_server_says_now() -> None:
    snap = _mru_snapshot(300)
    session = MruSession(frags=1)
    _drive(session, ControlResponder(b"s" * 32), snap)
    assert len(session.entries) == 300 and session.rounds > 10
    assert session.now == snap.clock
    entry = session.entries["10.0.0.1:1000"]
    assert (entry.count, entry.mode, entry.version) == (1, 3, 4)


def test_mrulist_filters_are_passed_to_the_server() -> None:
    session = MruSession(params={"mincount": "250"})
    _drive(session, ControlResponder(b"s" * 32), _mru_snapshot(300))
    assert len(session.entries) == 51


def test_mrulist_rounds_are_bounded() -> None:
    session = MruSession(frags=1, max_rounds=3)
    with pytest.raises(ControlProtocolError):
        _drive(session, ControlResponder(b"s" * 32), _mru_snapshot(300))


def test_an_incomplete_mrulist_answer_without_entries_is_refused() -> None:
    session = MruSession()
    with pytest.raises(ControlProtocolError):
        session.feed(b"nonce=abc")


# Junk never carries our sequence number (7): that would be a forged fragment, not junk.
JUNK = st.binary(max_size=80).filter(lambda b: b[2:4] != b"\0\7")


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(min_size=1, max_size=3000), size=st.integers(4, 468),
       seed=st.integers(0, 2**32), junk=st.lists(JUNK, max_size=5))
def test_any_split_shuffle_and_junk_reassembles_the_payload(
        payload: bytes, size: int, seed: int, junk: list[bytes]) -> None:
    rng = random.Random(seed)
    frags = split(payload, size)
    frags += [rng.choice(frags) for _ in range(len(frags) // 2)] + junk
    rng.shuffle(frags)
    collector = Collector(Opcode.READVAR, 7)
    done = [r for r in (collector.add(f) for f in frags) if r is not None]
    assert done and all(r.data == payload for r in done)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=20))
def test_arbitrary_datagrams_never_raise_anything_unexpected(datagrams: list[bytes]) -> None:
    collector = Collector(Opcode.READVAR, 7, max_fragments=8)
    for datagram in datagrams:
        try:
            collector.add(datagram)
        except (ControlResponseError, ControlProtocolError):
            return
