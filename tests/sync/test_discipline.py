"""Step, slew, stepout, panic, -x, -g, -G and the frequency clamp, with explicit offsets."""

import pytest

from pyntpd.sync.discipline import (
    MAX_FREQUENCY_PPM,
    CorrectionModel,
    Decision,
    Discipline,
    DisciplineConfig,
)


def disc(**kw):
    return Discipline(DisciplineConfig(**kw))


def test_small_offset_is_slewed_through_the_frequency():
    d = disc()
    plan = d.decide(0.0, 0.0005, 10.0)
    assert plan.decision is Decision.SLEW
    assert plan.ppm == pytest.approx(10.0 + 0.0005 / 2.0 * 1e6)
    assert plan.until == pytest.approx(2.0)


def test_large_slew_is_limited_to_the_kernel_rate():
    plan = disc().decide(0.0, 0.1, 100.0)
    assert plan.ppm == pytest.approx(MAX_FREQUENCY_PPM)
    assert plan.until == pytest.approx(0.1 / 400e-6)


def test_first_adjustment_steps_at_once():
    plan = disc().decide(0.0, 30.0, 0.0)
    assert (plan.decision, plan.step) == (Decision.STEP, 30.0)


def test_later_step_waits_for_stepout():
    d = disc()
    d.decide(0.0, 0.001, 0.0)
    assert d.decide(100.0, 0.5, 0.0).decision is Decision.HOLD
    assert d.decide(300.0, 0.5, 0.0).decision is Decision.HOLD
    assert d.decide(401.0, 0.5, 0.0).decision is Decision.STEP


def test_spike_that_goes_away_resets_stepout():
    d = disc()
    d.decide(0.0, 0.001, 0.0)
    d.decide(100.0, 0.5, 0.0)
    assert d.decide(200.0, 0.001, 0.0).decision is Decision.SLEW
    assert d.decide(450.0, 0.5, 0.0).decision is Decision.HOLD  # the clock starts again


def test_panic_without_g():
    assert disc().decide(0.0, 2000.0, 0.0).decision is Decision.PANIC


def test_g_allows_only_the_first_adjustment():
    d = disc(panic_gate=True)
    assert d.decide(0.0, -2000.0, 0.0).decision is Decision.STEP
    assert d.decide(1000.0, 2000.0, 0.0).decision is Decision.PANIC


def test_capital_g_steps_the_first_adjustment_however_small():
    d = disc(force_step_once=True)
    plan = d.decide(0.0, 0.0004, 0.0)  # far below the 128 ms step threshold
    assert (plan.decision, plan.step) == (Decision.STEP, 0.0004)


def test_capital_g_steps_only_once():
    d = disc(force_step_once=True)
    d.decide(0.0, 0.0004, 0.0)
    assert d.decide(16.0, 0.0004, 0.0).decision is Decision.SLEW


def test_capital_g_steps_even_with_slew_only_or_step_zero():
    # ntpd: force_step_once takes the step branch whatever the step threshold says.
    assert disc(force_step_once=True, slew_only=True).decide(0.0, 30.0, 0.0).decision \
        is Decision.STEP
    assert disc(force_step_once=True, step=0.0).decide(0.0, 5.0, 0.0).decision \
        is Decision.STEP


def test_capital_g_is_not_minus_g_the_panic_threshold_still_holds():
    assert disc(force_step_once=True).decide(0.0, 2000.0, 0.0).decision is Decision.PANIC
    both = disc(force_step_once=True, panic_gate=True)
    assert both.decide(0.0, 2000.0, 0.0).decision is Decision.STEP


def test_without_capital_g_a_small_first_offset_is_slewed():
    assert disc().decide(0.0, 0.0004, 0.0).decision is Decision.SLEW


def test_panic_zero_disables_the_check():
    assert disc(panic=0.0).decide(0.0, 5000.0, 0.0).decision is Decision.STEP


def test_slew_only_x_uses_600_s_threshold():
    d = disc(slew_only=True)
    assert d.decide(0.0, 30.0, 0.0).decision is Decision.SLEW
    assert disc(slew_only=True).decide(0.0, 700.0, 0.0).decision is Decision.STEP


def test_step_zero_never_steps():
    assert disc(step=0.0).decide(0.0, 5.0, 0.0).decision is Decision.SLEW


def test_stepfwd_and_stepback_apart():
    d = disc(stepback=0.0, stepfwd=0.128)
    assert d.decide(0.0, -5.0, 0.0).decision is Decision.SLEW  # never backwards
    assert disc(stepback=0.0, stepfwd=0.128).decide(0.0, 5.0, 0.0).decision is Decision.STEP


def test_frequency_is_clamped_to_500_ppm():
    plan = disc().decide(0.0, 0.0, 900.0)
    assert plan.ppm == MAX_FREQUENCY_PPM
    assert disc().decide(0.0, 0.0, -900.0).ppm == -MAX_FREQUENCY_PPM


def test_correction_model_tracks_frequency_and_steps():
    m = CorrectionModel(1000.0, ppm=0.0)
    m.set_frequency(1000.0, 100.0)
    assert m.correction(1010.0) == pytest.approx(10 * 100e-6 / (1 + 100e-6))
    m.step(1010.0, 2.0)
    assert m.correction(1012.0 + 5) == pytest.approx(2.0 + 15 * 100e-6 / (1 + 100e-6))
    assert m.to_raw(1017.0) == pytest.approx(1017.0 - m.correction(1017.0))
    assert m.last_step_at() == 1012.0


# --- issue 13: a steady rate -----------------------------------------------------------------


def test_a_slew_is_spread_over_the_time_the_engine_gives():
    # Half a 64 s poll, not 2 s: the rate moves by 20 us / 32 s, not by 10 ppm.
    plan = disc().decide(0.0, 20e-6, 10.0, spread=32.0)
    assert plan.ppm == pytest.approx(10.0 + 20e-6 / 32.0 * 1e6)
    assert plan.until == pytest.approx(32.0)


def test_after_the_first_sync_a_slew_runs_at_most_rate_ppm_off_the_estimate():
    plan = disc().decide(0.0, 1e-3, -40.0, spread=8.0, rate_ppm=5.0)
    assert plan.ppm == pytest.approx(-35.0)
    assert plan.until == pytest.approx(200.0)  # longer instead


def test_before_the_first_sync_a_large_offset_is_slewed_at_the_clocks_fast_rate():
    plan = disc().decide(0.0, -0.1, -100.0, spread=32.0, fast_ppm=83_833.0)
    assert plan.fast and plan.decision is Decision.SLEW
    assert plan.ppm == pytest.approx(-83_833.0)
    assert plan.until == pytest.approx(0.1 / 83_733e-6)  # 1.2 s, not 200 s


def test_a_fast_slew_is_a_slew_never_a_step_under_x():
    plan = disc(slew_only=True).decide(0.0, 0.1, 0.0, fast_ppm=83_833.0)
    assert (plan.decision, plan.fast, plan.step) == (Decision.SLEW, True, 0.0)


def test_an_offset_within_a_millisecond_is_never_slewed_fast():
    plan = disc().decide(0.0, 0.0009, 0.0, spread=32.0, fast_ppm=83_833.0)
    assert not plan.fast and plan.ppm == pytest.approx(0.0009 / 32.0 * 1e6)
