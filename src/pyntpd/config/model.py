"""The typed, immutable result of parsing ntp.conf.

Every value has a default, so an empty file yields a usable (if serverless) configuration.
Defaults are ntpd 4.2.8's compiled-in values (from its sources where they disagree with its
HTML docs; docs/configuration.md lists them).

Source locations are carried for diagnostics but excluded from equality (`compare=False`):
two files that say the same thing with different layout are the same configuration, which is
what a reload wants to know.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Literal

from pyntpd.proto.access_types import RestrictFlag, RestrictRule
from pyntpd.sync.tuning import TinkerConfig, TosConfig

from .diagnostics import Diagnostic, Location
from .keys import SymmetricKey

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

AF_INET = int(socket.AF_INET)
AF_INET6 = int(socket.AF_INET6)

NO_LOCATION = Location("<none>")
# ntpd's --enable-ntp-signd default, and what RHEL/CentOS's ntp was built with; Debian's
# Samba listens in /var/lib/samba/ntp_signd, which `ntpsigndsocket` then has to say.
DEFAULT_SIGND_DIRECTORY = "/var/run/ntp_signd"

ServerKind = Literal["server", "pool", "peer"]
InterfaceAction = Literal["listen", "ignore", "drop"]
InterfaceMatch = Literal["all", "ipv4", "ipv6", "wildcard", "name", "address"]
FilegenType = Literal["none", "pid", "day", "week", "month", "year", "age"]

STATISTICS_NAMES = (
    "loopstats",
    "peerstats",
    "sysstats",
    "clockstats",
    "cryptostats",
    "rawstats",
    "protostats",
    "timingstats",
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """A `server`, `pool` or `peer` line. The address stays as written: names are resolved
    by the daemon (and re-resolved when they fail), never by the parser."""

    kind: ServerKind
    address: str
    port: int = 123
    family: int | None = None
    prefer: bool = False
    iburst: bool = False
    burst: bool = False
    minpoll: int = 6
    maxpoll: int = 10
    key: int | None = None
    version: int = 4
    noselect: bool = False
    true: bool = False
    nts: bool = False
    nts_port: int = 4460  # NTS-KE port (chrony's `ntsport`)
    xleave: bool = False  # interleaved mode (client/server, as chrony's)
    location: Location = field(default=NO_LOCATION, compare=False)


@dataclass(frozen=True, slots=True)
class LocalClock:
    """ntpd's undisciplined LOCAL driver, `server 127.127.1.U` (+ `fudge`): a last-resort
    source that lets an isolated network agree on this host's clock."""

    unit: int = 0
    stratum: int = 5
    refid: str = "LOCL"
    time1: float = 0.0
    prefer: bool = False
    noselect: bool = False
    minpoll: int = 6
    maxpoll: int = 10
    location: Location = field(default=NO_LOCATION, compare=False)

    @property
    def address(self) -> str:
        return f"127.127.1.{self.unit}"


# The reference clock drivers pyntpd builds (besides LOCAL, type 1): type -> ntpd's name
# for it on the billboard (`SHM(0)`) and its default refid (docs/refclocks.md).
REFCLOCK_DRIVERS: dict[int, tuple[str, str]] = {
    20: ("NMEA", "GPS"),
    22: ("PPS", "PPS"),
    28: ("SHM", "SHM"),
    46: ("GPSD_JSON", "GPSD"),
}


@dataclass(frozen=True, slots=True)
class RefclockConfig:
    """`server 127.127.T.U ...` for a driver other than LOCAL, with its `fudge` line
    applied. `mode` is the server line's mode word (ntpd keeps it in the peer's ttl);
    `flags` the fudge flag1..flag4 bits (1, 2, 4, 8), as ntpd's `sloppyclockflag`."""

    type: int
    unit: int
    mode: int = 0
    prefer: bool = False
    noselect: bool = False
    true: bool = False
    minpoll: int = 6
    maxpoll: int = 10
    time1: float = 0.0
    time2: float = 0.0
    stratum: int = 0
    refid: str | None = None  # None: the driver's own
    flags: int = 0
    location: Location = field(default=NO_LOCATION, compare=False)

    @property
    def address(self) -> str:
        return f"127.127.{self.type}.{self.unit}"

    @property
    def name(self) -> str:
        """As ntpq shows it: SHM(0), GPSD_JSON(128)."""
        return f"{REFCLOCK_DRIVERS[self.type][0]}({self.unit})"


@dataclass(frozen=True, slots=True)
class SystemFlags:
    """`enable`/`disable` flags with ntpd's defaults."""

    auth: bool = True
    bclient: bool = False
    calibrate: bool = False
    kernel: bool = True
    monitor: bool = True
    ntp: bool = True
    stats: bool = True
    mode7: bool = False
    peer_clear_digest_early: bool = True
    unpeer_crypto_early: bool = True
    unpeer_crypto_nak_early: bool = True
    unpeer_digest_early: bool = True


@dataclass(frozen=True, slots=True)
class DiscardConfig:
    average: int = 3  # log2 s between a client's packets, on average
    minimum: int = 2  # s between any two packets from one client
    monitor: int = 3000  # s; MRU preemption age


@dataclass(frozen=True, slots=True)
class MruConfig:
    """`mru` limits. maxdepth/maxmem (and the alloc/mem pairs) are alternatives: whichever
    was written last wins, as in ntpd, so the other is None."""

    maxdepth: int | None = None
    maxmem: int | None = 1024  # KiB
    mindepth: int = 600
    maxage: int = 64
    initalloc: int | None = None
    initmem: int | None = 4  # KiB
    incalloc: int | None = None
    incmem: int | None = 4  # KiB


@dataclass(frozen=True, slots=True)
class FilegenConfig:
    """A `filegen` line. None means "not said here": `file` defaults to the name, and whether
    the set is written follows `statistics` unless `enable`/`disable` was given."""

    name: str
    file: str | None = None
    type: FilegenType = "day"
    link: bool = True
    enabled: bool | None = None
    location: Location = field(default=NO_LOCATION, compare=False)


@dataclass(frozen=True, slots=True)
class InterfaceRule:
    """An `interface`/`nic` rule (or pyntpd's `listen ADDRESS`); the last match wins."""

    action: InterfaceAction
    match: InterfaceMatch
    name: str | None = None
    network: IPNetwork | None = None
    location: Location = field(default=NO_LOCATION, compare=False)


@dataclass(frozen=True, slots=True)
class NtsConfig:
    """The `nts` directive (config/ntsconfig.py)."""

    enabled: bool = False  # the NTS-KE server (clients need only `server ... nts`)
    cert: str | None = None
    key: str | None = None
    ca: str | None = None  # None: the system's CA store
    cookie: str = "/var/lib/pyntpd/nts-keys"
    port: int = 4460
    listen: str | None = None  # None: every address


# ntpd's ttl mapping vector (MAX_TTL entries): `broadcast ... ttl N` picks entry N, and the
# `ttl` directive replaces the list. 0 leaves the kernel's multicast default (1 hop).
MAX_TTL = 8
DEFAULT_TTL_MAP = tuple(i * 256 // MAX_TTL for i in range(MAX_TTL))
DEFAULT_BROADCAST_DELAY = -0.050  # ntpd [Bug 3031]: calibrate, and give up above 50 ms


@dataclass(frozen=True, slots=True)
class BroadcastConfig:
    """A `broadcast ADDRESS` line: mode 5 packets to a broadcast or multicast address (or a
    unicast one) every 2**minpoll s while synchronised, signed when `key` is given."""

    address: str
    key: int | None = None
    ttl: int = 0  # index into NtpConfig.ttl_map, as in ntpd
    version: int = 4
    minpoll: int = 6  # ntpd's NTP_MINDPOLL: broadcasts every 64 s
    location: Location = field(default=NO_LOCATION, compare=False)


@dataclass(frozen=True, slots=True)
class BroadcastClientConfig:
    """`broadcastclient` / `enable bclient`, `multicastclient`, `broadcastdelay`: whether
    mode 5 packets are listened to. Only authenticated ones ever are (config/broadcast)."""

    enabled: bool = False  # broadcastclient, enable bclient: broadcasts to our subnets
    groups: tuple[str, ...] = ()  # multicastclient: multicast groups joined
    # broadcastdelay: > 0 a fixed round-trip delay (no calibration); otherwise calibrate
    # with a client/server exchange and refuse a broadcaster farther than |delay|.
    delay: float = DEFAULT_BROADCAST_DELAY
    location: Location = field(default=NO_LOCATION, compare=False)

    @property
    def listening(self) -> bool:
        return self.enabled or bool(self.groups)


@dataclass(frozen=True, slots=True)
class NtpConfig:
    servers: tuple[ServerConfig, ...] = ()
    local_clocks: tuple[LocalClock, ...] = ()
    refclocks: tuple[RefclockConfig, ...] = ()
    restrictions: tuple[RestrictRule, ...] = ()
    driftfile: str | None = None
    keys_file: str | None = None
    keys: tuple[SymmetricKey, ...] = ()
    trusted_keys: frozenset[int] = frozenset()
    request_key: int | None = None
    control_key: int | None = None
    statistics: tuple[str, ...] = ()
    statsdir: str | None = None
    statsdir_location: Location = field(default=NO_LOCATION, compare=False)
    filegens: tuple[FilegenConfig, ...] = ()
    logfile: str | None = None
    leapfile: str | None = None
    leapfile_checkhash: bool = True
    pidfile: str | None = None
    # Samba's ntp_signd socket directory (DIR/socket), for `restrict ... mssntp`.
    ntpsigndsocket: str | None = None
    tos: TosConfig = field(default_factory=TosConfig)
    tinker: TinkerConfig = field(default_factory=TinkerConfig)
    flags: SystemFlags = SystemFlags()
    discard: DiscardConfig = DiscardConfig()
    mru: MruConfig = MruConfig()
    interfaces: tuple[InterfaceRule, ...] = ()
    nts: NtsConfig = NtsConfig()
    broadcasts: tuple[BroadcastConfig, ...] = ()
    ttl_map: tuple[int, ...] = DEFAULT_TTL_MAP
    broadcast_client: BroadcastClientConfig = BroadcastClientConfig()
    # Every file read to build this config, in order; a reload watches these.
    files: tuple[str, ...] = field(default=(), compare=False)

    def key(self, key_id: int) -> SymmetricKey | None:
        for k in self.keys:
            if k.key_id == key_id:
                return k
        return None

    @property
    def signd_directory(self) -> str | None:
        """Where ntp_signd listens, if any restrict rule asks for MS-SNTP signing: the
        `ntpsigndsocket` directory, else ntpd's compiled-in default (as RHEL builds it)."""
        if not any(rule.flags & RestrictFlag.MSSNTP for rule in self.restrictions):
            return None
        return self.ntpsigndsocket or DEFAULT_SIGND_DIRECTORY

    def stats_enabled(self, name: str) -> bool:
        """Whether statistics set `name` is written, combining `statistics`, `filegen` and
        `enable/disable stats` as ntpd does."""
        if not self.flags.stats:
            return False
        enabled = name in self.statistics
        for fg in self.filegens:
            if fg.name == name and fg.enabled is not None:
                enabled = fg.enabled
        return enabled


@dataclass(frozen=True, slots=True)
class ParseResult:
    config: NtpConfig
    diagnostics: list[Diagnostic]
    # Files this configuration needs that could not be read: the file itself, an include
    # file that exists, the keys file whose keys it uses. Each is also in `diagnostics`.
    # The daemon refuses to start on any: without them it would run more open than written.
    unreadable: tuple[Diagnostic, ...] = ()

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def fatal(self) -> list[Diagnostic]:
        """Errors that stop the daemon from starting (config.context.Context.fail_closed)."""
        return [d for d in self.diagnostics if d.fatal]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]
