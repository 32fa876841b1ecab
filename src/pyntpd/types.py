"""Value types shared by every layer: the wire, the sync core, the clock and the shell.

Nothing here imports anything of pyntpd's: these are the plain values that cross the layer
boundaries (what a server states about its time, what one measurement says, what the engine
asks of the clock, how ntpq marks a source).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Leap(enum.IntEnum):
    NONE = 0
    ADD_SECOND = 1
    DEL_SECOND = 2
    UNSYNCHRONISED = 3


STRATUM_UNSYNC = 16
PHI = 15e-6  # RFC 5905 frequency tolerance: dispersion grows this much per second


@dataclass(frozen=True, slots=True)
class SystemVars:
    """What this server states about its own time (RFC 5905 system variables)."""

    leap: int = Leap.UNSYNCHRONISED
    stratum: int = STRATUM_UNSYNC
    precision: int = -20
    root_delay: float = 0.0
    root_dispersion: float = 0.0
    refid: bytes = b"\0\0\0\0"
    reference_time: int = 0  # NTP timestamp of the last clock update
    updated_at: float = 0.0  # `now` (caller's time base) when these were computed

    @property
    def synchronised(self) -> bool:
        return self.leap != Leap.UNSYNCHRONISED and self.stratum < STRATUM_UNSYNC


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement of the server's clock against ours (RFC 5905 §8).

    offset = ((t2 - t1) + (t3 - t4)) / 2 is how far the server is ahead of us; `local_time`
    is t4 in the local clock's timescale (seconds), when the sample was taken.
    """

    offset: float
    delay: float
    dispersion: float
    local_time: float
    stratum: int
    leap: int
    precision: int
    root_delay: float
    root_dispersion: float
    refid: bytes
    reference_time: int

    @property
    def root_distance(self) -> float:
        """Half the round trip to the primary source plus everything that could have drifted."""
        return (self.root_delay + self.delay) / 2 + self.root_dispersion + self.dispersion


class Tally(enum.StrEnum):
    """ntpq's tally codes."""

    REJECT = " "
    FALSETICKER = "x"
    EXCESS = "."
    OUTLIER = "-"
    CANDIDATE = "+"
    SYSPEER = "*"


class Unfit(enum.IntFlag):
    """Why a source cannot be selected: ntpd's peer tests, the bits of mode 6's `flash`."""

    NONE = 0
    STRATUM = 0x0200  # TEST10: unsynchronised, or a stratum outside tos floor..ceiling
    DISTANCE = 0x0400  # TEST11: root distance beyond tos maxdist
    LOOP = 0x0800  # TEST12: synchronised to us, or to our own system peer
    UNREACHABLE = 0x1000  # TEST13: no sample for too long


@dataclass(frozen=True, slots=True)
class SetFrequency:
    ppm: float


@dataclass(frozen=True, slots=True)
class Step:
    offset: float


@dataclass(frozen=True, slots=True)
class Slew:
    offset: float  # adjtime-style, only for -q


@dataclass(frozen=True, slots=True)
class SetStatus:
    synchronised: bool
    maxerror: float
    esterror: float
    leap: int  # what the kernel is armed with: 0, 1 (STA_INS), 2 (STA_DEL)


@dataclass(frozen=True, slots=True)
class SetTai:
    offset: int  # TAI-UTC, s (the kernel's ADJ_TAI)


ClockAction = SetFrequency | Step | Slew | SetStatus | SetTai
