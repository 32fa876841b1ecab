#!/usr/bin/env python3
"""NTS-KE under attack: pyntpd against chronyd in the same run (issue 12, item 2).

Each server runs with a test certificate (tests/ntscerts.py), NTS-KE on 127.0.0.1, pinned
to CPU 0 without CAP_SYS_TIME (chronyd also with -x); every client below is a process of
its own pinned to CPU 1. For each server, in turn:

1. **baseline**: NTP round trips (a plain mode 3 request, one at a time, `--probe-rate` a
   second, RTT from send to receive in the client) for `--seconds`: median and p99.
2. **slot attack**: 64 idle TCP connections from 8 addresses (127.0.0.2-9, 8 each), each
   re-opened as soon as the server drops it, while `--legit` legitimate NTS-KE clients
   (stdlib TLS 1.3, a whole exchange, 3 s to finish) come one after another from
   127.1.0.1, 127.0.0.1 (the attackers' /24), 127.2.0.1 and 127.0.0.200: how many got
   their 8 cookies.
3. **handshake flood**: `--flood-rate` (1,600) connections a second from `--flood-sources`
   (400) addresses, each in a /24 of its own (127.10.0.1, 127.10.1.1, ...), each sending a
   TLS 1.3 ClientHello recorded once and closing when the server's first flight (the costly
   part: key exchange and signature) arrives, or after 2 s; meanwhile the NTP round trips
   again, and legitimate NTS-KE clients as in 2.

Printed per server: legitimate clients served (slot attack, flood), NTP RTT median/p99
without and with the flood and their ratios, the flood's connections answered per second
and the server's CPU time per second during it. `--pyntpd-src NAME=DIR` adds another
pyntpd tree (e.g. main before a change) to the same run.

    .venv/bin/python bench/ntskeflood.py                 # chronyd and pyntpd, 3 rounds (~5 min)
    .venv/bin/python bench/ntskeflood.py --pyntpd-src before=/path/to/old/src --json out.json

Rounds (`--rounds`, 3) alternate the servers; the table shows medians over rounds (the
ratios taken within each round) and the legitimate clients summed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import json
import os
import selectors
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for path in (BENCH_DIR, REPO_ROOT / "tests" / "interop", REPO_ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

HOST = "127.0.0.1"
ATTACKERS = [f"127.0.0.{i}" for i in range(2, 10)]
LEGIT_SOURCES = ["127.1.0.1", "127.0.0.1", "127.2.0.1", "127.0.0.200"]
NTP_REQUEST = bytes([0x23]) + bytes(39) + (0x0123456789ABCDEF).to_bytes(8, "big")

Result = dict[str, Any]


# --- the clients (each run as `ntskeflood.py --role ROLE ...`, JSON on stdout) --------------


def probe(port: int, rate: float, seconds: float) -> Result:
    """NTP round trips, one request at a time, paced at `rate`."""
    rtts: list[float] = []
    lost = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.connect((HOST, port))
        start = time.monotonic()
        for n in range(int(rate * seconds)):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter_ns()
            s.send(NTP_REQUEST)
            try:
                reply = s.recv(512)
            except TimeoutError:
                lost += 1
                continue
            if len(reply) >= 48 and reply[24:32] == NTP_REQUEST[40:48]:
                rtts.append((time.perf_counter_ns() - sent) / 1e3)
            else:
                lost += 1
    return {"rtts_us": rtts, "lost": lost}


def _client_context(ca: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["ntske/1"])
    return context


def legit(port: int, ca: str, count: int, interval: float, timeout: float = 3.0) -> Result:
    """`count` whole NTS-KE exchanges, one after another, from LEGIT_SOURCES in turn."""
    from pyntpd.proto import ntske
    from pyntpd.proto.ntske import RecordType

    context = _client_context(ca)
    served, times = 0, []
    failures: collections.Counter[str] = collections.Counter()
    for n in range(count):
        started = time.monotonic()
        raw = socket.socket()
        raw.settimeout(timeout)
        try:
            raw.bind((LEGIT_SOURCES[n % len(LEGIT_SOURCES)], 0))
            raw.connect((HOST, port))
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(ntske.client_request())
                reader = ntske.MessageReader(ntske.RESPONSE_LIMITS)
                records = None
                while records is None and time.monotonic() - started < timeout:
                    data = sock.recv(4096)
                    if not data:
                        reader.eof()
                    records = reader.feed(data)
            if records and sum(r.type == RecordType.NEW_COOKIE for r in records) == 8:
                served += 1
                times.append((time.monotonic() - started) * 1e3)
        except (OSError, ssl.SSLError, ntske.NtsKeError) as exc:
            failures[type(exc).__name__] += 1
        finally:
            raw.close()
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return {"served": served, "tried": count, "ms": times, "failures": dict(failures)}


def slots(port: int, seconds: float, each: int = 8) -> Result:
    """`each` idle connections from every ATTACKERS address, re-opened when dropped."""
    opened = dropped = 0
    with selectors.DefaultSelector() as selector:

        def open_one(source: str) -> None:
            nonlocal opened
            sock = socket.socket()
            sock.setblocking(False)
            sock.bind((source, 0))
            if sock.connect_ex((HOST, port)) in (0, errno.EINPROGRESS):
                selector.register(sock, selectors.EVENT_READ, source)
                opened += 1
            else:
                sock.close()

        for source in ATTACKERS:
            for _ in range(each):
                open_one(source)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for key, _ in selector.select(0.01):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    dropped += 1
                    selector.unregister(sock)
                    sock.close()  # type: ignore[union-attr]
                    open_one(key.data)
            time.sleep(0.01)
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
    return {"opened": opened, "dropped": dropped}


def client_hello(ca: str) -> bytes:
    """A TLS 1.3 ClientHello with ALPN ntske/1, recorded from the stdlib's client."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _client_context(ca).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def flood_sources(count: int) -> list[str]:
    return [f"127.{10 + i // 256}.{i % 256}.1" for i in range(count)]


def flood(port: int, ca: str, rate: float, seconds: float, sources: int,
          max_open: int = 4000, patience: float = 2.0) -> Result:
    """`rate` connections a second, each a ClientHello, closed once the server answers."""
    hello = client_hello(ca)
    addresses = flood_sources(sources)
    outcome: collections.Counter[str] = collections.Counter()
    started_at: dict[socket.socket, float] = {}
    order: collections.deque[tuple[float, socket.socket]] = collections.deque()
    with selectors.DefaultSelector() as selector:

        def close(sock: socket.socket, how: str) -> None:
            outcome[how] += 1
            selector.unregister(sock)
            started_at.pop(sock, None)
            sock.close()

        start = time.monotonic()
        made = 0
        while True:
            now = time.monotonic()
            elapsed = now - start
            if elapsed >= seconds + patience:
                break
            due = int(min(elapsed, seconds) * rate)
            while made < due and len(started_at) < max_open:
                sock = socket.socket()
                sock.setblocking(False)
                sock.bind((addresses[made % len(addresses)], 0))
                made += 1
                if sock.connect_ex((HOST, port)) not in (0, errno.EINPROGRESS):
                    outcome["connect_failed"] += 1
                    sock.close()
                    continue
                selector.register(sock, selectors.EVENT_WRITE, "connecting")
                started_at[sock] = now
                order.append((now, sock))
            if made < due:
                outcome["skipped_too_many_open"] += due - made
                made = due
            for key, _ in selector.select(0.002):
                sock = key.fileobj  # type: ignore[assignment]
                if key.data == "connecting":
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        close(sock, "refused")
                        continue
                    try:
                        sock.send(hello)
                    except OSError:
                        close(sock, "reset")
                        continue
                    selector.modify(sock, selectors.EVENT_READ, "sent")
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                close(sock, "answered" if data else "closed")
            while order and (now - order[0][0] > patience or order[0][1] not in started_at):
                _, sock = order.popleft()
                if sock in started_at:
                    close(sock, "no_answer")
        for sock in list(started_at):
            close(sock, "no_answer")
    return {"made": made, **outcome}


ROLES = {"probe", "legit", "slots", "flood"}


def role_main(args: argparse.Namespace) -> int:
    if args.role == "probe":
        result = probe(args.port, args.rate, args.seconds)
    elif args.role == "legit":
        result = legit(args.port, args.ca, args.count, args.interval)
    elif args.role == "slots":
        result = slots(args.port, args.seconds)
    else:
        result = flood(args.port, args.ca, args.rate, args.seconds, args.sources)
    json.dump(result, sys.stdout)
    return 0


# --- the servers ---------------------------------------------------------------------------


@dataclass
class Spec:
    name: str
    kind: str  # chronyd | pyntpd
    src: Path | None = None  # pyntpd's source tree (PYTHONPATH)


@dataclass
class Server:
    spec: Spec
    pki: Any
    pin: Any
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="keflood-")))
    ntp_port: int = 0
    ke_port: int = 0
    proc: Any = None

    def start(self) -> Server:
        import refdaemons
        from serve import no_sys_time

        self.workdir.chmod(0o700)
        self.ntp_port = refdaemons.free_udp_port(HOST)
        self.ke_port = refdaemons.free_tcp_port(HOST)
        argv = [*self.pin.server, *no_sys_time(), *self._argv()]
        self.proc = refdaemons.ManagedProcess(argv, self.workdir / "server.log", self.workdir)

        def ready() -> bool:
            if not self.proc.alive():
                raise RuntimeError(f"{self.spec.name} exited:\n{self.proc.log_text()[-2000:]}")
            try:
                refdaemons.sntp_query(HOST, self.ntp_port, timeout=0.2)
            except OSError:
                return False
            return legit(self.ke_port, str(self.pki.ca), 1, 0.0)["served"] == 1

        refdaemons.poll_until(ready, 20.0, f"{self.spec.name} serving NTP and NTS-KE", 0.1)
        return self

    def _argv(self) -> list[str]:
        pki = self.pki
        if self.spec.kind == "chronyd":
            import refdaemons

            chronyd = refdaemons.find_chronyd()
            if chronyd is None:
                raise RuntimeError("chronyd not found: run scripts/install-test-deps")
            conf = self.workdir / "chronyd.conf"
            conf.write_text("\n".join([
                f"pidfile {self.workdir / 'chronyd.pid'}", "cmdport 0",
                f"bindcmdaddress {self.workdir / 'chronyd.sock'}", f"port {self.ntp_port}",
                f"bindaddress {HOST}", "local stratum 10", "allow 127.0.0.0/8",
                f"ntsserverkey {pki.key}", f"ntsservercert {pki.cert}",
                f"ntsport {self.ke_port}", f"ntsdumpdir {self.workdir}",
            ]) + "\n")
            return [chronyd, "-x", "-d", "-u", "root", "-f", str(conf)]
        conf = self.workdir / "ntp.conf"
        conf.write_text(
            "server 127.127.1.0\nfudge 127.127.1.0 stratum 10\nrestrict default\n"
            f"nts enable cert {pki.cert} key {pki.key} cookie {self.workdir / 'nts-keys'} "
            f"listen {HOST} port {self.ke_port}\n")
        src = self.spec.src or REPO_ROOT / "src"
        return ["env", f"PYTHONPATH={src}", sys.executable, "-m", "pyntpd.cli.pyntpd", "-n",
                "--observe", "--port", str(self.ntp_port), "-c", str(conf),
                "--status-socket", str(self.workdir / "status")]

    def nts_ke_counters(self) -> Result:
        """pyntpd's NTS-KE counters from its JSON status ({} for chronyd, or a pyntpd
        without them)."""
        if self.spec.kind != "pyntpd":
            return {}
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5.0)
                s.connect(str(self.workdir / "status"))
                data = b"".join(iter(lambda: s.recv(65536), b""))
            counters: Result = json.loads(data).get("nts_ke", {})
        except (OSError, ValueError):
            return {}
        return counters

    def cpu(self) -> float:
        from serve import _all_cpu, _descendants

        table = _all_cpu()
        return sum(table[p][1] for p in _descendants(table, self.proc.pid) if p in table)

    def stop(self) -> None:
        try:
            if self.proc is not None:
                self.proc.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def spawn(pin: Any, role: str, *args: str) -> subprocess.Popen[str]:
    argv = [*pin.client, sys.executable, str(Path(__file__).resolve()), "--role", role, *args]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def collect(proc: subprocess.Popen[str], timeout: float) -> Result:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"client failed ({proc.returncode}): {err[-2000:]}")
    result: Result = json.loads(out)
    return result


def rtt_summary(result: Result) -> Result:
    rtts = sorted(result["rtts_us"])
    if not rtts:
        return {"p50_ms": None, "p99_ms": None, "samples": 0, "lost": result["lost"]}
    p99 = rtts[min(len(rtts) - 1, int(0.99 * len(rtts)))]
    return {"p50_ms": statistics.median(rtts) / 1e3, "p99_ms": p99 / 1e3,
            "samples": len(rtts), "lost": result["lost"]}


def measure(server: Server, args: argparse.Namespace) -> Result:
    pin, ca = server.pin, str(server.pki.ca)
    seconds = str(args.seconds)
    baseline = collect(spawn(pin, "probe", "--port", str(server.ntp_port), "--rate",
                             str(args.probe_rate), "--seconds", seconds), args.seconds + 30)
    # The slot attack, with legitimate clients once it holds its connections.
    attack_seconds = args.legit * args.legit_interval + 8.0
    attack = spawn(pin, "slots", "--port", str(server.ke_port), "--seconds", str(attack_seconds))
    time.sleep(2.0)
    during_attack = collect(spawn(pin, "legit", "--port", str(server.ke_port), "--ca", ca,
                                  "--count", str(args.legit), "--interval",
                                  str(args.legit_interval)), attack_seconds + 60)
    attack_result = collect(attack, attack_seconds + 30)
    time.sleep(3.0)  # the attack's connections time out before the next phase
    # The handshake flood, with round trips and legitimate clients while it runs.
    ke0 = server.nts_ke_counters()
    cpu0 = server.cpu()
    flooding = spawn(pin, "flood", "--port", str(server.ke_port), "--ca", ca, "--rate",
                     str(args.flood_rate), "--seconds", str(args.seconds + 4.0), "--sources",
                     str(args.flood_sources))
    time.sleep(2.0)
    wall0 = time.monotonic()
    probing = spawn(pin, "probe", "--port", str(server.ntp_port), "--rate",
                    str(args.probe_rate), "--seconds", seconds)
    legit_flood = spawn(pin, "legit", "--port", str(server.ke_port), "--ca", ca, "--count",
                        str(args.legit_flood), "--interval",
                        str(args.seconds / max(args.legit_flood, 1)))
    under_flood = collect(probing, args.seconds + 30)
    cpu_per_s = (server.cpu() - cpu0) / max(time.monotonic() - wall0 + 2.0, 1e-3)
    during_flood = collect(legit_flood, args.seconds * 2 + 60)
    flood_result = collect(flooding, args.seconds + 40)
    ke1 = server.nts_ke_counters()
    ke_flood = {k: v - ke0.get(k, 0) for k, v in ke1.items() if isinstance(v, int)}
    base, flooded = rtt_summary(baseline), rtt_summary(under_flood)

    def ratio(key: str) -> float | None:
        return (flooded[key] / base[key]) if base[key] and flooded[key] else None

    return {
        "baseline": base, "flood": flooded,
        "ratio_p50": ratio("p50_ms"), "ratio_p99": ratio("p99_ms"),
        "legit_slot_attack": during_attack, "slot_attack": attack_result,
        "legit_flood": during_flood, "handshake_flood": flood_result,
        "flood_answered_per_s": flood_result.get("answered", 0) / (args.seconds + 4.0),
        "server_cpu_per_s": cpu_per_s, "nts_ke_during_flood": ke_flood,
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(results: dict[str, Result]) -> None:
    rows = [
        ("legit NTS-KE served, slot attack",
         lambda r: f"{r['legit_slot_attack']['served']}/{r['legit_slot_attack']['tried']}"),
        ("legit NTS-KE served, handshake flood",
         lambda r: f"{r['legit_flood']['served']}/{r['legit_flood']['tried']}"),
        ("NTP RTT p50 ms, no flood", lambda r: fmt(r["baseline"]["p50_ms"], ".3f")),
        ("NTP RTT p99 ms, no flood", lambda r: fmt(r["baseline"]["p99_ms"], ".3f")),
        ("NTP RTT p50 ms, flood", lambda r: fmt(r["flood"]["p50_ms"], ".3f")),
        ("NTP RTT p99 ms, flood", lambda r: fmt(r["flood"]["p99_ms"], ".3f")),
        ("ratio p50 (flood / none)", lambda r: fmt(r["ratio_p50"], ".2f")),
        ("ratio p99 (flood / none)", lambda r: fmt(r["ratio_p99"], ".2f")),
        ("NTP lost, no flood / flood",
         lambda r: f"{r['baseline']['lost']} / {r['flood']['lost']}"),
        ("flood handshakes answered /s", lambda r: fmt(r["flood_answered_per_s"], ".0f")),
        ("server CPU s/s during flood", lambda r: fmt(r["server_cpu_per_s"], ".2f")),
        ("pyntpd: refused busy / evicted, flood", lambda r: (
            f"{r['nts_ke_during_flood']['refused_busy']} / {r['nts_ke_during_flood']['evicted']}"
            if r["nts_ke_during_flood"] else "-")),
    ]
    names = list(results)
    width = max(len(label) for label, _ in rows)
    print(f"{'':{width}}  " + "  ".join(f"{n:>14}" for n in names))
    for label, get in rows:
        print(f"{label:{width}}  " + "  ".join(f"{get(results[n]):>14}" for n in names))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ca", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=200.0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=44, help=argparse.SUPPRESS)
    ap.add_argument("--interval", type=float, default=0.25, help=argparse.SUPPRESS)
    ap.add_argument("--sources", type=int, default=400, help=argparse.SUPPRESS)
    ap.add_argument("--servers", default="chronyd,pyntpd",
                    help="comma-separated: chronyd, pyntpd (this tree)")
    ap.add_argument("--pyntpd-src", action="append", default=[], metavar="NAME=DIR",
                    help="another pyntpd source tree to run as NAME (repeatable)")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="length of each round-trip measurement (default 10)")
    ap.add_argument("--probe-rate", type=float, default=200.0,
                    help="NTP requests a second while measuring (default 200)")
    ap.add_argument("--legit", type=int, default=44,
                    help="legitimate NTS-KE clients during the slot attack (default 44)")
    ap.add_argument("--legit-interval", type=float, default=0.25)
    ap.add_argument("--legit-flood", type=int, default=20,
                    help="legitimate NTS-KE clients during the flood (default 20)")
    ap.add_argument("--flood-rate", type=float, default=1600.0)
    ap.add_argument("--flood-sources", type=int, default=400)
    ap.add_argument("--no-pin", action="store_true",
                    help="let the scheduler place servers and clients (default: server on "
                         "CPU 0, clients on CPU 1)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds; servers alternate within each (default 3)")
    ap.add_argument("--json", metavar="FILE", help="write every figure here too")
    args = ap.parse_args(argv)
    if args.role:
        return role_main(args)

    from serve import ForeignLoad, Pinning
    from tests.ntscerts import make_pki

    specs = [Spec(name, name) for name in args.servers.split(",") if name]
    for item in args.pyntpd_src:
        name, _, src = item.partition("=")
        specs.append(Spec(name, "pyntpd", Path(src).resolve()))
    pin = Pinning([], []) if args.no_pin else Pinning.make(0, 1)
    rounds: list[dict[str, Result]] = []
    with tempfile.TemporaryDirectory(prefix="keflood-pki-") as tmp:
        pki = make_pki(Path(tmp))
        for number in range(args.rounds):
            results: dict[str, Result] = {}
            for spec in specs:  # servers alternate within a round
                server = Server(spec, pki, pin)
                foreign = ForeignLoad()
                try:
                    server.start()
                    print(f"round {number + 1}: {spec.name} ...", file=sys.stderr)
                    results[spec.name] = measure(server, args)
                finally:
                    server.stop()
                results[spec.name]["foreign_load"] = foreign.stop()
            rounds.append(results)
    summary = {spec.name: summarise([r[spec.name] for r in rounds]) for spec in specs}
    print(f"{args.rounds} round(s); medians over rounds, legitimate clients summed")
    report(summary)
    busy = {n: r["foreign_load"] for n, r in summary.items() if r["foreign_load"] > 0.05}
    if busy:
        print("note: other processes used CPU during the run (median share of both CPUs: "
              + ", ".join(f"{n} {v:.0%}" for n, v in busy.items()) + "): less reliable")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rounds": rounds},
                                              indent=2) + "\n")
    return 0


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarise(rounds: list[Result]) -> Result:
    """Medians over rounds of every figure; legitimate clients served and tried summed."""

    def served(key: str) -> Result:
        return {"served": sum(r[key]["served"] for r in rounds),
                "tried": sum(r[key]["tried"] for r in rounds)}

    def rtt(key: str) -> Result:
        return {name: _median([r[key][name] for r in rounds])
                for name in ("p50_ms", "p99_ms", "samples")} | {
            "lost": sum(r[key]["lost"] for r in rounds)}

    return {
        "baseline": rtt("baseline"), "flood": rtt("flood"),
        "ratio_p50": _median([r["ratio_p50"] for r in rounds]),
        "ratio_p99": _median([r["ratio_p99"] for r in rounds]),
        "legit_slot_attack": served("legit_slot_attack"), "legit_flood": served("legit_flood"),
        "flood_answered_per_s": _median([r["flood_answered_per_s"] for r in rounds]),
        "server_cpu_per_s": _median([r["server_cpu_per_s"] for r in rounds]),
        "nts_ke_during_flood": ({k: sum(r["nts_ke_during_flood"][k] for r in rounds)
                                 for k in rounds[0]["nts_ke_during_flood"]}
                                if all(r["nts_ke_during_flood"] for r in rounds) else {}),
        "foreign_load": _median([r["foreign_load"] for r in rounds]),
    }


if __name__ == "__main__":
    sys.exit(main())
