"""MS-SNTP signing by Samba's ntp_signd, on the daemon's event loop (proto/mssntp.py).

ntpd connects to DIR/socket for every request and waits for the answer, blocking all of
its serving meanwhile; chrony keeps one non-blocking connection and a queue of 16. This
follows chrony: one connection, opened when the first request comes and kept, requests
pipelined (ntp_signd answers them in order), and nothing here ever waits:

- at most `limit` requests are outstanding; more are refused (QUEUE_FULL) at once;
- a request not answered within `timeout` seconds ends the connection (ntp_signd is stuck
  or gone) and every request still waiting on it (TIMEOUT);
- a connection that cannot be opened, or one that ends in a timeout or a protocol error, is
  not tried again for a back-off time (doubling up to MAX_BACKOFF): meanwhile requests are
  refused at once (UNAVAILABLE), so a dead ntp_signd costs one failed connect() now and
  then, not one per request. ntp_signd closing the connection (it does for a disabled or
  non-trust account) fails what was waiting (CLOSED); the next request reconnects.

Each refusal is counted in the responder's `mssntp_failed`; the client gets no reply, as
from ntpd and chrony. The reply's transmit timestamp has to be in the packet before it is
signed, so it is set ahead by the signing delay, as chrony does; but by the shortest of
the recent delays, not chrony's running mean: the mean, pulled up by the occasional slow
answer, put the median reply's transmit timestamp 90 us after the moment it was sent
(against Samba 4.17 on loopback), and a server must not claim to send a reply later than
it did. With the minimum, replies leave at or after their timestamp, late by the jitter.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from pyntpd.logonce import LogOnce
from pyntpd.proto import mssntp
from pyntpd.proto.mssntp import MssntpFailure, MssntpRequest, ReplyReader, SigndProtocolError
from pyntpd.proto.server import ServerCounters
from pyntpd.proto.timestamp import unix_ns_to_ntp

log = logging.getLogger("pyntpd")

SOCKET_NAME = "socket"  # ntp_signd listens on DIR/socket
LIMIT = 64  # outstanding requests (chrony: 16)
TIMEOUT = 1.0  # s for ntp_signd to answer; a local database lookup takes a millisecond
INITIAL_BACKOFF = 0.5  # s
MAX_BACKOFF = 30.0  # s
# The signing delay that sets the transmit timestamp ahead: the shortest of the last
# DELAY_SAMPLES, within chrony's bounds.
MIN_DELAY = 1e-5
MAX_DELAY = 1e-2
DELAY_SAMPLES = 16
_READ_SIZE = 4096


class Handle(Protocol):
    def cancel(self) -> None: ...


class Reactor(Protocol):
    """What the client needs of an event loop; asyncio's loop is one."""

    def time(self) -> float: ...

    def add_reader(self, fd: int, callback: Callable[[], object]) -> None: ...

    def remove_reader(self, fd: int) -> bool: ...

    def add_writer(self, fd: int, callback: Callable[[], object]) -> None: ...

    def remove_writer(self, fd: int) -> bool: ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Handle: ...


@dataclass(frozen=True, slots=True)
class _Waiting:
    packet_id: int
    packet: bytes  # the 48 bytes sent to be signed
    key_id: bytes
    address: tuple[str, int]
    sock: socket.socket  # the serving socket the request came in on
    sent_at: float  # reactor time
    deadline: float


def _host(address: int, is_v6: bool) -> str:
    if is_v6:
        return socket.inet_ntop(socket.AF_INET6, address.to_bytes(16, "big"))
    return socket.inet_ntop(socket.AF_INET, address.to_bytes(4, "big"))


class SigndClient:
    def __init__(
        self,
        directory: str,
        counters: ServerCounters,
        reactor: Reactor,
        *,
        time_ns: Callable[[], int] = time.time_ns,
        limit: int = LIMIT,
        timeout: float = TIMEOUT,
    ) -> None:
        self.path = self.socket_path(directory)
        self.counters = counters
        self.reactor = reactor
        self.time_ns = time_ns
        self.limit = limit
        self.timeout = timeout
        self._delays: collections.deque[float] = collections.deque(maxlen=DELAY_SAMPLES)
        self.connects = 0  # connections opened (a reconnect policy one can observe)
        self._sock: socket.socket | None = None
        self._writing = False
        self._out = bytearray()
        self._reader = ReplyReader()
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._next_id = 0
        self._timer: Handle | None = None
        self._retry_at = -float("inf")
        self._backoff = INITIAL_BACKOFF
        self._log = LogOnce(log)

    @property
    def delay(self) -> float:
        """How far ahead a reply's transmit timestamp is set, s."""
        return min(self._delays) if self._delays else MIN_DELAY

    @staticmethod
    def socket_path(directory: str) -> str:
        return os.path.join(directory, SOCKET_NAME)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def outstanding(self) -> int:
        return len(self._waiting)

    # -- requests in -----------------------------------------------------------------

    def submit(self, requests: Iterable[MssntpRequest], sock: socket.socket) -> None:
        """Send `requests` (from the serving socket `sock`) to be signed; never blocks."""
        now = self.reactor.time()
        was_idle = not self._waiting
        for request in requests:
            if len(self._waiting) >= self.limit:
                self.counters.refuse_mssntp(MssntpFailure.QUEUE_FULL)
            elif not self._connect(now):
                self.counters.refuse_mssntp(MssntpFailure.UNAVAILABLE)
            else:
                self._enqueue(request, sock, now)
        if self._out:
            self._flush()
        if was_idle and self._waiting:
            self._arm_timer()

    def _enqueue(self, request: MssntpRequest, sock: socket.socket, now: float) -> None:
        packet_id = self._next_id
        self._next_id = (packet_id + 1) % mssntp.PACKET_ID_MODULUS
        transmit = unix_ns_to_ntp(self.time_ns() + round(self.delay * 1e9))
        packet = request.packet(transmit)
        self._out += mssntp.encode_request(packet_id, request.key_id, packet)
        self._waiting.append(_Waiting(
            packet_id, packet, request.key_id,
            (_host(request.address, request.is_v6), request.port), sock, now,
            now + self.timeout))

    # -- the connection ----------------------------------------------------------------

    def _connect(self, now: float) -> bool:
        if self._sock is not None:
            return True
        if now < self._retry_at:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            # A Unix stream connect does not block: it succeeds, or fails at once (EAGAIN
            # when ntp_signd's listen queue is full).
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            self._back_off(now)
            self._log.warning(
                "connect", "cannot connect to ntp_signd at %s: %s; MS-SNTP requests get no "
                "reply until it answers (retrying with back-off)", self.path,
                exc.strerror or exc)
            return False
        self._sock = sock
        self.connects += 1
        self.reactor.add_reader(sock.fileno(), self._on_readable)
        if self._log.reset("connect"):
            log.info("connected to ntp_signd at %s", self.path)
        return True

    def _back_off(self, now: float) -> None:
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2.0, MAX_BACKOFF)

    def _flush(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sent = sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._lose(MssntpFailure.CLOSED)
            return
        del self._out[:sent]
        if self._out and not self._writing:
            self.reactor.add_writer(sock.fileno(), self._flush)
            self._writing = True
        elif not self._out and self._writing:
            self.reactor.remove_writer(sock.fileno())
            self._writing = False

    def _lose(self, failure: MssntpFailure, back_off: bool = False) -> None:
        """Close the connection; every request waiting on it fails with `failure`."""
        sock = self._sock
        if sock is not None:
            self.reactor.remove_reader(sock.fileno())
            if self._writing:
                self.reactor.remove_writer(sock.fileno())
            sock.close()
        self._sock = None
        self._writing = False
        self._out.clear()
        self._reader = ReplyReader()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _ in range(len(self._waiting)):
            self.counters.refuse_mssntp(failure)
        self._waiting.clear()
        if back_off:
            self._back_off(self.reactor.time())
            self._log.warning(failure, "ntp_signd at %s: %s; connection closed, retrying "
                              "with back-off", self.path, failure.value)

    # -- replies out -------------------------------------------------------------------

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._lose(MssntpFailure.CLOSED)
            return
        if not data:
            self._lose(MssntpFailure.CLOSED)
            return
        try:
            replies = self._reader.feed(data)
        except SigndProtocolError:
            self._lose(MssntpFailure.PROTOCOL, back_off=True)
            return
        now = self.reactor.time()
        for reply in replies:
            if not self._waiting:
                self._lose(MssntpFailure.PROTOCOL, back_off=True)  # nothing was asked
                return
            waiting = self._waiting.popleft()
            result = mssntp.check_reply(reply, waiting.packet_id, waiting.packet,
                                        waiting.key_id)
            if result is MssntpFailure.PROTOCOL:
                self.counters.refuse_mssntp(result)
                self._lose(MssntpFailure.PROTOCOL, back_off=True)
                return
            if isinstance(result, MssntpFailure):
                self.counters.refuse_mssntp(result)
                continue
            self._send(waiting, result, now)
        if replies:
            self._backoff = INITIAL_BACKOFF  # ntp_signd is answering
            self._log.reset(MssntpFailure.TIMEOUT)
            self._log.reset(MssntpFailure.PROTOCOL)
            self._arm_timer()

    def _send(self, waiting: _Waiting, signed: bytes, now: float) -> None:
        try:
            waiting.sock.sendto(signed, waiting.address)
        except OSError:
            self.counters.refuse_mssntp(MssntpFailure.SEND_FAILED)
            return
        self.counters.served += 1
        self.counters.mssntp_signed += 1
        self._delays.append(min(MAX_DELAY, max(MIN_DELAY, now - waiting.sent_at)))

    # -- the timeout -------------------------------------------------------------------

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._waiting:
            self._timer = self.reactor.call_at(self._waiting[0].deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._waiting and self.reactor.time() >= self._waiting[0].deadline:
            self._lose(MssntpFailure.TIMEOUT, back_off=True)
        else:
            self._arm_timer()

    # -- configuration -----------------------------------------------------------------

    def close(self) -> None:
        """Shut down: what still waits gets no reply (counted CLOSED)."""
        self._lose(MssntpFailure.CLOSED)
