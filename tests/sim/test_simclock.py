"""SimClock: the Clock interface against simulated true time."""

import random

import pytest

from pyntpd.clock.base import Clock
from pyntpd.clock.simclock import DEFAULT_EPOCH_NS, SimClock


def test_is_a_clock():
    assert isinstance(SimClock(), Clock)


def test_frequency_error_and_correction():
    c = SimClock(offset=0.0, frequency_ppm=100.0)
    c.advance_to(1000.0)
    assert c.phase == pytest.approx(0.1, rel=1e-9)
    c.adjust_frequency(-100.0)  # (1 + 100e-6)(1 - 100e-6) - 1 = -1e-8
    c.advance_to(2000.0)
    assert c.phase == pytest.approx(0.1 - 1e-8 * 1000, rel=1e-9)


def test_frequency_correction_is_clamped_like_the_kernel():
    c = SimClock(max_frequency_ppm=500.0)  # a clock without the tick adjustment
    c.adjust_frequency(1e4)
    assert c.correction_ppm == 500.0 and c.tick_us == 10_000


def test_beyond_500_ppm_the_tick_carries_the_hundreds_as_adjtimex_tick():
    c = SimClock()
    c.adjust_frequency(12_345.0)
    assert (c.tick_us, c.correction_ppm) == (10_123, pytest.approx(45.0))
    assert c.read_back().frequency_ppm == pytest.approx(12_345.0)
    c.advance_to(2.0)
    assert c.phase == pytest.approx(2.0 * 12_345e-6, rel=1e-9)


def test_the_tick_adjustment_stops_at_a_twelfth_of_the_tick():
    c = SimClock()
    c.adjust_frequency(-1e6)
    assert c.tick_us == 10_000 - 833
    assert c.frequency_ppm == pytest.approx(-83_800.0)


def test_a_frequency_change_takes_effect_at_once_as_since_linux_4_19():
    c = SimClock()
    c.advance_to(0.0025)
    c.adjust_frequency(1000.0)
    c.advance_to(1.0025)
    assert c.phase == pytest.approx(1000e-6, rel=1e-9)


def test_on_an_old_kernel_a_frequency_change_waits_for_the_next_tick():
    c = SimClock(hz=100)
    c.advance_to(0.0025)  # a quarter of a 10 ms tick
    c.adjust_frequency(1000.0)
    c.advance_to(0.01)
    assert c.phase == 0.0  # nothing until the tick at 10 ms
    c.advance_to(1.01)
    assert c.phase == pytest.approx(1000e-6, rel=1e-9)


def test_running_faster_than_500_ppm_is_recorded_as_a_fast_period():
    c = SimClock()
    c.adjust_frequency(50_000.0)
    c.advance_to(2.0)
    c.adjust_frequency(10.0)
    c.advance_to(3.0)
    assert c.fast_periods == [[0.0, 2.0]]


def test_a_daily_thermal_cycle_moves_the_oscillator_by_its_amplitude():
    c = SimClock(thermal_ppm=0.2)
    c.advance_to(86_400 / 4)
    assert c.oscillator == pytest.approx(0.2e-6, rel=1e-6)
    c.advance_to(3 * 86_400 / 4)
    assert c.oscillator == pytest.approx(-0.2e-6, rel=1e-6)


def test_step_and_now_in_nanoseconds():
    c = SimClock(offset=0.25)
    c.step(-0.25)
    c.advance_to(10.0)
    assert c.now() == DEFAULT_EPOCH_NS + 10_000_000_000
    assert c.steps == [-0.25]


def test_slew_runs_at_500_ppm_and_stops():
    c = SimClock()
    c.slew(0.001)
    c.advance_to(1.0)
    assert c.phase == pytest.approx(0.0005)
    c.advance_to(10.0)
    assert c.phase == pytest.approx(0.001)
    c.slew(-0.0002)  # replaces, adjtime-style
    c.advance_to(20.0)
    assert c.phase == pytest.approx(0.0008)


def test_wander_is_a_seeded_random_walk():
    a = SimClock(wander=1e-9, rng=random.Random(4))
    b = SimClock(wander=1e-9, rng=random.Random(4))
    seen = []
    a.on_second = lambda s, p: seen.append(s)
    a.advance_to(3600.0)
    b.advance_to(3600.0)
    assert a.natural == b.natural != 0.0
    assert seen == list(range(1, 3601))
    assert abs(a.natural) < 10 * 1e-9 * 60  # about sigma * sqrt(3600)


def test_true_at_local_inverts_now():
    c = SimClock(offset=0.5, frequency_ppm=50.0)
    c.advance_to(100.0)
    target = c.now() / 1e9 + 10.0
    t = c.true_at_local(target)
    c.advance_to(t)
    assert c.now() / 1e9 == pytest.approx(target, abs=1e-6)


def test_sync_status_is_recorded():
    c = SimClock()
    c.set_sync_status(True, 0.01, 1e-5, 0)
    assert (c.synchronised, c.maxerror, c.esterror, c.leap) == (True, 0.01, 1e-5, 0)


# --- the kernel model: what a previous daemon leaves behind keeps acting -------------------


def test_a_pll_offset_left_behind_keeps_moving_the_clock_with_sta_pll_off():
    c = SimClock(pll_offset=0.0123, flags={"UNSYNC"})  # the daemon that set it is gone
    c.advance_to(300.0)
    assert c.phase == pytest.approx(0.0123, rel=1e-6)
    assert c.pll_offset == pytest.approx(0.0, abs=1e-9)


def test_take_over_stops_a_pll_offset_within_the_second():
    c = SimClock(pll_offset=0.0123, flags={"PLL"})
    c.advance_to(2.0)
    moved = c.phase
    took = c.take_over()
    assert took.pll_offset_s == pytest.approx(0.0123 * (15 / 16) ** 2)
    assert took.flags == {"PLL"} and c.flags == {"UNSYNC"}
    c.advance_to(3.0)  # the second's share already in the tick, as in the kernel
    after_tick = c.phase
    c.advance_to(600.0)
    assert c.phase == after_tick
    assert after_tick - moved == pytest.approx(0.0123 * (15 / 16) / 16)


def test_an_adjtime_remainder_keeps_going_until_cancelled():
    c = SimClock(adjtime_left=0.002)
    c.advance_to(2.0)
    assert c.phase == pytest.approx(0.001)
    took = c.take_over()
    assert took.slew_s == pytest.approx(0.001)
    c.advance_to(10.0)
    assert c.phase == pytest.approx(0.001)


def test_pll_offset_is_only_taken_with_sta_pll_on():
    c = SimClock()
    c.pll_adjust(0.5)
    assert c.pll_offset == 0.0
    c.write_status({"PLL"})
    c.pll_adjust(0.5)
    assert c.pll_offset == 0.5


def test_read_back_reports_the_kernel_state():
    c = SimClock(kernel_frequency_ppm=-20.0, adjtime_left=0.004, pll_offset=0.001,
                 flags={"PLL", "INS"})
    state = c.read_back()
    assert state.frequency_ppm == -20.0
    assert state.slew_s == 0.004
    assert state.pll_offset_s == 0.001
    assert state.flags == {"PLL", "INS"} and state.leap == 1 and state.synchronised
    assert state.time_ns == c.now()


def test_only_steps_move_the_boot_epoch():
    c = SimClock(frequency_ppm=100.0, adjtime_left=0.01)
    epoch = c.read_back().boot_epoch_ns
    c.adjust_frequency(300.0)
    c.advance_to(100.0)
    assert c.read_back().boot_epoch_ns == epoch
    c.step(-1.5)
    assert c.read_back().boot_epoch_ns == epoch - 1_500_000_000


def test_sync_status_writes_the_status_bits():
    c = SimClock(flags={"PLL", "UNSYNC"})
    c.set_sync_status(True, 0.01, 1e-5, 2)
    assert c.flags == {"DEL"}
    c.set_sync_status(False, 16.0, 16.0, 3)
    assert c.flags == {"UNSYNC"}


def test_adjustments_return_the_clock_time_after_them():
    c = SimClock(offset=0.5)
    c.advance_to(10.0)
    assert c.adjust_frequency(1.0) == c.now()
    before = c.now()
    assert c.step(0.25) == before + 250_000_000


def test_hand_back_leaves_the_bare_frequency():
    c = SimClock(kernel_frequency_ppm=480.0)
    c.hand_back(12.0)
    assert c.correction_ppm == 12.0


# --- the kernel's leap second handling (Linux kernel/time/ntp.c) --------------------------

JAN_2017_NS = 1_483_228_800 * 1_000_000_000
NOON = 12 * 3600.0  # true time of a clock started at noon before the midnight


def _noon_before(midnight_ns=JAN_2017_NS):
    return SimClock(epoch_ns=midnight_ns - int(NOON * 1e9))


def test_sta_ins_repeats_the_last_second_of_the_current_day():
    c = _noon_before()
    c.set_tai_offset(36)
    c.set_sync_status(True, 0.01, 1e-5, 1)
    c.advance_to(NOON - 0.5)
    assert c.now() == JAN_2017_NS - 500_000_000  # 23:59:59.5
    c.advance_to(NOON + 0.5)
    assert c.now() == JAN_2017_NS - 500_000_000  # 23:59:60.5, shown as 23:59:59.5 again
    c.advance_to(NOON + 1.5)
    assert c.now() == JAN_2017_NS + 500_000_000
    assert c.leap_events[-1] == (NOON, "inserted")
    assert (c.tai, c.leap_state) == (37, "WAIT")


def test_sta_del_skips_23_59_59():
    c = _noon_before()
    c.set_tai_offset(37)
    c.set_sync_status(True, 0.01, 1e-5, 2)
    c.advance_to(NOON - 1.5)
    assert c.now() == JAN_2017_NS - 1_500_000_000  # 23:59:58.5
    c.advance_to(NOON - 0.5)
    assert c.now() == JAN_2017_NS + 500_000_000  # 00:00:00.5: 23:59:59 never was
    assert c.leap_events[-1] == (NOON - 1.0, "deleted")
    assert (c.tai, c.leap_state) == (36, "WAIT")


def test_the_leap_happens_when_the_local_clock_reaches_midnight():
    c = SimClock(offset=0.25, epoch_ns=JAN_2017_NS - int(NOON * 1e9))  # a quarter second fast
    c.set_sync_status(True, 0.01, 1e-5, 1)
    c.advance_to(NOON + 1.0)
    assert c.leap_events[-1] == (pytest.approx(NOON - 0.25), "inserted")


def test_armed_on_any_day_the_kernel_acts_that_night():
    # Why the engine must not arm early: on 5 December the second is inserted that night.
    dec_6_ns = JAN_2017_NS - 26 * 86400 * 1_000_000_000
    c = _noon_before(dec_6_ns)
    c.set_sync_status(True, 0.01, 1e-5, 1)
    c.advance_to(NOON + 1.0)
    assert [e for _, e in c.leap_events] == ["armed INS", "inserted"]


def test_the_kernel_acts_once_until_the_flag_is_cleared():
    c = _noon_before()
    c.set_sync_status(True, 0.01, 1e-5, 1)
    c.advance_to(NOON + 1.0)
    c.set_sync_status(True, 0.01, 1e-5, 1)  # still set: TIME_WAIT, no second insertion
    c.advance_to(NOON + 86400.0 + 2.0)
    assert [e for _, e in c.leap_events] == ["armed INS", "inserted"]
    c.set_sync_status(True, 0.01, 1e-5, 0)
    assert c.leap_state == "OK"


def test_clearing_the_flag_before_midnight_disarms():
    c = _noon_before()
    c.set_sync_status(True, 0.01, 1e-5, 1)
    c.advance_to(NOON - 10.0)
    c.set_sync_status(True, 0.01, 1e-5, 0)
    c.advance_to(NOON + 10.0)
    assert [e for _, e in c.leap_events] == ["armed INS", "disarmed"]
    assert c.now() == JAN_2017_NS + 10_000_000_000


def test_a_slewing_clock_still_leaps_exactly_at_its_midnight():
    c = _noon_before()
    c.set_sync_status(True, 0.01, 1e-5, 1)
    c.advance_to(NOON - 2.0)
    c.slew(0.002)  # 4 s at 500 ppm: still slewing at midnight
    c.advance_to(NOON + 3.0)
    t, what = c.leap_events[-1]
    assert what == "inserted"
    # The local clock reads midnight when (t - (NOON - 2)) * 500e-6 = NOON - t.
    assert t == pytest.approx(NOON - 0.001 / 1.0005, abs=1e-9)
