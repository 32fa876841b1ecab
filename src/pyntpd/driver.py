"""The one driver of the sync engine, shared by the daemon and the simulator.

The engine (sync/engine) decides; this applies each decision, in one order, whatever runs
it: the clock actions at once (the engine assumes they took effect at `now`), a step moves
every association's timer with it and makes it forget its outstanding request, the engine's
polls go to the associations, used samples are recorded in the statistics files, and the
next update is scheduled at the engine's wake-up time (it slews by holding a frequency until
then). The daemon (daemon/syncloop) and the simulator (sim/runner) differ only in what they
plug in: the clock, a `Scheduler` on the asyncio loop or on simulated time, the transport
that carries the associations' packets, and what they do with each result (publish it to
the responder, log it, keep it for a report). So what the simulator shows is what runs.

The clock is watched (clock/watch): before every update, and after every adjustment, it is
read back. What another process changed is taken back, and a step it made is told to the
engine and moves the timers as a step of the engine's own would. An adjustment the clock
refused is undone in the engine's model (it assumed it took effect). However the driver
stops (SIGTERM, panic, -q done, an exception in an update, a reload), the clock is handed
back at the frequency estimate with no slew of ours running: a stop in mid-slew would
otherwise leave up to 500 ppm behind. `take_over` is the other end, before the engine is
made: the corrections a previous daemon left running are stopped, and the frequency the
kernel had is where the engine starts when there is no drift file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from pyntpd.clock.base import Clock, ClockError, TakeOver
from pyntpd.clock.watch import ClockWatch
from pyntpd.logonce import LOGGER_NAME, LogOnce
from pyntpd.proto.source import SourceSpec
from pyntpd.stats.filegen import Statistics
from pyntpd.sync.engine import PanicExit, SyncEngine, SyncResult
from pyntpd.types import Sample

log = logging.getLogger(LOGGER_NAME)


class Polled(Protocol):
    """What the driver needs of a source: an Association, or a reference clock's peer."""

    @property
    def spec(self) -> SourceSpec: ...
    @property
    def reach(self) -> int: ...
    @property
    def poll(self) -> int: ...
    def set_poll(self, exponent: int) -> None: ...
    def clock_stepped(self, step: float) -> None: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def call_at(self, local: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` once the local (disciplined) clock reads `local` seconds."""
        ...


@dataclass
class _Source:
    assoc: Polled
    address: str  # for the statistics files


def _ignore(*_: object) -> None:
    return None


def _reraise(exc: BaseException) -> None:
    raise exc


def take_over(clock: Clock) -> TakeOver | None:
    """At start, before the engine: stop the corrections someone else left running (each
    one logged). None if the clock is only observed or refused (logged)."""
    if not clock.can_adjust:
        return None
    try:
        took = clock.take_over()
    except ClockError as exc:
        log.error("cannot take the clock over: %s", exc)
        return None
    for line in took.findings():
        log.info("%s", line)
    return took


class Driver:
    """Feeds the engine and carries out what it decides."""

    def __init__(
        self,
        engine: SyncEngine,
        clock: Clock,
        scheduler: Scheduler,
        *,
        stats: Statistics | None = None,
        on_result: Callable[[SyncResult, float], None] = _ignore,
        on_step: Callable[[float], None] = _ignore,
        on_panic: Callable[[PanicExit], None] = _ignore,
        on_done: Callable[[SyncResult], None] = _ignore,
        on_error: Callable[[BaseException], None] = _reraise,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.scheduler = scheduler
        self.stats = stats
        self.on_result = on_result  # every result, after it was applied, with its `now`
        self.on_step = on_step  # after a step moved the associations' timers
        self.on_panic = on_panic  # nothing was applied, the clock handed back; must stop
        self.on_done = on_done  # -q: the clock was set once
        self.on_error = on_error  # an update raised: stopped, the clock handed back
        self.watch = ClockWatch(clock)
        self.sources: dict[Hashable, _Source] = {}
        self.last: SyncResult | None = None
        self._wakeup: Timer | None = None
        self._stopped = False
        self._log_once = LogOnce(log)

    def now(self) -> float:
        return self.clock.now() / 1e9

    # --- sources --------------------------------------------------------------------

    def add_source(self, key: Hashable, assoc: Polled, address: str,
                   local_address: str | None = None) -> None:
        """`local_address`: where we reach the source from (the engine's orphan election)."""
        self.sources[key] = _Source(assoc, address)
        self.engine.add_source(key, assoc.spec, local_address)

    def remove_source(self, key: Hashable) -> None:
        self.sources.pop(key, None)
        self.engine.remove_source(key)

    def on_sample(self, key: Hashable, sample: Sample) -> SyncResult | None:
        """A sample from an association: fed to the engine, which then updates at once.
        None if the driver has stopped."""
        if self._stopped:
            return None
        try:
            # A step someone else made reaches the model before the sample does (which
            # is then dropped if its exchange straddles the step).
            self._check()
            used = self.engine.on_sample(key, sample) is not None
            now, result = self._update(check=False)
        except Exception as exc:
            self._fail(exc)
            return None
        src = self.sources.get(key)
        if self.stats is not None and used and src is not None:
            self.stats.record_sample(now, key, src.address, src.assoc.reach, result)
        return result

    # --- updates --------------------------------------------------------------------

    def update(self) -> SyncResult | None:
        """Update now (at start, at the engine's wake-up time); None once stopped."""
        if self._stopped:
            return None
        try:
            return self._update()[1]
        except Exception as exc:
            self._fail(exc)
            return None

    def stop(self) -> None:
        """No more updates (the caller is shutting down, or replacing the engine): the
        clock is left at the frequency estimate with no slew of ours running."""
        if self._stopped:
            return
        self._stopped = True
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        if self.clock.can_adjust and self.engine.config.discipline:
            ppm = self.engine.resting_frequency
            try:
                self.clock.hand_back(ppm)
            except (ClockError, ValueError) as exc:  # ValueError: not a finite frequency
                log.error("cannot leave the clock at %+.3f ppm: %s", ppm, exc)
            else:
                log.info("clock left at the frequency estimate, %+.3f ppm", ppm)

    def _fail(self, exc: Exception) -> None:
        self.stop()
        self.on_error(exc)

    def _check(self) -> None:
        """Read the clock back: take back what someone else changed; a foreign step is the
        engine's and the timers' as if it were ours."""
        meddling = self.watch.check()
        if meddling is None:
            return
        self.watch.retake(meddling)
        if meddling.step_s:
            self.engine.foreign_step(meddling.at_ns / 1e9, meddling.step_s)
            self._stepped(meddling.step_s)

    def _stepped(self, step: float) -> None:
        for src in self.sources.values():
            src.assoc.clock_stepped(step)
        self.on_step(step)

    def _update(self, check: bool = True) -> tuple[float, SyncResult]:
        if check:
            self._check()
        now = self.now()
        result = self._apply(self.engine.update(now), now)
        return now, result

    def _apply(self, result: SyncResult, now: float) -> SyncResult:
        """Carry out `result`; returns it as it really happened."""
        self.last = result
        if result.panic is not None:
            self.stop()
            self.on_panic(result.panic)
            return result
        applied = self.watch.apply(result.actions)
        if applied.error is not None:
            self._log_once.error(("clock", applied.error.errno), "cannot adjust the clock: %s",
                                 applied.error)
            result = self.engine.clock_failed(result, applied.actions, now)
            self.last = result
        if result.stepped:
            self._stepped(result.step)
        if applied.done:
            self._check()  # read back what was just done
        for key, poll in result.polls.items():
            src = self.sources.get(key)
            if src is not None and poll != src.assoc.poll:
                src.assoc.set_poll(poll)
        self.on_result(result, now)
        if result.done:
            self.stop()
            self.on_done(result)
            return result
        self._schedule(result, now + result.step)
        return result

    def _schedule(self, result: SyncResult, now: float) -> None:
        # The engine always names a time (at most its hold interval away); if it did not,
        # that interval is still the longest the status may go stale.
        hold = self.engine.config.tuning.hold_wakeup
        wakeup = now + hold if result.wakeup is None else result.wakeup
        wakeup = min(max(wakeup, now), now + hold)
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup = self.scheduler.call_at(wakeup, self._wake)

    def _wake(self) -> None:
        self._wakeup = None
        self.update()
