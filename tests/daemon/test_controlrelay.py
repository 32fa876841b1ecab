"""The mode 6 relay between a worker and the main process (--workers)."""

from __future__ import annotations

import socket
from typing import Any

from pyntpd.daemon.controlrelay import ControlForwarder, ControlRelay


class Queue:
    def __init__(self, queued: list[tuple[bytes, int, bool, int, int]]) -> None:
        self.queued = queued

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
        a.send(b"short")
        a.send(bytes(31) + b"\x16")  # socket index 0 of none
        relay.drain(b)
        assert relay.malformed == 2 and answered == []
    finally:
        a.close()
        b.close()
