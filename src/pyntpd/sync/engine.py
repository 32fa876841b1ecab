"""The synchronisation engine: samples in, clock decisions and system variables out.

Pure, like the rest of `proto`: it never reads a clock. `now` is always the local clock being
disciplined, in Unix seconds (the daemon's `clock.now() / 1e9`; a Sample's `local_time` is
that clock at t4), never a monotonic clock — the engine accounts for its own steps.

How the daemon drives it (the simulator, `pyntpd.sim`, does exactly this):

    engine = SyncEngine(SyncConfig(...), now)
    apply_actions(clock, engine.update(now).actions)  # clock.base; at start: frequency
    engine.add_source(key, spec)                  # per association (remove_source too)
    ... a reply arrives, the Association returns a Sample:
    engine.on_sample(key, sample)
    result = engine.update(now)
    apply_actions(clock, result.actions)          # immediately: the engine assumes `now`
    if result.stepped: every Association.clock_stepped(); move timers by result.step
    if result.panic: log str(result.panic) and exit(150: daemon/exitcodes.EXIT_PANIC)
    responder.set_system(result.system); assoc.set_poll(result.polls[key]) for each
    ... and call update(now) again at result.wakeup (an end of slew, a source ageing out).

Per source: a Kalman filter against the raw clock (`filter`); per update: sanity checks,
intersection, clustering, combining (`select`); then the step/slew/panic policy
(`discipline`). The local clock driver and orphan mode only stand in when no real source is
selected, and never move the clock. Leap seconds (the LI served, when the kernel is armed,
the TAI offset, samples ignored around midnight) are `sync.leap`'s decisions.

Orphan mode (`tos orphan N`) follows ntpd 4.2.8's clock_select: a source at the orphan
stratum N is not a candidate but may be elected orphan parent, the one with the lowest
metric (its IPv4 address, or the hash of its IPv6 address, as a refid) below our own metric
towards it (the local address we reach it from); a source above stratum N is never selected
(it could have the orphan parent among its ancestors: a loop). When no real source survives,
we follow the elected parent at stratum N+1; when none is elected, we become the parent
ourselves once `orphanwait` has passed, at stratum N. So a mesh of servers whose upstreams
are gone agrees on one clock, the parent's, without a timing loop.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Hashable
from dataclasses import dataclass, field, replace

from pyntpd.proto.source import SourceSpec
from pyntpd.proto.timestamp import unix_to_ntp
from pyntpd.sync import select, tuning
from pyntpd.sync.discipline import (
    FAST_ABOVE,
    MAX_FREQUENCY_PPM,
    CorrectionModel,
    Decision,
    Discipline,
    DisciplineConfig,
    Plan,
)
from pyntpd.sync.filter import SourceFilter, Verdict
from pyntpd.sync.leap import LeapDecision, LeapList, LeapPolicy
from pyntpd.sync.localclock import LocalClockDriver
from pyntpd.sync.tuning import TinkerConfig, TosConfig, Tuning
from pyntpd.types import (
    PHI,
    STRATUM_UNSYNC,
    ClockAction,
    Leap,
    Sample,
    SetFrequency,
    SetStatus,
    SetTai,
    Slew,
    Step,
    SystemVars,
    Tally,
    Unfit,
)

ORPHAN_REFID = bytes([127, 0, 0, 1])
MAXERROR_CAP = 16.0
NO_METRIC = 0xFFFFFFFF  # our metric towards a source when we do not know our address
PPS_NUMBERING = 0.4  # s: ntpd follows a PPS clock only while the prefer peer is this close


class PanicExit(Exception):
    """The offset is beyond the panic threshold: ntpd exits rather than set the clock."""

    def __init__(self, offset: float, threshold: float) -> None:
        self.offset = offset
        self.threshold = threshold
        super().__init__(
            f"time correction of {offset:+.0f} s exceeds the sanity limit of {threshold:.0f} s;"
            " check the sources, then set the clock manually (or, if they are right, start"
            " once with -g)")


# --- clock actions: applied in order by the daemon ------------------------------------

@dataclass(frozen=True, slots=True)
class SyncConfig:
    tos: TosConfig = field(default_factory=TosConfig)
    tinker: TinkerConfig = field(default_factory=TinkerConfig)
    panic_gate: bool = False  # -g
    force_step_once: bool = False  # -G
    slew_only: bool = False  # -x
    once: bool = False  # -q: set the clock once, then `done`
    discipline: bool = True  # False: observe only (`disable ntp`, ObserveClock)
    local_clock: LocalClockDriver | None = None
    precision: int = -20
    initial_frequency: float | None = None  # ppm, from the driftfile or `tinker freq`
    # ppm the kernel was running at when the daemon took the clock over: where the clock
    # stays until there is an estimate, when there is no initial frequency. Not a prior for
    # the filters: it may be anything a previous daemon left (even mid-slew).
    start_frequency: float | None = None
    slew_time: float | None = None  # s; None: the discipline's default
    # ppm the clock can run at for a fast slew before the first sync (beyond the kernel's
    # 500 ppm: through the tick length, ADJ_TICK); 0: none. The shell sets the clock's own.
    fast_slew_ppm: float = 0.0
    tuning: Tuning = field(default_factory=lambda: tuning.DEFAULT)
    # refid_for() of every address of this host: a source whose reference is one of them is
    # synchronised to us (RFC 5905 fit(): a timing loop). The daemon lists them.
    own_refids: frozenset[bytes] = frozenset()

    def discipline_config(self) -> DisciplineConfig:
        t = self.tinker
        extra = {} if self.slew_time is None else {"slew_time": self.slew_time}
        return DisciplineConfig(
            step=t.step, stepback=t.stepback, stepfwd=t.stepfwd, stepout=t.stepout,
            panic=t.panic, panic_gate=self.panic_gate, force_step_once=self.force_step_once,
            slew_only=self.slew_only, **extra)


@dataclass(frozen=True, slots=True)
class SourceStatus:
    tally: Tally
    offset: float  # s, source minus local clock now (nan before the first sample)
    delay: float
    jitter: float
    dispersion: float
    root_distance: float
    poll: int
    samples: int
    unfit: Unfit = Unfit.NONE  # why it could not be selected (REJECT), if a test said so


@dataclass(frozen=True, slots=True)
class SyncResult:
    actions: tuple[ClockAction, ...]
    system: SystemVars
    sources: dict[Hashable, SourceStatus]
    polls: dict[Hashable, int]
    wakeup: float | None  # local time at which update() wants to run again
    offset: float  # s, the estimated clock offset (true minus local) before the actions
    frequency: float  # ppm, the frequency estimate
    jitter: float  # s, the combined estimate's standard deviation
    system_peer: Hashable | None = None
    step: float = 0.0  # s the clock was stepped by (0.0: not stepped)
    panic: PanicExit | None = None
    done: bool = False  # -q: the clock was set; the daemon may exit
    leap: LeapDecision = field(default_factory=LeapDecision)

    @property
    def stepped(self) -> bool:
        return self.step != 0.0


def orphan_metric(address: str | None) -> int:
    """ntpd's orphan election metric: the address as a refid, as an unsigned number."""
    return NO_METRIC if address is None else int.from_bytes(refid_for(address), "big")


def _reach_window(src: _Source, tune: Tuning) -> float:
    """How long after its newest sample a silent source stays reachable: until
    `unreach_polls` polls have gone unanswered. The first of them is the request the association had
    already scheduled at the poll of that time (the engine may have lowered the poll since,
    after a spike; the association may have backed off while the source was unreachable),
    the others at the current poll."""
    first = 2.0 ** max(src.heard_poll, src.poll)
    return first + (tune.unreach_polls - 1) * 2.0 ** src.poll + tune.reach_slack


def refid_for(address: str) -> bytes:
    """RFC 5905: an IPv4 upstream's address, or the first 4 octets of an IPv6 one's MD5."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return hashlib.md5(address.encode(), usedforsecurity=False).digest()[:4]
    if ip.version == 4:
        return ip.packed
    return hashlib.md5(ip.packed, usedforsecurity=False).digest()[:4]


@dataclass
class _Source:
    spec: SourceSpec
    filter: SourceFilter
    poll: int
    sample: Sample | None = None  # the newest
    sample_at: float = -math.inf  # local time of the newest
    at_poll: int = 0  # samples taken at the current poll
    heard_poll: int = 0  # the poll when the newest sample came: the next request's interval
    fresh: bool = False  # a sample arrived since the poll was last reconsidered
    tally: Tally = Tally.REJECT
    local_metric: int = NO_METRIC  # ours towards this source, for the orphan election


@dataclass(slots=True)
class _ClockSide:
    """The engine's state that assumes its clock actions took effect, as it was before an
    update: put back if the clock did not carry them out."""

    model: CorrectionModel
    adjusted: bool
    spike_since: float | None
    started: bool
    slew_until: float | None
    done: bool
    offset: float
    last_update: float
    synced: bool | None
    settled: bool


@dataclass
class SyncEngine:
    config: SyncConfig
    start: float  # local time the engine was created
    sources: dict[Hashable, _Source] = field(default_factory=dict)

    def __post_init__(self) -> None:
        freq = self.config.initial_frequency
        start = freq if freq is not None else self.config.start_frequency
        self._ppm0 = 0.0 if start is None or not self.config.discipline else start
        # A previous daemon stopped in a fast slew may have left the tick length too.
        self._ppm0 = max(-MAX_FREQUENCY_PPM, min(MAX_FREQUENCY_PPM, self._ppm0))
        self.model = CorrectionModel(self.start, self._ppm0)
        self.discipline = Discipline(self.config.discipline_config())
        self.frequency_ppm = self._ppm0 if freq is None else freq
        self._started = False
        self._dirty = False
        self._slew_until: float | None = None
        self._system_peer: Hashable | None = None
        self._last_update = self.start  # local time of the last clock update
        self._lost_at = self.start  # when the last selection was lost (orphan wait)
        self._done = False
        self._variance = math.inf
        self._offset = 0.0  # the offset still to correct after the last decision
        self._synced: bool | None = False  # what the kernel was last told (None: unknown)
        self._kernel_leap: int = Leap.NONE  # the leap the kernel was last armed with
        self._tai: int | None = None  # the TAI offset the kernel was last given
        self.leap = LeapPolicy()
        self._refid: bytes | None = None  # the refid we state while synchronised
        self._before: _ClockSide | None = None  # before the last update's actions
        # The first sync is done: the offset was once within FAST_ABOVE (a fast slew,
        # before it, may run the clock beyond 500 ppm; never after it).
        self._settled = False

    def set_leap_file(self, leap_list: LeapList | None) -> None:
        """The leap second list (the leapfile), or None: the sources' majority decides."""
        self.leap.set_list(leap_list)
        self._tai = None  # tell the kernel again, whatever the new list says

    # --- sources --------------------------------------------------------------------

    def add_source(self, key: Hashable, spec: SourceSpec,
                   local_address: str | None = None) -> None:
        """`local_address`: the address we reach this source from (for orphan mode)."""
        tune = self.config.tuning
        precision = 2.0 ** self.config.precision
        if self.config.initial_frequency is not None or math.isfinite(self._variance):
            # The driftfile's or the current estimate: a new source need not relearn it.
            filt = SourceFilter(precision, self.frequency_ppm * 1e-6,
                                tune.known_frequency_sd**2, tuning=tune)
        else:
            filt = SourceFilter(precision, tuning=tune)
        self.sources[key] = _Source(spec, filt, max(spec.minpoll, 0),
                                    local_metric=orphan_metric(local_address))

    def remove_source(self, key: Hashable) -> None:
        self.sources.pop(key, None)
        if self._system_peer == key:
            self._system_peer = None

    def on_sample(self, key: Hashable, sample: Sample) -> Verdict | None:
        """Feed one sample; None if it was not used (unknown source, or taken across a step)."""
        src = self.sources.get(key)
        if src is None:
            return None
        measured = sample.local_time - sample.delay / 2  # the exchange's midpoint
        stepped_at = self.model.last_step_at()
        sent = sample.local_time - sample.delay
        if stepped_at is not None and sent <= stepped_at:
            return None  # the request left before the last step: two timescales mixed
        if self.leap.straddles(sent, sample.local_time):
            self.leap.ignored += 1
            return None  # either end may be a whole second off around a leap
        raw_t = self.model.to_raw(measured)
        raw_offset = sample.offset + self.model.correction(measured)
        verdict = src.filter.add(raw_t, raw_offset, sample.delay)
        # Back from unreachable: the association has been backing off towards maxpoll,
        # and its next request may be that far away.
        window = _reach_window(src, self.config.tuning)
        back = src.sample is not None and sample.local_time - src.sample_at > window
        src.heard_poll = max(src.spec.maxpoll, src.poll) if back else src.poll
        src.sample, src.sample_at = sample, sample.local_time
        src.at_poll += 1
        src.fresh = True
        if verdict is not Verdict.ACCEPTED:
            # A spike, or a source that moved: look again soon, at the shortest interval.
            src.poll, src.at_poll = src.spec.minpoll, 0
        self._dirty = True
        return verdict

    # --- the update -----------------------------------------------------------------

    def update(self, now: float) -> SyncResult:
        self._before = self._clock_side()
        actions: list[ClockAction] = []
        if not self._started:
            self._started = True
            if self.config.discipline:
                actions.append(SetFrequency(self._ppm0))
        raw_now = self.model.to_raw(now)
        correction = self.model.correction(now)
        candidates, statuses, arriving = self._candidates(now, raw_now, correction)
        peer, survivors = self._select(candidates, arriving)
        if peer is None:
            peer, survivors = self._orphan_parent(candidates)
        panic: PanicExit | None = None
        step = 0.0
        offset = jitter = 0.0
        votes: list[int] | None = None
        if peer is not None:
            combined = self._combine(candidates, survivors, peer)
            votes = [c.leap for c in survivors]
            offset, jitter = combined.offset, math.sqrt(combined.variance)
            self._variance = combined.variance
            self.frequency_ppm = self.discipline.frequency(combined.frequency)
            self._lost_at = now
        leap = self.leap.decide(now, votes)
        if peer is not None and self._dirty and not self._done:
            fast = 0.0 if self._settled or self.config.once else self.config.fast_slew_ppm
            tune = self.config.tuning
            spread = tune.slew_polls * 2.0 ** self.sources[peer].poll
            settled = self._settled or abs(offset) <= FAST_ABOVE
            rate = tune.slew_ppm if settled else MAX_FREQUENCY_PPM
            plan = self.discipline.decide(now, offset, self.frequency_ppm, spread, fast, rate)
            if plan.decision is Decision.SLEW and settled:
                self._settled = True
            if plan.decision is Decision.PANIC and self.config.discipline:
                panic = PanicExit(offset, self.config.tinker.panic)
            elif self.config.discipline:
                step = self._carry_out(now, offset, plan, actions)
            self._offset = offset - step
            if plan.decision is not Decision.HOLD:
                self._last_update = now + step
            self._dirty = False
        elif self._slew_due(now) and self.config.discipline:
            # The slew is done (or there is nobody left to follow: holdover): from now on
            # the clock runs on the frequency estimate alone.
            self._end_slew(now, actions)
        # Waiting out the stepout, the clock is known to be off by more than the step
        # threshold: unsynchronised (docs/ARCHITECTURE.md, "Decisions and why"). With an
        # undisturbed clock and an honest source this never happens, so it is no false loss.
        synced = peer is not None and not self.discipline.stepout_pending()
        system = self._system_vars(now + step, peer, candidates, synced, leap.wire)
        self._refid = system.refid if system.synchronised else None
        if self.config.discipline:
            if (peer is not None or actions or synced != self._synced
                    or leap.kernel != self._kernel_leap):
                actions.append(self._status(system, synced, leap.kernel))
            # Linux takes no negative TAI offset (ADJ_TAI ignores it); none has ever been.
            if (leap.tai_offset is not None and leap.tai_offset >= 0
                    and leap.tai_offset != self._tai):
                actions.append(SetTai(leap.tai_offset))
                self._tai = leap.tai_offset
        self._synced = synced
        self._kernel_leap = leap.kernel
        polls = {key: self._poll(src) for key, src in self.sources.items()}
        wakeup = self._wakeup(now + step, leap.next_change, lost=peer is None)
        return SyncResult(
            actions=tuple(actions), system=system, sources=self._statuses(statuses),
            polls=polls, wakeup=wakeup, offset=offset, frequency=self.frequency_ppm,
            jitter=jitter, system_peer=peer, step=step, panic=panic, done=self._done,
            leap=leap,
        )

    # --- what the clock really did ---------------------------------------------------

    @property
    def resting_frequency(self) -> float:
        """The frequency to leave the clock at when the daemon stops: the estimate, with no
        slew in it. Under -q, which never changes the frequency (a few seconds of samples
        cannot tell it), the one the clock started with."""
        return self._ppm0 if self.config.once else self.frequency_ppm

    @property
    def frequency_known(self) -> bool:
        """The estimate rests on something: the drift file (or `tinker freq`), or samples;
        not merely on the frequency the kernel happened to have (worth no drift file)."""
        return self.config.initial_frequency is not None or math.isfinite(self._variance)

    def _clock_side(self) -> _ClockSide:
        d = self.discipline
        return _ClockSide(self.model.copy(), d.adjusted, d.spike_since, self._started,
                          self._slew_until, self._done, self._offset, self._last_update,
                          self._synced, self._settled)

    def clock_failed(
        self, result: SyncResult, applied: tuple[ClockAction, ...], now: float
    ) -> SyncResult:
        """The clock carried out only `applied`, the first of `result.actions` (the next one
        failed; the rest were not tried). The engine's picture of the clock goes back to
        what it was before that update plus what took effect, and the decision is taken
        again at the next update. Returns `result` as it really happened (its step, its
        -q completion)."""
        before = self._before
        if before is None:
            return result
        self.model = before.model
        self.discipline.adjusted, self.discipline.spike_since = (before.adjusted,
                                                                  before.spike_since)
        self._started, self._slew_until, self._done = (before.started, before.slew_until,
                                                        before.done)
        self._offset, self._last_update = before.offset, before.last_update
        self._settled = before.settled
        self._synced = None  # whatever the kernel now says, tell it again
        if any(isinstance(a, SetTai) for a in result.actions):
            self._tai = None  # and the TAI offset too, unless it took effect below
        step = 0.0
        for action in applied:
            match action:
                case SetFrequency(ppm):
                    self.model.set_frequency(now + step, ppm)
                    self._started = True
                case Step(amount):
                    self.model.step(now + step, amount)
                    step += amount
                    self._done = self._done or self.config.once
                case Slew():
                    self._done = self._done or self.config.once
                case SetStatus(synced):
                    self._synced = synced
                case SetTai(offset):
                    self._tai = offset
        self._dirty = True
        self._before = None
        return replace(result, actions=applied, step=step, done=self._done,
                       wakeup=self._wakeup(now + step, result.leap.next_change))

    def foreign_step(self, now: float, amount: float) -> None:
        """Someone else stepped the clock by `amount` s, noticed at local time `now` (after
        it). Accounted for as a step of the engine's own, so that the raw clock the filters
        work on stays continuous; samples whose exchange began before `now` are not used."""
        self.model.step(now - amount, amount)
        if self._slew_until is not None:
            self._slew_until += amount
        if self.discipline.spike_since is not None:
            self.discipline.spike_since += amount
        self._last_update += amount
        self._lost_at += amount
        self._dirty = True

    # --- selection ------------------------------------------------------------------

    def _candidates(
        self, now: float, raw_now: float, correction: float
    ) -> tuple[dict[Hashable, select.Candidate | None], dict[Hashable, SourceStatus], int]:
        """The sane candidates, every source's status, and how many sources are arriving
        (answering, but without enough samples yet)."""
        tune = self.config.tuning
        tos = self.config.tos
        candidates: dict[Hashable, select.Candidate | None] = {}
        statuses: dict[Hashable, SourceStatus] = {}
        arriving = 0
        for key, src in self.sources.items():
            filt, sample = src.filter, src.sample
            if sample is None:
                candidates[key] = None
                statuses[key] = SourceStatus(Tally.REJECT, math.nan, math.nan, 0.0, 0.0,
                                             math.inf, src.poll, 0)
                continue
            est = filt.estimate(raw_now)
            age = max(0.0, now - src.sample_at)
            delay = filt.min_delay
            dispersion = sample.dispersion + PHI * age
            # The offset is the filter's prediction to now, and the interval must hold the
            # truth even where that prediction is still uncertain (a source with a few
            # iburst samples, predicted two polls on with its own rough frequency, was
            # 5 ms off and an honest falseticker while the initial offset was slewed).
            distance = max(
                tos.mindist,
                (sample.root_delay + delay) / 2 + sample.root_dispersion + dispersion
                + filt.jitter + tune.prediction_sigmas * math.sqrt(max(est.offset_var, 0.0)))
            offset = est.offset - correction
            unfit = Unfit.NONE
            if age > _reach_window(src, tune):
                unfit |= Unfit.UNREACHABLE
            stratum_ok = tos.floor <= sample.stratum < min(tos.ceiling + 1, STRATUM_UNSYNC)
            if not stratum_ok:
                unfit |= Unfit.STRATUM
            if distance > tos.maxdist + PHI * 2.0 ** src.poll:
                unfit |= Unfit.DISTANCE
            if self._loop(sample):
                unfit |= Unfit.LOOP
            statuses[key] = SourceStatus(Tally.REJECT, offset, delay, filt.jitter, dispersion,
                                         distance, src.poll, filt.count, unfit)
            sane = filt.ready and not src.spec.noselect and not unfit
            orphaned = tos.orphan < STRATUM_UNSYNC and sample.stratum >= tos.orphan
            if (not filt.ready and not src.spec.noselect and stratum_ok and not orphaned
                    and age <= tune.arriving_polls * 2.0 ** src.poll + tune.reach_slack):
                arriving += 1
            path = (sample.root_delay + delay) / 2 + sample.root_dispersion
            candidates[key] = select.Candidate(
                key, offset, est.frequency * 1e6, est.offset_var, distance, filt.jitter, path,
                sample.stratum, sample.leap, src.spec.prefer, src.spec.true,
            ) if sane else None
        return candidates, statuses, arriving

    def _orphaned(self, candidate: select.Candidate | None) -> bool:
        """At or above the orphan stratum: not a normal candidate (see the module doc)."""
        orphan = self.config.tos.orphan
        return candidate is not None and orphan < STRATUM_UNSYNC and candidate.stratum >= orphan

    def _loop(self, sample: Sample) -> bool:
        """RFC 5905 fit(): the source is synchronised to us (its reference is one of our
        addresses) or to our own system peer (its refid is the one we state). Following it
        would close a timing loop; counting it beside our system peer would count that
        peer twice. As ntpd 4.2.8: not for a primary server (its refid is a code) nor an
        orphan parent (127.0.0.1), and the refid we state on the local clock (LOCL)
        counts too: a server on its own local clock is no better than ours."""
        if sample.stratum <= 1 or sample.refid == ORPHAN_REFID:
            return False
        if sample.refid in self.config.own_refids:
            return True
        return self._refid is not None and sample.refid == self._refid

    def _select(
        self, candidates: dict[Hashable, select.Candidate | None], arriving: int = 0
    ) -> tuple[Hashable | None, list[select.Candidate]]:
        for src in self.sources.values():
            src.tally = Tally.REJECT
        sane = [c for c in candidates.values() if c is not None and not self._orphaned(c)]
        if not sane:
            self._system_peer = None
            return None, []
        inter = select.intersect(sane)
        if (self._system_peer is None and arriving
                and 2 * len(inter.truechimers) <= len(sane) + arriving):
            # Not yet a majority of the sources answering: wait for the ones arriving
            # rather than follow (or brand) anyone on partial evidence.
            return None, []
        for c in inter.falsetickers:
            self.sources[c.key].tally = Tally.FALSETICKER
        if len(inter.truechimers) < max(self.config.tos.minsane, 1):
            self._system_peer = None
            return None, []
        survivors, outliers = select.cluster(inter.truechimers, self.config.tos.minclock)
        for c in outliers:
            self.sources[c.key].tally = Tally.OUTLIER
        for c in survivors:
            self.sources[c.key].tally = Tally.CANDIDATE
        keys = [c.key for c in survivors]
        preferred = [c for c in survivors if c.prefer]
        pulses = [c.key for c in survivors if self.sources[c.key].spec.pps]
        if preferred and pulses and abs(preferred[0].offset) < PPS_NUMBERING:
            # ntpd's PPS peer: the prefer peer names the seconds, the pulses time them
            peer = pulses[0]
        elif preferred:
            peer = preferred[0].key
        elif self._system_peer in keys:
            peer = self._system_peer  # no clock hopping while the old peer survives
        else:
            peer = keys[0]  # best merit
        self._system_peer = peer
        self.sources[peer].tally = Tally.SYSPEER
        return peer, survivors

    def _orphan_parent(
        self, candidates: dict[Hashable, select.Candidate | None]
    ) -> tuple[Hashable | None, list[select.Candidate]]:
        """No real source: the orphan parent, if one is elected (ntpd: typeorphan). The local
        clock driver, when usable, stands in before any orphan parent, as in ntpd."""
        orphan = self.config.tos.orphan
        if orphan >= STRATUM_UNSYNC or self._local_clock_usable():
            return None, []
        if self.config.tos.minsane > 1:
            return None, []  # one orphan parent is never enough survivors
        best: tuple[int, Hashable] | None = None
        for key, cand in candidates.items():
            if cand is None or cand.stratum != orphan:
                continue
            src = self.sources[key]
            metric = orphan_metric(src.spec.address)
            if metric < src.local_metric and (best is None or metric < best[0]):
                best = (metric, key)
        if best is None:
            return None, []
        key = best[1]
        cand = candidates[key]
        assert cand is not None
        self.sources[key].tally = Tally.SYSPEER
        self._system_peer = key
        return key, [cand]

    def _local_clock_usable(self) -> bool:
        """ntpd never selects a source outside `tos floor`..`ceiling`, the LOCAL driver
        included (`fudge 127.127.1.0 stratum 16` turns it off); nor at stratum 15, whose
        clients would be at 16."""
        clock = self.config.local_clock
        tos = self.config.tos
        return (clock is not None and tos.floor <= clock.stratum <= tos.ceiling
                and clock.stratum + 1 < STRATUM_UNSYNC)

    def _combine(
        self,
        candidates: dict[Hashable, select.Candidate | None],
        survivors: list[select.Candidate],
        peer: Hashable,
    ) -> select.Combined:
        chosen = candidates[peer]
        assert chosen is not None
        if chosen.prefer or self.sources[peer].spec.pps:
            return select.Combined(chosen.offset, chosen.frequency, chosen.variance,
                                   chosen.jitter)
        return select.combine(survivors)

    # --- discipline -----------------------------------------------------------------

    def _slew_due(self, now: float) -> bool:
        return self._slew_until is not None and now >= self._slew_until

    def _carry_out(
        self, now: float, offset: float, plan: Plan, actions: list[ClockAction]
    ) -> float:
        if self.config.once:
            # -q: one adjustment (a step, or an adjtime() slew of the whole offset), then done.
            self._done = True
            if plan.decision is Decision.STEP:
                actions.append(Step(plan.step))
                self.model.step(now, plan.step)
                return plan.step
            actions.append(Slew(offset))
            return 0.0
        if plan.decision is Decision.STEP:
            actions.append(Step(plan.step))
            self.model.step(now, plan.step)
            self._set_frequency(now + plan.step, plan.ppm, actions)
            self._slew_until = None
            return plan.step
        self._set_frequency(now, plan.ppm, actions)
        self._slew_until = plan.until
        return 0.0

    def _end_slew(self, now: float, actions: list[ClockAction]) -> None:
        self._slew_until = None
        self._set_frequency(now, self.frequency_ppm, actions)

    def _set_frequency(self, now: float, ppm: float, actions: list[ClockAction]) -> None:
        if ppm != self.model.ppm:
            # A kernel before Linux 4.19 applies a new frequency at its next tick, not at
            # `now`: the raw clock the filters work on is then off by up to the change
            # times that latency (330 us at the start or end of an 83,000 ppm fast slew),
            # so their phase is widened by as much (uniformly distributed).
            late = abs(ppm - self.model.ppm) * 1e-6 * self.config.tuning.frequency_latency
            if late > 0.0:
                for src in self.sources.values():
                    src.filter.widen(late * late / 12)
            self.model.set_frequency(now, ppm)
            actions.append(SetFrequency(ppm))

    # --- what we tell the world -----------------------------------------------------

    def _system_vars(
        self,
        now: float,
        peer: Hashable | None,
        candidates: dict[Hashable, select.Candidate | None],
        synced: bool,
        leap: int,
    ) -> SystemVars:
        precision = self.config.precision
        if peer is None or not synced:
            fallback = self._fallback_vars(now, peer is None)
            if fallback.synchronised and fallback.leap != leap:
                # The local clock driver or orphan mode: the leap list still holds.
                return replace(fallback, leap=leap)
            return fallback
        src = self.sources[peer]
        cand = candidates[peer]
        assert src.sample is not None and cand is not None
        sample = src.sample
        stratum = sample.stratum + 1
        if stratum >= STRATUM_UNSYNC:
            return SystemVars(precision=precision, updated_at=now)
        root_dispersion = (sample.root_dispersion + sample.dispersion
                           + PHI * max(0.0, now - src.sample_at)
                           + math.sqrt(max(self._variance, 0.0)) + abs(self._offset))
        return SystemVars(
            leap=leap,
            stratum=stratum,
            precision=precision,
            root_delay=sample.root_delay + src.filter.min_delay,
            root_dispersion=root_dispersion,
            # A primary server states its reference clock's code (GPS, SHM), as ntpd's
            # clock_update does for a stratum 0 peer; others the peer's address.
            refid=sample.refid if stratum == 1 else refid_for(src.spec.address),
            reference_time=unix_to_ntp(self._last_update),
            updated_at=now,
        )

    def _fallback_vars(self, now: float, lost: bool) -> SystemVars:
        """No selected source: the local clock driver, orphan mode, or unsynchronised."""
        precision = self.config.precision
        if lost and self.config.local_clock is not None and self._local_clock_usable():
            return self.config.local_clock.system_vars(now)
        orphan = self.config.tos.orphan
        if lost and orphan < STRATUM_UNSYNC and now - self._lost_at >= self.config.tos.orphanwait:
            return SystemVars(leap=Leap.NONE, stratum=orphan, precision=precision,
                              refid=ORPHAN_REFID, reference_time=unix_to_ntp(now),
                              updated_at=now)
        return SystemVars(precision=precision, updated_at=now)

    def _status(self, system: SystemVars, synced: bool, kernel_leap: int) -> SetStatus:
        # The kernel is armed even while unsynchronised: a leap the list or the last
        # majority announced happens whether or not a source is selected at midnight.
        if not synced:
            return SetStatus(False, MAXERROR_CAP, MAXERROR_CAP, kernel_leap)
        maxerror = min(MAXERROR_CAP, system.root_delay / 2 + system.root_dispersion)
        esterror = min(MAXERROR_CAP, math.sqrt(max(self._variance, 0.0)))
        return SetStatus(True, maxerror, esterror, kernel_leap)

    def _statuses(self, statuses: dict[Hashable, SourceStatus]) -> dict[Hashable, SourceStatus]:
        out = {}
        for key, st in statuses.items():
            src = self.sources[key]
            out[key] = SourceStatus(src.tally, st.offset, st.delay, st.jitter, st.dispersion,
                                    st.root_distance, src.poll, st.samples, st.unfit)
        return out

    # --- polling --------------------------------------------------------------------

    def _poll(self, src: _Source) -> int:
        """Adaptive poll: as long as the prediction stays good, poll less often."""
        tune = self.config.tuning
        spec = src.spec
        filt = src.filter
        lo, hi = spec.minpoll, max(spec.minpoll, spec.maxpoll)
        if not filt.ready or src.sample is None:
            src.poll = lo
            return src.poll
        if not src.fresh:
            return src.poll  # only a new sample can change the verdict
        src.fresh = False
        noise = max(filt.typical_error, filt.precision)
        est = filt.estimate(filt.last_time)
        limit = (tune.poll_ratio * noise) ** 2
        up = est.offset_var_after(2.0 ** (src.poll + 1), filt.wander) - est.offset_var
        now_growth = est.offset_var_after(2.0 ** src.poll, filt.wander) - est.offset_var
        if now_growth > 4 * limit and src.poll > lo:
            src.poll -= 1
            src.at_poll = 0
        elif up < limit and src.poll < hi and src.at_poll >= tune.poll_samples:
            src.poll += 1
            src.at_poll = 0
        src.poll = max(lo, min(src.poll, hi))
        return src.poll

    def _wakeup(self, now: float, leap_change: float | None, lost: bool = False
                ) -> float | None:
        times = [now + self.config.tuning.hold_wakeup]
        orphan_at = self._lost_at + self.config.tos.orphanwait
        if lost and self.config.tos.orphan < STRATUM_UNSYNC and orphan_at > now:
            times.append(orphan_at)  # orphan mode starts when orphanwait is over, not later
        if self._slew_until is not None:
            times.append(self._slew_until)
        if leap_change is not None:
            times.append(leap_change)  # arm the kernel, or stop announcing, on time
        return min(times)
