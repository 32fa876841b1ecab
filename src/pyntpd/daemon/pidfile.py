"""The daemon's pidfile (`-p FILE`, ntp.conf has no directive for it).

The pidfile lives in a directory root owns (/run), but the file is read back by init scripts
and by pyntpctl, and an old ntpd left behind by a crash or a reboot is the normal case, not an
error. So: create it exclusively and never through a symlink (the CVE-2020-14367 class: a
symlink planted at the pidfile path turns "write my pid" into "truncate a file of the
attacker's choice as root"), treat a leftover file as stale unless the pid in it is alive and
still looks like an NTP daemon, and on exit remove only a file that still names us.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from types import TracebackType

log = logging.getLogger("pyntpd.pidfile")

# "4194304\n" is the longest sane content; anything past this is not a pidfile we wrote.
MAX_PIDFILE_BYTES = 64
# PID_MAX_LIMIT on 64-bit Linux; a larger number cannot be a process.
_PID_MAX = 4_194_304

_CREATE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK so that a FIFO planted at the path cannot hang the daemon at start.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_MODE = 0o644


class PidFileError(Exception):
    """The pidfile cannot be taken; the message is meant for the administrator as is."""


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (zombies included), even one we may not signal."""
    if not 0 < pid <= _PID_MAX:
        # kill(0, ...) and kill(-N, ...) address process groups, never one process.
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse_pid(data: bytes) -> int | None:
    text = data.strip()
    if not text or len(data) > MAX_PIDFILE_BYTES or not text.isdigit():
        return None
    pid = int(text)
    return pid if 0 < pid <= _PID_MAX else None


def _read_fd(path: str) -> tuple[int | None, os.stat_result] | None:
    """(pid or None if garbage, stat of the file) or None if there is no file at all."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PidFileError(
                f"pidfile {path} is a symlink; refusing to follow it (remove it by hand)"
            ) from None
        raise PidFileError(f"cannot read pidfile {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise PidFileError(f"pidfile {path} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise PidFileError(f"pidfile {path} is not a regular file")
        data = os.read(fd, MAX_PIDFILE_BYTES + 1)
    finally:
        os.close(fd)
    return _parse_pid(data), st


def read_pidfile(path: str | os.PathLike[str]) -> int | None:
    """The pid recorded in `path`, or None if there is no file or it holds no valid pid.

    Raises PidFileError for a symlink, a directory or another non-regular file at `path`.
    """
    result = _read_fd(os.fspath(path))
    return None if result is None else result[0]


def _looks_like_ntpd(pid: int) -> bool:
    """Best effort: does the live process `pid` run an NTP daemon (ours or the one we replace)?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read(4096)
    except FileNotFoundError:
        return False  # it exited meanwhile
    except OSError:
        # /proc hidden from us (hidepid) or absent: refusing to start is the safe mistake,
        # clobbering a running daemon's pidfile is not.
        return True
    # Kernel threads and zombies have an empty cmdline; neither is a daemon holding the file.
    args = [a for a in cmdline.split(b"\0") if a]
    return any(b"ntpd" in os.path.basename(a) for a in args)


class PidFile:
    """Exclusive pidfile for this process; `with PidFile(path):` or acquire()/release()."""

    def __init__(self, path: str | os.PathLike[str], pid: int | None = None) -> None:
        self.path = os.fspath(path)
        self.pid = os.getpid() if pid is None else pid
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self) -> None:
        """Write our pid to the file, replacing a stale one; PidFileError if that is not safe."""
        if self._held:
            return
        for attempt in range(2):
            try:
                self._create()
            except FileExistsError:
                if attempt:
                    raise PidFileError(
                        f"pidfile {self.path} was recreated while removing a stale one; "
                        "is another pyntpd starting?"
                    ) from None
                self._clear_stale()
                continue
            self._held = True
            return

    def _create(self) -> None:
        try:
            fd = os.open(self.path, _CREATE_FLAGS, _MODE)
        except FileNotFoundError:
            parent = os.path.dirname(os.path.abspath(self.path))
            raise PidFileError(
                f"cannot create pidfile {self.path}: directory {parent} does not exist"
            ) from None
        except FileExistsError:
            raise
        except OSError as exc:
            raise PidFileError(f"cannot create pidfile {self.path}: {exc.strerror}") from None
        try:
            # The umask must not make the file unreadable to status tools running unprivileged.
            os.fchmod(fd, _MODE)
            data = f"{self.pid}\n".encode()
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise PidFileError(f"cannot write pidfile {self.path}: {exc.strerror}") from None
        os.close(fd)

    def _clear_stale(self) -> None:
        result = _read_fd(self.path)
        if result is None:
            return  # vanished between our create and our read: just retry
        old_pid, st = result
        if old_pid is None:
            reason = "it holds no valid pid"
        elif old_pid == self.pid:
            # Typical in containers, where the daemon is pid 1 on every start.
            reason = f"pid {old_pid} is this process"
        elif not pid_alive(old_pid):
            reason = f"pid {old_pid} is not running"
        elif not _looks_like_ntpd(old_pid):
            reason = f"pid {old_pid} is not an NTP daemon (pid reused)"
        else:
            raise PidFileError(f"pyntpd already running as pid {old_pid} (pidfile {self.path})")
        # Only unlink the very file we judged; a racing starter may have replaced it.
        try:
            now = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return
        log.warning("removing stale pidfile %s: %s", self.path, reason)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise PidFileError(f"cannot remove stale pidfile {self.path}: {exc.strerror}") from None

    def release(self) -> None:
        """Remove the file if it still names our pid; never someone else's."""
        if not self._held:
            return
        self._held = False
        try:
            result = _read_fd(self.path)
        except PidFileError as exc:
            log.warning("not removing pidfile: %s", exc)
            return
        if result is None:
            return
        if result[0] != self.pid:
            log.warning(
                "not removing pidfile %s: it now names pid %s, not us", self.path, result[0]
            )
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Expected after -u: the pidfile's directory stays root's. The next start will
            # find the pid dead and replace the file.
            log.info("cannot remove pidfile %s: %s", self.path, exc.strerror)

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
