"""What the sync core is told: ntp.conf's `tos` and `tinker` values, and its own tuning.

The configuration layer parses `tos`/`tinker` lines into the first two (config/model
re-exports them); `Tuning` holds the engine's and the filters' constants in one frozen
value passed in, so that a benchmark comparing variants builds another value instead of
patching module globals.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TosConfig:
    minsane: int = 1
    minclock: int = 3
    maxclock: int = 10
    maxdist: float = 1.5
    mindist: float = 0.001
    orphan: int = 16  # 16 = orphan mode off
    orphanwait: int = 300
    cohort: bool = False
    floor: int = 0
    ceiling: int = 15
    beacon: int = 7200


@dataclass(frozen=True, slots=True)
class TinkerConfig:
    step: float = 0.128
    stepback: float | None = None  # None: same as step
    stepfwd: float | None = None  # None: same as step
    stepout: float = 300.0
    panic: float = 1000.0  # 0 disables the sanity check
    allan: int = 11  # log2 s
    dispersion: float = 15.0  # PPM
    huffpuff: float | None = None  # None: filter off
    freq: float | None = None  # PPM; None: from the driftfile
