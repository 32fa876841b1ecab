"""A simulated clock: the `Clock` interface against a true simulated time.

The oscillator has a frequency error (ppm, positive: it runs fast) that wanders as a random
walk, one normal step of `wander` (fractional frequency) per simulated second. On top of it
the disciplined corrections act as on Linux: the frequency correction multiplies the rate
(`adjust_frequency`), a step moves the clock at once, and `slew` is adjtime(): the offset is
worked off at 500 ppm on top of everything else.

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
from collections.abc import Callable

from pyntpd.clock.base import MAX_FREQUENCY_PPM, NS_PER_S, SLEW_RATE

DEFAULT_EPOCH_NS = 1_800_000_000 * NS_PER_S  # 2027-01-15, inside NTP era 0
DAY = 86_400
# Within a nanosecond of the leap's instant counts as there: float rounding must never
# leave the clock a hair short of midnight with no time left to advance.
LEAP_TOLERANCE = 1e-9


class SimClock:
    can_adjust = True

    def __init__(
        self,
        *,
        offset: float = 0.0,
        frequency_ppm: float = 0.0,
        wander: float = 0.0,
        rng: random.Random | None = None,
        epoch_ns: int = DEFAULT_EPOCH_NS,
        on_second: Callable[[int, float], None] | None = None,
    ) -> None:
        self.true = 0.0  # simulated true time, s since the epoch
        self.phase = offset  # local minus true, s
        self.natural = frequency_ppm * 1e-6  # the oscillator's own frequency error
        self.wander = wander
        self.rng = rng or random.Random(0)
        self.epoch_ns = epoch_ns
        self.correction_ppm = 0.0
        self.slew_left = 0.0
        self.on_second = on_second  # called with (second, phase) at every whole second
        self.steps: list[float] = []
        self.synchronised = False
        self.maxerror = self.esterror = 16.0
        self.leap = 3
        self.tai = 0  # the kernel's TAI-UTC
        self.leap_state = "OK"  # Linux's time_state: OK, INS, DEL, WAIT
        self._leap_at: int | None = None  # the local midnight the kernel is armed for
        self.leap_events: list[tuple[float, str]] = []  # (true time, what the kernel did)

    # --- the simulation's side ------------------------------------------------------

    @property
    def rate_error(self) -> float:
        """How fast local time gains on true time now, without slew (s/s)."""
        f = self.correction_ppm * 1e-6
        return (1.0 + self.natural) * (1.0 + f) - 1.0

    def advance_to(self, true: float) -> None:
        while self.true < true:
            next_second = math.floor(self.true) + 1.0
            end = min(true, next_second)
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
                if self.wander:
                    self.natural += self.rng.gauss(0.0, self.wander)
                if self.on_second is not None:
                    self.on_second(int(end), self.phase)

    def _integrate(self, dt: float) -> None:
        self.phase += self.rate_error * dt
        if self.slew_left:
            amount = min(abs(self.slew_left), SLEW_RATE * dt)
            amount = math.copysign(amount, self.slew_left)
            self.phase += amount
            self.slew_left -= amount

    def _local_rate(self) -> float:
        """How fast the local clock runs now, slew included (s/s)."""
        slew = math.copysign(SLEW_RATE, self.slew_left) if self.slew_left else 0.0
        return 1.0 + self.rate_error + slew

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
            self.tai += 1
            self.leap_events.append((self.true, "inserted"))
        else:
            self.phase += 1.0
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
        """When (true time) the local clock will read `local_s`, at the current rate."""
        local_now = self.epoch_ns / NS_PER_S + self.true + self.phase
        return self.true + (local_s - local_now) / (1.0 + self.rate_error)

    # --- the Clock interface --------------------------------------------------------

    def now(self) -> int:
        return self.epoch_ns + round((self.true + self.phase) * NS_PER_S)

    def adjust_frequency(self, ppm: float) -> None:
        self.correction_ppm = max(-MAX_FREQUENCY_PPM, min(MAX_FREQUENCY_PPM, ppm))

    def slew(self, offset_s: float) -> None:
        self.slew_left = offset_s

    def step(self, offset_s: float) -> None:
        self.phase += offset_s
        self.steps.append(offset_s)

    def set_sync_status(
        self, synchronised: bool, maxerror_s: float, esterror_s: float, leap: int
    ) -> None:
        self.synchronised = synchronised
        self.maxerror, self.esterror, self.leap = maxerror_s, esterror_s, leap
        self._kernel_status()

    def set_tai_offset(self, tai_utc: int) -> None:
        self.tai = tai_utc
