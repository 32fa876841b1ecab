"""The ntp_signd client: never blocks, bounded, times out, backs off, counts every failure.

ntp_signd here is a test double on a real Unix socket that speaks the documented protocol
(proto/mssntp.py); the event loop is a fake whose time the tests move, so timeouts and
back-off are checked without sleeping. tests/interop/test_samba_interop.py runs the same
client (in the daemon) against Samba's own ntp_signd.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pyntpd.daemon import signd
from pyntpd.daemon.serve import after_batch
from pyntpd.daemon.signd import INITIAL_BACKOFF, SigndClient
from pyntpd.proto.access import Access, RestrictTable
from pyntpd.proto.mssntp import MssntpFailure, MssntpRequest
from pyntpd.proto.packet import DropReason
from pyntpd.proto.server import Responder, ServerCounters
from pyntpd.proto.timestamp import unix_ns_to_ntp

NT_HASH = bytes(range(16))
RID = (1102).to_bytes(4, "little")
WALL_NS = 1_800_000_000_123_456_789
PREFIX = bytes([0x1C, 2, 10, 0xE9]) + bytes(36)


@dataclass
class Timer:
    when: float
    callback: Callable[[], object]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeReactor:
    """The loop: callbacks recorded, time moved by the test."""

    now: float = 100.0
    readers: dict[int, Callable[[], object]] = field(default_factory=dict)
    writers: dict[int, Callable[[], object]] = field(default_factory=dict)
    timers: list[Timer] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def add_reader(self, fd: int, callback: Callable[[], object]) -> None:
        self.readers[fd] = callback

    def remove_reader(self, fd: int) -> bool:
        return self.readers.pop(fd, None) is not None

    def add_writer(self, fd: int, callback: Callable[[], object]) -> None:
        self.writers[fd] = callback

    def remove_writer(self, fd: int) -> bool:
        return self.writers.pop(fd, None) is not None

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(when, callback)
        self.timers.append(timer)
        return timer

    def readable(self) -> None:
        for callback in list(self.readers.values()):
            callback()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in [t for t in self.timers if not t.cancelled and t.when <= self.now]:
            self.timers.remove(timer)
            timer.callback()


class FakeSignd:
    """ntp_signd as its protocol is documented: framed requests in, framed replies out."""

    def __init__(self, directory: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(directory / "socket"))
        self.listener.listen(8)
        self.listener.settimeout(2.0)
        self.conn: socket.socket | None = None

    def accept(self) -> socket.socket:
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(2.0)
        return self.conn

    def read_request(self) -> tuple[int, bytes, bytes]:
        """(packet_id, key_id, packet) of the next request."""
        assert self.conn is not None
        (length,) = struct.unpack("!I", self._read(4))
        body = self._read(length)
        version, op, packet_id, _pad = struct.unpack_from("!IIHH", body)
        assert (version, op) == (0, 0)
        return packet_id, body[12:16], body[16:]

    def _read(self, n: int) -> bytes:
        assert self.conn is not None
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            assert chunk, "the client closed the connection"
            data += chunk
        return data

    def sign(self, packet_id: int, key_id: bytes, packet: bytes) -> None:
        digest = hashlib.md5(NT_HASH + packet, usedforsecurity=False).digest()
        self.send(packet_id, 3, packet + key_id + digest)

    def send(self, packet_id: int, op: int, signed: bytes = b"") -> None:
        assert self.conn is not None
        body = struct.pack("!III", 0, op, packet_id) + signed
        self.conn.sendall(struct.pack("!I", len(body)) + body)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the serving socket, the w32time client)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as serving, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        serving.bind(("127.0.0.1", 0))
        client.bind(("127.0.0.1", 0))
        client.settimeout(2.0)
        yield serving, client


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSignd]:
    server = FakeSignd(tmp_path)
    yield server
    server.close()


def request_from(client: socket.socket) -> MssntpRequest:
    return MssntpRequest(PREFIX, RID, 0x7F000001, False, client.getsockname()[1])


def make_client(tmp_path: Path, **kwargs: object) -> tuple[SigndClient, FakeReactor]:
    reactor = FakeReactor()
    client = SigndClient(str(tmp_path), ServerCounters(), reactor,
                         time_ns=lambda: WALL_NS, **kwargs)  # type: ignore[arg-type]
    return client, reactor


def test_a_signed_reply_goes_to_the_client_from_the_serving_socket(tmp_path, fake, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    client.submit([request_from(w32)], serving)
    fake.accept()
    packet_id, key_id, packet = fake.read_request()
    fake.sign(packet_id, key_id, packet)
    reactor.readable()
    reply, source = w32.recvfrom(512)
    assert source == serving.getsockname()
    assert reply == packet + RID + hashlib.md5(NT_HASH + packet).digest()
    assert (client.counters.served, client.counters.mssntp_signed) == (1, 1)
    assert client.counters.mssntp_failed == {}


def sign_after(client: SigndClient, reactor: FakeReactor, fake: FakeSignd,
               serving: socket.socket, w32: socket.socket, seconds: float) -> bytes:
    """One request signed `seconds` after it was sent; the packet ntp_signd was given."""
    client.submit([request_from(w32)], serving)
    if fake.conn is None:
        fake.accept()
    packet_id, key_id, packet = fake.read_request()
    fake.sign(packet_id, key_id, packet)
    reactor.now += seconds
    reactor.readable()
    w32.recv(512)
    return packet


def test_the_first_transmit_timestamp_is_set_ahead_by_the_least_delay(tmp_path, fake, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    packet = sign_after(client, reactor, fake, serving, w32, 0.002)
    assert packet[:40] == PREFIX
    assert packet[40:] == unix_ns_to_ntp(WALL_NS + 10_000).to_bytes(8, "big")


def test_later_timestamps_are_set_ahead_by_the_shortest_recent_delay(tmp_path, fake, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    for seconds in (0.004, 0.0003, 0.009):  # a slow answer must not pull it up
        sign_after(client, reactor, fake, serving, w32, seconds)
    packet = sign_after(client, reactor, fake, serving, w32, 0.001)
    assert packet[40:] == unix_ns_to_ntp(WALL_NS + 300_000).to_bytes(8, "big")


def test_the_delay_is_bounded_and_forgets_old_answers(tmp_path, fake, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    sign_after(client, reactor, fake, serving, w32, 0.000001)  # below chrony's 10 us
    assert client.delay == signd.MIN_DELAY
    for _ in range(signd.DELAY_SAMPLES):
        sign_after(client, reactor, fake, serving, w32, 0.5)  # above its 10 ms
    assert client.delay == signd.MAX_DELAY


def test_requests_are_pipelined_on_one_connection_and_answered_in_order(
        tmp_path, fake, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    client.submit([request_from(w32)] * 3, serving)
    fake.accept()
    asked = [fake.read_request() for _ in range(3)]
    assert [packet_id for packet_id, _, _ in asked] == [0, 1, 2]
    for one in asked:
        fake.sign(*one)
    reactor.readable()
    assert [w32.recv(512)[:48] for _ in range(3)] == [p for _, _, p in asked]
    assert client.counters.mssntp_signed == 3 and client.connects == 1


def test_signing_failure_gets_no_reply_and_keeps_the_connection(tmp_path, fake, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    client.submit([request_from(w32)], serving)
    fake.accept()
    packet_id, _, _ = fake.read_request()
    fake.send(packet_id, 4)
    reactor.readable()
    assert client.counters.mssntp_failed == {MssntpFailure.REFUSED: 1}
    assert client.counters.dropped == {DropReason.MSSNTP: 1}
    assert client.connected and client.outstanding == 0


def test_without_ntp_signd_requests_fail_at_once_and_connect_is_retried_after_back_off(
        tmp_path, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    client.submit([request_from(w32)] * 2, serving)
    assert client.counters.mssntp_failed == {MssntpFailure.UNAVAILABLE: 2}
    fake = FakeSignd(tmp_path)  # ntp_signd starts
    try:
        client.submit([request_from(w32)], serving)  # still within the back-off
        assert client.counters.mssntp_failed == {MssntpFailure.UNAVAILABLE: 3}
        reactor.advance(INITIAL_BACKOFF)
        client.submit([request_from(w32)], serving)
        fake.accept()
        fake.sign(*fake.read_request())
        reactor.readable()
        assert client.counters.mssntp_signed == 1 and client.connects == 1
    finally:
        fake.close()


def test_back_off_doubles_while_ntp_signd_stays_away(tmp_path, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    client.submit([request_from(w32)], serving)
    reactor.advance(INITIAL_BACKOFF)
    client.submit([request_from(w32)], serving)  # second failed connect: 1 s now
    reactor.advance(INITIAL_BACKOFF)
    fake = FakeSignd(tmp_path)
    try:
        client.submit([request_from(w32)], serving)
        assert client.connects == 0
        reactor.advance(INITIAL_BACKOFF)
        client.submit([request_from(w32)], serving)
        assert client.connects == 1
    finally:
        fake.close()


def test_an_unanswered_request_times_out_and_ends_the_connection(tmp_path, fake, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path, timeout=1.0)
    client.submit([request_from(w32)] * 2, serving)
    fake.accept()
    reactor.advance(0.9)
    assert client.counters.mssntp_failed == {}
    reactor.advance(0.1)
    assert client.counters.mssntp_failed == {MssntpFailure.TIMEOUT: 2}
    assert not client.connected and reactor.readers == {}
    client.submit([request_from(w32)], serving)  # backing off: no new connection yet
    assert client.counters.mssntp_failed[MssntpFailure.UNAVAILABLE] == 1


def test_ntp_signd_closing_the_connection_fails_what_waits_and_the_next_reconnects(
        tmp_path, fake, sockets):
    # Samba closes the connection for a disabled or non-trust account.
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    client.submit([request_from(w32)], serving)
    fake.accept().close()
    reactor.readable()
    assert client.counters.mssntp_failed == {MssntpFailure.CLOSED: 1}
    client.submit([request_from(w32)], serving)
    fake.accept()
    fake.sign(*fake.read_request())
    reactor.readable()
    assert client.counters.mssntp_signed == 1 and client.connects == 2


def test_outstanding_requests_are_bounded(tmp_path, fake, sockets):
    serving, w32 = sockets
    client, _ = make_client(tmp_path, limit=2)
    client.submit([request_from(w32)] * 3, serving)
    assert client.outstanding == 2
    assert client.counters.mssntp_failed == {MssntpFailure.QUEUE_FULL: 1}


def test_a_reply_of_impossible_length_drops_the_connection(tmp_path, fake, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    client.submit([request_from(w32)], serving)
    conn = fake.accept()
    conn.sendall(struct.pack("!I", 1 << 20))
    reactor.readable()
    assert client.counters.mssntp_failed == {MssntpFailure.PROTOCOL: 1}
    assert not client.connected


def test_a_reply_to_another_request_drops_the_connection(tmp_path, fake, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    client.submit([request_from(w32)] * 2, serving)
    fake.accept()
    _, key_id, packet = fake.read_request()
    fake.sign(41, key_id, packet)
    reactor.readable()
    assert client.counters.mssntp_failed == {MssntpFailure.PROTOCOL: 2}
    assert not client.connected


def test_a_reply_that_cannot_be_sent_is_counted(tmp_path, fake, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    client.submit([request_from(w32)], serving)
    fake.accept()
    request = fake.read_request()
    serving.close()
    fake.sign(*request)
    reactor.readable()
    assert client.counters.mssntp_failed == {MssntpFailure.SEND_FAILED: 1}


def test_close_fails_what_still_waits(tmp_path, fake, sockets):
    serving, w32 = sockets
    client, reactor = make_client(tmp_path)
    client.submit([request_from(w32)], serving)
    fake.accept()
    client.close()
    assert client.counters.mssntp_failed == {MssntpFailure.CLOSED: 1}
    assert reactor.readers == {} and not client.connected


def test_without_a_signer_the_batchs_requests_are_counted_unavailable(sockets):
    serving, w32 = sockets
    responder = Responder(Access(RestrictTable()))
    responder.mssntp_queue.append(request_from(w32))
    after_batch(serving, responder, None, lambda: WALL_NS)
    assert responder.mssntp_queue == []
    assert responder.counters.mssntp_failed == {MssntpFailure.UNAVAILABLE: 1}


def test_a_full_socket_never_blocks_the_rest_is_written_when_writable(tmp_path, fake, sockets):
    serving, w32 = sockets
    count = 4000  # 272 kB of requests: more than a Unix socket holds unread
    client, reactor = make_client(tmp_path, limit=count)
    client.submit([request_from(w32)] * count, serving)  # returns: nothing waits
    assert reactor.writers, "the unsent rest waits for the socket to be writable"
    conn = fake.accept()
    conn.setblocking(False)
    received = 0
    for _ in range(count):  # bounded: each round reads what was sent, then writes more
        chunk = b"."
        while chunk:
            try:
                chunk = conn.recv(1 << 16)
            except BlockingIOError:
                break
            received += len(chunk)
        if received == count * 68:
            break
        for callback in list(reactor.writers.values()):
            callback()
    assert received == count * 68 and reactor.writers == {}
