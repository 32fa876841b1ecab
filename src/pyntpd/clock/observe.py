"""ObserveClock: measure and serve, never touch the clock (`disable ntp`, `--observe`).

For containers and hosts where another program owns the clock (or pyntpd lacks
CAP_SYS_TIME). now() reads the real clock; every setter only records what the engine asked
for, so status output and metrics can still show the step, slew and frequency that *would*
have been applied. It never makes a system call that could change the clock: it takes
nothing over and hands nothing back, and reads back only what it recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .base import ClockState, TakeOver, status_flags


@dataclass(frozen=True, slots=True)
class SyncStatus:
    synchronised: bool
    maxerror_s: float
    esterror_s: float
    leap: int


class ObserveClock:
    """A Clock whose adjustments are recorded, never applied (`can_adjust` is False)."""

    def __init__(self) -> None:
        self.frequency_ppm: float | None = None  # last frequency requested
        self.last_step_s: float | None = None
        self.last_slew_s: float | None = None
        self.sync_status: SyncStatus | None = None
        self.tai_offset: int | None = None
        self.steps = 0  # how many steps were requested (and not applied)
        self.slews = 0

    @property
    def kernel_time(self) -> bool:
        return True

    @property
    def can_adjust(self) -> bool:
        return False

    def now(self) -> int:
        return time.time_ns()

    def adjust_frequency(self, ppm: float) -> int:
        self.frequency_ppm = float(ppm)
        return self.now()

    def slew(self, offset_s: float) -> int:
        self.last_slew_s = float(offset_s)
        self.slews += 1
        return self.now()

    def step(self, offset_s: float) -> int:
        self.last_step_s = float(offset_s)
        self.steps += 1
        return self.now()

    def set_sync_status(
        self, synchronised: bool, maxerror_s: float, esterror_s: float, leap: int
    ) -> int:
        self.sync_status = SyncStatus(synchronised, maxerror_s, esterror_s, leap)
        return self.now()

    def read_back(self) -> ClockState:
        """What was requested (nothing of it applied), not the kernel's state."""
        status = self.sync_status
        flags = (status_flags(status.synchronised, status.leap) if status is not None
                 else frozenset({"UNSYNC"}))
        return ClockState(time_ns=self.now(), frequency_ppm=self.frequency_ppm or 0.0,
                          flags=flags)

    def take_over(self) -> TakeOver:
        return TakeOver(self.read_back(), self.now())

    def hand_back(self, frequency_ppm: float) -> int:
        return self.now()

    def set_tai_offset(self, tai_utc: int) -> int:
        self.tai_offset = tai_utc
        return self.now()
