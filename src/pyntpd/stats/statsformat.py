"""ntpd 4.2.8's statistics file lines: loopstats, peerstats, sysstats. Pure: format and parse.

Every line starts with the Modified Julian Day and the seconds past UTC midnight (three
decimals), then, as ntpd's ntp_util.c record_*_stats write them:

    loopstats  offset(s, %.9f) frequency(ppm, %.3f) jitter(s, %.9f) wander(ppm, %.6f)
               poll(log2 s, %d)
    peerstats  address status(hex, %x) offset(s) delay(s) dispersion(s) jitter(s)  (%.9f)
    sysstats   seconds since the counters were reset, then packets: received, for this host,
               current version, old version, access denied, bad length or format, bad
               authentication, declined, rate limited, KoD sent  (%d each)

so the tools that read ntpd's files (ntpsec's ntpviz, the old summary scripts) read ours.
The parsers are strict (exact field count, finite numbers) and raise StatsParseError: the
plot tool counts and skips what does not parse.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

from pyntpd.proto.control import PeerInfo
from pyntpd.proto.packet import DropReason
from pyntpd.proto.server import ServerCounters
from pyntpd.sync.engine import SourceStatus, SyncResult

MJD_UNIX_EPOCH = 40587  # MJD of 1970-01-01
# 9999-12-31: the plot tool turns times into datetimes, which end there (a leap second on
# the last day would not fit), and C's time functions fail further on.
MJD_LIMIT = 2973483
SECONDS_PER_DAY = 86400
_MS_PER_DAY = SECONDS_PER_DAY * 1000
WANDER_AVERAGE = 8  # ntpd's CLOCK_AVG: the wander is an exponential average over ~8 updates
DEFAULT_POLL = 6


class StatsParseError(ValueError):
    """A statistics line that is not in ntpd's format."""


# --- time stamps ----------------------------------------------------------------------------


def mjd_seconds(unix: float) -> tuple[int, str]:
    """(MJD, "seconds.mmm" past UTC midnight) for a Unix time, rounded to the millisecond
    as a whole, so a time just before midnight never reads as second 86400."""
    if not math.isfinite(unix):
        raise ValueError(f"time {unix} is not finite")
    ms = round(unix * 1000)
    day, in_day = divmod(ms, _MS_PER_DAY)
    return day + MJD_UNIX_EPOCH, f"{in_day // 1000}.{in_day % 1000:03d}"


def unix_time(mjd: int, seconds: float) -> float:
    return (mjd - MJD_UNIX_EPOCH) * SECONDS_PER_DAY + seconds


def _stamp(unix: float) -> str:
    day, seconds = mjd_seconds(unix)
    return f"{day} {seconds}"


def _finite(*values: float) -> None:
    for value in values:
        if not math.isfinite(value):
            raise ValueError(f"value {value} is not finite")


# --- records --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoopStats:
    time: float  # Unix s
    offset: float  # s, the clock's offset (true minus local)
    frequency: float  # ppm
    jitter: float  # s
    wander: float  # ppm
    poll: int  # log2 s

    def line(self) -> str:
        _finite(self.offset, self.frequency, self.jitter, self.wander)
        return (f"{_stamp(self.time)} {self.offset:.9f} {self.frequency:.3f} "
                f"{self.jitter:.9f} {self.wander:.6f} {self.poll:d}")


@dataclass(frozen=True, slots=True)
class PeerStats:
    time: float
    address: str
    status: int  # the peer status word
    offset: float  # s
    delay: float  # s
    dispersion: float  # s
    jitter: float  # s

    def line(self) -> str:
        _finite(self.offset, self.delay, self.dispersion, self.jitter)
        if not _is_token(self.address):
            raise ValueError(f"address {self.address!r} is not one field")
        return (f"{_stamp(self.time)} {self.address} {self.status & 0xFFFF:x} "
                f"{self.offset:.9f} {self.delay:.9f} {self.dispersion:.9f} {self.jitter:.9f}")


SYS_COUNTERS = ("received", "processed", "newversion", "oldversion", "restricted",
                "badlength", "badauth", "declined", "limited", "kodsent")


@dataclass(frozen=True, slots=True)
class SysCounts:
    """ntpd's sys_* packet counters, in sysstats order."""

    received: int = 0
    processed: int = 0  # "packets for this host": answered
    newversion: int = 0
    oldversion: int = 0
    restricted: int = 0  # access denied
    badlength: int = 0  # bad length or format
    badauth: int = 0
    declined: int = 0
    limited: int = 0  # rate limited
    kodsent: int = 0

    def values(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in SYS_COUNTERS)

    def __sub__(self, other: SysCounts) -> SysCounts:
        return SysCounts(*(max(0, a - b) for a, b in zip(self.values(), other.values(),
                                                          strict=True)))


@dataclass(frozen=True, slots=True)
class SysStats:
    time: float
    since_reset: int  # s
    counts: SysCounts

    def line(self) -> str:
        return " ".join([_stamp(self.time), str(max(0, self.since_reset)),
                         *(str(v) for v in self.counts.values())])


@dataclass(frozen=True, slots=True)
class ClockStats:
    """ntpd's record_clock_stats: `MJD seconds 127.127.T.U text`, the text being the
    driver's (a timecode, or its tallies under flag4)."""

    time: float
    address: str
    text: str

    def line(self) -> str:
        if not _is_token(self.address):
            raise ValueError(f"address {self.address!r} is not one field")
        text = "".join(c if c.isprintable() else "?" for c in self.text)
        return f"{_stamp(self.time)} {self.address} {text}"


StatsRecord = LoopStats | PeerStats | SysStats | ClockStats

# Which of ntpd's sysstats counters each of our drop reasons adds to. The serving path does
# not count packets by version, so "current version" and "old version" stay 0.
_DROP_FIELD: dict[DropReason, str] = {
    DropReason.RESTRICTED: "restricted",
    DropReason.CONTROL_DENIED: "restricted",
    DropReason.AUTH_REQUIRED: "badauth",
    DropReason.BAD_AUTH: "badauth",
    DropReason.RATE_LIMITED: "limited",
    DropReason.MODE7: "declined",
    DropReason.NOT_A_REQUEST: "declined",
}


def sys_counts(counters: ServerCounters) -> SysCounts:
    """The responder's counters (cumulative) as ntpd's sysstats counters."""
    fields = dict.fromkeys(SYS_COUNTERS, 0)
    fields["received"] = counters.received
    fields["processed"] = counters.served
    for reason, count in counters.dropped.items():
        fields[_DROP_FIELD.get(reason, "badlength")] += count
    fields["kodsent"] = sum(counters.kod_sent.values())
    return SysCounts(**fields)


# --- from the engine's results ---------------------------------------------------------------


def peer_status_word(status: SourceStatus | None, reach: int) -> int:
    """The peer status word as mode 6 shows it (configured, reachable, selection code)."""
    tally = str(status.tally) if status is not None else " "
    return PeerInfo(associd=0, srcadr="", reach=reach, tally=tally).status_word()


def peer_record(now: float, address: str, status: SourceStatus, reach: int) -> PeerStats:
    return PeerStats(now, address, peer_status_word(status, reach), status.offset,
                     status.delay, status.dispersion, status.jitter)


class LoopRecorder:
    """Turns engine results into loopstats records; keeps ntpd's running wander estimate
    (the RMS of successive frequency changes, averaged over WANDER_AVERAGE updates)."""

    def __init__(self) -> None:
        self.wander = 0.0  # ppm
        self._last_ppm: float | None = None

    def record(self, now: float, result: SyncResult) -> LoopStats:
        ppm = result.frequency
        if self._last_ppm is not None and math.isfinite(ppm):
            change = (ppm - self._last_ppm) ** 2
            square = self.wander**2
            self.wander = math.sqrt(max(0.0, square + (change - square) / WANDER_AVERAGE))
        self._last_ppm = ppm
        return LoopStats(now, result.offset, ppm, result.jitter, self.wander,
                         _system_poll(result))


def _system_poll(result: SyncResult) -> int:
    peer: Hashable | None = result.system_peer
    if peer is not None and peer in result.polls:
        return result.polls[peer]
    return min(result.polls.values(), default=DEFAULT_POLL)


# --- parsing --------------------------------------------------------------------------------


def _is_token(text: str) -> bool:
    return bool(text) and text.isprintable() and not any(c.isspace() for c in text)


def _fields(line: str, count: int, what: str) -> list[str]:
    fields = line.split()
    if len(fields) != count:
        raise StatsParseError(f"{what} line has {len(fields)} fields, not {count}")
    return fields


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise StatsParseError(f"{what} '{text[:40]}' is not a number") from None
    if not math.isfinite(value):
        raise StatsParseError(f"{what} '{text[:40]}' is not finite")
    return value


def _int(text: str, what: str, base: int = 10) -> int:
    if not text.isascii() or not text.lstrip("-").isalnum():
        raise StatsParseError(f"{what} '{text[:40]}' is not an integer")
    try:
        return int(text, base)
    except ValueError:
        raise StatsParseError(f"{what} '{text[:40]}' is not an integer") from None


def _time(fields: list[str]) -> float:
    mjd = _int(fields[0], "MJD")
    seconds = _float(fields[1], "seconds")
    if not 0 <= mjd < MJD_LIMIT or not 0.0 <= seconds <= SECONDS_PER_DAY:  # 86400: leap s
        raise StatsParseError(f"time '{fields[0]} {fields[1]}' is out of range")
    return unix_time(mjd, seconds)


def parse_loopstats(line: str) -> LoopStats:
    f = _fields(line, 7, "loopstats")
    return LoopStats(_time(f), _float(f[2], "offset"), _float(f[3], "frequency"),
                     _float(f[4], "jitter"), _float(f[5], "wander"), _int(f[6], "poll"))


def parse_peerstats(line: str) -> PeerStats:
    f = _fields(line, 8, "peerstats")
    if not _is_token(f[2]):
        raise StatsParseError("peerstats address is not printable")
    status = _int(f[3], "status", 16)
    if not 0 <= status <= 0xFFFF:
        raise StatsParseError(f"status '{f[3]}' is out of range")
    return PeerStats(_time(f), f[2], status, _float(f[4], "offset"), _float(f[5], "delay"),
                     _float(f[6], "dispersion"), _float(f[7], "jitter"))


def parse_sysstats(line: str) -> SysStats:
    f = _fields(line, 3 + len(SYS_COUNTERS), "sysstats")
    values = [_int(text, "counter") for text in f[2:]]
    if any(v < 0 for v in values):
        raise StatsParseError("sysstats counters are never negative")
    return SysStats(_time(f), values[0], SysCounts(*values[1:]))


PARSERS = {"loopstats": parse_loopstats, "peerstats": parse_peerstats,
           "sysstats": parse_sysstats}
