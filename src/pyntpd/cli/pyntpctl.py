"""`pyntpctl`: service control and tools. Each tool is a subcommand (argparse subparsers);
add one with a `register_*` function that takes the subparsers and sets `func`.

    pyntpctl simulate SCENARIO [--seed N] [--minpoll P --maxpoll P] [--days D]
                               [--stats-from S] [--csv FILE] [--plot FILE] [--stats DIR]
    pyntpctl plot STATSDIR [-o OUTDIR] [--since T] [--until T] [--prefix P]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
from collections.abc import Sequence

from pyntpd.cli.configcheck import register_check
from pyntpd.cli.plot import INSTALL_HINT, PlotError, draw_simulation, register_plot
from pyntpd.cli.service import register_service

EXIT_OK = 0
EXIT_FAILURE = 1


def _write_csv(path: str, offsets: list[float], frequency_errors: list[float]) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["time_s", "offset_s", "rate_error_ppm"])
        for second, (offset, freq) in enumerate(zip(offsets, frequency_errors, strict=True)):
            out.writerow([second + 1, f"{offset:.9e}", f"{freq:.6f}"])


def cmd_simulate(args: argparse.Namespace) -> int:
    from pyntpd.sim.scenarios import DAY, SCENARIOS, run
    from pyntpd.stats.filegen import StatsDirError

    setup = SCENARIOS[args.scenario]
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        # Before a simulated day is spent: the plot was asked for and cannot be made.
        print(f"pyntpctl simulate: --plot needs matplotlib, which is not installed: "
              f"{INSTALL_HINT}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        report, sim = run(
            setup, args.seed, minpoll=args.minpoll, maxpoll=args.maxpoll,
            duration=None if args.days is None else args.days * DAY,
            stats_from=args.stats_from, stats_dir=args.stats,
        )
    except StatsDirError as exc:
        print(f"pyntpctl simulate: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print("\n".join(report.lines()))
    if sim.stats is not None:
        counts = ", ".join(f"{c.lines} {name} lines" for name, c in sim.stats.counters().items())
        print(f"  statistics written to {args.stats}: {counts}")
    trace = sim.trace
    if args.csv:
        _write_csv(args.csv, trace.offsets, trace.frequency_errors)
        print(f"  offsets written to {args.csv}")
    if args.plot:
        window = report.duration - report.stats_from
        title = (f"{report.scenario} seed {report.seed}: RMS offset {report.rms * 1e6:.1f} µs "
                 f"over {window / 3600:.1f} h from {report.stats_from:.0f} s")
        try:
            draw_simulation(args.plot, title, trace.offsets, report.stats_from)
        except (PlotError, OSError) as exc:
            print(f"pyntpctl simulate: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"  plot written to {args.plot}")
    return EXIT_FAILURE if report.panic else EXIT_OK


def register_simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pyntpd.sim.scenarios import SCENARIOS

    p = sub.add_parser(
        "simulate", help="run the clock discipline against a simulated network",
        description="Run pyntpd's real association and synchronisation code against a "
                    "simulated clock, network and servers, and report the accuracy.")
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--minpoll", type=int, help="log2 s (default: the scenario's, 6)")
    p.add_argument("--maxpoll", type=int, help="log2 s (default: the scenario's, 10)")
    p.add_argument("--days", type=float, help="simulated days (default: the scenario's)")
    p.add_argument("--stats-from", type=float, help="s of simulated time before statistics "
                                                    "are taken (default 2000)")
    p.add_argument("--csv", metavar="FILE",
                   help="write the offset and the rate error (frequency + slew) per second")
    p.add_argument("--plot", metavar="FILE",
                   help="write a PNG of the offset (needs matplotlib: " + INSTALL_HINT + ")")
    p.add_argument("--stats", metavar="DIR",
                   help="write loopstats and peerstats files into DIR (an existing directory), "
                        "in ntpd's format, for 'pyntpctl plot'")
    p.set_defaults(func=cmd_simulate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyntpctl", description="pyntpd service control and tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_service(sub)
    register_simulate(sub)
    register_check(sub)
    register_plot(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
