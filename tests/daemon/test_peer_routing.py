"""Both serving paths hand a configured peer's symmetric packets to `on_peer` after the batch."""

from __future__ import annotations

import socket
import time

import pytest

from pyntpd.daemon import mmsg
from pyntpd.daemon.mmsg import MmsgServer
from pyntpd.daemon.serve import ListenAddress, UdpServer, open_socket
from pyntpd.proto.packet import DropReason
from tests.daemon.test_mmsg import make_responder, request

SERVERS = [UdpServer, pytest.param(MmsgServer, marks=pytest.mark.skipif(
    not mmsg.available(), reason="needs Linux recvmmsg/sendmmsg"))]


def drain_until(server: UdpServer | MmsgServer, sock: socket.socket, count: int) -> None:
    deadline = time.monotonic() + 5.0
    handled = 0
    while handled < count and time.monotonic() < deadline:
        handled += server.drain(sock)


@pytest.mark.parametrize("server_class", SERVERS)
def test_a_peers_packet_reaches_on_peer_and_a_strangers_is_dropped(server_class: type) -> None:
    responder = make_responder()
    server = server_class(responder)
    calls: list[tuple[socket.socket, list[bytes]]] = []
    server.on_peer = lambda sock: calls.append((sock, [p.data for p in responder.take_peer()]))
    listening = open_socket(ListenAddress(socket.AF_INET, "127.0.0.1", 0))
    with listening, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        peer.bind(("127.0.0.1", 0))
        stranger.bind(("127.0.0.1", 0))
        responder.peer_addresses = frozenset({(0x7F000001, False, peer.getsockname()[1])})
        where = listening.getsockname()
        peer.sendto(request(1, mode=1), where)
        stranger.sendto(request(2, mode=1), where)
        drain_until(server, listening, 2)
        assert calls == [(listening, [request(1, mode=1)])]
    assert responder.counters.dropped == {DropReason.NOT_A_REQUEST: 1}


def test_without_a_handler_queued_peer_packets_are_not_kept() -> None:
    responder = make_responder()
    server = UdpServer(responder)
    listening = open_socket(ListenAddress(socket.AF_INET, "127.0.0.1", 0))
    with listening, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        responder.peer_addresses = frozenset({(0x7F000001, False, peer.getsockname()[1])})
        peer.sendto(request(1, mode=1), listening.getsockname())
        drain_until(server, listening, 1)
    assert responder.peer_queue == [] and responder.counters.peer_packets == 1
