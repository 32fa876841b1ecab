"""Background tasks are never silently gone (issue 12, item 4): daemon/tasks.Supervisor."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from pyntpd.daemon.tasks import Supervisor


class Timers:
    """A Supervisor's schedule that records (delay, callback) instead of waiting."""

    def __init__(self) -> None:
        self.due: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        self.due.append((delay, callback))
        return asyncio.get_running_loop().call_later(3600, lambda: None)  # cancel() target

    def fire(self) -> float:
        delay, callback = self.due.pop(0)
        callback()
        return delay


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_task_that_dies_is_logged_with_its_traceback_and_started_again_with_back_off(
        caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    async def dies() -> None:
        runs.append(len(runs))
        raise RuntimeError("boom")

    async def scenario() -> tuple[list[float], int]:
        timers = Timers()
        supervisor = Supervisor(minimum=16.0, maximum=60.0, schedule=timers)
        supervisor.spawn("resolving pool.example", dies)
        delays = []
        for _ in range(4):
            await _settle()
            delays.append(timers.fire())
        await _settle()
        supervisor.close()
        return delays, supervisor.failures

    with caplog.at_level(logging.ERROR, logger="pyntpd"):
        delays, failures = asyncio.run(scenario())
    assert delays == [16.0, 32.0, 60.0, 60.0]
    assert failures == 5 and len(runs) == 5
    first = caplog.records[0]
    assert first.getMessage() == ("resolving pool.example failed (RuntimeError: boom); "
                                  "starting it again in 16 s")
    assert first.exc_info is not None and first.exc_info[0] is RuntimeError


def test_a_task_that_returns_or_is_cancelled_is_not_started_again() -> None:
    async def returns() -> None:
        return None

    async def waits() -> None:
        await asyncio.sleep(3600)

    async def scenario() -> tuple[int, int, int]:
        timers = Timers()
        supervisor = Supervisor(schedule=timers)
        supervisor.spawn("returns", returns)
        supervisor.spawn("waits", waits)
        await _settle()
        running = supervisor.running
        supervisor.close()
        await _settle()
        return running, supervisor.failures, len(timers.due)

    assert asyncio.run(scenario()) == (1, 0, 0)


def test_nothing_is_started_again_after_close() -> None:
    started: list[str] = []

    async def dies() -> None:
        started.append("run")
        raise OSError("gone")

    async def scenario() -> int:
        timers = Timers()
        supervisor = Supervisor(schedule=timers)
        supervisor.spawn("dies", dies)
        await _settle()
        supervisor.close()
        timers.fire()  # a restart that was already due
        await _settle()
        return len(started)

    assert asyncio.run(scenario()) == 1
