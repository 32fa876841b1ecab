"""The server half of NTS in the daemon: where NTS-KE listens, the helper process that
answers it, and the cookie keys it shares with the UDP responder.

NTS-KE listens where NTP does: on the addresses the `interface` rules (and -I, -4, -6)
leave, or on the one `nts listen` names; never on a wildcard the rules exclude. The main
process binds the sockets at start-up (as root, with the NTP sockets) and the helper
(daemon.ntskehelper) serves them. Workers (--workers) only follow the key file.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable, Iterable

from OpenSSL import SSL

from pyntpd.config.model import NtsConfig
from pyntpd.daemon.ipfamilies import family_name, no_family
from pyntpd.daemon.ntskehelper import KeHelper
from pyntpd.daemon.ntsketls import CookieKeyKeeper, KeCounters, NtsKeServer, load_cookie_keys
from pyntpd.proto.access import RestrictTable
from pyntpd.proto.nts import CookieKeys

log = logging.getLogger("pyntpd")


class NtsSetupError(Exception):
    """The NTS-KE server cannot start; the message says why and what to do."""


def listen_hosts(config: NtsConfig, ntp_hosts: Iterable[str]) -> list[str]:
    """`nts listen ADDRESS`, else every address NTP listens on (wildcards included when
    NTP has them), in NTP's order, once each."""
    if config.listen:
        return [config.listen]
    return list(dict.fromkeys(ntp_hosts))


class NtsService:
    def __init__(self, config: NtsConfig, ntp_port: int,
                 now: Callable[[], float] = time.time) -> None:
        assert config.cert is not None and config.key is not None
        self.config = config
        try:
            # Read here, while still root: the helper inherits the loaded context.
            self.server = NtsKeServer(config.cert, config.key, CookieKeys(), ntp_port)
        except (SSL.Error, OSError) as exc:
            raise NtsSetupError(f"NTS: cannot use certificate {config.cert} with key "
                                f"{config.key}: {exc}; check 'nts cert' and 'nts key'") from None
        # Filled by start(): read and written once the daemon is confined, by the -u user
        # and inside the jail (-i), as the drift file is. Root never writes there, so a
        # link the service user planted on the way cannot send root's write elsewhere.
        self.keys = self.server.keys
        self.now = now
        self.keeper = CookieKeyKeeper(config.cookie, self.keys, now)
        self.helper: KeHelper | None = None
        self.hosts: list[str] = []
        self._reported = False

    def bind(self, hosts: list[str]) -> None:
        """The NTS-KE listeners on `hosts` (listen_hosts); NtsSetupError if one fails."""
        self.hosts = hosts
        try:
            self.server.bind(hosts, self.config.port)
        except OSError as exc:
            where = ", ".join(hosts)
            hint = ""
            if no_family(exc):
                family = socket.AF_INET6 if ":" in where else socket.AF_INET
                hint = f" ({family_name(family)} is not available on this host)"
            elif exc.errno == errno.EADDRNOTAVAIL:
                hint = " (no interface has this address)"
            raise NtsSetupError(f"NTS: cannot listen on TCP {where} port {self.config.port}: "
                                f"{exc.strerror}{hint}; see 'nts listen', 'nts port' and "
                                "'interface'") from None

    def set_restrict(self, table: RestrictTable) -> None:
        """`restrict` for NTS-KE clients: `ignore` and `noserve` refuse the connection."""
        self.server.restrict = table
        if self.helper is not None:
            self.helper.send_restrict(table)

    async def start(self, worker: bool = False,
                    prepare_child: Callable[[], None] = lambda: None) -> None:
        """The main process starts the helper (`prepare_child` runs in it first, to close
        what it inherited and must not hold); a worker closes its copies of the sockets."""
        self.keeper.follow = worker
        if worker or not self.server.listening:
            self.server.close_listeners()
        else:
            # Before the fork: the helper starts with the keys the responder has.
            self.keys.keys[:] = load_cookie_keys(self.config.cookie, self.now()).keys
            self.helper = KeHelper(self.server, prepare_child)
            self.keeper.on_rotate = self.helper.send_keys
            await self.helper.start()
        self.keeper.start()

    @property
    def counters(self) -> KeCounters:
        return self.helper.counters if self.helper is not None else self.server.counters

    def reload(self, config: NtsConfig) -> None:
        """SIGHUP: the certificate and key named now (the files may have been renewed in
        place, or the names changed); the listener itself stays as started."""
        if (config.enabled, config.port, config.listen, config.cookie) != (
                self.config.enabled, self.config.port, self.config.listen, self.config.cookie):
            log.warning("NTS: changes to 'nts enable/port/listen/cookie' take effect at the "
                        "next restart")
        if config.enabled and config.cert is not None and config.key is not None:
            self.server.cert, self.server.key = config.cert, config.key
        if self.helper is not None:
            self.helper.reload(self.server.cert, self.server.key)  # it serves: it loads them
        else:
            self.server.reload()

    async def stop(self) -> None:
        self.keeper.close()
        if self.helper is not None:
            await self.helper.stop()
        self.close()

    def close(self) -> None:
        """Every socket closed and the helper gone (killed if stop() did not end it)."""
        self.keeper.close()
        if self.helper is not None:
            self.helper.close()
        self.server.close()
        c = self.counters
        if c.accepted and not self._reported:
            self._reported = True
            log.info("NTS-KE: %s", c.summary())


def nts_service(config: NtsConfig, ntp_port: int) -> NtsService | None:
    return NtsService(config, ntp_port) if config.enabled else None
