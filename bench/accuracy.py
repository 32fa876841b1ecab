"""Accuracy of the clock discipline on the simulator (issue 3): lan1 at the three polling
settings against the targets and the reference daemons' figures, then every scenario.

    .venv/bin/python bench/accuracy.py [--seeds N] [--days D] [--jobs J] [--ablation]

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

# (label, minpoll, maxpoll, target RMS, reference figures from issue 3)
LAN1 = (
    ("fixed poll 16 s", 4, 4, 8e-6, "chronyd 10.5-12.1 us, ntpsec 13.9-15.3 us"),
    ("minpoll 4 maxpoll 6", 4, 6, 16e-6, "chronyd 23.8 us, ntpsec 20.4 us"),
    ("default (6..10)", 6, 10, 64e-6, "chronyd 80-117 us, ntpsec 156-201 us"),
)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--days", type=float, default=None,
                        help="simulated days per run (default: each scenario's own)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ablation", action="store_true",
                        help="also run lan1 with parts of the design swapped out")
    args = parser.parse_args(argv)

    seeds = range(1, args.seeds + 1)
    lan_jobs = [("lan1", s, lo, hi, args.days) for _, lo, hi, _, _ in LAN1 for s in seeds]
    others = [n for n in SCENARIOS if n != "lan1"]
    other_jobs = [(n, 1, None, None, args.days) for n in others]
    started = time.monotonic()
    with ProcessPoolExecutor(args.jobs) as pool:
        reports = list(pool.map(_run, lan_jobs + other_jobs))
    lan_reports, other_reports = reports[: len(lan_jobs)], reports[len(lan_jobs):]

    print(f"lan1: one server, 1 ms + exp(100 us) each way, 100 ppm + 1e-9/s random walk, "
          f"0.1 s initial offset; RMS and max |offset| from 2000 s; seeds 1..{args.seeds}")
    print(f"{'polling':22} {'RMS mean':>9} {'RMS worst':>9} {'max':>8} {'target':>8}  "
          f"{'ok':3} reference (issue 3)")
    failed = False
    for i, (label, _, _, target, reference) in enumerate(LAN1):
        rs = lan_reports[i * len(seeds):(i + 1) * len(seeds)]
        mean = sum(r.rms for r in rs) / len(rs)
        worst = max(r.rms for r in rs)
        ok = worst <= target
        failed |= not ok
        print(f"{label:22} {us(mean)} {us(worst):>9} {us(max(r.max_abs for r in rs))} "
              f"{us(target)}  {'yes' if ok else 'NO':3} {reference}")
    print()
    print("all scenarios (seed 1, minpoll 6 maxpoll 10); us, s, ppm")
    print(f"{'scenario':18} {'RMS':>8} {'max':>10} {'1st sync':>9} {'freq err':>9} "
          f"{'steps':>5}  notes")
    for r in [lan_reports[2 * len(seeds)], *other_reports]:
        first = "never" if r.first_sync is None else f"{r.first_sync:.0f}"
        notes = r.panic.split(";")[0] if r.panic else " ".join(
            f"{k.split('#')[0]}{v}" for k, v in r.tallies.items())
        print(f"{r.scenario:18} {us(r.rms)} {us(r.max_abs):>10} {first:>9} "
              f"{r.frequency_error:+9.4f} {len(r.steps):5}  {notes}")
    print()
    for r in [lan_reports[2 * len(seeds)], *other_reports]:
        print(f"  {r.scenario:18} {SCENARIOS[r.scenario].description}")
    print(f"\n{len(reports)} simulated runs in {time.monotonic() - started:.0f} s wall")
    if args.ablation:
        ablation(seeds, args.jobs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
