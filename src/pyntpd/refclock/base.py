"""What every reference clock driver shares: ntpd's refclock core (ntp_refclock.c) as a value.

A driver takes raw readings once a second (or as its device delivers them): each one is an
offset, the reference time minus the local clock when the reading was taken, with the
driver's fudge already in it. `RefclockPeer` keeps them until the poll, where ntpd's median
filter (refclock_sample) turns the buffer into one `Sample`: the offsets sorted, the ones
furthest from the median dropped until about 60 % remain, their mean the offset and the RMS
of neighbouring differences the jitter. From there the sample goes through the same filter,
selection and statistics as a network source's: delay 0, dispersion the driver's precision
plus the system's plus that jitter (what clock_filter adds for a refclock), stratum the
`fudge stratum` (0 by default) and refid the driver's (`fudge refid` wins).

The peer stands in for an association in the driver and the engine (spec, reach, poll) and
keeps ntpd's clock status for mode 6 READCLOCK (`ntpq -c cv`): the last timecode, the poll
count, noreply/badformat/baddata and the last event. Every reading a driver refuses is
counted by reason in `drops`. Pure: `now` is passed in, nothing here reads a clock.
"""

from __future__ import annotations

import datetime
import enum
import itertools
import math
from dataclasses import dataclass, field

from pyntpd.proto.source import SourceSpec
from pyntpd.proto.timestamp import unix_to_ntp
from pyntpd.types import Leap, Sample

MAXSTAGE = 60  # ntpd's median filter holds at most this many readings per poll
STRATUM_REFCLOCK = 0  # ntpd's default stratum of a reference clock
FLAG1, FLAG2, FLAG3, FLAG4 = 1, 2, 4, 8


class Event(enum.IntEnum):
    """ntpd's clock events (CEVNT_*), the low byte of READCLOCK's status word."""

    NOMINAL = 0
    TIMEOUT = 1
    BADREPLY = 2
    FAULT = 3
    PROP = 4
    BADDATE = 5
    BADTIME = 6


EVENT_NAMES = {
    Event.NOMINAL: "clk_okay", Event.TIMEOUT: "clk_noreply", Event.BADREPLY: "clk_badformat",
    Event.FAULT: "clk_fault", Event.PROP: "clk_badsignal", Event.BADDATE: "clk_baddate",
    Event.BADTIME: "clk_badtime",
}


@dataclass(frozen=True, slots=True)
class Fudge:
    """`fudge 127.127.T.U ...`: what ntpd's refclockstat carries."""

    time1: float = 0.0
    time2: float = 0.0
    stratum: int = STRATUM_REFCLOCK
    refid: bytes | None = None  # None: the driver's own
    flags: int = 0  # FLAG1..FLAG4

    def flag(self, bit: int) -> bool:
        return bool(self.flags & bit)


def refid_bytes(text: str) -> bytes:
    return text.encode("ascii", "replace")[:4].ljust(4, b"\0")


def median_filter(offsets: list[float]) -> tuple[float, float, int]:
    """ntpd's refclock_sample: (mean of the kept offsets, jitter, how many were kept).
    The kept ones are the middle ~60 % around the median, trimmed from whichever end is
    further from it."""
    off = sorted(offsets)
    n = len(off)
    i, j = 0, n
    m = n - (n * 4) // 10
    while j - i > m:
        middle = off[(j + i) // 2]
        if off[j - 1] - middle < middle - off[i]:
            i += 1
        else:
            j -= 1
    kept = off[i:j]
    mean = sum(kept) / m
    jitter = math.sqrt(sum((b - a) ** 2 for a, b in itertools.pairwise(kept)) / m)
    return mean, jitter, m


@dataclass
class _Reading:
    offset: float
    local_time: float


@dataclass(eq=False)  # a key of the engine's sources: identity
class RefclockPeer:
    """One configured reference clock, as the engine and mode 6 see it."""

    clock_type: int
    unit: int
    name: str  # SHM(0)
    refid: bytes  # the driver's (fudge refid already applied by the caller if given)
    description: str  # READCLOCK's `device`
    spec: SourceSpec
    fudge: Fudge = field(default_factory=Fudge)
    precision: int = -20  # the driver's, log2 s; updated from the device where it says
    sys_precision: int = -20
    leap: int = Leap.NONE
    poll: int = field(init=False)
    reach: int = 0
    next_poll: float = 0.0
    readings: list[_Reading] = field(default_factory=list)
    # ntpd's refclockproc tallies (READCLOCK) and the last event
    polls: int = 0
    noreply: int = 0
    badformat: int = 0
    baddata: int = 0
    current: Event = Event.NOMINAL
    last_event: Event = Event.NOMINAL
    timecode: str = ""
    reference_time: float = 0.0  # the reference time of the newest reading (Unix s)
    last_sample: Sample | None = None
    received: int = 0  # readings taken (before the median filter)
    drops: dict[str, int] = field(default_factory=dict)  # readings refused, by reason

    def __post_init__(self) -> None:
        self.poll = self.spec.minpoll

    @property
    def address(self) -> str:
        return self.spec.address

    # --- the driver's side ----------------------------------------------------------

    def add(self, offset: float, local_time: float, reference_time: float) -> None:
        """One reading: `offset` = reference time - local time at `local_time`, fudged."""
        if not (math.isfinite(offset) and math.isfinite(local_time)):
            self.drop("not_finite")
            return
        self.received += 1
        self.reference_time = reference_time
        self.readings.append(_Reading(offset, local_time))
        if len(self.readings) > MAXSTAGE:
            del self.readings[0]

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def report(self, event: Event) -> None:
        """ntpd's refclock_report: the tallies READCLOCK shows, and the last event."""
        if event == Event.TIMEOUT:
            self.noreply += 1
        elif event == Event.BADREPLY:
            self.badformat += 1
        elif event in (Event.FAULT, Event.BADDATE, Event.BADTIME, Event.PROP):
            self.baddata += 1
        if event != self.current:
            self.last_event, self.current = self.current, event
        if event == Event.NOMINAL:
            self.current = Event.NOMINAL

    # --- the association's side ------------------------------------------------------

    def poll_due(self, now: float) -> bool:
        return now >= self.next_poll

    def take(self, now: float) -> Sample | None:
        """The poll: the buffer through the median filter, or None (and reach shifts a
        zero in, as for a network source that did not answer)."""
        self.polls += 1
        self.reach = (self.reach << 1) & 0xFF
        self.next_poll = now + float(1 << self.poll)
        readings, self.readings = self.readings, []
        if not readings:
            self.report(Event.TIMEOUT)
            return None
        if self.leap == Leap.UNSYNCHRONISED:
            self.drop("unsynchronised")  # ntpd's refclock_receive: no sample at all
            return None
        self.reach |= 1
        offset, jitter, _ = median_filter([r.offset for r in readings])
        local_time = sum(r.local_time for r in readings) / len(readings)
        dispersion = 2.0 ** self.precision + 2.0 ** self.sys_precision + max(
            jitter, 2.0 ** self.sys_precision)
        refid = self.fudge.refid if self.fudge.refid is not None else self.refid
        self.last_sample = Sample(
            offset=offset, delay=0.0, dispersion=dispersion, local_time=local_time,
            stratum=self.fudge.stratum, leap=self.leap, precision=self.precision,
            root_delay=0.0, root_dispersion=0.0, refid=refid,
            reference_time=unix_to_ntp(self.reference_time) if self.reference_time else 0)
        return self.last_sample

    def set_poll(self, exponent: int) -> None:
        self.poll = max(self.spec.minpoll, min(exponent, self.spec.maxpoll))

    def clock_stepped(self, step: float) -> None:
        """Readings from before a step are in the old timescale: forgotten; the next poll
        stays as far away in real time."""
        self.readings.clear()
        self.next_poll += step

    # --- mode 6 ---------------------------------------------------------------------

    def status_word(self) -> int:
        """READCLOCK's status: last event in the high byte, current status in the low."""
        return ((int(self.last_event) & 0xFF) << 8) | (int(self.current) & 0xFF)

    def clock_variables(self) -> dict[str, str]:
        """ntpd's default clock variables, formatted as ntpd sends them."""
        refid = self.fudge.refid if self.fudge.refid is not None else self.refid
        return {
            "device": _quote(self.description),
            "timecode": _quote(self.timecode),
            "poll": str(self.polls),
            "noreply": str(self.noreply),
            "badformat": str(self.badformat),
            "baddata": str(self.baddata),
            "fudgetime1": f"{self.fudge.time1 * 1e3:.3f}",
            "fudgetime2": f"{self.fudge.time2 * 1e3:.3f}",
            "stratum": str(self.fudge.stratum),
            "refid": refid.rstrip(b"\0").decode("ascii", "replace"),
            "flags": str(self.fudge.flags),
        }


def _quote(text: str) -> str:
    return '"' + "".join(c if 0x20 <= ord(c) < 0x7F and c != '"' else "." for c in text) + '"'


def lastcode_iso(unix_s: int, nsec: int) -> str:
    """A timecode the way ntpd's SHM driver shows it: ISO 8601 with nanoseconds."""
    t = datetime.datetime.fromtimestamp(unix_s, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{nsec:09d}Z"
