"""Symmetric active associations (`peer HOST key N`, RFC 5905 §8-9): two associations talk.

A's clock reads true time; B's reads AHEAD seconds more. Packets take ONE_WAY to cross.
Every packet either side accepts must carry a MAC under the association's key.
"""

from __future__ import annotations

import pytest

from pyntpd.config.keys import SymmetricKey
from pyntpd.proto.auth import mac_trailer
from pyntpd.proto.packet import HEADER, Mode, decode, li_vn_mode
from pyntpd.proto.source import (
    EARLIER_ORIGINS,
    MAX_POLL,
    Association,
    SourceDrop,
    SourceSpec,
    State,
)
from pyntpd.proto.timestamp import unix_to_ntp
from pyntpd.sync.localclock import LocalClockDriver
from pyntpd.types import SystemVars

T0 = 1_800_000_000.0
AHEAD = 0.005
ONE_WAY = 0.001
KEY = SymmetricKey(5, "SHA1", b"peersecret")
OTHER = SymmetricKey(6, "SHA1", b"peersecret")  # the same secret under another key id
AES = SymmetricKey(7, "AES128CMAC", bytes(range(16)))
STRATUM_8 = LocalClockDriver(stratum=8).system_vars(T0 - 30.0)  # serves stratum 9


def peer(key: SymmetricKey | None = KEY, **spec: object) -> Association:
    a = Association(SourceSpec("192.0.2.7", key=key, symmetric=True, **spec))  # type: ignore[arg-type]
    a.start(T0)
    return a


def send(a: Association, now: float, clock_offset: float = 0.0,
         system: SystemVars | None = None) -> bytes:
    """`a` polls at true time `now`; its clock reads now + clock_offset."""
    return a.make_symmetric(now, unix_to_ntp(now + clock_offset), system or SystemVars())


def deliver(a: Association, data: bytes, sent_at: float, clock_offset: float = 0.0):
    """`data` sent at true time `sent_at` arrives at `a` ONE_WAY later."""
    arrival = sent_at + ONE_WAY
    return a.receive(data, unix_to_ntp(arrival + clock_offset), arrival)


def resign(data: bytes, key: SymmetricKey | None = KEY, **fields: int) -> bytes:
    """The header of `data` with `fields` changed, signed again under `key` (or unsigned)."""
    values = list(HEADER.unpack(data[:48]))
    index = {"first": 0, "stratum": 1, "origin": 8, "receive": 9, "transmit": 10}
    for name, value in fields.items():
        values[index[name]] = value
    header = HEADER.pack(*values)
    return header if key is None else header + mac_trailer(key, header)


def exchange() -> tuple[Association, Association, bytes, bytes]:
    """A speaks first (B has not heard of A: origin 0), B answers; neither is delivered."""
    a, b = peer(), peer()
    p1 = send(a, T0)
    assert deliver(b, p1, T0, AHEAD) is None  # the first packet: no sample
    q1 = send(b, T0 + 1.0, AHEAD, STRATUM_8)
    return a, b, p1, q1


# --- what we send ------------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY, AES], ids=lambda k: k.algorithm)
def test_packets_are_mode_1_signed_and_carry_our_clock_as_transmit(key: SymmetricKey) -> None:
    data = send(peer(key), T0)
    packet = decode(data)
    h = packet.header
    assert h.mode == Mode.SYMMETRIC_ACTIVE and h.version == 4
    assert h.transmit == unix_to_ntp(T0)  # T3 for the peer: our clock, never random
    assert (h.origin, h.receive) == (0, 0)  # nothing heard from the peer yet
    assert packet.mac is not None and packet.mac.key_id == key.key_id


def test_packets_state_our_system_variables() -> None:
    h = decode(send(peer(), T0, system=STRATUM_8)).header
    assert (h.stratum, h.leap, h.refid) == (9, 0, STRATUM_8.refid)


def test_an_unsynchronised_daemon_says_so_in_its_peer_packets() -> None:
    h = decode(send(peer(), T0)).header
    assert (h.stratum, h.leap, h.reference) == (16, 3, 0)


def test_a_symmetric_association_without_a_key_sends_nothing() -> None:
    with pytest.raises(ValueError, match="key"):
        send(peer(key=None), T0)


def test_after_the_peers_packet_ours_carry_its_transmit_and_arrival_as_org_and_rec() -> None:
    a, _b, _p1, q1 = exchange()
    deliver(a, q1, T0 + 1.0)
    h = decode(send(a, T0 + 2.0)).header
    assert h.origin == decode(q1).header.transmit
    assert h.receive == unix_to_ntp(T0 + 1.0 + ONE_WAY)


# --- the first packet, samples ---------------------------------------------------------------


def test_the_first_packet_with_zero_origin_updates_state_but_gives_no_sample() -> None:
    a, b = peer(), peer()
    p1 = send(a, T0)
    assert deliver(b, p1, T0, AHEAD) is None
    assert b.drops == {SourceDrop.ZERO_ORIGIN: 1} and b.reach == 0
    assert decode(send(b, T0 + 1.0, AHEAD)).header.origin == decode(p1).header.transmit


def test_the_answer_to_our_packet_gives_offset_and_delay() -> None:
    a, _b, _p1, q1 = exchange()
    sample = deliver(a, q1, T0 + 1.0)
    assert sample is not None
    assert sample.offset == pytest.approx(AHEAD, abs=1e-6)
    assert sample.delay == pytest.approx(2 * ONE_WAY, abs=1e-6)  # B's 1 s hold excluded
    assert (a.reach, a.stratum, a.pmode, a.authentic) == (1, 9, Mode.SYMMETRIC_ACTIVE, True)
    assert a.ppoll == decode(q1).header.poll


def test_both_sides_measure_each_other() -> None:
    a, b, _p1, q1 = exchange()
    deliver(a, q1, T0 + 1.0)
    p2 = send(a, T0 + 2.0, system=STRATUM_8)
    sample = deliver(b, p2, T0 + 2.0, AHEAD)
    assert sample is not None and sample.offset == pytest.approx(-AHEAD, abs=1e-6)


def test_a_symmetric_passive_packet_is_accepted_too() -> None:
    a, _b, _p1, q1 = exchange()
    passive = resign(q1, first=li_vn_mode(0, 4, Mode.SYMMETRIC_PASSIVE))
    assert deliver(a, passive, T0 + 1.0) is not None and a.pmode == Mode.SYMMETRIC_PASSIVE


@pytest.mark.parametrize("mode", [Mode.CLIENT, Mode.SERVER, Mode.BROADCAST])
def test_other_modes_are_refused(mode: Mode) -> None:
    a, _b, _p1, q1 = exchange()
    assert deliver(a, resign(q1, first=li_vn_mode(0, 4, mode)), T0 + 1.0) is None
    assert a.drops == {SourceDrop.NOT_PEER_MODE: 1}


def test_an_unsynchronised_peer_is_reachable_but_gives_no_sample() -> None:
    a, b = peer(), peer()
    p1 = send(a, T0)
    deliver(b, p1, T0, AHEAD)
    q1 = send(b, T0 + 1.0, AHEAD)  # B has no time source: leap 3, stratum 16
    assert deliver(a, q1, T0 + 1.0) is None
    assert a.reachable and a.drops == {SourceDrop.UNSYNCHRONISED: 1}


# --- duplicates, bogus origins, replays ------------------------------------------------------


def test_a_duplicate_is_refused_and_changes_nothing() -> None:
    a, _b, _p1, q1 = exchange()
    assert deliver(a, q1, T0 + 1.0) is not None
    assert deliver(a, q1, T0 + 1.5) is None
    assert a.drops == {SourceDrop.DUPLICATE: 1}
    assert decode(send(a, T0 + 2.0)).header.receive == unix_to_ntp(T0 + 1.0 + ONE_WAY)


def test_a_bogus_origin_gives_no_sample_but_resynchronises() -> None:
    """Packets that crossed in flight: no sample, but their timestamps are kept, or both
    sides would keep sending stale origins forever."""
    a, _b, _p1, q1 = exchange()
    bogus = resign(q1, origin=0x1234)
    assert deliver(a, bogus, T0 + 1.0) is None
    assert a.drops == {SourceDrop.BOGUS_ORIGIN: 1} and a.reach == 0
    assert decode(send(a, T0 + 2.0)).header.origin == decode(bogus).header.transmit


def test_the_origin_is_consumed_by_one_sample() -> None:
    a, _b, _p1, q1 = exchange()
    assert deliver(a, q1, T0 + 1.0) is not None
    later = resign(q1, transmit=decode(q1).header.transmit + (1 << 32))
    assert deliver(a, later, T0 + 2.0) is None
    assert a.drops == {SourceDrop.BOGUS_ORIGIN: 1}


def test_an_answer_to_one_of_our_earlier_packets_still_measures() -> None:
    """We polled again (a burst, a faster poll) before the peer's answer came."""
    a, _b, _p1, q1 = exchange()  # q1 answers p1
    send(a, T0 + 0.5)  # p2, sent before q1 arrived
    sample = deliver(a, q1, T0 + 1.0)
    assert sample is not None and sample.offset == pytest.approx(AHEAD, abs=1e-6)


def test_an_answer_to_a_packet_older_than_the_last_few_is_bogus() -> None:
    a, _b, _p1, q1 = exchange()
    for n in range(EARLIER_ORIGINS + 1):
        send(a, T0 + 0.1 * (n + 1))
    assert deliver(a, q1, T0 + 1.0) is None
    assert a.drops == {SourceDrop.BOGUS_ORIGIN: 1}


def test_answering_a_later_packet_consumes_the_earlier_ones() -> None:
    a, b, _p1, q1 = exchange()
    p2 = send(a, T0 + 0.5)
    deliver(b, p2, T0 + 0.5, AHEAD)
    q2 = send(b, T0 + 1.1, AHEAD, STRATUM_8)  # answers p2
    assert deliver(a, q2, T0 + 1.1) is not None
    assert deliver(a, q1, T0 + 1.2) is None  # older than q2, and p1 is answered for
    assert a.drops == {SourceDrop.REPLAY: 1}


def test_a_replayed_older_packet_is_refused_without_a_state_change() -> None:
    a, b, _p1, q1 = exchange()
    deliver(a, q1, T0 + 1.0)
    p2 = send(a, T0 + 2.0)
    deliver(b, p2, T0 + 2.0, AHEAD)
    q2 = send(b, T0 + 3.0, AHEAD, STRATUM_8)
    deliver(a, q2, T0 + 3.0)
    assert deliver(a, q1, T0 + 4.0) is None  # an attacker replays B's authentic first answer
    assert a.drops == {SourceDrop.REPLAY: 1}
    assert decode(send(a, T0 + 5.0)).header.origin == decode(q2).header.transmit


def test_our_own_packet_reflected_back_is_refused() -> None:
    """The key is the same both ways, so a reflected packet of ours verifies."""
    a = peer()
    p1 = send(a, T0, system=STRATUM_8)
    assert deliver(a, p1, T0 + 0.5) is None
    assert a.drops == {SourceDrop.REPLAY: 1}
    assert decode(send(a, T0 + 1.0)).header.origin == 0


# --- authentication, before anything changes -----------------------------------------------


def _refused_before_any_state_change(a: Association, forged: bytes, q1: bytes) -> None:
    assert deliver(a, forged, T0 + 1.0) is None
    assert a.drops == {SourceDrop.AUTH: 1} and a.reach == 0 and a.pmode == 0
    assert decode(send(a, T0 + 1.5)).header.origin == 0  # nothing remembered
    # ... and the genuine packet still answers (the outstanding origin was not spent)
    a2, _b, _p1, genuine = exchange()
    assert deliver(a2, genuine, T0 + 1.0) is not None


def test_an_unsigned_packet_is_refused() -> None:
    a, _b, _p1, q1 = exchange()
    _refused_before_any_state_change(a, resign(q1, key=None), q1)


def test_a_tampered_packet_is_refused() -> None:
    a, _b, _p1, q1 = exchange()
    forged = bytearray(q1)
    forged[35] ^= 1  # the receive timestamp: would shift the offset
    _refused_before_any_state_change(a, bytes(forged), q1)


def test_a_crypto_nak_is_refused() -> None:
    a, _b, _p1, q1 = exchange()
    _refused_before_any_state_change(a, q1[:48] + KEY.key_id.to_bytes(4, "big"), q1)


def test_a_packet_under_another_key_is_refused() -> None:
    a, _b, _p1, q1 = exchange()
    _refused_before_any_state_change(a, resign(q1, key=OTHER), q1)


def test_a_forged_zero_origin_packet_changes_nothing() -> None:
    """The symmetric-mode zero-origin class: unauthenticated, it cannot reset the state."""
    a, _b, _p1, q1 = exchange()
    _refused_before_any_state_change(a, resign(q1, key=None, origin=0), q1)


def test_the_genuine_packet_is_accepted_after_a_forgery() -> None:
    a, _b, _p1, q1 = exchange()
    deliver(a, resign(q1, key=None), T0 + 1.0)
    assert deliver(a, q1, T0 + 1.0) is not None


# --- kisses, reach, clock steps ---------------------------------------------------------------


def test_a_signed_rate_kiss_with_our_origin_slows_us_down() -> None:
    a, _b, _p1, q1 = exchange()
    kiss = resign(q1, stratum=0)
    kiss = resign(kiss[:48].replace(decode(q1).header.refid, b"RATE", 1))
    assert deliver(a, kiss, T0 + 1.0) is None
    assert a.drops == {SourceDrop.KOD_RATE: 1} and a.kod_poll == min(a.poll + 1, MAX_POLL)


def test_an_unsigned_deny_kiss_does_not_demobilise() -> None:
    a, _b, _p1, q1 = exchange()
    deny = resign(q1, key=None, stratum=0)
    deny = deny.replace(decode(q1).header.refid, b"DENY", 1)
    assert deliver(a, deny, T0 + 1.0) is None
    assert a.state == State.ACTIVE and a.drops == {SourceDrop.AUTH: 1}


def test_unanswered_packets_count_as_unreachable() -> None:
    a = peer()
    send(a, T0)
    send(a, T0 + 64)
    assert (a.reach, a.unreach) == (0, 1)


def test_a_clock_step_forgets_the_peers_timestamps() -> None:
    a, _b, _p1, q1 = exchange()
    deliver(a, q1, T0 + 1.0)
    a.clock_stepped(0.0)
    h = decode(send(a, T0 + 2.0)).header
    assert (h.origin, h.receive) == (0, 0)
