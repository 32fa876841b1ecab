"""Accuracy of the clock discipline on the simulator (issues 3 and 13): lan1 and its
real-host variants at the three polling settings against the targets, then every scenario.
Every offset figure comes with the rate error after the first sync (RMS and max of the
clock's per-second rate, slews included), the first sync (1 ms) and the packets a day.

    .venv/bin/python bench/accuracy.py [--seeds N] [--days D] [--jobs J] [--ablation]
                                       [--tuning]

Tuned on, never reported on: the `tune-*` scenarios with seeds 11-13 (--tuning prints
them). Reported on: lan1 (issue 13's scenario) and lan1-real/-old-kernel with seeds 1..N,
and every other scenario with seed 1.

--ablation also runs lan1 with parts of the design replaced by the usual alternatives, to
show what each part is worth: the interval (truncated) update vs a Gaussian Kalman update
with the same variance, and the bank of wander models vs one filter with a fixed wander.

lan1 runs once per seed (default 3) and reports the mean and the worst RMS; the other
scenarios run with seed 1. Each run is a simulated day unless the scenario is shorter.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

from pyntpd.sim.runner import Report
from pyntpd.sim.scenarios import DAY, SCENARIOS, run
from pyntpd.sync.tuning import Tuning

# (label, minpoll, maxpoll, issue 13's target RMS offset, its target mean poll or None)
LAN1 = (
    ("fixed poll 16 s", 4, 4, 9e-6, None),
    ("minpoll 4 maxpoll 6", 4, 6, 16e-6, None),
    ("default (6..10)", 6, 10, 64e-6, 700.0),
)
# Targets after the first sync (issue 13) and the first sync itself.
RATE_MAX_PPM = 10.0
FIRST_SYNC_S = 10.0
# Figures measured elsewhere, NOT by this benchmark and not comparable run for run: issue
# 13's table, from an external simulator running the real chronyd and ntpsec binaries
# (lan1's clock and network: 100 ppm + 1e-9/s random walk, 1 ms + exp(100 us) each way,
# 0.1 s initial offset, iburst, 1 day, statistics from 2000 s, 3 seeds; means).
MEASURED_ELSEWHERE = {
    "fixed poll 16 s": "chronyd 11.2 us, ntpsec 14.6 us; max |rate| <= 7 / <= 2 ppm",
    "minpoll 4 maxpoll 6": "chronyd 20.4 us, ntpsec 20.4 us; mean poll chronyd 64 s",
    "default (6..10)": "chronyd 98.4 us, ntpsec 185.8 us; mean poll chronyd 783 s",
}
ELSEWHERE_NOTE = ("measured elsewhere (issue 13): an external simulator with the real "
                  "chronyd/ntpsec binaries on lan1's clock and network, 1 day, from 2000 s, "
                  "3 seeds; not run by this benchmark. Their first sync (1 ms): chronyd "
                  "6-34 s, ntpsec 455-464 s; chronyd's max error in a 2 h outage: "
                  "230-1030 us")
REAL_VARIANTS = ("lan1-real", "lan1-old-kernel")
TUNING = ("tune-lan", "tune-outage")
TUNING_SEEDS = range(11, 14)


ABLATIONS: dict[str, Tuning] = {
    "as designed": Tuning(),
    "Gaussian update": Tuning(interval_update=False),
    "fixed wander 1e-18 (true)": Tuning(wanders=(1e-18,)),
    "fixed wander 1e-16": Tuning(wanders=(1e-16,)),
    "fixed wander 1e-20": Tuning(wanders=(1e-20,)),
}


def _ablate(job: tuple[str, int, int, int]) -> tuple[float, int]:
    variant, seed, lo, hi = job
    setup = SCENARIOS["lan1"]
    config = replace(setup.config, tuning=ABLATIONS[variant])
    report, _ = run(setup, seed, minpoll=lo, maxpoll=hi, config=config)
    return report.rms, report.exchanges


def ablation(seeds: range, jobs: int) -> None:
    settings = [(lo, hi) for _, lo, hi, _, _ in LAN1]
    work = [(v, s, lo, hi) for v in ABLATIONS for lo, hi in settings for s in seeds]
    with ProcessPoolExecutor(jobs) as pool:
        results = list(pool.map(_ablate, work))
    print(f"\nablation: lan1 RMS in us (exchanges per day), mean of seeds 1..{len(seeds)};"
          " with adaptive polling a variant also changes the poll it settles at")
    print(f"{'variant':28}" + "".join(f"{label:>22}" for label, *_ in LAN1))
    n = len(seeds)
    for i, variant in enumerate(ABLATIONS):
        chunk = results[i * len(settings) * n:(i + 1) * len(settings) * n]
        cells = []
        for j in range(len(settings)):
            part = chunk[j * n:(j + 1) * n]
            rms = sum(r for r, _ in part) / n
            exchanges = sum(e for _, e in part) / n
            cells.append(f"{rms * 1e6:.1f} ({exchanges:.0f})")
        print(f"{variant:28}" + "".join(f"{c:>22}" for c in cells))


def _run(job: tuple[str, int, int | None, int | None, float | None]) -> Report:
    name, seed, lo, hi, days = job
    setup = SCENARIOS[name]
    duration = None if days is None else min(days * DAY, max(setup.duration, days * DAY))
    report, _ = run(setup, seed, minpoll=lo, maxpoll=hi, duration=duration)
    return report


def us(x: float) -> str:
    return f"{x * 1e6:8.1f}"


def row(r: Report) -> str:
    first = "never" if r.first_sync is None else f"{r.first_sync:.0f}"
    return (f"{us(r.rms)} {us(r.max_abs):>9} {r.frequency_rms:7.3f} {r.frequency_max:7.2f} "
            f"{first:>6} {r.packets_per_day:7.0f} {r.mean_poll:6.0f}")


HEAD = (f"{'RMS':>8} {'max':>9} {'rateRMS':>7} {'rateMax':>7} {'1st s':>6} {'pkt/day':>7} "
        f"{'poll s':>6}")


def lan_table(name: str, reports: list[Report], seeds: range, judge: bool) -> bool:
    """Mean over the seeds per polling setting; returns whether a target failed."""
    print(f"\n{name}: {SCENARIOS[name].description}; seeds {seeds.start}..{seeds.stop - 1}, "
          "means (worst RMS); us, ppm, s")
    print(f"{'polling':22} {HEAD} {'worst':>8}  " + ("targets" if judge else ""))
    failed = False
    n = len(seeds)
    for i, (label, _, _, target, poll_target) in enumerate(LAN1):
        rs = reports[i * n:(i + 1) * n]

        def mean(attr: str, rs: list[Report] = rs) -> float:
            return sum(getattr(r, attr) for r in rs) / len(rs)

        firsts = [r.first_sync for r in rs]
        first = "never" if None in firsts else f"{max(f for f in firsts if f is not None):.0f}"
        worst = max(r.rms for r in rs)
        rate_max = max(r.frequency_max for r in rs)
        cells = (f"{us(mean('rms'))} {us(max(r.max_abs for r in rs)):>9} "
                 f"{mean('frequency_rms'):7.3f} {rate_max:7.2f} {first:>6} "
                 f"{mean('packets_per_day'):7.0f} {mean('mean_poll'):6.0f} {us(worst)}")
        verdict = ""
        if judge:
            checks = [worst <= target, rate_max <= RATE_MAX_PPM,
                      None not in firsts and max(f for f in firsts if f is not None)
                      <= FIRST_SYNC_S]
            if poll_target is not None:
                checks.append(mean("mean_poll") >= poll_target)
            ok = all(checks)
            failed |= not ok
            verdict = (f"{'ok' if ok else 'MISSED'}: RMS <= {target * 1e6:.0f} us, rate <= "
                       f"{RATE_MAX_PPM:.0f} ppm, 1st <= {FIRST_SYNC_S:.0f} s"
                       + ("" if poll_target is None else f", poll >= {poll_target:.0f} s"))
        print(f"{label:22} {cells}  {verdict}")
        if judge:
            print(f"{'':22} {MEASURED_ELSEWHERE[label]} (measured elsewhere)")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--days", type=float, default=None,
                        help="simulated days per run (default: each scenario's own)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ablation", action="store_true",
                        help="also run lan1 with parts of the design swapped out")
    parser.add_argument("--tuning", action="store_true",
                        help="only the tuning scenarios (seeds 11-13), nothing reported on")
    args = parser.parse_args(argv)

    started = time.monotonic()
    if args.tuning:
        jobs = [(n, s, lo, hi, args.days) for n in TUNING[:1] for _, lo, hi, _, _ in LAN1
                for s in TUNING_SEEDS]
        jobs += [(n, s, None, None, args.days) for n in TUNING[1:] for s in TUNING_SEEDS]
        with ProcessPoolExecutor(args.jobs) as pool:
            reports = list(pool.map(_run, jobs))
        lan_table(TUNING[0], reports[:9], TUNING_SEEDS, judge=False)
        print(f"\n{'scenario':18} {HEAD}")
        for r in reports[9:]:
            print(f"{r.scenario:18} {row(r)}")
        print(f"\n{len(reports)} simulated runs in {time.monotonic() - started:.0f} s wall")
        return 0

    seeds = range(1, args.seeds + 1)
    lans = ("lan1", *REAL_VARIANTS)
    lan_jobs = [(n, s, lo, hi, args.days) for n in lans for _, lo, hi, _, _ in LAN1
                for s in seeds]
    others = [n for n in SCENARIOS if n not in lans and n not in TUNING]
    other_jobs = [(n, 1, None, None, args.days) for n in others]
    with ProcessPoolExecutor(args.jobs) as pool:
        reports = list(pool.map(_run, lan_jobs + other_jobs))
    per = len(LAN1) * len(seeds)
    failed = False
    for i, name in enumerate(lans):
        failed |= lan_table(name, reports[i * per:(i + 1) * per], seeds, judge=name == "lan1")
    print(f"\n  {ELSEWHERE_NOTE}")
    print("\nall scenarios (seed 1, each scenario's polling: minpoll 6 maxpoll 10 unless it "
          "says); us, ppm, s")
    print(f"{'scenario':18} {HEAD} {'steps':>5}  notes")
    for r in reports[len(lan_jobs):]:
        notes = r.panic.split(";")[0] if r.panic else " ".join(
            f"{k.split('#')[0]}{v}" for k, v in r.tallies.items())
        print(f"{r.scenario:18} {row(r)} {len(r.steps):5}  {notes}")
    print()
    for r in reports[len(lan_jobs):]:
        print(f"  {r.scenario:18} {SCENARIOS[r.scenario].description}")
    print(f"\n{len(reports)} simulated runs in {time.monotonic() - started:.0f} s wall")
    if args.ablation:
        ablation(seeds, args.jobs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
