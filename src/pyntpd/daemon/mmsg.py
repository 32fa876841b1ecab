"""A batched drop-in for `UdpServer.drain`: Linux recvmmsg/sendmmsg through ctypes.

The plain loop pays two syscalls (recvmsg, sendto), a clock read and the building of
Python tuples for every datagram, and a third syscall to learn that the socket is empty.
Here one recvmmsg fetches up to BATCH datagrams into buffers allocated once per socket and
sendmmsg sends the answers in chunks. Decisions are still the one `Responder`'s
(`classify`, then `respond_full` for anything not FAST); this module only moves bytes.

Every reply is two iovecs: the slot's 40-byte prefix and the transmit timestamp shared by
all replies of one sendmmsg, written right before it; a batch's replies go out in calls of
at most SEND_CHUNK, each with a fresh stamp. A signed or NTS reply (one `respond_full`
queued) is sent from its slot too: after the stamp of its call is read, `finish` seals it
over that stamp and the whole datagram is written over the request in the slot, whose
iovecs then point at it (restored from a pristine image after the batch).

A FAST reply's prefix is one
pack_into of the template's lead and middle (rebuilt here only when the responder's
template generation changes), the request's poll and transmit timestamp and the receive
timestamp: no Python bytes objects per datagram. A slow reply's prefix is the one
`respond_full` returned. Drops split a batch's replies into runs, each sent in chunks.

(Gathering the FAST prefix from six pieces instead -- lead, the request's poll, middle, the
request's transmit timestamp, receive timestamp, transmit -- saves that pack_into but costs
more in the kernel, which imports and copies every iovec of every datagram: on loopback
ip_generic_getfrag went from 2.7% to 4.8% of the server's CPU, and max rate was lower.)

Everything a datagram needs is read by iterating precompiled Structs over the receive
headers and the slot records (`Struct.iter_unpack`), at offsets taken from ctypes' own
layout of `struct mmsghdr`; no ctypes attribute access happens per datagram. The kernel
overwrites msg_namelen, msg_controllen and msg_flags of every header it fills; one bulk
copy from a pristine image restores them.

`available()` says whether this works here; otherwise use `serve.UdpServer`.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator

from pyntpd.daemon.serve import BATCH_LIMIT, SCM_TIMESTAMPNS, after_batch, collect_stamps
from pyntpd.daemon.txstamp import ReplyStamps
from pyntpd.proto.interleaved import NOT_LOW_BIT
from pyntpd.proto.packet import MAX_PACKET_LEN, DropReason
from pyntpd.proto.server import FAST, REPLY_PREFIX_LEN, QueuedReply, Responder
from pyntpd.proto.timestamp import unix_ns_to_ntp

BATCH = 64  # datagrams per recvmmsg/sendmmsg; 64 amortises the syscall cost well
# Replies per sendmmsg, each call with its own transmit timestamp read just before it: the
# kernel sends a call's datagrams one after the other (~0.9 us each on loopback), so the
# last of a long call leaves well after the stamp it carries. A burst of 64 plain replies,
# client kernel receive time minus transmit stamp (t4 - t3), p50/p99: one call 26/93 us,
# 16 per call 7.4/35, 8 per call 4.5/10, 4 per call 2.7/7.6, one each 1.0/3.5; CPU per
# request 2.32, 2.47, 2.47, 2.61 and 3.40 us (bench/stamps.py plain:64:1 plain:16:1 ...).
SEND_CHUNK = 4
# Signed and NTS replies per sendmmsg: their MAC or authenticator is computed after the
# stamp is read and before the call, so each one sealed in a call makes every reply of it
# staler. Bursts of 64, t4 - t3 p50 by sealed replies per call: MD5 15.8 us (all 64), 7.8
# (4), 4.7 (2), 2.8 (1); NTS 18.8 (4), 9.8 (2), 5.5 (1). One per call costs ~10% more CPU
# per MD5 request and ~3% per NTS one than four per call: the stamp wins.
SEALED_CHUNK = 1

# Plain ints: socket.MSG_* are IntFlag members, and `flags & member` goes through
# enum.__and__ (~0.5 us per slow-path datagram).
_MSG_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0x40))
_MSG_TRUNC = int(getattr(socket, "MSG_TRUNC", 0x20))
_NS = 1_000_000_000
_UNIX_TO_NTP = 2_208_988_800  # seconds from 1900 to 1970
_ERA = 0xFFFFFFFF  # NTP seconds wrap (era 1 starts in 2036)


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),  # socklen_t
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint))


_MMSG_SIZE = ctypes.sizeof(_Mmsghdr)
_IOVEC_SIZE = ctypes.sizeof(_Iovec)



def _round_up(n: int, unit: int) -> int:
    return (n + unit - 1) // unit * unit


def _record_struct(order: str, size: int, *fields: tuple[int, str]) -> struct.Struct:
    """A Struct reading (offset, code) fields from a record of `size` bytes.

    Gaps become explicit pad bytes, so the Struct matches the C layout exactly; being
    exactly `size` long, its `iter_unpack` walks an array of such records.
    """
    fmt, at = order, 0
    for offset, code in fields:
        if offset < at:
            raise ValueError("overlapping fields")
        fmt += f"{offset - at}x{code}" if offset > at else code
        at = offset + struct.calcsize(order + code)
    compiled = struct.Struct(f"{fmt}{size - at}x")
    if compiled.size != size:  # native alignment added padding we did not expect
        raise ValueError(f"layout mismatch for {fmt}")
    return compiled


# msg_controllen, msg_flags and msg_len of each received mmsghdr.
_META = _record_struct(
    "@", _MMSG_SIZE,
    (_Msghdr.msg_controllen.offset, "N"),
    (_Msghdr.msg_flags.offset, "i"),
    (_Mmsghdr.msg_len.offset, "I"),
)

# One record per datagram: the reply prefix, the peer's sockaddr, the control buffer, the
# data. The data iovec says MAX_PACKET_LEN + 1 exactly, as UdpServer's recvmsg buffer does,
# so a longer datagram is truncated (MSG_TRUNC) at the same length and dropped the same
# way; the record stride is rounded up to a cache line.
# A FAST prefix: LI/VN/mode + stratum, poll, the template's middle (precision .. reference
# timestamp), origin (the request's transmit timestamp), receive seconds and fraction.
_PREFIX = struct.Struct("!HB21sQII")
assert _PREFIX.size == REPLY_PREFIX_LEN
_NAME_AT = REPLY_PREFIX_LEN
_NAME_SLOT = 32  # sizeof(struct sockaddr_in6) is 28, the larger of the two families
_SOCKADDR_LEN = {socket.AF_INET: 16, socket.AF_INET6: 28}
# The kernel's timestamp is a (legacy, native long) struct timespec: SO_TIMESTAMPNS is
# SO_TIMESTAMPNS_OLD, which on 64-bit Linux is the same as serve.py's "@qq".
_LONG = struct.calcsize("@l")
_CMSG_TS_LEN = socket.CMSG_LEN(2 * _LONG)
_CONTROL_AT = _NAME_AT + _NAME_SLOT
_CONTROL_SLOT = socket.CMSG_SPACE(2 * _LONG)
_DATA_AT = _CONTROL_AT + _CONTROL_SLOT
_RECV_BUFFER = MAX_PACKET_LEN + 1
_RECORD = _round_up(_DATA_AT + _RECV_BUFFER, 64)

# cmsg_level and cmsg_type of the first control message, read as one 8-byte word and
# compared with _TS_KIND; then tv_sec and tv_nsec.
_CMSG = _record_struct(
    "@", _RECORD,
    (_CONTROL_AT + struct.calcsize("@N"), "Q"),
    (_CONTROL_AT + socket.CMSG_LEN(0), "l"),
    (_CONTROL_AT + socket.CMSG_LEN(0) + _LONG, "l"),
)
_TS_KIND = struct.unpack("@Q", struct.pack("@ii", socket.SOL_SOCKET, SCM_TIMESTAMPNS))[0]
# The peer's port and address (IPv6: high and low 64 bits), then the request's first byte,
# poll and transmit timestamp.
_REQUEST = ((_DATA_AT, "B"), (_DATA_AT + 2, "B"), (_DATA_AT + 40, "Q"))
_PEER_V4 = _record_struct(
    "!", _RECORD, (_NAME_AT + 2, "H"), (_NAME_AT + 4, "I"), *_REQUEST)
_PEER_V6 = _record_struct(
    "!", _RECORD, (_NAME_AT + 2, "H"), (_NAME_AT + 8, "Q"), (_NAME_AT + 16, "Q"), *_REQUEST)
# Interleaved mode (proto.interleaved): the last byte of the request's origin, odd when it
# names one of our receive timestamps. A batch is searched for one in a single slice; only
# a batch that has one is walked with the marks read too, so plain traffic costs nothing.
_MARK_AT = _DATA_AT + 31
_EVEN = bytes(range(0, 256, 2))
# Every reply's receive timestamp is odd: the lowest bit of the prefix's last byte, set for
# a whole batch in one slice after its FAST prefixes are written (a `| 1` per datagram cost
# 5-30 ns in the loop). Slow-path prefixes are written after it: a kiss's zero stays zero.
_RECEIVE_LOW_AT = REPLY_PREFIX_LEN - 1
_SET_LOW = bytes(b | 1 for b in range(256))
_MARKED = ((_DATA_AT, "B"), (_DATA_AT + 2, "B"), (_MARK_AT, "B"), (_DATA_AT + 40, "Q"))
_MARKED_V4 = _record_struct(
    "!", _RECORD, (_NAME_AT + 2, "H"), (_NAME_AT + 4, "I"), *_MARKED)
_MARKED_V6 = _record_struct(
    "!", _RECORD, (_NAME_AT + 2, "H"), (_NAME_AT + 8, "Q"), (_NAME_AT + 16, "Q"), *_MARKED)

_TRANSMIT = struct.Struct("!Q")
# A sealed reply's two iovecs: its whole datagram (written over the request in the slot's
# data area) and an empty second one.
_SEALED_IOVECS = struct.Struct("@PNPN")
_MIDDLE_LEN = 21  # the template's precision .. reference timestamp

_STOP_ERRNOS = frozenset((errno.EBADF, errno.ENOTSOCK))
_AGAIN_ERRNOS = frozenset((errno.EAGAIN, errno.EWOULDBLOCK))


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The process's global namespace, never "libc.so.6": a preloaded interposer must
        # see these calls (DESIGN.md §3).
        libc = ctypes.CDLL(None, use_errno=True)
        # No argtypes, on purpose: converting through them costs ~0.4 us per call. Every
        # argument is passed as a C int (fd, vlen, flags), a c_void_p or None, which is
        # exactly what the prototypes take.
        libc.recvmmsg.restype = ctypes.c_int
        libc.sendmmsg.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


def available() -> bool:
    """True on Linux with recvmmsg/sendmmsg in libc: MmsgServer can be used."""
    return _LIBC is not None


def _buffer(size: int, pins: list[object]) -> tuple[bytearray, int]:
    """A zeroed bytearray and its address.

    The ctypes view appended to `pins` holds a buffer export, so any attempt to resize
    (and so move) the bytearray under the kernel's pointers raises instead.
    """
    raw = bytearray(size)
    view = (ctypes.c_char * size).from_buffer(raw)
    pins.append(view)
    return raw, ctypes.addressof(view)


def _v6_peers(records: bytearray) -> Iterator[tuple[int, int, int, int, int]]:
    for port, high, low, first, poll, origin in _PEER_V6.iter_unpack(records):
        yield port, high << 64 | low, first, poll, origin


def _v6_marked(records: bytearray) -> Iterator[tuple[int, int, int, int, int, int]]:
    for port, high, low, first, poll, mark, origin in _MARKED_V6.iter_unpack(records):
        yield port, high << 64 | low, first, poll, mark, origin


class _Batch:
    """Every buffer one socket's recvmmsg/sendmmsg needs, built once.

    Receive message i fills record i (name, control, data); transmit message i sends the
    prefix in record i and the shared transmit timestamp to the name in record i.
    """

    def __init__(self, family: int, size: int) -> None:
        self.family = family
        self.is_v6 = family == socket.AF_INET6
        self.peers = _v6_peers if self.is_v6 else _PEER_V4.iter_unpack
        self.marked = _v6_marked if self.is_v6 else _MARKED_V4.iter_unpack
        self.size = size
        pins: list[object] = []
        self.records, records_at = _buffer(size * _RECORD, pins)
        self.transmit, transmit_at = _buffer(_TRANSMIT.size, pins)
        self.headers, rx_at = _buffer(size * _MMSG_SIZE, pins)
        tx_headers, tx_at = _buffer(size * _MMSG_SIZE, pins)
        iovec_bytes, iovecs_at = _buffer(3 * size * _IOVEC_SIZE, pins)
        self.rx_pointer = ctypes.c_void_p(rx_at)
        self.records_at = records_at
        self.transmit_at = transmit_at
        self.iovecs = iovec_bytes
        # sendmmsg may stop part-way, and a run of replies may start at any slot.
        self.tx_pointers = tuple(ctypes.c_void_p(tx_at + k * _MMSG_SIZE) for k in range(size))

        iovecs = (_Iovec * (3 * size)).from_buffer(iovec_bytes)
        rx_hdrs = (_Mmsghdr * size).from_buffer(self.headers)
        tx_hdrs = (_Mmsghdr * size).from_buffer(tx_headers)
        name_len = _SOCKADDR_LEN.get(family, _SOCKADDR_LEN[socket.AF_INET6])
        for i in range(size):
            record = records_at + i * _RECORD
            k = 3 * i  # iovec k: the data; k + 1, k + 2: the reply
            for index, (base, length) in enumerate((
                (record + _DATA_AT, _RECV_BUFFER),
                (record, REPLY_PREFIX_LEN),
                (transmit_at, _TRANSMIT.size),
            )):
                iovecs[k + index].iov_base = base
                iovecs[k + index].iov_len = length
            hdr = rx_hdrs[i].msg_hdr
            hdr.msg_name = record + _NAME_AT
            hdr.msg_namelen = _NAME_SLOT
            hdr.msg_iov = iovecs_at + k * _IOVEC_SIZE
            hdr.msg_iovlen = 1
            hdr.msg_control = record + _CONTROL_AT
            hdr.msg_controllen = _CONTROL_SLOT
            hdr = tx_hdrs[i].msg_hdr
            hdr.msg_name = record + _NAME_AT
            hdr.msg_namelen = name_len
            hdr.msg_iov = iovecs_at + (k + 1) * _IOVEC_SIZE
            hdr.msg_iovlen = 2
        # The kernel rewrites namelen/controllen/flags/len of each header it fills.
        self._pristine = memoryview(bytes(self.headers))
        self._pristine_iovecs = bytes(iovec_bytes)
        self._pins = pins
        self.generation: int | None = None
        self.heads = [0] * 256  # the reply's first two bytes, by the request's first byte
        self.middle = bytes(_MIDDLE_LEN)

    def reset(self, count: int) -> None:
        """Restore the first `count` receive headers for the next recvmmsg.

        One bulk copy from the pristine image. A bytearray slice assignment is the same
        memcpy as ctypes.memmove at less than half the call cost (0.16 vs 0.38 us).
        """
        end = count * _MMSG_SIZE
        self.headers[:end] = self._pristine[:end]

    def put_sealed(self, slot: int, message: bytes) -> None:
        """Send `message` whole from `slot` instead of its prefix and the shared stamp."""
        if len(message) > _RECV_BUFFER:
            raise ValueError(f"a {len(message)}-byte reply does not fit a slot")
        data_at = slot * _RECORD + _DATA_AT
        self.records[data_at:data_at + len(message)] = message
        _SEALED_IOVECS.pack_into(self.iovecs, (3 * slot + 1) * _IOVEC_SIZE,
                                 self.records_at + data_at, len(message), self.transmit_at, 0)

    def restore_iovecs(self) -> None:
        """Every slot back to prefix + shared stamp, after a batch with sealed replies."""
        self.iovecs[:] = self._pristine_iovecs

    def use_template(self, template: tuple[int, list[bytes], bytes]) -> None:
        """Take a new template of the responder's."""
        generation, leads, middle = template
        if len(middle) != _MIDDLE_LEN or any(len(lead) != 2 for lead in leads):
            raise ValueError("the responder's template does not fit the reply layout")
        self.heads = [int.from_bytes(leads[(first >> 3) & 7], "big") for first in range(256)]
        self.middle = middle
        self.generation = generation


# `_answer_slow`'s answer for a signed or NTS reply: its slot is filled when it is sealed.
SEALED = b"sealed"


def _mark_receive(records: bytearray, count: int, slow: list[tuple[int, bytes]]) -> None:
    """Set the lowest bit of the receive timestamp of the first `count` slots' prefixes (in
    one slice), then write the slow path's prefixes, which carry their own receive field."""
    end = count * _RECORD
    records[_RECEIVE_LOW_AT:end:_RECORD] = records[_RECEIVE_LOW_AT:end:_RECORD].translate(
        _SET_LOW)
    for at, prefix in slow:
        records[at:at + REPLY_PREFIX_LEN] = prefix


def _runs(count: int, dropped: list[int]) -> list[tuple[int, int]]:
    """The slots to send, as (first, end) runs between the slots with no reply."""
    runs = []
    start = 0
    for slot in dropped:
        if start < slot:
            runs.append((start, slot))
        start = slot + 1
    if start < count:
        runs.append((start, count))
    return runs


class MmsgServer:
    """`UdpServer` with batched syscalls: same constructor, attributes and drain()."""

    def __init__(
        self,
        responder: Responder,
        time_ns: Callable[[], int] = time.time_ns,
        *,
        batch: int = BATCH,
        send_chunk: int = SEND_CHUNK,
        sealed_chunk: int = SEALED_CHUNK,
    ) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available here")
        if batch < 1 or send_chunk < 1 or sealed_chunk < 1:
            raise ValueError("batch, send_chunk and sealed_chunk must be at least 1")
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
        self._batch_size = batch
        self._send_chunk = send_chunk
        self._sealed_chunk = sealed_chunk
        self._batches: dict[socket.socket, _Batch] = {}
        # (slot, reply) of this batch's signed and NTS replies, in slot order: sealed in
        # `_send` once their transmit timestamp is read, sent with the rest of the batch.
        self._sealed: list[tuple[int, QueuedReply]] = []
        self.stamps = ReplyStamps()  # kernel transmit stamps of interleaved-mode replies

    def _batch_for(self, sock: socket.socket) -> _Batch:
        # Keyed by the socket object (identity): a dict hit is 25 ns, where reading
        # sock.family costs 0.5 us per drain.
        batch = self._batches.get(sock)
        if batch is None:
            # Forget closed sockets so that reopening them does not accumulate buffers.
            for old in [s for s in self._batches if s.fileno() < 0]:
                del self._batches[old]
            batch = self._batches[sock] = _Batch(sock.family, self._batch_size)
        return batch

    def drain(self, sock: socket.socket) -> int:
        """Answer datagrams until the socket is empty or BATCH_LIMIT; returns how many."""
        assert _LIBC is not None
        recvmmsg = _LIBC.recvmmsg
        batch = self._batch_for(sock)
        fd = sock.fileno()
        handled = 0
        errors = 0
        while handled + errors < BATCH_LIMIT:
            want = min(batch.size, BATCH_LIMIT - handled - errors)
            got = recvmmsg(fd, batch.rx_pointer, want, _MSG_DONTWAIT, None)
            if got < 0:
                err = ctypes.get_errno()
                if err in _AGAIN_ERRNOS or err == errno.EINTR:
                    break
                # ICMP errors from earlier sends surface here on Linux; never fatal.
                self.receive_errors += 1
                if err in _STOP_ERRNOS:
                    break
                errors += 1
                continue
            handled += got
            try:
                runs = self._answer(batch, got)
            finally:
                batch.reset(got)
            if runs:
                try:
                    self._send(fd, batch, runs)
                finally:
                    if self._sealed:
                        self._sealed.clear()
                        batch.restore_iovecs()
            if got < want:
                break  # the queue was empty: save the syscall that would say EAGAIN
        self.send_errors += after_batch(sock, self.responder, self.on_control, self.time_ns,
                                        self.on_peer, self.on_mssntp, self.stamps)
        collect_stamps(self.stamps, sock, self.responder, handled)
        return handled

    def _answer(self, batch: _Batch, count: int) -> list[tuple[int, int]]:
        """Decide on `count` received datagrams and write their replies' prefixes.

        Returns the runs of slots to send.
        """
        responder = self.responder
        classify = responder.classify
        time_ns = self.time_ns
        self._sealed.clear()
        template = responder.template(time_ns() / 1e9)
        if template[0] != batch.generation:
            batch.use_template(template)
        heads, middle = batch.heads, batch.middle
        pack_prefix = _PREFIX.pack_into
        records = batch.records
        is_v6 = batch.is_v6
        dropped: list[int] = []
        slow: list[tuple[int, bytes]] = []  # (slot offset, prefix) answered by respond_full
        if records[_MARK_AT:count * _RECORD:_RECORD].translate(None, _EVEN):
            self._answer_marked(batch, count, dropped)
            return _runs(count, dropped) if dropped else [(0, count)]
        # The range comes first and is the shortest: zip stops at it without reading the
        # record after the last one filled.
        for at, (controllen, flags, length), (port, address, first, poll, origin), (
            kind, sec, nsec,
        ) in zip(
            range(0, count * _RECORD, _RECORD),
            _META.iter_unpack(batch.headers),
            batch.peers(batch.records),
            _CMSG.iter_unpack(records),
            strict=False,
        ):
            # controllen is the kernel's: a slot it did not fill holds a stale timestamp.
            if controllen < _CMSG_TS_LEN or kind != _TS_KIND:
                sec, nsec = divmod(time_ns(), _NS)
            now = sec + nsec * 1e-9
            verdict = classify(first, length, address, is_v6, port, now)
            if verdict == FAST:
                # NTP seconds and fraction: the same as unix_ns_to_ntp(sec * 10**9 + nsec).
                pack_prefix(records, at, heads[first], poll, middle, origin,
                            (sec + _UNIX_TO_NTP) & _ERA, (nsec << 32) // _NS)
            else:
                prefix = self._answer_slow(
                    batch, at, flags, length, address, port, sec, nsec, now, verdict)
                if prefix is None:
                    dropped.append(at // _RECORD)
                elif prefix is not SEALED:
                    slow.append((at, prefix))
        _mark_receive(records, count, slow)
        return _runs(count, dropped) if dropped else [(0, count)]

    def _answer_marked(self, batch: _Batch, count: int, dropped: list[int]) -> None:
        """`_answer`'s loop for a batch with a request whose origin is odd: FAST ones of
        those go to the responder's interleaved mode (`_answer_interleaved`)."""
        responder = self.responder
        classify = responder.classify
        time_ns = self.time_ns
        heads, middle = batch.heads, batch.middle
        pack_prefix = _PREFIX.pack_into
        records = batch.records
        is_v6 = batch.is_v6
        slow: list[tuple[int, bytes]] = []
        for at, (controllen, flags, length), (port, address, first, poll, mark, origin), (
            kind, sec, nsec,
        ) in zip(
            range(0, count * _RECORD, _RECORD),
            _META.iter_unpack(batch.headers),
            batch.marked(batch.records),
            _CMSG.iter_unpack(records),
            strict=False,
        ):
            if controllen < _CMSG_TS_LEN or kind != _TS_KIND:
                sec, nsec = divmod(time_ns(), _NS)
            now = sec + nsec * 1e-9
            verdict = classify(first, length, address, is_v6, port, now)
            if verdict == FAST and not mark & 1:
                pack_prefix(records, at, heads[first], poll, middle, origin,
                            (sec + _UNIX_TO_NTP) & _ERA, (nsec << 32) // _NS)
                continue
            if verdict == FAST:
                prefix = self._answer_interleaved(batch, at, address, port, sec, nsec, now)
            else:
                prefix = self._answer_slow(
                    batch, at, flags, length, address, port, sec, nsec, now, verdict)
            if prefix is None:
                dropped.append(at // _RECORD)
            elif prefix is not SEALED:
                slow.append((at, prefix))
        _mark_receive(records, count, slow)

    def _answer_interleaved(
        self, batch: _Batch, at: int, address: int, port: int, sec: int, nsec: int,
        now: float,
    ) -> bytes | None:
        """A FAST request whose origin may be one of our receive timestamps: the responder
        queues it for after the batch (None), or gives its basic prefix."""
        start = at + _DATA_AT
        receive = ((sec + _UNIX_TO_NTP) & _ERA) << 32 | (nsec << 32) // _NS
        return self.responder.interleave(
            batch.records[start:start + REPLY_PREFIX_LEN + 8], address, batch.is_v6, port,
            receive, now)

    def _answer_slow(
        self, batch: _Batch, at: int, flags: int, length: int, address: int, port: int,
        sec: int, nsec: int, now: float, verdict: int,
    ) -> bytes | None:
        """The full path for the datagram in the record at `at`: its prefix, `SEALED` (a
        signed or NTS reply, written into its slot when its sendmmsg is stamped), or None."""
        counters = self.responder.counters
        if flags & _MSG_TRUNC:
            counters.received += 1
            counters.drop(DropReason.TOO_LONG)
            return None
        start = at + _DATA_AT
        receive = ((sec + _UNIX_TO_NTP) & _ERA) << 32 | (nsec << 32) // _NS
        queue = self.responder.signed_queue
        queued = len(queue)
        # A bytearray slice: a private copy, and the cheapest input for respond_full().
        prefix = self.responder.respond_full(
            batch.records[start:start + length], address, batch.is_v6, port, receive, now,
            verdict)
        if prefix is None:
            if len(queue) == queued:
                return None
            # Signed or NTS: sent from this slot, sealed over the stamp its sendmmsg carries.
            self._sealed.append((at // _RECORD, queue.pop()))
            return SEALED
        if len(prefix) != REPLY_PREFIX_LEN:
            raise ValueError(f"responder returned a {len(prefix)}-byte reply prefix")
        return prefix

    def _send(self, fd: int, batch: _Batch, runs: list[tuple[int, int]]) -> None:
        """sendmmsg the runs of replies; never blocks, counts what is not sent.

        Each call sends at most `send_chunk` replies, and at most `sealed_chunk` signed or
        NTS ones, under a transmit timestamp read just before it; those are sealed after
        the read, so their MAC or authenticator covers the stamp they carry.
        """
        assert _LIBC is not None
        sendmmsg = _LIBC.sendmmsg
        pack_transmit = _TRANSMIT.pack_into
        transmit, time_ns, pointers = batch.transmit, self.time_ns, batch.tx_pointers
        chunk = self._send_chunk
        sealed, next_sealed = self._sealed, 0
        for index, (start, stop) in enumerate(runs):
            interrupted = 0
            while start < stop:
                end = min(stop, start + chunk)
                # Stamped as late as possible; the lowest bit clear (proto.interleaved).
                stamp = unix_ns_to_ntp(time_ns()) & NOT_LOW_BIT
                pack_transmit(transmit, 0, stamp)
                if next_sealed < len(sealed):
                    end, next_sealed = self._seal(batch, start, end, stamp, next_sealed)
                sent = sendmmsg(fd, pointers[start], end - start, _MSG_DONTWAIT)
                if sent > 0:
                    start += sent  # a partial send: go on with the rest
                    continue
                err = ctypes.get_errno() if sent < 0 else errno.EAGAIN
                if err == errno.EINTR and interrupted < 3:
                    interrupted += 1  # sendto retries on EINTR too (PEP 475)
                    continue
                if err in _AGAIN_ERRNOS:
                    # The send buffer is full; waiting would stall the loop. Drop the rest.
                    self.send_errors += stop - start + sum(b - a for a, b in runs[index + 1:])
                    return
                # This datagram failed (e.g. EPERM from a firewall): skip it, as sendto would.
                self.send_errors += 1
                start += 1

    def _seal(
        self, batch: _Batch, start: int, end: int, stamp: int, next_sealed: int
    ) -> tuple[int, int]:
        """Seal the queued replies in slots [start, end) over `stamp`, at most
        `sealed_chunk` of them; returns where this call's send ends and the next to seal."""
        sealed = self._sealed
        budget = self._sealed_chunk
        while next_sealed < len(sealed):
            slot, reply = sealed[next_sealed]
            if slot >= end:
                break
            next_sealed += 1
            if slot < start:
                continue  # its send failed already
            batch.put_sealed(slot, reply.finish(stamp))
            budget -= 1
            if not budget:
                return slot + 1, next_sealed
        return end, next_sealed
