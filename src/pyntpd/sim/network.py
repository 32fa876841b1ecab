"""Simulated network paths and servers.

A `Path` is one client-server route: a base one-way delay each way (their difference is the
asymmetry no protocol can see), a jitter distribution per direction, loss, outages and delay
spikes. A `SimServer` is an upstream server with its own idea of the time (honest, lying by
a fixed amount, stepping at some instant, going away), answering through the real
`Responder` — the very code pyntpd serves with — from system variables stating its clock.
With `fuzz` it randomises the bits of its receive and transmit timestamps below its
precision, as chronyd does: with a processing time shorter than that precision, its transmit
timestamp then precedes its receive timestamp in about half of its replies.

The simulation's true time runs uniformly (like TAI); `UtcLeaps` says what UTC reads at a
true time, leap seconds included. Servers given one keep UTC: they insert or delete the
leap themselves at its instant and announce it beforehand (from the start of its month, as
RFC 5905 allows, or a chosen time ahead, e.g. weeks early).
"""

from __future__ import annotations

import bisect
import calendar
import datetime
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from pyntpd.proto.access import Access, RestrictTable
from pyntpd.proto.server import Responder
from pyntpd.proto.timestamp import ntp_add, ntp_diff, unix_ns_to_ntp, unix_to_ntp
from pyntpd.types import Leap, SystemVars

Jitter = Callable[[random.Random], float]
UPDATE_INTERVAL = 16.0  # s between a server's own clock updates (its reference time)


def no_jitter(rng: random.Random) -> float:
    return 0.0


def exponential(mean: float) -> Jitter:
    """Queueing delay: exponential with the given mean (s)."""
    return lambda rng: rng.expovariate(1.0 / mean)


def uniform(low: float, high: float) -> Jitter:
    return lambda rng: rng.uniform(low, high)


def plus(*parts: Jitter) -> Jitter:
    """The sum of independent delays."""
    return lambda rng: sum(part(rng) for part in parts)


def heavy_tail(probability: float, scale: float, alpha: float = 1.5,
               cap: float = 1.0) -> Jitter:
    """Delay spikes: with `probability` a Pareto delay (shape `alpha`, from `scale` s up,
    at most `cap`): with alpha < 2 its variance is infinite, as congested routes' are.
    Both numbers are drawn every time, so that the stream does not depend on the outcome."""
    def draw(rng: random.Random) -> float:
        hit, u = rng.random(), rng.random()
        return min(cap, scale * (1.0 - u) ** (-1.0 / alpha)) if hit < probability else 0.0
    return draw


@dataclass(frozen=True)
class Host:
    """The client machine between the daemon's code and the wire: what the project's
    simulator long left out, and what makes a real host's figures worse than an ideal one's.

    - `send_latency`: from t1, read in user space before send(), until the request is on
      the wire (system call, stack, queueing discipline, driver): 10-30 us on a real host.
    - `receive_latency`: from the wire to the kernel's receive timestamp (interrupt
      coalescing); t4 is that timestamp (SO_TIMESTAMPNS), not a user-space read.
    - `timer_latency`: how late a timer fires (a poll, the end of a slew): the event
      loop's wake-up and scheduling.
    """

    send_latency: Jitter = no_jitter
    receive_latency: Jitter = no_jitter
    timer_latency: Jitter = no_jitter


IDEAL_HOST = Host()
# A real Linux host: 10-30 us from the user-space t1 to the wire (DESIGN.md measures
# ~25 us between a kernel and a user-space timestamp), 2 us mean to the receive timestamp,
# timers 0.1-1 ms late.
REAL_HOST = Host(send_latency=uniform(10e-6, 30e-6), receive_latency=exponential(2e-6),
                 timer_latency=plus(uniform(100e-6, 200e-6), exponential(300e-6)))


@dataclass(frozen=True, slots=True)
class Spikes:
    probability: float  # per packet and direction
    size: float  # s added


@dataclass
class Path:
    forward: float = 0.001  # s, client -> server base delay
    backward: float = 0.001  # s, server -> client base delay
    jitter_forward: Jitter = no_jitter
    jitter_backward: Jitter = no_jitter
    loss: float = 0.0
    outages: Sequence[tuple[float, float]] = ()  # true-time intervals with no delivery
    spikes: Spikes | None = None

    def down(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.outages)

    def delay(self, rng: random.Random, t: float, forward: bool) -> float | None:
        """The one-way delay of a packet sent at true time `t`, or None if it is lost."""
        # Draw everything every time, so that the random stream does not depend on outages.
        lost = rng.random() < self.loss
        jitter = (self.jitter_forward if forward else self.jitter_backward)(rng)
        spike = self.spikes is not None and rng.random() < self.spikes.probability
        if lost or self.down(t):
            return None
        base = self.forward if forward else self.backward
        return base + jitter + (self.spikes.size if spike and self.spikes else 0.0)


@dataclass(frozen=True)
class UtcLeaps:
    """UTC against the simulation's uniform true time: at true time 0 UTC reads `epoch`
    (Unix seconds), and `leaps` are (the UTC midnight that ends the leap's day, +1 for an
    inserted second, -1 for a deleted one), in order."""

    epoch: float
    leaps: tuple[tuple[int, int], ...] = ()

    @cached_property
    def instants(self) -> list[tuple[float, int]]:
        """(true time, +1/-1) of each leap: for an insertion, when UTC first reads the
        midnight and reads 23:59:59 again instead (23:59:60, as POSIX clocks show it);
        for a deletion, when UTC would read 23:59:59 and reads midnight instead."""
        out = []
        behind = 0  # UTC minus (epoch + true time) so far
        for midnight, sign in self.leaps:
            at = (midnight if sign > 0 else midnight - 1) - self.epoch - behind
            out.append((at, sign))
            behind -= sign
        return out

    def offset(self, t: float) -> int:
        """UTC minus (epoch + t), whole seconds: minus the leaps inserted by true time t,
        plus those deleted."""
        instants = self.instants
        done = bisect.bisect_right(instants, t, key=lambda i: i[0])
        return -sum(sign for _, sign in instants[:done])

    def utc(self, t: float) -> float:
        return self.epoch + t + self.offset(t)

    def announced(self, t: float, ahead: float | None) -> int:
        """The LI an honest server shows at true time t: 1 or 2 before a leap, from `ahead`
        seconds before it or (None) from the start of the leap's UTC month; else 0."""
        for (midnight, sign), (at, _) in zip(self.leaps, self.instants, strict=True):
            if t >= at:
                continue
            last_day = datetime.datetime.fromtimestamp(midnight - 1, datetime.UTC)
            start = (calendar.timegm((last_day.year, last_day.month, 1, 0, 0, 0))
                     if ahead is None else midnight - ahead)
            return (1 if sign > 0 else 2) if self.utc(t) >= start else 0
        return 0


@dataclass
class SimServer:
    """An upstream server: its clock is true time plus `error(t)`."""

    address: str
    path: Path = field(default_factory=Path)
    error: Callable[[float], float] = lambda t: 0.0
    stratum: int = 1
    refid: bytes = b"GPS\0"
    leap: int = Leap.NONE
    root_delay: float = 0.0
    root_dispersion: float = 1e-5
    processing: float = 5e-6  # s between receive and transmit
    epoch: float = 1_800_000_000.0
    precision: int = -20  # log2 s, as stated in its replies
    fuzz: bool = False  # random bits below the precision in T2 and T3 (chronyd)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    utc: UtcLeaps | None = None  # keep UTC with its leap seconds (its epoch wins)
    announce: float | None = None  # s before a leap it is announced; None: its whole month

    def __post_init__(self) -> None:
        self.responder = Responder(Access(RestrictTable()))
        self._vars_at = -1.0
        self.reversed = 0  # replies sent with T3 before T2 (the noise of `fuzz`)
        self._leap_said = -1

    def clock_ns(self, t: float) -> int:
        base = self.utc.utc(t) if self.utc is not None else self.epoch + t
        return round((base + self.error(t)) * 1e9)

    def leap_at(self, t: float) -> int:
        """The LI this server shows at true time t."""
        if self.utc is None or self.leap == Leap.UNSYNCHRONISED:
            return self.leap
        return self.utc.announced(t, self.announce) or self.leap

    def answer(self, request: bytes, t: float) -> tuple[bytes, float] | None:
        """The reply to a request arriving at true time t, and when it leaves."""
        receive_ns = self.clock_ns(t)
        now = receive_ns / 1e9
        leap = self.leap_at(t)
        if (now - self._vars_at >= UPDATE_INTERVAL or now < self._vars_at
                or leap != self._leap_said):
            # Its clock was last updated at the latest whole interval: a reference time
            # equal to the receive time would precede a fuzzed transmit time.
            self._vars_at = now - now % UPDATE_INTERVAL
            self._leap_said = leap
            self.responder.set_system(SystemVars(
                leap=leap, stratum=self.stratum, precision=self.precision,
                root_delay=self.root_delay, root_dispersion=self.root_dispersion,
                refid=self.refid, reference_time=unix_to_ntp(self._vars_at),
                updated_at=now))
        receive = unix_ns_to_ntp(receive_ns)
        head = self.responder.respond(request, 0x0A000001, False, 123,
                                      self._fuzzed(receive), now)
        if head is None:
            return None
        transmit = self._fuzzed(ntp_add(receive, self.processing))
        if ntp_diff(transmit, int.from_bytes(head[32:40], "big")) < 0:
            self.reversed += 1
        return head + transmit.to_bytes(8, "big"), t + self.processing

    def _fuzzed(self, timestamp: int) -> int:
        """`timestamp` with the bits below the precision random, if `fuzz`."""
        bits = 32 + self.precision  # NTP fraction bits below the precision
        if not self.fuzz or bits <= 0:
            return timestamp
        return (timestamp & ~((1 << bits) - 1)) | self.rng.getrandbits(bits)
