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


# Half-decade grid of oscillator wander (q, 1/s) the filter bank spans: 1e-20 .. 1e-14.
WANDERS = tuple(10.0 ** (-20 + 0.5 * i) for i in range(13))


@dataclass(frozen=True, slots=True)
class Tuning:
    """The engine's and the filters' constants (sync/engine, sync/filter explain each).

    The defaults are what pyntpd runs with; the simulator's ablations (bench/accuracy.py)
    and tests that need a shorter horizon build another value and pass it in SyncConfig.
    """

    # A source with no sample for this many polls (plus `reach_slack` s) is unreachable.
    unreach_polls: int = 8
    reach_slack: float = 16.0
    # Before anything is selected, a source with samples but not yet ready is still arriving
    # if its newest sample is within this many polls: the ready ones wait for it unless they
    # are already a majority (chrony waits the same way), so that a liar ready first is not
    # followed and the honest one ready next is not outvoted with it.
    arriving_polls: int = 2
    # A source's correctness interval also holds this many standard deviations of its
    # offset prediction (wide while its frequency is known from a few samples only).
    prediction_sigmas: float = 3.0
    # The longest the engine goes without an update (holdover, status, a lost source).
    hold_wakeup: float = 64.0
    # Adaptive polling: samples at a poll interval before it may be raised, and the
    # fraction of a sample's typical error the prediction may lose over the next interval.
    # (Tuned on tune-lan, seeds 11-13, default polling. With slews over 3 polls: 0.25
    # settles at ~205 s mean poll, 21 us RMS; 0.5 at 430 s, 40 us; 1.0 at 816 s, 63 us.
    # Over half a poll (slew_polls 0.5): 1.0 at 800 s, 40 us. docs/ARCHITECTURE.md.)
    poll_samples: int = 4
    poll_ratio: float = 1.0
    # A slew is spread over this many poll intervals of the system peer (issue 13: the
    # rate moves by offset / (slew_polls * poll), not by tens of ppm for 2 s).
    slew_polls: float = 0.5
    # After the first sync a slew runs the clock at most this far off the frequency
    # estimate (an offset left by the fast slew, or after an outage, takes longer instead).
    slew_ppm: float = 5.0
    # How late a kernel may apply a frequency change (s): one tick at HZ 250 before Linux
    # 4.19 (since then at once); what it may have put the raw clock off by widens the filters.
    frequency_latency: float = 0.004
    # Prior uncertainty (s/s) of a frequency known from the driftfile or the running estimate.
    known_frequency_sd: float = 5e-6
    # The filter: samples as delay-bounded intervals (False: Gaussian updates, for
    # comparison), and the wander grid of its filter bank.
    interval_update: bool = True
    wanders: tuple[float, ...] = WANDERS


# What SyncConfig starts from. Only a test that runs a real daemon with a shorter horizon
# replaces it (in that child process); everything else passes a Tuning value.
DEFAULT = Tuning()
