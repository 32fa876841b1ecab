"""Serving from several processes on one port (SO_REUSEPORT), for machines with more cores.

The main process owns the clock and the configuration; workers only answer requests. What a
reply states about this server (leap, stratum, refid, root delay/dispersion, reference time)
is published by the main process into a small shared memory block guarded by a sequence
counter (a seqlock: one writer, readers retry while a write is in progress), and each worker
picks up a new version within `POLL_INTERVAL`. The kernel spreads clients over the sockets by
their address and port, so one client always meets the same worker and its rate limiting.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import struct
import time
from dataclasses import dataclass, field

from pyntpd.types import SystemVars

POLL_INTERVAL = 0.25

_SEQ = struct.Struct("=Q")
_VARS = struct.Struct("=BBbdd4sQd")


class SharedSystemVars:
    """SystemVars in an anonymous shared mapping, created before the workers are forked."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, _SEQ.size + _VARS.size)
        self._seq = 0

    def publish(self, s: SystemVars) -> None:
        self._seq += 1  # odd: a write is in progress
        _SEQ.pack_into(self._map, 0, self._seq)
        _VARS.pack_into(self._map, _SEQ.size, s.leap, s.stratum, s.precision, s.root_delay,
                        s.root_dispersion, s.refid, s.reference_time, s.updated_at)
        self._seq += 1
        _SEQ.pack_into(self._map, 0, self._seq)

    def read(self, known_seq: int) -> tuple[int, SystemVars | None]:
        """(sequence, new variables) — None when nothing changed since `known_seq`."""
        for _ in range(100):
            (before,) = _SEQ.unpack_from(self._map, 0)
            if before == known_seq:
                return before, None
            if before & 1:
                continue
            fields = _VARS.unpack_from(self._map, _SEQ.size)
            (after,) = _SEQ.unpack_from(self._map, 0)
            if after == before:
                return before, SystemVars(*fields)
        return known_seq, None  # the writer is busy; try again at the next poll

    def close(self) -> None:
        self._map.close()


@dataclass
class WorkerSet:
    pids: list[int] = field(default_factory=list)

    def signal_all(self, signum: int) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every worker, wait (bounded), SIGKILL what is left."""
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        remaining = set(self.pids)
        while remaining and time.monotonic() < deadline:
            for pid in list(remaining):
                with contextlib.suppress(ChildProcessError):
                    done, _ = os.waitpid(pid, os.WNOHANG)
                    if not done:
                        continue
                remaining.discard(pid)
            if remaining:
                time.sleep(0.02)
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        self.pids = []
