"""The daemon's pidfile (`-p FILE`, ntp.conf has no directive for it).

The pidfile lives in a directory root owns (/run), but the file is read back by init scripts
and by pyntpctl, and an old ntpd left behind by a crash or a reboot is the normal case, not an
error. So: create it exclusively and never through a symlink (the CVE-2020-14367 class: a
symlink planted at the pidfile path turns "write my pid" into "truncate a file of the
attacker's choice as root"), treat a leftover file as stale unless the pid in it is alive and
still looks like an NTP daemon, and on exit remove only a file that still names us.

A panic exit (daemon/exitcodes.EXIT_PANIC) is the one exit that leaves the file behind, with
a second line `panic`: under a SysV init nothing else records why the daemon is gone, and
`pyntpctl status` reports it from there. The daemon writes that line through the descriptor
it created the file with, because after -u it may no longer open a file in root's /run.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import stat
from dataclasses import dataclass
from types import TracebackType

log = logging.getLogger("pyntpd.pidfile")

# "4194304\npanic\n" is the longest sane content; anything past this is not a pidfile we wrote.
MAX_PIDFILE_BYTES = 64
PANIC_NOTE = b"panic"
# PID_MAX_LIMIT on 64-bit Linux; a larger number cannot be a process.
_PID_MAX = 4_194_304

_CREATE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK so that a FIFO planted at the path cannot hang the daemon at start.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_MODE = 0o644


class PidFileError(Exception):
    """The pidfile cannot be taken; the message is meant for the administrator as is."""


class PidFileSymlinkError(PidFileError):
    """A symlink sits at the pidfile path: it is never followed and never removed blindly."""


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


def pid_running(pid: int) -> bool:
    """pid_alive, except that a zombie (exited, not yet reaped) does not count."""
    return pid_alive(pid) and not _is_zombie(pid)


def _parse(data: bytes) -> tuple[int | None, bool]:
    """(pid or None if garbage, whether the daemon noted a panic exit)."""
    if len(data) > MAX_PIDFILE_BYTES:
        return None, False
    text, _, note = data.partition(b"\n")
    note = note.strip()
    if note not in (b"", PANIC_NOTE) or not text.strip().isdigit():
        return None, False
    pid = int(text)
    return (pid, note == PANIC_NOTE) if 0 < pid <= _PID_MAX else (None, False)


def _parse_pid(data: bytes) -> int | None:
    return _parse(data)[0]


def _read_fd(path: str) -> tuple[int | None, os.stat_result, bool] | None:
    """(pid or None if garbage, stat of the file, panic noted) or None if there is no file."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PidFileSymlinkError(
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
    pid, panicked = _parse(data)
    return pid, st, panicked


def read_pidfile(path: str | os.PathLike[str]) -> int | None:
    """The pid recorded in `path`, or None if there is no file or it holds no valid pid.

    Raises PidFileError for a symlink, a directory or another non-regular file at `path`.
    """
    result = _read_fd(os.fspath(path))
    return None if result is None else result[0]


def _is_zombie(pid: int) -> bool:
    """True if `pid` has exited but is not reaped yet: it holds nothing, it only has a pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read(512)
    except OSError:
        return False
    # The state follows the command name in parentheses, which may itself hold ") ".
    _, _, rest = data.rpartition(b") ")
    return rest[:1] in (b"Z", b"X")


def process_name(pid: int) -> str:
    """The program a live pid runs (its argv[0]), for messages; "?" if /proc will not say."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read(4096).split(b"\0", 1)[0]
    except OSError:
        return "?"
    return os.fsdecode(argv0) if argv0 else "?"


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
        self._fd: int | None = None  # kept to note a panic exit after -u
        self._keep = False

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
        self._fd = fd

    def note_panic(self) -> None:
        """The daemon exits in panic: `panic` on the second line, and the file stays."""
        if not self._held or self._fd is None:
            return
        data = f"{self.pid}\n".encode() + PANIC_NOTE + b"\n"
        try:
            os.pwrite(self._fd, data, 0)
            os.fsync(self._fd)
        except OSError as exc:
            log.warning("cannot note the panic exit in pidfile %s: %s", self.path, exc.strerror)
            return
        self._keep = True

    def _clear_stale(self) -> None:
        status = inspect_pidfile(self.path, own_pid=self.pid)
        if status.state is PidState.SYMLINK:
            raise PidFileSymlinkError(status.reason)
        if status.state is PidState.UNREADABLE:
            raise PidFileError(status.reason)
        if status.state is PidState.LIVE:
            raise PidFileError(f"pyntpd already running as pid {status.pid} (pidfile {self.path})")
        if status.stale:
            log.warning("removing stale pidfile %s: %s", self.path, status.reason)
            remove_stale(status)
        # NONE: vanished between our create and our read; just retry.

    def release(self) -> None:
        """Remove the file if it still names our pid; never someone else's (nor a panic
        note: the next start or pyntpctl deals with that)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if not self._held:
            return
        self._held = False
        if self._keep:
            return
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


class PidState(enum.StrEnum):
    """What a pidfile says about the daemon, as init scripts and pyntpctl need to know."""

    NONE = "none"  # no file
    LIVE = "live"  # names a running NTP daemon
    STALE = "stale"  # names a pid that is not running (or has exited, a zombie)
    NOT_OURS = "not-ours"  # names a live process that is not an NTP daemon (pid reused)
    GARBAGE = "garbage"  # holds no valid pid
    SYMLINK = "symlink"  # never followed, never removed blindly
    UNREADABLE = "unreadable"  # a directory, a FIFO, permission denied: cannot tell


@dataclass(frozen=True, slots=True)
class PidfileStatus:
    path: str
    state: PidState
    pid: int | None = None
    reason: str = ""  # for the administrator: why stale, not ours or unreadable
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file judged
    panicked: bool = False  # STALE because the daemon exited in panic (it noted so)
    changed: float = 0.0  # the file's mtime: when the daemon started, or panicked

    @property
    def stale(self) -> bool:
        """The file holds no running daemon and may be replaced."""
        return self.state in (PidState.STALE, PidState.NOT_OURS, PidState.GARBAGE)


def inspect_pidfile(path: str | os.PathLike[str], own_pid: int | None = None) -> PidfileStatus:
    """Judge the pidfile at `path` without changing anything; `own_pid` (a starting daemon's
    own pid, typical in containers where it is pid 1 every time) counts as stale."""
    path = os.fspath(path)
    try:
        result = _read_fd(path)
    except PidFileSymlinkError as exc:
        return PidfileStatus(path, PidState.SYMLINK, reason=str(exc))
    except PidFileError as exc:
        return PidfileStatus(path, PidState.UNREADABLE, reason=str(exc))
    if result is None:
        return PidfileStatus(path, PidState.NONE)
    pid, st, noted_panic = result
    identity = (st.st_dev, st.st_ino)
    if pid is None:
        return PidfileStatus(path, PidState.GARBAGE, None, "it holds no valid pid", identity)
    panicked = False
    if pid == own_pid:
        state, reason = PidState.STALE, f"pid {pid} is this process"
    elif not pid_running(pid):
        state, reason = PidState.STALE, f"pid {pid} is not running"
        if noted_panic:
            panicked = True
            reason = f"pid {pid} exited in panic"
    elif not _looks_like_ntpd(pid):
        state = PidState.NOT_OURS
        reason = f"pid {pid} ({process_name(pid)}) is not an NTP daemon (pid reused)"
    else:
        state, reason = PidState.LIVE, f"pid {pid} is running"
    return PidfileStatus(path, state, pid, reason, identity, panicked, st.st_mtime)


def remove_stale(status: PidfileStatus) -> bool:
    """Unlink the very file `status` judged stale, not one a racing starter put there since.
    True if removed; PidFileError if it cannot be."""
    if not status.stale or status.identity is None:
        return False
    try:
        now = os.lstat(status.path)
    except FileNotFoundError:
        return False
    if (now.st_dev, now.st_ino) != status.identity:
        return False
    try:
        os.unlink(status.path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise PidFileError(f"cannot remove stale pidfile {status.path}: {exc.strerror}") from None
    return True
