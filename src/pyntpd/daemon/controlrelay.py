"""Mode 6 with --workers: a worker hands the ntpq requests it receives to the main process.

SO_REUSEPORT gives a request to whichever process the kernel picks, but only the main process
holds the associations, the engine and the mrulist secret. Each worker has one end of a Unix
datagram socketpair made before the fork; it sends every mode 6 request it queued, with the
index of the serving socket it came in on and the restrict flags it found, and the main
process answers it from its own socket of the same index: the same local address and port
(the socket sets are opened in the same order), so ntpq sees the answer from where it asked.

The same link carries each worker's serving counters every POLL_INTERVAL, so that what mode 6
(sysstats, iostats) and the metrics report is the sum over all processes. Messages start
with a kind byte: a request, or the counters as JSON (never pickle: nothing from the link is
trusted to run code).
"""

from __future__ import annotations

import contextlib
import enum
import json
import socket
import struct
from collections.abc import Callable, Iterable, Sequence

from pyntpd.proto import mssntp, nts
from pyntpd.proto.auth import AuthResult
from pyntpd.proto.packet import DropReason
from pyntpd.proto.server import Responder, ServerCounters

REQUEST = b"R"
COUNTERS = b"C"
_COUNTS = ("received", "served", "nts_served", "peer_packets", "broadcast_packets",
           "mssntp_signed")
_BY_REASON: dict[str, type[enum.StrEnum]] = {
    "dropped": DropReason, "auth_failed": AuthResult, "nts_failed": nts.NtsFailure,
    "mssntp_failed": mssntp.MssntpFailure}


def encode_counters(c: ServerCounters) -> bytes:
    doc: dict[str, object] = {name: getattr(c, name) for name in _COUNTS}
    for name in _BY_REASON:
        doc[name] = {reason.value: n for reason, n in getattr(c, name).items()}
    doc["kod_sent"] = {code.decode("latin-1"): n for code, n in c.kod_sent.items()}
    return COUNTERS + json.dumps(doc).encode()


def decode_counters(data: bytes) -> ServerCounters | None:
    """The counters a worker sent, or None if they are not what encode_counters makes."""
    try:
        doc = json.loads(data)
        c = ServerCounters(**{name: _count(doc[name]) for name in _COUNTS})
        for name, kind in _BY_REASON.items():
            setattr(c, name, {kind(k): _count(n) for k, n in doc[name].items()})
        c.kod_sent = {k.encode("latin-1")[:4]: _count(n) for k, n in doc["kod_sent"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeError):
        return None
    return c


def _count(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("not a count")
    return value


def total(counters: Iterable[ServerCounters]) -> ServerCounters:
    """Every process's counters added up."""
    out = ServerCounters()
    for c in counters:
        for name in _COUNTS:
            setattr(out, name, getattr(out, name) + getattr(c, name))
        for name in (*_BY_REASON, "kod_sent"):
            into = getattr(out, name)
            for key, n in getattr(c, name).items():
                into[key] = into.get(key, 0) + n
    return out

# serving socket index, is_v6, client port, restrict flags, client address (16 bytes)
_HEAD = struct.Struct("!HBHQ16s")
MAX_REQUEST = 2048  # larger than any datagram a serving socket accepts
BATCH = 64  # forwarded requests the main process reads per wake-up


class ControlForwarder:
    """Worker side: `forward` replaces the main process's ControlService.answer."""

    def __init__(self, link: socket.socket, sockets: Sequence[socket.socket],
                 responder: Responder) -> None:
        link.setblocking(False)
        self.link = link
        self.index = {sock.fileno(): i for i, sock in enumerate(sockets)}
        self.responder = responder
        self.forwarded = 0
        # The link was full (the main process is behind): not answered, counted as the
        # responder counts a full mode 6 queue, rate_limited.
        self.dropped = 0

    def forward(self, sock: socket.socket) -> None:
        index = self.index.get(sock.fileno())
        for data, address, is_v6, port, flags in self.responder.take_control():
            if index is None:
                self._drop()
                continue
            head = _HEAD.pack(index, is_v6, port, flags & (2**64 - 1), address.to_bytes(16, "big"))
            try:
                self.link.send(REQUEST + head + data)
                self.forwarded += 1
            except OSError:
                self._drop()

    def _drop(self) -> None:
        self.dropped += 1
        self.responder.counters.drop(DropReason.RATE_LIMITED)

    def publish(self) -> None:
        """This worker's counters for the main process (a full link: the next one will do)."""
        with contextlib.suppress(OSError):
            self.link.send(encode_counters(self.responder.counters))


Answer = Callable[[socket.socket, list[tuple[bytes, int, bool, int, int]]], None]


class ControlRelay:
    """Main side: reads what the workers forward and answers it on the matching socket."""

    def __init__(self, links: Sequence[socket.socket], sockets: Sequence[socket.socket],
                 answer: Answer) -> None:
        for link in links:
            link.setblocking(False)
        self.links = list(links)
        self.sockets = list(sockets)
        self.answer = answer
        self.received = 0
        self.malformed = 0  # cannot happen with our own workers; counted, never trusted
        self.worker_counters: dict[int, ServerCounters] = {}  # by link, the latest

    def counters(self, own: ServerCounters) -> ServerCounters:
        """The main process's counters plus every worker's latest."""
        return total([own, *self.worker_counters.values()]) if self.worker_counters else own

    def drain(self, link: socket.socket) -> None:
        batches: dict[int, list[tuple[bytes, int, bool, int, int]]] = {}
        for _ in range(BATCH):
            try:
                message = link.recv(MAX_REQUEST)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            kind, message = message[:1], message[1:]
            if kind == COUNTERS:
                counters = decode_counters(message)
                if counters is None:
                    self.malformed += 1
                else:
                    self.worker_counters[self.links.index(link)] = counters
                continue
            if kind != REQUEST or len(message) < _HEAD.size:
                self.malformed += 1
                continue
            index, is_v6, port, flags, raw = _HEAD.unpack_from(message)
            if index >= len(self.sockets) or is_v6 > 1:
                self.malformed += 1
                continue
            address = int.from_bytes(raw, "big")
            self.received += 1
            batches.setdefault(index, []).append(
                (message[_HEAD.size:], address, bool(is_v6), port, flags))
        for index, queued in batches.items():
            self.answer(self.sockets[index], queued)
