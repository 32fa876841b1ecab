"""The clock as the daemon finds it, leaves it, and shares it: the simulator (real
associations, the real engine, the one driver) on a SimClock that models the kernel, which
a previous daemon left in some state, which someone else meddles with, or which refuses."""

from __future__ import annotations

import errno
import logging
import random

import pytest

from pyntpd.clock.base import ClockError
from pyntpd.clock.simclock import SimClock
from pyntpd.proto.source import SourceSpec
from pyntpd.sim.runner import Simulation
from pyntpd.sim.scenarios import SCENARIOS
from pyntpd.sync.engine import SyncConfig

DAY = 86400.0
CONVERGED = 3000.0


def lan4(clock: SimClock | None = None, config: SyncConfig | None = None,
         seed: int = 1) -> Simulation:
    setup = SCENARIOS["lan4"]
    rng = random.Random(seed)
    clock = clock or SimClock(offset=setup.offset, frequency_ppm=setup.frequency_ppm)
    clock.wander, clock.rng = setup.wander, random.Random(rng.getrandbits(64))
    pairs = [(s, SourceSpec(s.address, minpoll=4, maxpoll=6, iburst=True))
             for s in setup.servers(rng)]
    return Simulation(clock, pairs, config or SyncConfig(), random.Random(rng.getrandbits(64)))


def converged(**kw) -> Simulation:
    sim = lan4(**kw)
    sim.run(CONVERGED)
    assert abs(sim.clock.phase) < 1e-3 and not sim.trace.steps
    return sim


def one_day_alone(clock: SimClock) -> float:
    """How far the clock moves against true time in a day with nobody disciplining it."""
    start = clock.phase
    clock.advance_to(clock.true + DAY)
    return clock.phase - start


# --- start: take over --------------------------------------------------------------------


def test_a_pll_offset_left_by_a_previous_daemon_is_cleared_at_start(caplog):
    caplog.set_level(logging.INFO, logger="pyntpd")
    clock = SimClock(offset=0.001, frequency_ppm=20.0, pll_offset=0.0123, flags={"PLL"},
                     time_constant=6)
    sim = lan4(clock)
    assert clock.pll_offset == 0.0 and "PLL" not in clock.flags
    assert "kernel PLL offset +12.300 ms left by another daemon: cleared" in caplog.messages
    sim.run(CONVERGED)
    assert abs(clock.phase) < 1e-4


def test_an_adjtime_remainder_left_behind_is_cancelled_at_start():
    clock = SimClock(adjtime_left=0.8)
    lan4(clock)
    assert clock.slew_left == 0.0


def test_without_a_drift_file_the_engine_starts_from_the_kernels_frequency():
    clock = SimClock(frequency_ppm=-42.0, kernel_frequency_ppm=42.0)  # ntpd had it right
    sim = lan4(clock)
    assert sim.engine.frequency_ppm == 42.0
    assert clock.correction_ppm == 42.0  # not forced to 0 at start


def test_a_drift_file_outranks_the_kernels_frequency():
    clock = SimClock(kernel_frequency_ppm=300.0)
    sim = lan4(clock, SyncConfig(initial_frequency=-5.0))
    assert sim.engine.frequency_ppm == -5.0 and clock.correction_ppm == -5.0


# --- every way out: the bare estimate, no correction running ------------------------------


def slewing_hard(sim: Simulation) -> None:
    """Converged, then 60 ms off (a step nobody saw): the engine slews (after the first
    sync at most 5 ppm off its estimate: issue 13)."""
    sim.clock.phase += 0.06
    for _ in range(200):
        sim.run(sim.clock.true + 2.0)
        if abs(sim.clock.correction_ppm - sim.engine.frequency_ppm) > 2:
            return
    raise AssertionError("never slewed")


def test_a_stop_in_mid_correction_leaves_the_bare_estimate():
    sim = converged()
    slewing_hard(sim)
    sim.stop()
    assert sim.clock.correction_ppm == sim.engine.frequency_ppm
    # Left to itself the clock keeps time as well as the estimate does (the issue: up to
    # 500 ppm, 43 s a day, when the stop came mid-slew).
    assert abs(one_day_alone(sim.clock)) < 0.05


def test_a_panic_exit_leaves_the_bare_estimate():
    clock = SimClock(offset=-2000.0, frequency_ppm=20.0, kernel_frequency_ppm=480.0)
    sim = lan4(clock)
    trace = sim.run(600.0)
    assert trace.panic is not None
    # What the samples so far say, not the 480 ppm (a slew of a killed daemon) it started at.
    assert clock.correction_ppm == sim.engine.resting_frequency == sim.engine.frequency_ppm
    assert abs(clock.correction_ppm + 20.0) < 50.0


def test_a_q_run_leaves_the_starting_frequency_and_its_slew_running():
    clock = SimClock(offset=0.05, frequency_ppm=20.0, kernel_frequency_ppm=-20.0)
    sim = lan4(clock, SyncConfig(once=True))
    left = []
    sim.driver.on_done = lambda result: left.append((clock.correction_ppm, clock.slew_left))
    sim.run(120.0)
    [(ppm, slew)] = left
    assert ppm == -20.0
    assert slew != 0.0  # the kernel finishes -q's adjtime(), as after ntpd -q


def test_an_exception_in_an_update_stops_the_driver_and_hands_the_clock_back():
    sim = converged()
    slewing_hard(sim)

    def broken(result, now):
        raise RuntimeError("a bug")

    sim.driver.on_result = broken
    with pytest.raises(RuntimeError, match="a bug"):
        sim.run(sim.clock.true + 200.0)
    assert sim.clock.correction_ppm == sim.engine.frequency_ppm
    assert sim.driver.update() is None  # stopped


# --- someone else's hands on the clock -------------------------------------------------------


def test_a_meddler_changing_the_frequency_is_noticed_logged_once_and_undone(caplog):
    caplog.set_level(logging.WARNING, logger="pyntpd")
    sim = converged()
    for _ in range(3):
        sim.driver.update()  # whatever was due is done: the engine has nothing to change
        sim.clock.adjust_frequency(sim.clock.correction_ppm + 200.0)  # `adjtimex -f`
        sim.driver.update()  # so only the watch can put ours back
        assert sim.clock.correction_ppm == pytest.approx(sim.engine.model.ppm, abs=1e-9)
        sim.run(sim.clock.true + 200.0)
    assert sim.driver.watch.counts == {"frequency": 3}
    assert len([m for m in caplog.messages if "another process" in m]) == 1
    sim.run(sim.clock.true + 2000.0)
    assert abs(sim.clock.phase) < 1e-3


def test_a_foreign_step_is_the_engines_at_once_and_stepped_back_after_stepout():
    sim = converged()
    sim.clock.step(0.5)  # `date -s`: through the kernel, so it shows against the boot clock
    moved_at = sim.clock.true
    sim.run(moved_at + 64.0)
    assert sim.driver.watch.counts == {"step": 1}
    assert sim.engine.model.steps[-1][1] == 0.5
    # The filters never saw a jump: no source restarted.
    assert all(src.filter.spikes == 0 for src in sim.engine.sources.values())
    assert sim.driver.last.offset == pytest.approx(-0.5, abs=1e-3)
    trace = sim.run(moved_at + 1500.0)
    [(when, amount)] = trace.steps
    assert amount == pytest.approx(-0.5, abs=1e-3) and when - moved_at >= 300.0
    assert abs(sim.clock.phase) < 1e-3


class Refusing(SimClock):
    """A kernel that refuses to step (EINVAL) until `refuse` is cleared."""

    refuse = True

    def step(self, offset_s: float) -> int:
        if self.refuse:
            raise ClockError(errno.EINVAL, "stepping the clock: clock_adjtime failed")
        return super().step(offset_s)


def test_a_refused_step_leaves_the_engines_model_unchanged(caplog):
    caplog.set_level(logging.ERROR, logger="pyntpd")
    clock = Refusing(offset=-0.5, frequency_ppm=20.0)
    sim = lan4(clock)
    sim.run(600.0)
    assert sim.trace.steps == [] and clock.steps == []
    assert sim.engine.model.steps == []  # it knows nothing moved
    # ... so its estimate is still the clock's real offset, not zero.
    assert sim.driver.last.offset == pytest.approx(-clock.phase, abs=1e-3)
    assert [m for m in caplog.messages if "cannot adjust the clock" in m] == [
        "cannot adjust the clock: [Errno 22] stepping the clock: clock_adjtime failed"]
    clock.refuse = False
    behind = -clock.phase
    trace = sim.run(1200.0)
    assert [a for _, a in trace.steps] == [pytest.approx(behind, abs=2e-3)]
    sim.run(CONVERGED)
    assert abs(clock.phase) < 1e-3


def test_a_sample_across_a_foreign_step_is_not_used():
    sim = converged()
    key, src = next(iter(sim.engine.sources.items()))
    before = src.filter.count
    sim.clock.step(-0.25)
    sim.driver.update()  # notices the step first
    assert sim.engine.on_sample(key, src.sample) is None  # its exchange began before it
    assert src.filter.count == before


def test_the_kernels_own_leap_second_is_not_meddling():
    from pyntpd.sim.scenarios import run

    _, sim = run(SCENARIOS["leap-insert"], 1)
    assert [what for _, what in sim.clock.leap_events] == ["armed INS", "inserted"]
    assert sim.driver.watch.counts == {}
    assert sim.engine.model.steps == []  # nothing was told to the engine as a step
