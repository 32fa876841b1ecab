"""A simulated clock: the `Clock` interface against a true simulated time.

The oscillator has a frequency error (ppm, positive: it runs fast) that wanders as a random
walk, one normal step of `wander` (fractional frequency) per simulated second, plus a daily
thermal cycle if asked (`thermal_ppm`: the amplitude of a sine with a period of a day). On top of it
the disciplined corrections act as in the Linux kernel, which this models rather than an
ideal clock:

- the frequency correction (`adjust_frequency`, ADJ_FREQUENCY) multiplies the rate. Since
  Linux 4.19 do_adjtimex() updates the timekeeper's multiplier at once for ADJ_FREQUENCY
  and ADJ_TICK (timekeeping_advance(TK_ADV_FREQ)), the default here; before it (`hz` > 0,
  e.g. 250 for a 3.10 kernel) the new rate waits for the next tick;
- beyond the kernel's +-500 ppm of ADJ_FREQUENCY the correction is carried by the tick
  length as well (ADJ_TICK: microseconds per 1/USER_HZ s tick, within +-10 % of 10000, so
  100 ppm a unit), as `SystemClock` does it: `tick_us` and `correction_ppm` read back as
  the kernel's `tick` and `freq`, and every stretch of time run faster than 500 ppm is
  recorded (`fast_periods`) -- the fast slew of a start, which a report keeps apart;
- a step moves the clock at once (and, as ADJ_SETOFFSET, moves its time against the
  uninterruptible clock: `boot_epoch_ns`, as the kernel's own leap seconds do);
- `slew` is adjtime(): the offset is worked off at 500 ppm on top of everything else, and
  what is left keeps being applied until someone cancels it;
- the kernel PLL offset (ADJ_OFFSET, written only while STA_PLL is on) is worked off every
  second by 1/2**(SHIFT_PLL + time constant) of what is left, whatever the status bits say
  by then: a previous daemon's offset goes on moving the clock until it is zeroed;
- the status bits are a set of names (`flags`); `set_sync_status` writes UNSYNC/INS/DEL and
  turns every discipline bit off, as SystemClock does.

What another process can do to the kernel is here too (`pll_adjust`, `write_status`, and the
Clock setters themselves), so tests can play the daemon that was there before, or a meddler.

The simulation owns true time and moves it forward with `advance_to`; the phase (local minus
true) is kept in float seconds, which resolves ~1e-17 s around the offsets of interest, and
`now()` adds it to the epoch in integer nanoseconds.

Leap seconds as Linux handles them (kernel/time/ntp.c, second_overflow): a status with
STA_INS (leap 1) arms the kernel for the end of the current UTC day *of the local clock*,
whichever day that is; when the local clock reaches the following midnight it is set back
one second (23:59:59 is repeated: that is 23:59:60), and the kernel moves TAI-UTC by one.
STA_DEL (leap 2): when the local clock reaches 23:59:59 it jumps to midnight. After either,
the kernel waits (TIME_WAIT) until the flag is cleared, so it never acts twice on one
arming. Clearing the flag before midnight disarms it. (Linux also has TIME_OOP for the
duration of the repeated second; nothing here reads it, so it is folded into WAIT.)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable

from pyntpd.clock.base import (
    DISCIPLINE_FLAGS,
    FAST_FREQUENCY_PPM,
    MAX_ERROR_S,
    MAX_FREQUENCY_PPM,
    NOMINAL_TICK_US,
    NS_PER_S,
    SLEW_RATE,
    ClockState,
    TakeOver,
    split_frequency,
    status_flags,
    tick_ppm,
)

DEFAULT_EPOCH_NS = 1_800_000_000 * NS_PER_S  # 2027-01-15, inside NTP era 0
DAY = 86_400
# Within a nanosecond of the leap's instant counts as there: float rounding must never
# leave the clock a hair short of midnight with no time left to advance.
LEAP_TOLERANCE = 1e-9
SHIFT_PLL = 2  # Linux include/linux/timex.h
PLL_TIME_CONSTANT = 2  # the kernel's default time_constant
HZ = 250  # a common CONFIG_HZ: an old kernel's frequency change waits up to 1/HZ s
class SimClock:
    can_adjust = True
    kernel_time = False  # the kernel's packet timestamps are on another timescale

    def __init__(
        self,
        *,
        offset: float = 0.0,
        frequency_ppm: float = 0.0,
        wander: float = 0.0,
        rng: random.Random | None = None,
        epoch_ns: int = DEFAULT_EPOCH_NS,
        on_second: Callable[[int, float], None] | None = None,
        kernel_frequency_ppm: float = 0.0,
        adjtime_left: float = 0.0,
        pll_offset: float = 0.0,
        flags: Iterable[str] = ("UNSYNC",),
        time_constant: int = PLL_TIME_CONSTANT,
        hz: int = 0,
        thermal_ppm: float = 0.0,
        thermal_phase: float = 0.0,
        max_frequency_ppm: float = FAST_FREQUENCY_PPM,
    ) -> None:
        self.true = 0.0  # simulated true time, s since the epoch
        self.phase = offset  # local minus true, s
        self.natural = frequency_ppm * 1e-6  # the oscillator's own frequency error
        self.wander = wander
        self.rng = rng or random.Random(0)
        self.epoch_ns = epoch_ns
        self.thermal_ppm = thermal_ppm  # amplitude of the daily cycle
        self.thermal_phase = thermal_phase  # rad at true time 0
        self.hz = hz  # 0: a frequency change takes effect at once (Linux >= 4.19)
        # What the clock accepts: the kernel's 500 ppm, or (default) with the tick as well.
        self.max_frequency_ppm = max_frequency_ppm
        # What the kernel holds (a previous daemon may have left any of it): the tick and
        # the frequency as adjtimex reads them, and the rate in force (`_effective_ppm`),
        # which follows them at the next tick.
        self.tick_us, self.correction_ppm = split_frequency(kernel_frequency_ppm)
        self._effective_ppm = kernel_frequency_ppm
        self._pending: tuple[float, float] | None = None  # (true time, ppm) at the next tick
        self.fast_periods: list[list[float]] = []  # [start, end] true times beyond 500 ppm
        self.slew_left = adjtime_left
        self.pll_offset = pll_offset  # s still to be worked off by the kernel PLL
        self.flags = frozenset(flags)
        self.time_constant = time_constant
        self._pll_rate = 0.0  # s/s: this second's share of the PLL offset (from the next)
        self.on_second = on_second  # called with (second, phase) at every whole second
        self.steps: list[float] = []  # every step, ours or anyone's
        self._set_total = 0.0  # s the clock was set by (steps and leaps): its boot epoch
        self.synchronised = False
        self.maxerror = self.esterror = MAX_ERROR_S
        self.leap = 3
        self.tai = 0  # the kernel's TAI-UTC
        self.leap_state = "OK"  # Linux's time_state: OK, INS, DEL, WAIT
        self._leap_at: int | None = None  # the local midnight the kernel is armed for
        self.leap_events: list[tuple[float, str]] = []  # (true time, what the kernel did)

    # --- the simulation's side ------------------------------------------------------

    @property
    def frequency_ppm(self) -> float:
        """The correction the kernel holds, tick and frequency together (ppm)."""
        return tick_ppm(self.tick_us) + self.correction_ppm

    @property
    def oscillator(self) -> float:
        """The oscillator's own frequency error now (s/s): the walk and the thermal cycle."""
        if not self.thermal_ppm:
            return self.natural
        cycle = math.sin(2 * math.pi * math.floor(self.true) / DAY + self.thermal_phase)
        return self.natural + self.thermal_ppm * 1e-6 * cycle

    @property
    def rate_error(self) -> float:
        """How fast local time gains on true time now, without slew (s/s)."""
        f = self._effective_ppm * 1e-6
        return (1.0 + self.oscillator) * (1.0 + f) - 1.0

    @property
    def unset_phase(self) -> float:
        """The phase less every step and leap: what only the rate has done to the clock."""
        return self.phase - self._set_total

    def advance_to(self, true: float) -> None:
        while self.true < true:
            next_second = math.floor(self.true) + 1.0
            end = min(true, next_second)
            if self._pending is not None:
                at, ppm = self._pending
                if at <= self.true:
                    self._take_effect(ppm)
                    continue
                end = min(end, at)
            trigger = self._leap_trigger()
            if trigger is not None:
                left = trigger - (self.true + self.phase)
                if left <= LEAP_TOLERANCE:
                    self._leap()
                    continue
                end = min(end, self.true + left / self._local_rate())
            self._integrate(end - self.true)
            self.true = end
            if end == next_second:
                self._pll_share()
                if self.wander:
                    self.natural += self.rng.gauss(0.0, self.wander)
                if self.on_second is not None:
                    self.on_second(int(end), self.phase)

    def _take_effect(self, ppm: float) -> None:
        self._pending = None
        was_fast = abs(self._effective_ppm) > MAX_FREQUENCY_PPM
        self._effective_ppm = ppm
        fast = abs(ppm) > MAX_FREQUENCY_PPM
        if fast and not was_fast:
            self.fast_periods.append([self.true, math.inf])
        elif was_fast and not fast and self.fast_periods:
            self.fast_periods[-1][1] = self.true

    def _pll_share(self) -> None:
        # Linux second_overflow(): the next second's tick carries this much of the offset.
        share = self.pll_offset / 2 ** (SHIFT_PLL + self.time_constant)
        self.pll_offset -= share
        self._pll_rate = share

    def _integrate(self, dt: float) -> None:
        self.phase += (self.rate_error + self._pll_rate) * dt
        if self.slew_left:
            amount = min(abs(self.slew_left), SLEW_RATE * dt)
            amount = math.copysign(amount, self.slew_left)
            self.phase += amount
            self.slew_left -= amount

    def _local_rate(self) -> float:
        """How fast the local clock runs now, slew included (s/s)."""
        slew = math.copysign(SLEW_RATE, self.slew_left) if self.slew_left else 0.0
        return 1.0 + self.rate_error + self._pll_rate + slew

    def _leap_trigger(self) -> float | None:
        """Local time since the epoch (s) at which the armed kernel acts, if it is armed
        and the clock has not passed that point (a step over midnight skips it, as the
        kernel compares whole seconds with its target and never sees it)."""
        if self._leap_at is None or self.leap_state not in ("INS", "DEL"):
            return None
        at = self._leap_at - (1 if self.leap_state == "DEL" else 0)
        trigger = (at * NS_PER_S - self.epoch_ns) / NS_PER_S
        return trigger if self.true + self.phase < trigger + LEAP_TOLERANCE else None

    def _leap(self) -> None:
        if self.leap_state == "INS":
            self.phase -= 1.0
            self._set_total -= 1.0
            self.tai += 1
            self.leap_events.append((self.true, "inserted"))
        else:
            self.phase += 1.0
            self._set_total += 1.0
            self.tai -= 1
            self.leap_events.append((self.true, "deleted"))
        self.leap_state = "WAIT"
        self._leap_at = None

    def _kernel_status(self) -> None:
        """Linux's state machine on a status change (it acts at the next second; here at once)."""
        ins, dele = self.leap == 1, self.leap == 2
        still_wanted = {"INS": ins, "DEL": dele}.get(self.leap_state)
        if still_wanted is False:
            self.leap_state, self._leap_at = "OK", None
            self.leap_events.append((self.true, "disarmed"))
        elif self.leap_state == "WAIT" and not (ins or dele):
            self.leap_state = "OK"
        if self.leap_state == "OK" and (ins or dele):
            local = (self.epoch_ns + round((self.true + self.phase) * NS_PER_S)) // NS_PER_S
            self._leap_at = (local // DAY + 1) * DAY
            self.leap_state = "INS" if ins else "DEL"
            self.leap_events.append((self.true, f"armed {self.leap_state}"))

    def true_at_local(self, local_s: float) -> float:
        """When (true time) the local clock will read `local_s`, at the current rate and,
        from the next tick, at the one just set."""
        local_now = self.epoch_ns / NS_PER_S + self.true + self.phase
        if self._pending is None:
            return self.true + (local_s - local_now) / (1.0 + self.rate_error)
        at, ppm = self._pending
        local_at = local_now + (at - self.true) * (1.0 + self.rate_error)
        if local_s <= local_at:
            return self.true + (local_s - local_now) / (1.0 + self.rate_error)
        rate = (1.0 + self.oscillator) * (1.0 + ppm * 1e-6)
        return at + (local_s - local_at) / rate

    # --- what any process may do to the kernel (a previous daemon, a meddler) --------

    def pll_adjust(self, offset_s: float) -> None:
        """ADJ_OFFSET: hand the kernel PLL an offset; ignored unless STA_PLL is on."""
        if "PLL" in self.flags:
            self.pll_offset = offset_s

    def write_status(self, flags: Iterable[str]) -> None:
        """ADJ_STATUS with these bits (the leap state machine follows `set_sync_status`)."""
        self.flags = frozenset(flags)

    # --- the Clock interface --------------------------------------------------------

    def now(self) -> int:
        return self.epoch_ns + round((self.true + self.phase) * NS_PER_S)

    def adjust_frequency(self, ppm: float) -> int:
        if self.max_frequency_ppm <= MAX_FREQUENCY_PPM:
            self.tick_us = NOMINAL_TICK_US
            self.correction_ppm = max(-MAX_FREQUENCY_PPM, min(MAX_FREQUENCY_PPM, ppm))
        else:
            self.tick_us, self.correction_ppm = split_frequency(ppm)
        if self.hz <= 0:
            self._take_effect(self.frequency_ppm)
            return self.now()
        # An old kernel: the new rate starts with the next tick; the call returns now.
        tick = math.ceil(self.true * self.hz - 1e-9)
        self._pending = (tick / self.hz, self.frequency_ppm)
        return self.now()

    def slew(self, offset_s: float) -> int:
        self.slew_left = offset_s
        return self.now()

    def step(self, offset_s: float) -> int:
        self.phase += offset_s
        self._set_total += offset_s
        self.steps.append(offset_s)
        return self.now()

    def set_sync_status(
        self, synchronised: bool, maxerror_s: float, esterror_s: float, leap: int
    ) -> int:
        self.synchronised = synchronised
        self.maxerror, self.esterror, self.leap = maxerror_s, esterror_s, leap
        self.flags = status_flags(synchronised, leap)
        self._kernel_status()
        return self.now()

    def set_tai_offset(self, tai_utc: int) -> int:
        self.tai = tai_utc
        return self.now()

    def read_back(self) -> ClockState:
        return ClockState(
            time_ns=self.now(),
            frequency_ppm=self.frequency_ppm,
            flags=self.flags,
            pll_offset_s=self.pll_offset,
            slew_s=self.slew_left,
            maxerror_s=self.maxerror,
            boot_epoch_ns=self.epoch_ns + round(self._set_total * NS_PER_S),
        )

    def take_over(self) -> TakeOver:
        found = self.read_back()
        slew, self.slew_left = self.slew_left, 0.0
        if found.pll_offset_s or found.discipline_flags:
            self.write_status({"PLL", "UNSYNC"})
            self.pll_adjust(0.0)
            self.write_status({"UNSYNC"})
            # Turning STA_PLL off also disarms a leap second (Linux resets time_state).
            self.leap = 3
            self._kernel_status()
        return TakeOver(found, self.now(), slew_s=slew, pll_offset_s=found.pll_offset_s,
                        flags=found.flags & DISCIPLINE_FLAGS)

    def hand_back(self, frequency_ppm: float) -> int:
        return self.adjust_frequency(frequency_ppm)
