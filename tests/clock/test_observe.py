"""ObserveClock: reads the real clock, records what it is asked to do, applies nothing."""

from __future__ import annotations

import time

from pyntpd.clock.base import Clock
from pyntpd.clock.observe import ObserveClock, SyncStatus


def test_is_a_clock_that_cannot_adjust():
    clock = ObserveClock()
    assert isinstance(clock, Clock)
    assert clock.can_adjust is False


def test_now_is_the_real_clock():
    before = time.time_ns()
    now = ObserveClock().now()
    assert isinstance(now, int) and before <= now <= time.time_ns()


def test_requests_are_recorded_not_applied():
    clock = ObserveClock()
    assert (clock.frequency_ppm, clock.last_step_s, clock.last_slew_s) == (None, None, None)
    clock.adjust_frequency(-12)
    clock.step(0.5)
    clock.step(-0.25)
    clock.slew(0.001)
    clock.set_sync_status(True, 0.01, 0.001, 1)
    clock.set_tai_offset(37)
    assert clock.frequency_ppm == -12.0 and isinstance(clock.frequency_ppm, float)
    assert (clock.last_step_s, clock.steps) == (-0.25, 2)
    assert (clock.last_slew_s, clock.slews) == (0.001, 1)
    assert clock.sync_status == SyncStatus(True, 0.01, 0.001, 1)
    assert clock.tai_offset == 37


def test_observe_module_makes_no_clock_calls():
    # Nothing in it can reach adjtimex: it neither loads a C library nor imports SystemClock.
    import pyntpd.clock.observe as observe

    assert "ctypes" not in vars(observe) and "SystemClock" not in vars(observe)
