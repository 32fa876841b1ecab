"""Where the "pyntpd" logger writes, with ntpd's choices of destination.

- `-l FILE` (or the `logfile` directive): that file only, as ntpd does; reopened by reopen()
  so logrotate can move it away and SIGHUP brings a fresh one. It is opened as root, before
  -u, so `hand_over` gives it to the -u user (as ntpd does), or the reopen would fail: but
  only a file root opened on a path nobody else could redirect (daemon/safeopen), that
  root owns and that has no other name.
- `-n` (foreground): stderr, for the terminal or for systemd's journal.
- syslog: facility daemon over /dev/log; with `-n` as well, ntpd logs to both, so do we.
- nothing usable: stderr, rather than losing messages.

Log lines carry text that came from the network (host names, refids, config lines), so
control characters in a message are escaped: one event is always one line.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import stat
import sys
import time
from typing import TextIO

from pyntpd.daemon.safeopen import open_trusted
from pyntpd.logonce import LOGGER_NAME

SYSLOG_SOCKET = "/dev/log"

_LOGFILE_FLAGS = (
    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
)
_LOGFILE_MODE = 0o640
_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c != 9} | {127: "\\x7f"}


class _Formatter(logging.Formatter):
    """UTC timestamps with a Z, and control characters escaped in the message itself."""

    converter = time.gmtime

    def formatMessage(self, record: logging.LogRecord) -> str:
        # A copy: other handlers (and the traceback text appended later) see the original.
        escaped = logging.makeLogRecord(record.__dict__)
        escaped.message = record.message.translate(_CONTROL)
        return super().formatMessage(escaped)


def _stream_formatter() -> logging.Formatter:
    return _Formatter(
        "%(asctime)s pyntpd[%(process)d]: %(levelname)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%SZ",
    )


def _open_logfile(path: str) -> TextIO:
    # As root, no link on the way that another user could have planted is followed.
    if os.geteuid() == 0:
        fd = open_trusted(path, _LOGFILE_FLAGS, _LOGFILE_MODE)
    else:
        fd = os.open(path, _LOGFILE_FLAGS, _LOGFILE_MODE)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
    except BaseException:
        os.close(fd)
        raise


class LogFileHandler(logging.StreamHandler):
    """Appends to a file opened without following symlinks; reopen() for log rotation."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        super().__init__(_open_logfile(self.path))

    def hand_over(self, uid: int, gid: int) -> str | None:
        """Give the open file to the -u user so that it can reopen it later; None if done
        (or nothing to do), else why not."""
        stream = self.stream
        if stream is None:
            return None
        st = os.fstat(stream.fileno())
        if (st.st_uid, st.st_gid) == (uid, gid):
            return None
        if st.st_uid != 0:
            return f"it belongs to uid {st.st_uid}, not root"
        if st.st_nlink != 1:
            return f"it has {st.st_nlink} names (hard links)"
        os.fchown(stream.fileno(), uid, gid)
        return None

    def reopen(self) -> None:
        """Open the path afresh (after logrotate moved it); on failure keep the old file."""
        new = _open_logfile(self.path)
        self.acquire()
        try:
            old, self.stream = self.stream, new
        finally:
            self.release()
        old.close()

    def close(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                try:
                    self.flush()
                finally:
                    self.stream.close()
                    # As FileHandler does: logging.shutdown() flushes closed handlers too.
                    self.stream = None
        finally:
            self.release()
        super().close()


def _syslog_handler() -> logging.Handler | None:
    if not os.path.exists(SYSLOG_SOCKET):
        return None
    try:
        handler = logging.handlers.SysLogHandler(
            address=SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
    except OSError:
        return None
    # syslog stamps time and host itself; the "pyntpd[pid]:" tag is how it names the sender.
    handler.setFormatter(_Formatter("pyntpd[%(process)d]: %(message)s"))
    return handler


def _stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_stream_formatter())
    return handler


def configure_logging(
    *, foreground: bool, logfile: str | None, syslog: bool, debug_level: int
) -> logging.Logger:
    """(Re)configure the "pyntpd" logger; returns it. Raises OSError if `logfile` can't open."""
    logger = logging.getLogger(LOGGER_NAME)
    handlers: list[logging.Handler] = []
    if logfile:
        file_handler = LogFileHandler(logfile)
        file_handler.setFormatter(_stream_formatter())
        handlers.append(file_handler)
    else:
        if foreground:
            handlers.append(_stderr_handler())
        if syslog:
            syslog_handler = _syslog_handler()
            if syslog_handler is not None:
                handlers.append(syslog_handler)
            elif not foreground:
                handlers.append(_stderr_handler())
        if not handlers:
            handlers.append(_stderr_handler())
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug_level >= 1 else logging.INFO)
    # The daemon owns its output; a root handler someone else set up must not double it.
    logger.propagate = False
    return logger


def writes_to_stderr() -> bool:
    """Whether the daemon's log already goes to stderr (so a message need not be repeated)."""
    return any(type(h) is logging.StreamHandler and h.stream is sys.stderr
               for h in logging.getLogger(LOGGER_NAME).handlers)


def hand_over(uid: int, gid: int, name: str) -> None:
    """Before -u: the log file becomes the user's, so that SIGHUP can reopen it."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in logger.handlers:
        if isinstance(handler, LogFileHandler):
            try:
                why = handler.hand_over(uid, gid)
            except OSError as exc:
                why = exc.strerror or str(exc)
            if why is not None:
                logger.warning("log file %s stays as it is (%s): after -u %s it can be "
                               "reopened only if %s may write it", handler.path, why, name,
                               name)


def reopen() -> bool:
    """Reopen the log file, if logging to one (SIGHUP, logrotate). False if that failed."""
    logger = logging.getLogger(LOGGER_NAME)
    ok = True
    for handler in logger.handlers:
        if isinstance(handler, LogFileHandler):
            try:
                handler.reopen()
            except OSError as exc:
                ok = False
                logger.error("cannot reopen log file %s: %s", handler.path, exc)
    return ok


