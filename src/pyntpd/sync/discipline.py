"""The clock discipline: what to do to the clock, given the estimated offset and frequency.

Two parts:

`CorrectionModel` remembers every correction the engine has commanded (frequency settings,
steps), so that any local time can be turned back into the *raw* clock's — the clock as it
would read uncorrected. The filters work against the raw clock, so a correction never
disturbs them, and the offset still to correct is always `estimate - correction`.

`Discipline` applies ntpd's policies to that offset:
- a step when |offset| exceeds the step threshold (`tinker step`, 0.128 s; `stepfwd` and
  `stepback` apart; 600 s with -x; `tinker step 0`: never) — straight away for the first
  adjustment, otherwise only when it has persisted for `stepout` (300 s): until then the
  sample is a spike and the clock keeps its frequency;
- panic when |offset| exceeds `tinker panic` (1000 s; 0: off): the daemon must exit, except
  for the very first adjustment under -g;
- under -G the very first adjustment is a step whatever its size (ntpd's force_step_once:
  below the step threshold as well; the panic threshold still applies unless -g);
- otherwise a slew, done through the frequency (chrony-style, not the kernel PLL): the
  frequency is set to the estimate plus offset / tau for tau seconds, after which the
  engine sets the bare estimate. tau is spread over the poll interval (the engine passes
  `spread`, a few polls of the system peer: issue 13), as ntpd's PLL and chrony's
  corrtimeratio do, so that every program timing an interval, and every client of ours,
  sees the rate move by offset / tau, a fraction of a ppm, not by tens of ppm for 2 s;
  the engine plans again at every sample, so a correction is in effect an exponential
  approach with that time constant. Never faster than the kernel's 500 ppm allows;
- before the first sync (`fast_ppm`: what the clock can run at beyond 500 ppm, through
  the kernel's tick length, as chronyd's 83,333 ppm), an offset beyond `FAST_ABOVE` is
  slewed at that rate: 0.1 s in 1.2 s instead of 200 s, and never a step, so -x is kept;
- the frequency estimate is clamped to +-500 ppm, and with no source the last estimate is
  kept (holdover).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

MAX_FREQUENCY_PPM = 500.0
SLEW_ONLY_STEP = 600.0  # ntpd -x
SLEW_TIME = 2.0  # s: the shortest a slew is spread over
# Before the first sync, offsets beyond this are slewed at the clock's fast rate: what
# the normal rate would take minutes over (it is also the 'first sync' of issue 13).
FAST_ABOVE = 1e-3
SEGMENT_KEEP = 3600.0  # s of correction history kept for samples still in flight


@dataclass(slots=True)
class _Segment:
    local: float  # local time the segment starts at
    correction: float  # local minus raw at that instant
    ppm: float  # frequency correction in force


class CorrectionModel:
    """local = raw + correction(local): what this engine has done to the clock."""

    def __init__(self, now: float, ppm: float = 0.0) -> None:
        self._segments = [_Segment(now, 0.0, ppm)]
        self.steps: list[tuple[float, float]] = []  # (local time after the step, amount)

    @property
    def ppm(self) -> float:
        return self._segments[-1].ppm

    def copy(self) -> CorrectionModel:
        """An independent copy (segments are never changed once added, only dropped)."""
        twin = CorrectionModel.__new__(CorrectionModel)
        twin._segments = list(self._segments)
        twin.steps = list(self.steps)
        return twin

    def _segment(self, local: float) -> _Segment:
        for seg in reversed(self._segments):
            if seg.local <= local:
                return seg
        return self._segments[0]

    def correction(self, local: float) -> float:
        seg = self._segment(local)
        f = seg.ppm * 1e-6
        return seg.correction + (local - seg.local) * f / (1.0 + f)

    def to_raw(self, local: float) -> float:
        return local - self.correction(local)

    def set_frequency(self, now: float, ppm: float) -> None:
        self._add(_Segment(now, self.correction(now), ppm))

    def step(self, now: float, amount: float) -> None:
        self._add(_Segment(now + amount, self.correction(now) + amount, self.ppm))
        self.steps.append((now + amount, amount))
        del self.steps[:-4]

    def last_step_at(self) -> float | None:
        return self.steps[-1][0] if self.steps else None

    def _add(self, seg: _Segment) -> None:
        self._segments.append(seg)
        while len(self._segments) > 2 and self._segments[1].local < seg.local - SEGMENT_KEEP:
            del self._segments[0]


class Decision(enum.Enum):
    SLEW = "slew"
    STEP = "step"
    HOLD = "hold"  # a spike above the step threshold, waiting for stepout
    PANIC = "panic"


@dataclass(frozen=True, slots=True)
class DisciplineConfig:
    step: float = 0.128
    stepback: float | None = None
    stepfwd: float | None = None
    stepout: float = 300.0
    panic: float = 1000.0
    panic_gate: bool = False  # -g: the first adjustment may be of any size
    force_step_once: bool = False  # -G: the first adjustment is a step, however small
    slew_only: bool = False  # -x
    slew_time: float = SLEW_TIME

    def threshold(self, offset: float) -> float:
        if self.slew_only:
            return SLEW_ONLY_STEP
        chosen = self.stepfwd if offset > 0 else self.stepback
        return self.step if chosen is None else chosen


@dataclass(slots=True)
class Plan:
    decision: Decision
    ppm: float  # frequency to set now
    step: float = 0.0
    until: float | None = None  # when the slew ends (the engine wants an update then)
    fast: bool = False  # a fast slew, beyond the kernel's 500 ppm


@dataclass
class Discipline:
    config: DisciplineConfig = field(default_factory=DisciplineConfig)
    adjusted: bool = False  # the first adjustment has been made
    spike_since: float | None = None

    def frequency(self, estimate_ppm: float) -> float:
        return max(-MAX_FREQUENCY_PPM, min(MAX_FREQUENCY_PPM, estimate_ppm))

    def decide(self, now: float, offset: float, frequency_ppm: float, spread: float = 0.0,
               fast_ppm: float = 0.0, rate_ppm: float = MAX_FREQUENCY_PPM) -> Plan:
        """What to do about `offset` (s, positive: the clock is behind) at `now`. A slew
        is spread over `spread` s at least (and `slew_time`), and runs the clock at most
        `rate_ppm` off the estimate; `fast_ppm` > 500: the clock
        may run that fast to remove an offset beyond FAST_ABOVE (before the first sync)."""
        cfg = self.config
        ppm = self.frequency(frequency_ppm)
        size = abs(offset)
        if cfg.panic > 0 and size > cfg.panic and (self.adjusted or not cfg.panic_gate):
            return Plan(Decision.PANIC, ppm)
        if cfg.force_step_once and not self.adjusted:
            self.adjusted = True
            return Plan(Decision.STEP, ppm, step=offset)
        threshold = cfg.threshold(offset)
        if threshold > 0 and size > threshold:
            if self.adjusted:
                if self.spike_since is None:
                    self.spike_since = now
                if now - self.spike_since < cfg.stepout:
                    return Plan(Decision.HOLD, ppm)
            self.spike_since = None
            self.adjusted = True
            return Plan(Decision.STEP, ppm, step=offset)
        self.spike_since = None
        self.adjusted = True
        return self.slew(now, offset, ppm, spread, fast_ppm, rate_ppm)

    def slew(self, now: float, offset: float, ppm: float, spread: float = 0.0,
             fast_ppm: float = 0.0, rate_ppm: float = MAX_FREQUENCY_PPM) -> Plan:
        """Correct `offset` by running the clock off-frequency for a while."""
        if offset == 0.0:
            return Plan(Decision.SLEW, ppm)
        if fast_ppm > MAX_FREQUENCY_PPM and abs(offset) > FAST_ABOVE:
            tau = abs(offset) / ((fast_ppm - abs(ppm)) * 1e-6)
            return Plan(Decision.SLEW, ppm + offset / tau * 1e6, until=now + tau, fast=True)
        room = min(MAX_FREQUENCY_PPM - abs(ppm), rate_ppm)
        if room <= 0.0:
            return Plan(Decision.SLEW, ppm)
        tau = max(self.config.slew_time, spread, abs(offset) / (room * 1e-6))
        return Plan(Decision.SLEW, ppm + offset / tau * 1e6, until=now + tau)

    def stepout_pending(self) -> bool:
        return self.spike_since is not None
