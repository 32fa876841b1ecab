"""Safety net: no test in this package can change this machine's clock; and a fake kernel.

Every SystemClock built without an injected libc gets the real libc wrapped in ReadOnlyLibc,
which lets clock_adjtime/adjtimex through only with modes == 0 or ADJ_OFFSET_SS_READ (pure
reads) and fails the test otherwise, before the call reaches the kernel.

FakeKernel is a libc whose clock_adjtime does to its own state what Linux's does to the
system clock (kernel/time/ntp.c, timekeeping.c), for take-over, hand-back and meddling.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from pyntpd.clock import kernel as system

# The unpatched factory, for the one test that checks how it resolves libc (with CDLL faked).
REAL_DEFAULT_LIBC = system.default_libc


class ReadOnlyLibc:
    def __init__(self, real: Any) -> None:
        self._real = real

    def _guard(self, ref: Any) -> None:
        modes = ref._obj.modes
        if modes not in (0, system.ADJ_OFFSET_SS_READ):
            pytest.fail(f"a test tried a mutating adjtimex call (modes=0x{modes:x})")

    def clock_adjtime(self, clockid: int, ref: Any) -> int:
        self._guard(ref)
        return self._real.clock_adjtime(clockid, ref)

    def adjtimex(self, ref: Any) -> int:
        self._guard(ref)
        return self._real.adjtimex(ref)


@pytest.fixture(autouse=True)
def _read_only_kernel_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ctypes.CDLL(None, use_errno=True)
    monkeypatch.setattr(system, "default_libc", lambda: ReadOnlyLibc(real))


@pytest.fixture
def real_libc() -> ReadOnlyLibc:
    return system.default_libc()


STA_RONLY = sum(system.STATUS_BITS[name] for name in (
    "PPSSIGNAL", "PPSJITTER", "PPSWANDER", "PPSERROR", "CLOCKERR", "NANO", "MODE", "CLK"))
ADJ_ADJTIME = 0x8000
ADJ_OFFSET_READONLY = 0x2000
TIME_ERROR = 5


class FakeKernel:
    """Linux's adjtimex semantics on a state of its own (nothing reaches the real kernel).

    - ADJ_OFFSET_SINGLESHOT replaces the adjtime() remainder (microseconds) and returns the
      old one; ADJ_OFFSET_SS_READ only reads it.
    - ADJ_STATUS: turning STA_PLL off resets the status to bare STA_UNSYNC first (even
      STA_NANO); otherwise the read-only bits stay. ADJ_OFFSET writes the PLL offset only
      while STA_PLL is on (and with offset 0 leaves the frequency alone). ADJ_SETOFFSET
      steps `time_ns`, not `boot_ns`.
    - Every call returns the whole state and the time read after any step.
    `fail` maps a mode mask to an errno: a call with any of those bits fails, changing
    nothing. Tests play other processes by changing the attributes directly.
    """

    def __init__(self, *, time_ns: int = 1_800_000_000 * 10**9, freq_ppm: float = 0.0,
                 status: int = system.STA_UNSYNC, pll_offset_ns: int = 0,
                 adjtime_us: int = 0) -> None:
        self.time_ns = time_ns
        self.boot_ns = 5_000 * 10**9
        self.freq = round(freq_ppm * system.SCALED_PPM)
        self.tick = 10_000  # us per 1/USER_HZ s
        self.status = status
        self.pll_offset_ns = pll_offset_ns
        self.adjtime_us = adjtime_us
        self.maxerror = self.esterror = 16_000_000
        self.tai = 0
        self.fail: dict[int, int] = {}
        self.modes: list[int] = []  # every call's modes, in order

    @property
    def freq_ppm(self) -> float:
        return self.freq / system.SCALED_PPM

    @freq_ppm.setter
    def freq_ppm(self, ppm: float) -> None:
        self.freq = round(ppm * system.SCALED_PPM)

    def flags(self) -> frozenset[str]:
        return system.decode_status(self.status)

    def boottime(self) -> int:
        return self.boot_ns

    def advance(self, seconds: float) -> None:
        self.time_ns += round(seconds * 1e9)
        self.boot_ns += round(seconds * 1e9)

    def clock_adjtime(self, clockid: int, ref: Any) -> int:
        assert clockid == system.CLOCK_REALTIME
        tx: system.Timex = ref._obj
        modes = tx.modes
        self.modes.append(modes)
        for mask, err in self.fail.items():
            if modes & mask:
                ctypes.set_errno(err)
                return -1
        nano = bool(self.status & system.STA_NANO)
        if modes & ADJ_ADJTIME:
            old = self.adjtime_us
            if not modes & ADJ_OFFSET_READONLY:
                self.adjtime_us = tx.offset
            tx.offset = old
        else:
            if modes & system.ADJ_SETOFFSET:
                sub = 1 if modes & system.ADJ_NANO else 1000
                self.time_ns += tx.time.tv_sec * 10**9 + tx.time.tv_usec * sub
            if modes & system.ADJ_STATUS:
                if self.status & system.STA_PLL and not tx.status & system.STA_PLL:
                    self.status = system.STA_UNSYNC  # STA_NANO goes too, as in Linux
                self.status = (self.status & STA_RONLY) | (tx.status & ~STA_RONLY)
            if modes & system.ADJ_NANO:
                self.status |= system.STA_NANO
            nano = bool(self.status & system.STA_NANO)
            if modes & system.ADJ_FREQUENCY:
                limit = 500 * system.SCALED_PPM
                self.freq = max(-limit, min(limit, tx.freq))
            if modes & system.ADJ_TICK:
                if not 9_000 <= tx.tick <= 11_000:  # Linux: within 10 % of 10000 us
                    ctypes.set_errno(22)
                    return -1
                self.tick = tx.tick
            if modes & system.ADJ_MAXERROR:
                self.maxerror = tx.maxerror
            if modes & system.ADJ_ESTERROR:
                self.esterror = tx.esterror
            if modes & system.ADJ_TAI:
                self.tai = tx.constant
            if modes & system.ADJ_OFFSET and self.status & system.STA_PLL:
                self.pll_offset_ns = tx.offset * (1 if nano else 1000)
            tx.offset = self.pll_offset_ns if nano else self.pll_offset_ns // 1000
        tx.freq = self.freq
        tx.status = self.status
        tx.maxerror, tx.esterror, tx.tai = self.maxerror, self.esterror, self.tai
        tx.tolerance, tx.tick, tx.precision = 500 << 16, self.tick, 1
        sec, ns = divmod(self.time_ns, 10**9)
        tx.time.tv_sec, tx.time.tv_usec = sec, ns if nano else ns // 1000
        return TIME_ERROR if self.status & system.STA_UNSYNC else 0


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel()
