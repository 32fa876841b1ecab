"""The engine and the clock it really has: where the clock starts (the kernel's frequency),
what is left when an adjustment fails (nothing of it), a step someone else made (accounted
for as one of its own), and the frequency to leave behind (the estimate, no slew in it)."""

from __future__ import annotations

import pytest

from pyntpd.sync.engine import SyncConfig
from pyntpd.sync.filter import Verdict
from pyntpd.types import Sample, SetFrequency, SetStatus, Slew, Step
from tests.sync.test_sync import DELAY, T0, World


def drift(ppm: float):
    return lambda t: ppm * 1e-6 * (t - T0)


def until(w: World, wanted, offsets: dict, limit: int = 40):
    """Samples every 16 s until an update asks for an action that is a `wanted` (a type,
    or a predicate); that update's result, not yet carried out by anyone. `w.ppm_before`:
    the model's frequency before that update."""
    def match(action) -> bool:
        return isinstance(action, wanted) if isinstance(wanted, type) else wanted(action)

    for _ in range(limit):
        w.t += 16.0
        for key, off in offsets.items():
            w.sample(key, off(w.t) if callable(off) else off)
        w.ppm_before = w.engine.model.ppm
        result = w.engine.update(w.t)
        if any(match(a) for a in result.actions):
            return result
        w.done += result.actions
    raise AssertionError(f"no {wanted} asked for")


def slewing_hard(action) -> bool:
    # (the estimate is about 0 here; after the first sync a slew runs at most 5 ppm off it)
    return isinstance(action, SetFrequency) and abs(action.ppm) > 2


# --- where the clock starts ------------------------------------------------------------------


def test_without_a_drift_file_the_clock_stays_at_the_kernels_frequency():
    w = World(SyncConfig(start_frequency=23.0), a=None)
    assert w.done[0] == SetFrequency(23.0)
    assert w.engine.frequency_ppm == 23.0 and w.engine.resting_frequency == 23.0


def test_the_kernels_frequency_is_no_prior_for_the_filters():
    # A killed daemon may have left anything, even a slew's 400 ppm: the estimate must come
    # from the samples as quickly as without it (a driftfile's value would be trusted).
    w = World(SyncConfig(start_frequency=400.0), a=None)
    r = w.run(64, {"a": drift(-100.0)})
    assert r.frequency == pytest.approx(-100.0, abs=1.0)


# --- an adjustment that failed leaves the engine's model unchanged ---------------------------


def test_a_failed_step_leaves_the_model_as_it_was_and_is_decided_again():
    w = World(a=None)
    result = until(w, Step, {"a": 30.0})
    before = w.engine.model.correction(w.t)
    real = w.engine.clock_failed(result, (), w.t)
    assert real.step == 0.0 and not real.stepped and real.actions == ()
    assert w.engine.model.correction(w.t) == before
    assert w.engine.model.last_step_at() is None
    assert w.engine.sources["a"].filter.count > 0  # what it learnt from samples stays
    again = w.update(real.wakeup)
    assert [a for a in again.actions if isinstance(a, Step)] == [Step(pytest.approx(30.0))]


def test_a_failed_slew_frequency_leaves_the_old_frequency_in_the_model():
    w = World(a=None)
    w.run(320, {"a": 0.0})
    result = until(w, slewing_hard, {"a": 0.05})
    assert w.engine.model.ppm != w.ppm_before
    real = w.engine.clock_failed(result, (), w.t)
    assert w.engine.model.ppm == w.ppm_before
    assert real.wakeup <= w.t + 64.0
    retry = w.update(w.t + 1.0)
    assert [a.ppm for a in retry.actions if isinstance(a, SetFrequency)] != []


def test_what_did_take_effect_stays_in_the_model():
    w = World(a=None)
    result = until(w, Step, {"a": 30.0})
    step = next(a for a in result.actions if isinstance(a, Step))
    real = w.engine.clock_failed(result, (step,), w.t)  # the status after it failed
    assert real.step == pytest.approx(30.0)
    assert w.engine.model.last_step_at() == pytest.approx(w.t + 30.0)
    w.t += real.step
    nxt = w.update(w.t + 1.0)
    assert [a for a in nxt.actions if isinstance(a, SetStatus)]  # told again


def test_a_failed_q_slew_is_not_done():
    w = World(SyncConfig(once=True), a=None)
    result = until(w, Slew, {"a": 0.05})
    assert result.done
    real = w.engine.clock_failed(result, (), w.t)
    assert not real.done
    retry = w.update(w.t + 1.0)
    assert retry.done and [a for a in retry.actions if isinstance(a, Slew)]


def test_a_failed_first_frequency_is_set_again():
    w = World(SyncConfig(start_frequency=5.0))
    w.engine.clock_failed(w.result, (), T0)
    assert SetFrequency(5.0) in w.update(T0 + 1.0).actions


# --- a step someone else made --------------------------------------------------------------


def measured(w: World, raw_offset: float, foreign: float) -> Sample:
    """What an exchange measures when the clock carries the engine's corrections and a
    step of `foreign` s nobody told the engine about."""
    offset = raw_offset - w.engine.model.correction(w.t) - foreign
    return Sample(offset, DELAY, 1e-6, w.t, 1, 0, -20, 0.0, 1e-5, b"GPS\0", 0)


def synced() -> World:
    w = World(a=None)
    w.run(320, {"a": 0.001})
    assert abs(w.result.offset) < 1e-4
    return w


def test_a_foreign_step_told_to_the_engine_keeps_the_filters_continuous():
    w = synced()
    w.t += 1.0
    w.engine.foreign_step(w.t, 2.0)  # `date -s` moved the clock 2 s forward
    for _ in range(4):
        w.t += 16.0
        assert w.engine.on_sample("a", measured(w, 0.001, 0.0)) is Verdict.ACCEPTED
        r = w.update(w.t)
    assert r.offset == pytest.approx(-2.0, abs=1e-4)  # it knows the clock is 2 s ahead


def test_a_foreign_step_kept_from_the_engine_looks_like_the_source_moved():
    w = synced()
    w.t += 17.0
    assert w.engine.on_sample("a", measured(w, 0.001, 2.0)) is Verdict.SPIKE


def test_samples_in_flight_across_a_foreign_step_are_not_used():
    w = synced()
    w.t += 16.0
    w.engine.foreign_step(w.t, -0.5)
    w.t += DELAY / 2  # the reply of a request sent before the step was noticed
    assert w.engine.on_sample("a", measured(w, 0.001, 0.0)) is None


# --- what to leave behind ---------------------------------------------------------------


def test_mid_slew_the_resting_frequency_is_the_bare_estimate():
    w = World(a=None)
    w.run(600, {"a": drift(-20.0)})
    result = until(w, lambda a: isinstance(a, SetFrequency) and abs(a.ppm + 20.0) > 2,
                   {"a": lambda t: drift(-20.0)(t) + 0.05})
    w.done += result.actions
    # slewing (after the first sync at most 5 ppm off the estimate: issue 13)
    assert abs(w.engine.model.ppm - w.engine.frequency_ppm) > 2
    assert w.engine.resting_frequency == w.engine.frequency_ppm
    assert w.engine.resting_frequency == pytest.approx(-20.0, abs=0.5)


def test_under_q_the_resting_frequency_is_the_starting_one():
    w = World(SyncConfig(once=True, start_frequency=7.0), a=None)
    w.run(64, {"a": drift(-90.0)})
    assert w.result.done
    assert w.engine.resting_frequency == 7.0
