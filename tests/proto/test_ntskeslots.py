"""NTS-KE slots (proto.ntskeslots): a few addresses or networks cannot hold the server's
sessions, and a newcomer takes the oldest waiting session's slot instead of being refused."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyntpd.proto.ntskeslots import KeSlots, Refusal, SlotLimits, keys_of

NOW = 1000.0
ROOMY = dict(accepts_per_address=1000)


def fill(slots: KeSlots[str], prefix: str, addresses: list[str], each: int) -> list[str]:
    held = []
    for address, n in itertools.product(addresses, range(each)):
        name = f"{prefix}{address}#{n}"
        assert slots.admit(name, address, NOW).admitted
        held.append(name)
    return held


def test_ipv4_networks_are_24_bits_and_ipv6_networks_64() -> None:
    assert keys_of("192.0.2.1")[1] == keys_of("192.0.2.254")[1]
    assert keys_of("192.0.2.1")[1] != keys_of("192.0.3.1")[1]
    assert keys_of("2001:db8:1:2::1")[1] == keys_of("2001:db8:1:2:ffff::9")[1]
    assert keys_of("2001:db8:1:2::1")[1] != keys_of("2001:db8:1:3::1")[1]
    assert keys_of("2001:db8:1:2::1")[0] != keys_of("2001:db8:1:2::2")[0]


def test_one_address_beyond_its_limit_displaces_its_own_longest_silent_session() -> None:
    slots: KeSlots[str] = KeSlots(SlotLimits(per_address=8, **ROOMY))
    held = fill(slots, "a", ["192.0.2.1"], 8)
    admission = slots.admit("new", "192.0.2.1", NOW)
    assert admission.admitted and admission.evicted == held[0]
    assert held[0] not in slots and "new" in slots
    assert slots.held_by_address("192.0.2.1") == 8


def test_one_network_beyond_its_limit_displaces_its_own_longest_silent_session() -> None:
    slots: KeSlots[str] = KeSlots(SlotLimits(per_network=32, per_address=8, **ROOMY))
    held = fill(slots, "a", [f"192.0.2.{i}" for i in range(1, 5)], 8)
    admission = slots.admit("newcomer", "192.0.2.200", NOW)
    assert admission.evicted == held[0]
    assert slots.held_by_network("192.0.2.77") == 32


def test_an_ipv6_64_is_one_network() -> None:
    slots: KeSlots[str] = KeSlots(SlotLimits(per_network=4, per_address=1, **ROOMY))
    held = fill(slots, "a", [f"2001:db8:0:1::{i}" for i in range(1, 5)], 1)
    assert slots.admit("b", "2001:db8:0:1::99", NOW).evicted == held[0]
    assert slots.admit("c", "2001:db8:0:2::1", NOW).evicted is None


def test_other_networks_are_served_while_one_network_holds_its_share() -> None:
    """The finding: 64 idle connections from 8 addresses took every slot."""
    slots: KeSlots[str] = KeSlots(SlotLimits(**ROOMY))
    attackers = fill(slots, "a", [f"127.0.0.{i}" for i in range(2, 10)], 8)
    for i in range(100):  # re-opened as fast as dropped
        slots.admit(f"again{i}", f"127.0.0.{2 + i % 8}", NOW)
    assert slots.held_by_network("127.0.0.1") == SlotLimits().per_network
    admission = slots.admit("legit", "127.1.0.1", NOW)
    assert admission.admitted and admission.evicted is None
    assert "legit" in slots and len(slots) == SlotLimits().per_network + 1
    assert not any(a in slots for a in attackers)  # displaced by their own re-openings


def test_a_full_server_displaces_the_longest_silent_session_of_all() -> None:
    slots: KeSlots[str] = KeSlots(SlotLimits(sessions=4, **ROOMY))
    held = fill(slots, "a", ["192.0.2.1", "198.51.100.1", "203.0.113.1", "203.0.113.2"], 1)
    slots.heard(held[0], NOW + 0.2)
    admission = slots.admit("new", "10.0.0.1", NOW + 0.6)
    assert admission.evicted == held[1] and len(slots) == 4


def test_across_networks_a_session_heard_within_min_silence_is_not_displaced() -> None:
    slots: KeSlots[str] = KeSlots(SlotLimits(sessions=2, min_silence=0.5, **ROOMY))
    fill(slots, "a", ["192.0.2.1", "198.51.100.1"], 1)
    assert slots.admit("early", "10.0.0.1", NOW + 0.4).refused is Refusal.BUSY
    assert slots.admit("later", "10.0.0.1", NOW + 0.5).admitted


def test_within_a_network_the_newcomer_always_wins() -> None:
    slots: KeSlots[str] = KeSlots(SlotLimits(per_network=2, min_silence=0.5, **ROOMY))
    held = fill(slots, "a", ["192.0.2.1", "192.0.2.2"], 1)
    assert slots.admit("same-instant", "192.0.2.3", NOW).evicted == held[0]


def test_a_client_that_keeps_talking_outlasts_silent_ones_opened_after_it() -> None:
    """A handshake flood from many networks: a legitimate client that answers each flight
    keeps its slot while the flood's abandoned handshakes around it are displaced."""
    slots: KeSlots[str] = KeSlots(SlotLimits(sessions=8, **ROOMY))
    assert slots.admit("legit", "192.0.2.1", NOW).admitted
    displaced, now = [], NOW
    for i in range(40):
        now += 0.1
        displaced.append(slots.admit(f"flood{i}", f"10.{i}.0.1", now).evicted)
        if i % 4 == 3:
            slots.heard("legit", now)  # its next flight, every 0.4 s
    assert "legit" in slots and "legit" not in displaced
    assert [d for d in displaced if d is not None][:3] == ["flood0", "flood1", "flood2"]


def test_answered_sessions_are_never_displaced() -> None:
    slots: KeSlots[str] = KeSlots(SlotLimits(per_address=2, **ROOMY))
    first, second = fill(slots, "a", ["192.0.2.1"], 2)
    slots.answered(first)
    assert slots.admit("third", "192.0.2.1", NOW).evicted == second
    slots.answered("third")
    admission = slots.admit("fourth", "192.0.2.1", NOW)
    assert admission.refused is Refusal.BUSY and "fourth" not in slots


def test_one_address_opening_sessions_too_fast_is_refused_until_the_next_second() -> None:
    slots: KeSlots[str] = KeSlots(SlotLimits(accepts_per_address=16))
    results = [slots.admit(f"s{i}", "192.0.2.1", NOW).refused for i in range(20)]
    assert results[:16] == [None] * 16 and results[16:] == [Refusal.RATE] * 4
    assert slots.admit("later", "192.0.2.1", NOW + 1.0).admitted


def test_an_address_over_its_accept_rate_does_not_hold_back_its_neighbours() -> None:
    """Re-connecting as fast as it can, one host must not lock its /24 out."""
    slots: KeSlots[str] = KeSlots(SlotLimits(accepts_per_address=16))
    for i in range(1000):
        slots.admit(f"flood{i}", "192.0.2.1", NOW)
    assert slots.admit("neighbour", "192.0.2.2", NOW).admitted


def test_a_released_session_frees_its_slot_and_unknown_ones_are_ignored() -> None:
    slots: KeSlots[str] = KeSlots(SlotLimits(**ROOMY))
    slots.admit("s", "192.0.2.1", NOW)
    slots.release("s")
    slots.release("s")
    slots.release("never")
    assert len(slots) == 0 and slots.held_by_address("192.0.2.1") == 0


def test_a_non_address_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        KeSlots().admit("s", "not-an-address", NOW)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["admit", "answer", "heard", "release"]),
                          st.integers(0, 40), st.integers(0, 5), st.integers(0, 3)),
                max_size=300))
def test_no_limit_is_ever_exceeded(ops: list[tuple[str, int, int, int]]) -> None:
    limits = SlotLimits(sessions=12, per_network=6, per_address=3, accepts_per_address=50)
    slots: KeSlots[int] = KeSlots(limits)
    now = NOW
    for op, session, host, net in ops:
        address = f"10.0.{net}.{host}"
        if op == "admit":
            if session in slots:
                continue
            now += 0.01
            slots.admit(session, address, now)
        elif op == "answer":
            slots.answered(session)
        elif op == "heard":
            slots.heard(session, now)
        else:
            slots.release(session)
        assert len(slots) <= limits.sessions
        for n, h in itertools.product(range(4), range(6)):
            assert slots.held_by_network(f"10.0.{n}.0") <= limits.per_network
            assert slots.held_by_address(f"10.0.{n}.{h}") <= limits.per_address
