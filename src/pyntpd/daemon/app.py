"""The daemon: configuration in, sockets bound, privileges dropped, the loop run.

Start-up order matters for safety: parse the configuration, bind the sockets and create the
pidfile while still root, chroot (-i), drop to the -u user keeping only CAP_SYS_TIME, and
only then start answering packets. The event loop is single-threaded; the serving path is
`UdpServer.drain`, called when a socket is readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyntpd.clock.base import Clock, ClockError
from pyntpd.clock.kernel import SystemClock
from pyntpd.clock.observe import ObserveClock
from pyntpd.config import parse_file, parse_text
from pyntpd.config.broadcast import with_command_line as broadcast_options
from pyntpd.config.defaults import DEFAULT_CONFIG, DEFAULT_CONFIG_TEXT
from pyntpd.config.leapfile import LeapFileWatch
from pyntpd.config.model import InterfaceRule, NtpConfig, ParseResult
from pyntpd.daemon import logsetup, sdnotify
from pyntpd.daemon.broadcast import GroupMembership, cast_listen
from pyntpd.daemon.controlrelay import ControlForwarder, ControlRelay
from pyntpd.daemon.exitcodes import EXIT_PANIC
from pyntpd.daemon.interfaces import (
    cast_interfaces,
    local_addresses,
    own_refids,
    own_refids_of,
    plan_listen,
)
from pyntpd.daemon.invocation import DaemonOptions
from pyntpd.daemon.ipfamilies import IpFamilies, family_name, probe
from pyntpd.daemon.metrics import Endpoints, MetricsBindError, collector
from pyntpd.daemon.mmsg import MmsgServer
from pyntpd.daemon.mmsg import available as mmsg_available
from pyntpd.daemon.mode6 import ControlService
from pyntpd.daemon.ntsketls import preload_client_context
from pyntpd.daemon.ntsservice import NtsSetupError, listen_hosts, nts_service
from pyntpd.daemon.pidfile import PidFile
from pyntpd.daemon.preload import preload
from pyntpd.daemon.privileges import (
    CAP_SYS_TIME,
    Identity,
    chroot_to,
    current_capabilities,
    drop_privileges,
    resolve_identity,
    set_parent_death_signal,
)
from pyntpd.daemon.refclocks import Devices
from pyntpd.daemon.resolver import ResolverProcess, lookup_here
from pyntpd.daemon.serve import (
    ListenAddress,
    UdpServer,
    default_listen,
    open_available,
    open_sockets,
)
from pyntpd.daemon.signd import SigndClient
from pyntpd.daemon.sources import Peer
from pyntpd.daemon.syncloop import Synchroniser, SyncOptions, describe, report_leapfile
from pyntpd.daemon.workers import POLL_INTERVAL, SharedSystemVars, WorkerSet
from pyntpd.driver import take_over
from pyntpd.proto.access import Access, MruLimits, RateLimits, RestrictTable
from pyntpd.proto.auth import KeyRing
from pyntpd.proto.mssntp import MssntpFailure
from pyntpd.proto.server import Responder
from pyntpd.sync.localclock import LocalClockDriver
from pyntpd.types import SystemVars

log = logging.getLogger("pyntpd")

BUILTIN = "<built-in default>"


def _sync_relevant(config: NtpConfig) -> tuple[object, ...]:
    return (config.servers, config.local_clocks, config.tos, config.tinker, config.driftfile,
            config.leapfile, config.leapfile_checkhash, config.flags.ntp, config.nts.ca,
            config.broadcasts, config.ttl_map, config.broadcast_client,
            # Broadcast keys are taken when the synchroniser starts (so are servers' keys:
            # a reload that only changes keys does not reach a `server ... key N` yet).
            *((config.keys, config.trusted_keys)
              if config.broadcasts or config.broadcast_client.listening else ()))


def make_clock(options: DaemonOptions, config: NtpConfig) -> Clock:
    """SystemClock, or ObserveClock with --observe / `disable ntp` (no clock control)."""
    if options.observe or not config.flags.ntp:
        return ObserveClock()
    return SystemClock()


def open_leapfile(config: NtpConfig) -> LeapFileWatch | None:
    """The leapfile, read once now (at start-up as root, before -u and -i)."""
    if not config.leapfile:
        return None
    watch = LeapFileWatch(config.leapfile, checkhash=config.leapfile_checkhash)
    result = watch.check()
    if result is not None:
        report_leapfile(result)
    return watch


class StartupError(Exception):
    """A condition that stops the daemon from starting; the message is for the administrator."""


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    source: str  # file path, or BUILTIN
    result: ParseResult

    @property
    def config(self) -> NtpConfig:
        return self.result.config


def config_source(options: DaemonOptions) -> str:
    if options.config_file:
        return options.config_file
    if not options.builtin_config and os.path.exists(DEFAULT_CONFIG):
        return DEFAULT_CONFIG
    return BUILTIN


def load_config(
    source: str, keys_file: str | None = None, trusted_keys: tuple[int, ...] = (),
    options: DaemonOptions | None = None,
) -> LoadedConfig:
    """Parse the configuration; `keys_file` is -k, which overrides the `keys` directive, and
    `trusted_keys` are -t's, added to `trustedkey`; `options` adds -b, -m and -r."""
    if source == BUILTIN:
        result = parse_text(DEFAULT_CONFIG_TEXT, BUILTIN, keys_file=keys_file)
    else:
        result = parse_file(source, keys_file=keys_file)
    if trusted_keys:
        config = result.config
        result = dataclasses.replace(result, config=dataclasses.replace(
            config, trusted_keys=config.trusted_keys | frozenset(trusted_keys)))
    if options is not None:
        result = broadcast_options(result, options.broadcast_client, options.multicast_groups,
                                   options.broadcast_delay)
    return LoadedConfig(source, result)


def report_diagnostics(result: ParseResult) -> None:
    for diagnostic in result.diagnostics:
        log.log(logging.ERROR if diagnostic.is_error else logging.WARNING, "%s", diagnostic)


def measure_precision(samples: int = 64) -> int:
    """log2 of the smallest step of the clock as read here, as ntpd measures it at start."""
    best = math.inf
    for _ in range(samples):
        a = time.time_ns()
        b = time.time_ns()
        while b == a:
            b = time.time_ns()
        best = min(best, b - a)
    return max(-30, min(0, round(math.log2(best / 1e9))))


def build_access(config: NtpConfig) -> Access:
    mru = config.mru
    if mru.maxdepth is not None:
        limits = MruLimits(max_entries=mru.maxdepth, min_depth=mru.mindepth,
                           max_age=float(mru.maxage))
    else:
        limits = MruLimits.from_maxmem(mru.maxmem or 1024, min_depth=mru.mindepth,
                                       max_age=float(mru.maxage))
    rate = RateLimits(average=config.discard.average, minimum=float(config.discard.minimum))
    return Access(RestrictTable(config.restrictions), rate, limits)


def build_keyring(config: NtpConfig) -> KeyRing:
    return KeyRing.build(config.keys, config.trusted_keys)


def local_driver(config: NtpConfig, precision: int) -> LocalClockDriver | None:
    usable = [c for c in config.local_clocks if not c.noselect]
    if not usable:
        return None
    clock = min(usable, key=lambda c: c.stratum)
    refid = clock.refid.encode("ascii", "replace")[:4].ljust(4, b"\0")
    return LocalClockDriver(stratum=clock.stratum, refid=refid, precision=precision)


def interface_rules(config: NtpConfig, options: DaemonOptions) -> list[InterfaceRule]:
    """`interface` lines, then -I (ntpd: listen on the named interfaces, and only on them)."""
    rules = list(config.interfaces)
    if options.interfaces:
        rules.append(InterfaceRule("ignore", "all"))
        for spec in options.interfaces:
            try:
                network = ipaddress.ip_network(spec, strict=False)
            except ValueError:
                rules.append(InterfaceRule("listen", "name", name=spec))
            else:
                rules.append(InterfaceRule("listen", "address", network=network))
    return rules


def usable_families(host: IpFamilies, options: DaemonOptions) -> IpFamilies:
    """What the host has, narrowed by -4 / -6; StartupError if that leaves nothing."""
    usable = host.restricted(ipv4=not options.ipv6_only, ipv6=not options.ipv4_only)
    if not (usable.ipv4 or usable.ipv6):
        absent = "; ".join(f"{family_name(f)}: {why}" for f, why in host.missing)
        flag = " (-4)" if options.ipv4_only else " (-6)" if options.ipv6_only else ""
        raise StartupError(f"no IP family to serve on{flag}: {absent or 'excluded'}")
    return usable


def listen_addresses(config: NtpConfig, options: DaemonOptions,
                     families: IpFamilies | None = None) -> list[ListenAddress]:
    families = families or usable_families(IpFamilies(), options)
    ipv4, ipv6 = families.ipv4, families.ipv6
    rules = interface_rules(config, options)
    planned = plan_listen(rules, options.port, local_addresses(ipv4, ipv6) if rules else (),
                          ipv4, ipv6)
    if planned is None:
        return default_listen(options.port, ipv4, ipv6)
    if not planned:
        raise StartupError("the interface rules (interface/-I) leave no address to listen on")
    return planned


@dataclass(frozen=True, slots=True)
class Listener:
    """One socket pyntpd listens on, as `--check` states it."""

    service: str  # NTP, NTS-KE, metrics, JSON status
    transport: str  # UDP, TCP, Unix
    where: str  # an address, or a path for a Unix socket
    port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return f"{self.service}: {self.transport} socket {self.where}"
        host = f"[{self.where}]" if ":" in self.where else self.where
        return f"{self.service}: {self.transport} {host} port {self.port}"


def listeners(config: NtpConfig, options: DaemonOptions,
              families: IpFamilies | None = None) -> list[Listener]:
    """Every socket the daemon would listen on with this configuration and these flags, as
    planned (an address this host turns out not to have is skipped at start, with a
    warning). StartupError if the interface rules leave no address."""
    ntp = listen_addresses(config, options, families or usable_families(probe(), options))
    found = [Listener("NTP", "UDP", where.host, where.port) for where in ntp]
    if config.broadcast_client.listening:
        found += [Listener("NTP broadcast client", "UDP", where.host, where.port)
                  for where in cast_listen(ntp, config.broadcast_client, cast_interfaces())]
    if config.nts.enabled:
        found += [Listener("NTS-KE", "TCP", host, config.nts.port)
                  for host in listen_hosts(config.nts, [where.host for where in ntp])]
    if options.metrics:
        found.append(Listener("metrics (--metrics)", "TCP", *options.metrics))
    if options.status_socket:
        found.append(Listener("JSON status (--status-socket)", "Unix", options.status_socket))
    return found


def check_peers_and_workers(config: NtpConfig, workers: int) -> None:
    """A peer's packets come to the NTP port, where SO_REUSEPORT may hand them to a worker,
    which holds no association: symmetric peers need the single serving process. So do
    broadcasts, for the broadcast client."""
    peers = [s for s in config.servers if s.kind == "peer"]
    if peers and workers > 1:
        raise StartupError(
            f"{peers[0].location}: symmetric 'peer' associations need a single serving "
            f"process; remove --workers {workers} or use 'server' instead of 'peer'")
    client = config.broadcast_client
    if client.listening and workers > 1:
        raise StartupError(
            f"{client.location}: a broadcast client needs a single serving process; remove "
            f"--workers {workers} or the broadcastclient/multicastclient line")


def _ignore_signals_while_exiting() -> None:
    """Once exiting, another SIGHUP (a reload), SIGTERM or SIGINT is moot; a late signal
    must not kill the daemon before it wrote its drift file and removed its pidfile."""
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, stop: Callable[[], None], reload: Callable[[], None]
) -> None:
    """Python-level handlers, not loop.add_signal_handler: asyncio learns which signal
    came from one byte per signal in its wakeup pipe, and a SIGHUP storm fills the pipe, so
    a SIGTERM's byte can be dropped and the SIGTERM lost. These handlers run whatever the
    pipe holds; SIGHUPs arriving before the reload has run are one reload."""
    pending = [False]

    def reload_now() -> None:
        pending[0] = False
        reload()

    def on_stop(signum: int, frame: object) -> None:
        loop.call_soon_threadsafe(stop)

    def on_hup(signum: int, frame: object) -> None:
        if not pending[0]:
            pending[0] = True
            loop.call_soon_threadsafe(reload_now)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """What asyncio would print on stderr (gone once detached): a callback that raised, a
    task whose exception nobody retrieved. Into the daemon's log, with the traceback."""
    exc = context.get("exception")
    log.error("internal error: %s", context.get("message") or "in the event loop",
              exc_info=exc if isinstance(exc, BaseException) else None)


class Daemon:
    def __init__(self, options: DaemonOptions, loaded: LoadedConfig) -> None:
        check_peers_and_workers(loaded.config, options.workers)
        self.options = options
        self.loaded = loaded
        self.refclock_devices = Devices()  # opened in confine(), while still root
        self.precision = measure_precision()
        # Once, at start (ntpd: ipv4_works / ipv6_works): every socket follows from this.
        self.host_families = probe()
        for family, why in self.host_families.missing:
            log.warning("%s is not available on this host (%s): serving and polling over "
                        "%s only", family_name(family), why,
                        "IPv4" if family == socket.AF_INET6 else "IPv6")
        self.responder = Responder(build_access(loaded.config), keys=build_keyring(loaded.config))
        self.responder.broadcast_client = loaded.config.broadcast_client.listening
        try:
            self.nts = nts_service(loaded.config.nts, options.port)
        except NtsSetupError as exc:
            raise StartupError(str(exc)) from None
        self.responder.nts_keys = self.nts.keys if self.nts is not None else None
        self.server: UdpServer | MmsgServer = (
            MmsgServer(self.responder) if mmsg_available() else UdpServer(self.responder))
        self.clock = make_clock(options, loaded.config)
        self.sync: Synchroniser | None = None
        self.leapfile = open_leapfile(loaded.config)
        self.exit_code = 0
        self.sockets: list[socket.socket] = []
        self.socket_sets: list[list[socket.socket]] = []
        # Broadcast client sockets beyond the serving ones (interface rules: daemon/broadcast)
        self.cast_sockets: list[socket.socket] = []
        self.groups = GroupMembership()
        self.pidfile: PidFile | None = None
        self.shared: SharedSystemVars | None = None
        # --workers: mode 6 forwarded to the main process (one socketpair per worker; the
        # main process keeps one end of each, a worker the other end of its own).
        self.control_links: list[socket.socket] = []
        self._forwarder: ControlForwarder | None = None
        self.workers = WorkerSet()
        self.is_worker = False
        self._shared_seq = 0
        self._stop: asyncio.Event | None = None
        self._shared_timer: asyncio.TimerHandle | None = None
        self.started_at = time.time()
        self.endpoints: Endpoints | None = None  # --metrics, --status-socket
        self._running_endpoints: Endpoints | None = None
        self.signd: SigndClient | None = None  # `restrict ... mssntp`: Samba's ntp_signd
        self.resolver: ResolverProcess | None = None  # -i: name lookups outside the jail
        self._last_status = ""
        # -w: the forking parent's pipe, told "SYNC" once synchronised, then closed.
        self.sync_waiter: int | None = None

    # --- start-up, as root -------------------------------------------------------------

    @property
    def families(self) -> IpFamilies:
        return usable_families(self.host_families, self.options)

    def bind(self) -> None:
        addresses = listen_addresses(self.loaded.config, self.options, self.families)
        count = self.options.workers
        try:
            # The first set shows which addresses this host has; the workers' sets are
            # made of exactly those, so every process serves the same addresses.
            first, skipped = open_available(addresses, reuse_port=count > 1)
            for exc in skipped:
                log.warning("%s: not listening there", exc.strerror)
            if not first:
                raise StartupError("no address to listen on: " + "; ".join(
                    str(exc.strerror) for exc in skipped))
            self.socket_sets.append([sock for _, sock in first])
            usable = [where for where, _ in first]
            for _ in range(1, count):
                self.socket_sets.append(open_sockets(usable, reuse_port=True))
        except BaseException:
            self.close()
            raise
        self.sockets = self.socket_sets[0]
        client = self.loaded.config.broadcast_client
        if client.listening:
            try:
                self.cast_sockets = open_sockets(cast_listen(usable, client,
                                                             cast_interfaces()))
            except BaseException:
                self.close()
                raise
            self._join_groups(self.loaded.config)
        if self.nts is not None:
            try:
                # Where NTP listens (the interface rules), or `nts listen`.
                self.nts.bind(listen_hosts(self.nts.config, [where.host for where in usable]))
            except NtsSetupError as exc:
                self.close()
                raise StartupError(str(exc)) from None
        if self.options.metrics or self.options.status_socket:
            try:
                self.endpoints = Endpoints(self.options.metrics, self.options.status_socket)
            except MetricsBindError as exc:
                self.close()
                raise StartupError(str(exc)) from None
        for sock in self.sockets + self.cast_sockets:
            where = sock.getsockname()
            log.info("listening on %s port %d", where[0], where[1])

    def _join_groups(self, config: NtpConfig) -> None:
        """multicastclient: join the groups (again, after a reload that changed them)."""
        self.groups.leave()
        groups = config.broadcast_client.groups
        if groups:
            joined = self.groups.join(self.sockets + self.cast_sockets, groups,
                                      cast_interfaces())
            if joined:
                log.info("joined multicast group %s", ", ".join(joined))
            else:
                log.error("multicastclient: could not join %s on any multicast-capable "
                          "interface; no multicast broadcast will be heard", ", ".join(groups))

    def write_pidfile(self) -> None:
        path = self.options.pidfile or self.loaded.config.pidfile
        if path:
            self.pidfile = PidFile(path)
            self.pidfile.acquire()

    def set_priority(self) -> None:
        """-N (highest nice value) and -P N (SCHED_FIFO priority N), as far as allowed."""
        try:
            if self.options.nice:
                os.setpriority(os.PRIO_PROCESS, 0, -20)
            if self.options.priority is not None:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.options.priority))
        except OSError as exc:
            log.warning("cannot raise the process priority (-N/-P): %s", exc.strerror)

    def confine(self) -> None:
        # The clocks' devices while still root: -u could not open root's SHM units 0/1.
        self.refclock_devices = Devices.open(self.loaded.config.refclocks)
        # Checked while /proc is still visible (before -i); -u keeps the capability.
        if self.clock.can_adjust:
            effective = current_capabilities().get("CapEff", 0)
            if not effective >> CAP_SYS_TIME & 1:
                raise StartupError(
                    "no permission to adjust the clock (CAP_SYS_TIME): run as root, grant the"
                    " capability, or only measure and serve with --observe (or 'disable ntp')")
        self.set_priority()
        # Connect to the notify socket while its path is still visible (before -i).
        sdnotify.status("starting")
        identity: Identity | None = None
        if self.options.user:
            # Resolved before chroot: the user database is usually not inside the jail.
            identity = resolve_identity(self.options.user, self.options.group)
        # Whatever would be loaded on first use, loaded while the files are within reach.
        preload()
        if any(server.nts for server in self.loaded.config.servers):
            preload_client_context(self.loaded.config.nts.ca)
        if self.options.jaildir:
            # Forked before the chroot: names are looked up where /etc is.
            self.resolver = ResolverProcess.start(identity)
            chroot_to(self.options.jaildir)
        if identity is not None:
            logsetup.hand_over(identity.uid, identity.gid, identity.name)
            drop_privileges(identity, keep_sys_time=self.clock.can_adjust)
            log.info("running as %s (uid %d, gid %d), keeping %s", identity.name, identity.uid,
                     identity.gid, "CAP_SYS_TIME only" if self.clock.can_adjust
                     else "no capability (the clock is only observed)")

    # --- running ----------------------------------------------------------------------

    def start_workers(self) -> None:
        """Fork one process per extra socket set (--workers N); call after confine()."""
        if len(self.socket_sets) < 2:
            return
        self.shared = SharedSystemVars()
        main_pid = os.getpid()
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                 for _ in self.socket_sets[1:]]
        for index in range(1, len(self.socket_sets)):
            pid = os.fork()
            if pid == 0:
                # However the main process ends (even SIGKILL), its workers end with it.
                set_parent_death_signal(signal.SIGTERM)
                if os.getppid() != main_pid:
                    os._exit(1)
                self.control_links = [pairs[index - 1][1]]
                for pair in pairs:
                    for end in pair:
                        if end is not self.control_links[0]:
                            end.close()
                os._exit(self._become_worker(index))
            self.workers.pids.append(pid)
        self.control_links = [main_end for main_end, _ in pairs]
        for _, worker_end in pairs:
            worker_end.close()
        for extra in self.socket_sets[1:]:
            for sock in extra:
                sock.close()
        log.info("serving from %d processes (SO_REUSEPORT)", len(self.socket_sets))

    def _become_worker(self, index: int) -> int:
        code = 1
        try:
            self.is_worker = True
            self.pidfile = None  # the main process owns it
            self._close_sync_waiter()  # the main process tells the parent
            self._release_endpoints(keep_path=True)  # the main process reports (and owns it)
            if self.resolver is not None:
                self.resolver.forget()  # the main process looks names up
                self.resolver = None
            self.workers = WorkerSet()
            sdnotify.close()
            os.environ.pop("NOTIFY_SOCKET", None)  # only the main process speaks to systemd
            for number, sock_set in enumerate(self.socket_sets):
                if number != index:
                    for sock in sock_set:
                        sock.close()
            self.sockets = self.socket_sets[index]
            self.socket_sets = []
            code = self.run()
        except BaseException:  # a worker must never fall back into the parent's code path
            log.exception("worker %d failed", index)
        finally:
            self.close()
        return code

    def _become_ke_helper(self) -> None:
        """In the NTS-KE helper, just forked: it serves NTS-KE only, so it lets go of the
        NTP sockets, the status endpoints, the signd socket, the resolver and the workers'
        links it inherited (the main process keeps its own copies); the pidfile and systemd
        stay the main process's."""
        self.pidfile = None
        self._close_sync_waiter()  # the main process tells the parent (-w)
        sdnotify.close()
        os.environ.pop("NOTIFY_SOCKET", None)
        # Closing a copy leaves the main process's sockets (and their multicast groups)
        # as they are. The refclock devices are left alone: closing one may reset it.
        inherited = [*self.sockets, *self.cast_sockets,
                     *(s for sock_set in self.socket_sets for s in sock_set)]
        for sock in inherited:
            with contextlib.suppress(OSError):
                sock.close()
        self.sockets, self.cast_sockets, self.socket_sets = [], [], []
        for endpoints in (self.endpoints, self._running_endpoints):
            if endpoints is not None:
                endpoints.release(keep_path=True)
        if self.signd is not None:
            self.signd.forget()
        if self.resolver is not None:
            self.resolver.forget()  # the main process looks names up
            self.resolver = None
        for link in self.control_links:  # the workers' mode 6 links are the main process's
            with contextlib.suppress(OSError):
                link.close()
        self.control_links = []

    def run(self) -> int:
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_log_loop_exception)
        self._stop = asyncio.Event()
        endpoints: Endpoints | None = None
        if self.is_worker:
            await self._first_publication()
        for sock in self.sockets + self.cast_sockets:
            loop.add_reader(sock.fileno(), self.server.drain, sock)
        self._configure_signd(self.loaded.config)
        self.server.on_mssntp = self._sign
        _install_signal_handlers(loop, self._stop.set, self.reload)
        if self.nts is not None:
            self.nts.set_restrict(self.responder.access.table)
            await self.nts.start(worker=self.is_worker, prepare_child=self._become_ke_helper)
        if self.is_worker:
            self._poll_shared()
            if self.control_links:
                forwarder = ControlForwarder(self.control_links[0], self.sockets,
                                             self.responder)
                self.responder.control_enabled = True
                self.server.on_control = forwarder.forward
                self._forwarder = forwarder  # _poll_shared sends it our counters
        else:
            # The clock becomes ours: whatever another daemon left running stops here.
            # Every way out of this process goes through the finally below, where the
            # synchroniser hands it back.
            take_over(self.clock)
            self.sync = self._new_synchroniser(self.loaded.config)
            self.sync.start()
            # Mode 6 is answered by the main process only: workers do not hold the
            # associations, so they forward what the kernel hands them (controlrelay).
            control = ControlService(self.responder, lambda: self.sync)
            self.server.on_control = control.answer
            relay = ControlRelay(self.control_links, self.sockets, control.answer_queued)
            control.counters = lambda: relay.counters(self.responder.counters)
            for link in self.control_links:
                loop.add_reader(link.fileno(), relay.drain, link)
            self.server.on_peer = lambda sock: self.sync.peer_packets(sock) if self.sync else None
            if self.endpoints is not None:
                endpoints, self.endpoints = self.endpoints, None  # stopped below
                self._running_endpoints = endpoints
                await endpoints.start(collector(
                    self.responder, control, self.started_at,
                    nts_ke=(lambda: self.nts.counters) if self.nts is not None else None))
            state = self.describe_state()
            log.info("serving time: %s; clock %s", state,
                     "disciplined" if self.clock.can_adjust else "observed, never adjusted")
            sdnotify.ready(state)
        try:
            await self._stop.wait()
        finally:
            _ignore_signals_while_exiting()
            if endpoints is not None:
                await endpoints.stop()
            if self.nts is not None:
                await self.nts.stop()
            if self.signd is not None:
                self.signd.close()
            if self.sync is not None:
                self.sync.close()
            if not self.is_worker:
                sdnotify.stopping()
                self.workers.stop()
            if self._shared_timer is not None:
                self._shared_timer.cancel()
            for sock in self.sockets + self.cast_sockets:
                loop.remove_reader(sock.fileno())
        c = self.responder.counters
        log.info("%s exiting: %d packets received, %d served, %d dropped",
                 "worker" if self.is_worker else "daemon", c.received, c.served,
                 c.dropped_total)
        return self.exit_code

    def _configure_signd(self, config: NtpConfig) -> None:
        """The ntp_signd client for the configuration: kept if its directory is the same,
        replaced if it moved, closed when no restrict rule says `mssntp` any more."""
        directory = config.signd_directory
        if self.signd is not None and (
                directory is None or SigndClient.socket_path(directory) != self.signd.path):
            self.signd.close()
            self.signd = None
        if directory is not None and self.signd is None:
            self.signd = SigndClient(directory, self.responder.counters,
                                     asyncio.get_running_loop())
            if not self.is_worker:
                log.info("MS-SNTP (restrict ... mssntp): replies signed by ntp_signd at %s",
                         self.signd.path)

    def _sign(self, sock: socket.socket) -> None:
        """After a batch: the MS-SNTP requests it queued go to ntp_signd."""
        requests = self.responder.take_mssntp()
        if self.signd is not None:
            self.signd.submit(requests, sock)
        else:
            for _ in requests:
                self.responder.counters.refuse_mssntp(MssntpFailure.UNAVAILABLE)

    def stop(self, code: int = 0) -> None:
        self.exit_code = code
        if code == EXIT_PANIC:
            # systemctl status shows the last STATUS= beside "status=150".
            sdnotify.status("panic: the sources' time is beyond the panic threshold; set the "
                            "clock by hand, then start pyntpd again")
        if self._stop is not None:
            self._stop.set()

    def describe_state(self) -> str:
        s = self.responder.system
        if not s.synchronised:
            return "unsynchronised (stratum 16)"
        peer = self.sync.last.system_peer if self.sync and self.sync.last else None
        if isinstance(peer, Peer):
            return f"synchronised to {describe(peer)}, stratum {s.stratum}"
        refid = s.refid.rstrip(b"\0").decode("ascii", "replace")
        return f"stratum {s.stratum}, refid {refid}"

    def _new_synchroniser(self, config: NtpConfig) -> Synchroniser:
        options = SyncOptions(
            panic_gate=self.options.panic_gate, force_step_once=self.options.force_step_once,
            slew_only=self.options.slew_only, once=self.options.quit_after_set,
            family=self.families.lookup_family,
            driftfile=self.options.driftfile or config.driftfile,
            statsdir=self.options.statsdir, own_refids=self._own_refids(),
            start_frequency=self._kernel_frequency(),
            lookup=self.resolver.lookup if self.resolver is not None else lookup_here,
        )
        return Synchroniser(config, options, self.clock, self.precision,
                            local_driver(config, self.precision), self._publish, self.stop,
                            self.leapfile, self._peers_changed,
                            counters=lambda: self.responder.counters,
                            responder=self.responder, serving=self.sockets,
                            refclock_devices=self.refclock_devices)

    def _own_refids(self) -> frozenset[bytes]:
        """This host's addresses as refids (a source stating one is synchronised to us),
        listed again at each (re)start of the engine: addresses come and go."""
        bound = [sock.getsockname()[0] for sock in self.sockets]
        try:
            return own_refids(bound)
        except OSError as exc:
            log.warning("cannot list this host's addresses (%s): timing loops through them "
                        "go unnoticed", exc.strerror or exc)
            return own_refids_of(bound)

    def _kernel_frequency(self) -> float | None:
        """The frequency the clock runs at now: taken over at start, or handed back by the
        synchroniser a reload replaced. None if only observed (or unreadable)."""
        if not self.clock.can_adjust:
            return None
        try:
            return self.clock.read_back().frequency_ppm
        except ClockError as exc:
            log.error("cannot read the clock's frequency: %s", exc)
            return None

    def _publish(self, system: SystemVars) -> None:
        self.responder.set_system(system)
        if self.shared is not None:
            self.shared.publish(system)
        if self.sync_waiter is not None and self.synchronised_to_a_source():
            # OSError: the parent is gone (killed by hand), so nobody is waiting.
            with contextlib.suppress(OSError):
                os.write(self.sync_waiter, b"SYNC\n")
            self._close_sync_waiter()
        # Every engine update lands here; systemd hears only when the state reads differently.
        state = self.describe_state()
        if state != self._last_status:
            self._last_status = state
            sdnotify.status(state)

    def synchronised_to_a_source(self) -> bool:
        """Synchronised as -w means it: to a configured server or peer. The local clock
        driver and orphan mode stand in when those are missing, so they count only when the
        configuration names no other source."""
        if not self.responder.system.synchronised:
            return False
        peer = self.sync.last.system_peer if self.sync and self.sync.last else None
        return isinstance(peer, Peer) or not self.loaded.config.servers

    def _close_sync_waiter(self) -> None:
        if self.sync_waiter is not None:
            with contextlib.suppress(OSError):
                os.close(self.sync_waiter)
            self.sync_waiter = None

    def _peers_changed(self, hosts: list[tuple[int, bool]]) -> None:
        """`restrict source`: the template applies to the servers' addresses as resolved."""
        config = self.loaded.config
        table = RestrictTable(config.restrictions)
        template = table.source_template
        if template is not None and hosts:
            table = table.with_hosts(hosts, template)
        self.responder.access.replace_table(table)
        if self.nts is not None:
            self.nts.set_restrict(table)

    async def _first_publication(self, timeout: float = 10.0) -> None:
        """Workers serve nothing until the main process has said what to serve: requests
        wait in the socket queue meanwhile instead of getting an unsynchronised answer."""
        deadline = time.monotonic() + timeout
        while self.shared is not None and time.monotonic() < deadline:
            self._shared_seq, system = self.shared.read(self._shared_seq)
            if system is not None:
                self.responder.set_system(system)
                return
            await asyncio.sleep(0.005)

    def _poll_shared(self) -> None:
        """Workers: adopt what the main process last published."""
        if self.shared is not None:
            self._shared_seq, system = self.shared.read(self._shared_seq)
            if system is not None:
                self.responder.set_system(system)
        if self._forwarder is not None:
            self._forwarder.publish()
        loop = asyncio.get_running_loop()
        self._shared_timer = loop.call_later(POLL_INTERVAL, self._poll_shared)

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; keep the running one if the new one is bad."""
        if self._stop is not None and self._stop.is_set():
            return  # exiting: SIGHUP and SIGTERM came in the same loop iteration
        logsetup.reopen()
        sdnotify.reloading()
        self.workers.signal_all(signal.SIGHUP)
        try:
            loaded = load_config(self.loaded.source, self.options.keyfile,
                                 self.options.trusted_keys, self.options)
        except Exception as exc:  # the running daemon must survive any reload failure
            log.error("reload failed: %s; keeping the running configuration", exc)
            sdnotify.ready(self.describe_state())
            return
        try:
            check_peers_and_workers(loaded.config, self.options.workers)
        except StartupError as exc:
            log.error("reload rejected: %s; keeping the running configuration", exc)
            sdnotify.ready(self.describe_state())
            return
        if loaded.result.has_errors:
            report_diagnostics(loaded.result)
            log.error("reload rejected: %d error(s) in %s; keeping the running configuration",
                      len(loaded.result.errors), loaded.source)
            sdnotify.ready(self.describe_state())
            return
        report_diagnostics(loaded.result)
        old = self.loaded.config
        new = loaded.config
        self.loaded = loaded
        if (new.discard, new.mru) != (old.discard, old.mru):
            self.responder.access = build_access(new)
        self.responder.keys = build_keyring(new)
        self.responder.broadcast_client = new.broadcast_client.listening
        if new.broadcast_client.groups != old.broadcast_client.groups:
            self._join_groups(new)
        self._configure_signd(new)
        if self.nts is not None:
            self.nts.reload(new.nts)  # new certificate for new NTS-KE sessions
        hosts = self.sync.peer_hosts() if self.sync is not None else []
        self._peers_changed(hosts)
        if self.sync is not None and _sync_relevant(new) != _sync_relevant(old):
            # New sources or discipline settings: start over with them, keeping what the
            # old engine learnt about the oscillator (written to the driftfile on close).
            self.sync.close()
            if (new.leapfile, new.leapfile_checkhash) != (old.leapfile, old.leapfile_checkhash):
                self.leapfile = open_leapfile(new)
            elif self.leapfile is not None and (result := self.leapfile.check()) is not None:
                report_leapfile(result)
            self.sync = self._new_synchroniser(new)
            self.sync.start()
        elif self.sync is not None:
            self.sync.reconfigure_stats(new)
            self.sync.check_leapfile()
        log.info("configuration reloaded from %s: %s", loaded.source, self.describe_state())
        sdnotify.ready(self.describe_state())

    def close(self) -> None:
        self.refclock_devices.close()
        self.workers.stop()
        self.groups.leave()
        for sock_set in [self.sockets, self.cast_sockets, *self.socket_sets]:
            for sock in sock_set:
                with contextlib.suppress(OSError):
                    sock.close()
        for link in self.control_links:
            with contextlib.suppress(OSError):
                link.close()
        self.control_links = []
        self.sockets = []
        self.cast_sockets = []
        self.socket_sets = []
        if self.nts is not None:
            self.nts.close()
        self._release_endpoints()
        if self.resolver is not None:
            self.resolver.close()
            self.resolver = None
        if self.pidfile is not None:
            if self.exit_code == EXIT_PANIC:
                self.pidfile.note_panic()  # what `pyntpctl status` reports, under SysV
            self.pidfile.release()
            self.pidfile = None

    def _release_endpoints(self, keep_path: bool = False) -> None:
        if self.endpoints is not None:
            self.endpoints.release(keep_path)
            self.endpoints = None
