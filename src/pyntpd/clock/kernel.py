"""The Linux system clock, disciplined through clock_adjtime(CLOCK_REALTIME) (adjtimex).

What each Clock method does to the kernel (include/uapi/linux/timex.h, kernel/time/ntp.c):

- now(): clock_gettime(CLOCK_REALTIME) through time.time_ns().
- adjust_frequency(ppm): ADJ_FREQUENCY, `freq` = ppm * 65536 (scaled ppm). Absolute: it
  replaces the previous correction. Beyond the kernel's +-500 ppm (a fast slew before the
  first sync, issue 13) ADJ_TICK as well, in the same call: the tick length carries the
  whole hundreds (100 ppm per microsecond of a 10,000 us tick, within 1/12 of it, as
  chronyd), `freq` the rest; back within 500 ppm the tick returns to nominal. Since Linux
  4.19 both take effect at once (do_adjtimex: timekeeping_advance(TK_ADV_FREQ)).
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
- Each of these returns the time the kernel read in the same call, after the change.
- read_back(): modes=0 (frequency, status, PLL offset, time) and ADJ_OFFSET_SS_READ (the
  adjtime() remainder): both read-only, no privilege needed. CLOCK_BOOTTIME is read around
  the first call: CLOCK_REALTIME minus CLOCK_BOOTTIME changes only when the clock is set
  (slewing moves both alike, suspend advances both), so a step shows there.
- take_over(): ADJ_OFFSET_SINGLESHOT 0 cancels an adjtime() remainder (the kernel returns
  what was left); the PLL offset (time_offset) is only written by ADJ_OFFSET while STA_PLL
  is on, yet worked off every second whatever the status, so ADJ_STATUS|ADJ_OFFSET with
  STA_PLL and offset 0 zeroes it (with offset 0 the PLL leaves the frequency alone), then
  ADJ_STATUS turns every discipline bit off again -- chrony's start-up sequence.
- hand_back(ppm): ADJ_FREQUENCY to the estimate, nothing else (a -q adjtime() slew is left
  to the kernel to finish, as after ntpd -q).

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import (
    FAST_FREQUENCY_PPM,
    NOMINAL_TICK_US,
    NS_PER_S,
    ClockError,
    ClockPermissionError,
    ClockState,
    TakeOver,
    split_frequency,
    tick_ppm,
)

__all__ = ["ClockError", "ClockPermissionError", "SystemClock"]

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
STA_PLL = STATUS_BITS["PLL"]
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


def time_from_timex(tx: Timex) -> int:
    """The kernel's time as the call left it in `tx` (nanoseconds under STA_NANO)."""
    sub = 1 if tx.status & STA_NANO else 1000
    return tx.time.tv_sec * NS_PER_S + tx.time.tv_usec * sub


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
        time_ns=time_from_timex(tx),
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


def boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


BOOT_EPOCH_TRIES = 5
BOOT_EPOCH_TIGHT_NS = 20_000  # two reads this close together need no retry


class SystemClock:
    """The machine's CLOCK_REALTIME, disciplined through clock_adjtime(2)."""

    def __init__(self, libc: Any = None, boottime: Callable[[], int] | None = None) -> None:
        # The fake a test injects needs only clock_adjtime(clockid, pointer) -> int and
        # ctypes.set_errno() on failure (and gives its own CLOCK_BOOTTIME).
        self._libc = default_libc() if libc is None else libc
        self._adjtime = self._libc.clock_adjtime
        self._boottime = boottime_ns if boottime is None else boottime
        self.frequency_ppm: float | None = None  # the last frequency set, for reporting
        self.tick_us = NOMINAL_TICK_US  # the tick length last set or read back

    @property
    def max_frequency_ppm(self) -> float:
        """What adjust_frequency() carries out: with the tick length, beyond 500 ppm."""
        return FAST_FREQUENCY_PPM
    @property
    def kernel_time(self) -> bool:
        return True

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

    def _adjust(self, modes: int, what: str, **fields: int) -> Timex:
        tx = Timex(modes=modes)
        for name, value in fields.items():
            setattr(tx, name, value)
        self._call(tx, what)
        return tx

    def read_status(self) -> KernelClockStatus:
        """The kernel's clock state, read-only (modes=0; needs no privilege)."""
        tx = Timex(modes=0)
        state = self._call(tx, "reading the kernel clock state")
        return status_from_timex(tx, state)

    def read_back(self) -> ClockState:
        """What is in force now; read-only (modes=0 and ADJ_OFFSET_SS_READ)."""
        best: tuple[int, int, KernelClockStatus] | None = None
        for _ in range(BOOT_EPOCH_TRIES):
            # The kernel's time is read inside the call: CLOCK_BOOTTIME on either side of
            # it bounds when. Preemption can put milliseconds between them on a busy
            # machine, so the tightest of a few tries is kept.
            before = self._boottime()
            status = self.read_status()
            after = self._boottime()
            span = after - before
            if best is None or span < best[1]:
                best = (status.time_ns - (before + after) // 2, span, status)
            if span <= BOOT_EPOCH_TIGHT_NS:
                break
        assert best is not None
        boot_epoch, span, status = best
        tx = Timex(modes=ADJ_OFFSET_SS_READ)
        self._call(tx, "reading the adjtime() remainder")
        self.tick_us = status.tick_us
        return ClockState(
            time_ns=status.time_ns,
            frequency_ppm=status.frequency_ppm + tick_ppm(status.tick_us),
            flags=status.flags,
            pll_offset_s=status.offset_s,
            slew_s=tx.offset * 1e-6,  # adjtime() counts in microseconds, whatever STA_NANO
            maxerror_s=status.maxerror_s,
            boot_epoch_ns=boot_epoch,
            boot_epoch_error_ns=span // 2 + 1,
        )

    def take_over(self) -> TakeOver:
        found = self.read_back()
        tx = self._adjust(ADJ_OFFSET_SINGLESHOT, "cancelling an adjtime() slew", offset=0)
        slew_s = tx.offset * 1e-6  # what was still outstanding, atomically
        at = time_from_timex(tx)
        if found.pll_offset_s or found.discipline_flags:
            self._adjust(ADJ_STATUS | ADJ_OFFSET, "zeroing the kernel PLL offset",
                         status=STA_PLL | STA_UNSYNC, offset=0)
            at = time_from_timex(self._adjust(
                ADJ_STATUS, "turning the kernel discipline off", status=STA_UNSYNC))
        self.frequency_ppm = found.frequency_ppm
        return TakeOver(found, at, slew_s=slew_s, pll_offset_s=found.pll_offset_s,
                        flags=found.discipline_flags)

    def hand_back(self, frequency_ppm: float) -> int:
        return self.adjust_frequency(frequency_ppm)

    def adjust_frequency(self, ppm: float) -> int:
        tick, freq = split_frequency(_finite(ppm, "frequency"))
        if tick == self.tick_us:
            tx = self._adjust(ADJ_FREQUENCY, "setting the clock frequency",
                              freq=round(freq * SCALED_PPM))
        else:
            tx = self._adjust(ADJ_FREQUENCY | ADJ_TICK, "setting the clock frequency",
                              freq=round(freq * SCALED_PPM), tick=tick)
            self.tick_us = tick
        self.frequency_ppm = tick_ppm(tick) + freq
        return time_from_timex(tx)

    def slew(self, offset_s: float) -> int:
        offset_s = _finite(offset_s, "slew offset")
        if abs(offset_s) > MAX_SLEW_S:
            raise ValueError(f"slew of {offset_s:.0f} s exceeds {MAX_SLEW_S:.0f} s; step instead")
        tx = self._adjust(ADJ_OFFSET_SINGLESHOT, "slewing the clock",
                          offset=round(offset_s * 1e6))
        return time_from_timex(tx)

    def step(self, offset_s: float) -> int:
        total_ns = round(_finite(offset_s, "step offset") * NS_PER_S)
        # The kernel wants a normalised timeval: 0 <= tv_usec (nanoseconds here) < 1e9.
        sec, nsec = divmod(total_ns, NS_PER_S)
        tx = Timex(modes=ADJ_SETOFFSET | ADJ_NANO)
        tx.time.tv_sec = sec
        tx.time.tv_usec = nsec
        self._call(tx, "stepping the clock")
        return time_from_timex(tx)  # read by the kernel after the step

    def set_sync_status(
        self, synchronised: bool, maxerror_s: float, esterror_s: float, leap: int
    ) -> int:
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

        tx = self._adjust(
            ADJ_STATUS | ADJ_MAXERROR | ADJ_ESTERROR,
            "setting the kernel synchronisation status",
            status=status,
            maxerror=micro(maxerror_s),
            esterror=micro(esterror_s),
        )
        return time_from_timex(tx)

    def set_tai_offset(self, tai_utc: int) -> int:
        """Tell the kernel TAI-UTC (from the leap file), so CLOCK_TAI is right."""
        if not 0 <= tai_utc <= 1000:
            raise ValueError(f"TAI-UTC offset {tai_utc} out of range")
        return time_from_timex(self._adjust(ADJ_TAI, "setting the TAI offset",
                                            constant=tai_utc))
