"""MmsgServer against real loopback sockets, and against UdpServer on the same input."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import select
import socket
import struct
import time
import types
from collections.abc import Iterator

import pytest

from pyntpd.daemon import mmsg
from pyntpd.daemon.mmsg import MmsgServer
from pyntpd.daemon.serve import ListenAddress, UdpServer, open_socket
from pyntpd.proto.access import Access, RestrictTable
from pyntpd.proto.access_types import RestrictFlag as F
from pyntpd.proto.access_types import RestrictRule
from pyntpd.proto.packet import HEADER, DropReason, decode, li_vn_mode
from pyntpd.proto.server import Responder
from pyntpd.proto.timestamp import unix_ns_to_ntp
from pyntpd.sync.localclock import LocalClockDriver
from pyntpd.types import SystemVars

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="needs Linux recvmmsg/sendmmsg")

DEADLINE = 5.0


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def make_responder(flags: F = F.NONE, updated: float | None = None,
                   hosts: tuple[tuple[str, F], ...] = ()) -> Responder:
    rules = [RestrictRule(ipaddress.ip_network(net), flags, is_default=True)
             for net in ("0.0.0.0/0", "::/0")]
    rules += [RestrictRule(ipaddress.ip_network(net), host_flags) for net, host_flags in hosts]
    system = LocalClockDriver(stratum=10).system_vars(updated or time.time())
    return Responder(Access(RestrictTable(rules)), system)


def request(transmit: int, mode: int = 3, version: int = 4, trailer: bytes = b"") -> bytes:
    return HEADER.pack(li_vn_mode(0, version, mode), 0, 6, -20, 0, 0, b"\0" * 4, 0, 0, 0,
                       transmit) + trailer


@pytest.fixture(params=["127.0.0.1", "::1"])
def host(request: pytest.FixtureRequest) -> str:
    if request.param == "::1" and not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    return request.param


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@pytest.fixture
def server_sock(host: str) -> Iterator[socket.socket]:
    sock = open_socket(ListenAddress(family_of(host), host, 0))
    # Room for every datagram a test queues before the first drain.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    yield sock
    sock.close()


@pytest.fixture
def clients(host: str) -> Iterator[list[socket.socket]]:
    socks = []
    for _ in range(4):
        s = socket.socket(family_of(host), socket.SOCK_DGRAM)
        s.bind((host, 0))
        s.setblocking(False)
        socks.append(s)
    yield socks
    for s in socks:
        s.close()


def pump(server: MmsgServer | UdpServer, sock: socket.socket, expected: int) -> int:
    """Drain until `expected` datagrams were handled or the deadline passes."""
    handled = 0
    deadline = time.monotonic() + DEADLINE
    while handled < expected and time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable:
            handled += server.drain(sock)
    return handled


def collect(client: socket.socket, expected: int) -> list[bytes]:
    replies: list[bytes] = []
    deadline = time.monotonic() + DEADLINE
    while len(replies) < expected and time.monotonic() < deadline:
        readable, _, _ = select.select([client], [], [], 0.05)
        if readable:
            replies.append(client.recv(65536))
    # Anything more than expected would be a bug: give it a moment to show up.
    readable, _, _ = select.select([client], [], [], 0.02)
    if readable:
        replies.append(client.recv(65536))
    return replies


def collect_until_quiet(client: socket.socket, quiet: float = 0.1) -> list[bytes]:
    replies: list[bytes] = []
    for _ in range(10_000):
        if not select.select([client], [], [], quiet)[0]:
            break
        replies.append(client.recv(65536))
    return replies


def send_all(clients: list[socket.socket], server: socket.socket,
             datagrams: list[tuple[int, bytes]]) -> None:
    where = server.getsockname()
    for index, data in datagrams:
        clients[index].sendto(data, where)


def counters(server: MmsgServer | UdpServer) -> tuple:
    c = server.responder.counters
    return (c.received, c.served, dict(c.dropped), dict(c.kod_sent),
            server.send_errors, server.receive_errors)


def test_every_client_gets_a_mode_4_reply_with_honest_timestamps(server_sock, clients):
    server = MmsgServer(make_responder())
    sent = [(k % len(clients), 0x1000 + k) for k in range(20)]
    before = unix_ns_to_ntp(time.time_ns())
    send_all(clients, server_sock, [(c, request(t)) for c, t in sent])
    assert pump(server, server_sock, len(sent)) == len(sent)
    for index, client in enumerate(clients):
        replies = collect(client, 5)
        after = unix_ns_to_ntp(time.time_ns())
        assert len(replies) == 5
        origins = []
        for reply in replies:
            assert len(reply) == 48
            h = decode(reply).header
            assert (h.mode, h.version, h.stratum, h.refid) == (4, 4, 11, b"LOCL")
            assert before <= h.receive <= h.transmit <= after
            origins.append(h.origin)
        assert sorted(origins) == [t for c, t in sent if c == index]
    assert counters(server) == (20, 20, {}, {}, 0, 0)


def mixed_batch() -> list[tuple[int, bytes]]:
    """Good requests interleaved with every kind of junk, from four clients."""
    return [
        (0, b"\x23" * 10),                       # too short
        (1, request(0xA1)),
        (2, b"\0" * 8000),                       # longer than any NTP packet: MSG_TRUNC
        (3, request(0xB1, mode=7)),
        (0, request(0xC1, mode=6)),
        (3, request(0xA2)),
        (1, request(0xD1, mode=4)),              # a reply is not a request
        (2, request(0xE1, version=0)),
        (2, request(0xA3, version=3)),
        (0, b"\x23" + b"\0" * 1299),             # over MAX_PACKET_LEN, under 8000
        (0, request(0xA4)),
        (1, b""),                                # empty datagram
        (3, request(0xF1, trailer=b"\0" * 20)),  # a MAC we cannot verify
        (1, request(0xA5, version=1, mode=0)),   # NTPv1: mode 0 is a client
    ]


GOOD = {0: [0xA4], 1: [0xA1, 0xA5], 2: [0xA3], 3: [0xA2]}


@pytest.mark.parametrize("batch", [64, 3])
def test_mixed_batch_replies_exactly_to_the_good_ones(server_sock, clients, batch):
    server = MmsgServer(make_responder(), batch=batch)
    datagrams = mixed_batch()
    send_all(clients, server_sock, datagrams)
    assert pump(server, server_sock, len(datagrams)) == len(datagrams)
    for index, client in enumerate(clients):
        replies = collect(client, len(GOOD[index]))
        assert [decode(r).header.origin for r in replies] == GOOD[index]
    received, served, dropped, kod, send_errors, receive_errors = counters(server)
    assert (received, served, kod, send_errors, receive_errors) == (14, 5, {}, 0, 0)
    assert dropped[DropReason.TOO_LONG] == 2
    assert sum(dropped.values()) == 9


@pytest.mark.parametrize("batch", [64, 7])
def test_more_datagrams_than_one_batch(server_sock, clients, batch):
    server = MmsgServer(make_responder(), batch=batch)
    total = 300
    send_all(clients, server_sock,
             [(k % len(clients), request(0x5000 + k)) for k in range(total)])
    assert pump(server, server_sock, total) == total
    origins = sorted(decode(r).header.origin for c in clients
                     for r in collect(c, total // len(clients)))
    assert origins == [0x5000 + k for k in range(total)]
    assert counters(server) == (total, total, {}, {}, 0, 0)


def test_one_drain_stops_at_the_batch_limit(server_sock, clients, monkeypatch):
    monkeypatch.setattr(mmsg, "BATCH_LIMIT", 20)
    server = MmsgServer(make_responder(), batch=8)
    send_all(clients, server_sock, [(0, request(k)) for k in range(50)])
    # Loopback delivers within sendto: all 50 are queued now.
    assert server.drain(server_sock) == 20
    assert pump(server, server_sock, 30) == 30


@pytest.mark.parametrize("flags", [F.NONE, F.LIMITED | F.KOD, F.NOSERVE | F.KOD, F.VERSION])
def test_same_counters_and_replies_as_udp_server(host, clients, flags):
    datagrams = mixed_batch() * 3
    updated = time.time()
    results = []
    for make in (UdpServer, MmsgServer):
        sock = open_socket(ListenAddress(family_of(host), host, 0))
        try:
            server = make(make_responder(flags, updated))
            send_all(clients, sock, datagrams)
            assert pump(server, sock, len(datagrams)) == len(datagrams)
            # Root dispersion (8:12) grows with time and the last 16 bytes are timestamps;
            # everything else must be the same.
            replies = [[r[:8] + r[12:32] for r in collect_until_quiet(c)] for c in clients]
            results.append((counters(server), replies))
        finally:
            sock.close()
    assert results[0] == results[1]
    assert results[0][0][0] == len(datagrams)


def plain_socket(host: str) -> socket.socket:
    sock = socket.socket(family_of(host), socket.SOCK_DGRAM)  # no SO_TIMESTAMPNS
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


# 1_800_000_000_123_456_789, and one after NTP era 0 ends (2036-02-07).
@pytest.mark.parametrize("fixed", [1_800_000_000_123_456_789,
                                   (2**32 - 2_208_988_800 + 5) * 10**9 + 999_999_999])
def test_without_kernel_timestamps_the_clock_is_read(host, clients, fixed):
    sock = plain_socket(host)
    try:
        server = MmsgServer(make_responder(), time_ns=lambda: fixed)
        send_all(clients, sock, [(0, request(7))])
        assert pump(server, sock, 1) == 1
        (reply,) = collect(clients[0], 1)
    finally:
        sock.close()
    h = decode(reply).header
    # The lowest bits: receive set, transmit clear (interleaved mode's marks).
    assert (h.receive, h.transmit) == (unix_ns_to_ntp(fixed) | 1, unix_ns_to_ntp(fixed) & ~1)


class FakeLibc:
    """Real recvmmsg/sendmmsg, with failures injected through ctypes' errno."""

    def __init__(self, send_plan: tuple[int | str, ...] = (),
                 recv_errors: tuple[int, ...] = ()) -> None:
        self.recvmmsg_real = mmsg._LIBC.recvmmsg
        self.sendmmsg_real = mmsg._LIBC.sendmmsg
        self.send_plan = list(send_plan)  # per call: an errno, or "one" to send just one
        self.recv_errors = list(recv_errors)
        self.send_calls: list[int] = []

    def recvmmsg(self, fd, headers, vlen, flags, timeout):
        if self.recv_errors:
            ctypes.set_errno(self.recv_errors.pop(0))
            return -1
        return self.recvmmsg_real(fd, headers, vlen, flags, timeout)

    def sendmmsg(self, fd, headers, vlen, flags):
        self.send_calls.append(vlen)
        step = self.send_plan.pop(0) if self.send_plan else None
        if step == "one":
            return self.sendmmsg_real(fd, headers, 1, flags)
        if isinstance(step, int):
            ctypes.set_errno(step)
            return -1
        return self.sendmmsg_real(fd, headers, vlen, flags)


def run_with(monkeypatch, fake, server_sock, clients, count=6, datagrams=None, **options):
    monkeypatch.setattr(mmsg, "_LIBC", types.SimpleNamespace(
        recvmmsg=fake.recvmmsg, sendmmsg=fake.sendmmsg))
    # One sendmmsg per run unless a test asks otherwise: these tests are about runs and
    # partial sends, not the chunks that keep stamps fresh (test_mmsg_sealed).
    server = MmsgServer(make_responder(), **({"send_chunk": 64} | options))
    datagrams = datagrams or [request(0x900 + k) for k in range(count)]
    send_all(clients, server_sock, [(0, data) for data in datagrams])
    assert pump(server, server_sock, len(datagrams)) == len(datagrams)
    origins = [decode(r).header.origin for r in collect_until_quiet(clients[0])]
    return server, origins


def test_partial_sends_continue_with_the_rest(monkeypatch, server_sock, clients):
    fake = FakeLibc(send_plan=("one", "one"))
    server, origins = run_with(monkeypatch, fake, server_sock, clients)
    assert origins == [0x900 + k for k in range(6)]
    assert fake.send_calls[:3] == [6, 5, 4]
    assert server.send_errors == 0


def test_a_full_send_buffer_drops_the_rest_without_blocking(monkeypatch, server_sock, clients):
    fake = FakeLibc(send_plan=("one", "one", errno.EAGAIN))
    server, origins = run_with(monkeypatch, fake, server_sock, clients)
    assert origins == [0x900, 0x901]
    assert server.send_errors == 4
    assert server.responder.counters.served == 6


def test_one_failed_datagram_is_counted_and_skipped(monkeypatch, server_sock, clients):
    fake = FakeLibc(send_plan=("one", errno.EPERM, errno.EINTR))
    server, origins = run_with(monkeypatch, fake, server_sock, clients)
    assert origins == [0x900] + [0x902 + k for k in range(4)]
    assert server.send_errors == 1


def test_receive_errors_are_counted_and_not_fatal(monkeypatch, server_sock, clients):
    fake = FakeLibc(recv_errors=(errno.ECONNREFUSED, errno.EHOSTUNREACH))
    server, origins = run_with(monkeypatch, fake, server_sock, clients)
    assert origins == [0x900 + k for k in range(6)]
    assert server.receive_errors == 2


def test_a_closed_socket_counts_one_error_like_udp_server(host):
    results = []
    for make in (UdpServer, MmsgServer):
        sock = open_socket(ListenAddress(family_of(host), host, 0))
        sock.close()
        server = make(make_responder())
        results.append((server.drain(sock), server.receive_errors))
    assert results == [(0, 1), (0, 1)]


def test_available_is_true_on_linux():
    assert mmsg.available() is True


def test_a_failing_responder_leaves_the_buffers_ready_for_the_next_drain(server_sock, clients):
    responder = make_responder()
    server = MmsgServer(responder)
    responder.classify = lambda *args: (_ for _ in ()).throw(RuntimeError("bug"))
    send_all(clients, server_sock, [(0, request(1)), (0, request(2))])
    with pytest.raises(RuntimeError):
        server.drain(server_sock)
    del responder.classify
    send_all(clients, server_sock, [(1, request(3))])
    assert pump(server, server_sock, 1) == 1
    assert [decode(r).header.origin for r in collect_until_quiet(clients[1])] == [3]


def test_buffers_cannot_move_under_the_kernel(server_sock):
    server = MmsgServer(make_responder())
    server.drain(server_sock)
    batch = server._batch_for(server_sock)
    with pytest.raises(BufferError):
        batch.records.extend(b"x")


# --- FAST replies gathered from the template, slow ones from respond_full -------------------

EXTENSION = struct.pack("!HH", 0x7777, 32) + bytes(28)  # unknown: answered, by the full path
FIXED_NS = 1_800_000_000_500_000_000  # /1e9 and sec + nsec * 1e-9 give the same float


def test_runs_split_only_at_drops():
    assert mmsg._runs(8, [3, 4, 7]) == [(0, 3), (5, 7)]
    assert mmsg._runs(3, [0]) == [(1, 3)]
    assert mmsg._runs(3, [0, 1, 2]) == []


def sources(host: str) -> list[str]:
    """Three client addresses: 127.0.0.1-3 (all loopback on Linux), or ::1 three times."""
    return ["::1"] * 3 if ":" in host else ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


# Over IPv4 the second source is refused (RSTR kisses) and the third rate-limited (RATE).
RESTRICTED = (("127.0.0.2/32", F.NOSERVE | F.KOD), ("127.0.0.3/32", F.LIMITED | F.KOD))


def mixed_fast_and_slow() -> list[tuple[int, bytes]]:
    kinds = (
        lambda t: request(t),
        lambda t: request(t, trailer=EXTENSION),
        lambda t: request(t, version=3),
        lambda t: b"\x23" * 10,
        lambda t: request(t, version=1, mode=0),  # NTPv1: the full path
        lambda t: request(t, mode=7),
        lambda t: request(t, version=2),
    )
    return [(k % 3, kinds[k % len(kinds)](0x7000 + k)) for k in range(60)]


@pytest.mark.parametrize("batch", [64, 5])
def test_fast_and_slow_replies_are_respond_s_bytes(host, batch):
    updated = FIXED_NS / 1e9 - 100.0
    socks = []
    try:
        sock = plain_socket(host)
        socks.append(sock)
        for address in sources(host):
            client = socket.socket(family_of(host), socket.SOCK_DGRAM)
            socks.append(client)
            client.bind((address, 0))
        clients = socks[1:]
        server = MmsgServer(make_responder(updated=updated, hosts=RESTRICTED),
                            time_ns=lambda: FIXED_NS, batch=batch)
        datagrams = mixed_fast_and_slow()
        send_all(clients, sock, datagrams)
        assert pump(server, sock, len(datagrams)) == len(datagrams)
        got = [collect_until_quiet(c) for c in clients]
        # The same datagrams through Responder.respond, as UdpServer would call it.
        reference = make_responder(updated=updated, hosts=RESTRICTED)
        # Transmit timestamps are even (interleaved mode's mark; FIXED_NS's already is).
        transmit = (unix_ns_to_ntp(FIXED_NS) & ~1).to_bytes(8, "big")
        expected: list[list[bytes]] = [[] for _ in clients]
        for index, data in datagrams:
            address, port = clients[index].getsockname()[:2]
            prefix = reference.respond(data, int(ipaddress.ip_address(address)), ":" in host,
                                       port, unix_ns_to_ntp(FIXED_NS), FIXED_NS / 1e9)
            if prefix is not None:
                expected[index].append(prefix + transmit)
    finally:
        for s in socks:
            s.close()
    assert got == expected
    assert sum(map(len, got)) > 15 and counters(server)[:4] == counters(
        types.SimpleNamespace(responder=reference, send_errors=0, receive_errors=0))[:4]
    if ":" not in host:  # every kind of reply was there
        assert {decode(r).header.refid for r in got[1] + got[2]} >= {b"RSTR", b"RATE", b"LOCL"}
        # A kiss's receive timestamp stays zero though its batch's others are marked odd.
        assert {decode(r).header.receive for r in got[1] if decode(r).header.stratum == 0} \
            == {0}


def test_a_new_system_state_shows_in_the_next_batch(server_sock, clients):
    responder = make_responder()
    server = MmsgServer(responder)

    def ask(transmit: int) -> list:
        send_all(clients, server_sock, [(0, request(transmit + k)) for k in range(3)])
        assert pump(server, server_sock, 3) == 3
        return [decode(r).header for r in collect(clients[0], 3)]

    assert {(h.stratum, h.refid) for h in ask(0x100)} == {(11, b"LOCL")}
    gps = SystemVars(leap=0, stratum=1, precision=-23, refid=b"GPS\0",
                     reference_time=unix_ns_to_ntp(time.time_ns()), updated_at=time.time())
    responder.set_system(gps)
    headers = ask(0x200)
    assert {(h.leap, h.stratum, h.precision, h.refid) for h in headers} == {
        (0, 1, -23, b"GPS\0")}
    assert {h.reference for h in headers} == {gps.reference_time}
    responder.set_system(SystemVars())
    assert {(h.leap, h.stratum, h.refid) for h in ask(0x300)} == {(3, 16, b"\0" * 4)}


def test_runs_share_partial_sends_and_a_full_buffer_drops_every_later_run(
        monkeypatch, server_sock, clients):
    # FAST, slow (answered by the full path), dropped, FAST, FAST: runs [0, 2) and [3, 5).
    datagrams = [request(1), request(2, trailer=EXTENSION), b"x", request(3), request(4)]
    fake = FakeLibc(send_plan=("one",))
    _, origins = run_with(monkeypatch, fake, server_sock, clients, datagrams=datagrams)
    assert origins == [1, 2, 3, 4] and fake.send_calls == [2, 1, 2]
    fake = FakeLibc(send_plan=("one", errno.EAGAIN))
    server, origins = run_with(monkeypatch, fake, server_sock, clients, datagrams=datagrams)
    assert origins == [1] and fake.send_calls == [2, 1] and server.send_errors == 3


def test_a_batch_of_fast_replies_goes_out_in_one_sendmmsg(monkeypatch, server_sock, clients):
    fake = FakeLibc()
    _, origins = run_with(monkeypatch, fake, server_sock, clients, count=40)
    assert origins == [0x900 + k for k in range(40)] and fake.send_calls == [40]


def test_serving_sockets_get_a_deep_receive_queue() -> None:
    """4 MiB asked (the kernel reports double, its bookkeeping included): requests ride out
    scheduling stalls instead of being dropped by the kernel."""
    from pyntpd.daemon.serve import RECEIVE_BUFFER_BYTES, ListenAddress, open_sockets

    (sock,) = open_sockets([ListenAddress(socket.AF_INET, "127.0.0.1", 0)])
    try:
        size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    finally:
        sock.close()
    assert size >= RECEIVE_BUFFER_BYTES
