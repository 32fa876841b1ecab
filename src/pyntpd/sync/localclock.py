"""The local clock driver, ntpd's 127.127.1.0 (LOCAL): this host's own clock as a last resort.

It claims nothing it cannot know: its stratum is the administrator's `fudge stratum` (so a
server synchronised only to it serves that stratum plus one, as ntpd does), its refid is
`fudge refid` (LOCL by default), root delay is zero, and its dispersion is a fixed floor
that grows with time since the last update like any other source's.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyntpd.proto.timestamp import unix_to_ntp
from pyntpd.types import STRATUM_UNSYNC, Leap, SystemVars

LOCAL_POLL_SECONDS = 64.0
LOCAL_DISPERSION = 0.01  # ntpd's refclock_local reports a constant 10 ms
DEFAULT_STRATUM = 5  # ntpd's default when no `fudge stratum` is given


@dataclass(frozen=True, slots=True)
class LocalClockDriver:
    stratum: int = DEFAULT_STRATUM
    refid: bytes = b"LOCL"
    precision: int = -20

    def system_vars(self, now: float) -> SystemVars:
        """The system variables of a server whose only source is this driver, at `now`."""
        if self.stratum + 1 >= STRATUM_UNSYNC:
            return SystemVars()  # ntpd: stratum 15 + 1 is 16, i.e. unsynchronised
        return SystemVars(
            leap=Leap.NONE,
            stratum=self.stratum + 1,
            precision=self.precision,
            root_delay=0.0,
            root_dispersion=LOCAL_DISPERSION,
            refid=self.refid,
            reference_time=unix_to_ntp(now),
            updated_at=now,
        )
