"""ntpd 4.2.8's command line, with ntpd's meanings, plus pyntpd's own long options.

Flags that only make sense for features pyntpd refuses (saveconfig) are errors that say
why; flags that tune things pyntpd does differently are accepted with a warning, so an
existing init script keeps working. -b, -m and -r are the broadcast client's directives,
under the same rule as in the file: only with a trusted key (config/broadcast).
"""

from __future__ import annotations

import argparse
import ipaddress

from pyntpd import __version__
from pyntpd.config.defaults import DEFAULT_CONFIG
from pyntpd.daemon.invocation import DaemonOptions


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message}\nTry '{self.prog} --help'.\n")


def _user_group(value: str) -> tuple[str, str | None]:
    user, _, group = value.partition(":")
    if not user:
        raise argparse.ArgumentTypeError(f"'{value}': expected USER or USER:GROUP")
    return user, group or None


def _port(value: str) -> int:
    try:
        port = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def _key_id(value: str) -> int:
    try:
        key = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a key id") from None
    if not 1 <= key <= 65535:
        raise argparse.ArgumentTypeError(f"key id {key} is outside 1-65535")
    return key


def _workers(value: str) -> int:
    try:
        n = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number") from None
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError(f"--workers {n}: choose 1 to 64")
    return n


METRICS_DEFAULT_ADDRESS = "127.0.0.1"


def metrics_endpoint(value: str) -> tuple[str, int]:
    """--metrics PORT | ADDR:PORT | [IPV6]:PORT -> (address, port); loopback by default.

    A flag rather than an ntp.conf directive: ntp.conf stays a file ntpd can read."""
    host, port_text = METRICS_DEFAULT_ADDRESS, value
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise argparse.ArgumentTypeError(f"'{value}': expected [IPV6]:PORT, e.g. [::1]:9975")
    elif ":" in value:
        host, _, port_text = value.rpartition(":")
        if ":" in host:
            raise argparse.ArgumentTypeError(
                f"'{value}': put an IPv6 address in brackets, e.g. [::1]:9975")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{host}' is not an IP address (--metrics takes PORT, ADDR:PORT or [IPV6]:PORT)"
        ) from None
    if address.version == 6 and address.scope_id:
        raise argparse.ArgumentTypeError(f"'{host}': scoped IPv6 addresses are not supported")
    return str(address), _port(port_text)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pyntpd",
        description="pyntpd: NTP daemon, a hardened drop-in replacement for ntpd 4.2.8",
    )
    family = p.add_mutually_exclusive_group()
    family.add_argument("-4", "--ipv4", action="store_true", help="use IPv4 only")
    family.add_argument("-6", "--ipv6", action="store_true", help="use IPv6 only")
    p.add_argument("-a", "--authreq", action="store_true",
                   help="require authentication: always the case in pyntpd, so accepted and "
                        "changes nothing")
    p.add_argument("-A", "--authnoreq", action="store_true",
                   help="ntpd: do not require authentication; ignored with a warning (pyntpd "
                        "always requires it)")
    p.add_argument("-b", "--bcastsync", action="store_true",
                   help="broadcast client (broadcastclient): only broadcasts signed with a "
                        "trusted key are used")
    p.add_argument("-c", "--configfile", metavar="FILE",
                   help=f"configuration file (default {DEFAULT_CONFIG} if it exists, "
                        "else the embedded default)")
    p.add_argument("-d", "--debug-level", action="count", default=0,
                   help="more debugging output (repeatable); stays in the foreground")
    p.add_argument("-D", "--set-debug-level", type=int, metavar="N", help="debug level N")
    p.add_argument("-f", "--driftfile", metavar="FILE", help="frequency (drift) file")
    p.add_argument("-g", "--panicgate", action="store_true",
                   help="allow the first clock adjustment to exceed the panic threshold")
    p.add_argument("-G", "--force-step-once", action="store_true",
                   help="step the clock once at start, however small the offset")
    p.add_argument("-i", "--jaildir", metavar="DIR", help="chroot into DIR after start-up")
    p.add_argument("-I", "--interface", action="append", default=[], metavar="IFACE",
                   help="listen on this interface or address (repeatable)")
    p.add_argument("-k", "--keyfile", metavar="FILE", help="symmetric keys file")
    p.add_argument("-l", "--logfile", metavar="FILE", help="log to FILE")
    p.add_argument("-L", "--novirtualips", action="store_true",
                   help="ntpd: do not listen on virtual addresses; ignored with a warning "
                        "(pyntpd listens on the wildcard or the -I/interface addresses)")
    p.add_argument("-m", "--mcastname", action="append", default=[], metavar="ADDR",
                   help="multicast client of group ADDR (multicastclient ADDR): only signed "
                        "broadcasts are used")
    p.add_argument("-M", "--modifymmtimer", action="store_true",
                   help="Windows only; ignored with a warning")
    p.add_argument("-n", "--nofork", action="store_true", help="stay in the foreground")
    p.add_argument("-N", "--nice", action="store_true",
                   help="run at the highest nice priority (-20), as far as allowed")
    p.add_argument("-p", "--pidfile", metavar="FILE", help="write the process id to FILE")
    p.add_argument("-P", "--priority", type=int, metavar="N",
                   help="real-time (SCHED_FIFO) priority N, as far as allowed")
    p.add_argument("-q", "--quit", action="store_true",
                   help="set the time once and exit (needs synchronisation)")
    p.add_argument("-r", "--propagationdelay", metavar="S",
                   help="broadcast delay in seconds (broadcastdelay S)")
    p.add_argument("--saveconfigquit", metavar="FILE",
                   help="ntpd: save the configuration and exit; refused")
    p.add_argument("-s", "--statsdir", metavar="DIR", help="statistics directory")
    p.add_argument("-t", "--trustedkey", action="append", default=[], type=_key_id,
                   metavar="KEY", help="trust this key id (repeatable)")
    p.add_argument("-u", "--user", type=_user_group, metavar="USER[:GROUP]",
                   help="drop root privileges to USER (and GROUP) after start-up")
    p.add_argument("-U", "--updateinterval", type=int, metavar="S",
                   help="interface rescan interval; ignored with a warning")
    p.add_argument("--var", action="append", default=[],
                   help="ntpd setvar; ignored with a warning")
    p.add_argument("--dvar", action="append", default=[],
                   help="ntpd setvar; ignored with a warning")
    p.add_argument("-w", "--wait-sync", type=float, metavar="S",
                   help="forking start: the parent returns once the daemon is synchronised "
                        "(exit 0) or after S seconds (exit ETIMEDOUT, 110)")
    p.add_argument("-x", "--slew", action="store_true",
                   help="slew only: raise the step threshold to 600 s")
    p.add_argument("--version", action="version", version=f"pyntpd {__version__}")
    p.add_argument("--port", type=_port, default=123, metavar="N",
                   help="UDP port to serve on (pyntpd; default 123)")
    p.add_argument("--check", action="store_true",
                   help="check the configuration, print every problem, start nothing")
    p.add_argument("--builtin-config", action="store_true",
                   help="ignore /etc/ntp.conf and use the embedded default configuration")
    p.add_argument("--observe", action="store_true",
                   help="measure and serve but never adjust the clock (containers without "
                        "CAP_SYS_TIME); same as 'disable ntp'")
    p.add_argument("--workers", type=_workers, default=1, metavar="N",
                   help="serve from N processes sharing the port (SO_REUSEPORT)")
    p.add_argument("--metrics", type=metrics_endpoint, metavar="[ADDR:]PORT",
                   help="serve Prometheus metrics (/metrics) and JSON status (/status) over "
                        f"HTTP on this TCP port (address {METRICS_DEFAULT_ADDRESS} unless "
                        "given; [::1]:PORT for IPv6)")
    p.add_argument("--status-socket", metavar="PATH",
                   help="serve the JSON status on this Unix socket (mode 0600; removed at exit)")
    return p


class OptionError(Exception):
    pass


def parse_args(argv: list[str]) -> DaemonOptions:
    args = build_parser().parse_args(argv)
    for group in args.mcastname:
        try:
            multicast = ipaddress.ip_address(group).is_multicast
        except ValueError:
            multicast = False
        if not multicast:
            raise OptionError(f"-m {group}: not a multicast group address (e.g. 224.0.1.1)")
    delay = None
    if args.propagationdelay is not None:
        try:
            delay = float(args.propagationdelay)
        except ValueError:
            raise OptionError(f"-r {args.propagationdelay}: not a number of seconds") from None
        if not -10.0 <= delay <= 10.0:
            raise OptionError(f"-r {args.propagationdelay}: out of range -10..10 s")
    if args.saveconfigquit:
        raise OptionError(
            "--saveconfigquit is refused: pyntpd never writes its configuration "
            "(the saveconfig path was an attack vector, CVE-2015-7851); copy ntp.conf instead"
        )
    warnings = []
    if args.authnoreq:
        warnings.append("-A ignored: pyntpd always requires authentication where ntpd's -a did")
    if args.modifymmtimer:
        warnings.append("-M ignored: it is a Windows option")
    if args.var or args.dvar:
        warnings.append("--var/--dvar ignored: pyntpd serves no user-defined variables")
    if args.updateinterval is not None:
        warnings.append("-U ignored: pyntpd listens on wildcard or configured addresses")
    if args.novirtualips:
        warnings.append("-L ignored: pyntpd listens on the wildcard or the -I/interface "
                        "addresses, never on each virtual address")
    if args.metrics and not ipaddress.ip_address(args.metrics[0]).is_loopback:
        warnings.append(
            f"--metrics listens on {args.metrics[0]}, not loopback: anyone who can reach "
            f"TCP port {args.metrics[1]} there can read this server's state; firewall it")
    if args.configfile and args.builtin_config:
        raise OptionError("-c and --builtin-config contradict each other; choose one")
    debug = args.set_debug_level if args.set_debug_level is not None else args.debug_level
    foreground = args.nofork or debug > 0 or args.check
    if args.wait_sync and args.wait_sync > 0 and foreground:
        # ntpd forks anyway; under a service manager (-n) that would break its tracking.
        warnings.append("-w ignored: it makes the forking parent wait, and -n/-d do not fork")
    user, group = args.user if args.user else (None, None)
    return DaemonOptions(
        config_file=args.configfile,
        builtin_config=args.builtin_config,
        foreground=foreground,
        debug_level=debug,
        pidfile=args.pidfile,
        user=user,
        group=group,
        panic_gate=args.panicgate,
        force_step_once=args.force_step_once,
        quit_after_set=args.quit,
        slew_only=args.slew,
        driftfile=args.driftfile,
        keyfile=args.keyfile,
        logfile=args.logfile,
        statsdir=args.statsdir,
        trusted_keys=tuple(args.trustedkey),
        ipv4_only=args.ipv4,
        ipv6_only=args.ipv6,
        jaildir=args.jaildir,
        interfaces=tuple(args.interface),
        nice=args.nice,
        priority=args.priority,
        wait_sync=args.wait_sync,
        port=args.port,
        check_only=args.check,
        workers=args.workers,
        observe=args.observe,
        metrics=args.metrics,
        status_socket=args.status_socket,
        broadcast_client=args.bcastsync,
        multicast_groups=tuple(args.mcastname),
        broadcast_delay=delay,
        warnings=tuple(warnings),
    )
