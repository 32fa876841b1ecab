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
- Every adjustment returns when it took effect: the clock's own time, in nanoseconds, read
  as part of the same call (the kernel returns it with every adjtimex), after the change.
- `read_back()` says what is in force now (`ClockState`): the frequency, the status bits,
  any correction still running (a kernel PLL offset, an adjtime() remainder) and where the
  clock stands against an uninterruptible one, so that a step nobody told us about shows.
- `take_over()` (at start) stops whatever correction a previous daemon left running and
  reports what it found; `hand_back(ppm)` (on every way out) leaves the clock running at
  the frequency estimate with none of our corrections in progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pyntpd.types import ClockAction, SetFrequency, SetStatus, SetTai, Slew, Step

NS_PER_S = 1_000_000_000
MAX_FREQUENCY_PPM = 500.0  # the kernel's frequency range, and ntpd's frequency tolerance
SLEW_RATE = 500e-6  # seconds of slew per second, as Linux adjtime()
MAX_ERROR_S = 16.0  # the kernel's NTP_PHASE_LIMIT: at this maxerror it sets STA_UNSYNC
# The tick length (adjtimex ADJ_TICK, `tick`: microseconds per 1/USER_HZ s): beyond the
# kernel's 500 ppm of ADJ_FREQUENCY it carries a correction in steps of 100 ppm.
USER_HZ = 100
NOMINAL_TICK_US = 1_000_000 // USER_HZ  # adjtimex's `tick` at no correction
PPM_PER_TICK_US = 1e6 / NOMINAL_TICK_US  # 100 ppm per microsecond of tick
# Tick lengths within 1/12 of the nominal one, as chronyd allows itself (the kernel takes
# 10 %): 83,333 ppm with the frequency's own 500 ppm on top.
MAX_TICK_DELTA_US = NOMINAL_TICK_US // 12
FAST_FREQUENCY_PPM = MAX_TICK_DELTA_US * PPM_PER_TICK_US + MAX_FREQUENCY_PPM


def split_frequency(ppm: float) -> tuple[int, float]:
    """The kernel's (tick, freq) for a correction of `ppm`, clamped to what they can
    carry: the tick stays nominal within +-500 ppm, and beyond it takes the whole hundreds,
    leaving freq within +-50 ppm."""
    ppm = max(-FAST_FREQUENCY_PPM, min(FAST_FREQUENCY_PPM, ppm))
    if abs(ppm) <= MAX_FREQUENCY_PPM:
        return NOMINAL_TICK_US, ppm
    delta = max(-MAX_TICK_DELTA_US, min(MAX_TICK_DELTA_US, round(ppm / PPM_PER_TICK_US)))
    freq = max(-MAX_FREQUENCY_PPM, min(MAX_FREQUENCY_PPM, ppm - delta * PPM_PER_TICK_US))
    return NOMINAL_TICK_US + delta, freq


def tick_ppm(tick_us: int) -> float:
    return (tick_us - NOMINAL_TICK_US) * PPM_PER_TICK_US



# Kernel status bits (by their timex.h names without STA_) that make the kernel discipline
# the clock on its own: a previous daemon's PLL/FLL/PPS mode would fight ours.
DISCIPLINE_FLAGS = frozenset({"PLL", "FLL", "PPSFREQ", "PPSTIME", "FREQHOLD"})
# The bits a daemon writes; the rest (NANO, PPSSIGNAL, CLOCKERR, ...) are the kernel's.
CONTROL_FLAGS = DISCIPLINE_FLAGS | {"UNSYNC", "INS", "DEL"}


class ClockError(OSError):
    """Adjusting the clock failed (a clock_adjtime call, or a simulated one); `errno` says
    why. The adjustment did not take effect."""


class ClockPermissionError(ClockError, PermissionError):
    """No CAP_SYS_TIME: the clock can be read but not disciplined."""


def status_flags(synchronised: bool, leap: int) -> frozenset[str]:
    """The status bits `set_sync_status` writes: every discipline bit off."""
    flags = set()
    if not synchronised or leap == 3:
        flags.add("UNSYNC")
    if leap == 1:
        flags.add("INS")
    elif leap == 2:
        flags.add("DEL")
    return frozenset(flags)


@dataclass(frozen=True, slots=True)
class ClockState:
    """The clock read back: what is in force at `time_ns`."""

    time_ns: int  # the clock's time when it was read
    frequency_ppm: float
    flags: frozenset[str] = frozenset({"UNSYNC"})  # kernel status bits by name
    pll_offset_s: float = 0.0  # kernel PLL offset still being worked off (ADJ_OFFSET)
    slew_s: float = 0.0  # adjtime() remainder still being worked off
    maxerror_s: float = MAX_ERROR_S
    # The clock's time minus an uninterruptible clock's (Linux CLOCK_BOOTTIME: counts
    # suspend, slewed alike): constant while the clock runs, moved only by a step (ours,
    # someone else's, or the kernel's own leap second). `boot_epoch_error_ns` bounds how far
    # reading the two clocks one after the other may have put it off.
    boot_epoch_ns: int = 0
    boot_epoch_error_ns: int = 0

    @property
    def discipline_flags(self) -> frozenset[str]:
        return self.flags & DISCIPLINE_FLAGS

    @property
    def control_flags(self) -> frozenset[str]:
        return self.flags & CONTROL_FLAGS

    @property
    def synchronised(self) -> bool:
        return "UNSYNC" not in self.flags

    @property
    def leap(self) -> int:
        """The leap second the kernel is armed with: 1 insert, 2 delete, else 0."""
        if "INS" in self.flags:
            return 1
        return 2 if "DEL" in self.flags else 0


@dataclass(frozen=True, slots=True)
class TakeOver:
    """What `take_over()` found and stopped: the clock as the previous owner left it."""

    found: ClockState
    at_ns: int  # when the clock was ours
    slew_s: float = 0.0  # the adjtime() remainder cancelled
    pll_offset_s: float = 0.0  # the kernel PLL offset zeroed
    flags: frozenset[str] = frozenset()  # the kernel discipline bits turned off

    @property
    def frequency_ppm(self) -> float:
        """The frequency the kernel was running at (left as it was): where to start from
        when there is no drift file."""
        return self.found.frequency_ppm

    def findings(self) -> list[str]:
        """One line per correction someone else left running, for the log."""
        lines = []
        if self.pll_offset_s:
            lines.append(f"kernel PLL offset {self.pll_offset_s * 1e3:+.3f} ms left by another"
                         " daemon: cleared")
        if self.slew_s:
            lines.append(f"adjtime() slew of {self.slew_s * 1e3:+.3f} ms still outstanding:"
                         " cancelled")
        if self.flags:
            names = ", ".join(f"STA_{name}" for name in sorted(self.flags))
            lines.append(f"kernel discipline left on ({names}): turned off")
        return lines


@runtime_checkable
class Clock(Protocol):
    """A clock that the daemon reads and (unless `can_adjust` is False) disciplines."""

    @property
    def kernel_time(self) -> bool:
        """True if this clock is the kernel's CLOCK_REALTIME, so that the kernel's packet
        timestamps (SO_TIMESTAMPNS, SO_TIMESTAMPING) are on its timescale."""
        ...

    @property
    def can_adjust(self) -> bool:
        """False for a clock that is only observed: the daemon never calls the setters."""
        ...

    def now(self) -> int:
        """The local time, integer nanoseconds since the Unix epoch."""
        ...

    def adjust_frequency(self, ppm: float) -> int:
        """Set the absolute frequency correction (positive: the clock runs faster)."""
        ...

    def slew(self, offset_s: float) -> int:
        """Start moving the clock by `offset_s` gradually (adjtime-style, bounded rate)."""
        ...

    def step(self, offset_s: float) -> int:
        """Move the clock by `offset_s` at once (positive: forward). Returns the time after."""
        ...

    def set_sync_status(
        self, synchronised: bool, maxerror_s: float, esterror_s: float, leap: int
    ) -> int:
        """Report synchronisation state (kernel STA_UNSYNC, maxerror, esterror, leap)."""
        ...

    def set_tai_offset(self, tai_utc: int) -> int:
        """Tell the kernel TAI-UTC in seconds (from the leap second list)."""
        ...

    def read_back(self) -> ClockState:
        """What is in force now (read-only)."""
        ...

    def take_over(self) -> TakeOver:
        """Stop the corrections someone else left running (PLL offset, adjtime remainder,
        kernel discipline bits); the frequency is left as it is."""
        ...

    def hand_back(self, frequency_ppm: float) -> int:
        """Leave the clock at `frequency_ppm` with none of our corrections in progress
        (an adjtime() slew of -q's is left to finish, as ntpd -q does)."""
        ...


@dataclass(frozen=True, slots=True)
class Applied:
    """What `apply_actions` carried out: each action that took effect, with the clock's
    time when it did, in order; and the one that failed (nothing after it was tried)."""

    done: tuple[tuple[ClockAction, int], ...] = ()
    failed: ClockAction | None = None
    error: ClockError | None = None

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def actions(self) -> tuple[ClockAction, ...]:
        return tuple(action for action, _ in self.done)


def apply_one(clock: Clock, action: ClockAction) -> int:
    match action:
        case SetFrequency(ppm):
            return clock.adjust_frequency(ppm)
        case Step(offset):
            return clock.step(offset)
        case Slew(offset):
            return clock.slew(offset)
        case SetStatus(synced, maxerror, esterror, leap):
            return clock.set_sync_status(synced, maxerror, esterror, leap)
        case SetTai(offset):
            return clock.set_tai_offset(offset)
    raise TypeError(f"not a clock action: {action!r}")


def apply_actions(clock: Clock, actions: tuple[ClockAction, ...]) -> Applied:
    """Apply the SyncEngine's actions, in order (nothing at all if the clock is observed).

    Stops at the first that fails: the later ones were planned on top of it (a frequency
    after a step). Never raises ClockError: the caller learns from `Applied` what happened,
    and must tell the engine (its model assumed every action took effect).
    """
    if not clock.can_adjust:
        return Applied()
    done: list[tuple[ClockAction, int]] = []
    for action in actions:
        try:
            at = apply_one(clock, action)
        except ClockError as exc:
            return Applied(tuple(done), action, exc)
        done.append((action, at))
    return Applied(tuple(done))
