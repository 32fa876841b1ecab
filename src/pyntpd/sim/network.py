"""Simulated network paths and servers.

A `Path` is one client-server route: a base one-way delay each way (their difference is the
asymmetry no protocol can see), a jitter distribution per direction, loss, outages and delay
spikes. A `SimServer` is an upstream server with its own idea of the time (honest, lying by
a fixed amount, stepping at some instant, going away), answering through the real
`Responder` — the very code pyntpd serves with — from system variables stating its clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyntpd.proto.access import Access, RestrictTable
from pyntpd.proto.server import Responder
from pyntpd.proto.timestamp import ntp_add, unix_ns_to_ntp, unix_to_ntp
from pyntpd.types import Leap, SystemVars

Jitter = Callable[[random.Random], float]


def no_jitter(rng: random.Random) -> float:
    return 0.0


def exponential(mean: float) -> Jitter:
    """Queueing delay: exponential with the given mean (s)."""
    return lambda rng: rng.expovariate(1.0 / mean)


def gaussian(sigma: float) -> Jitter:
    """Symmetric noise, folded to be non-negative (a delay cannot shrink below the base)."""
    return lambda rng: abs(rng.gauss(0.0, sigma))


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

    def __post_init__(self) -> None:
        self.responder = Responder(Access(RestrictTable()))
        self._vars_at = -1.0

    def clock_ns(self, t: float) -> int:
        return round((self.epoch + t + self.error(t)) * 1e9)

    def answer(self, request: bytes, t: float) -> tuple[bytes, float] | None:
        """The reply to a request arriving at true time t, and when it leaves."""
        receive_ns = self.clock_ns(t)
        now = receive_ns / 1e9
        if now - self._vars_at >= 16.0 or now < self._vars_at:
            self._vars_at = now
            self.responder.set_system(SystemVars(
                leap=self.leap, stratum=self.stratum, precision=-20,
                root_delay=self.root_delay, root_dispersion=self.root_dispersion,
                refid=self.refid, reference_time=unix_to_ntp(now), updated_at=now))
        head = self.responder.respond(request, 0x0A000001, False, 123,
                                      unix_ns_to_ntp(receive_ns), now)
        if head is None:
            return None
        transmit = ntp_add(unix_ns_to_ntp(receive_ns), self.processing)
        return head + transmit.to_bytes(8, "big"), t + self.processing
