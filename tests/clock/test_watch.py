"""ClockWatch: our actions applied and remembered; anyone else's changes noticed (counted,
logged once per kind) and undone where they can be. Against SimClock (the kernel model),
and once end to end against SystemClock on the fake kernel."""

from __future__ import annotations

import errno
import logging

import pytest

from pyntpd.clock.base import ClockError
from pyntpd.clock.kernel import ADJ_FREQUENCY, STA_NANO, STA_PLL, SystemClock
from pyntpd.clock.simclock import SimClock
from pyntpd.clock.watch import ClockWatch
from pyntpd.types import SetFrequency, SetStatus, Slew, Step
from tests.clock.conftest import FakeKernel


class FailingSimClock(SimClock):
    """A SimClock whose steps fail, as clock_adjtime does with EINVAL or EPERM."""

    def step(self, offset_s: float) -> int:
        raise ClockError(errno.EINVAL, "stepping the clock: clock_adjtime failed")


@pytest.fixture
def clock() -> SimClock:
    return SimClock(kernel_frequency_ppm=5.0)


@pytest.fixture
def watch(clock: SimClock) -> ClockWatch:
    w = ClockWatch(clock)
    w.apply((SetFrequency(-3.25), SetStatus(True, 0.01, 0.001, 0)))
    return w


def meddling_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "another process" in r.getMessage()]


def test_our_own_changes_are_not_meddling(clock, watch):
    watch.apply((Step(0.3), SetFrequency(12.0), SetStatus(True, 0.02, 0.002, 1)))
    clock.advance_to(100.0)
    assert watch.check() is None
    assert watch.counts == {}


def test_our_fast_slew_beyond_500_ppm_through_the_tick_is_not_meddling(clock, watch):
    # Issue 13: before the first sync the clock runs up to 83,833 ppm (ADJ_TICK).
    watch.apply((SetFrequency(-83_000.0),))
    clock.advance_to(1.0)
    assert watch.check() is None
    assert clock.frequency_ppm == pytest.approx(-83_000.0)


def test_a_meddler_changing_the_frequency_is_noticed_logged_once_and_undone(
        clock, watch, caplog):
    caplog.set_level(logging.WARNING, logger="pyntpd")
    clock.adjust_frequency(40.0)  # someone's `adjtimex -f`
    meddling = watch.check()
    assert meddling is not None and meddling.kinds == ("frequency",)
    assert meddling.frequency == (-3.25, 40.0)
    watch.retake(meddling)
    assert clock.correction_ppm == -3.25
    assert watch.check() is None
    clock.adjust_frequency(41.0)  # and again
    watch.retake(watch.check())
    assert watch.counts == {"frequency": 2}
    assert meddling_lines(caplog) == [
        "another process changed the clock: frequency changed to +40.000 ppm (ours -3.250 ppm);"
        " taking control back (further changes of this kind are counted, not logged)"]


def test_a_foreign_step_is_reported_with_its_size_once(clock, watch):
    clock.advance_to(10.0)
    clock.step(-2.5)  # `date -s`
    meddling = watch.check()
    assert meddling is not None and meddling.kinds == ("step",)
    assert meddling.step_s == pytest.approx(-2.5)
    assert meddling.at_ns == clock.now()
    assert watch.check() is None  # the clock's time is what it is now
    assert watch.counts == {"step": 1}


def test_the_kernels_own_leap_second_is_not_a_step(clock, watch):
    watch.apply((SetStatus(True, 0.01, 0.001, 1),))  # we armed STA_INS
    clock.step(-1.0)  # what the kernel does at 23:59:60
    assert watch.check() is None
    clock.step(-1.0)  # a second one is somebody's: Linux makes one per arming
    assert watch.check().step_s == pytest.approx(-1.0)
    watch.apply((SetStatus(True, 0.01, 0.001, 0), SetStatus(True, 0.01, 0.001, 2)))
    clock.step(1.0)  # the next leap we arm (a deletion) is the kernel's again
    assert watch.check() is None


def test_a_foreign_pll_mode_is_turned_off_and_our_status_restored(clock, watch):
    clock.write_status({"PLL", "NANO"})  # an ntpd started by mistake
    clock.pll_adjust(0.02)
    meddling = watch.check()
    assert set(meddling.kinds) == {"status", "pll"}
    watch.retake(meddling)
    assert clock.pll_offset == 0.0
    assert clock.flags == set()  # synchronised, no leap, no PLL: ours
    assert watch.check() is None


def test_a_foreign_adjtime_is_cancelled(clock, watch):
    clock.slew(0.05)  # openntpd, `ntpdate -B`
    meddling = watch.check()
    assert meddling.kinds == ("slew",) and meddling.slew_s == 0.05
    watch.retake(meddling)
    assert clock.slew_left == 0.0
    assert clock.correction_ppm == -3.25 and clock.flags == set()


def test_our_own_adjtime_slew_is_not_meddling(clock, watch):
    watch.apply((Slew(0.004),))  # -q
    clock.advance_to(2.0)
    assert watch.check() is None
    clock.advance_to(20.0)  # done: a new remainder would be somebody's
    assert watch.check() is None
    clock.slew(0.001)
    assert watch.check().kinds == ("slew",)


def test_the_kernel_setting_unsync_at_16_s_maxerror_is_not_meddling(clock, watch):
    clock.flags = clock.flags | {"UNSYNC"}
    clock.maxerror = 16.0
    assert watch.check() is None


def test_a_failed_action_leaves_the_expectation_and_stops_the_rest():
    clock = FailingSimClock()
    watch = ClockWatch(clock)
    applied = watch.apply((SetFrequency(7.0), Step(0.5), SetFrequency(9.0),
                           SetStatus(True, 0.1, 0.1, 0)))
    assert not applied.ok
    assert applied.actions == (SetFrequency(7.0),)
    assert applied.failed == Step(0.5) and applied.error.errno == errno.EINVAL
    assert watch.expected.frequency_ppm == 7.0
    assert clock.correction_ppm == 7.0 and clock.flags == {"UNSYNC"}  # nothing after it
    assert watch.check() is None  # the clock is where the watch thinks it is


def test_an_observed_clock_is_never_checked():
    from pyntpd.clock.observe import ObserveClock

    watch = ClockWatch(ObserveClock())
    assert watch.apply((SetFrequency(3.0),)).done == ()
    assert watch.check() is None


def test_a_meddler_on_the_real_kernel_interface_is_noticed_and_undone():
    kernel = FakeKernel(status=STA_PLL | STA_NANO, pll_offset_ns=5_000_000, freq_ppm=8.0)
    clock = SystemClock(libc=kernel, boottime=kernel.boottime)
    clock.take_over()
    watch = ClockWatch(clock)
    watch.apply((SetFrequency(-1.5), SetStatus(True, 0.01, 0.001, 0)))
    kernel.freq_ppm = 100.0  # another process
    kernel.advance(30.0)
    kernel.time_ns += 3_000_000_000  # and a step of +3 s
    meddling = watch.check()
    assert meddling.kinds == ("frequency", "step")
    assert meddling.step_s == pytest.approx(3.0)
    kernel.modes.clear()
    watch.retake(meddling)
    assert kernel.freq_ppm == -1.5
    assert kernel.modes == [ADJ_FREQUENCY]
    assert watch.check() is None
