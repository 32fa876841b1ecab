"""The serving path: UDP sockets drained in a tight loop, kernel receive timestamps.

DESIGN.md §3: an asyncio datagram protocol costs five times what a plain recvmsg loop does,
so the event loop only tells us a socket is readable; `drain` then reads and answers
datagrams until the socket is empty (EAGAIN) or a batch limit is reached, so timers still
run under a flood. The receive timestamp comes from the kernel (SO_TIMESTAMPNS); the
transmit timestamp is read immediately before each send.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pyntpd.daemon.ipfamilies import family_name, no_family
from pyntpd.daemon.txstamp import ReplyStamps
from pyntpd.proto.interleaved import NOT_LOW_BIT
from pyntpd.proto.mssntp import MssntpFailure
from pyntpd.proto.packet import MAX_PACKET_LEN, DropReason
from pyntpd.proto.server import Responder
from pyntpd.proto.timestamp import unix_ns_to_ntp

log = logging.getLogger("pyntpd")

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
# Larger than any datagram we accept, so a longer one is seen as truncated and dropped.
_RECV_BUFFER = MAX_PACKET_LEN + 1
BATCH_LIMIT = 512
# 4 MiB queue ~10,000 requests: a 250 ms stall at 40k requests/s (the soak benchmark lost
# requests in bursts with 1 MiB while other work held both CPUs).
RECEIVE_BUFFER_BYTES = 4 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def address_text(address: int, is_v6: bool) -> str:
    """The sendto() host for an address the responder keyed as an integer."""
    if is_v6:
        return socket.inet_ntop(socket.AF_INET6, address.to_bytes(16, "big"))
    return socket.inet_ntop(socket.AF_INET, address.to_bytes(4, "big"))


def after_batch(
    sock: socket.socket,
    responder: Responder,
    on_control: Callable[[socket.socket], None] | None,
    time_ns: Callable[[], int],
    on_peer: Callable[[socket.socket], None] | None = None,
    on_mssntp: Callable[[socket.socket], None] | None = None,
    stamps: ReplyStamps | None = None,
) -> int:
    """Send what the responder queued during a batch; returns the number of send errors.

    Signed replies are finished here, one by one: each MAC covers its own transmit
    timestamp, read just before the MAC is computed and the reply sent. Interleaved-mode
    replies go out one by one too, each with a kernel transmit stamp asked for
    (daemon/txstamp). MS-SNTP requests go to ntp_signd (daemon/signd), whose replies are
    sent when they come.
    """
    errors = 0
    for signed in responder.take_signed() if responder.signed_queue else ():
        try:
            sock.sendto(signed.finish(unix_ns_to_ntp(time_ns()) & NOT_LOW_BIT),
                        (address_text(signed.address, signed.is_v6), signed.port))
        except OSError:
            errors += 1
    if responder.interleaved_queue:
        errors += (stamps or ReplyStamps()).send(
            sock, responder.take_interleaved(), responder.transmit_log, time_ns,
            address_text)
    if responder.control_queue and on_control is not None:
        on_control(sock)
    if responder.peer_queue or responder.broadcast_queue:
        if on_peer is not None:
            on_peer(sock)  # symmetric packets and broadcasts for the sync side (syncloop)
        else:
            responder.take_peer()
            responder.take_broadcast()
    if responder.mssntp_queue:
        if on_mssntp is not None:
            on_mssntp(sock)
        else:
            for _ in responder.take_mssntp():
                responder.counters.refuse_mssntp(MssntpFailure.UNAVAILABLE)
    return errors


class BindError(OSError):
    """A listening socket could not be bound; the message says what to do about it."""


class AddressUnavailable(BindError):
    """This host has no such address family (socket() said EAFNOSUPPORT: a kernel booted
    with ipv6.disable=1) or no such address (bind() said EADDRNOTAVAIL: IPv6 disabled by
    sysctl, an address gone since the interfaces were listed): serve on the others."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    family: socket.AddressFamily
    host: str
    port: int


def default_listen(port: int, ipv4: bool = True, ipv6: bool = True) -> list[ListenAddress]:
    addresses = []
    if ipv4:
        addresses.append(ListenAddress(socket.AF_INET, "0.0.0.0", port))
    if ipv6 and socket.has_ipv6:
        addresses.append(ListenAddress(socket.AF_INET6, "::", port))
    return addresses


def open_socket(where: ListenAddress, reuse_port: bool = False) -> socket.socket:
    try:
        sock = socket.socket(where.family, socket.SOCK_DGRAM)
    except OSError as err:
        name = family_name(where.family)
        kind = AddressUnavailable if no_family(err) else BindError
        raise kind(err.errno, f"cannot listen on UDP {where.host} port {where.port}: "
                              f"{name} is not available on this host ({err.strerror})") from None
    try:
        if where.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # A deeper queue than the default ~200 KB rides out scheduling stalls instead of
        # dropping requests. As root (we bind before dropping privileges) the size is taken
        # as asked; otherwise net.core.rmem_max caps it.
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        sock.bind((where.host, where.port))
    except OSError as err:
        sock.close()
        hint = ""
        kind = BindError
        if err.errno == errno.EACCES:
            hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE; try --port)"
        elif err.errno == errno.EADDRINUSE:
            hint = " (another NTP daemon — ntpd, chronyd, systemd-timesyncd? — holds it)"
        elif err.errno == errno.EADDRNOTAVAIL:
            hint = " (no interface has this address)"
            kind = AddressUnavailable
        raise kind(
            err.errno, f"cannot bind UDP {where.host} port {where.port}: {err.strerror}{hint}"
        ) from None
    sock.setblocking(False)
    return sock


def open_sockets(
    addresses: Iterable[ListenAddress], reuse_port: bool = False
) -> list[socket.socket]:
    """Every address or none (BindError): for the worker sets, once the first set showed
    which addresses this host has."""
    opened: list[socket.socket] = []
    try:
        for where in addresses:
            opened.append(open_socket(where, reuse_port))
    except BindError:
        for sock in opened:
            sock.close()
        raise
    return opened


def open_available(
    addresses: Iterable[ListenAddress], reuse_port: bool = False
) -> tuple[list[tuple[ListenAddress, socket.socket]], list[AddressUnavailable]]:
    """The addresses this host has, each with its socket, and why the others were skipped;
    any other failure (port in use, no permission) is fatal: BindError."""
    opened: list[tuple[ListenAddress, socket.socket]] = []
    skipped: list[AddressUnavailable] = []
    try:
        for where in addresses:
            try:
                opened.append((where, open_socket(where, reuse_port)))
            except AddressUnavailable as exc:
                skipped.append(exc)
    except BindError:
        for _, sock in opened:
            sock.close()
        raise
    return opened, skipped


def receive_timestamp_ns(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The kernel's SCM_TIMESTAMPNS receive time from recvmsg's ancillary data, or 0."""
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
            sec, nsec = _TIMESPEC.unpack_from(payload)
            return sec * 1_000_000_000 + nsec
    return 0


def _address_int(family: int, host: str) -> int:
    return int.from_bytes(socket.inet_pton(family, host), "big")


class UdpServer:
    """Answers every datagram on its sockets through the one `Responder`."""

    def __init__(
        self,
        responder: Responder,
        time_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.responder = responder
        self.time_ns = time_ns
        self.send_errors = 0
        self.receive_errors = 0
        # Runs the mode 6 requests the responder queued, after each batch (daemon/mode6).
        self.on_control: Callable[[socket.socket], None] | None = None
        # Hands the symmetric packets of configured peers to their associations.
        self.on_peer: Callable[[socket.socket], None] | None = None
        # Sends MS-SNTP requests to ntp_signd (daemon/signd).
        self.on_mssntp: Callable[[socket.socket], None] | None = None
        self.stamps = ReplyStamps()  # kernel transmit stamps of interleaved-mode replies

    def drain(self, sock: socket.socket) -> int:
        """Answer datagrams until the socket is empty or BATCH_LIMIT; returns how many."""
        respond = self.responder.respond
        counters = self.responder.counters
        time_ns = self.time_ns
        family = sock.family
        is_v6 = family == socket.AF_INET6
        recvmsg = sock.recvmsg
        sendto = sock.sendto
        last_host = ""
        last_int = 0
        handled = 0
        while handled < BATCH_LIMIT:
            try:
                data, ancillary, msg_flags, peer = recvmsg(_RECV_BUFFER, _ANCILLARY_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                # ICMP errors from earlier sends surface here on Linux; never fatal.
                self.receive_errors += 1
                if err.errno in (errno.EBADF, errno.ENOTSOCK):
                    break
                continue
            handled += 1
            if msg_flags & socket.MSG_TRUNC:
                counters.received += 1
                counters.drop(DropReason.TOO_LONG)
                continue
            rx_ns = receive_timestamp_ns(ancillary) or time_ns()
            host = peer[0]
            if host != last_host:
                # A scoped IPv6 peer (fe80::1%eth0) carries its zone in the string.
                last_int = _address_int(family, host.partition("%")[0])
                last_host = host
            reply = respond(
                data, last_int, is_v6, peer[1], unix_ns_to_ntp(rx_ns), rx_ns / 1e9
            )
            if reply is None:
                continue
            try:
                sendto(reply + (unix_ns_to_ntp(time_ns()) & NOT_LOW_BIT).to_bytes(8, "big"),
                       peer)
            except OSError:
                self.send_errors += 1
        self.send_errors += after_batch(sock, self.responder, self.on_control, self.time_ns,
                                        self.on_peer, self.on_mssntp, self.stamps)
        collect_stamps(self.stamps, sock, self.responder, handled)
        return handled


def collect_stamps(stamps: ReplyStamps, sock: socket.socket, responder: Responder,
                   handled: int) -> None:
    """Read the stamps on the error queue when some are awaited, and whenever the socket was
    readable with nothing to read: a non-empty error queue looks readable until read."""
    if handled == 0 or stamps.waiting(sock):
        stamps.collect(sock, responder.transmit_log)

