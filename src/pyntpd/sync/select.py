"""Source selection (RFC 5905 §11.2): intersection, clustering, combining.

Pure functions over `Candidate`s — sources that passed the sanity checks (reachable, a
trusted estimate, stratum within floor/ceiling, root distance within maxdist).

- `intersect`: Marzullo's algorithm as ntpd 4.2.8 runs it. Each candidate is the interval
  offset +- root distance, which contains the true time if the source is honest, whatever
  the path's asymmetry (an offset error is at most half the delay). Allowing f falsetickers
  (f < n/2), the intersection is the span from the first to the last point that n - f of the
  intervals share, for the smallest such f; every candidate whose interval reaches that span
  is a truechimer, the others are falsetickers and are never followed. (The RFC 5905
  appendix also required each candidate's *offset*, its interval's midpoint, to lie in the
  intersection; ntpd 4.2.8 dropped that rule, since on an asymmetric path an honest server's
  offset sits up to half the delay away from the truth: two honest servers, one on a path
  5 ms longer one way, would both be falsetickers under it.) Intervals that merely touch
  share that point. `true` candidates always survive. With no majority, nobody survives.
- `cluster`: while more than `minclock` survive, drop the survivor whose offset differs most
  from the others (selection jitter), unless that is already smaller than the best
  survivor's own jitter. A `prefer` source is never dropped.
- `combine`: the survivors' weighted average for the offset, the frequency and the variance.
  The weight is 1/(estimate variance + path distance^2): the path distance (half the round
  trip to the primary source plus its dispersion) bounds what asymmetry can hide, so a near
  server outweighs a far one, as ntpd's 1/root distance does; unlike the root distance it
  does not swing with the age of the last sample (the estimate variance already grows with
  it), which would make the combined offset wobble as the sources' polls interleave.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

MAX_DISTANCE = 1.5  # `tos maxdist`: the stratum weight in the merit


@dataclass(frozen=True, slots=True)
class Candidate:
    key: Hashable
    offset: float  # s, source minus local clock, predicted to now
    frequency: float  # ppm the local clock needs against this source
    variance: float  # of `offset` as an estimate
    root_distance: float  # half-width of the correctness interval
    jitter: float  # single-sample noise
    path_distance: float = 0.0  # (root delay + delay) / 2 + root dispersion
    stratum: int = 1
    leap: int = 0
    prefer: bool = False
    true: bool = False

    @property
    def merit(self) -> float:
        return self.stratum * MAX_DISTANCE + self.root_distance


@dataclass(frozen=True, slots=True)
class Intersection:
    low: float
    high: float
    truechimers: tuple[Candidate, ...]
    falsetickers: tuple[Candidate, ...]


def _first_shared(edges: Sequence[tuple[float, int]], need: int, rising: bool) -> float | None:
    """The first value, scanning `edges` upwards (`rising`) or downwards, that `need`
    intervals share; None if no point is shared by that many."""
    count = 0
    for value, kind in edges if rising else reversed(edges):
        # kind 0 opens an interval scanning upwards, 1 opens it scanning downwards.
        count += 1 if (kind == 0) == rising else -1
        if count >= need:
            return value
    return None


def intersect(candidates: Sequence[Candidate]) -> Intersection:
    n = len(candidates)
    # Lower ends sort before upper ends of the same value, so that touching intervals
    # share their common point in both scans.
    edges = sorted(edge for c in candidates
                   for edge in ((c.offset - c.root_distance, 0), (c.offset + c.root_distance, 1)))
    low, high = math.inf, -math.inf
    allow = 0
    while 2 * allow < n:
        first = _first_shared(edges, n - allow, rising=True)
        last = _first_shared(edges, n - allow, rising=False)
        if first is not None and last is not None:
            low, high = first, last
            break
        allow += 1
    truechimers, falsetickers = [], []
    for c in candidates:
        reaches = c.offset - c.root_distance <= high and c.offset + c.root_distance >= low
        (truechimers if reaches or c.true else falsetickers).append(c)
    return Intersection(low, high, tuple(truechimers), tuple(falsetickers))


def selection_jitter(c: Candidate, others: Sequence[Candidate]) -> float:
    if len(others) < 2:
        return 0.0
    total = sum((c.offset - o.offset) ** 2 for o in others)
    return math.sqrt(total / (len(others) - 1))


def cluster(
    survivors: Sequence[Candidate], minclock: int
) -> tuple[list[Candidate], list[Candidate]]:
    """(survivors, outliers): prune the most discordant until the rest agree."""
    kept = sorted(survivors, key=lambda c: c.merit)
    outliers: list[Candidate] = []
    while len(kept) > max(minclock, 1):
        scored = [(selection_jitter(c, kept), c) for c in kept if not c.prefer]
        if not scored:
            break
        worst_jitter, worst = max(scored, key=lambda item: item[0])
        if worst_jitter <= min(c.jitter for c in kept):
            break
        kept.remove(worst)
        outliers.append(worst)
    return kept, outliers


@dataclass(frozen=True, slots=True)
class Combined:
    offset: float
    frequency: float
    variance: float
    jitter: float  # RMS of the survivors' offsets about the combined one


def combine(survivors: Sequence[Candidate]) -> Combined:
    weights = [1.0 / max(c.variance + c.path_distance**2, 1e-18) for c in survivors]
    total = sum(weights)
    offset = sum(w * c.offset for w, c in zip(weights, survivors, strict=True)) / total
    frequency = sum(w * c.frequency for w, c in zip(weights, survivors, strict=True)) / total
    # Independent estimates: var(sum w x / W) = sum w^2 var / W^2.
    variance = sum(w * w * c.variance for w, c in zip(weights, survivors, strict=True))
    variance /= total * total
    spread = sum(w * (c.offset - offset) ** 2 for w, c in zip(weights, survivors, strict=True))
    return Combined(offset, frequency, variance, math.sqrt(spread / total))
