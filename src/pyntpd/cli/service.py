"""`pyntpctl start|stop|restart|reload|status`: the seed's init script, done right.

    pyntpctl start   [--pidfile FILE] [--pyntpd PROGRAM] [--timeout S] [-- DAEMON_ARGS...]
    pyntpctl stop    [--pidfile FILE] [--timeout S]
    pyntpctl restart [--pidfile FILE] [--pyntpd PROGRAM] [--stop-timeout S]
                     [--start-timeout S] [-- DAEMON_ARGS...]
    pyntpctl reload  [--pidfile FILE]
    pyntpctl status  [--pidfile FILE] [--port N] [--host ADDR]

The daemon's arguments are DAEMON_ARGS, else $PYNTPD_OPTS (split as the shell would), else
"-g -u ntp:ntp"; `-p FILE` in them names the pidfile, else --pidfile, else /run/pyntpd.pid
(added to the daemon's arguments). Every command judges the pidfile the same way
(daemon.pidfile.inspect_pidfile): missing, a live NTP daemon, stale, a live process that is
not an NTP daemon (never signalled), garbage, a symlink (never followed, never removed), or
unreadable. Exit codes are LSB's: for status 0 running, 1 not running but a pidfile remains,
3 not running, 4 cannot tell; for the actions 0 success (also: stop of a stopped daemon,
start of a running one), 1 failure, 2 bad arguments, 4 not permitted, 7 (reload) not running.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyntpd.cli.options import OptionError, parse_args
from pyntpd.cli.options import _port as port_number
from pyntpd.daemon.exitcodes import EXIT_PANIC
from pyntpd.daemon.pidfile import (
    PidFileError,
    PidfileStatus,
    PidState,
    inspect_pidfile,
    pid_running,
    remove_stale,
)
from pyntpd.proto.packet import Mode, NtpHeader, PacketError, decode, encode_header, li_vn_mode
from pyntpd.types import Leap

DEFAULT_PIDFILE = "/run/pyntpd.pid"
DEFAULT_OPTS = "-g -u ntp:ntp"
OPTS_VARIABLE = "PYNTPD_OPTS"
PROGRAM_VARIABLE = "PYNTPD"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
QUERY_TIMEOUT = 1.0
_POLL_STEP = 0.05  # s, only where pidfd_open is missing (kernels before 5.3)

# LSB: init script actions, and the status action's own codes.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO_PERMISSION = 4
EXIT_NOT_RUNNING = 7
STATUS_RUNNING = 0
STATUS_DEAD_WITH_PIDFILE = 1
STATUS_STOPPED = 3
STATUS_UNKNOWN = 4


class UsageError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Service:
    """Where the daemon's pidfile is, how it is started and where it answers."""

    pidfile: str
    program: tuple[str, ...]
    daemon_args: tuple[str, ...]
    host: str
    port: int


def _say(text: str) -> None:
    print(text, flush=True)


def _complain(text: str) -> None:
    print(f"pyntpctl: {text}", file=sys.stderr, flush=True)


def service_from(args: argparse.Namespace) -> Service:
    """Reconcile --pidfile, DAEMON_ARGS / $PYNTPD_OPTS and --port into one Service."""
    daemon_args = list(args.daemon_args or [])
    if not daemon_args:
        try:
            daemon_args = shlex.split(os.environ.get(OPTS_VARIABLE) or DEFAULT_OPTS)
        except ValueError as exc:
            raise UsageError(f"${OPTS_VARIABLE}: {exc}") from None
    try:
        options = parse_args(daemon_args)
    except OptionError as exc:
        raise UsageError(f"daemon options: {exc}") from None
    except SystemExit:  # argparse has printed pyntpd's own message
        raise UsageError(f"daemon options {shlex.join(daemon_args)!r} are not pyntpd's") from None
    if options.foreground or options.check_only:
        raise UsageError("the daemon options keep pyntpd in the foreground (-n, -d, --check); "
                         "start runs it in the background, remove them")
    if args.pidfile and options.pidfile and args.pidfile != options.pidfile:
        raise UsageError(f"--pidfile {args.pidfile} contradicts -p {options.pidfile} in the "
                         "daemon options")
    pidfile = args.pidfile or options.pidfile or DEFAULT_PIDFILE
    if not options.pidfile:
        daemon_args += ["-p", pidfile]
    program_text = getattr(args, "pyntpd", None) or os.environ.get(PROGRAM_VARIABLE)
    # By default the daemon of this very installation, whatever $PATH says.
    program = (program_text,) if program_text else (sys.executable, "-m", "pyntpd.cli.pyntpd")
    host = getattr(args, "host", None) or ("::1" if options.ipv6_only else "127.0.0.1")
    port = getattr(args, "port", None) or options.port
    return Service(pidfile, program, tuple(daemon_args), host, port)


# --- the pidfile's process -------------------------------------------------------------------


def _open_pidfd(status: PidfileStatus) -> int | None:
    """A pidfd for the daemon `status` found, pinned so that a pid reused meanwhile is never
    signalled; None if this kernel has no pidfd_open (the pid is used directly then)."""
    assert status.pid is not None
    try:
        fd = os.pidfd_open(status.pid)
    except (AttributeError, OSError) as exc:
        if isinstance(exc, ProcessLookupError):
            raise
        return None
    # Judged again now that the process cannot change under us.
    again = inspect_pidfile(status.path)
    if again.state is not PidState.LIVE or again.pid != status.pid:
        os.close(fd)
        raise ProcessLookupError(status.pid)
    return fd


def _send(status: PidfileStatus, signum: int, pidfd: int | None) -> None:
    assert status.pid is not None
    if pidfd is None:
        os.kill(status.pid, signum)
    else:
        signal.pidfd_send_signal(pidfd, signum)


def _wait_exit(status: PidfileStatus, pidfd: int | None, timeout: float) -> bool:
    """True once the process has exited (a zombie counts: it holds nothing any more)."""
    if pidfd is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000))))
    deadline = time.monotonic() + timeout
    while pid_running(status.pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_STEP)
    return True


def _signal_daemon(status: PidfileStatus, signum: int,
                   then: Callable[[int | None], int], gone: int) -> int:
    """Send `signum` to the live daemon of `status`, then run `then(pidfd)`; `gone` is the
    exit code if it exits before the signal reaches it."""
    try:
        pidfd = _open_pidfd(status)
    except ProcessLookupError:
        _say(f"pyntpd (pid {status.pid}) exited meanwhile")
        return gone
    try:
        _send(status, signum, pidfd)
        return then(pidfd)
    except ProcessLookupError:
        _say(f"pyntpd (pid {status.pid}) exited meanwhile")
        return gone
    except PermissionError:
        _complain(f"not permitted to signal pyntpd (pid {status.pid}): run as root or as the "
                  "daemon's user")
        return EXIT_NO_PERMISSION
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _remove_leftover(status: PidfileStatus) -> None:
    """After a stop: a daemon that dropped privileges (-u) cannot remove its own pidfile."""
    after = inspect_pidfile(status.path)
    if after.pid == status.pid and after.stale:
        with contextlib.suppress(PidFileError):
            remove_stale(after)


def _remove_stale_file(status: PidfileStatus) -> bool:
    try:
        remove_stale(status)
    except PidFileError as exc:
        _complain(str(exc))
        return False
    return True


def _cannot_tell(status: PidfileStatus) -> int:
    _complain(status.reason)
    return EXIT_FAILURE


def panic_report(status: PidfileStatus) -> str:
    """What status says after a panic exit (the daemon noted it in its pidfile)."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(status.changed))
    return (f"pyntpd is not running: it exited in panic at {when} (pid {status.pid}, exit "
            f"status {EXIT_PANIC}): its sources' time was further from the clock than the "
            "panic threshold. Check the sources and the time, set the clock by hand, then "
            "start pyntpd again (docs/service.md, \"After a panic exit\")")


# --- the commands ----------------------------------------------------------------------------


def start(service: Service, timeout: float) -> int:
    status = inspect_pidfile(service.pidfile)
    if status.state is PidState.LIVE:
        _say(f"pyntpd is already running (pid {status.pid}); not starting another")
        return EXIT_OK
    if status.state in (PidState.SYMLINK, PidState.UNREADABLE):
        return _cannot_tell(status)
    if status.panicked:
        # Starting again is the administrator's decision after a panic; say what it was.
        _say(f"pyntpd last exited in panic (pid {status.pid}); starting it again as asked")
    if status.stale:
        note = "; that process is left alone" if status.state is PidState.NOT_OURS else ""
        _say(f"removing stale pidfile {service.pidfile}: {status.reason}{note}")
        if not _remove_stale_file(status):
            return EXIT_FAILURE
    argv = [*service.program, *service.daemon_args]
    try:
        # pyntpd's parent exits once the daemon serves, or with the reason it could not.
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    except FileNotFoundError:
        _complain(f"cannot run {service.program[0]}: not found")
        return EXIT_FAILURE
    except subprocess.TimeoutExpired:
        after = inspect_pidfile(service.pidfile)
        where = f" (pid {after.pid})" if after.state is PidState.LIVE else ""
        _complain(f"pyntpd{where} did not report serving within {timeout:g} s: not started; "
                  "see its log")
        return EXIT_FAILURE
    if result.returncode != 0:
        _complain(f"pyntpd failed to start (exit status {result.returncode})")
        return EXIT_FAILURE
    after = inspect_pidfile(service.pidfile)
    if after.state is not PidState.LIVE:
        _complain(f"pyntpd reported serving but its pidfile {service.pidfile} says otherwise: "
                  f"{after.reason or after.state.value}")
        return EXIT_FAILURE
    _say(f"pyntpd started (pid {after.pid})")
    return EXIT_OK


def stop(service: Service, timeout: float) -> int:
    status = inspect_pidfile(service.pidfile)
    if status.state is PidState.NONE:
        _say(f"pyntpd is not running (no pidfile {service.pidfile})")
        return EXIT_OK
    if status.state in (PidState.SYMLINK, PidState.UNREADABLE):
        return _cannot_tell(status)
    if status.stale:
        what = " (not signalled)" if status.state is PidState.NOT_OURS else ""
        _say(f"pyntpd is not running: {status.reason}{what}; removing stale pidfile "
             f"{service.pidfile}")
        return EXIT_OK if _remove_stale_file(status) else EXIT_FAILURE

    def wait(pidfd: int | None) -> int:
        if not _wait_exit(status, pidfd, timeout):
            _complain(f"pyntpd (pid {status.pid}) still running {timeout:g} s after SIGTERM: "
                      "not stopped")
            return EXIT_FAILURE
        _remove_leftover(status)
        _say(f"pyntpd stopped (pid {status.pid})")
        return EXIT_OK

    return _signal_daemon(status, signal.SIGTERM, wait, gone=EXIT_OK)


def restart(service: Service, stop_timeout: float, start_timeout: float) -> int:
    code = stop(service, stop_timeout)
    if code != EXIT_OK:
        _complain("not restarted")
        return code
    return start(service, start_timeout)


def reload(service: Service) -> int:
    status = inspect_pidfile(service.pidfile)
    if status.state in (PidState.SYMLINK, PidState.UNREADABLE):
        return _cannot_tell(status)
    if status.state is not PidState.LIVE:
        _complain(f"pyntpd is not running ({status.reason or 'no pidfile ' + service.pidfile}):"
                  " nothing to reload")
        return EXIT_NOT_RUNNING

    def told(_pidfd: int | None) -> int:
        _say(f"pyntpd (pid {status.pid}) is re-reading its configuration (see its log)")
        return EXIT_OK

    return _signal_daemon(status, signal.SIGHUP, told, gone=EXIT_NOT_RUNNING)


def status(service: Service) -> int:
    status = inspect_pidfile(service.pidfile)
    if status.state is PidState.NONE:
        _say("pyntpd is not running")
        return STATUS_STOPPED
    if status.state in (PidState.SYMLINK, PidState.UNREADABLE):
        _say(f"pyntpd status unknown: {status.reason}")
        return STATUS_UNKNOWN
    if status.panicked:
        _say(panic_report(status))
        return STATUS_DEAD_WITH_PIDFILE
    if status.stale:
        _say(f"pyntpd is not running, but its pidfile {service.pidfile} remains: "
             f"{status.reason}")
        return STATUS_DEAD_WITH_PIDFILE
    _say(f"pyntpd is running (pid {status.pid}), {sync_state(service.host, service.port)}")
    return STATUS_RUNNING


# --- the sync state, from one NTP client request ----------------------------------------------


def refid_text(refid: bytes, stratum: int) -> str:
    """A stratum 1 code (GPS), a local clock's code (LOCL, by its look: the wire does not
    say), else the upstream server's IPv4 address (or IPv6 hash) as a dotted quad."""
    code = refid.rstrip(b"\0")
    looks_like_code = bool(code) and code.isalnum() and code[:1].isalpha() and code.isupper()
    if stratum <= 1 or looks_like_code:
        return "".join(chr(b) if 0x20 < b < 0x7F else "." for b in code) or "-"
    return str(ipaddress.IPv4Address(refid))


def describe_reply(header: NtpHeader) -> str:
    if header.stratum == 0:
        code = header.refid.rstrip(b"\0").decode("ascii", "replace")
        return f"unsynchronised (kiss code {code})"
    if header.leap == Leap.UNSYNCHRONISED or header.stratum >= 16:
        return "unsynchronised (stratum 16)"
    refid = refid_text(header.refid, header.stratum)
    return f"synchronised: stratum {header.stratum}, refid {refid}"


def sync_state(host: str, port: int, timeout: float = QUERY_TIMEOUT) -> str:
    """One mode 3 request to the daemon; its answer says whether it is synchronised."""
    transmit = int.from_bytes(os.urandom(8), "big")
    request = encode_header(NtpHeader(li_vn_mode(0, 4, Mode.CLIENT), 0, 0, 0, 0, 0,
                                      b"\0\0\0\0", 0, 0, 0, transmit))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    unknown = f"sync state unknown: no answer from {host} port {port} in {timeout:g} s"
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:  # no such family here (ipv6.disable=1)
        return f"sync state unknown: cannot ask {host} port {port}: {exc.strerror}"
    with sock:
        try:
            sock.connect((host, port))
            sock.send(request)
        except OSError as exc:
            return f"sync state unknown: cannot ask {host} port {port}: {exc.strerror}"
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(2048)
            except TimeoutError:
                break
            except OSError as exc:  # ICMP port unreachable: nothing listens there
                return f"sync state unknown: {host} port {port}: {exc.strerror}"
            try:
                header = decode(data).header
            except PacketError:
                continue
            if header.mode == Mode.SERVER and header.origin == transmit:
                return describe_reply(header)
    return unknown


# --- argparse ---------------------------------------------------------------------------------


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number of seconds") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{value}: choose 0 < S <= 3600")
    return seconds


def _run(args: argparse.Namespace) -> int:
    try:
        service = service_from(args)
    except UsageError as exc:
        _complain(str(exc))
        return EXIT_USAGE if args.command != "status" else STATUS_UNKNOWN
    command = args.command
    if command == "start":
        return start(service, args.start_timeout)
    if command == "stop":
        return stop(service, args.stop_timeout)
    if command == "restart":
        return restart(service, args.stop_timeout, args.start_timeout)
    if command == "reload":
        return reload(service)
    return status(service)


_COMMANDS = {
    "start": "start pyntpd in the background; returns once it serves",
    "stop": "stop pyntpd (SIGTERM) and wait for it to exit",
    "restart": "stop pyntpd if it runs, then start it",
    "reload": "make pyntpd re-read its configuration (SIGHUP)",
    "status": "is pyntpd running, and is it synchronised? (LSB exit codes)",
}


def register_service(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, summary in _COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary + ".")
        p.add_argument("--pidfile", metavar="FILE",
                       help=f"the daemon's pidfile (default: -p in the daemon options, else "
                            f"{DEFAULT_PIDFILE})")
        if name in ("start", "restart"):
            p.add_argument("--pyntpd", metavar="PROGRAM",
                           help=f"the daemon to run (default ${PROGRAM_VARIABLE}, else this "
                                "installation's pyntpd)")
        if name == "start":
            p.add_argument("--timeout", "--start-timeout", dest="start_timeout",
                           type=_seconds, default=START_TIMEOUT, metavar="S",
                           help=f"how long to wait for it to serve (default {START_TIMEOUT:g})")
        if name == "stop":
            p.add_argument("--timeout", "--stop-timeout", dest="stop_timeout", type=_seconds,
                           default=STOP_TIMEOUT, metavar="S",
                           help=f"how long to wait for it to exit (default {STOP_TIMEOUT:g})")
        if name == "restart":
            p.add_argument("--stop-timeout", type=_seconds, default=STOP_TIMEOUT, metavar="S",
                           help=f"how long to wait for it to exit (default {STOP_TIMEOUT:g})")
            p.add_argument("--start-timeout", type=_seconds, default=START_TIMEOUT,
                           metavar="S",
                           help=f"how long to wait for it to serve (default {START_TIMEOUT:g})")
        if name == "status":
            p.add_argument("--port", type=port_number, metavar="N",
                           help="where to ask the daemon (default: --port in the daemon "
                                "options, else 123)")
            p.add_argument("--host", metavar="ADDR",
                           help="the address to ask (default 127.0.0.1, ::1 with -6)")
        p.add_argument("daemon_args", nargs="*", metavar="-- DAEMON_ARGS",
                       help=f"pyntpd's options (default ${OPTS_VARIABLE}, else "
                            f"'{DEFAULT_OPTS}')")
        p.set_defaults(func=_run)
