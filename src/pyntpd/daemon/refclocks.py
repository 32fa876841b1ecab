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
from typing import TypeVar

from pyntpd.config.model import REFCLOCK_DRIVERS, RefclockConfig
from pyntpd.logonce import LogOnce
from pyntpd.proto.source import SourceSpec
from pyntpd.refclock import gpsd, nmea, pps, shm
from pyntpd.refclock.base import FLAG1, FLAG2, Fudge, RefclockPeer, refid_bytes
from pyntpd.types import Sample

log = logging.getLogger("pyntpd")
T = TypeVar("T")
TICK = 1.0  # s: ntpd's refclock timer

Driver = shm.ShmDriver | gpsd.GpsdDriver | nmea.NmeaDriver | pps.PpsDriver
Reader = gpsd.GpsdDriver | nmea.NmeaDriver  # drivers with a descriptor the loop watches


def never_numbered() -> bool:
    return False


@dataclass
class Devices:
    """The clocks' devices opened while the daemon is still root, before -u and -i drop
    what it may open: ntpd opens its refclocks at configuration, before it drops root.
    SHM units 0 and 1 are root's 0600 segments (gpsd as root made them); serial and PPS
    devices are root's too. Held for the daemon's life: a reload's drivers take them again
    (the unprivileged process could not), and only `close()` at exit lets them go."""

    held: dict[tuple[int, int], object] = field(default_factory=dict)

    @staticmethod
    def open(configs: tuple[RefclockConfig, ...]) -> Devices:
        devices = Devices()
        for conf in configs:
            key = (conf.type, conf.unit)
            device: shm.ShmSegment | nmea.SerialPort | pps.PpsDevice
            if conf.type == 28:
                device = shm.ShmSegment(conf.unit, conf.mode)
            elif conf.type == 20:
                device = nmea.SerialPort(nmea.DEVICE.format(unit=conf.unit),
                                         nmea.speed(conf.mode) or nmea.SPEEDS[0])
                device.open()
                pps_path = nmea.PPS_DEVICE.format(unit=conf.unit)
                if conf.flags & FLAG1 and os.path.exists(pps_path):
                    pulses = pps.PpsDevice(pps_path, clear_edge=bool(conf.flags & FLAG2))
                    pulses.open()
                    pulses.persistent = True
                    devices.held[(-20, conf.unit)] = pulses
            elif conf.type == 22:
                device = pps.PpsDevice(pps.DEVICE.format(unit=conf.unit),
                                       clear_edge=bool(conf.flags & FLAG2))
                device.open()
            else:
                continue
            device.persistent = True
            devices.held[key] = device
        return devices

    def get(self, key: tuple[int, int], kind: type[T]) -> T | None:
        device = self.held.get(key)
        return device if isinstance(device, kind) else None

    def close(self) -> None:
        for device in self.held.values():
            device.close(final=True)  # type: ignore[attr-defined]
        self.held.clear()


def make_peer(conf: RefclockConfig, precision: int, driver_precision: int,
              description: str) -> RefclockPeer:
    refid = REFCLOCK_DRIVERS[conf.type][1]
    fudge = Fudge(time1=conf.time1, time2=conf.time2, stratum=conf.stratum,
                  refid=refid_bytes(conf.refid) if conf.refid is not None else None,
                  flags=conf.flags)
    spec = SourceSpec(address=conf.address, port=0, minpoll=conf.minpoll,
                      maxpoll=conf.maxpoll, prefer=conf.prefer, noselect=conf.noselect,
                      true=conf.true, pps=conf.type == 22)
    return RefclockPeer(conf.type, conf.unit, conf.name, refid_bytes(refid), description,
                        spec, fudge, precision=driver_precision, sys_precision=precision)


def build(configs: tuple[RefclockConfig, ...], precision: int,
          gpsd_address: tuple[str, int] = gpsd.GPSD_ADDRESS,
          numbered: Callable[[], bool] = never_numbered,
          devices: Devices | None = None,
          ) -> tuple[list[RefclockPeer], list[Driver]]:
    """The peers and drivers of the refclock lines. `numbered` says whether the prefer
    peer numbers the seconds for the PPS driver now (the sync loop knows)."""
    peers: list[RefclockPeer] = []
    drivers: list[Driver] = []
    sessions: dict[int, gpsd.GpsdSession] = {}
    devices = devices or Devices()
    for conf in configs:
        if conf.type == 28:
            peer = make_peer(conf, precision, shm.PRECISION, shm.DESCRIPTION)
            segment = (devices.get((28, conf.unit), shm.ShmSegment)
                       or shm.ShmSegment(conf.unit, conf.mode))
            if not segment.attached and not segment.attach():
                log.warning("%s: %s; retried every second", conf.name, segment.error)
            peers.append(peer)
            drivers.append(shm.ShmDriver(peer, segment, conf.mode))
        elif conf.type == 20:
            peer = make_peer(conf, precision, nmea.PRECISION, nmea.DESCRIPTION)
            bps = nmea.speed(conf.mode)
            if bps is None:
                log.warning("%s: mode %d asks for an unknown line speed; 4800 bps used",
                            conf.name, conf.mode)
                bps = nmea.SPEEDS[0]
            port = (devices.get((20, conf.unit), nmea.SerialPort)
                    or nmea.SerialPort(nmea.DEVICE.format(unit=conf.unit), bps))
            if not port.open():
                log.warning("%s: %s; retried every second", conf.name, port.error)
            pps_path = nmea.PPS_DEVICE.format(unit=conf.unit)
            pulses = devices.get((-20, conf.unit), pps.PpsDevice)
            if pulses is None and conf.flags & FLAG1 and os.path.exists(pps_path):
                pulses = pps.PpsDevice(pps_path, clear_edge=bool(conf.flags & FLAG2))
                if not pulses.open():
                    log.warning("%s: PPS %s; retried", conf.name, pulses.error)
            peers.append(peer)
            drivers.append(nmea.NmeaDriver(nmea.NmeaSession(peer, conf.mode), port, pulses))
        elif conf.type == 22:
            peer = make_peer(conf, precision, pps.PRECISION, pps.DESCRIPTION)
            device = devices.get((22, conf.unit), pps.PpsDevice) or pps.PpsDevice(
                pps.DEVICE.format(unit=conf.unit), clear_edge=bool(conf.flags & FLAG2))
            if not device.open():
                log.warning("%s: %s; retried every second", conf.name, device.error)
            peers.append(peer)
            drivers.append(pps.PpsDriver(peer, device, numbered))
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
    _readers: dict[int, Reader] = field(default_factory=dict)
    _log_once: LogOnce = field(default_factory=lambda: LogOnce(log))

    def start(self) -> None:
        now = self.now()
        for peer in self.peers:
            peer.next_poll = now + float(1 << peer.poll)
        if self.drivers:
            self._tick()

    def _driver_of(self, peer: RefclockPeer) -> Driver | None:
        for driver in self.drivers:
            if isinstance(driver, shm.ShmDriver):
                if driver.peer is peer:
                    return driver
            elif peer in driver.peers:
                return driver
        return None

    def _tick(self) -> None:
        now = self.now()
        for driver in self.drivers:
            driver.timer(now)
            if isinstance(driver, nmea.NmeaDriver):
                self._watch(driver)
                if driver.port.error:
                    self._log_once.warning(("nmea", driver.port.error), "%s: %s; retried",
                                           driver.peer.name, driver.port.error)
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
            line = (None if driver is None else driver.poll()
                    if isinstance(driver, shm.ShmDriver) else driver.poll(peer))
            if line is not None:
                self.on_clockstats(now, peer.address, line)
            sample = peer.take(now)
            if sample is not None:
                self.on_sample(peer, sample)
        self._timer = asyncio.get_running_loop().call_later(TICK, self._tick)

    def _watch(self, driver: Reader) -> None:
        """Keep the loop watching the driver's socket or port, and only that one."""
        loop = asyncio.get_running_loop()
        fd = driver.fileno()
        for old, owner in list(self._readers.items()):
            if owner is driver and old != fd:
                loop.remove_reader(old)
                del self._readers[old]
        if fd is not None and fd not in self._readers:
            self._readers[fd] = driver
            loop.add_reader(fd, self._readable, driver)

    def _readable(self, driver: Reader) -> None:
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
