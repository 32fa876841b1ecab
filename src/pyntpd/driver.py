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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from pyntpd.clock.base import Clock, apply_actions
from pyntpd.clock.kernel import ClockError
from pyntpd.logonce import LOGGER_NAME, LogOnce
from pyntpd.proto.source import Association
from pyntpd.stats.filegen import Statistics
from pyntpd.sync.engine import PanicExit, SyncEngine, SyncResult
from pyntpd.types import Sample

log = logging.getLogger(LOGGER_NAME)


class Timer(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def call_at(self, local: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` once the local (disciplined) clock reads `local` seconds."""
        ...


@dataclass
class _Source:
    assoc: Association
    address: str  # for the statistics files


def _ignore(*_: object) -> None:
    return None


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
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.scheduler = scheduler
        self.stats = stats
        self.on_result = on_result  # every result, after it was applied, with its `now`
        self.on_step = on_step  # after a step moved the associations' timers
        self.on_panic = on_panic  # nothing was applied; the caller must stop
        self.on_done = on_done  # -q: the clock was set once
        self.sources: dict[Hashable, _Source] = {}
        self.last: SyncResult | None = None
        self._wakeup: Timer | None = None
        self._stopped = False
        self._log_once = LogOnce(log)

    def now(self) -> float:
        return self.clock.now() / 1e9

    # --- sources --------------------------------------------------------------------

    def add_source(self, key: Hashable, assoc: Association, address: str,
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
        used = self.engine.on_sample(key, sample) is not None
        now, result = self._update()
        src = self.sources.get(key)
        if self.stats is not None and used and src is not None:
            self.stats.record_sample(now, key, src.address, src.assoc.reach, result)
        return result

    # --- updates --------------------------------------------------------------------

    def update(self) -> SyncResult | None:
        """Update now (at start, at the engine's wake-up time); None once stopped."""
        if self._stopped:
            return None
        return self._update()[1]

    def stop(self) -> None:
        """No more updates: the caller is shutting down."""
        self._stopped = True
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None

    def _update(self) -> tuple[float, SyncResult]:
        now = self.now()
        result = self.engine.update(now)
        self._apply(result, now)
        return now, result

    def _apply(self, result: SyncResult, now: float) -> None:
        self.last = result
        if result.panic is not None:
            self.stop()
            self.on_panic(result.panic)
            return
        try:
            apply_actions(self.clock, result.actions)
        except ClockError as exc:
            self._log_once.error(("clock", type(exc)), "cannot adjust the clock: %s", exc)
        if result.stepped:
            for src in self.sources.values():
                src.assoc.clock_stepped(result.step)
            self.on_step(result.step)
        for key, poll in result.polls.items():
            src = self.sources.get(key)
            if src is not None and poll != src.assoc.poll:
                src.assoc.set_poll(poll)
        self.on_result(result, now)
        if result.done:
            self.stop()
            self.on_done(result)
            return
        self._schedule(result, now + result.step)

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
