"""Timing loops (RFC 5905 fit(), ntpd's TEST12 "peer_loop"; issue 10, item 6).

A source is not selected when it is synchronised to us (its refid is one of this host's
addresses, SyncConfig.own_refids) or to our own system peer (its refid is the one we state).
The source stays measured, its tally is reject and its status says why (Unfit.LOOP, the
0x0800 bit of ntpq's `flash`).
"""

from __future__ import annotations

from collections.abc import Hashable

from pyntpd.proto.source import SourceSpec
from pyntpd.sync.engine import SyncConfig, SyncEngine, SyncResult, refid_for
from pyntpd.sync.localclock import LocalClockDriver
from pyntpd.types import Sample, Tally, Unfit

T0 = 1_800_000_000.0
OURS = "192.0.2.50"  # an address of this host
UPSTREAM = refid_for("198.51.100.7")  # somebody else's server, further up


def sample(t: float, stratum: int, refid: bytes, offset: float = 0.0) -> Sample:
    return Sample(offset, 0.002, 1e-6, t, stratum, 0, -20, 0.001, 1e-4, refid, 0)


def run(engine: SyncEngine, sources: dict[Hashable, tuple[int, bytes]],
        seconds: float = 160.0) -> SyncResult:
    """A sample from every source every 16 s, each followed by an update."""
    result = engine.update(T0)
    t = T0
    while t < T0 + seconds:
        t += 16.0
        for key, (stratum, refid) in sources.items():
            engine.on_sample(key, sample(t, stratum, refid))
            result = engine.update(t)
    return result


def engine_with(config: SyncConfig, **addresses: str) -> SyncEngine:
    engine = SyncEngine(config, T0)
    for key, address in addresses.items():
        engine.add_source(key, SourceSpec(address))
    return engine


def test_the_loop_bit_is_ntpds_test12() -> None:
    assert Unfit.LOOP == 0x0800


def test_a_source_synchronised_to_one_of_our_addresses_is_never_followed() -> None:
    engine = engine_with(SyncConfig(own_refids=frozenset({refid_for(OURS)})), b="192.0.2.2")
    result = run(engine, {"b": (3, refid_for(OURS))})
    assert result.system_peer is None and not result.system.synchronised
    status = result.sources["b"]
    assert (status.tally, status.unfit) == (Tally.REJECT, Unfit.LOOP)
    assert status.samples > 0  # still measured


def test_a_source_synchronised_to_our_ipv6_address_is_a_loop_too() -> None:
    ours = "2001:db8::50"
    engine = engine_with(SyncConfig(own_refids=frozenset({refid_for(ours)})), b="192.0.2.2")
    result = run(engine, {"b": (3, refid_for(ours))})
    assert result.system_peer is None
    assert result.sources["b"].unfit == Unfit.LOOP


def test_a_source_synchronised_to_our_system_peer_is_not_counted_beside_it() -> None:
    engine = engine_with(SyncConfig(), a="192.0.2.1", b="192.0.2.2")
    # a is a stratum 2 server; b follows a (its refid is a's address).
    result = run(engine, {"a": (2, UPSTREAM), "b": (3, refid_for("192.0.2.1"))})
    assert result.system_peer == "a" and result.system.refid == refid_for("192.0.2.1")
    assert result.sources["a"].tally is Tally.SYSPEER
    assert (result.sources["b"].tally, result.sources["b"].unfit) == (Tally.REJECT, Unfit.LOOP)


def test_without_a_loop_the_same_sources_are_both_candidates() -> None:
    engine = engine_with(SyncConfig(), a="192.0.2.1", b="192.0.2.2")
    result = run(engine, {"a": (2, UPSTREAM), "b": (3, UPSTREAM)})
    assert {result.sources["a"].tally, result.sources["b"].tally} == {Tally.SYSPEER,
                                                                       Tally.CANDIDATE}
    assert result.sources["b"].unfit == Unfit.NONE


def test_on_the_local_clock_a_server_on_its_own_local_clock_is_a_loop() -> None:
    # ntpd's rule: its refid (LOCL) is the one we state. Two servers that each fall back on
    # their local clock never follow each other up the strata.
    config = SyncConfig(local_clock=LocalClockDriver(stratum=10, refid=b"LOCL"))
    engine = engine_with(config, other="192.0.2.3")
    result = run(engine, {"other": (11, b"LOCL")})
    assert result.system_peer is None
    assert (result.system.stratum, result.system.refid) == (11, b"LOCL")
    assert result.sources["other"].unfit == Unfit.LOOP


def test_a_better_server_still_wins_over_the_local_clock() -> None:
    config = SyncConfig(local_clock=LocalClockDriver(stratum=10, refid=b"LOCL"))
    engine = engine_with(config, up="192.0.2.4")
    result = run(engine, {"up": (2, UPSTREAM)})
    assert result.system_peer == "up" and result.system.stratum == 3


def test_a_primary_server_is_never_a_loop_whatever_its_code() -> None:
    # A stratum 1 refid is a code ("GPS"), not an address, even when the bytes match one of ours.
    code = b"GPS\0"
    engine = engine_with(SyncConfig(own_refids=frozenset({code})), gps="192.0.2.1")
    result = run(engine, {"gps": (1, code)})
    assert result.system_peer == "gps"


def test_an_orphan_parent_is_never_a_loop() -> None:
    orphan = bytes([127, 0, 0, 1])  # what a server in orphan mode states
    engine = engine_with(SyncConfig(own_refids=frozenset({orphan})), parent="192.0.2.1")
    result = run(engine, {"parent": (6, orphan)})
    assert result.system_peer == "parent"


def test_other_peer_tests_say_why_too() -> None:
    engine = engine_with(SyncConfig(), far="192.0.2.1")
    result = run(engine, {"far": (16, UPSTREAM)})
    assert result.sources["far"].unfit == Unfit.STRATUM
