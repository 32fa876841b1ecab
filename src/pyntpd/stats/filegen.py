"""Statistics files (`statistics`, `statsdir`, `filegen`): ntpd's file generation sets.

A set writes to STATSDIR/FILE + a suffix naming its generation, as ntpd names them:
none "", pid ".#PID", day ".YYYYMMDD", week ".YYYYwWW" (ISO week), month ".YYYYMM",
year ".YYYY", age ".aNNNNNNNN" (whole days of uptime, in seconds). A generation ends at the
UTC boundary its type names, judged by the time stamp of the line being written (never by
a timer), so a line always lands in the file its date says. With `link` (ntpd's default)
STATSDIR/FILE is a hard link to the current generation, replaced atomically (link to a
temporary name, rename over); a regular file of that name that nothing else links is kept
as FILE.PIDCn first, as ntpd does, and anything that is not a regular file is left alone.

Files are opened O_APPEND|O_NOFOLLOW|O_CLOEXEC, mode 0644, and must be regular files: a
symlink or a FIFO planted at the name is refused. The directory is never created. Paths are
taken as they are when the file is opened, so after `-i` (chroot) they are inside the jail,
as with ntpd, and the files belong to the `-u` user. A write that fails (ENOSPC, EROFS,
EACCES, ...) is counted and logged once per set and error; the next line tries again (a
failed file is reopened), and the daemon goes on serving meanwhile.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from pyntpd.config.diagnostics import Location
from pyntpd.config.model import STATISTICS_NAMES, FilegenType, NtpConfig
from pyntpd.logonce import LogOnce
from pyntpd.stats.statsformat import (
    ClockStats,
    LoopRecorder,
    StatsRecord,
    SysCounts,
    SysStats,
    peer_record,
)
from pyntpd.sync.engine import SourceStatus, SyncResult

log = logging.getLogger("pyntpd")

WRITTEN_SETS = ("loopstats", "peerstats", "sysstats", "clockstats")  # the sets pyntpd produces
DEFAULT_STATSDIR = "/var/NTP/"  # ntpd's compiled-in default (NTP_VAR)
FILE_MODE = 0o644
_OPEN_FLAGS = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
               | os.O_NONBLOCK | os.O_NOCTTY)
_DAY = 86400.0


class StatsDirError(Exception):
    """The statistics directory cannot be used; the message names where it was set."""


@dataclass(frozen=True, slots=True)
class FileSet:
    name: str  # loopstats, peerstats, sysstats
    file: str  # the file name prefix inside statsdir
    type: FilegenType = "day"
    link: bool = True


@dataclass(frozen=True, slots=True)
class StatsSettings:
    statsdir: str = DEFAULT_STATSDIR
    location: Location = field(default=Location("<default>"), compare=False)
    sets: tuple[FileSet, ...] = ()  # only the enabled ones
    unwritten: tuple[str, ...] = ()  # enabled, but sets pyntpd has nothing to write into

    @classmethod
    def from_config(cls, config: NtpConfig, statsdir: str | None = None) -> StatsSettings:
        """`statsdir` is -s, which wins over the directive, as in ntpd."""
        sets = []
        for name in WRITTEN_SETS:
            if not config.stats_enabled(name):
                continue
            fileset = FileSet(name, name)
            for fg in config.filegens:
                if fg.name == name:  # the parser merged repeated lines: the last one is all
                    fileset = FileSet(name, fg.file or name, fg.type, fg.link)
            sets.append(fileset)
        unwritten = tuple(n for n in STATISTICS_NAMES
                          if n not in WRITTEN_SETS and config.stats_enabled(n))
        if statsdir is not None:
            return cls(statsdir, Location("-s"), tuple(sets), unwritten)
        if config.statsdir is not None:
            return cls(config.statsdir, config.statsdir_location, tuple(sets), unwritten)
        return cls(DEFAULT_STATSDIR, Location("<ntpd's default statsdir>"), tuple(sets),
                   unwritten)

    def enabled(self, name: str) -> FileSet | None:
        return next((s for s in self.sets if s.name == name), None)


def check_statsdir(path: str, location: Location) -> None:
    """StatsDirError unless `path` is an existing directory this process may write into."""
    where = f"{location}: statsdir {path}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise StatsDirError(f"{where} does not exist; create it (not world-writable) or "
                            "change 'statsdir'") from None
    except OSError as exc:
        raise StatsDirError(f"{where} cannot be examined: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StatsDirError(f"{where} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StatsDirError(f"{where} is not writable by this process (uid {os.getuid()})")


def generation(kind: FilegenType, now: float, pid: int, started: float) -> tuple[str, float, float]:
    """(suffix, first, end): the generation a line stamped `now` belongs to, and the span of
    time (Unix s, end excluded) it covers; `started` is the daemon's start (for `age`)."""
    if kind == "none":
        return "", -float("inf"), float("inf")
    if kind == "pid":
        return f".#{pid}", -float("inf"), float("inf")
    if kind == "age":
        uptime = max(0, int(now - started))
        first = uptime - uptime % int(_DAY)
        return f".a{first:08d}", started + first, started + first + _DAY
    utc = datetime.datetime.fromtimestamp(now, datetime.UTC)
    day = utc.date()
    if kind == "day":
        start, end, suffix = day, day + datetime.timedelta(days=1), f".{day:%Y%m%d}"
    elif kind == "week":
        year, week, weekday = day.isocalendar()
        start = day - datetime.timedelta(days=weekday - 1)
        end = start + datetime.timedelta(days=7)
        suffix = f".{year:04d}w{week:02d}"
    elif kind == "month":
        start = day.replace(day=1)
        end = (start + datetime.timedelta(days=32)).replace(day=1)
        suffix = f".{day:%Y%m}"
    else:  # year
        start = day.replace(month=1, day=1)
        end = start.replace(year=start.year + 1)
        suffix = f".{day:%Y}"
    return suffix, _midnight(start), _midnight(end)


def _midnight(day: datetime.date) -> float:
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()


@dataclass(slots=True)
class SetCounters:
    lines: int = 0
    errors: int = 0  # lines that could not be written (each is lost)
    dropped: int = 0  # records refused before writing (a value that was not finite)


class FileGen:
    """One file generation set: the open file of the current generation, and its link."""

    def __init__(self, directory: str, fileset: FileSet, log_once: LogOnce, pid: int,
                 started: float) -> None:
        self.directory = directory
        self.fileset = fileset
        self.log_once = log_once
        self.pid = pid
        self.started = started
        self.counters = SetCounters()
        self.path: str | None = None
        self._fd: int | None = None
        self._span = (0.0, 0.0)
        self._saved = 0
        self._failures: set[tuple[str, str, int | None]] = set()

    @property
    def base(self) -> str:
        return os.path.join(self.directory, self.fileset.file)

    def write(self, line: str, now: float) -> bool:
        data = (line + "\n").encode("ascii", "backslashreplace")
        try:
            if self._fd is None or not self._span[0] <= now < self._span[1]:
                self._open(now)
            assert self._fd is not None
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self.counters.errors += 1
            self.close()
            key = ("stats", self.fileset.name, exc.errno)
            self._failures.add(key)
            self.log_once.error(key, "cannot write %s statistics to %s: %s; lines are lost "
                                "until it works again", self.fileset.name,
                                self.path or self.base, exc.strerror or exc)
            return False
        self.counters.lines += 1
        if self._failures:
            for key in self._failures:
                self.log_once.reset(key)
            self._failures.clear()
            log.info("%s statistics are written to %s again", self.fileset.name, self.path)
        return True

    def _open(self, now: float) -> None:
        self.close()
        suffix, first, end = generation(self.fileset.type, now, self.pid, self.started)
        self.path = self.base + suffix
        fd = os.open(self.path, _OPEN_FLAGS, FILE_MODE)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", self.path)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._span = fd, (first, end)
        if self.fileset.link and suffix:
            self._link(st)

    def _link(self, target: os.stat_result) -> None:
        """Point STATSDIR/FILE at the current generation, atomically."""
        assert self.path is not None
        base = self.base
        try:
            old = os.lstat(base)
        except FileNotFoundError:
            old = None
        except OSError as exc:
            self._link_failed(exc)
            return
        if old is not None:
            if (old.st_dev, old.st_ino) == (target.st_dev, target.st_ino):
                return
            if not stat.S_ISREG(old.st_mode):
                self.log_once.error(("stats-link", base), "not linking %s to %s: it exists "
                                    "and is not a regular file", base, self.path)
                return
            if old.st_nlink <= 1:
                # Somebody's file, not one of our links: keep it, as ntpd does.
                saved = f"{base}.{self.pid}C{self._saved}"
                self._saved += 1
                try:
                    os.rename(base, saved)
                    log.warning("%s was not a link to a statistics file: kept as %s",
                                base, saved)
                except OSError as exc:
                    self._link_failed(exc)
                    return
        temporary = f"{base}.{self.pid}.link"
        try:
            try:
                os.link(self.path, temporary, follow_symlinks=False)
            except FileExistsError:
                os.unlink(temporary)
                os.link(self.path, temporary, follow_symlinks=False)
            os.rename(temporary, base)
        except OSError as exc:
            self._link_failed(exc)
            with contextlib.suppress(OSError):
                os.unlink(temporary)

    def _link_failed(self, exc: OSError) -> None:
        self.log_once.error(("stats-link", self.base, exc.errno), "cannot link %s to %s: %s",
                            self.base, self.path, exc.strerror or exc)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


class Statistics:
    """The statistics sets the configuration enables, and what goes into them.

    Times are the caller's (the daemon's clock, or the simulator's): generations and MJD
    stamps follow them. sysstats counts are differences since the last sysstats record, over
    an interval measured on `monotonic`.
    """

    def __init__(
        self,
        settings: StatsSettings,
        *,
        pid: int | None = None,
        started: float | None = None,
        counts: SysCounts | None = None,
        log_once: LogOnce | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.monotonic = monotonic
        self.started = time.time() if started is None else started
        self.log_once = log_once or LogOnce(log)
        self.loop = LoopRecorder()
        self.settings = StatsSettings()
        self.sets: dict[str, FileGen] = {}
        self._sys_base = counts or SysCounts()
        # ntpd's "time since reset" counts seconds the daemon ran (its uptime timer): the wall
        # clock may have been stepped or the machine suspended since, so it is not used.
        self._sys_reset_at = monotonic()
        self.reconfigure(settings)

    def reconfigure(self, settings: StatsSettings) -> None:
        """Take new settings (a reload): every set opens its file again at its next line."""
        old = self.sets
        self.settings = settings
        self.sets = {}
        if settings.unwritten:
            log.info("statistics %s: accepted, but pyntpd writes only %s",
                     " ".join(settings.unwritten), " ".join(WRITTEN_SETS))
        if settings.sets:
            try:
                check_statsdir(settings.statsdir, settings.location)
            except StatsDirError as exc:
                log.error("%s: %s statistics are not written", exc,
                          " ".join(s.name for s in settings.sets))
        for fileset in settings.sets:
            previous = old.pop(fileset.name, None)
            if previous is not None:
                # Reopened at the next line, so that SIGHUP after logrotate moved a file
                # away starts a fresh one, as for the log file.
                previous.close()
            if previous is not None and (previous.fileset, previous.directory) == (
                    fileset, settings.statsdir):
                self.sets[fileset.name] = previous  # its counters go on
            else:
                self.sets[fileset.name] = FileGen(settings.statsdir, fileset, self.log_once,
                                                  self.pid, self.started)
        for gone in old.values():
            gone.close()

    def enabled(self, name: str) -> bool:
        return name in self.sets

    def write(self, name: str, record: StatsRecord) -> bool:
        fg = self.sets.get(name)
        if fg is None:
            return False
        try:
            line = record.line()
        except ValueError as exc:
            fg.counters.dropped += 1
            self.log_once.warning(("stats-value", name), "%s record not written: %s", name, exc)
            return False
        return fg.write(line, record.time)

    # --- what is recorded ------------------------------------------------------------------

    def record_sample(self, now: float, key: Hashable, address: str, reach: int,
                      result: SyncResult) -> None:
        """After the engine update that took in a sample from source `key`: as ntpd, a
        peerstats line for the source, and a loopstats line when a source is followed
        (each such update is a clock update)."""
        if result.panic is not None:
            return
        self.record_peer(now, address, result.sources.get(key), reach)
        if result.system_peer is not None:
            self.record_loop(now, result)

    def record_peer(self, now: float, address: str, status: SourceStatus | None,
                    reach: int) -> None:
        if status is not None and self.enabled("peerstats"):
            self.write("peerstats", peer_record(now, address, status, reach))

    def record_loop(self, now: float, result: SyncResult) -> None:
        record = self.loop.record(now, result)  # the wander is tracked even when not written
        if self.enabled("loopstats"):
            self.write("loopstats", record)

    def record_sys(self, now: float, counts: SysCounts) -> None:
        """A sysstats line with the counts since the last one; the counters reset."""
        elapsed = self.monotonic()
        if self.enabled("sysstats"):
            self.write("sysstats", SysStats(now, round(elapsed - self._sys_reset_at),
                                            counts - self._sys_base))
        self._sys_base, self._sys_reset_at = counts, elapsed

    def record_clock(self, now: float, address: str, text: str) -> None:
        """A clockstats line for reference clock `address` (127.127.T.U)."""
        if self.enabled("clockstats"):
            self.write("clockstats", ClockStats(now, address, text))

    def counters(self) -> dict[str, SetCounters]:
        return {name: fg.counters for name, fg in self.sets.items()}

    def close(self) -> None:
        for fg in self.sets.values():
            fg.close()

