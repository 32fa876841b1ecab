"""How the daemon was invoked: ntpd's flags and pyntpd's own options, as one value.

The command line (cli/options) builds it; the daemon only ever sees this value, so that it
can be started by something other than argv (tests, the service manager's wrapper).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    config_file: str | None = None  # None: /etc/ntp.conf if present, else the embedded one
    builtin_config: bool = False
    foreground: bool = False
    debug_level: int = 0
    pidfile: str | None = None
    user: str | None = None
    group: str | None = None
    panic_gate: bool = False  # -g: allow the first adjustment to exceed the panic threshold
    force_step_once: bool = False  # -G
    quit_after_set: bool = False  # -q
    slew_only: bool = False  # -x: step threshold 600 s
    driftfile: str | None = None
    keyfile: str | None = None
    logfile: str | None = None
    statsdir: str | None = None
    trusted_keys: tuple[int, ...] = ()
    ipv4_only: bool = False
    ipv6_only: bool = False
    jaildir: str | None = None
    interfaces: tuple[str, ...] = ()
    nice: bool = False
    priority: int | None = None
    wait_sync: float | None = None
    port: int = 123
    check_only: bool = False
    workers: int = 1
    observe: bool = False  # measure and serve, never adjust the clock
    metrics: tuple[str, int] | None = None  # --metrics: (address, TCP port)
    status_socket: str | None = None  # --status-socket: Unix socket serving JSON status
    broadcast_client: bool = False  # -b: broadcastclient
    multicast_groups: tuple[str, ...] = ()  # -m GROUP: multicastclient GROUP
    broadcast_delay: float | None = None  # -r SECONDS: broadcastdelay
    warnings: tuple[str, ...] = field(default=())
