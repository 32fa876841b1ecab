"""SystemClock: struct timex layout and reads against the real kernel (modes=0 only); every
mutating call against a fake libc that records what would have been sent."""

from __future__ import annotations

import ctypes
import errno
import math
import sys
import time
from typing import Any

import pytest

from pyntpd.clock import kernel as system
from pyntpd.clock.base import Clock
from pyntpd.clock.kernel import (
    ADJ_ESTERROR,
    ADJ_FREQUENCY,
    ADJ_MAXERROR,
    ADJ_NANO,
    ADJ_OFFSET_SINGLESHOT,
    ADJ_SETOFFSET,
    ADJ_STATUS,
    ADJ_TAI,
    ADJ_TICK,
    CLOCK_REALTIME,
    CLOCK_STATES,
    STA_DEL,
    STA_INS,
    STA_NANO,
    STA_UNSYNC,
    ClockError,
    ClockPermissionError,
    SystemClock,
    Timex,
)
from tests.clock.conftest import REAL_DEFAULT_LIBC, ReadOnlyLibc

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="adjtimex is Linux's")

# Byte offsets of struct timex's fields on a 64-bit kernel (include/uapi/linux/timex.h).
KERNEL_OFFSETS = {
    "modes": 0, "offset": 8, "freq": 16, "maxerror": 24, "esterror": 32, "status": 40,
    "constant": 48, "precision": 56, "tolerance": 64, "time": 72, "tick": 88,
    "ppsfreq": 96, "jitter": 104, "shift": 112, "stabil": 120, "jitcnt": 128,
    "calcnt": 136, "errcnt": 144, "stbcnt": 152, "tai": 160, "_reserved": 164,
}
_COPIED = ("modes", "offset", "freq", "maxerror", "esterror", "status", "constant", "tai",
           "tick")


class FakeLibc:
    """Records each clock_adjtime call's input; can fill in output or fail with an errno."""

    def __init__(self, *, fail: int = 0, fill: dict[str, int] | None = None, state: int = 0):
        self.calls: list[dict[str, int]] = []
        self.fail = fail
        self.fill = fill or {}
        self.state = state

    def clock_adjtime(self, clockid: int, ref: Any) -> int:
        assert clockid == CLOCK_REALTIME
        tx: Timex = ref._obj
        call = {name: getattr(tx, name) for name in _COPIED}
        call["tv_sec"], call["tv_usec"] = tx.time.tv_sec, tx.time.tv_usec
        self.calls.append(call)
        if self.fail:
            ctypes.set_errno(self.fail)
            return -1
        for name, value in self.fill.items():
            setattr(tx, name, value)
        return self.state

    @property
    def last(self) -> dict[str, int]:
        assert len(self.calls) == 1, self.calls
        return self.calls[0]


@pytest.fixture
def fake() -> FakeLibc:
    return FakeLibc()


@pytest.fixture
def clock(fake: FakeLibc) -> SystemClock:
    return SystemClock(libc=fake)


# -- layout and read-only calls against this machine's kernel ------------------------------


@pytest.mark.skipif(ctypes.sizeof(ctypes.c_long) != 8, reason="64-bit layout")
def test_struct_timex_matches_the_64_bit_kernel_layout():
    assert ctypes.sizeof(Timex) == 208
    assert {name: getattr(Timex, name).offset for name in KERNEL_OFFSETS} == KERNEL_OFFSETS


@linux_only
def test_kernel_writes_nothing_past_our_struct(real_libc):
    # Our struct followed by guard bytes: a read must leave every guard byte alone.
    class Guarded(ctypes.Structure):
        _fields_ = (("tx", Timex), ("guard", ctypes.c_ubyte * 64))

    buf = Guarded()
    ctypes.memset(ctypes.byref(buf.guard), 0xA5, 64)
    buf.tx.modes = 0
    state = real_libc.clock_adjtime(CLOCK_REALTIME, ctypes.byref(buf.tx))
    assert state >= 0, ctypes.get_errno()
    assert bytes(buf.guard) == b"\xa5" * 64
    assert buf.tx.tolerance == 500 << 16


@linux_only
def test_read_status_of_this_machine_is_sane():
    status = SystemClock().read_status()  # the real kernel, behind the read-only guard
    assert status.state in CLOCK_STATES
    assert 9000 <= status.tick_us <= 11000  # 1e6/USER_HZ, adjustable by +-10%
    assert status.tolerance_ppm == 500.0
    assert -500.0 <= status.frequency_ppm <= 500.0
    assert 0 <= status.maxerror_s <= 16.0 and 0 <= status.esterror_s <= 16.0
    assert 0 <= status.constant <= 10
    assert 0 <= status.tai <= 100
    assert abs(status.time_ns - time.time_ns()) < 2_000_000_000
    assert status.synchronised == ("UNSYNC" not in status.flags and status.state != "ERROR")


@linux_only
def test_clock_adjtime_and_adjtimex_agree(real_libc):
    a, b = Timex(modes=0), Timex(modes=0)
    assert real_libc.clock_adjtime(CLOCK_REALTIME, ctypes.byref(a)) >= 0
    assert real_libc.adjtimex(ctypes.byref(b)) >= 0
    for name in ("tick", "tolerance", "status", "tai", "constant", "precision"):
        assert getattr(a, name) == getattr(b, name), name


def test_the_guard_stops_mutating_calls():
    # Checked against a fake behind the guard: even a broken guard reaches no kernel.
    behind = FakeLibc()
    guarded = ReadOnlyLibc(behind)
    tx = Timex(modes=ADJ_FREQUENCY)
    with pytest.raises(pytest.fail.Exception):
        guarded.clock_adjtime(CLOCK_REALTIME, ctypes.byref(tx))
    assert behind.calls == []
    assert guarded.clock_adjtime(CLOCK_REALTIME, ctypes.byref(Timex(modes=0))) == 0


# -- the Clock interface, against the fake --------------------------------------------------


def test_is_a_clock(clock):
    assert isinstance(clock, Clock)
    assert clock.can_adjust


def test_now_is_realtime_nanoseconds(clock, fake):
    before = time.time_ns()
    now = clock.now()
    assert isinstance(now, int) and before <= now <= time.time_ns()
    assert fake.calls == []


@pytest.mark.parametrize(
    ("ppm", "scaled"), [(12.5, 819200), (-3.25, -212992), (0.0, 0), (500.0, 500 << 16)],
)
def test_adjust_frequency_sets_scaled_ppm(clock, fake, ppm, scaled):
    clock.adjust_frequency(ppm)
    assert fake.last["modes"] == ADJ_FREQUENCY
    assert fake.last["freq"] == scaled
    assert clock.frequency_ppm == scaled / 65536


@pytest.mark.parametrize(
    ("ppm", "tick", "freq_ppm"),
    [(600.0, 10_006, 0.0), (12_345.0, 10_123, 45.0), (-83_000.0, 9_170, 0.0),
     (1e9, 10_833, 500.0), (-1e9, 9_167, -500.0)],
)
def test_beyond_500_ppm_the_tick_length_carries_the_hundreds(clock, fake, ppm, tick, freq_ppm):
    # Issue 13: a fast slew before the first sync, as chronyd's 83,333 ppm.
    clock.adjust_frequency(ppm)
    assert fake.last["modes"] == ADJ_FREQUENCY | ADJ_TICK  # one call: atomic
    assert (fake.last["tick"], fake.last["freq"]) == (tick, round(freq_ppm * 65536))
    assert clock.frequency_ppm == pytest.approx((tick - 10_000) * 100 + freq_ppm)


def test_back_within_500_ppm_the_tick_returns_to_nominal(clock, fake):
    clock.adjust_frequency(20_000.0)
    clock.adjust_frequency(-12.0)
    assert fake.calls[1]["modes"] == ADJ_FREQUENCY | ADJ_TICK
    assert (fake.calls[1]["tick"], fake.calls[1]["freq"]) == (10_000, -12 * 65536)
    clock.adjust_frequency(-11.0)
    assert fake.calls[2]["modes"] == ADJ_FREQUENCY  # the tick is nominal already


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_never_reach_the_kernel(clock, fake, bad):
    for call in (clock.adjust_frequency, clock.slew, clock.step):
        with pytest.raises(ValueError):
            call(bad)
    with pytest.raises(ValueError):
        clock.set_sync_status(True, bad, 0.0, 0)
    assert fake.calls == []


@pytest.mark.parametrize(("offset", "us"), [(0.25, 250000), (-0.000123, -123), (2000.0, 2e9)])
def test_slew_is_adjtime_singleshot_in_microseconds(clock, fake, offset, us):
    clock.slew(offset)
    assert fake.last["modes"] == ADJ_OFFSET_SINGLESHOT
    assert not fake.last["modes"] & ADJ_NANO  # 0xa001 would only read the slew
    assert fake.last["offset"] == us


def test_slew_too_large_is_refused(clock, fake):
    with pytest.raises(ValueError, match="step instead"):
        clock.slew(-3000.0)
    assert fake.calls == []


@pytest.mark.parametrize(
    ("offset", "sec", "nsec"),
    [(1.5, 1, 500_000_000), (-0.25, -1, 750_000_000), (-2.0, -2, 0),
     (0.000000001, 0, 1), (-1000.000000001, -1001, 999_999_999)],
)
def test_step_is_one_normalised_setoffset(clock, fake, offset, sec, nsec):
    clock.step(offset)
    assert fake.last["modes"] == ADJ_SETOFFSET | ADJ_NANO
    assert (fake.last["tv_sec"], fake.last["tv_usec"]) == (sec, nsec)
    assert 0 <= fake.last["tv_usec"] < 1_000_000_000


@pytest.mark.parametrize(
    ("synced", "leap", "status"),
    [(True, 0, 0), (False, 0, STA_UNSYNC), (True, 1, STA_INS), (True, 2, STA_DEL),
     (True, 3, STA_UNSYNC), (False, 1, STA_UNSYNC | STA_INS)],
)
def test_set_sync_status_writes_the_whole_status_word(clock, fake, synced, leap, status):
    clock.set_sync_status(synced, 0.0123, 0.000456, leap)
    call = fake.last
    assert call["modes"] == ADJ_STATUS | ADJ_MAXERROR | ADJ_ESTERROR
    assert call["status"] == status  # STA_PLL and every other discipline bit cleared
    assert (call["maxerror"], call["esterror"]) == (12300, 456)


def test_error_bounds_are_clamped_to_the_kernel_range(clock, fake):
    clock.set_sync_status(False, 1e6, -1.0, 0)
    assert (fake.last["maxerror"], fake.last["esterror"]) == (16_000_000, 0)


def test_set_tai_offset(clock, fake):
    clock.set_tai_offset(37)
    assert fake.last["modes"] == ADJ_TAI and fake.last["constant"] == 37
    with pytest.raises(ValueError):
        clock.set_tai_offset(-1)


def test_eperm_is_a_typed_error_pointing_at_observe_mode():
    clock = SystemClock(libc=FakeLibc(fail=errno.EPERM))
    with pytest.raises(ClockPermissionError) as info:
        clock.step(0.5)
    exc = info.value
    assert isinstance(exc, PermissionError) and isinstance(exc, ClockError)
    assert exc.errno == errno.EPERM
    assert "CAP_SYS_TIME" in str(exc)
    assert "disable ntp" in str(exc) and "--observe" in str(exc)


def test_other_errors_are_clock_errors():
    clock = SystemClock(libc=FakeLibc(fail=errno.EINVAL))
    with pytest.raises(ClockError) as info:
        clock.adjust_frequency(1.0)
    assert not isinstance(info.value, PermissionError)
    assert info.value.errno == errno.EINVAL
    assert clock.frequency_ppm is None  # not recorded as applied


def test_read_status_decodes_nanosecond_mode():
    fill = {
        "offset": -1500, "freq": -(12 << 16) - 32768, "maxerror": 2500, "esterror": 40,
        "status": STA_NANO | STA_INS, "constant": 4, "precision": 1,
        "tolerance": 500 << 16, "tick": 10000, "tai": 37,
    }
    fake = FakeLibc(fill=fill, state=1)
    status = SystemClock(libc=fake).read_status()
    assert fake.last["modes"] == 0
    assert status.state == "INS"
    assert status.offset_s == pytest.approx(-1.5e-6)
    assert status.frequency_ppm == -12.5
    assert (status.maxerror_s, status.esterror_s) == (pytest.approx(0.0025), pytest.approx(4e-5))
    assert status.flags == {"NANO", "INS"}
    assert status.synchronised and status.leap == 1
    assert (status.tick_us, status.tai, status.tolerance_ppm) == (10000, 37, 500.0)


def test_read_status_microsecond_mode_and_unsync():
    fake = FakeLibc(fill={"offset": -1500, "status": STA_UNSYNC | STA_DEL}, state=5)
    status = SystemClock(libc=fake).read_status()
    assert status.offset_s == pytest.approx(-1.5e-3)
    assert status.state == "ERROR" and not status.synchronised and status.leap == 2


def test_default_libc_resolves_through_the_global_namespace(monkeypatch):
    seen = []
    monkeypatch.setattr(system.ctypes, "CDLL", lambda name, **kw: seen.append((name, kw)))
    REAL_DEFAULT_LIBC()
    assert seen == [(None, {"use_errno": True})]
