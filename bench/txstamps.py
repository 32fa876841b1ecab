#!/usr/bin/env python3
"""Where the timestamps come from, measured: pyntpd's association against chronyd on loopback.

chronyd (``-x``, ``local stratum 5``) serves this machine's own clock, so every true offset
is zero and every true delay is the loopback round trip; what a sample shows beyond that is
timestamping error. Three ways of polling it, in turn (round-robin, so they share the
machine's load), each through `proto.source.Association` on a socket set up as
`daemon/sources` sets it up:

* ``user T1``: T1 read before send() (pyntpd before SO_TIMESTAMPING);
* ``kernel T1``: T1 the kernel's transmit stamp (basic mode: chronyd's T3 is still read
  before its send);
* ``kernel T1, xleave``: interleaved mode: T3 is chronyd's kernel stamp of its previous reply.

For each: the mean and standard deviation of offset and delay, and the 99th percentile of
|offset|. Loopback only; chronyd is stopped at the end.

    .venv/bin/python bench/txstamps.py [--samples N] [--interval S] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))

from refdaemons import ChronyServer  # noqa: E402

from pyntpd.daemon.serve import SO_TIMESTAMPNS, receive_timestamp_ns  # noqa: E402
from pyntpd.daemon.txstamp import (  # noqa: E402
    CLIENT_FLAGS,
    RECEIVE_ANCILLARY,
    RequestStamps,
    enable,
    read_stamps,
)
from pyntpd.proto.source import Association, SourceSpec  # noqa: E402
from pyntpd.proto.timestamp import unix_ns_to_ntp  # noqa: E402

HOST = "127.0.0.1"
VARIANTS = ("user T1", "kernel T1", "kernel T1, xleave")


class Poller:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.kernel = name != "user T1"
        self.assoc = Association(SourceSpec(HOST, port=port, minpoll=3, maxpoll=3,
                                            xleave="xleave" in name))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.stamps = RequestStamps(enabled=self.kernel and enable(self.sock, CLIENT_FLAGS))
        self.sock.connect((HOST, port))
        self.sock.setblocking(False)
        self.offsets: list[float] = []
        self.delays: list[float] = []

    def poll(self, timeout: float) -> None:
        request = self.assoc.make_request(time.time())  # the schedule is ours here
        assert request is not None
        self.assoc.sent(unix_ns_to_ntp(time.time_ns()))
        self.sock.send(request)
        if self.stamps.enabled:
            self.stamps.sent()
            self._stamps()
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                return
            if self.stamps.enabled:
                self._stamps()
            try:
                data, ancillary, _, _ = self.sock.recvmsg(1300, RECEIVE_ANCILLARY)
            except BlockingIOError:
                continue
            rx_ns = receive_timestamp_ns(ancillary) or time.time_ns()
            sample = self.assoc.receive(data, unix_ns_to_ntp(rx_ns), rx_ns / 1e9)
            if sample is not None:
                self.offsets.append(sample.offset)
                self.delays.append(sample.delay)
            return

    def _stamps(self) -> None:
        for key, stamp_ns in read_stamps(self.sock):
            if self.stamps.take(key):
                self.assoc.transmitted(unix_ns_to_ntp(stamp_ns))


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(abs(v) for v in values)
    return {"mean_us": statistics.fmean(values) * 1e6,
            "sd_us": statistics.stdev(values) * 1e6 if len(values) > 1 else 0.0,
            "p99_abs_us": ordered[int(0.99 * (len(ordered) - 1))] * 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=2000, help="exchanges per variant")
    ap.add_argument("--interval", type=float, default=0.01, help="s between exchanges")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    results: dict[str, dict[str, object]] = {}
    with ChronyServer(stratum=5) as server:
        pollers = [Poller(name, server.port) for name in VARIANTS]
        try:
            for _ in range(args.samples):
                for poller in pollers:
                    poller.poll(timeout=0.5)
                    time.sleep(args.interval)
            for p in pollers:
                results[p.name] = {
                    "samples": len(p.offsets), "interleaved": p.assoc.interleaved,
                    "t1": {k.value: n for k, n in p.assoc.transmit_stamps.items()},
                    "offset": summary(p.offsets), "delay": summary(p.delays)}
        finally:
            for p in pollers:
                p.sock.close()
    print(f"{'variant':<20} {'n':>5} {'interl.':>7} {'offset mean':>12} {'sd':>8} "
          f"{'p99 |off|':>10} {'delay mean':>11} {'sd':>8}")
    for name, r in results.items():
        o, d = r["offset"], r["delay"]
        assert isinstance(o, dict) and isinstance(d, dict)
        print(f"{name:<20} {r['samples']:>5} {r['interleaved']:>7} {o['mean_us']:>10.2f}us "
              f"{o['sd_us']:>6.2f}us {o['p99_abs_us']:>8.2f}us {d['mean_us']:>9.2f}us "
              f"{d['sd_us']:>6.2f}us")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
