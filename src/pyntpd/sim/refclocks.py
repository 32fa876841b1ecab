"""A GPS receiver on the simulated host: NMEA on a serial port plus a PPS line, read by the
real NMEA (20) and PPS (22) drivers as the daemon configures them:

    server 127.127.20.0 minpoll 4 maxpoll 4 prefer   # numbers the seconds
    fudge  127.127.20.0 time2 LATENCY
    server 127.127.22.0 minpoll 4 maxpoll 4          # the pulses

Every true second k the pulse's edge is captured at true k + N(0, pps_jitter) (the kernel's
timestamp: the local clock then); the $GPRMC naming second k ends at true k + latency +
N(0, nmea_jitter) and is stamped on arrival, as the daemon's loop stamps it. The peers'
polls hand their median-filtered samples to the one Driver like any source's; the PPS
driver counts its pulses as numbered only while the prefer peer is followed within 0.4 s
(refclock.pps.prefer_numbers), as in the daemon. Pure: events on the simulation's queue.
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyntpd.proto.source import SourceSpec
from pyntpd.refclock import nmea, pps
from pyntpd.refclock.base import Fudge, RefclockPeer

if TYPE_CHECKING:
    from pyntpd.sim.runner import Simulation


@dataclass(frozen=True)
class SimReceiver:
    """The receiver's timing: the NMEA sentence's end-of-line latency and jitter, the
    PPS edge's jitter (s)."""

    latency: float = 0.35
    nmea_jitter: float = 1e-6
    pps_jitter: float = 100e-9
    poll: int = 4


class SimPulses(pps.EdgeSource):
    """The PPS device: the newest captured edge, as PPS_FETCH returns it."""

    def __init__(self) -> None:
        self.latest: pps.Edge | None = None
        self.sequence = 0

    def capture(self, local_ns: int) -> None:
        self.sequence += 1
        self.latest = pps.Edge(self.sequence, local_ns // 1_000_000_000,
                               local_ns % 1_000_000_000, 0)

    def fetch(self) -> pps.Edge | None:
        return self.latest


def rmc(unix_second: int) -> bytes:
    t = datetime.datetime.fromtimestamp(unix_second, datetime.UTC)
    body = (f"GPRMC,{t.strftime('%H%M%S')}.00,A,4807.038,N,01131.000,E,0.0,0.0,"
            f"{t.strftime('%d%m%y')},,,A").encode()
    return b"$" + body + b"*%02X\r\n" % nmea.checksum(body)


def _peer(clock_type: int, name: str, refid: bytes, description: str, precision: int,
          receiver: SimReceiver, prefer: bool, fudge: Fudge) -> RefclockPeer:
    spec = SourceSpec(address=f"127.127.{clock_type}.0", port=0, minpoll=receiver.poll,
                      maxpoll=receiver.poll, prefer=prefer, pps=clock_type == 22)
    return RefclockPeer(clock_type, 0, name, refid, description, spec, fudge,
                        precision=precision)


class SimRefclocks:
    def __init__(self, sim: Simulation, receiver: SimReceiver, epoch: float,
                 rng: random.Random) -> None:
        self.sim = sim
        self.receiver = receiver
        self.epoch = epoch
        self.rng = rng
        self.nmea_peer = _peer(20, "NMEA(0)", b"GPS\0", nmea.DESCRIPTION, nmea.PRECISION,
                               receiver, True, Fudge(time2=receiver.latency))
        self.pps_peer = _peer(22, "PPS(0)", b"PPS\0", pps.DESCRIPTION, pps.PRECISION,
                              receiver, False, Fudge())
        self.session = nmea.NmeaSession(self.nmea_peer, nmea.MODE_RMC)
        self.pulses = SimPulses()
        self.pps_driver = pps.PpsDriver(self.pps_peer, self.pulses,
                                        lambda: pps.prefer_numbers(sim.driver.last))
        self.peers = (self.nmea_peer, self.pps_peer)
        self._gen = dict.fromkeys(self.peers, 0)

    def start(self) -> None:
        now = self.sim.local()
        for peer in self.peers:
            self.sim.driver.add_source(peer, peer, peer.address)
            peer.next_poll = now + float(1 << peer.poll)
            self._schedule_poll(peer)
        self._second(1)

    def _second(self, k: int) -> None:
        r = self.receiver
        edge = k + self.rng.gauss(0.0, r.pps_jitter)
        end_of_line = k + r.latency + self.rng.gauss(0.0, r.nmea_jitter)
        self.sim._at(edge, self._pulse)
        self.sim._at(end_of_line, lambda: self._sentence(k))
        self.sim._at(k + 1 - 0.5, lambda: self._second(k + 1))

    def _pulse(self) -> None:
        self.pulses.capture(self.sim.clock.now())
        self.pps_driver.timer(self.sim.local())

    def _sentence(self, k: int) -> None:
        self.session.sentence(rmc(round(self.epoch) + k), self.sim.local())

    def _schedule_poll(self, peer: RefclockPeer) -> None:
        gen = self._gen[peer] = self._gen[peer] + 1
        self.sim._at_local(peer.next_poll, lambda: self._poll(peer, gen))

    def _poll(self, peer: RefclockPeer, gen: int) -> None:
        if gen != self._gen[peer]:
            return
        now = self.sim.local()
        sample = peer.take(now)
        if sample is not None:
            self.sim.trace.samples += 1
            self.sim.driver.on_sample(peer, sample)
        self._schedule_poll(peer)

    def clock_stepped(self) -> None:
        for peer in self.peers:
            self._schedule_poll(peer)  # the driver moved their polls with the step
