"""The PPS driver, ntpd's type 22 (PPS), and the Linux PPS API it reads (RFC 2783 as
linux/pps.h exposes it through ioctls on /dev/ppsU).

The kernel structures, field for field from linux/pps.h (LP64 sizes in brackets):
`pps_ktime` {s64 sec; s32 nsec; u32 flags} [16], `pps_kinfo` {u32 assert_sequence,
clear_sequence; pps_ktime assert_tu, clear_tu; int current_mode} [48, the times 8-aligned],
`pps_kparams` {int api_version, mode; pps_ktime assert_off_tu, clear_off_tu} [40] and
`pps_fdata` {pps_kinfo info; pps_ktime timeout} [64]. The ioctl numbers are encoded with
the size of a *pointer* (the header declares them with `struct ... *`), not of the struct.

The driver (driver22 page, ntpd's refclock_pps + refclock_atom): once a second PPS_FETCH
without waiting; a new sequence number on the chosen edge (assert, or clear under `fudge
flag2 1`) is a pulse. A pulse only marks a second's start; which second is the prefer
peer's business: as ntpd requires, pulses are used only while a prefer peer (`server ...
prefer`) is followed and the system offset is under 0.4 s; the offset is then the pulse's
distance to the nearest second plus `fudge time1`. Otherwise the pulse is dropped and
counted (no_prefer_peer). A pulse with a zero or impossible time is dropped and counted.
`fudge flag3 1` (the kernel's own PPS discipline) is refused with the reason: pyntpd's
discipline takes the PPS samples instead. `flag4` writes each pulse's time to clockstats.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass

from pyntpd.refclock.base import FLAG4, Event, RefclockPeer
from pyntpd.sync.engine import PPS_NUMBERING, SyncResult
from pyntpd.types import Tally

PRECISION = -20  # about 1 us
DESCRIPTION = "PPS Clock Discipline"
DEVICE = "/dev/pps{unit}"
NUMBERING_LIMIT = PPS_NUMBERING  # s: beyond this system offset a pulse cannot name its second

# linux/pps.h
PPS_API_VERS_1 = 1
PPS_CAPTUREASSERT = 0x01
PPS_CAPTURECLEAR = 0x02
PPS_OFFSETASSERT = 0x10
PPS_OFFSETCLEAR = 0x20
PPS_ECHOASSERT = 0x40
PPS_ECHOCLEAR = 0x80
PPS_CANWAIT = 0x100
PPS_CANPOLL = 0x200
PPS_TSFMT_TSPEC = 0x1000
PPS_TSFMT_NTPFP = 0x2000
PPS_TIME_INVALID = 1 << 0


class PpsKtime(ctypes.Structure):
    _fields_ = (("sec", ctypes.c_int64), ("nsec", ctypes.c_int32), ("flags", ctypes.c_uint32))


class PpsKinfo(ctypes.Structure):
    _fields_ = (
        ("assert_sequence", ctypes.c_uint32),
        ("clear_sequence", ctypes.c_uint32),
        ("assert_tu", PpsKtime),
        ("clear_tu", PpsKtime),
        ("current_mode", ctypes.c_int),
    )


class PpsKparams(ctypes.Structure):
    _fields_ = (
        ("api_version", ctypes.c_int),
        ("mode", ctypes.c_int),
        ("assert_off_tu", PpsKtime),
        ("clear_off_tu", PpsKtime),
    )


class PpsFdata(ctypes.Structure):
    _fields_ = (("info", PpsKinfo), ("timeout", PpsKtime))


def _ioc(direction: int, nr: int) -> int:
    """asm-generic/ioctl.h's _IOC for type 'p' with the size of a pointer."""
    return (direction << 30) | (ctypes.sizeof(ctypes.c_void_p) << 16) | (ord("p") << 8) | nr


_IOC_WRITE, _IOC_READ = 1, 2
PPS_GETPARAMS = _ioc(_IOC_READ, 0xA1)
PPS_SETPARAMS = _ioc(_IOC_WRITE, 0xA2)
PPS_GETCAP = _ioc(_IOC_READ, 0xA3)
PPS_FETCH = _ioc(_IOC_READ | _IOC_WRITE, 0xA4)

Ioctl = Callable[[int, int, bytearray], object]


@dataclass(frozen=True, slots=True)
class Edge:
    sequence: int
    sec: int
    nsec: int
    flags: int

    @property
    def time(self) -> float:
        return self.sec + self.nsec * 1e-9


class PpsError(Exception):
    pass


class PpsDevice:
    """A /dev/ppsU (or /dev/gpsppsU) through its ioctls. `ioctl` is fcntl.ioctl; tests
    give a fake device's. Opening is retried by the caller until it works."""

    def __init__(self, path: str, clear_edge: bool = False,
                 ioctl: Ioctl | None = None, opener: Callable[[str], int] | None = None) -> None:
        self.path = path
        self.clear_edge = clear_edge
        self.fd: int | None = None
        self.error: str | None = None
        self.capabilities = 0
        self.persistent = False  # opened as root before -u: kept across reloads
        self._ioctl: Ioctl = ioctl or fcntl.ioctl  # type: ignore[assignment]
        self._open = opener or (lambda p: os.open(p, os.O_RDWR | os.O_NOCTTY))

    def _call(self, request: int, struct: ctypes.Structure | ctypes.c_int) -> None:
        buf = bytearray(bytes(struct))
        try:
            self._ioctl(self.fd if self.fd is not None else -1, request, buf)
        except OSError as exc:
            raise PpsError(f"{self.path}: {os.strerror(exc.errno or errno.EIO)}") from exc
        ctypes.memmove(ctypes.addressof(struct), bytes(buf), len(buf))

    def open(self) -> bool:
        """Open and set the edge to capture (nanosecond timespecs); False with `error`."""
        if self.fd is not None:
            return True
        try:
            self.fd = self._open(self.path)
        except OSError as exc:
            self.error = f"{self.path}: {exc.strerror or exc}"
            return False
        try:
            caps = ctypes.c_int(0)
            self._call(PPS_GETCAP, caps)
            self.capabilities = caps.value
            edge = PPS_CAPTURECLEAR if self.clear_edge else PPS_CAPTUREASSERT
            if not self.capabilities & edge:
                raise PpsError(f"{self.path}: cannot capture the "
                               f"{'clear' if self.clear_edge else 'assert'} edge")
            params = PpsKparams()
            self._call(PPS_GETPARAMS, params)
            params.api_version = PPS_API_VERS_1
            params.mode = edge | PPS_TSFMT_TSPEC
            self._call(PPS_SETPARAMS, params)
        except PpsError as exc:
            self.error = str(exc)
            self.close(final=True)
            return False
        self.error = None
        return True

    def fetch(self) -> Edge | None:
        """The newest edge of the chosen kind (without waiting); None if the device is
        closed or the fetch failed (`error` says why; the device is closed and reopened)."""
        if self.fd is None and not self.open():
            return None
        data = PpsFdata()
        try:
            self._call(PPS_FETCH, data)  # timeout 0: no wait
        except PpsError as exc:
            self.error = str(exc)
            self.close(final=True)
            return None
        info = data.info
        if self.clear_edge:
            return Edge(info.clear_sequence, info.clear_tu.sec, info.clear_tu.nsec,
                        info.clear_tu.flags)
        return Edge(info.assert_sequence, info.assert_tu.sec, info.assert_tu.nsec,
                    info.assert_tu.flags)

    def close(self, final: bool = False) -> None:
        if self.persistent and not final:
            return
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


class EdgeSource:
    """What a driver needs of a PPS device (PpsDevice, or the simulator's pulses)."""

    error: str | None = None

    def fetch(self) -> Edge | None:
        raise NotImplementedError

    def close(self) -> None:
        return None


def pulse_time(edge: Edge) -> float | None:
    """The pulse's local time, or None for one without a usable time."""
    if edge.flags & PPS_TIME_INVALID or not 0 <= edge.nsec < 1_000_000_000 or edge.sec <= 0:
        return None
    return edge.time


@dataclass
class PpsDriver:
    """Type 22 for one unit. `device` is the I/O; `numbered()` says whether the prefer
    peer numbers the seconds now (ntpd's rule: followed, system offset under 0.4 s)."""

    peer: RefclockPeer
    device: PpsDevice | EdgeSource
    numbered: Callable[[], bool]
    last_sequence: int | None = None
    pulses: int = 0
    used: int = 0
    clockstats: list[str] | None = None

    @property
    def peers(self) -> list[RefclockPeer]:
        return [self.peer]

    def timer(self, now: float) -> None:
        edge = self.device.fetch()
        if edge is None:
            return
        if edge.sequence == self.last_sequence:
            return  # no new pulse since the last look
        first = self.last_sequence is None
        self.last_sequence = edge.sequence
        if first and edge.sequence == 0:
            return  # nothing captured yet
        self.pulses += 1
        self.edge(edge, now)

    def edge(self, edge: Edge, now: float) -> None:
        local = pulse_time(edge)
        if local is None:
            self.peer.drop("bad_time")
            self.peer.report(Event.BADTIME)
            return
        if now - local > 2.0 or local - now > 1.0:
            self.peer.drop("stale")  # the device's newest pulse is not this second's
            return
        if not self.numbered():
            self.peer.drop("no_prefer_peer")
            return
        # in integer nanoseconds: a float Unix time would round the pulse to 0.2 us
        up = edge.nsec >= 500_000_000
        second = edge.sec + up
        offset = ((1_000_000_000 if up else 0) - edge.nsec) * 1e-9 + self.peer.fudge.time1
        self.peer.timecode = f"{edge.sec}.{edge.nsec:09d}"
        self.peer.add(offset, local, float(second))
        self.used += 1
        if self.peer.fudge.flag(FLAG4):
            self.clockstats = (self.clockstats or []) + [self.peer.timecode]

    def poll(self, peer: RefclockPeer) -> str | None:
        if self.peer.readings:
            self.peer.report(Event.NOMINAL)
        elif getattr(self.device, "error", None):
            self.peer.report(Event.FAULT)
        lines, self.clockstats = self.clockstats, None
        return lines[-1] if lines else None

    def close(self) -> None:
        self.device.close()


def prefer_numbers(result: SyncResult | None) -> bool:
    """ntpd's condition for using PPS pulses: a prefer peer (not itself a PPS clock)
    survives selection and the system offset is under NUMBERING_LIMIT."""
    if result is None or not result.system.synchronised:
        return False
    if abs(result.offset) >= NUMBERING_LIMIT:
        return False
    for source, status in result.sources.items():
        spec = getattr(source, "spec", None)
        if spec is None or not spec.prefer or getattr(source, "clock_type", None) == 22:
            continue
        if status.tally in (Tally.SYSPEER, Tally.CANDIDATE):
            return True
    return False
