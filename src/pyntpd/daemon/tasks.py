"""Background tasks that are never silently gone.

asyncio keeps a task's exception to itself until someone asks, and says so only when the
task is garbage-collected, on a logger nobody reads once the daemon has detached: a
resolver or NTS-KE task that died of an unexpected error would leave its server unpolled
for the life of the daemon. A task started here that dies is logged with its traceback
and started again after a back-off (doubling from `minimum` to `maximum`), until `close`.
A task that returns, or is cancelled, is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("pyntpd")

RESTART_MIN = 16.0
RESTART_MAX = 3600.0

TaskFactory = Callable[[], Coroutine[Any, Any, None]]
# (delay, callback) -> a handle with cancel(): the running loop's call_later, or a test's
Schedule = Callable[[float, Callable[[], None]], asyncio.TimerHandle]


@dataclass(eq=False)
class _Job:
    name: str
    factory: TaskFactory
    delay: float


@dataclass
class Supervisor:
    minimum: float = RESTART_MIN
    maximum: float = RESTART_MAX
    failures: int = 0  # tasks that died (each was started again unless closed meanwhile)
    schedule: Schedule | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _timers: set[asyncio.TimerHandle] = field(default_factory=set)
    _closed: bool = False

    def spawn(self, name: str, factory: TaskFactory) -> None:
        """Run `factory()` as a task; `name` says in the log what died."""
        self._start(_Job(name, factory, self.minimum))

    def _start(self, job: _Job) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(job.factory(), name=job.name)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._done(job, done))

    def _done(self, job: _Job, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved: asyncio will not complain about it later
        if exc is None or self._closed:
            return
        self.failures += 1
        log.error("%s failed (%s: %s); starting it again in %.0f s", job.name,
                  type(exc).__name__, exc, job.delay, exc_info=exc)
        timer: asyncio.TimerHandle | None = None

        def restart() -> None:
            if timer is not None:
                self._timers.discard(timer)
            self._start(job)

        schedule = self.schedule or asyncio.get_running_loop().call_later
        timer = schedule(job.delay, restart)
        self._timers.add(timer)
        job.delay = min(job.delay * 2, self.maximum)

    @property
    def running(self) -> int:
        return len(self._tasks)

    def close(self) -> None:
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
