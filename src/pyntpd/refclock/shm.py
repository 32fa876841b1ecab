"""The shared memory driver, ntpd's type 28 (SHM): what gpsd (and others) write time into.

The segment is System V shared memory, key 0x4e545030 + unit ("NTP0"), laid out as ntpd's
`struct shmTime` (ctypes keeps the C layout: 96 bytes on LP64). Created as ntpd creates it:
units 0 and 1 owner-only (0600), units 2 and up world-writable (0666) unless mode bit 1
asks for a private one: a world-writable segment lets any local user feed this server's
time (docs/security.md). At start ntpd writes precision -1, nsamples 3 and clears valid; so
do we.

Once a second the segment is read with its count/valid protocol: nothing unless `valid`;
`count` remembered, the record copied, `valid` cleared, and in mode 1 the copy is refused if
`count` moved meanwhile (a writer was in the middle of it: a clash). Mode 0 trusts the
copy. The nanosecond fields are used when the microsecond ones are their truncation, as
ntpd does. Then ntpd's two checks: the receive timestamp may be at most 5 s old (never in
the future), and the reference may differ from it by at most 4 h, or `fudge time2` s
(1..86400), or without limit under `fudge flag1 1`. `fudge time1` is added to each offset;
`flag4` writes the tallies (ticks good notready bad clash) to clockstats at each poll.
Anything impossible (a mode other than 0/1, fractions out of range, a leap code above 3) is
dropped and counted; it never becomes a sample.
"""

from __future__ import annotations

import ctypes
import enum
import math
import os
from dataclasses import dataclass

from pyntpd.refclock.base import FLAG1, FLAG4, Event, RefclockPeer, lastcode_iso

SHM_KEY = 0x4E545030
SHM_MODE_PRIVATE = 0x0001  # server ... mode 1: a unit >= 2 stays owner-only
PRECISION = -1  # what ntpd writes into the segment until the writer says better
NSAMPLES = 3
MAX_DELAY = 5  # s: the receive timestamp may be at most this old
MAX_DELTA = 4 * 3600  # s: reference minus receive time, unless time2 / flag1 say otherwise
DESCRIPTION = "SHM/Shared memory interface"
IPC_CREAT = 0o1000
IPC_RMID = 0


class ShmTime(ctypes.Structure):
    """ntpd's struct shmTime, field for field."""

    _fields_ = (
        ("mode", ctypes.c_int),
        ("count", ctypes.c_int),
        ("clockTimeStampSec", ctypes.c_long),  # time_t
        ("clockTimeStampUSec", ctypes.c_int),
        ("receiveTimeStampSec", ctypes.c_long),
        ("receiveTimeStampUSec", ctypes.c_int),
        ("leap", ctypes.c_int),
        ("precision", ctypes.c_int),
        ("nsamples", ctypes.c_int),
        ("valid", ctypes.c_int),
        ("clockTimeStampNSec", ctypes.c_uint),
        ("receiveTimeStampNSec", ctypes.c_uint),
        ("dummy", ctypes.c_int * 8),
    )


class Status(enum.StrEnum):
    OK = "ok"
    NO_SEGMENT = "no_segment"
    NOT_READY = "not_ready"
    BAD_MODE = "bad_mode"
    CLASH = "clash"


@dataclass(frozen=True, slots=True)
class Query:
    """One look at the segment: a copy taken under the count/valid protocol."""

    status: Status
    record: ShmTime | None = None


def segment_key(unit: int) -> int:
    return SHM_KEY + unit


def world_writable(unit: int, mode: int) -> bool:
    """ntpd's rule: units 0 and 1 owner-only, 2 and up for all unless mode bit 1."""
    return unit >= 2 and not mode & SHM_MODE_PRIVATE


def _time(sec: int, usec: int, nsec: int) -> tuple[int, int] | None:
    """(seconds, nanoseconds), the nanoseconds used where the microseconds are their
    truncation (ntpd's test, unsigned arithmetic); None if the fields are impossible."""
    if not 0 <= usec < 1_000_000:
        return None
    ns = usec * 1000
    if (nsec - ns) & 0xFFFFFFFF < 1000:
        ns = nsec
    if not 0 <= ns < 1_000_000_000:
        return None
    return sec, ns


@dataclass
class ShmDriver:
    """Type 28 for one unit. `segment` is the I/O (ShmSegment, or a test's stand-in)."""

    peer: RefclockPeer
    segment: SegmentIO
    mode: int = 0
    ticks: int = 0
    good: int = 0
    notready: int = 0
    bad: int = 0
    clash: int = 0

    @property
    def max_delta(self) -> int:
        """0: no limit (flag1)."""
        if self.peer.fudge.flag(FLAG1):
            return 0
        time2 = self.peer.fudge.time2
        return MAX_DELTA if not 1.0 <= time2 <= 86400.0 else math.floor(time2 + 0.5)

    def timer(self, now: float) -> None:
        """Once a second: take what the writer left, if anything."""
        self.ticks += 1
        query = self.segment.query()
        if query.status is Status.NO_SEGMENT:
            self.peer.drop("no_segment")
            return
        if query.status is Status.NOT_READY:
            self.notready += 1
            return
        if query.status is Status.CLASH:
            self.clash += 1
            self.peer.drop("clash")
            return
        if query.status is Status.BAD_MODE:
            self.bad += 1
            self.peer.drop("bad_mode")
            return
        record = query.record
        assert record is not None
        reason = self._take(record, now)
        if reason is not None:
            self.bad += 1
            self.peer.drop(reason)

    def _take(self, r: ShmTime, now: float) -> str | None:
        clock = _time(r.clockTimeStampSec, r.clockTimeStampUSec, r.clockTimeStampNSec)
        receive = _time(r.receiveTimeStampSec, r.receiveTimeStampUSec,
                        r.receiveTimeStampNSec)
        if clock is None or receive is None:
            return "bad_fraction"
        if not 0 <= r.leap <= 3 or not -32 <= r.precision <= 0:
            return "bad_values"
        self.peer.timecode = lastcode_iso(clock[0], clock[1]) if clock[0] >= 0 else ""
        age = math.floor(now) - receive[0]
        if age < 0 or age > MAX_DELAY:
            return "stale"
        delta = abs(receive[0] - clock[0] - (receive[1] < clock[1]))
        if self.max_delta and delta > self.max_delta:
            return "difference_limit"
        offset = (clock[0] - receive[0]) + (clock[1] - receive[1]) * 1e-9
        local = receive[0] + receive[1] * 1e-9
        self.peer.leap = r.leap
        self.peer.precision = r.precision
        self.peer.add(offset + self.peer.fudge.time1, local, clock[0] + clock[1] * 1e-9)
        self.good += 1
        return None

    def poll(self) -> str | None:
        """At the peer's poll, before it takes its sample: the event ntpd reports, and the
        clockstats line under flag4 (the tallies are cleared, as ntpd does)."""
        if self.peer.readings:
            self.peer.report(Event.NOMINAL)
        elif not self.segment.attached:
            self.peer.report(Event.FAULT)
        else:
            major = max(self.notready, self.bad, self.clash)
            if major and major == self.clash:
                self.peer.report(Event.PROP)
            elif major and major == self.bad:
                self.peer.report(Event.BADREPLY)
            # a plain timeout is the peer's own report when it finds no readings
        line = None
        if self.peer.fudge.flag(FLAG4):
            line = (f"{self.ticks:3d} {self.good:3d} {self.notready:3d} {self.bad:3d} "
                    f"{self.clash:3d}")
        self.ticks = self.good = self.notready = self.bad = self.clash = 0
        return line

    def close(self) -> None:
        self.segment.close()


class SegmentIO:
    """What the driver needs of a segment (ShmSegment; tests substitute their own)."""

    attached: bool = False

    def query(self) -> Query:
        raise NotImplementedError

    def close(self) -> None:
        return None


class ShmSegment(SegmentIO):
    """The System V segment itself, through libc (ctypes.CDLL(None): an interposer sees
    the calls). Attaching is retried at every query until it works, as ntpd's timer does."""

    def __init__(self, unit: int, mode: int = 0, key: int | None = None) -> None:
        self.unit = unit
        self.key = segment_key(unit) if key is None else key
        self.perm = 0o666 if world_writable(unit, mode) else 0o600
        self.error: str | None = None
        self.persistent = False
        self._addr: int | None = None
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.shmget.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_int)
        self._libc.shmget.restype = ctypes.c_int
        self._libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
        self._libc.shmat.restype = ctypes.c_void_p
        self._libc.shmdt.argtypes = (ctypes.c_void_p,)
        self._libc.shmdt.restype = ctypes.c_int
        self.attach()

    @property
    def attached(self) -> bool:  # type: ignore[override]
        return self._addr is not None

    def attach(self) -> bool:
        """Create (or find) and attach the segment as ntpd does; False with `error` set."""
        if self._addr is not None:
            return True
        shmid = self._libc.shmget(ctypes.c_int(self.key & 0xFFFFFFFF).value,
                                  ctypes.sizeof(ShmTime), IPC_CREAT | self.perm)
        if shmid == -1:
            self.error = f"shmget(0x{self.key:08x}): {_errno_text()}"
            return False
        addr = self._libc.shmat(shmid, None, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            self.error = f"shmat(0x{self.key:08x}): {_errno_text()}"
            return False
        self._addr = addr
        self.error = None
        shm = ShmTime.from_address(addr)
        shm.precision = PRECISION
        shm.valid = 0
        shm.nsamples = NSAMPLES
        return True

    def query(self) -> Query:
        if self._addr is None and not self.attach():
            return Query(Status.NO_SEGMENT)
        assert self._addr is not None
        shm = ShmTime.from_address(self._addr)
        if shm.valid == 0:
            return Query(Status.NOT_READY)
        count = shm.count
        copy = ShmTime()
        ctypes.memmove(ctypes.addressof(copy), self._addr, ctypes.sizeof(ShmTime))
        shm.valid = 0
        if copy.mode > 0 and count != shm.count:
            return Query(Status.CLASH)
        if copy.mode not in (0, 1):
            return Query(Status.BAD_MODE)
        return Query(Status.OK, copy)

    def close(self, final: bool = False) -> None:
        """Detach; a segment held for the daemon's life (attached as root before -u, see
        daemon.refclocks.Devices) only when `final`."""
        if self.persistent and not final:
            return
        if self._addr is not None:
            self._libc.shmdt(self._addr)
            self._addr = None


def _errno_text() -> str:
    err = ctypes.get_errno()
    return os.strerror(err) if err else "failed"


def segment_exists(unit: int) -> bool:
    """For --check: does the segment exist already (without creating it)?"""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmget.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_int)
    return libc.shmget(ctypes.c_int(segment_key(unit)).value, 0, 0) != -1
