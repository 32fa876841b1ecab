#!/usr/bin/env python3
"""The million-source flood: requests from --sources distinct addresses of 127.0.0.0/8.

pyntpd runs with ``restrict default limited kod`` (and ``mru maxmem`` if --maxmem is given;
ntpd's default is 1024 KiB), pinned to CPU 0, without CAP_SYS_TIME, with --observe.
bench/floodgen.c (root: a raw socket with a crafted IPv4 source, loopback only) sends
--burst requests from each of --sources consecutive addresses starting at --first, at
--rate datagrams per second; with the default burst of 2 the second request of each source
is over the rate limit and earns a RATE kiss.  Meanwhile the load generator measures
legitimate clients from 127.1.0.1-4 (a network whose rule has no `limited`) at --legit-rate.

Reported: the MRU list's size (``ntp_server_mru_entries``, polled) against its configured
bound, the bound in memory, the daemon's peak RSS (VmHWM) and its growth over the flood,
legitimate requests answered, the daemon's counters, the time taken.  Targets: the MRU list
never above its bound, peak RSS <= 64 MB, every legitimate request answered.

    sudo .venv/bin/python bench/flood.py                         # 1,000,000 sources
    sudo .venv/bin/python bench/flood.py --sources 20000 --json flood.json

Exit status 0 when every target passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from daemonbench import (  # noqa: E402
    HOST,
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

from pyntpd.proto.access import MRU_ENTRY_BYTES, MruLimits  # noqa: E402

FLOODGEN_SRC = BENCH_DIR / "floodgen.c"
FLOODGEN_BIN = BENCH_DIR / "build" / "floodgen"
LEGIT_ADDRESSES = ("127.1.0.1", "127.1.0.2", "127.1.0.3", "127.1.0.4")
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
LEGIT_NET = ipaddress.ip_network("127.1.0.0/16")
RSS_LIMIT_KIB = 64 * 1024

FLOOD_CONFIG = """\
server 127.127.1.0
fudge 127.127.1.0 stratum 10
restrict default limited kod
# the readiness probe and the legitimate clients: not rate limited
restrict 127.0.0.1
restrict 127.1.0.0 mask 255.255.0.0
"""


def flood_config(maxmem: int | None) -> str:
    return FLOOD_CONFIG + (f"mru maxmem {maxmem}\n" if maxmem is not None else "")


def mru_bound(maxmem: int | None) -> int:
    """The entry bound pyntpd derives from `mru maxmem` (daemon/app.py's build_access)."""
    return MruLimits.from_maxmem(maxmem or 1024).max_entries


def flood_sources(first: str, count: int) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """First and last flood source; all in 127/8, none among the legitimate clients."""
    lo = ipaddress.IPv4Address(first)
    hi = lo + (count - 1) if int(lo) + count - 1 <= 0xFFFFFFFF else None
    if hi is None or lo not in LOOPBACK or hi not in LOOPBACK:
        raise ValueError(f"{count} sources from {first} leave 127.0.0.0/8")
    legit_lo, legit_hi = LEGIT_NET[0], LEGIT_NET[-1]
    if lo <= legit_hi and legit_lo <= hi:
        raise ValueError("the flood's sources overlap the legitimate clients' 127.1.0.0/16")
    if lo <= ipaddress.IPv4Address(HOST) <= hi:
        raise ValueError(f"the flood's sources include {HOST}")
    return lo, hi


def targets(figures: dict[str, Any]) -> list[Target]:
    mru_max, bound = figures["mru_entries_max"], figures["mru_bound_entries"]
    peak = figures["rss_peak_kib"]
    sent, answered = figures["legit_sent"], figures["legit_answered"]
    return [
        Target("MRU entries <= bound", f"<= {bound:,}", f"{mru_max:,}", mru_max <= bound),
        Target("peak RSS", "<= 64 MiB", f"{peak / 1024:.1f} MiB", 0 < peak <= RSS_LIMIT_KIB),
        Target("legit answered", "100%", f"{answered}/{sent}", sent > 0 and answered == sent),
        Target("all sources sent", f"{figures['sources']:,}", f"{figures['sources_sent']:,}",
               figures["sources_sent"] >= figures["sources"]),
    ]


class Poller(threading.Thread):
    """Samples the daemon's MRU size and RSS every `interval` s until stopped."""

    def __init__(self, daemon: BenchDaemon, interval: float) -> None:
        super().__init__(daemon=True)
        self.target_daemon = daemon
        self.interval = interval
        self.done = threading.Event()
        self.mru_max = 0
        self.rss_max = 0
        self.errors = 0

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        try:
            mru = self.target_daemon.status()["server"]["mru_entries"]
        except (OSError, KeyError, ValueError):
            self.errors += 1
        else:
            self.mru_max = max(self.mru_max, int(mru))
        self.rss_max = max(self.rss_max, self.target_daemon.rss_kib())


def run_flood(args: argparse.Namespace, pin: Pinning) -> dict[str, Any]:
    lo, hi = flood_sources(args.first, args.sources)
    datagrams = args.sources * args.burst
    duration = datagrams / args.rate
    if duration > 590:
        raise SystemExit(f"{datagrams:,} datagrams at {args.rate:,.0f}/s take over 590 s")
    foreign = serve.ForeignLoad()
    rcvbuf0 = udp_rcvbuf_errors()
    with BenchDaemon("pyntpd-flood", lambda _w: flood_config(args.maxmem), pin) as daemon:
        before = daemon.status()["server"]
        rss_before = daemon.rss_kib()
        cpu0 = daemon.cpu()
        poller = Poller(daemon, 0.5)
        poller.start()
        t0 = time.monotonic()
        # Both generators share the client CPU: the legitimate one sleeps between requests.
        legit = subprocess.Popen(
            [*pin.client, str(serve.LOADGEN_BIN), "--bind", ",".join(LEGIT_ADDRESSES),
             "--sockets", "4", "--batch", "1", "--spin-us", "200", "--drain", "1",
             HOST, str(daemon.port), str(args.legit_rate), f"{duration:.3f}"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            flood = subprocess.run(
                [*pin.client, str(FLOODGEN_BIN), "--rate", str(args.rate), "--burst",
                 str(args.burst), HOST, str(daemon.port), str(lo), str(args.sources)],
                capture_output=True, text=True, timeout=duration + 60, check=True,
            )
            legit_out, _ = legit.communicate(timeout=duration + 60)
        finally:
            if legit.poll() is None:
                legit.kill()
                legit.wait()
        seconds = time.monotonic() - t0
        time.sleep(0.5)  # the tail of the flood still in the socket buffer
        poller.done.set()
        poller.join()
        poller.sample()
        after = daemon.status()["server"]
        cpu = daemon.cpu() - cpu0
        peak = daemon.peak_rss_kib()
        rss_end = daemon.rss_kib()
        problems = daemon.log_problems()
    flooded = json.loads(flood.stdout)
    lg = json.loads(legit_out)
    delta = counter_delta(before, after)
    bound = mru_bound(args.maxmem)
    answered = lg["received"] - lg["invalid"]
    return {
        "sources": args.sources,
        "sources_sent": flooded["sent"] // args.burst,
        "first_source": str(lo),
        "last_source": str(hi),
        "burst": args.burst,
        "flood": flooded,
        "seconds": round(seconds, 1),
        "maxmem_kib": args.maxmem or 1024,
        "mru_bound_entries": bound,
        "mru_bound_bytes": bound * MRU_ENTRY_BYTES,
        "mru_entries_max": poller.mru_max,
        "mru_entries_end": after["mru_entries"],
        "rss_kib_before": rss_before,
        "rss_kib_end": rss_end,
        "rss_peak_kib": max(peak, poller.rss_max),
        "legit_rate": args.legit_rate,
        "legit_sent": lg["sent"],
        "legit_answered": answered,
        "legit_answered_pct": 100.0 * answered / lg["sent"] if lg["sent"] else 0.0,
        "legit_delay_p99_us": lg["latency"]["delay_p99_us"],
        "legit_rtt_p99_us": lg["latency"]["rtt_p99_us"],
        "daemon": delta,
        "cpu_us_per_datagram": cpu / delta["received"] * 1e6 if delta["received"] else None,
        "unhandled_exceptions": len(problems),
        "exception_lines": problems[:20],
        "status_errors": poller.errors,
        "udp_rcvbuf_errors": udp_rcvbuf_errors() - rcvbuf0,
        "foreign_cpu": round(foreign.stop(), 3),
    }


def rows(fig: dict[str, Any]) -> list[tuple[str, str]]:
    d, fl = fig["daemon"], fig["flood"]
    return [
        ("sources", f"{fig['sources']:,} ({fig['first_source']} - {fig['last_source']}), "
                    f"{fig['burst']} request(s) each"),
        ("flood sent", f"{fl['sent']:,} in {fl['seconds']:.1f} s ({fl['send_rate']:,.0f}/s)"),
        ("MRU bound", f"{fig['mru_bound_entries']:,} entries = mru maxmem "
                      f"{fig['maxmem_kib']} KiB / {MRU_ENTRY_BYTES} B per entry"),
        ("MRU entries max / end", f"{fig['mru_entries_max']:,} / {fig['mru_entries_end']:,}"),
        ("RSS before / peak / end", f"{fig['rss_kib_before']:,} / {fig['rss_peak_kib']:,} / "
                                     f"{fig['rss_kib_end']:,} KiB"),
        ("RSS growth", f"{fig['rss_peak_kib'] - fig['rss_kib_before']:,} KiB (the MRU list may "
                       f"take {fig['maxmem_kib']:,} KiB, the restrict lookup cache ~300 KiB)"),
        ("legit answered", f"{fig['legit_answered']:,} of {fig['legit_sent']:,} "
                           f"({fig['legit_answered_pct']:.3f}%) at {fig['legit_rate']:,.0f}/s"),
        ("legit RTT p99", f"{fig['legit_rtt_p99_us'] / 1000:.2f} ms"),
        ("daemon received", f"{d['received']:,} (served {d['served']:,})"),
        ("daemon drops", drops_text(d["dropped"])),
        ("kisses sent", drops_text(d["kod_sent"])),
        ("time taken", f"{fig['seconds']:.1f} s"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--sources", type=int, default=1_000_000)
    ap.add_argument("--first", default="127.64.0.0", help="first source address")
    ap.add_argument("--burst", type=int, default=2, help="requests per source, back to back")
    ap.add_argument("--rate", type=float, default=40_000, help="flood datagrams per second")
    ap.add_argument("--maxmem", type=int, help="`mru maxmem` in KiB (default: ntpd's, 1024)")
    ap.add_argument("--legit-rate", type=float, default=1_000)
    args = ap.parse_args(argv)
    if not 1 <= args.sources <= 16_000_000 or not 1 <= args.burst <= 16 or args.rate <= 0:
        ap.error("1 <= --sources <= 16M, 1 <= --burst <= 16, --rate > 0")
    try:
        flood_sources(args.first, args.sources)
    except ValueError as err:
        ap.error(str(err))
    pin = prepare(args)
    serve.build_c(FLOODGEN_SRC, FLOODGEN_BIN)
    fig = run_flood(args, pin)
    return finish("pyntpd: flood from many sources", rows(fig), fig, targets(fig), args)


if __name__ == "__main__":
    sys.exit(main())
