"""Kernel transmit timestamps (Linux SO_TIMESTAMPING, software stamps) from the error queue.

The kernel stamps a datagram as the driver takes it, after send() has returned to nothing
we could read; it hands the stamp back on the socket's error queue (recvmsg MSG_ERRQUEUE),
as a control message with the time (SCM_TIMESTAMPNS, since our sockets have SO_TIMESTAMPNS,
and SCM_TIMESTAMPING when SOFTWARE reporting is on) and a sock_extended_err whose ee_data
is the datagram's OPT_ID: a per-socket counter of the stamped datagrams, which we mirror to
tell whose stamp it is. OPT_TSONLY: the stamp comes without a copy of the datagram.

- Associations' sockets (daemon/sources): every request stamped (TX_SOFTWARE on the
  socket); T1 is the kernel's, or the one read before send() when none came (counted).
- Serving sockets: only the replies of interleaved mode are stamped, asked per datagram
  with a control message, so the batch path's plain replies cost nothing more; the stamps
  go to the responder's transmit log (proto.interleaved).

A socket with stamps asked for must have its error queue read: the stamps count against
its receive buffer, and epoll reports a non-empty error queue as readable for as long as it
lasts, so every reader here drains it. A send that fails leaves the counter in doubt (the
kernel may have counted the datagram or not): the next stamp says where it is, for an
association; a serving socket restarts the counter (OPT_ID set anew starts it at 0).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pyntpd.proto.interleaved import NOT_LOW_BIT, InterleavedReply, TransmitLog
from pyntpd.proto.timestamp import unix_ns_to_ntp

SO_TIMESTAMPING = getattr(socket, "SO_TIMESTAMPING", 37)
SCM_TIMESTAMPING = SO_TIMESTAMPING
SCM_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
SO_EE_ORIGIN_TIMESTAMPING = 4
SCM_TSTAMP_SND = 0
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)

# Associations: every datagram stamped, reported with its OPT_ID and no copy of it.
CLIENT_FLAGS = (SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE
                | SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY)
# Serving sockets: nothing stamped unless a datagram asks (STAMP_THIS), and no SOFTWARE
# reporting, which would add an SCM_TIMESTAMPING to every received request; the stamp
# comes as SCM_TIMESTAMPNS.
SERVER_FLAGS = SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY
STAMP_THIS = [(socket.SOL_SOCKET, SO_TIMESTAMPING,
               struct.pack("=I", SOF_TIMESTAMPING_TX_SOFTWARE))]

_TIMESPEC = struct.Struct("@qq")
# struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data
_EXTENDED_ERR = struct.Struct("=IBBBBII")
# One error-queue message: SCM_TIMESTAMPNS, SCM_TIMESTAMPING (3 timespecs), the error.
ERRQUEUE_ANCILLARY = (socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(3 * _TIMESPEC.size)
                      + socket.CMSG_SPACE(_EXTENDED_ERR.size + 16))
# What an association's socket receives with a reply: SCM_TIMESTAMPNS and, with SOFTWARE
# reporting on, SCM_TIMESTAMPING.
RECEIVE_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(3 * _TIMESPEC.size)
_KEY_MASK = 0xFFFF_FFFF
_MAX_READS = 256  # error-queue messages read per call: bounded, like every drain


def enable(sock: socket.socket, flags: int) -> bool:
    """Ask for transmit stamps; False if this kernel will not (then there are none)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, flags)
    except OSError:
        return False
    return True


def parse_stamp(ancillary: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
    """(OPT_ID, Unix ns) of one error-queue message that is a transmit stamp, else None."""
    key: int | None = None
    stamp_ns = 0
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPING:
            if len(payload) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(payload)  # ts[0]: the software stamp
                stamp_ns = stamp_ns or sec * 1_000_000_000 + nsec
        elif level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
            if len(payload) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(payload)
                stamp_ns = sec * 1_000_000_000 + nsec
        elif ((level, kind) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6,
                                                                  IPV6_RECVERR))
              and len(payload) >= _EXTENDED_ERR.size):
            ee_errno, origin, _, _, _, info, data = _EXTENDED_ERR.unpack_from(payload)
            if (ee_errno == errno.ENOMSG and origin == SO_EE_ORIGIN_TIMESTAMPING
                    and info == SCM_TSTAMP_SND):
                key = data
    if key is None or stamp_ns <= 0:
        return None
    return key, stamp_ns


def read_stamps(sock: socket.socket) -> list[tuple[int, int]]:
    """Every transmit stamp waiting on `sock`'s error queue: [(OPT_ID, Unix ns)]. Never
    blocks; bounded; anything else on the queue is read and dropped."""
    stamps: list[tuple[int, int]] = []
    for _ in range(_MAX_READS):
        try:
            _, ancillary, _, _ = sock.recvmsg(0, ERRQUEUE_ANCILLARY,
                                              MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break  # closed, or no error queue at all: nothing to read
        stamp = parse_stamp(ancillary)
        if stamp is not None:
            stamps.append(stamp)
    return stamps


@dataclass
class RequestStamps:
    """An association's socket: which OPT_ID its outstanding request has."""

    enabled: bool = False
    next_key: int | None = 0  # the kernel's next OPT_ID; None: in doubt after a failed send
    waiting: int | None = None  # the outstanding request's OPT_ID (None: in doubt)
    outstanding: bool = False  # a request was sent and its stamp has not come

    def sent(self) -> None:
        self.waiting = self.next_key
        if self.next_key is not None:
            self.next_key = (self.next_key + 1) & _KEY_MASK
        self.outstanding = True

    def failed(self) -> None:
        self.next_key = None
        self.outstanding = False

    def take(self, key: int) -> bool:
        """A stamp with OPT_ID `key` came: True if it is the outstanding request's (in
        doubt, the association's time window decides; the counter follows the kernel)."""
        ours = self.outstanding and (self.waiting is None or self.waiting == key)
        if ours:
            self.outstanding = False
        if self.waiting is None or ours:
            self.next_key = (key + 1) & _KEY_MASK
        return ours


@dataclass
class _ServingSocket:
    stamped: bool  # the kernel took SERVER_FLAGS: replies may ask for a stamp
    next_key: int = 0
    pending: dict[int, int] = field(default_factory=dict)  # OPT_ID -> receive timestamp


class ReplyStamps:
    """Sends interleaved-mode replies with a kernel stamp asked for, keeps them in the
    responder's transmit log, and moves the stamps that come into it."""

    PENDING_LIMIT = 1024  # stamps awaited per socket; beyond, the oldest are given up

    def __init__(self) -> None:
        self._sockets: dict[socket.socket, _ServingSocket] = {}
        self.stamps = 0  # kernel stamps moved into the log

    def waiting(self, sock: socket.socket) -> bool:
        state = self._sockets.get(sock)
        return state is not None and bool(state.pending)

    def _state(self, sock: socket.socket) -> _ServingSocket:
        state = self._sockets.get(sock)
        if state is None:
            # Forget closed sockets (a reload reopens them).
            for old in [s for s in self._sockets if s.fileno() < 0]:
                del self._sockets[old]
            # Setting the same flags again leaves a running OPT_ID counter alone.
            state = self._sockets[sock] = _ServingSocket(enable(sock, SERVER_FLAGS))
        return state

    def send(self, sock: socket.socket, replies: list[InterleavedReply], log: TransmitLog,
             time_ns: Callable[[], int], address_text: Callable[[int, bool], str]) -> int:
        """Send `replies` from `sock`, each with the transmit timestamp read just before it
        (or, interleaved, the kept one), and keep each in `log` under its receive
        timestamp; returns the number of send errors."""
        errors = 0
        state = self._state(sock)
        for reply in replies:
            now = unix_ns_to_ntp(time_ns()) & NOT_LOW_BIT
            message = reply.prefix + (reply.transmit or now).to_bytes(8, "big")
            where = (address_text(reply.address, reply.is_v6), reply.port)
            if not self._send_one(sock, state, log, message, where):
                errors += 1
                continue
            log.keep(reply.receive, now, reply.client)
            if state.stamped:
                self._await(state, reply.receive)
        self.collect(sock, log)
        return errors

    def _send_one(self, sock: socket.socket, state: _ServingSocket, log: TransmitLog,
                  message: bytes, where: tuple[str, int]) -> bool:
        if state.stamped:
            try:
                sock.sendmsg([message], STAMP_THIS, 0, where)
                return True
            except OSError as err:
                if err.errno != errno.EINVAL:
                    self._restart(sock, state, log)
                    return False
                state.stamped = False  # no per-datagram stamps on this kernel: send plain
        try:
            sock.sendto(message, where)
        except OSError:
            return False
        return True

    def _await(self, state: _ServingSocket, receive: int) -> None:
        pending = state.pending
        if len(pending) >= self.PENDING_LIMIT:
            del pending[next(iter(pending))]
        pending[state.next_key] = receive
        state.next_key = (state.next_key + 1) & _KEY_MASK

    def _restart(self, sock: socket.socket, state: _ServingSocket, log: TransmitLog) -> None:
        """A stamped send failed: whether the kernel counted it is unknown. Set OPT_ID anew,
        which restarts its counter at 0, and give up the stamps awaited."""
        self.collect(sock, log)
        state.pending.clear()
        state.next_key = 0
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING,
                            SERVER_FLAGS & ~SOF_TIMESTAMPING_OPT_ID)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, SERVER_FLAGS)
        except OSError:
            state.stamped = False

    def collect(self, sock: socket.socket, log: TransmitLog) -> None:
        """Move the stamps on `sock`'s error queue into `log`."""
        stamps = read_stamps(sock)
        state = self._sockets.get(sock)
        if not stamps or state is None:
            return
        for key, stamp_ns in stamps:
            receive = state.pending.pop(key, None)
            if receive is not None and log.kernel_stamp(
                    receive, unix_ns_to_ntp(stamp_ns) & NOT_LOW_BIT):
                self.stamps += 1
