"""The Linux system clock, disciplined through clock_adjtime(CLOCK_REALTIME) (adjtimex).

What each Clock method does to the kernel (include/uapi/linux/timex.h, kernel/time/ntp.c):

- now(): clock_gettime(CLOCK_REALTIME) through time.time_ns().
- adjust_frequency(ppm): ADJ_FREQUENCY, `freq` = ppm * 65536 (scaled ppm), clamped to the
  kernel's +-500 ppm. Absolute: it replaces the previous correction.
- slew(s): ADJ_OFFSET_SINGLESHOT, adjtime()'s semantics: the kernel walks the clock by `s`
  at 500 ppm, replacing any slew still outstanding. The kernel PLL (ADJ_OFFSET with STA_PLL)
  is never used: the engine disciplines by frequency and must know when a correction lands.
- step(s): ADJ_SETOFFSET|ADJ_NANO, one atomic relative step (no read-modify-write race
  as with clock_settime).
- set_sync_status(...): one call with ADJ_STATUS|ADJ_MAXERROR|ADJ_ESTERROR. The status word
  written is STA_UNSYNC unless synchronised (leap 3 counts as not synchronised), plus
  STA_INS/STA_DEL for a pending leap. Every other writable bit is cleared, STA_PLL included:
  the kernel must not run its own PLL/FLL/PPS discipline against ours.
- set_tai_offset(s): ADJ_TAI (`constant`), so CLOCK_TAI is right.

The library is resolved with ctypes.CDLL(None) (the process's global namespace, so an
LD_PRELOAD interposer sees the calls) and can be injected: tests pass a fake that records
the calls, and never run a mutating call against the real kernel.

EPERM (no CAP_SYS_TIME) becomes ClockPermissionError, whose message names ObserveClock's
switches. read_status() is read-only (modes=0) and needs no privilege.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import time
from dataclasses import dataclass
from typing import Any

from .base import MAX_FREQUENCY_PPM, NS_PER_S

CLOCK_REALTIME = 0

# modes (include/uapi/linux/timex.h)
ADJ_OFFSET = 0x0001
ADJ_FREQUENCY = 0x0002
ADJ_MAXERROR = 0x0004
ADJ_ESTERROR = 0x0008
ADJ_STATUS = 0x0010
ADJ_TIMECONST = 0x0020
ADJ_TAI = 0x0080
ADJ_SETOFFSET = 0x0100
ADJ_MICRO = 0x1000
ADJ_NANO = 0x2000
ADJ_TICK = 0x4000
ADJ_OFFSET_SINGLESHOT = 0x8001  # adjtime(); never OR it with ADJ_NANO: 0xa001 is "read"
ADJ_OFFSET_SS_READ = 0xA001

# status bits
STATUS_BITS: dict[str, int] = {
    "PLL": 0x0001,
    "PPSFREQ": 0x0002,
    "PPSTIME": 0x0004,
    "FLL": 0x0008,
    "INS": 0x0010,
    "DEL": 0x0020,
    "UNSYNC": 0x0040,
    "FREQHOLD": 0x0080,
    "PPSSIGNAL": 0x0100,
    "PPSJITTER": 0x0200,
    "PPSWANDER": 0x0400,
    "PPSERROR": 0x0800,
    "CLOCKERR": 0x1000,
    "NANO": 0x2000,
    "MODE": 0x4000,
    "CLK": 0x8000,
}
STA_INS = STATUS_BITS["INS"]
STA_DEL = STATUS_BITS["DEL"]
STA_UNSYNC = STATUS_BITS["UNSYNC"]
STA_NANO = STATUS_BITS["NANO"]

# return values ("clock states")
CLOCK_STATES = ("OK", "INS", "DEL", "OOP", "WAIT", "ERROR")

# The kernel stops counting maxerror at NTP_PHASE_LIMIT (16 s) and sets STA_UNSYNC there.
MAX_ERROR_US = 16_000_000
# glibc's adjtime() bound on a slew (a long of microseconds, in 32-bit int seconds).
MAX_SLEW_S = 2145.0
SCALED_PPM = 65536  # timex.freq / ppsfreq / tolerance / stabil units: ppm << 16


class _Timeval(ctypes.Structure):
    # tv_usec holds nanoseconds when ADJ_NANO / STA_NANO is in effect.
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class Timex(ctypes.Structure):
    """struct timex as the 64-bit kernel lays it out (x86_64, aarch64): 208 bytes.

    Every `__kernel_long_t` is a C long; ctypes inserts the same padding after the ints as
    the C compiler does (after modes, status and shift), and the eleven trailing reserved
    ints keep room for the kernel to write into.
    """

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    )


TIMEX_SIZE_64 = 208
if ctypes.sizeof(ctypes.c_long) == 8 and ctypes.sizeof(Timex) != TIMEX_SIZE_64:
    raise ImportError(f"struct timex is {ctypes.sizeof(Timex)} bytes, expected 208")


class ClockError(OSError):
    """A clock_adjtime call failed; `errno` says why."""


class ClockPermissionError(ClockError, PermissionError):
    """No CAP_SYS_TIME: the clock can be read but not disciplined."""


PERMISSION_HINT = (
    "pyntpd lacks CAP_SYS_TIME and cannot adjust the system clock; to run without "
    "controlling the clock (e.g. in a container), add 'disable ntp' to ntp.conf or start "
    "with --observe: offsets are then measured and reported but never applied"
)


@dataclass(frozen=True, slots=True)
class KernelClockStatus:
    """What adjtimex(modes=0) reports, in plain units."""

    state: str  # "OK", "INS", "DEL", "OOP", "WAIT", "ERROR" (ERROR: not synchronised)
    offset_s: float  # remaining PLL offset (or, with ADJ_OFFSET_SS_READ, slew outstanding)
    frequency_ppm: float
    maxerror_s: float
    esterror_s: float
    status: int  # the raw status word
    flags: frozenset[str]  # its bits by name, e.g. {"UNSYNC", "NANO"}
    constant: int
    precision_s: float
    tolerance_ppm: float
    tick_us: int
    tai: int
    time_ns: int  # the kernel's time when the values were read

    @property
    def synchronised(self) -> bool:
        return "UNSYNC" not in self.flags and self.state != "ERROR"

    @property
    def leap(self) -> int:
        """ntp leap indicator the kernel is armed with: 1 insert, 2 delete, else 0."""
        if "INS" in self.flags:
            return 1
        return 2 if "DEL" in self.flags else 0


def decode_status(status: int) -> frozenset[str]:
    return frozenset(name for name, bit in STATUS_BITS.items() if status & bit)


def status_from_timex(tx: Timex, state: int) -> KernelClockStatus:
    nano = bool(tx.status & STA_NANO)
    sub = 1e-9 if nano else 1e-6
    return KernelClockStatus(
        state=CLOCK_STATES[state] if 0 <= state < len(CLOCK_STATES) else str(state),
        offset_s=tx.offset * sub,
        frequency_ppm=tx.freq / SCALED_PPM,
        maxerror_s=tx.maxerror * 1e-6,
        esterror_s=tx.esterror * 1e-6,
        status=tx.status,
        flags=decode_status(tx.status),
        constant=tx.constant,
        precision_s=tx.precision * 1e-6,
        tolerance_ppm=tx.tolerance / SCALED_PPM,
        tick_us=tx.tick,
        tai=tx.tai,
        time_ns=tx.time.tv_sec * NS_PER_S + tx.time.tv_usec * (1 if nano else 1000),
    )


def _finite(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return value


def _clamp(value: float, limit: float) -> float:
    return max(-limit, min(limit, value))


def default_libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


class SystemClock:
    """The machine's CLOCK_REALTIME, disciplined through clock_adjtime(2)."""

    def __init__(self, libc: Any = None) -> None:
        # The fake a test injects needs only clock_adjtime(clockid, pointer) -> int and
        # ctypes.set_errno() on failure.
        self._libc = default_libc() if libc is None else libc
        self._adjtime = self._libc.clock_adjtime
        self.frequency_ppm: float | None = None  # the last frequency set, for reporting

    @property
    def can_adjust(self) -> bool:
        return True

    def now(self) -> int:
        return time.time_ns()

    def _call(self, tx: Timex, what: str) -> int:
        ctypes.set_errno(0)
        state = self._adjtime(CLOCK_REALTIME, ctypes.byref(tx))
        if state >= 0:
            return int(state)
        err = ctypes.get_errno() or errno.EINVAL
        if err == errno.EPERM:
            raise ClockPermissionError(err, f"{what}: {PERMISSION_HINT}")
        raise ClockError(err, f"{what}: clock_adjtime failed: {os.strerror(err)}")

    def _adjust(self, modes: int, what: str, **fields: int) -> int:
        tx = Timex(modes=modes)
        for name, value in fields.items():
            setattr(tx, name, value)
        return self._call(tx, what)

    def read_status(self) -> KernelClockStatus:
        """The kernel's clock state, read-only (modes=0; needs no privilege)."""
        tx = Timex(modes=0)
        state = self._call(tx, "reading the kernel clock state")
        return status_from_timex(tx, state)

    def adjust_frequency(self, ppm: float) -> None:
        ppm = _clamp(_finite(ppm, "frequency"), MAX_FREQUENCY_PPM)
        self._adjust(ADJ_FREQUENCY, "setting the clock frequency", freq=round(ppm * SCALED_PPM))
        self.frequency_ppm = ppm

    def slew(self, offset_s: float) -> None:
        offset_s = _finite(offset_s, "slew offset")
        if abs(offset_s) > MAX_SLEW_S:
            raise ValueError(f"slew of {offset_s:.0f} s exceeds {MAX_SLEW_S:.0f} s; step instead")
        self._adjust(ADJ_OFFSET_SINGLESHOT, "slewing the clock", offset=round(offset_s * 1e6))

    def step(self, offset_s: float) -> None:
        total_ns = round(_finite(offset_s, "step offset") * NS_PER_S)
        # The kernel wants a normalised timeval: 0 <= tv_usec (nanoseconds here) < 1e9.
        sec, nsec = divmod(total_ns, NS_PER_S)
        tx = Timex(modes=ADJ_SETOFFSET | ADJ_NANO)
        tx.time.tv_sec = sec
        tx.time.tv_usec = nsec
        self._call(tx, "stepping the clock")

    def set_sync_status(
        self, synchronised: bool, maxerror_s: float, esterror_s: float, leap: int
    ) -> None:
        status = 0
        if not synchronised or leap == 3:
            status |= STA_UNSYNC
        if leap == 1:
            status |= STA_INS
        elif leap == 2:
            status |= STA_DEL

        def micro(seconds: float) -> int:
            seconds = _finite(seconds, "error bound")
            return int(max(0.0, min(MAX_ERROR_US, seconds * 1e6)))

        self._adjust(
            ADJ_STATUS | ADJ_MAXERROR | ADJ_ESTERROR,
            "setting the kernel synchronisation status",
            status=status,
            maxerror=micro(maxerror_s),
            esterror=micro(esterror_s),
        )

    def set_tai_offset(self, tai_utc: int) -> None:
        """Tell the kernel TAI-UTC (from the leap file), so CLOCK_TAI is right."""
        if not 0 <= tai_utc <= 1000:
            raise ValueError(f"TAI-UTC offset {tai_utc} out of range")
        self._adjust(ADJ_TAI, "setting the TAI offset", constant=tai_utc)
