"""The clock moved by someone else, and suspend/resume (issue 6, item 4).

The engine is run in the simulator (real associations, real SyncEngine, a SimClock), where
"someone else" is the test moving the simulated system clock behind the engine's back; the
daemon shell's own uses of the two clocks (the driftfile's hourly rule, the statistics'
day files, sysstats' interval) are run with injected clocks. The poll timers of
daemon/sources.py are checked with an injected wall clock in a real event loop.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import socket
from pathlib import Path

import pytest

from pyntpd.clock.simclock import SimClock
from pyntpd.config import parse_text
from pyntpd.daemon.driftfile import WRITE_INTERVAL_S, DriftFile
from pyntpd.daemon.sources import SourceManager
from pyntpd.proto.source import SourceSpec
from pyntpd.sim.runner import Simulation
from pyntpd.sim.scenarios import HOUR, SCENARIOS, with_tinker
from pyntpd.stats.filegen import FileSet, Statistics, StatsSettings
from pyntpd.stats.statsformat import SysCounts, parse_sysstats
from pyntpd.sync.engine import SyncConfig

CONVERGED = 3000.0  # s: lan4 from 100 ms and 100 ppm is within 1 ms by then


def lan4(config: SyncConfig | None = None, seed: int = 1) -> Simulation:
    setup = SCENARIOS["lan4"]
    rng = random.Random(seed)
    clock = SimClock(offset=setup.offset, frequency_ppm=setup.frequency_ppm,
                     wander=setup.wander, rng=random.Random(rng.getrandbits(64)))
    pairs = [(s, SourceSpec(s.address, minpoll=4, maxpoll=6, iburst=True))
             for s in setup.servers(rng)]
    return Simulation(clock, pairs, config or SyncConfig(), random.Random(rng.getrandbits(64)))


def converged(config: SyncConfig | None = None) -> Simulation:
    sim = lan4(config)
    sim.run(CONVERGED)
    assert abs(sim.clock.phase) < 1e-3 and not sim.trace.steps
    return sim


def step_by_someone_else(sim: Simulation, seconds: float) -> None:
    sim.clock.phase += seconds  # not through Clock.step: the engine is not told


# --- the clock stepped by someone else ------------------------------------------------------


@pytest.mark.parametrize("jump", [0.5, -0.5, 30.0])
def test_a_step_by_someone_else_is_stepped_back_after_stepout(jump: float) -> None:
    sim = converged()
    step_by_someone_else(sim, jump)
    trace = sim.run(CONVERGED + 1500)
    assert trace.panic is None
    assert len(trace.steps) == 1
    when, amount = trace.steps[0]
    assert amount == pytest.approx(-jump, abs=2e-3)
    # ntpd's rule: an offset beyond the step threshold is believed only once it has lasted
    # the stepout interval (300 s), so a spike is never stepped to.
    assert when - CONVERGED >= 300.0
    assert abs(sim.clock.phase) < 1e-3


def test_a_small_step_by_someone_else_is_slewed_away_not_stepped() -> None:
    sim = converged()
    step_by_someone_else(sim, 0.05)  # below the 128 ms step threshold
    # After the first sync a slew runs at most 5 ppm off the frequency estimate (the rate
    # stays steady for everything that times intervals): 50 ms take about 10,000 s.
    trace = sim.run(CONVERGED + 2 * HOUR)
    assert trace.panic is None and not trace.steps
    assert 1e-3 < abs(sim.clock.phase) < 0.05  # on its way, not stepped
    trace = sim.run(CONVERGED + 3 * HOUR)
    assert trace.panic is None and not trace.steps
    assert abs(sim.clock.phase) < 1e-3


def test_an_hour_stepped_by_someone_else_is_a_panic_exit_as_in_ntpd() -> None:
    sim = converged()
    step_by_someone_else(sim, HOUR)
    trace = sim.run(CONVERGED + 1500)
    assert trace.panic is not None and not trace.steps
    assert trace.panic[1].offset == pytest.approx(-HOUR, abs=1e-2)


def test_with_tinker_panic_0_an_hour_stepped_by_someone_else_is_stepped_back() -> None:
    sim = converged(with_tinker(SyncConfig(), panic=0.0))
    step_by_someone_else(sim, HOUR)
    trace = sim.run(CONVERGED + 1500)
    assert trace.panic is None
    assert [round(a) for _, a in trace.steps] == [-HOUR]
    assert abs(sim.clock.phase) < 1e-3


# --- suspend and resume -----------------------------------------------------------------------


def suspend(sim: Simulation, at: float, seconds: float) -> None:
    """Nothing runs from `at` for `seconds` of true time (timers fire late, all at once
    at resume), while the oscillator runs on: a suspended machine whose wall clock the
    kernel keeps (CLOCK_REALTIME is restored from the RTC at resume)."""
    sim.run(at)
    events = sim._events
    resume = at + seconds
    delayed = [(max(t, resume), seq, action) for t, seq, action in events]
    heapq.heapify(delayed)
    sim._events[:] = delayed


def test_after_suspend_for_an_hour_the_engine_carries_on_without_step_or_panic() -> None:
    sim = converged()
    exchanges = sim.trace.exchanges
    suspend(sim, CONVERGED, HOUR)
    trace = sim.run(CONVERGED + 2 * HOUR)
    assert trace.panic is None and not trace.steps
    assert trace.exchanges > exchanges  # polling resumed
    assert abs(sim.clock.phase) < 1e-3


def test_after_suspend_with_the_wall_clock_lost_the_engine_steps_it_back() -> None:
    # A virtual machine resumed from a snapshot: the wall clock is where it was stopped.
    sim = converged()
    suspend(sim, CONVERGED, 600)
    step_by_someone_else(sim, -600)
    trace = sim.run(CONVERGED + 600 + 1500)
    assert trace.panic is None
    assert [round(a) for _, a in trace.steps] == [600]
    assert abs(sim.clock.phase) < 1e-3


# --- the daemon shell's clocks ------------------------------------------------------------------


def test_the_drift_files_hourly_rule_checks_once_after_a_jump_of_the_monotonic_clock(
        tmp_path: Path) -> None:
    drift = DriftFile(tmp_path / "ntp.drift")
    drift.last_written = 1.0
    assert not drift.should_write(100.0, 5.0)  # starts the hour
    later = 100.0 + 10 * WRITE_INTERVAL_S  # ten hours asleep
    assert drift.should_write(later, 5.0)
    # No catching up on the missed checks: the next is an hour on.
    assert not drift.should_write(later + 1.0, 9.0)
    assert drift.should_write(later + WRITE_INTERVAL_S, 9.0)


DAY1 = 1_795_651_200.0  # 2026-11-26T00:00:00Z


def test_stats_lines_follow_the_wall_clock_back_and_forth_between_day_files(
        tmp_path: Path) -> None:
    stats = Statistics(StatsSettings(str(tmp_path), sets=(FileSet("sysstats", "sysstats"),)),
                       started=DAY1)
    for when in (DAY1 + 10, DAY1 + 86400 + 10, DAY1 + 20, DAY1 + 86400 + 20):
        stats.record_sys(when, SysCounts())
    stats.close()
    assert len((tmp_path / "sysstats.20261126").read_text().splitlines()) == 2
    assert len((tmp_path / "sysstats.20261127").read_text().splitlines()) == 2


def test_sysstats_interval_is_measured_on_the_monotonic_clock_not_the_wall_clock(
        tmp_path: Path) -> None:
    monotonic = [1000.0]
    stats = Statistics(StatsSettings(str(tmp_path), sets=(FileSet("sysstats", "sysstats"),)),
                       started=DAY1 + 7200, monotonic=lambda: monotonic[0])
    monotonic[0] += 3600
    stats.record_sys(DAY1 + 3600, SysCounts())  # the wall clock went back 2 hours
    monotonic[0] += 3600
    stats.record_sys(DAY1 + 3600 + 86400, SysCounts())  # and forward a day
    stats.close()
    lines = [parse_sysstats(x) for path in sorted(tmp_path.glob("sysstats.*"))
             for x in path.read_text().splitlines()]
    assert [r.since_reset for r in lines] == [3600, 3600]


def _manager(wall: list[float]) -> SourceManager:
    config = parse_text("server 127.0.0.1 port 9 minpoll 4 maxpoll 6\n", "t").config
    return SourceManager(config.servers, lambda peer, sample: None,
                         lambda: int(wall[0] * 1e9), family=socket.AF_INET)


def _next_poll_delay(wall_jump: float) -> float:
    async def run() -> float:
        wall = [2_000_000_000.0]
        manager = _manager(wall)
        manager.start()
        try:
            for _ in range(100):
                if manager.peers:
                    break
                await asyncio.sleep(0.01)
            manager._poll_due()  # the first poll went out
            wall[0] += wall_jump
            manager._reschedule()
            assert manager._timer is not None
            return manager._timer.when() - asyncio.get_running_loop().time()
        finally:
            manager.close()

    return asyncio.run(run())


def test_a_wall_clock_jump_forward_makes_the_next_poll_due_at_once() -> None:
    assert _next_poll_delay(+HOUR) <= 0.0


def test_a_wall_clock_jump_back_does_not_stall_polling_for_that_long() -> None:
    assert _next_poll_delay(-HOUR) <= 2.0 ** 6
