"""The mode 6 relay between a worker and the main process (--workers)."""

from __future__ import annotations

import socket
from typing import Any

from pyntpd.daemon.controlrelay import (
    ControlForwarder,
    ControlRelay,
    decode_counters,
    encode_counters,
)
from pyntpd.proto.packet import DropReason
from pyntpd.proto.server import ServerCounters


class Queue:
    """The part of a Responder a forwarder uses."""

    def __init__(self, queued: list[tuple[bytes, int, bool, int, int]]) -> None:
        self.queued = queued
        self.counters = ServerCounters()

    def take_control(self) -> list[tuple[bytes, int, bool, int, int]]:
        queued, self.queued = self.queued, []
        return queued


def test_a_forwarded_request_is_answered_on_the_main_socket_of_the_same_index() -> None:
    worker_end, main_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    worker_sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    main_sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    answered: list[tuple[Any, list[tuple[bytes, int, bool, int, int]]]] = []
    try:
        request = (b"\x16\x02\x00\x01" + bytes(8), 0x20010DB8 << 96 | 1, True, 40123, 0x40)
        forwarder = ControlForwarder(worker_end, worker_sockets, Queue([request]))  # type: ignore[arg-type]
        forwarder.forward(worker_sockets[1])
        relay = ControlRelay([main_end], main_sockets, lambda s, q: answered.append((s, q)))
        relay.drain(main_end)
        assert forwarder.forwarded == 1 and relay.received == 1
        assert answered == [(main_sockets[1], [request])]
    finally:
        for sock in (worker_end, main_end, *worker_sockets, *main_sockets):
            sock.close()


def test_a_malformed_relay_message_is_counted_and_not_answered() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    answered: list[object] = []
    try:
        relay = ControlRelay([b], [], lambda s, q: answered.append(q))
        a.send(b"Rshort")
        a.send(b"R" + bytes(31) + b"\x16")  # socket index 0 of none
        a.send(b"X" + bytes(40))  # no such kind
        relay.drain(b)
        assert relay.malformed == 3 and answered == []
    finally:
        a.close()
        b.close()


def test_counters_cross_the_link_and_add_up() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        worker = ServerCounters(received=5, served=3)
        worker.drop(DropReason.TOO_SHORT)
        worker.kiss(b"RATE")
        forwarder = ControlForwarder(a, [], Queue([]))  # type: ignore[arg-type]
        forwarder.responder.counters = worker
        forwarder.publish()
        relay = ControlRelay([b], [], lambda s, q: None)
        relay.drain(b)
        own = ServerCounters(received=2, served=2)
        own.drop(DropReason.TOO_SHORT)
        summed = relay.counters(own)
        assert (summed.received, summed.served) == (7, 5)
        assert summed.dropped == {DropReason.TOO_SHORT: 2} and summed.kod_sent == {b"RATE": 1}
    finally:
        a.close()
        b.close()


def test_counters_that_are_not_counts_are_refused() -> None:
    good = encode_counters(ServerCounters(received=1))[1:]
    assert decode_counters(good) == ServerCounters(received=1)
    assert decode_counters(good.replace(b'"received": 1', b'"received": -1')) is None
    assert decode_counters(good.replace(b'"dropped": {}', b'"dropped": {"nope": 1}')) is None
    assert decode_counters(b"\xff{") is None
