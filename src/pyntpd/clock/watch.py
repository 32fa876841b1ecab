"""ClockWatch: apply the engine's actions, then notice anyone else touching the clock.

Another process may change the kernel's frequency or status (an ntpd or chronyd started by
mistake, a VM agent, `adjtimex -f`), start a correction of its own (adjtime(), the kernel
PLL) or set the time (`date -s`, ntpdate -b). The engine's correction model assumes the
clock does exactly what it was told, so each of these would quietly mislead it.

The watch remembers what we told the clock (`Expected`), and `check()` reads it back and
compares: a difference is a `Meddling`, counted by kind and logged once per kind. `retake()`
puts our frequency and status back and cancels foreign corrections; a foreign step cannot
be undone (the time may even be right now), so the caller must tell the engine about it as
of a step of its own, and move its timers, exactly as after ours.

Expected changes: the kernel's own leap second (with INS or DEL armed, a step of -1 or +1 s)
and the kernel setting STA_UNSYNC once maxerror reached 16 s are not meddling.

The driver calls `check()` before each engine update (so a foreign step reaches the model
before the next sample does) and `apply()` instead of `apply_actions`, which also keeps the
expectation in step with what took effect (and only that: a failed action changes nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from pyntpd.logonce import LOGGER_NAME, LogOnce
from pyntpd.types import ClockAction, SetFrequency, SetStatus, Slew, Step

from .base import (
    DISCIPLINE_FLAGS,
    MAX_ERROR_S,
    MAX_FREQUENCY_PPM,
    NS_PER_S,
    Applied,
    Clock,
    ClockError,
    ClockState,
    apply_actions,
    status_flags,
)

log = logging.getLogger(LOGGER_NAME)

# The kernel keeps the frequency in units of 2**-16 ppm and may round it once each way.
FREQUENCY_TOLERANCE_PPM = 1e-3
# Reading the clock against the uninterruptible one is good to microseconds (the tightest
# of a few tries); anything moved by more than this was set.
STEP_TOLERANCE_S = 1e-3
LEAP_TOLERANCE_S = 0.01  # a kernel leap second shows as exactly one second, give or take


@dataclass(frozen=True, slots=True)
class Expected:
    """What we have told the clock, so what it should read back."""

    frequency_ppm: float
    flags: frozenset[str]  # the control bits (UNSYNC, INS, DEL; never a discipline bit)
    boot_epoch_ns: int
    maxerror_s: float = MAX_ERROR_S
    esterror_s: float = MAX_ERROR_S
    slewing: bool = False  # we started an adjtime() slew (-q): a remainder is ours
    leap_done: bool = False  # the kernel has made the leap second we armed


@dataclass(frozen=True, slots=True)
class Meddling:
    """What someone else changed since the clock was last checked."""

    at_ns: int  # when it was noticed (the clock's time, after any step)
    frequency: tuple[float, float] | None = None  # (ours, found) ppm
    status: tuple[frozenset[str], frozenset[str]] | None = None  # (ours, found)
    step_s: float = 0.0  # the clock was set by this much
    pll_offset_s: float = 0.0  # a kernel PLL offset someone started
    slew_s: float = 0.0  # an adjtime() remainder someone started

    @property
    def kinds(self) -> tuple[str, ...]:
        kinds = []
        if self.frequency is not None:
            kinds.append("frequency")
        if self.status is not None:
            kinds.append("status")
        if self.step_s:
            kinds.append("step")
        if self.pll_offset_s:
            kinds.append("pll")
        if self.slew_s:
            kinds.append("slew")
        return tuple(kinds)

    def describe(self, kind: str) -> str:
        if kind == "frequency" and self.frequency is not None:
            ours, found = self.frequency
            return f"frequency changed to {found:+.3f} ppm (ours {ours:+.3f} ppm)"
        if kind == "status" and self.status is not None:
            ours, found = self.status

            def names(flags: frozenset[str]) -> str:
                return "|".join(f"STA_{f}" for f in sorted(flags)) or "0"
            return f"status changed to {names(found)} (ours {names(ours)})"
        if kind == "step":
            return f"clock stepped by {self.step_s:+.6f} s"
        if kind == "pll":
            return f"kernel PLL offset of {self.pll_offset_s * 1e3:+.3f} ms started"
        return f"adjtime() slew of {self.slew_s * 1e3:+.3f} ms started"


@dataclass
class ClockWatch:
    """Applies actions to `clock` and notices changes that were not ours."""

    clock: Clock
    expected: Expected | None = None  # None: adopt what the clock reads at the first check
    counts: dict[str, int] = field(default_factory=dict)  # meddlings noticed, by kind
    log_once: LogOnce = field(default_factory=lambda: LogOnce(log))

    def __post_init__(self) -> None:
        if self.expected is None and self.clock.can_adjust:
            self.expected = self._adopt(self.clock.read_back())

    @staticmethod
    def _adopt(state: ClockState) -> Expected:
        # Whatever is in force now is ours from here on (after take_over, or a hand-over
        # from a previous engine in this process).
        return Expected(state.frequency_ppm, state.control_flags - DISCIPLINE_FLAGS,
                        state.boot_epoch_ns, state.maxerror_s, slewing=bool(state.slew_s))

    # --- our own changes ------------------------------------------------------------

    def apply(self, actions: tuple[ClockAction, ...]) -> Applied:
        """Apply the engine's actions (see `apply_actions`); the expectation follows each
        one that took effect, and nothing else."""
        applied = apply_actions(self.clock, actions)
        if self.expected is not None:
            # Beyond the kernel's 500 ppm only a clock that carries it in the tick length.
            limit = getattr(self.clock, "max_frequency_ppm", MAX_FREQUENCY_PPM)
            for action, _ in applied.done:
                self.expected = self._after(self.expected, action, limit)
        return applied

    @staticmethod
    def _after(expected: Expected, action: ClockAction,
               limit: float = MAX_FREQUENCY_PPM) -> Expected:
        match action:
            case SetFrequency(ppm):
                ppm = max(-limit, min(limit, ppm))
                return replace(expected, frequency_ppm=ppm)
            case Step(offset):
                return replace(expected,
                               boot_epoch_ns=expected.boot_epoch_ns + round(offset * NS_PER_S))
            case Slew(offset):
                return replace(expected, slewing=offset != 0.0)
            case SetStatus(synced, maxerror, esterror, leap):
                flags = status_flags(synced, leap)
                # Linux makes one leap second per arming; disarmed, the next may come.
                done = expected.leap_done and bool(flags & {"INS", "DEL"})
                return replace(expected, flags=flags, maxerror_s=maxerror,
                               esterror_s=esterror, leap_done=done)
        return expected

    # --- everybody else's -----------------------------------------------------------

    def check(self) -> Meddling | None:
        """Read the clock back; what differs from what we told it, counted and logged
        (once per kind). The expectation then follows a foreign step (it is the clock's
        time now); everything else stays ours until `retake()` puts it back."""
        if not self.clock.can_adjust or self.expected is None:
            return None
        state = self.clock.read_back()
        exp = self.expected
        frequency = status = None
        if abs(state.frequency_ppm - exp.frequency_ppm) > FREQUENCY_TOLERANCE_PPM:
            frequency = (exp.frequency_ppm, state.frequency_ppm)
        found = state.control_flags
        if found != exp.flags and not self._kernel_unsync(exp, state):
            status = (exp.flags, found)
        moved = (state.boot_epoch_ns - exp.boot_epoch_ns) / NS_PER_S
        step = self._foreign_step(exp, state, moved)
        if step:
            # The clock's time is what it is now; only a further step is news.
            exp = replace(exp, boot_epoch_ns=state.boot_epoch_ns)
        elif self._kernel_leap(exp, moved):
            exp = replace(exp, boot_epoch_ns=state.boot_epoch_ns, leap_done=True)
        slew = 0.0 if exp.slewing else state.slew_s
        if exp.slewing and not state.slew_s:
            exp = replace(exp, slewing=False)  # -q's slew is done
        self.expected = exp
        meddling = Meddling(state.time_ns, frequency, status, step, state.pll_offset_s, slew)
        if not meddling.kinds:
            return None
        for kind in meddling.kinds:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.log_once.warning(
                ("meddling", kind),
                "another process changed the clock: %s; taking control back (further"
                " changes of this kind are counted, not logged)", meddling.describe(kind))
        return meddling

    def _kernel_unsync(self, exp: Expected, state: ClockState) -> bool:
        # The kernel sets STA_UNSYNC itself once maxerror has grown to 16 s.
        return (state.control_flags == exp.flags | {"UNSYNC"}
                and state.maxerror_s >= MAX_ERROR_S)

    @staticmethod
    def _foreign_step(exp: Expected, state: ClockState, moved: float) -> float:
        slack = STEP_TOLERANCE_S + state.boot_epoch_error_ns / NS_PER_S
        if abs(moved) <= slack or ClockWatch._kernel_leap(exp, moved):
            return 0.0
        return moved

    @staticmethod
    def _kernel_leap(exp: Expected, moved: float) -> bool:
        # The kernel's own leap second, armed by us: UTC repeated (or skipped) a second and
        # the sources did the same; nothing for the engine to account for.
        if exp.leap_done:
            return False
        return (("INS" in exp.flags and abs(moved + 1.0) <= LEAP_TOLERANCE_S)
                or ("DEL" in exp.flags and abs(moved - 1.0) <= LEAP_TOLERANCE_S))

    def retake(self, meddling: Meddling) -> None:
        """Put our frequency and status back and cancel corrections we did not start.
        A failure is logged once; the next check finds the clock still not ours."""
        exp = self.expected
        if exp is None:
            return
        foreign_discipline = (meddling.status is not None
                              and bool(meddling.status[1] & DISCIPLINE_FLAGS))
        try:
            if meddling.pll_offset_s or meddling.slew_s or foreign_discipline:
                self.clock.take_over()  # zero the PLL offset and adjtime(), bits off
                self.expected = exp = replace(exp, slewing=False)
            if meddling.frequency is not None:
                self.clock.adjust_frequency(exp.frequency_ppm)
            if meddling.status is not None or meddling.pll_offset_s or meddling.slew_s:
                # (take_over() leaves the status at bare STA_UNSYNC: ours goes back too.)
                leap = 1 if "INS" in exp.flags else 2 if "DEL" in exp.flags else 0
                self.clock.set_sync_status("UNSYNC" not in exp.flags, exp.maxerror_s,
                                           exp.esterror_s, leap)
        except ClockError as exc:
            self.log_once.error(("retake", exc.errno),
                                "cannot take the clock back: %s", exc)
