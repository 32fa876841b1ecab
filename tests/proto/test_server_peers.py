"""The responder routes symmetric packets: configured peers' to their association, none else."""

from __future__ import annotations

import pytest

from pyntpd.proto.access_types import RestrictFlag as F
from pyntpd.proto.packet import DropReason, Mode
from pyntpd.proto.server import FAST, PEER_QUEUE_LIMIT, UNCHECKED
from tests.proto.test_server import NOW, RX, ask, request, responder

PEER = 0xC0000207  # 192.0.2.7
PEER_PORT = 123


def peered(flags: F = F.NONE):
    r = responder(flags)
    r.peer_addresses = frozenset({(PEER, False, PEER_PORT)})
    return r


@pytest.mark.parametrize("mode", [Mode.SYMMETRIC_ACTIVE, Mode.SYMMETRIC_PASSIVE])
def test_a_configured_peers_symmetric_packet_is_queued_not_answered(mode: Mode) -> None:
    r = peered()
    data = request(mode=mode)
    assert ask(r, data, address=PEER, port=PEER_PORT) is None
    [queued] = r.take_peer()
    assert (queued.data, queued.address, queued.port, queued.receive_ts, queued.now) == (
        data, PEER, PEER_PORT, RX, NOW)
    assert r.counters.peer_packets == 1 and not r.counters.dropped
    assert r.take_peer() == []


def test_the_same_address_from_another_port_is_not_the_peer() -> None:
    r = peered()
    assert ask(r, request(mode=1), address=PEER, port=40000) is None
    assert r.take_peer() == [] and r.counters.dropped == {DropReason.NOT_A_REQUEST: 1}


def test_symmetric_packets_from_anyone_else_are_dropped() -> None:
    """CVE-2016-1549: no packet creates an association, and strangers' go nowhere."""
    r = peered()
    assert ask(r, request(mode=1), address=PEER + 1, port=PEER_PORT) is None
    assert r.take_peer() == [] and r.counters.dropped == {DropReason.NOT_A_REQUEST: 1}


def test_without_configured_peers_symmetric_packets_are_dropped() -> None:
    r = responder()
    assert ask(r, request(mode=1), address=PEER, port=PEER_PORT) is None
    assert r.peer_queue == [] and r.counters.dropped == {DropReason.NOT_A_REQUEST: 1}


def test_restrict_ignore_drops_a_peers_packets_too() -> None:
    r = peered(F.IGNORE)
    assert ask(r, request(mode=1), address=PEER, port=PEER_PORT) is None
    assert r.peer_queue == [] and r.counters.dropped == {DropReason.RESTRICTED: 1}


def test_the_peer_queue_is_bounded() -> None:
    r = peered()
    for _ in range(PEER_QUEUE_LIMIT + 3):
        ask(r, request(mode=1), address=PEER, port=PEER_PORT)
    assert len(r.peer_queue) == PEER_QUEUE_LIMIT
    assert r.counters.dropped == {DropReason.RATE_LIMITED: 3}


def test_a_malformed_symmetric_packet_from_the_peer_is_dropped_by_the_codec() -> None:
    r = peered()
    assert ask(r, request(mode=1, trailer=b"\0" * 8), address=PEER, port=PEER_PORT) is None
    assert r.peer_queue == [] and r.counters.dropped == {DropReason.BAD_TRAILER: 1}


def test_the_fast_path_is_untouched_and_the_peer_is_still_served_as_a_client() -> None:
    r = peered()
    assert r.classify(request(mode=1)[0], 48, PEER, False, PEER_PORT, NOW) == UNCHECKED
    assert r.classify(request()[0], 48, PEER, False, PEER_PORT, NOW) == FAST
    reply = ask(r, request(), address=PEER, port=PEER_PORT)
    assert reply is not None and reply.header.mode == Mode.SERVER
