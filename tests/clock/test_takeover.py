"""Taking the kernel clock over from whoever had it, reading it back, handing it back:
SystemClock against FakeKernel (tests/clock/conftest.py), which does what Linux's adjtimex
does; read-only calls also against this machine's kernel, behind the read-only guard."""

from __future__ import annotations

import errno
import sys

import pytest

from pyntpd.clock.base import ClockError
from pyntpd.clock.kernel import (
    ADJ_FREQUENCY,
    ADJ_OFFSET_SINGLESHOT,
    ADJ_OFFSET_SS_READ,
    ADJ_SETOFFSET,
    STA_DEL,
    STA_INS,
    STA_NANO,
    STA_PLL,
    STA_UNSYNC,
    STATUS_BITS,
    SystemClock,
)
from tests.clock.conftest import ADJ_ADJTIME, FakeKernel

STA_FLL = STATUS_BITS["FLL"]


def system_clock(kernel: FakeKernel) -> SystemClock:
    return SystemClock(libc=kernel, boottime=kernel.boottime)


def writes(kernel: FakeKernel) -> list[int]:
    return [m for m in kernel.modes if m not in (0, ADJ_OFFSET_SS_READ)]


# --- take over ------------------------------------------------------------------------------


def test_a_pll_offset_left_by_ntpd_is_zeroed():
    # ntpd in nanosecond PLL mode, killed with 12.3 ms still to be worked off.
    kernel = FakeKernel(status=STA_PLL | STA_NANO, pll_offset_ns=12_300_000, freq_ppm=-7.25)
    took = system_clock(kernel).take_over()
    assert kernel.pll_offset_ns == 0
    assert kernel.status & STA_PLL == 0
    assert took.pll_offset_s == pytest.approx(0.0123)
    assert took.flags == {"PLL"}
    assert "kernel PLL offset +12.300 ms left by another daemon: cleared" in took.findings()


def test_a_pll_offset_is_zeroed_even_with_sta_pll_already_off():
    # The kernel works the offset off whatever the status, but takes ADJ_OFFSET only with
    # STA_PLL on: a bare ADJ_OFFSET 0 would leave it running.
    kernel = FakeKernel(status=STA_UNSYNC, pll_offset_ns=-4_000_000)
    took = system_clock(kernel).take_over()
    assert kernel.pll_offset_ns == 0
    assert took.pll_offset_s == pytest.approx(-0.004)
    assert kernel.flags() == {"UNSYNC"}


def test_an_adjtime_remainder_is_cancelled_and_reported():
    kernel = FakeKernel(adjtime_us=-3_200)
    took = system_clock(kernel).take_over()
    assert kernel.adjtime_us == 0
    assert took.slew_s == pytest.approx(-0.0032)
    assert "adjtime() slew of -3.200 ms still outstanding: cancelled" in took.findings()


def test_kernel_pll_and_fll_modes_are_turned_off():
    kernel = FakeKernel(status=STA_PLL | STA_FLL | STA_INS)
    took = system_clock(kernel).take_over()
    assert kernel.flags() == {"UNSYNC"}
    assert took.flags == {"PLL", "FLL"}
    assert took.found.leap == 1
    assert "kernel discipline left on (STA_FLL, STA_PLL): turned off" in took.findings()


def test_the_frequency_is_left_as_found_and_reported():
    kernel = FakeKernel(status=STA_PLL | STA_NANO, pll_offset_ns=1_000_000, freq_ppm=31.5)
    took = system_clock(kernel).take_over()
    assert kernel.freq_ppm == 31.5
    assert took.frequency_ppm == 31.5
    assert ADJ_FREQUENCY not in writes(kernel)


def test_a_clean_kernel_only_gets_its_adjtime_cancelled():
    kernel = FakeKernel(freq_ppm=3.0)
    took = system_clock(kernel).take_over()
    assert writes(kernel) == [ADJ_OFFSET_SINGLESHOT]
    assert took.findings() == []
    assert took.at_ns == kernel.time_ns


def test_a_failed_take_over_is_a_clock_error():
    kernel = FakeKernel(adjtime_us=100)
    kernel.fail[ADJ_ADJTIME] = errno.EPERM
    with pytest.raises(ClockError):
        system_clock(kernel).take_over()
    assert kernel.adjtime_us == 100


# --- read back ----------------------------------------------------------------------------


def test_read_back_reports_what_is_in_force():
    kernel = FakeKernel(status=STA_PLL | STA_NANO | STA_DEL, pll_offset_ns=-2_500,
                        freq_ppm=-12.5, adjtime_us=750)
    state = system_clock(kernel).read_back()
    assert state.frequency_ppm == -12.5
    assert state.pll_offset_s == pytest.approx(-2.5e-6)
    assert state.slew_s == pytest.approx(0.00075)
    assert state.flags == {"PLL", "NANO", "DEL"}
    assert state.discipline_flags == {"PLL"} and state.leap == 2
    assert state.time_ns == kernel.time_ns
    assert state.boot_epoch_ns == kernel.time_ns - kernel.boot_ns
    assert kernel.modes == [0, ADJ_OFFSET_SS_READ]  # reads only


def test_a_step_moves_the_boot_epoch_and_nothing_else_does():
    kernel = FakeKernel()
    clock = system_clock(kernel)
    before = clock.read_back().boot_epoch_ns
    kernel.advance(100.0)  # time passes: both clocks move
    clock.adjust_frequency(250.0)
    assert clock.read_back().boot_epoch_ns == before
    clock.step(-0.25)
    assert clock.read_back().boot_epoch_ns == before - 250_000_000


@pytest.mark.skipif(sys.platform != "linux", reason="adjtimex is Linux's")
def test_read_back_of_this_machine_is_read_only_and_sane():
    state = SystemClock().read_back()  # the real kernel, behind the read-only guard
    assert -500.0 <= state.frequency_ppm <= 500.0
    assert abs(state.slew_s) < 2145.0
    assert state.boot_epoch_error_ns < 1_000_000


# --- every adjustment says when it took effect ---------------------------------------------


def test_each_adjustment_returns_the_kernels_time_after_it():
    kernel = FakeKernel(status=STA_UNSYNC | STA_NANO)
    clock = system_clock(kernel)
    start = kernel.time_ns
    assert clock.adjust_frequency(1.0) == start
    assert clock.step(2.5) == start + 2_500_000_000  # read after the step
    assert clock.slew(0.001) == start + 2_500_000_000
    kernel.advance(1.0)
    assert clock.set_sync_status(True, 0.01, 0.001, 0) == start + 3_500_000_000


def test_the_returned_time_in_microsecond_mode():
    kernel = FakeKernel(time_ns=1_800_000_000_123_456_789, status=STA_UNSYNC)
    assert system_clock(kernel).adjust_frequency(0.0) == 1_800_000_000_123_456_000


# --- hand back ----------------------------------------------------------------------------


def test_hand_back_sets_the_estimate_and_nothing_else():
    kernel = FakeKernel(freq_ppm=480.0, adjtime_us=500)  # mid-slew; a -q slew going on
    clock = system_clock(kernel)
    clock.hand_back(-11.75)
    assert kernel.freq_ppm == -11.75
    assert kernel.adjtime_us == 500  # -q's adjtime() slew finishes, as after ntpd -q
    assert writes(kernel) == [ADJ_FREQUENCY]


def test_the_read_only_guard_lets_adjtime_reads_through_but_not_writes(real_libc):
    import ctypes

    from pyntpd.clock.kernel import CLOCK_REALTIME, Timex

    behind = FakeKernel(adjtime_us=7)
    guarded = type(real_libc)(behind)
    read = Timex(modes=ADJ_OFFSET_SS_READ)
    assert guarded.clock_adjtime(CLOCK_REALTIME, ctypes.byref(read)) >= 0 and read.offset == 7
    with pytest.raises(pytest.fail.Exception):
        guarded.clock_adjtime(CLOCK_REALTIME, ctypes.byref(Timex(modes=ADJ_OFFSET_SINGLESHOT)))
    with pytest.raises(pytest.fail.Exception):
        guarded.clock_adjtime(CLOCK_REALTIME, ctypes.byref(Timex(modes=ADJ_SETOFFSET)))
    assert behind.adjtime_us == 7


def test_a_tick_length_left_by_another_daemon_reads_back_in_the_frequency(kernel):
    # chronyd stopped in a fast slew leaves the tick off nominal: 10,050 us is +5000 ppm.
    kernel.tick = 10_050
    kernel.freq_ppm = 12.0
    clock = SystemClock(libc=kernel, boottime=kernel.boottime)
    assert clock.read_back().frequency_ppm == pytest.approx(5012.0)
    clock.adjust_frequency(12.0)  # ours: back to nominal in the same call
    assert (kernel.tick, kernel.freq_ppm) == (10_000, 12.0)
