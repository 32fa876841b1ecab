"""`pyntpd`: the daemon's command line (ntpd's flags, ntpd's meanings).

Without -n the daemon detaches, but unlike ntpd the parent only exits once the child is
serving (or has failed, with its error on the parent's stderr and a non-zero exit status):
an init script can trust the exit code instead of `sleep 1` and `ps | grep`. With `-w S`
the parent waits on until the daemon is synchronised (exit 0) or S seconds have passed
since the fork (exit ETIMEDOUT, as ntpd 4.2.8's wait_child_sync_if does).

The child speaks to the parent over a pipe, one line per word: "OK" once serving, "SYNC"
once synchronised (-w only); anything else is the reason it failed.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import sys
import time

from pyntpd import refclock
from pyntpd.cli.options import DaemonOptions, OptionError, parse_args
from pyntpd.config import Diagnostic, check_config, check_file
from pyntpd.daemon import logsetup
from pyntpd.daemon.app import (
    BUILTIN,
    Daemon,
    StartupError,
    config_source,
    listeners,
    load_config,
    report_diagnostics,
)
from pyntpd.daemon.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from pyntpd.daemon.pidfile import PidFileError
from pyntpd.daemon.privileges import PrivilegeError
from pyntpd.daemon.serve import BindError

log = logging.getLogger("pyntpd")

_EXPECTED = (StartupError, BindError, PidFileError, PrivilegeError, OptionError)


def refclock_warnings(source: str, options: DaemonOptions) -> list[Diagnostic]:
    """A reference clock with nothing to read now is still configured (and retried at run
    time, as ntpd does): --check says so."""
    try:
        config = load_config(source, options.keyfile, options.trusted_keys).result.config
    except Exception:  # the file's own problems are reported by the check above
        return []
    out = []
    for clock in config.refclocks:
        reason = refclock.probe(clock.type, clock.unit)
        if reason is not None:
            loc = clock.location
            out.append(Diagnostic("warning", loc.file, loc.line, loc.col,
                                  f"{clock.name}: {reason}", None))
    return out


def check(options: DaemonOptions) -> int:
    """--check: every problem on stdout, exit 1 if any is an error; nothing is started.

    Goes further than start-up does: server names are looked up, and the source count and
    restrict defaults are judged (config.check)."""
    source = config_source(options)
    if source == BUILTIN:
        result = load_config(source, options.keyfile, options.trusted_keys, options).result
        diagnostics = result.diagnostics + check_config(result.config, filename=BUILTIN)
    else:
        diagnostics = check_file(source, keys_file=options.keyfile)
    diagnostics = diagnostics + refclock_warnings(source, options)
    for diagnostic in diagnostics:
        print(diagnostic)
    errors = sum(1 for d in diagnostics if d.is_error)
    try:
        config = load_config(source, options.keyfile, options.trusted_keys, options).config
        where = listeners(config, options)
    except (OSError, StartupError) as exc:
        print(f"listening: nothing: {exc}")
        errors += 1
    else:
        # Every address and port the daemon would open: the exposure, at a glance.
        for listener in where:
            print(f"listening: {listener}")
    print(f"{source}: {errors} error(s), {len(diagnostics) - errors} warning(s)")
    return EXIT_FAILURE if errors else EXIT_OK


READY = "OK\n"
SYNCED = "SYNC\n"
MAX_MESSAGE = 4096


class _Words:
    """The child's words, a line each; both may come in one read."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def line(self, deadline: float | None) -> str | None:
        """The next line: "" at end of file, None once `deadline` (monotonic) has passed."""
        while b"\n" not in self.buffer and len(self.buffer) < MAX_MESSAGE:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                    return None
            chunk = os.read(self.fd, MAX_MESSAGE)
            if not chunk:
                break
            self.buffer += chunk
        line, sep, self.buffer = self.buffer.partition(b"\n")
        return (line + sep).decode("utf-8", "replace")


def wait_for_child(fd: int, wait_sync: float | None) -> int:
    """The forking parent: the exit status for the child's words on `fd`."""
    deadline = time.monotonic() + wait_sync if wait_sync else None
    words = _Words(fd)
    first = words.line(None)  # start-up is bounded by the child itself
    if first != READY:
        rest = words.line(time.monotonic() + 1.0) or ""
        sys.stderr.write(first + rest if first else
                         "pyntpd: the daemon exited during start-up\n")
        return EXIT_FAILURE
    if deadline is None:
        return EXIT_OK
    word = words.line(deadline)
    if word == SYNCED:
        return EXIT_OK
    if word is None:
        sys.stderr.write(f"pyntpd: -w/--wait-sync {wait_sync:g} timed out\n")
        return errno.ETIMEDOUT
    # ntpd's parent reads the closed pipe as success; a daemon that died is not one.
    sys.stderr.write("pyntpd: the daemon exited before it was synchronised\n")
    return EXIT_FAILURE


def _detach(wait_sync: float | None) -> int | None:
    """Fork into the background. Returns the write end of the readiness pipe in the child;
    in the parent, waits for the child's word and exits with the outcome."""
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child:
        os.close(write_fd)
        os.waitpid(child, 0)  # the session leader below exits at once: no zombie left
        try:
            code = wait_for_child(read_fd, wait_sync)
        except KeyboardInterrupt:
            code = EXIT_FAILURE
        os._exit(code)
    os.close(read_fd)
    os.setsid()
    if os.fork():
        os._exit(EXIT_OK)  # the session leader goes; the daemon can never regain a tty
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    return write_fd


def _tell_parent(fd: int | None, message: str, *, close: bool = True) -> None:
    if fd is None:
        return
    try:
        os.write(fd, message.encode("utf-8"))
        if close:
            os.close(fd)
    except OSError:
        pass


def _refuse_unreadable(options: DaemonOptions, unreadable: tuple[Diagnostic, ...]) -> int:
    """A file the configuration needs could not be read: ntpd would start anyway, with no
    sources and no restrict rules (wide open) or without the keys its servers need. Refuse,
    with the reason where the person starting it looks: the log, and stderr (a forking
    start has not forked yet, so its exit status says it too)."""
    for diagnostic in unreadable:
        message = f"not starting: {diagnostic}"
        log.error("%s", message)
        if not options.foreground and not logsetup.writes_to_stderr():
            print(f"pyntpd: {message}", file=sys.stderr)
    return EXIT_FAILURE


def run(options: DaemonOptions) -> int:
    source = config_source(options)
    loaded = load_config(source, options.keyfile, options.trusted_keys, options)
    logfile = options.logfile or loaded.config.logfile
    try:
        logsetup.configure_logging(foreground=options.foreground, logfile=logfile,
                                   syslog=not options.foreground, debug_level=options.debug_level)
    except OSError as exc:
        print(f"pyntpd: cannot open log file {logfile}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    for warning in options.warnings:
        log.warning("%s", warning)
    log.info("pyntpd starting, configuration %s", source)
    if loaded.result.unreadable:
        return _refuse_unreadable(options, loaded.result.unreadable)
    report_diagnostics(loaded.result)
    if loaded.result.fatal:
        # A restrict/interface line that cannot be honoured: ntpd would run without it.
        first = loaded.result.fatal[0]
        reason = (f"refusing to start: {len(loaded.result.fatal)} security setting(s) in "
                  f"{source} cannot be honoured, first {first.location}: {first.message}")
        log.error("%s", reason)
        if not options.foreground:
            print(f"pyntpd: {reason}", file=sys.stderr)
        return EXIT_FAILURE
    if loaded.result.has_errors:
        log.error("%d configuration error(s): the lines in error are ignored, as ntpd "
                  "does; 'pyntpd --check%s' lists them", len(loaded.result.errors),
                  "" if source == BUILTIN else f" -c {source}")
    if options.quit_after_set and (options.observe or not loaded.config.flags.ntp):
        log.error("-q sets the clock and exits, but --observe / 'disable ntp' forbid setting it")
        return EXIT_FAILURE
    wait_sync = options.wait_sync if options.wait_sync and options.wait_sync > 0 else None
    ready_fd = None if options.foreground else _detach(wait_sync)
    try:
        # The NTS certificate and key are loaded here: a bad one is a start-up error too.
        daemon = Daemon(options, loaded)
    except _EXPECTED as exc:
        log.error("%s", exc)
        _tell_parent(ready_fd, f"pyntpd: {exc}\n")
        return EXIT_FAILURE
    try:
        daemon.bind()
        daemon.write_pidfile()
        daemon.confine()
    except _EXPECTED as exc:
        log.error("%s", exc)
        _tell_parent(ready_fd, f"pyntpd: {exc}\n")
        daemon.close()
        return EXIT_FAILURE
    if wait_sync is not None:
        daemon.sync_waiter = ready_fd  # before the workers fork: they close their copy
    daemon.start_workers()
    _tell_parent(ready_fd, READY, close=wait_sync is None)
    try:
        return daemon.run()
    finally:
        daemon.close()


def retitle() -> str | None:
    """Make the process's argument line read as invoked; returns the title set, if any.

    A script run through its interpreter shows up in `ps -Ao args` as `/usr/bin/python3
    /usr/bin/pyntpd -g ...`, and ntpd's init scripts decide whether the daemon started by
    grepping for `^$NTPD $NTPD_OPTS`: so the line must read `/usr/bin/pyntpd -g ...`, as it
    would for a binary. Only then, though: `python -m pyntpd.cli.pyntpd` was invoked as
    exactly that and stays so."""
    argv, orig = sys.argv, getattr(sys, "orig_argv", [])
    if not argv or len(orig) <= len(argv) or orig[-len(argv):] != argv:
        return None
    try:
        import setproctitle  # a dependency; a missing one must not stop the daemon
    except ImportError:
        return None
    title = " ".join(argv)
    setproctitle.setproctitle(title)
    # setproctitle also renames the thread (/proc/PID/comm) to the title's start; pidof,
    # killall and pgrep look there for the program's name, as the kernel set it.
    setproctitle.setthreadtitle(os.path.basename(argv[0]))
    return title


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        retitle()
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except OptionError as exc:
        print(f"pyntpd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if options.check_only:
        return check(options)
    try:
        return run(options)
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
