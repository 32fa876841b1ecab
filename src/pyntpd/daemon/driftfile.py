"""ntpd's drift (frequency) file: one number, the clock's frequency correction in PPM.

Format: ntpd writes "%.3f\\n" (e.g. "-12.345"); so do we, so the file moves freely between
ntpd and pyntpd. Reading takes the first whitespace-separated token and ignores the rest
(ntpd reads it with fscanf("%lf"); a chrony-style second column is harmless). A token that
is not a plain decimal number (NaN, inf, hex floats, garbage) or lies outside +-500 PPM is
ignored with a warning, as is a symlink or a non-regular file at the path: the daemon then
starts without a frequency estimate, never crashes.

Writing is atomic: a new file is created beside the old one (O_CREAT|O_EXCL|O_NOFOLLOW),
written, fsync'ed, renamed over the path, and the directory is fsync'ed. A crash at any
point leaves either the old file or the new one, never a torn one. A symlink at the path is
refused (DESIGN §4: no following symlinks for files the daemon writes as root). Errors are
logged once (until a write succeeds again) and reported by returning False. A process
killed between create and rename leaves its temporary file behind; the first read or write
of a later process removes those of processes that no longer run.

When to write (`should_write`), ntpd 4.2.8's write_stats() rule: check hourly; write only
when the frequency moved by at least the residual threshold since the last write. The
threshold starts at 0.1 PPM (ntpd's default wander threshold, 1e-7) and halves at every
hourly check that finds a smaller change, so a slowly drifting value still gets written
within hours while a stable one is not rewritten to flash storage every hour. At exit the
daemon writes unconditionally (call write()).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import secrets
import stat

from pyntpd.logonce import LogOnce

log = logging.getLogger("pyntpd.driftfile")

MAX_DRIFT_PPM = 500.0
WRITE_INTERVAL_S = 3600.0
WANDER_THRESHOLD_PPM = 0.1
MAX_DRIFTFILE_BYTES = 4096
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,15}(?:\.[0-9]{0,15})?|\.[0-9]{1,15})(?:[eE][+-]?[0-9]{1,3})?")
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MODE = 0o644


class DriftFormatError(ValueError):
    """The drift file's content is not a usable frequency."""


def parse_drift(data: bytes) -> float:
    """The frequency in PPM from drift-file bytes; DriftFormatError if unusable."""
    if len(data) > MAX_DRIFTFILE_BYTES:
        raise DriftFormatError(f"larger than {MAX_DRIFTFILE_BYTES} bytes")
    try:
        tokens = data.decode("ascii").split()
    except UnicodeDecodeError:
        raise DriftFormatError("not ASCII text") from None
    if not tokens:
        raise DriftFormatError("empty")
    if not _FLOAT.fullmatch(tokens[0]):
        raise DriftFormatError(f"{tokens[0][:40]!r} is not a number")
    ppm = float(tokens[0])
    if not math.isfinite(ppm) or abs(ppm) > MAX_DRIFT_PPM:
        raise DriftFormatError(f"{tokens[0][:40]} PPM is outside +-{MAX_DRIFT_PPM:.0f} PPM")
    return ppm


def format_drift(ppm: float) -> bytes:
    return f"{ppm:.3f}\n".encode("ascii")


class DriftFile:
    """The drift file at `path`: read() at start, should_write()/write() hourly, write() at exit."""

    def __init__(self, path: str | os.PathLike[str], log_once: LogOnce | None = None) -> None:
        self.path = os.fspath(path)
        self._log_once = log_once or LogOnce(log)
        self.last_written: float | None = None  # the value in the file, as far as we know
        self._due: float | None = None
        self._resid = WANDER_THRESHOLD_PPM
        self._swept = False

    def read(self) -> float | None:
        """The frequency in the file (PPM), or None if missing or unusable (with a warning)."""
        self._sweep()
        try:
            fd = os.open(self.path, _READ_FLAGS)
        except FileNotFoundError:
            log.info("no drift file %s; starting without a frequency estimate", self.path)
            return None
        except OSError as exc:
            reason = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
            log.warning("ignoring drift file %s: %s", self.path, reason)
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                log.warning("ignoring drift file %s: not a regular file", self.path)
                return None
            data = os.read(fd, MAX_DRIFTFILE_BYTES + 1)
        except OSError as exc:
            log.warning("ignoring drift file %s: %s", self.path, exc.strerror)
            return None
        finally:
            os.close(fd)
        try:
            ppm = parse_drift(data)
        except DriftFormatError as exc:
            log.warning("ignoring drift file %s: %s", self.path, exc)
            return None
        self.last_written = ppm
        return ppm

    def should_write(self, now: float, ppm: float) -> bool:
        """True when the hourly rule says to write `ppm` now. `now`: monotonic seconds.

        The first call only starts the hour. Each later call at or past the hour is a check:
        it writes if `ppm` moved at least the residual threshold from the file's value (or
        nothing was ever written), else it halves the threshold (ntpd's write_stats()).
        """
        if self._due is None:
            self._due = now + WRITE_INTERVAL_S
            return False
        if now < self._due:
            return False
        self._due = now + WRITE_INTERVAL_S
        if self.last_written is not None and abs(ppm - self.last_written) < self._resid:
            self._resid *= 0.5
            return False
        self._resid = WANDER_THRESHOLD_PPM
        return True

    def write(self, ppm: float) -> bool:
        """Replace the file atomically with `ppm`; False (logged once) on any failure."""
        key = ("driftfile", self.path)
        if not math.isfinite(ppm) or abs(ppm) > MAX_DRIFT_PPM:
            self._log_once.warning(
                key, "not writing drift file %s: %r PPM is out of range", self.path, ppm
            )
            return False
        try:
            self._replace(format_drift(ppm))
        except OSError as exc:
            self._log_once.error(
                key, "cannot write drift file %s: %s", self.path, exc.strerror or exc
            )
            return False
        if self._log_once.reset(key):
            log.info("drift file %s written again", self.path)
        self.last_written = round(ppm, 3)
        return True

    def _sweep(self) -> None:
        """Remove the temporary files that killed writers left beside the file."""
        if self._swept:
            return
        self._swept = True
        directory, name = os.path.split(os.path.abspath(self.path))
        leftover = re.compile(rf"\.{re.escape(name)}\.([0-9]{{1,10}})\.[0-9a-f]{{8}}\.tmp")
        try:
            entries = [e.name for e in os.scandir(directory)]
        except OSError:
            return
        for entry in entries:
            match = leftover.fullmatch(entry)
            if match is None or _running(int(match.group(1))):
                continue
            with contextlib.suppress(OSError):  # unlink never follows a symlink
                os.unlink(os.path.join(directory, entry))
                log.info("removed %s, left by an interrupted drift file write", entry)

    def _replace(self, data: bytes) -> None:
        self._sweep()
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISLNK(st.st_mode):
                raise OSError(errno.ELOOP, "it is a symlink; refusing to replace it")
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "it is not a regular file")
        directory, name = os.path.split(os.path.abspath(self.path))
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, _CREATE_FLAGS, _MODE)
        try:
            try:
                os.fchmod(fd, _MODE)  # readable by status tools whatever the umask
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            # rename() replaces a symlink planted since the lstat itself; it never follows it.
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours to signal
    return True
