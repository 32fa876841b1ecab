"""The deterministic event loop: real Associations and a real SyncEngine under simulated time.

It does what the daemon does, with the same objects: each association's request is built
by `Association.make_request`, stamped with the local clock (`sent`), carried by a `Path`,
answered by a `SimServer`'s real `Responder`, carried back, taken through
`Association.receive`, and the `Sample` goes to the one `Driver` (pyntpd/driver), which
feeds the engine and applies its decisions to the `SimClock` exactly as it does to the
system clock in the daemon. What is the simulator's own: the event queue on true time (the
driver's Scheduler), the network, and the trace. Everything random comes from one seeded
`random.Random`, so a seed always gives the same run.

With leap seconds (`utc`), the trace's offsets are the local clock against UTC as it reads
then, and the engine is given the leap second list (`leap_list`) as the daemon gives it the
leapfile. At the one sample that falls on a leap's instant the two readings may be a whole
second apart for as long as the clock's offset (one has done the leap, the other not yet):
that sample takes UTC's reading from either side of the instant, whichever is nearer.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace

from pyntpd.clock.simclock import SimClock
from pyntpd.driver import Driver, take_over
from pyntpd.proto.source import Association, SourceSpec
from pyntpd.proto.timestamp import unix_ns_to_ntp
from pyntpd.sim.network import IDEAL_HOST, Host, SimServer, UtcLeaps
from pyntpd.sim.refclocks import SimReceiver, SimRefclocks
from pyntpd.stats.filegen import Statistics
from pyntpd.sync.engine import PanicExit, SyncConfig, SyncEngine, SyncResult
from pyntpd.sync.leap import LeapList
from pyntpd.types import STRATUM_UNSYNC


@dataclass
class Trace:
    """What happened, once a second (true time) and at every update."""

    offsets: list[float] = field(default_factory=list)  # local minus true, per second
    # ppm, the clock's mean rate error over each second (steps and leaps left out): what
    # every program timing an interval sees, slews included
    frequency_errors: list[float] = field(default_factory=list)
    updates: list[tuple[float, SyncResult]] = field(default_factory=list)
    steps: list[tuple[float, float]] = field(default_factory=list)  # (true time, amount)
    panic: tuple[float, PanicExit] | None = None
    exchanges: int = 0
    samples: int = 0
    synced_at: float | None = None  # true time of the first update with a system peer
    # (true time, s) of every stretch after that without one, or serving stratum 16:
    # with honest reachable servers, each is a false loss of synchronisation.
    unsynchronised: list[tuple[float, float]] = field(default_factory=list)
    _lost_at: float | None = None

    def track_sync(self, true: float, result: SyncResult) -> None:
        synced = result.system_peer is not None and result.system.stratum < STRATUM_UNSYNC
        if self.synced_at is None:
            if synced:
                self.synced_at = true
        elif not synced and self._lost_at is None:
            self._lost_at = true
        elif synced and self._lost_at is not None:
            self.unsynchronised.append((self._lost_at, true - self._lost_at))
            self._lost_at = None

    def close(self, true: float) -> None:
        """End the run at `true`: a loss still going on counts up to there."""
        if self._lost_at is not None and true > self._lost_at:
            self.unsynchronised.append((self._lost_at, true - self._lost_at))
            self._lost_at = None

    @property
    def unsynchronised_time(self) -> float:
        return sum(length for _, length in self.unsynchronised)


class Simulation:
    def __init__(
        self,
        clock: SimClock,
        servers: list[tuple[SimServer, SourceSpec]],
        config: SyncConfig,
        rng: random.Random,
        keep_updates: bool = False,
        stats: Statistics | None = None,
        utc: UtcLeaps | None = None,
        leap_list: LeapList | None = None,
        host: Host = IDEAL_HOST,
        receiver: SimReceiver | None = None,
    ) -> None:
        self.clock = clock
        self.host = host
        self._unset_phase = clock.unset_phase
        self.utc = utc
        self.stats = stats  # written as the daemon writes them, stamped with the local clock
        self.rng = rng
        self.trace = Trace()
        self.keep_updates = keep_updates
        clock.on_second = self._second
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._poll_gen: dict[Hashable, int] = {}
        self.servers: dict[Hashable, SimServer] = {}
        self.assocs: dict[Hashable, Association] = {}
        # As the daemon starts: the clock is taken over first, and without a drift file the
        # engine starts from the frequency the (simulated) kernel had.
        took = take_over(clock)
        if took is not None and config.start_frequency is None:
            config = replace(config, start_frequency=took.frequency_ppm)
        if not config.fast_slew_ppm:
            config = replace(config, fast_slew_ppm=clock.max_frequency_ppm)
        self.engine = SyncEngine(config, self.local())
        self.engine.set_leap_file(leap_list)
        self.driver = Driver(self.engine, clock, self, stats=stats, on_result=self._on_result,
                             on_step=self._on_step, on_panic=self._on_panic)
        self.driver.update()
        transmit = itertools.count(rng.getrandbits(63) | 1)
        for i, (server, spec) in enumerate(servers):
            key = f"{spec.address}#{i}"
            self.servers[key] = server
            assoc = Association(spec, random_transmit=lambda t=transmit: next(t))
            self.assocs[key] = assoc
            self.driver.add_source(key, assoc, server.address)
            assoc.start(self.local())
            self._schedule_poll(key)
        self.refclocks: SimRefclocks | None = None
        if receiver is not None:
            self.refclocks = SimRefclocks(self, receiver, clock.epoch_ns / 1e9,
                                          random.Random(rng.getrandbits(64)))
            self.refclocks.start()

    # --- time -----------------------------------------------------------------------

    def local(self) -> float:
        return self.clock.now() / 1e9

    def _at(self, true: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (true, next(self._seq), action))

    def _at_local(self, local: float, action: Callable[[], None]) -> None:
        # A microsecond late, so that float rounding never fires a timer before its time,
        # and as late again as the host's timers are.
        late = 1e-6 + self.host.timer_latency(self.rng)
        self._at(max(self.clock.true, self.clock.true_at_local(local)) + late, action)

    def call_at(self, local: float, callback: Callable[[], None]) -> _Event:
        """The driver's Scheduler, on simulated time."""
        event = _Event(callback)
        self._at_local(local, event.fire)
        return event

    def stop(self) -> None:
        """As the daemon exits: no more updates, the clock handed back."""
        self.driver.stop()

    def run(self, duration: float) -> Trace:
        while self._events and self.trace.panic is None:
            true, _, action = self._events[0]
            if true > duration:
                break
            heapq.heappop(self._events)
            self.clock.advance_to(true)
            action()
        if self.trace.panic is None:
            self.clock.advance_to(duration)
        self.trace.close(self.clock.true)
        return self.trace

    def _second(self, second: int, phase: float) -> None:
        if self.utc is not None:
            now, before = self.utc.offset(self.clock.true), self.utc.offset(self.clock.true - 0.5)
            phase = min(phase - now, phase - before, key=abs)
        self.trace.offsets.append(phase)
        unset = self.clock.unset_phase
        self.trace.frequency_errors.append((unset - self._unset_phase) * 1e6)
        self._unset_phase = unset

    # --- polling and packets --------------------------------------------------------

    def _schedule_poll(self, key: Hashable) -> None:
        gen = self._poll_gen[key] = self._poll_gen.get(key, 0) + 1
        self._at_local(self.assocs[key].next_timer(), lambda: self._poll(key, gen))

    def _poll(self, key: Hashable, gen: int) -> None:
        if gen != self._poll_gen[key]:
            return  # superseded (the clock was stepped, or the poll changed)
        assoc = self.assocs[key]
        now = self.local()
        if assoc.on_timer(now):
            request = assoc.make_request(now)
            assoc.sent(unix_ns_to_ntp(self.clock.now()))  # t1, read before send()
            self.trace.exchanges += 1
            server = self.servers[key]
            leaves = self.clock.true + self.host.send_latency(self.rng)
            delay = server.path.delay(self.rng, leaves, forward=True)
            if delay is not None:
                self._at(leaves + delay, lambda: self._serve(key, request))
        self._schedule_poll(key)

    def _serve(self, key: Hashable, request: bytes) -> None:
        server = self.servers[key]
        answer = server.answer(request, self.clock.true)
        if answer is None:
            return
        reply, leaves = answer
        delay = server.path.delay(self.rng, leaves, forward=False)
        if delay is not None:
            stamped = leaves + delay + self.host.receive_latency(self.rng)
            self._at(stamped, lambda: self._receive(key, reply))

    def _receive(self, key: Hashable, reply: bytes) -> None:
        t4 = self.clock.now()
        sample = self.assocs[key].receive(reply, unix_ns_to_ntp(t4), t4 / 1e9)
        if sample is None:
            return
        self.trace.samples += 1
        self.driver.on_sample(key, sample)

    # --- what the driver reports ----------------------------------------------------

    def _on_result(self, result: SyncResult, now: float) -> None:
        if self.keep_updates:
            self.trace.updates.append((self.clock.true, result))
        self.trace.track_sync(self.clock.true, result)
        if result.stepped:
            self.trace.steps.append((self.clock.true, result.step))

    def _on_step(self, step: float) -> None:
        for key in self.assocs:
            self._schedule_poll(key)  # each association has moved its timer with the step
        if self.refclocks is not None:
            self.refclocks.clock_stepped()

    def _on_panic(self, panic: PanicExit) -> None:
        self.trace.panic = (self.clock.true, panic)
        if self.keep_updates and self.driver.last is not None:
            self.trace.updates.append((self.clock.true, self.driver.last))


class _Event:
    """A cancellable event on the simulator's queue."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback

    def fire(self) -> None:
        if self.callback is not None:
            callback, self.callback = self.callback, None
            callback()

    def cancel(self) -> None:
        self.callback = None


@dataclass(frozen=True, slots=True)
class Report:
    scenario: str
    seed: int
    duration: float
    stats_from: float
    rms: float  # s, |local - true| after stats_from
    max_abs: float
    first_sync: float | None  # s of true time until |offset| <= 1 ms
    frequency_error: float  # ppm: the rate error left with the final frequency estimate
    final_offset: float
    steps: tuple[tuple[float, float], ...]
    panic: str | None
    exchanges: int
    samples: int
    final_polls: dict[str, int]
    tallies: dict[str, str]
    synced_at: float | None = None  # s of true time until a source was first selected
    unsynchronised: float = 0.0  # s without a selected source after that
    losses: int = 0  # how many times the selection was lost after that
    kernel_leaps: tuple[tuple[float, str], ...] = ()  # (true time, what the kernel did)
    # The clock's rate error (ppm, per-second means, slews included) after the first sync:
    # from the first whole second within 1 ms once any start-up fast slew has ended.
    frequency_rms: float = math.nan
    frequency_max: float = math.nan
    frequency_from: float | None = None  # s of true time the rate statistics start at
    packets_per_day: float = math.nan  # requests sent, all sources together
    mean_poll: float = math.nan  # s between one source's requests, on average
    served: str | None = None  # with a reference clock: the stratum and refid we serve

    def lines(self) -> list[str]:
        def us(x: float) -> str:
            return f"{x * 1e6:.1f} us"

        first = "never" if self.first_sync is None else f"{self.first_sync:.0f} s"
        since = ("" if self.frequency_from is None
                 else f" (from {self.frequency_from:.0f} s)")
        out = [
            f"scenario {self.scenario}, seed {self.seed}, {self.duration / 86400:.2f} days, "
            f"statistics from {self.stats_from:.0f} s",
            f"  RMS offset        {us(self.rms)}",
            f"  max |offset|      {us(self.max_abs)}",
            f"  rate error        RMS {self.frequency_rms:.3f} ppm, max "
            f"{self.frequency_max:.3f} ppm after the first sync{since}",
            f"  packets           {self.packets_per_day:.0f} a day, mean poll "
            f"{self.mean_poll:.0f} s",
            f"  first sync (1 ms) {first}",
            f"  unsynchronised    {self.unsynchronised:.0f} s in {self.losses} losses after the"
            " first selection" + ("" if self.synced_at is None
                                  else f" at {self.synced_at:.0f} s"),
            f"  frequency error   {self.frequency_error:+.4f} ppm estimate at the end",
            f"  final offset      {us(self.final_offset)}",
            f"  steps             {len(self.steps)}"
            + "".join(f" [{t:.0f} s: {a:+.6f} s]" for t, a in self.steps[:4]),
            f"  exchanges/samples {self.exchanges}/{self.samples}",
            "  sources           " + ", ".join(
                f"{k} '{self.tallies.get(k, ' ')}' poll {p}" for k, p in self.final_polls.items()),
        ]
        if self.served is not None:
            out.append(f"  serves            {self.served}")
        if self.kernel_leaps:
            out.append("  kernel leap       " + ", ".join(
                f"{what} at {t:.3f} s" for t, what in self.kernel_leaps))
        if self.panic:
            out.append(f"  PANIC EXIT        {self.panic}")
        return out


def summarise(
    name: str, seed: int, sim: Simulation, trace: Trace, duration: float, stats_from: float
) -> Report:
    offsets = trace.offsets
    window = offsets[int(stats_from):]
    rms = math.sqrt(sum(x * x for x in window) / len(window)) if window else math.nan
    max_abs = max((abs(x) for x in window), default=math.nan)
    first = next((i + 1 for i, x in enumerate(offsets) if abs(x) <= 1e-3), None)
    result = sim.engine.update(sim.local())
    rates_from = None if first is None else rate_window(first, sim.clock.fast_periods)
    rates = [] if rates_from is None else trace.frequency_errors[rates_from:]
    sources = max(1, len(sim.assocs))
    refclocks = () if sim.refclocks is None else sim.refclocks.peers
    return Report(
        scenario=name, seed=seed, duration=duration, stats_from=stats_from, rms=rms,
        max_abs=max_abs, first_sync=float(first) if first is not None else None,
        frequency_error=((1 + sim.clock.natural) * (1 + result.frequency * 1e-6) - 1) * 1e6,
        final_offset=offsets[-1] if offsets else math.nan,
        steps=tuple(trace.steps),
        panic=str(trace.panic[1]) if trace.panic else None,
        exchanges=trace.exchanges, samples=trace.samples,
        final_polls={**{str(k): a.poll for k, a in sim.assocs.items()},
                     **{p.name: p.poll for p in refclocks}},
        tallies={(k.name if k in refclocks else str(k)): str(s.tally)
                 for k, s in result.sources.items()},
        synced_at=trace.synced_at,
        unsynchronised=trace.unsynchronised_time,
        losses=len(trace.unsynchronised),
        kernel_leaps=tuple(sim.clock.leap_events),
        frequency_rms=math.sqrt(sum(r * r for r in rates) / len(rates)) if rates else math.nan,
        frequency_max=max((abs(r) for r in rates), default=math.nan),
        frequency_from=None if rates_from is None else float(rates_from),
        packets_per_day=trace.exchanges * 86400 / duration,
        mean_poll=duration * sources / trace.exchanges if trace.exchanges else math.nan,
        served=None if sim.refclocks is None else
        f"stratum {result.system.stratum}, refid "
        f"{result.system.refid.rstrip(bytes(1)).decode('ascii', 'replace')}",
    )


def rate_window(first_sync: int, fast_periods: list[list[float]]) -> int:
    """The first second (as the index of the trace's per-second rates: the second that
    starts there) counted as after the first sync: from `first_sync` on, once a fast slew
    under way by then has ended."""
    start = first_sync
    for begun, ended in fast_periods:
        if begun < start:
            start = max(start, math.ceil(min(ended, 1e12)))
    return start
