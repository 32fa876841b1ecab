"""The daemon: configuration in, sockets bound, privileges dropped, the loop run.

Start-up order matters for safety: parse the configuration, bind the sockets and create the
pidfile while still root, chroot (-i), drop to the -u user keeping only CAP_SYS_TIME, and
only then start answering packets. The event loop is single-threaded; the serving path is
`UdpServer.drain`, called when a socket is readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import signal
import socket
import time
from dataclasses import dataclass

from pyntpd.cli.options import DEFAULT_CONFIG, DaemonOptions
from pyntpd.config import parse_file, parse_text
from pyntpd.config.defaults import DEFAULT_CONFIG_TEXT
from pyntpd.config.model import InterfaceRule, NtpConfig, ParseResult
from pyntpd.daemon import logsetup, sdnotify
from pyntpd.daemon.interfaces import local_addresses, plan_listen
from pyntpd.daemon.mmsg import MmsgServer
from pyntpd.daemon.mmsg import available as mmsg_available
from pyntpd.daemon.pidfile import PidFile
from pyntpd.daemon.privileges import Identity, chroot_to, drop_privileges, resolve_identity
from pyntpd.daemon.serve import ListenAddress, UdpServer, default_listen, open_sockets
from pyntpd.daemon.workers import POLL_INTERVAL, SharedSystemVars, WorkerSet
from pyntpd.proto.access import Access, MruLimits, RateLimits, RestrictTable
from pyntpd.proto.localclock import LOCAL_POLL_SECONDS, LocalClockDriver
from pyntpd.proto.server import Responder, SystemVars

log = logging.getLogger("pyntpd")

BUILTIN = "<built-in default>"


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


def load_config(source: str, keys_file: str | None = None) -> LoadedConfig:
    """Parse the configuration; `keys_file` is -k, which overrides the `keys` directive."""
    if source == BUILTIN:
        return LoadedConfig(source, parse_text(DEFAULT_CONFIG_TEXT, BUILTIN, keys_file=keys_file))
    return LoadedConfig(source, parse_file(source, keys_file=keys_file))


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


def listen_addresses(config: NtpConfig, options: DaemonOptions) -> list[ListenAddress]:
    ipv4 = not options.ipv6_only
    ipv6 = not options.ipv4_only
    rules = interface_rules(config, options)
    planned = plan_listen(rules, options.port, local_addresses() if rules else (), ipv4, ipv6)
    if planned is None:
        return default_listen(options.port, ipv4, ipv6)
    if not planned:
        raise StartupError("the interface rules (interface/-I) leave no address to listen on")
    return planned


class Daemon:
    def __init__(self, options: DaemonOptions, loaded: LoadedConfig) -> None:
        self.options = options
        self.loaded = loaded
        self.precision = measure_precision()
        self.responder = Responder(build_access(loaded.config))
        self.server: UdpServer | MmsgServer = (
            MmsgServer(self.responder) if mmsg_available() else UdpServer(self.responder))
        self.driver = local_driver(loaded.config, self.precision)
        self.sockets: list[socket.socket] = []
        self.socket_sets: list[list[socket.socket]] = []
        self.pidfile: PidFile | None = None
        self.shared: SharedSystemVars | None = None
        self.workers = WorkerSet()
        self.is_worker = False
        self._shared_seq = 0
        self._stop: asyncio.Event | None = None
        self._local_timer: asyncio.TimerHandle | None = None

    # --- start-up, as root -------------------------------------------------------------

    def bind(self) -> None:
        addresses = listen_addresses(self.loaded.config, self.options)
        count = self.options.workers
        try:
            for _ in range(count):
                self.socket_sets.append(open_sockets(addresses, reuse_port=count > 1))
        except BaseException:
            self.close()
            raise
        self.sockets = self.socket_sets[0]
        for sock in self.sockets:
            where = sock.getsockname()
            log.info("listening on %s port %d", where[0], where[1])

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
        self.set_priority()
        # Connect to the notify socket while its path is still visible (before -i).
        sdnotify.status("starting")
        identity: Identity | None = None
        if self.options.user:
            # Resolved before chroot: the user database is usually not inside the jail.
            identity = resolve_identity(self.options.user, self.options.group)
        if self.options.jaildir:
            chroot_to(self.options.jaildir)
        if identity is not None:
            drop_privileges(identity)
            log.info("running as %s (uid %d, gid %d), keeping CAP_SYS_TIME only",
                     identity.name, identity.uid, identity.gid)

    # --- running ----------------------------------------------------------------------

    def start_workers(self) -> None:
        """Fork one process per extra socket set (--workers N); call after confine()."""
        if len(self.socket_sets) < 2:
            return
        self.shared = SharedSystemVars()
        self.shared.publish(self._current_system())  # workers answer correctly from the start
        for index in range(1, len(self.socket_sets)):
            pid = os.fork()
            if pid == 0:
                os._exit(self._become_worker(index))
            self.workers.pids.append(pid)
        for extra in self.socket_sets[1:]:
            for sock in extra:
                sock.close()
        log.info("serving from %d processes (SO_REUSEPORT)", len(self.socket_sets))

    def _become_worker(self, index: int) -> int:
        code = 1
        try:
            self.is_worker = True
            self.pidfile = None  # the main process owns it
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

    def run(self) -> int:
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sock in self.sockets:
            loop.add_reader(sock.fileno(), self.server.drain, sock)
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.is_worker:
            self._poll_shared()
        else:
            self._update_local_clock()
            state = self.describe_state()
            log.info("serving time: %s", state)
            sdnotify.ready(state)
        try:
            await self._stop.wait()
        finally:
            if not self.is_worker:
                sdnotify.stopping()
                self.workers.stop()
            if self._local_timer is not None:
                self._local_timer.cancel()
            for sock in self.sockets:
                loop.remove_reader(sock.fileno())
        c = self.responder.counters
        log.info("%s exiting on signal: %d packets received, %d served, %d dropped",
                 "worker" if self.is_worker else "daemon", c.received, c.served,
                 c.dropped_total)
        return 0

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def describe_state(self) -> str:
        s = self.responder.system
        if not s.synchronised:
            return "unsynchronised (stratum 16)"
        refid = s.refid.rstrip(b"\0").decode("ascii", "replace")
        return f"stratum {s.stratum}, refid {refid}"

    def _update_local_clock(self) -> None:
        # Until upstream synchronisation exists, the local clock driver (if configured) is
        # the only source; without one the server honestly says it is unsynchronised.
        system = self._current_system()
        self.responder.set_system(system)
        if self.shared is not None:
            self.shared.publish(system)
        loop = asyncio.get_running_loop()
        self._local_timer = loop.call_later(LOCAL_POLL_SECONDS, self._update_local_clock)

    def _current_system(self) -> SystemVars:
        if self.driver is None:
            return SystemVars(precision=self.precision)
        return self.driver.system_vars(time.time())

    def _poll_shared(self) -> None:
        """Workers: adopt what the main process last published."""
        if self.shared is not None:
            self._shared_seq, system = self.shared.read(self._shared_seq)
            if system is not None:
                self.responder.set_system(system)
        loop = asyncio.get_running_loop()
        self._local_timer = loop.call_later(POLL_INTERVAL, self._poll_shared)

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; keep the running one if the new one is bad."""
        logsetup.reopen()
        sdnotify.reloading()
        self.workers.signal_all(signal.SIGHUP)
        try:
            loaded = load_config(self.loaded.source, self.options.keyfile)
        except Exception as exc:  # the running daemon must survive any reload failure
            log.error("reload failed: %s; keeping the running configuration", exc)
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
        self.responder.access.replace_table(RestrictTable(new.restrictions))
        if (new.discard, new.mru) != (old.discard, old.mru):
            self.responder.access = build_access(new)
        if not self.is_worker:
            self.driver = local_driver(new, self.precision)
            if self._local_timer is not None:
                self._local_timer.cancel()
            self._update_local_clock()
        log.info("configuration reloaded from %s: %s", loaded.source, self.describe_state())
        sdnotify.ready(self.describe_state())

    def close(self) -> None:
        self.workers.stop()
        for sock_set in [self.sockets, *self.socket_sets]:
            for sock in sock_set:
                with contextlib.suppress(OSError):
                    sock.close()
        self.sockets = []
        self.socket_sets = []
        if self.pidfile is not None:
            self.pidfile.release()
            self.pidfile = None
