"""The daemon side of synchronisation: sources on the wire, the engine, the clock.

`SourceManager` (daemon/sources) owns sockets and associations; `SyncEngine` (sync/engine)
decides; the one `Driver` (pyntpd/driver) applies its decisions, as it does in the simulator.
What is the daemon's own: the asyncio scheduler, publishing the system variables to the
responder (and worker processes), the log lines an administrator reads, the drift file and
the hourly sysstats record, and exiting on panic or after -q.

The leapfile is watched here: read again when it changes (hourly, and at SIGHUP through
`check_leapfile`), its list handed to the engine, its expiry warned about once.

Symmetric peers (`peer HOST key N`) share the serving sockets: given the `responder`, this
tells it the configured peers' addresses and ports (the only sources of symmetric packets it
hands over), and `peer_packets` passes those to their associations after each batch, and
the broadcasts it queued to the broadcast client. The `broadcast` lines are sent from here
too (daemon/broadcast), stating the system variables of the last update.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyntpd.clock.base import Clock
from pyntpd.config.leapfile import LeapFileResult, LeapFileWatch, ntp_date
from pyntpd.config.model import NtpConfig
from pyntpd.daemon.broadcast import BroadcastSender
from pyntpd.daemon.driftfile import DriftFile
from pyntpd.daemon.exitcodes import EXIT_PANIC
from pyntpd.daemon.interfaces import cast_interfaces
from pyntpd.daemon.refclocks import Devices, RefclockRunner, build
from pyntpd.daemon.resolver import Lookup, lookup_here
from pyntpd.daemon.sources import Peer, SourceManager
from pyntpd.driver import Driver, Timer
from pyntpd.logonce import LogOnce
from pyntpd.proto.auth import KeyRing
from pyntpd.proto.broadcast import BroadcastClient
from pyntpd.proto.server import Responder, ServerCounters
from pyntpd.proto.timestamp import NTP_UNIX_OFFSET
from pyntpd.refclock.base import RefclockPeer
from pyntpd.refclock.pps import prefer_numbers
from pyntpd.stats.filegen import Statistics, StatsSettings
from pyntpd.stats.statsformat import SysCounts, sys_counts
from pyntpd.sync.engine import ORPHAN_REFID, PanicExit, SyncConfig, SyncEngine, SyncResult
from pyntpd.sync.localclock import LocalClockDriver
from pyntpd.types import Sample, SystemVars, Tally, Unfit

log = logging.getLogger("pyntpd")

DRIFT_CHECK_INTERVAL = 3600.0
LEAPFILE_CHECK_INTERVAL = 3600.0  # ntpd looks at its leapfile hourly, too
SYSSTATS_INTERVAL = 3600.0  # ntpd writes sysstats (and resets its counters) hourly


@dataclass(frozen=True, slots=True)
class SyncOptions:
    panic_gate: bool = False
    force_step_once: bool = False  # -G
    slew_only: bool = False
    once: bool = False
    family: int = 0
    driftfile: str | None = None
    statsdir: str | None = None  # -s: wins over the statsdir directive
    own_refids: frozenset[bytes] = frozenset()  # this host's addresses (timing loops)
    # ppm the kernel was running at when the clock became ours (taken over at start, or
    # handed back by the engine a reload replaced); None if only observed.
    start_frequency: float | None = None
    lookup: Lookup = lookup_here  # name lookups: here, or outside the jail (-i)


def describe(peer: Peer) -> str:
    where = peer.address if peer.config.port == 123 else f"{peer.address} port {peer.config.port}"
    return where if peer.address == peer.config.address else f"{where} ({peer.config.address})"


class Synchroniser:
    def __init__(
        self,
        config: NtpConfig,
        options: SyncOptions,
        clock: Clock,
        precision: int,
        local_clock: LocalClockDriver | None,
        publish: Callable[[SystemVars], None],
        finish: Callable[[int], None],
        leapfile: LeapFileWatch | None = None,
        peers_changed: Callable[[list[tuple[int, bool]]], None] = lambda hosts: None,
        counters: Callable[[], ServerCounters] | None = None,
        responder: Responder | None = None,
        serving: list[socket.socket] | None = None,
        refclock_devices: Devices | None = None,
    ) -> None:
        self.responder = responder
        self.peers_changed = peers_changed
        self.counters = counters
        self.config = config
        self.options = options
        self.clock = clock
        self.publish = publish
        self.finish = finish
        self.leapfile = leapfile
        self.log_once = LogOnce(log)
        self.drift = DriftFile(options.driftfile) if options.driftfile else None
        initial = config.tinker.freq
        if initial is None and self.drift is not None and clock.can_adjust:
            initial = self.drift.read()
            if initial is not None:
                log.info("frequency %.3f ppm from %s", initial, options.driftfile)
        if initial is None and options.start_frequency is not None:
            log.info("no frequency from a drift file: starting from the kernel's, %+.3f ppm",
                     options.start_frequency)
        self.engine = SyncEngine(
            SyncConfig(
                tos=config.tos, tinker=config.tinker, panic_gate=options.panic_gate,
                force_step_once=options.force_step_once,
                slew_only=options.slew_only, once=options.once,
                discipline=clock.can_adjust, local_clock=local_clock, precision=precision,
                initial_frequency=initial, own_refids=options.own_refids,
                start_frequency=options.start_frequency,
                # Before the first sync a fast slew as far as the clock carries it (ADJ_TICK).
                fast_slew_ppm=getattr(clock, "max_frequency_ppm", 0.0),
            ),
            self.now(),
        )
        if leapfile is not None and leapfile.table is not None:
            self.engine.set_leap_file(leapfile.table.leap_list())
        keys = KeyRing.build(config.keys, config.trusted_keys)
        cast = config.broadcast_client
        self.broadcast_client = BroadcastClient(
            keys, delay=cast.delay, max_associations=config.tos.maxclock,
            floor=config.tos.floor, ceiling=config.tos.ceiling, local_precision=precision,
            max_distance=config.tos.maxdist,
            own_addresses=frozenset((int(i.address), i.address.version == 6)
                                    for i in cast_interfaces()),
        ) if cast.listening else None
        self.sources = SourceManager(
            config.servers, self._on_sample, clock.now, local_precision=precision,
            max_distance=config.tos.maxdist, max_sources=config.tos.maxclock,
            family=options.family, on_change=self._sources_changed,
            keys=keys, nts_ca=config.nts.ca,
            serving=list(serving or ()), system=self._stated_system,
            broadcast=self.broadcast_client, broadcast_location=cast.location,
            lookup=options.lookup, kernel_time=clock.kernel_time,
        )
        self.broadcaster = BroadcastSender(
            config.broadcasts, config.ttl_map, keys, list(serving or ()), clock.now,
            self._stated_system)
        self.last_logged: dict[object, object] = {}
        self._known: set[Peer] = set()
        self._drift_timer: asyncio.TimerHandle | None = None
        self._sysstats_timer: asyncio.TimerHandle | None = None
        self._leapfile_timer: asyncio.TimerHandle | None = None
        self.stats = Statistics(StatsSettings.from_config(config, options.statsdir),
                                started=self.now(), counts=self._sys_counts())
        self.driver = Driver(
            self.engine, clock, self, stats=self.stats,
            on_result=self._on_result, on_step=self._on_step,
            on_panic=self._on_panic, on_done=self._on_done, on_error=self._on_error)
        peers, drivers = build(config.refclocks, precision, numbered=self.prefer_numbers,
                               devices=refclock_devices)
        self.refclocks = RefclockRunner(peers, drivers, self.now, self._on_refclock_sample,
                                        self.stats.record_clock)
        for peer in peers:
            self.driver.add_source(peer, peer, peer.address)

    @property
    def last(self) -> SyncResult | None:
        return self.driver.last

    def call_at(self, local: float, callback: Callable[[], None]) -> Timer:
        """The driver's Scheduler: the asyncio loop waits on the monotonic clock."""
        return asyncio.get_running_loop().call_later(max(local - self.now(), 0.0), callback)

    def now(self) -> float:
        return self.clock.now() / 1e9

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        self.driver.update()
        self.sources.start()
        self.broadcaster.start()
        self.refclocks.start()
        if self.drift is not None and self.clock.can_adjust:
            self._schedule_drift()
        self._schedule_sysstats()
        if self.leapfile is not None:
            self._schedule_leapfile()

    def close(self) -> None:
        self.driver.stop()
        self.broadcaster.close()
        self.refclocks.close()
        for timer in (self._drift_timer, self._sysstats_timer, self._leapfile_timer):
            if timer is not None:
                timer.cancel()
        self.sources.close()
        if self.responder is not None:
            self.responder.peer_addresses = frozenset()
        self.write_drift()
        # The counts since the last hourly record would be lost otherwise.
        self._write_sysstats()
        self.stats.close()

    def reconfigure_stats(self, config: NtpConfig) -> None:
        """A reload that changed nothing else: new statistics settings, statsdir checked
        again, every file reopened at its next line."""
        self.stats.reconfigure(StatsSettings.from_config(config, self.options.statsdir))
        self.config = config

    def write_drift(self) -> None:
        """At exit (and hourly): keep what the discipline learnt about the oscillator."""
        if self.drift is not None and self.clock.can_adjust and self.engine.frequency_known:
            self.drift.write(self.engine.frequency_ppm)

    def _schedule_drift(self) -> None:
        loop = asyncio.get_running_loop()
        self._drift_timer = loop.call_later(DRIFT_CHECK_INTERVAL, self._drift_due)

    def _sys_counts(self) -> SysCounts:
        return sys_counts(self.counters()) if self.counters is not None else SysCounts()

    def _schedule_sysstats(self) -> None:
        loop = asyncio.get_running_loop()
        self._sysstats_timer = loop.call_later(SYSSTATS_INTERVAL, self._sysstats_due)

    def _sysstats_due(self) -> None:
        self._write_sysstats()
        self._schedule_sysstats()

    def _write_sysstats(self) -> None:
        if self.counters is not None:
            self.stats.record_sys(self.now(), self._sys_counts())

    def _schedule_leapfile(self) -> None:
        loop = asyncio.get_running_loop()
        self._leapfile_timer = loop.call_later(LEAPFILE_CHECK_INTERVAL, self._leapfile_due)

    def _leapfile_due(self) -> None:
        self.check_leapfile()
        self._schedule_leapfile()

    def check_leapfile(self) -> None:
        """Hourly and at SIGHUP: a changed leapfile is read again and takes effect at once;
        one that no longer parses leaves the list read before in force."""
        if self.leapfile is None:
            return
        result = self.leapfile.check(int(self.now()) + NTP_UNIX_OFFSET)
        if result is None:
            return
        report_leapfile(result)
        if result.table is None:
            if self.leapfile.table is not None:
                log.error("keeping the leap second list read before from %s",
                          self.leapfile.path)
            return
        self.engine.set_leap_file(result.table.leap_list())
        self.driver.update()
        log.info("leap second file %s read again", self.leapfile.path)

    def _drift_due(self) -> None:
        assert self.drift is not None
        ppm = self.engine.frequency_ppm
        if self.engine.frequency_known and self.drift.should_write(time.monotonic(), ppm):
            self.drift.write(ppm)
        self._schedule_drift()

    # --- the engine -------------------------------------------------------------------

    def _log_changes(self, result: SyncResult) -> None:
        """What an administrator wants in the log: who we follow, and who is lying."""
        previous = self.last_logged
        # Who we follow; without anyone, whether we serve as synchronised all the same (the
        # local clock, orphan mode). The start, unsynchronised, is no news.
        peer = result.system_peer
        state = (result.system.synchronised, result.system.refid)
        changed = state != previous.get("state", (False, SystemVars().refid))
        if peer is not previous.get("peer") or (peer is None and changed):
            if isinstance(peer, Peer):
                log.info("synchronised to %s (stratum %d), offset %+.6f s", describe(peer),
                         result.system.stratum, result.offset)
            elif isinstance(peer, RefclockPeer):
                log.info("synchronised to %s (%s, stratum %d), offset %+.6f s", peer.name,
                         peer.address, result.system.stratum, result.offset)
            elif result.system.synchronised and result.system.refid == ORPHAN_REFID:
                log.info("orphan parent: no source left, serving stratum %d (tos orphan)",
                         result.system.stratum)
            elif result.system.synchronised:
                log.info("synchronised to the local clock (stratum %d)", result.system.stratum)
            else:
                log.warning("no selectable source: serving as unsynchronised")
        previous["peer"] = peer
        previous["state"] = state
        for peer, status in result.sources.items():
            if not isinstance(peer, Peer):
                continue
            tally = status.tally
            if previous.get(peer) != tally:
                if tally == Tally.FALSETICKER:
                    log.warning("%s is a falseticker (offset %+.6f s): not followed",
                                describe(peer), status.offset)
                elif previous.get(peer) == Tally.FALSETICKER:
                    log.info("%s is no longer a falseticker", describe(peer))
                previous[peer] = tally
            loop = bool(status.unfit & Unfit.LOOP)
            if previous.get((peer, "loop"), False) != loop:
                if loop:
                    refid = peer.assoc.refid
                    log.warning("%s is synchronised to us or to our own system peer (its "
                                "reference %s): a timing loop, not followed", describe(peer),
                                ".".join(str(b) for b in refid) if refid else "?")
                else:
                    log.info("%s no longer closes a timing loop", describe(peer))
                previous[(peer, "loop")] = loop

    def _sources_changed(self) -> None:
        current = set(self.sources.peers)
        for peer in current - self._known:
            self.driver.add_source(peer, peer.assoc, peer.address, peer.local_address())
        for peer in self._known - current:
            self.driver.remove_source(peer)
        self._known = current
        self.peers_changed(self.peer_hosts())
        if self.responder is not None:
            self.responder.peer_addresses = self.sources.symmetric_addresses()

    def peer_packets(self, sock: socket.socket) -> None:
        """After a batch: the symmetric packets the responder took from configured peers,
        and the broadcasts it took for the broadcast client."""
        if self.responder is not None:
            self.sources.deliver(sock, self.responder.take_peer())
            self.sources.deliver_broadcast(self.responder.take_broadcast())

    def _on_step(self, step: float) -> None:
        self.sources.clock_stepped()
        self.broadcaster.clock_stepped(step)

    def _stated_system(self) -> SystemVars:
        return self.last.system if self.last is not None else SystemVars()

    def peer_hosts(self) -> list[tuple[int, bool]]:
        return [(p.address_int, p.family == socket.AF_INET6) for p in self.sources.peers]

    def _on_sample(self, peer: Peer, sample: Sample) -> None:
        self.driver.on_sample(peer, sample)

    def prefer_numbers(self) -> bool:
        """ntpd's condition for a PPS driver's pulses: a prefer peer (other than a PPS
        clock) survives selection and the system offset is under 0.4 s."""
        return prefer_numbers(self.driver.last)

    def _on_refclock_sample(self, peer: RefclockPeer, sample: Sample) -> None:
        self.driver.on_sample(peer, sample)

    def _on_step(self, step: float) -> None:
        # (the driver told every source, reference clocks included, of the step)
        self.sources.clock_stepped()

    def _on_result(self, result: SyncResult, now: float) -> None:
        if result.stepped:
            log.warning("clock stepped by %+.6f s", result.step)
        self.publish(result.system)
        self._log_changes(result)
        if result.leap.expired and self.leapfile is not None and self.leapfile.table:
            expiry = self.leapfile.table.expiry
            self.log_once.warning(
                ("leapfile expired", self.leapfile.path, expiry),
                "leap second file %s expired on %s: the sources' leap indicators decide;"
                " install a current copy", self.leapfile.path,
                ntp_date(expiry) if expiry is not None else "(no expiry date)")

    def _on_panic(self, panic: PanicExit) -> None:
        log.error("%s; exiting with status %d (panic)", panic, EXIT_PANIC)
        self.finish(EXIT_PANIC)

    def _on_error(self, exc: BaseException) -> None:
        log.error("synchronisation failed, exiting: %s", exc, exc_info=exc)
        self.finish(1)

    def _on_done(self, result: SyncResult) -> None:
        log.info("clock set (offset %+.6f s); exiting as -q asks", result.offset)
        self.finish(0)


def report_leapfile(result: LeapFileResult) -> None:
    for diagnostic in result.diagnostics:
        log.log(logging.ERROR if diagnostic.is_error else logging.WARNING, "%s", diagnostic)
