"""Mode 6 with --workers: a worker hands the ntpq requests it receives to the main process.

SO_REUSEPORT gives a request to whichever process the kernel picks, but only the main process
holds the associations, the engine and the mrulist secret. Each worker has one end of a Unix
datagram socketpair made before the fork; it sends every mode 6 request it queued, with the
index of the serving socket it came in on and the restrict flags it found, and the main
process answers it from its own socket of the same index: the same local address and port
(the socket sets are opened in the same order), so ntpq sees the answer from where it asked.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence

from pyntpd.proto.server import Responder

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
        self.dropped = 0  # the link was full (the main process is behind): not answered

    def forward(self, sock: socket.socket) -> None:
        index = self.index.get(sock.fileno())
        for data, address, is_v6, port, flags in self.responder.take_control():
            if index is None:
                self.dropped += 1
                continue
            head = _HEAD.pack(index, is_v6, port, flags & (2**64 - 1), address.to_bytes(16, "big"))
            try:
                self.link.send(head + data)
                self.forwarded += 1
            except OSError:
                self.dropped += 1


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

    def drain(self, link: socket.socket) -> None:
        batches: dict[int, list[tuple[bytes, int, bool, int, int]]] = {}
        for _ in range(BATCH):
            try:
                message = link.recv(MAX_REQUEST)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if len(message) < _HEAD.size:
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
