"""The clock interface: what the synchronisation engine's decisions are applied to.

Three implementations share it: `SystemClock` (Linux adjtimex/clock_adjtime), `ObserveClock`
(reads the clock, never changes it: `can_adjust` is False) and `SimClock` (the simulator's).

Conventions, shared by every implementation:

- Time is integer nanoseconds since the Unix epoch (`now()`): a float of seconds since 1970
  only resolves ~0.2 us, which is more than the noise on a good LAN.
- Offsets are *corrections*: `step(+0.5)` and `slew(+0.5)` move the clock half a second
  forward (it was behind). A sample's offset (server minus us) is exactly the correction.
- Frequency is ntpd's sign convention: `adjust_frequency(+10.0)` makes the clock run 10 ppm
  faster than it would with no correction. The value is absolute (it replaces the previous
  correction, like adjtimex ADJ_FREQUENCY), not an increment. Implementations accept at
  least +-500 ppm (the Linux kernel's limit) and clamp beyond what they support.
- `slew(offset)` is adjtime()-style: the clock itself corrects `offset` gradually at a
  bounded rate (500 ppm, as Linux ADJ_OFFSET_SINGLESHOT), on top of the frequency
  correction; a new call replaces whatever of the previous slew is still outstanding.
  The SyncEngine does not use it for its normal discipline (it slews through
  `adjust_frequency`, chrony-style, so that it knows exactly when each correction is
  applied); it is used for one-shot `-q` slews.
- `set_sync_status` tells the kernel (and through it ntpstat, adjtimex readers, the RTC
  11-minute mode) whether the clock is synchronised, how wrong it may be and the leap to
  insert or delete at the end of the current UTC day (0 none, 1 insert, 2 delete; 3 counts
  as unsynchronised). Linux acts on the flag at the next midnight, whichever day it is:
  the engine arms it only on the leap's day (sync/leap.py).
- `set_tai_offset` gives the kernel TAI-UTC (ADJ_TAI), so that CLOCK_TAI is right; the
  kernel itself moves it by one when it inserts or deletes a second.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pyntpd.types import ClockAction, SetFrequency, SetStatus, SetTai, Slew, Step

NS_PER_S = 1_000_000_000
MAX_FREQUENCY_PPM = 500.0  # the kernel's frequency range, and ntpd's frequency tolerance
SLEW_RATE = 500e-6  # seconds of slew per second, as Linux adjtime()


@runtime_checkable
class Clock(Protocol):
    """A clock that the daemon reads and (unless `can_adjust` is False) disciplines."""

    @property
    def can_adjust(self) -> bool:
        """False for a clock that is only observed: the daemon never calls the setters."""
        ...

    def now(self) -> int:
        """The local time, integer nanoseconds since the Unix epoch."""
        ...

    def adjust_frequency(self, ppm: float) -> None:
        """Set the absolute frequency correction (positive: the clock runs faster)."""
        ...

    def slew(self, offset_s: float) -> None:
        """Start moving the clock by `offset_s` gradually (adjtime-style, bounded rate)."""
        ...

    def step(self, offset_s: float) -> None:
        """Move the clock by `offset_s` at once (positive: forward)."""
        ...

    def set_sync_status(
        self, synchronised: bool, maxerror_s: float, esterror_s: float, leap: int
    ) -> None:
        """Report synchronisation state (kernel STA_UNSYNC, maxerror, esterror, leap)."""
        ...

    def set_tai_offset(self, tai_utc: int) -> None:
        """Tell the kernel TAI-UTC in seconds (from the leap second list)."""
        ...


def apply_actions(clock: Clock, actions: tuple[ClockAction, ...]) -> None:
    """Apply the SyncEngine's actions, in order (nothing at all if the clock is observed)."""
    if not clock.can_adjust:
        return
    for action in actions:
        match action:
            case SetFrequency(ppm):
                clock.adjust_frequency(ppm)
            case Step(offset):
                clock.step(offset)
            case Slew(offset):
                clock.slew(offset)
            case SetStatus(synced, maxerror, esterror, leap):
                clock.set_sync_status(synced, maxerror, esterror, leap)
            case SetTai(offset):
                clock.set_tai_offset(offset)
