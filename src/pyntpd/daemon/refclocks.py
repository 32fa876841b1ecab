"""Reference clocks in the daemon: the drivers built from ntp.conf, run on the event loop.

ntpd's refclock timer is kept: once a second every driver gets `timer(now)` (SHM reads its
segment, GPSD JSON connects, times out, retries); a gpsd socket is watched by the loop and
read as data arrives. At each peer's poll (its interval the engine's choice, within minpoll
..maxpoll, as for network sources) the driver reports its event and, under flag4, a
clockstats line; the peer's median-filtered sample goes to the one Driver like any other
source's. A segment that cannot be attached or a gpsd that does not answer leaves the clock
configured and retried, with one log line per kind of trouble.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from pyntpd.config.model import REFCLOCK_DRIVERS, RefclockConfig
from pyntpd.logonce import LogOnce
from pyntpd.proto.source import SourceSpec
from pyntpd.refclock import gpsd, shm
from pyntpd.refclock.base import Fudge, RefclockPeer, refid_bytes
from pyntpd.types import Sample

log = logging.getLogger("pyntpd")
TICK = 1.0  # s: ntpd's refclock timer

Driver = shm.ShmDriver | gpsd.GpsdDriver


def make_peer(conf: RefclockConfig, precision: int, driver_precision: int,
              description: str) -> RefclockPeer:
    refid = REFCLOCK_DRIVERS[conf.type][1]
    fudge = Fudge(time1=conf.time1, time2=conf.time2, stratum=conf.stratum,
                  refid=refid_bytes(conf.refid) if conf.refid is not None else None,
                  flags=conf.flags)
    spec = SourceSpec(address=conf.address, port=0, minpoll=conf.minpoll,
                      maxpoll=conf.maxpoll, prefer=conf.prefer, noselect=conf.noselect,
                      true=conf.true)
    return RefclockPeer(conf.type, conf.unit, conf.name, refid_bytes(refid), description,
                        spec, fudge, precision=driver_precision, sys_precision=precision)


def build(configs: tuple[RefclockConfig, ...], precision: int,
          gpsd_address: tuple[str, int] = gpsd.GPSD_ADDRESS,
          ) -> tuple[list[RefclockPeer], list[Driver]]:
    peers: list[RefclockPeer] = []
    drivers: list[Driver] = []
    sessions: dict[int, gpsd.GpsdSession] = {}
    for conf in configs:
        if conf.type == 28:
            peer = make_peer(conf, precision, shm.PRECISION, shm.DESCRIPTION)
            segment = shm.ShmSegment(conf.unit, conf.mode)
            if not segment.attached:
                log.warning("%s: %s; retried every second", conf.name, segment.error)
            peers.append(peer)
            drivers.append(shm.ShmDriver(peer, segment, conf.mode))
        elif conf.type == 46:
            secondary = conf.unit >= 128
            peer = make_peer(conf, precision,
                             gpsd.PPS_PRECISION if secondary else gpsd.PRECISION,
                             gpsd.DESCRIPTION)
            peers.append(peer)
            base = conf.unit & 0x7F
            session = sessions.get(base)
            if session is None:
                device = f"/dev/gps{base}"
                session = sessions[base] = gpsd.GpsdSession(
                    None, device=device if os.path.exists(device) else None)
                drivers.append(gpsd.GpsdDriver(session, gpsd.GpsdLink(gpsd_address)))
            if secondary:
                session.pps_peer = peer
            else:
                session.peer = peer
                session.set_mode(conf.mode & 0x03)
    return peers, drivers


@dataclass
class RefclockRunner:
    """The drivers on the asyncio loop; samples go to `on_sample`, clockstats lines to
    `on_clockstats`."""

    peers: list[RefclockPeer]
    drivers: list[Driver]
    now: Callable[[], float]
    on_sample: Callable[[RefclockPeer, Sample], None]
    on_clockstats: Callable[[float, str, str], None]
    _timer: asyncio.TimerHandle | None = None
    _readers: dict[int, gpsd.GpsdDriver] = field(default_factory=dict)
    _log_once: LogOnce = field(default_factory=lambda: LogOnce(log))

    def start(self) -> None:
        now = self.now()
        for peer in self.peers:
            peer.next_poll = now + float(1 << peer.poll)
        if self.drivers:
            self._tick()

    def _driver_of(self, peer: RefclockPeer) -> Driver | None:
        for driver in self.drivers:
            if isinstance(driver, shm.ShmDriver) and driver.peer is peer:
                return driver
            if isinstance(driver, gpsd.GpsdDriver) and peer in driver.peers:
                return driver
        return None

    def _tick(self) -> None:
        now = self.now()
        for driver in self.drivers:
            driver.timer(now)
            if isinstance(driver, gpsd.GpsdDriver):
                self._watch(driver)
                if driver.link.error:
                    self._log_once.warning(("gpsd", driver.link.error),
                                           "GPSD_JSON: cannot reach gpsd at %s:%d: %s; retried",
                                           *driver.link.address, driver.link.error)
        for peer in self.peers:
            if not peer.poll_due(now):
                continue
            driver = self._driver_of(peer)
            line = driver.poll(peer) if isinstance(driver, gpsd.GpsdDriver) else (
                driver.poll() if driver is not None else None)
            if line is not None:
                self.on_clockstats(now, peer.address, line)
            sample = peer.take(now)
            if sample is not None:
                self.on_sample(peer, sample)
        self._timer = asyncio.get_running_loop().call_later(TICK, self._tick)

    def _watch(self, driver: gpsd.GpsdDriver) -> None:
        """Keep the loop watching the socket gpsd is connected on, and only that one."""
        loop = asyncio.get_running_loop()
        fd = driver.fileno()
        for old, owner in list(self._readers.items()):
            if owner is driver and old != fd:
                loop.remove_reader(old)
                del self._readers[old]
        if fd is not None and fd not in self._readers:
            self._readers[fd] = driver
            loop.add_reader(fd, self._readable, driver)

    def _readable(self, driver: gpsd.GpsdDriver) -> None:
        driver.readable(self.now())
        self._watch(driver)

    def clock_stepped(self, step: float) -> None:
        for peer in self.peers:
            peer.clock_stepped(step)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for fd in self._readers:
            if loop is not None:
                loop.remove_reader(fd)
        self._readers.clear()
        for driver in self.drivers:
            driver.close()
