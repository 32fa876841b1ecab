"""Leap seconds: what to announce, when to arm the kernel, which samples to ignore.

Pure: `now` is passed in (Unix seconds of the clock being disciplined, i.e. UTC as this host
believes it); no files, no clock reads. The daemon and the simulator feed it the leap second
list (the `leapfile`) and the engine the survivors' leap indicators.

Where a leap comes from, in order of authority:

1. A leap second list that has not expired (the IERS/NIST `leap-seconds.list`). It outranks
   the sources' votes, as in ntpd, whose `leapsec_add_dyn` refuses a voted leap while the
   table is valid: a hash-checked table beats the LI bits of a few servers.
2. Otherwise the survivors' votes. A leap that more than half of the survivors announce is
   taken for the end of the current UTC month (RFC 5905 section 7.3: "the last minute of the
   current month"; ntpd's dynamic leap does the same). A flag still set just after a leap
   (a sample taken before midnight, a slow upstream) then points at the end of January or
   July, which the rule below rejects; ntpd needs a rule of its own for that (no votes in
   the first hour of a month). When no source survives, the last majority's word stands
   until its leap has passed.
   An expired list does not silence the votes; the decision says it is expired, and the
   daemon warns once.

Only leaps at the end of June or December are believed, chrony's rule
(`is_leap_second_day`): every leap so far has been there (ITU-R TF.460 prefers them), and
LI set in another month is far more likely an upstream announcing weeks early (RFC 5905
says LI is about the current month) or a flag left over from the last leap than a leap;
were one real, the discipline would correct the second afterwards like any other offset.
ntpd believes any month end.

What is decided:

- `wire`, the LI this server puts in its replies while synchronised: on the leap's day
  only, as ntpd 4.2.8 does (it sets LI in the last day before the leap, LSPROX_ANNOUNCE;
  chrony on the leap day too). RFC 5905 allows the whole month, but a downstream client
  that arms its kernel as soon as it sees LI=1 -- as pyntpd once did -- would then insert
  the second at the end of the day it heard it; announced on the day itself, even such a
  client inserts it at the right midnight.
- `kernel`, what the kernel is armed with (1 STA_INS, 2 STA_DEL): only on the leap's day,
  the last day of June or December. Linux inserts or deletes at the end of the *current*
  UTC day once the flag is set, so a flag set on 5 December inserts a second that night.
  (ntpd arms on the last day of the month its table or vote names.)
- A leap the list or the majority announced earlier in the month is remembered (and the
  window below set) from then on; only what is said and armed waits for the day.
- `tai_offset`, TAI-UTC now, from the list (the kernel's ADJ_TAI).
- a window around an announced leap in which samples are not used: within `LEAP_WINDOW`
  of midnight the two ends of an exchange may be on different sides of the leap and
  disagree by a whole second (chrony ignores measurements within 5 s, too).
"""

from __future__ import annotations

import bisect
import calendar
import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from pyntpd.types import Leap

DAY = 86_400
LEAP_WINDOW = 5.0  # s either side of a leap's midnight in which samples are ignored


def _utc(t: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(t // 1, datetime.UTC)


def month_start(t: float) -> int:
    """The first second of the UTC month that contains `t`."""
    d = _utc(t)
    return calendar.timegm((d.year, d.month, 1, 0, 0, 0))


def next_month_start(t: float) -> int:
    """The first second of the UTC month after the one that contains `t`."""
    d = _utc(t)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0))


def ends_june_or_december(at: int) -> bool:
    """True if the midnight `at` ends 30 June or 31 December (starts 1 July or 1 January)."""
    d = _utc(at)
    return at % DAY == 0 and d.day == 1 and d.month in (1, 7)


@dataclass(frozen=True, slots=True)
class LeapList:
    """A leap second list in Unix seconds: from each `changes[i][0]` (a UTC midnight) on,
    TAI-UTC is `changes[i][1]`. The first entry is the list's start, not a leap."""

    changes: tuple[tuple[int, int], ...]
    expires: int | None = None  # Unix seconds; a list without an expiry counts as expired

    def valid(self, now: float) -> bool:
        return self.expires is not None and now < self.expires

    def _index(self, now: float) -> int:
        """Index of the first change after `now`."""
        return bisect.bisect_right(self.changes, now, key=lambda c: c[0])

    def tai_offset(self, now: float) -> int | None:
        """TAI-UTC at `now`; None before the list starts."""
        i = self._index(now)
        return self.changes[i - 1][1] if i > 0 else None

    def next_leap(self, now: float) -> tuple[int, int] | None:
        """(the midnight that ends the leap's day, Leap.ADD_SECOND or DEL_SECOND) of the
        first leap after `now`, if the list has one."""
        i = self._index(now)
        if i == 0 or i >= len(self.changes):
            return None
        at, after = self.changes[i]
        before = self.changes[i - 1][1]
        if after == before:
            return None
        return at, Leap.ADD_SECOND if after > before else Leap.DEL_SECOND


@dataclass(frozen=True, slots=True)
class LeapDecision:
    wire: int = Leap.NONE  # the LI of our replies while synchronised: 0, 1 or 2
    kernel: int = Leap.NONE  # what the kernel is armed with: 0, 1 (STA_INS), 2 (STA_DEL)
    at: int | None = None  # the midnight ending the announced leap's day (Unix seconds)
    tai_offset: int | None = None  # TAI-UTC now, from the list
    expired: bool = False  # a list is loaded but has expired: the votes decide
    next_change: float | None = None  # when this decision changes unless something new comes


class LeapPolicy:
    """The leap second decisions of one engine; remembers the last majority and the leap
    around which samples are ignored."""

    def __init__(self) -> None:
        self.leap_list: LeapList | None = None
        self.ignored = 0  # samples not used because they came too close to a leap
        self._voted: tuple[int, int] | None = None  # (at, leap) the last majority announced
        self._window_at: int | None = None  # the last leap announced

    def set_list(self, leap_list: LeapList | None) -> None:
        self.leap_list = leap_list

    def decide(self, now: float, votes: Sequence[int] | None) -> LeapDecision:
        """`votes`: the LI of every survivor, or None when no source survives (the last
        majority's word then stands)."""
        table = self.leap_list
        tai = table.tai_offset(now) if table is not None else None
        expired = table is not None and not table.valid(now)
        announce_from: float
        if table is not None and not expired:
            self._voted = None
            leap = table.next_leap(now)
            announce_from = month_start(leap[0] - 1) if leap is not None else 0.0
        else:
            if votes is not None:
                self._voted = self._majority(now, votes)
            leap = self._voted if self._voted is not None and now < self._voted[0] else None
            announce_from = now
        if leap is None or not ends_june_or_december(leap[0]):
            return LeapDecision(tai_offset=tai, expired=expired)
        at, li = leap
        arm_from = at - DAY
        changes = [t for t in (announce_from, arm_from, at) if t > now]
        next_change = min(changes) if changes else None
        if now < announce_from:
            return LeapDecision(tai_offset=tai, expired=expired, next_change=next_change)
        self._window_at = at
        today = li if now >= arm_from else Leap.NONE
        return LeapDecision(today, today, at, tai, expired, next_change)

    @staticmethod
    def _majority(now: float, votes: Sequence[int]) -> tuple[int, int] | None:
        for li in (Leap.ADD_SECOND, Leap.DEL_SECOND):
            if 2 * sum(1 for vote in votes if vote == li) > len(votes):
                return next_month_start(now), li
        return None

    def straddles(self, first: float, last: float) -> bool:
        """True for an exchange from local time `first` to `last` that comes within
        LEAP_WINDOW of the last leap announced: not to be used."""
        at = self._window_at
        return at is not None and first < at + LEAP_WINDOW and last > at - LEAP_WINDOW
