"""Kernel transmit timestamps on loopback: the error queue, the OPT_ID counter, and the
interleaved-mode replies of both serving paths."""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from pyntpd.daemon import mmsg, txstamp
from pyntpd.daemon.mmsg import MmsgServer
from pyntpd.daemon.serve import ListenAddress, UdpServer, open_socket
from pyntpd.proto.access import Access, RestrictTable, address_key
from pyntpd.proto.access_types import RestrictFlag as F
from pyntpd.proto.access_types import RestrictRule
from pyntpd.proto.interleaved import InterleavedReply
from pyntpd.proto.packet import HEADER, decode, li_vn_mode
from pyntpd.proto.server import Responder
from pyntpd.proto.timestamp import ntp_diff, unix_ns_to_ntp
from pyntpd.sync.localclock import LocalClockDriver

DEADLINE = 5.0


def stamped_client(server: socket.socket) -> socket.socket:
    sock = socket.socket(server.family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, txstamp.SCM_TIMESTAMPNS, 1)
    assert txstamp.enable(sock, txstamp.CLIENT_FLAGS)
    sock.connect(server.getsockname()[:2])
    sock.setblocking(False)
    return sock


@pytest.fixture
def server_sock() -> Iterator[socket.socket]:
    sock = open_socket(ListenAddress(socket.AF_INET, "127.0.0.1", 0))
    yield sock
    sock.close()


def wait_readable(sock: socket.socket) -> None:
    assert select.select([sock], [], [], DEADLINE)[0], "nothing arrived"


# --- the error queue --------------------------------------------------------------------

def test_every_request_of_an_association_socket_gets_a_kernel_stamp(server_sock):
    client = stamped_client(server_sock)
    try:
        stamps = []
        for _ in range(3):
            before = time.time_ns()
            client.send(b"\0" * 48)
            after = time.time_ns()
            (stamp,) = txstamp.read_stamps(client)
            stamps.append(stamp)
            assert before <= stamp[1] <= after  # taken inside send(), on loopback
    finally:
        client.close()
    assert [key for key, _ in stamps] == [0, 1, 2]  # OPT_ID counts the stamped datagrams


def test_a_serving_socket_stamps_only_the_datagrams_that_ask(server_sock):
    assert txstamp.enable(server_sock, txstamp.SERVER_FLAGS)
    peer = server_sock.getsockname()
    server_sock.sendto(b"plain", peer)
    server_sock.sendmsg([b"asks"], txstamp.STAMP_THIS, 0, peer)
    server_sock.sendto(b"plain", peer)
    server_sock.sendmsg([b"asks"], txstamp.STAMP_THIS, 0, peer)
    assert [key for key, _ in txstamp.read_stamps(server_sock)] == [0, 1]


def test_asking_for_stamps_adds_nothing_to_what_a_serving_socket_receives(server_sock):
    """The batch path's control slot holds one SCM_TIMESTAMPNS: SOFTWARE reporting would
    add an SCM_TIMESTAMPING to every request (and truncate)."""
    assert txstamp.enable(server_sock, txstamp.SERVER_FLAGS)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(b"\0" * 48, server_sock.getsockname())
        wait_readable(server_sock)
        _, ancillary, flags, _ = server_sock.recvmsg(100, 1024)
    assert [(level, kind) for level, kind, _ in ancillary] == [
        (socket.SOL_SOCKET, txstamp.SCM_TIMESTAMPNS)]
    assert not flags & socket.MSG_CTRUNC


def test_an_error_queue_message_that_is_not_a_transmit_stamp_is_ignored():
    err = struct.pack("=IBBBBII", 111, 2, 3, 3, 0, 0, 0)  # ECONNREFUSED from ICMP
    timespec = struct.pack("@qq", 1_800_000_000, 5)
    assert txstamp.parse_stamp([(socket.SOL_SOCKET, txstamp.SCM_TIMESTAMPNS, timespec),
                                (socket.IPPROTO_IP, txstamp.IP_RECVERR, err)]) is None


def test_a_transmit_stamp_without_a_time_is_ignored():
    err = struct.pack("=IBBBBII", 42, txstamp.SO_EE_ORIGIN_TIMESTAMPING, 0, 0, 0, 0, 9)
    assert txstamp.parse_stamp([(socket.IPPROTO_IPV6, txstamp.IPV6_RECVERR, err)]) is None


# --- which request a stamp belongs to ------------------------------------------------------

def test_a_stamp_belongs_to_the_outstanding_request_by_its_opt_id():
    keys = txstamp.RequestStamps(enabled=True)
    keys.sent()
    assert not keys.take(7)  # a stray stamp
    assert keys.take(0)
    assert not keys.take(0)  # once


def test_after_a_failed_send_the_next_stamp_resynchronises_the_counter():
    """Whether the kernel counted the failed datagram is unknown: the next stamp is taken
    (the association's time window still checks it) and the counter follows it."""
    keys = txstamp.RequestStamps(enabled=True)
    keys.sent()
    keys.take(0)
    keys.failed()
    keys.sent()
    assert keys.take(2)
    keys.sent()
    assert not keys.take(2) and keys.take(3)


# --- interleaved replies ----------------------------------------------------------------

def make_responder() -> Responder:
    rules = [RestrictRule(ipaddress.ip_network("0.0.0.0/0"), F.NONE, is_default=True)]
    return Responder(Access(RestrictTable(rules)),
                     LocalClockDriver(stratum=10).system_vars(time.time()))


def text(address: int, is_v6: bool) -> str:
    return str(ipaddress.ip_address(address))


def test_a_sent_reply_is_kept_with_the_kernels_stamp(server_sock):
    r = make_responder()
    stamps = txstamp.ReplyStamps()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        port = client.getsockname()[1]
        reply = InterleavedReply(bytes(40), 0, 0x0123_4567_89AB_CDEF, address_key(1, False),
                                 0x7F000001, False, port)
        before = unix_ns_to_ntp(time.time_ns())
        assert stamps.send(server_sock, [reply], r.transmit_log, time.time_ns, text) == 0
        after = unix_ns_to_ntp(time.time_ns())
        sent_transmit = int.from_bytes(client.recv(100)[40:48], "big")
    assert stamps.stamps == 1 and not stamps.waiting(server_sock)
    transmit, from_kernel = r.transmit_log.take(0x0123_4567_89AB_CDEF, address_key(1, False))
    assert from_kernel and before <= sent_transmit <= transmit <= after
    assert sent_transmit & 1 == 0 and transmit & 1 == 0  # transmit timestamps are even


def interleaved_request(origin: int, transmit: int) -> bytes:
    return HEADER.pack(li_vn_mode(0, 4, 3), 0, 6, 32, 0, 0, b"\0" * 4, 0, origin,
                       transmit ^ 0xFFFF, transmit)


@pytest.fixture(params=["mmsg", "udp"])
def serving(request: pytest.FixtureRequest) -> type[MmsgServer] | type[UdpServer]:
    if request.param == "mmsg" and not mmsg.available():
        pytest.skip("needs Linux recvmmsg/sendmmsg")
    return MmsgServer if request.param == "mmsg" else UdpServer


def exchange(server: MmsgServer | UdpServer, sock: socket.socket, client: socket.socket,
             data: bytes) -> bytes:
    client.send(data)
    wait_readable(sock)
    server.drain(sock)
    wait_readable(client)
    return client.recv(100)


def test_the_third_reply_to_an_interleaved_client_is_interleaved(serving, server_sock):
    """Request 1 names nothing; request 2 names reply 1, which was not kept (a basic
    request); request 3 names reply 2: interleaved, with reply 2's kernel stamp."""
    server = serving(make_responder())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.connect(server_sock.getsockname())
        first = decode(exchange(server, server_sock, client,
                                interleaved_request(0, 0x1001))).header
        second = decode(exchange(server, server_sock, client,
                                 interleaved_request(first.receive, 0x2001))).header
        third = decode(exchange(server, server_sock, client,
                                interleaved_request(second.receive, 0x3001))).header
    assert (first.origin, second.origin) == (0x1001, 0x2001)  # basic replies
    assert third.origin == 0x3001 ^ 0xFFFF  # the request's receive field: interleaved
    # Reply 2's kernel stamp: later than the clock read into reply 2, within a millisecond.
    assert 0 <= ntp_diff(third.transmit, second.transmit) < 1e-3
    counters = server.responder.counters
    assert (counters.interleaved, counters.interleaved_missed, counters.served) == (1, 1, 3)
    assert counters.interleaved_daemon_stamp == 0


def test_a_basic_request_is_kept_out_of_the_log(serving, server_sock):
    server = serving(make_responder())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.connect(server_sock.getsockname())
        exchange(server, server_sock, client, interleaved_request(0, 0x1001))
    assert len(server.responder.transmit_log) == 0


def test_stamps_left_on_the_error_queue_are_read_when_the_socket_wakes_for_them(
        serving, server_sock):
    """epoll calls a socket readable while its error queue holds anything: a drain with no
    datagram to read must empty it, or the loop would spin."""
    assert txstamp.enable(server_sock, txstamp.SERVER_FLAGS)
    server_sock.sendmsg([b"x"], txstamp.STAMP_THIS, 0, server_sock.getsockname())
    server_sock.recv(10)  # the datagram itself; its stamp stays on the error queue
    server = serving(make_responder())
    assert server.drain(server_sock) == 0
    assert txstamp.read_stamps(server_sock) == []


def test_one_batch_answers_plain_and_interleaved_requests_each_as_asked(server_sock):
    """The batch path searches a batch for an odd origin once; with one there, the plain
    requests still get their batch replies and the interleaved one its own."""
    if not mmsg.available():
        pytest.skip("needs Linux recvmmsg/sendmmsg")
    server = MmsgServer(make_responder())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.connect(server_sock.getsockname())
        kept = unix_ns_to_ntp(time.time_ns()) | 1
        server.responder.transmit_log.keep(kept, 0x1234_0000_0000_0000,
                                           address_key(0x7F000001, False))
        for n in range(5):
            client.send(interleaved_request(0, 0x100 + n))
        client.send(interleaved_request(kept, 0x200))
        deadline = time.monotonic() + DEADLINE
        handled = 0
        while handled < 6 and time.monotonic() < deadline:
            wait_readable(server_sock)
            handled += server.drain(server_sock)
        replies = [decode(client.recv(100)).header for _ in range(6)]
    origins = {h.origin: h for h in replies}
    assert set(origins) == {0x100, 0x101, 0x102, 0x103, 0x104, 0x200 ^ 0xFFFF}
    assert origins[0x200 ^ 0xFFFF].transmit == 0x1234_0000_0000_0000
    assert all(h.receive & 1 for h in replies)
