#!/usr/bin/env python3
"""Soak benchmark: pyntpd with a seed-like configuration, under legitimate and hostile load.

pyntpd runs pinned to CPU 0 without CAP_SYS_TIME and with --observe (bench/serve.py's way),
configured like tests/data/seed/ntp.conf (see SOAK_CONFIG).  The C load generator
(bench/loadgen.c, pinned to CPU 1) sends, for --minutes, plain client requests at --rate
(default: half the max rate measured first, as bench/serve.py measures it) from the
legitimate clients' addresses 127.1.0.1-4, and --hostile-fraction as many hostile datagrams
from 256 other addresses 127.2.0.1-127.2.1.0: random bytes, empty, truncated and oversized
datagrams, bad extension fields, bad MACs, mode 6 junk, mode 7 (monlist), KoD look-alikes,
bad versions, other modes, and requests far over the rate limit.  The load is sent in chunks
(--chunk seconds, one load generator run each) so that the daemon is sampled in between.

Reported: legitimate requests answered; the daemon's RSS at start, after --warmup and at the
end; CPU time per datagram; drops by reason and kisses sent (the daemon's own counters, from
its metrics endpoint); unhandled exceptions (lines of its log that mention a traceback or an
exception).  Targets: 100% of legitimate requests answered, RSS growth after warm-up < 5%,
no unhandled exception.

    .venv/bin/python bench/soak.py                          # 10 minutes at half the max rate
    .venv/bin/python bench/soak.py --minutes 1 --rate 20000 --json soak.json

Exit status 0 when every target passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemonbench import (
    BenchDaemon,
    Pinning,
    Target,
    bench_parser,
    counter_delta,
    drops_text,
    finish,
    prepare,
    serve,
    udp_rcvbuf_errors,
)

LEGIT_ADDRESSES = ("127.1.0.1", "127.1.0.2", "127.1.0.3", "127.1.0.4")
HOSTILE_FROM = "127.2.0.1"
KEY1 = "1 SHA1 " + "5eed" * 10  # key 1 exists, so "bad MAC under key 1" is checked for real

# tests/data/seed/ntp.conf, adapted: the pool servers (no network here) and the crypto include
# are gone, files live in the work directory, and two choices are made explicit:
# - `limited` is added to the default rule, so that the hostile sources (which match it) are
#   rate limited and kissed as on any public server; the seed's rule has `kod` without it,
#   which by itself limits nothing;
# - the legitimate clients' network 127.1.0.0/16 gets a rule without `limited`, as an operator
#   gives its own clients: they send thousands of requests a second from four addresses,
#   far beyond what a rate limit meant for single clients allows;
# - the seed's rule for its local network (`nomodify notrap`: queries allowed, no limit) is
#   also given to half of the hostile sources, 127.2.0.0/25, so that their mode 6 junk reaches
#   the control parser while the other half's is refused by `noquery`.
SOAK_CONFIG = """\
driftfile {workdir}/drift
restrict default kod limited nomodify notrap nopeer noquery
restrict -6 default kod limited nomodify notrap nopeer noquery
restrict 127.0.0.1
restrict -6 ::1
restrict 172.16.0.0 mask 255.255.0.0 nomodify notrap
restrict 127.1.0.0 mask 255.255.0.0 nomodify notrap nopeer noquery
restrict 127.2.0.0 mask 255.255.255.128 nomodify notrap
server 127.127.1.0
fudge 127.127.1.0 stratum 10
keys {workdir}/ntp.keys
trustedkey 1
"""

# Targets (the issue's): every legitimate request answered, RSS growth after warm-up < 5%,
# no unhandled exception.
MAX_RSS_GROWTH = 0.05


def soak_config(workdir: Path) -> str:
    keys = workdir / "ntp.keys"
    keys.write_text(KEY1 + "\n")
    keys.chmod(0o600)
    return SOAK_CONFIG.format(workdir=workdir)


def targets(figures: dict[str, Any]) -> list[Target]:
    sent, answered = figures["legit_sent"], figures["legit_answered"]
    growth = figures["rss_growth_after_warmup"]
    problems = figures["unhandled_exceptions"]
    return [
        Target(
            "legit answered", "100%", f"{answered}/{sent}", sent > 0 and answered == sent
        ),
        Target(
            "RSS growth after warm-up",
            f"< {MAX_RSS_GROWTH:.0%}",
            "-" if growth is None else f"{growth:+.2%}",
            growth is not None and growth < MAX_RSS_GROWTH,
        ),
        Target("unhandled exceptions", "0", str(problems), problems == 0),
    ]


def measure_max_rate(pin: Pinning, step: float) -> dict[str, Any]:
    """bench/serve.py's max-rate search, on a daemon of its own with the soak configuration."""
    with BenchDaemon("pyntpd-soak", soak_config, pin) as daemon:
        serve.run_loadgen(pin, daemon.port, 10_000, 0.5, 1)  # warm-up, discarded
        cfg = serve.SearchConfig(step, 0.01, 5_000, 600_000, 16)
        search = serve.find_max_rate(daemon.server, pin, cfg, 80_000, 1.5)
    if not search.best:
        raise SystemExit("max-rate search found no rate with < 1% loss")
    print(f"max rate {search.best:,.0f}/s (soak config, loss < 1%)"
          + (" - load generator limited" if search.loadgen_limited else ""), file=sys.stderr)
    return {
        "max_rate": search.best,
        "loadgen_limited": search.loadgen_limited,
        "steps": [{k: st[k] for k in ("target_rate", "send_rate", "loss", "skipped")}
                  for st in search.steps],
    }


def run_soak(args: argparse.Namespace, pin: Pinning, rate: float) -> dict[str, Any]:
    total = args.minutes * 60.0
    warmup = min(args.warmup, total / 3)
    chunk = min(args.chunk, warmup) if warmup > 0 else args.chunk
    foreign = serve.ForeignLoad()
    rcvbuf0 = udp_rcvbuf_errors()
    legit = {"sent": 0, "received": 0, "invalid": 0, "skipped": 0}
    hostile: dict[str, Any] = {"sent": 0, "replies": 0, "kod_replies": 0, "by_kind": {}}
    samples: list[tuple[float, int]] = []
    with BenchDaemon("pyntpd-soak", soak_config, pin) as daemon:
        rss_start = daemon.rss_kib()
        before = daemon.status()["server"]
        cpu0 = daemon.cpu()
        t0 = time.monotonic()
        rss_warm: int | None = None
        n = 0
        while (elapsed := time.monotonic() - t0) < total - 0.05:
            if not daemon.alive():
                break
            n += 1
            res = serve.run_loadgen(
                pin, daemon.port, rate, min(chunk, total - elapsed), args.batch, 4,
                ["--bind", ",".join(LEGIT_ADDRESSES), "--hostile-fraction",
                 str(args.hostile_fraction), "--hostile-from", HOSTILE_FROM, "--seed", str(n)]
                if args.hostile_fraction > 0 else ["--bind", ",".join(LEGIT_ADDRESSES)],
            )
            for key in legit:
                legit[key] += res[key]
            for key, value in res.get("hostile", {}).items():
                if key == "by_kind":
                    for kind, count in value.items():
                        hostile["by_kind"][kind] = hostile["by_kind"].get(kind, 0) + count
                elif key in hostile:
                    hostile[key] += value
            now = time.monotonic() - t0
            samples.append((round(now, 1), daemon.rss_kib()))
            if rss_warm is None and now >= warmup - 0.05:
                rss_warm = samples[-1][1]
            print(
                f"{now:6.0f}s  legit {res['received']}/{res['sent']}  "
                f"hostile {res.get('hostile', {}).get('sent', 0)}  RSS {samples[-1][1]} KiB",
                file=sys.stderr,
            )
        alive = daemon.alive()
        seconds = time.monotonic() - t0
        after = daemon.status()["server"] if alive else before
        cpu = daemon.cpu() - cpu0
        rss_end = daemon.rss_kib()
        problems = daemon.log_problems()
    delta = counter_delta(before, after)
    datagrams = delta["received"]
    answered = legit["received"] - legit["invalid"]
    growth = (rss_end - rss_warm) / rss_warm if rss_warm else None
    return {
        "rate": rate,
        "seconds": round(seconds, 1),
        "warmup_s": warmup,
        "daemon_alive_at_end": alive,
        "legit_sent": legit["sent"],
        "legit_answered": answered,
        "legit_answered_pct": 100.0 * answered / legit["sent"] if legit["sent"] else 0.0,
        "legit_invalid_replies": legit["invalid"],
        "legit_skipped_by_loadgen": legit["skipped"],
        "hostile": hostile,
        "rss_kib": {"start": rss_start, "after_warmup": rss_warm, "end": rss_end},
        "rss_growth_after_warmup": growth,
        "rss_samples": samples,
        "cpu_us_per_datagram": cpu / datagrams * 1e6 if datagrams else None,
        "daemon": delta,
        "unhandled_exceptions": len(problems),
        "exception_lines": problems[:20],
        "udp_rcvbuf_errors": udp_rcvbuf_errors() - rcvbuf0,
        "foreign_cpu": round(foreign.stop(), 3),
    }


def rows(fig: dict[str, Any]) -> list[tuple[str, str]]:
    d, h, rss = fig["daemon"], fig["hostile"], fig["rss_kib"]
    return [
        ("duration", f"{fig['seconds']:.0f} s (warm-up {fig['warmup_s']:.0f} s)"),
        ("legit rate offered", f"{fig['rate']:,.0f}/s from {len(LEGIT_ADDRESSES)} addresses"
                               + (f" (half the max rate {fig['max_rate']:,.0f}/s"
                                  + (", which the load generator limited"
                                     if fig["max_rate_search"]["loadgen_limited"] else "")
                                  + ")" if fig["max_rate"] else "")),
        ("legit answered", f"{fig['legit_answered']:,} of {fig['legit_sent']:,} "
                           f"({fig['legit_answered_pct']:.4f}%)"),
        ("hostile sent", f"{h['sent']:,} from 256 addresses ({h['replies']:,} replies, "
                         f"{h['kod_replies']:,} of them kisses)"),
        ("RSS start / warm / end", f"{rss['start']:,} / {rss['after_warmup'] or 0:,} / "
                                   f"{rss['end']:,} KiB"),
        ("daemon received", f"{d['received']:,} (served {d['served']:,})"),
        ("daemon drops", drops_text(d["dropped"])),
        ("kisses sent", drops_text(d["kod_sent"])),
        ("auth failures", drops_text(d.get("auth_failed", {}))),
        ("control (mode 6) answered", f"{d['control_requests']:,}"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--rate", type=float, help="legitimate requests per second")
    group.add_argument("--max-rate-first", action="store_true",
                       help="measure the max rate first and use half of it (the default)")
    ap.add_argument("--hostile-fraction", type=float, default=0.1)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds (at most a third)")
    ap.add_argument("--chunk", type=float, default=30.0, help="seconds per load generator run")
    ap.add_argument("--batch", type=int, default=16, help="loadgen sendmmsg batch")
    ap.add_argument("--step", type=float, default=2.0, help="max-rate search: seconds per step")
    args = ap.parse_args(argv)
    if not 0 < args.minutes <= 120 or not 0 <= args.hostile_fraction <= 1:
        ap.error("0 < --minutes <= 120 and 0 <= --hostile-fraction <= 1")
    if args.rate is not None and args.rate <= 0:
        ap.error("--rate must be positive")
    if not 1 <= args.chunk <= 300:
        ap.error("1 <= --chunk <= 300")
    pin = prepare(args)
    search = None if args.rate else measure_max_rate(pin, args.step)
    rate = args.rate or search["max_rate"] / 2  # type: ignore[index]
    fig = run_soak(args, pin, rate)
    fig["max_rate"] = search and search["max_rate"]
    fig["max_rate_search"] = search
    return finish("pyntpd soak", rows(fig), fig, targets(fig), args)


if __name__ == "__main__":
    sys.exit(main())
