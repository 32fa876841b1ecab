"""`pyntpd`: the daemon's command line (ntpd's flags, ntpd's meanings).

Without -n the daemon detaches, but unlike ntpd the parent only exits once the child is
serving (or has failed, with its error on the parent's stderr and a non-zero exit status):
an init script can trust the exit code instead of `sleep 1` and `ps | grep`.
"""

from __future__ import annotations

import logging
import os
import sys

from pyntpd.cli.options import DaemonOptions, OptionError, parse_args
from pyntpd.config import check_config, check_file
from pyntpd.daemon import logsetup
from pyntpd.daemon.app import (
    BUILTIN,
    Daemon,
    StartupError,
    config_source,
    load_config,
    report_diagnostics,
)
from pyntpd.daemon.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from pyntpd.daemon.pidfile import PidFileError
from pyntpd.daemon.privileges import PrivilegeError
from pyntpd.daemon.serve import BindError

log = logging.getLogger("pyntpd")

_EXPECTED = (StartupError, BindError, PidFileError, PrivilegeError, OptionError)


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
    for diagnostic in diagnostics:
        print(diagnostic)
    errors = sum(1 for d in diagnostics if d.is_error)
    print(f"{source}: {errors} error(s), {len(diagnostics) - errors} warning(s)")
    return EXIT_FAILURE if errors else EXIT_OK


def _detach() -> int | None:
    """Fork into the background. Returns the write end of the readiness pipe in the child;
    in the parent, waits for the child's word and exits with the outcome."""
    read_fd, write_fd = os.pipe()
    if os.fork():
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            message = pipe.read(4096).decode("utf-8", "replace")
        if message.startswith("OK"):
            os._exit(EXIT_OK)
        sys.stderr.write(message or "pyntpd: the daemon exited during start-up\n")
        os._exit(EXIT_FAILURE)
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


def _tell_parent(fd: int | None, message: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, message.encode("utf-8"))
        os.close(fd)
    except OSError:
        pass


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
    report_diagnostics(loaded.result)
    if loaded.result.has_errors:
        log.error("%d configuration error(s): the lines in error are ignored, as ntpd "
                  "does; 'pyntpd --check%s' lists them", len(loaded.result.errors),
                  "" if source == BUILTIN else f" -c {source}")
    if options.quit_after_set and (options.observe or not loaded.config.flags.ntp):
        log.error("-q sets the clock and exits, but --observe / 'disable ntp' forbid setting it")
        return EXIT_FAILURE
    ready_fd = None if options.foreground else _detach()
    daemon = Daemon(options, loaded)
    try:
        daemon.bind()
        daemon.write_pidfile()
        daemon.confine()
    except _EXPECTED as exc:
        log.error("%s", exc)
        _tell_parent(ready_fd, f"pyntpd: {exc}\n")
        daemon.close()
        return EXIT_FAILURE
    daemon.start_workers()
    _tell_parent(ready_fd, "OK\n")
    try:
        return daemon.run()
    finally:
        daemon.close()


def main(argv: list[str] | None = None) -> int:
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
