"""Per-source clock filter: Kalman filters of offset and frequency, weighted by delay.

Every sample of a source is expressed against the *raw* local clock — the clock as it would
read had the discipline never corrected it (`CorrectionModel.to_raw`). Against that
free-running oscillator the model is the textbook one, with no control input to account for:

    x(t + dt) = x(t) + y(t) dt          phase: how far the source is ahead of the raw clock
    y(t + dt) = y(t) + w,  var w = q dt  frequency: a random walk ("wander", q in 1/s)

and a measurement z = x + v.

Delay bounds. What the RFC 5905 clock filter does crudely (keep the one lowest-delay sample
of the last eight) is done here exactly: on a path whose excess delay (delay minus the
path's minimum) is D, the offset error lies within +-D/2 — whatever the queueing, as long as
the minimum delays are symmetric — and for independent queueing in the two directions it is
uniform there. So each sample is an *interval*, and the update is the prediction truncated
to it (moments matched: an assumed-density filter), not a Gaussian measurement: a sample that
crossed empty queues pins the offset to within microseconds, a congested one barely moves
it, a delay spike costs nothing. On lan1 this beats a Kalman update with var D^2/12 by 15-20 %
(5.7 vs 6.7 us at 16 s polling). The minimum is the smallest delay of the last `WINDOW`
samples (a route change is followed within that many polls); how far it may still be above
the path's true minimum (about theta*sqrt(pi/2n) for n samples of queueing scale theta) widens
every interval, half with soft (Gaussian) edges so that a wrong minimum degrades gracefully.
The first `LIKELIHOOD_AFTER` samples, before the minimum means anything, use plain Kalman
updates with the interval's variance.

Wander. q varies a hundredfold between oscillators and with temperature, and the filter is
only good with q right to a factor of a few. A single filter cannot learn q from its own
innovations quickly (its predicted variance grows only as q**(1/4)), so a bank of filters runs
side by side, one per q on a half-decade grid, and each one's likelihood of the innovations
(with a forgetting of `MEMORY` samples) weighs its estimate: the output is the
likelihood-weighted mixture. On the simulator this finds q within a factor of two in a
few hours and gives the accuracy of a filter told the true q.

Spikes. A sample whose innovation is far outside the prediction (`GATE` sigmas) is popcorn
and is not used; when `SPIKE_RESTART` arrive in a row the source has really moved (it
stepped, or it lies differently), and the filters restart their phase from those samples.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

from pyntpd.sync.tuning import DEFAULT, Tuning

WINDOW = 64  # samples kept for the minimum delay and the jitter
MIN_SAMPLES = 4  # samples before the estimate is trusted for selection
FLOOR_FACTOR = 1.5
MEDIAN_EXCESS = 1.678  # median of Gamma(2, 1)
SOFT_EDGE = 0.5  # the floor's share given to soft (Gaussian) interval edges
GATE = 5.0  # innovations beyond this many sigmas are spikes
SPIKE_RESTART = 4  # this many spikes in a row: the source moved, restart the phase
MEMORY = 300.0  # samples over which the models' likelihoods are compared
LIKELIHOOD_AFTER = 8  # samples before the likelihoods start to count (start-up transient)
MIN_LIKELIHOOD = 1e-12  # a sample's likelihood under a model is floored here
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
MAX_FREQUENCY = 500e-6  # the prior: any oscillator the kernel can correct
TWELVE = 12.0


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    SPIKE = "spike"
    RESTARTED = "restarted"


@dataclass(frozen=True, slots=True)
class Estimate:
    """The filter's state predicted to one instant (raw time)."""

    offset: float  # s, source minus raw clock
    frequency: float  # s/s, d(offset)/dt: the correction the raw clock needs
    offset_var: float
    covariance: float
    frequency_var: float

    def offset_var_after(self, dt: float, wander: float) -> float:
        """Variance of the offset predicted `dt` further on, with no new sample."""
        return (self.offset_var + 2 * self.covariance * dt + self.frequency_var * dt * dt
                + wander * dt**3 / 3)


@dataclass(frozen=True, slots=True)
class Bounds:
    """What one sample says: the offset lies within z +- half_width, the edges blurred by a
    Gaussian of `soft` s (the uncertainty of the path's minimum delay)."""

    z: float
    half_width: float
    soft: float

    @property
    def variance(self) -> float:
        """The variance of that distribution, for the Gaussian update."""
        return self.half_width**2 / 3 + self.soft**2


def _cdf(u: float) -> float:
    return 0.5 * math.erfc(-u / _SQRT2)


def _pdf(u: float) -> float:
    return math.exp(-0.5 * u * u) / _SQRT2PI


@dataclass(slots=True)
class _Point:
    t: float
    offset: float
    delay: float
    residual: float  # offset minus the prediction just before it was used


class _Model:
    """One Kalman filter, for one value of the wander."""

    __slots__ = ("p00", "p01", "p11", "q", "score", "x", "y")

    def __init__(self, q: float, x: float, y: float, p00: float, p11: float) -> None:
        self.q = q
        self.x, self.y = x, y
        self.p00, self.p01, self.p11 = p00, 0.0, p11
        self.score = 0.0  # log-likelihood of the recent innovations

    def predict(self, dt: float) -> tuple[float, float, float, float]:
        """(offset, p00, p01, p11) `dt` after the last update."""
        if dt <= 0.0:
            return self.x, self.p00, self.p01, self.p11
        q = self.q
        p00 = self.p00 + 2 * self.p01 * dt + self.p11 * dt * dt + q * dt**3 / 3
        p01 = self.p01 + self.p11 * dt + q * dt * dt / 2
        return self.x + self.y * dt, p00, p01, self.p11 + q * dt

    def update(self, dt: float, b: Bounds, bounded: bool, forget: float) -> None:
        """Condition on one sample. `bounded`: use the interval itself (the prediction
        truncated to it, moments matched) rather than its variance (a Kalman update)."""
        mu, p00, p01, p11 = self.predict(dt)
        if bounded:
            w = p00 + b.soft * b.soft
            sd = math.sqrt(w)
            lo, hi = (b.z - b.half_width - mu) / sd, (b.z + b.half_width - mu) / sd
            mass = _cdf(hi) - _cdf(lo)
            self.score = forget * self.score + math.log(max(mass, MIN_LIKELIHOOD))
            if mass > 1e-9:
                # Truncated normal of w = x + edge noise, then x given w (linear).
                plo, phi = _pdf(lo), _pdf(hi)
                shift = (plo - phi) / mass
                w_mean = mu + sd * shift
                w_var = w * max(1.0 + (lo * plo - hi * phi) / mass - shift * shift, 1e-12)
                kappa = p00 / w
                mean = mu + kappa * (w_mean - mu)
                var = p00 * (1.0 - kappa) + kappa * kappa * w_var
                gain = p01 / p00
                self.x = mean
                self.y += gain * (mean - mu)
                self.p11 = p11 - gain * p01 + gain * gain * var
                self.p01 = gain * var
                self.p00 = var
                return
        r = b.variance
        nu = b.z - mu
        s = p00 + r
        k0, k1 = p00 / s, p01 / s
        self.x = mu + k0 * nu
        self.y += k1 * nu
        self.p00 = (1.0 - k0) * p00
        self.p01 = (1.0 - k0) * p01
        self.p11 = p11 - k1 * p01


class SourceFilter:
    """Offset and frequency of one source against the raw local clock."""

    def __init__(
        self,
        precision: float = 2e-6,
        frequency: float = 0.0,
        frequency_var: float = MAX_FREQUENCY**2,
        *,
        tuning: Tuning = DEFAULT,
    ) -> None:
        self.precision = precision
        self.interval_update = tuning.interval_update
        wanders = tuning.wanders
        self.window: deque[_Point] = deque(maxlen=WINDOW)
        self.count = 0  # samples used since the (re)start
        self.spikes = 0  # spikes in a row
        self.t = 0.0  # raw time of the last update
        self.models = [_Model(q, 0.0, frequency, 0.0, frequency_var) for q in wanders]
        self._weights = [1.0 / len(wanders)] * len(wanders)
        self._pending: list[_Point] = []

    # --- reading --------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.count >= MIN_SAMPLES

    @property
    def min_delay(self) -> float:
        return min((p.delay for p in self.window), default=0.0)

    @property
    def jitter(self) -> float:
        """RMS of the recent innovations: the noise of a single sample (ntpq's jitter)."""
        pts = [p.residual for p in self.window if not math.isnan(p.residual)]
        if not pts:
            return 0.0
        return math.sqrt(sum(r * r for r in pts) / len(pts))

    @property
    def typical_error(self) -> float:
        """A single sample's typical innovation, robust to delay spikes (1.4826 x the
        median absolute innovation: the standard deviation, were they normal)."""
        pts = sorted(abs(p.residual) for p in self.window if not math.isnan(p.residual))
        return 1.4826 * pts[len(pts) // 2] if pts else 0.0

    @property
    def last_time(self) -> float:
        return self.t

    @property
    def wander(self) -> float:
        """The likelihood-weighted (geometric) mean of the models' wander."""
        return math.exp(sum(w * math.log(m.q) for w, m in zip(self._weights, self.models,
                                                                strict=True)))

    def estimate(self, t: float) -> Estimate:
        """The mixture of the models, predicted to raw time `t`."""
        dt = t - self.t
        x = y = p00 = p01 = p11 = 0.0
        preds = []
        for w, m in zip(self._weights, self.models, strict=True):
            mx, m00, m01, m11 = m.predict(dt)
            preds.append((w, mx, m.y, m00, m01, m11))
            x += w * mx
            y += w * m.y
        for w, mx, my, m00, m01, m11 in preds:
            dx, dy = mx - x, my - y
            p00 += w * (m00 + dx * dx)
            p01 += w * (m01 + dx * dy)
            p11 += w * (m11 + dy * dy)
        return Estimate(x, y, p00, p01, p11)

    def bounds(self, offset: float, delay: float) -> Bounds:
        """The interval a sample puts the offset in, from its delay above the path minimum."""
        n = len(self.window)
        if n < LIKELIHOOD_AFTER:
            # Too few samples to know the path: all we know is |error| <= delay/2.
            return Bounds(offset, delay / 2, self.precision)
        delays = sorted(p.delay for p in self.window)
        dmin = min(delays[0], delay)
        # The queueing scale theta, from the median excess (robust to delay spikes: for
        # exponential queueing each way the excess is Gamma(2, theta), median 1.68 theta);
        # the minimum of n samples sits about theta*sqrt(pi/2n) above the true minimum.
        theta = (delays[n // 2] - dmin) / MEDIAN_EXCESS
        floor = FLOOR_FACTOR * theta * math.sqrt(math.pi / (2 * n))
        soft = math.hypot(SOFT_EDGE * floor, self.precision)
        return Bounds(offset, (delay - dmin + floor) / 2, soft)

    # --- updating -------------------------------------------------------------------

    def widen(self, variance: float) -> None:
        """The raw clock may have moved by an unknown amount of this variance (s^2): the
        phase is that much less certain, the frequency no less."""
        for m in self.models:
            m.p00 += variance

    def add(self, t: float, offset: float, delay: float) -> Verdict:
        """Use one sample taken at raw time `t` (offset against the raw clock)."""
        b = self.bounds(offset, delay)
        if self.count == 0:
            self._start(t, offset, b.variance)
            self.window.append(_Point(t, offset, delay, math.nan))
            return Verdict.ACCEPTED
        dt = t - self.t
        est = self.estimate(t)
        nu = offset - est.offset
        point = _Point(t, offset, delay, nu)
        gap = abs(nu) - b.half_width
        if self.count >= 2 and gap > 0 and gap * gap > GATE * GATE * (est.offset_var
                                                                     + b.variance):
            return self._spike(point)
        self.spikes = 0
        self._pending.clear()
        bounded = self.interval_update and self.count >= LIKELIHOOD_AFTER
        forget = 1.0 - 1.0 / MEMORY
        for m in self.models:
            m.update(dt, b, bounded, forget)
        self._reweigh()
        self.t = t
        self.count += 1
        self.window.append(point)
        return Verdict.ACCEPTED

    def _reweigh(self) -> None:
        top = max(m.score for m in self.models)
        weights = [math.exp(m.score - top) for m in self.models]
        total = sum(weights)
        self._weights = [w / total for w in weights]

    def _start(self, t: float, offset: float, r: float) -> None:
        self.t = t
        for m in self.models:
            m.x, m.p00, m.p01 = offset, r, 0.0
        self.count = 1
        self.spikes = 0
        self._pending.clear()

    def _spike(self, point: _Point) -> Verdict:
        self.spikes += 1
        self._pending.append(point)
        if self.spikes < SPIKE_RESTART:
            return Verdict.SPIKE
        # The source really moved: restart on the rejected samples, keeping the frequency
        # (an offset jump says nothing about our oscillator) but not all of its certainty.
        pending = self._pending[:]
        self.window.clear()
        for m in self.models:
            m.p11 = max(m.p11, 1e-12)
        first = pending[0]
        self._start(first.t, first.offset, first.delay**2 / TWELVE)
        self.window.append(_Point(first.t, first.offset, first.delay, math.nan))
        for p in pending[1:]:
            self.add(p.t, p.offset, p.delay)
        return Verdict.RESTARTED
