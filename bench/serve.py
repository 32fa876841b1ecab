#!/usr/bin/env python3
"""Serving benchmark: pyntpd against chronyd (and other servers) on loopback.

Each server under test runs pinned to CPU 0 (taskset), with CAP_SYS_TIME dropped (setpriv) so
that it cannot touch the machine's clock whatever it tries; chronyd also gets ``-x``.  The C load
generator (bench/loadgen.c, built into bench/build/) runs pinned to CPU 1 and sends NTPv4 mode-3
requests to 127.0.0.1 only.

For every round and every server (servers alternate within a round, so ratios are taken within a
round, then the median over rounds is reported):

* max rate: the highest request rate answered with < 1% loss, found by a geometric ramp then a
  bisection; each step sends for --step seconds; a step that fails narrowly (loss < 5%) is retried
  once, because this VM's CPU 0 sees multi-millisecond stalls that overflow any socket buffer;
* server CPU time per request at that rate (utime+stime of the server's process tree);
* at --latency-rate (10k/s), one request per send() with t1 read just before it: the median and
  p99 of RTT - (t3 - t2) (NTP's delay: what the server adds beyond its own t2..t3 window, which is
  where a late user-space t2 shows), plus RTT and the server's t3 - t2;
* honesty under load: the same delay at 10%, 50% and 90% of that server's maximum rate, the load
  generator sending --batch requests per sendmmsg, so that a server answering a batch under one
  stale transmit timestamp shows it.

Servers: chronyd, pyntpd, cpython-minimal (bench/toy_server.py), ntpsec (port 123, optional),
and any ``--extra-server NAME=CMD`` where CMD may use {port}, {host} and {workdir}
(without {port} the server is assumed to listen on 123).

    .venv/bin/python bench/serve.py                      # chronyd,pyntpd; 3 rounds
    .venv/bin/python bench/serve.py --servers chronyd,cpython-minimal --rounds 1 --json out.json
    .venv/bin/python bench/serve.py --auth aes128   # signed requests (key 1) to every server
    .venv/bin/python bench/serve.py --auth nts      # NTS requests (chronyd and pyntpd only)
    .venv/bin/python bench/serve.py --all --rounds 1  # plain, md5, sha1, aes128, nts in turn,
                                                      # then one overview table

With ``--auth ALG`` every request carries a MAC under key 1 (MD5, SHA1 or AES-128-CMAC) and
the servers are given that key; with ``--auth nts`` each server gets a test certificate and
NTS-KE is run with it once to get a cookie and keys. The load generator then sends one
pre-built request over and over (servers keep no per-request state: a cookie is not
remembered), so replies are matched in order, and only authenticated replies count.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))
sys.path.insert(0, str(REPO_ROOT))

import refdaemons  # noqa: E402
from refdaemons import ManagedProcess, RefDaemonError, free_udp_port, sntp_query  # noqa: E402

HOST = "127.0.0.1"
LOADGEN_SRC = BENCH_DIR / "loadgen.c"
LOADGEN_BIN = BENCH_DIR / "build" / "loadgen"
CLK_TCK = os.sysconf("SC_CLK_TCK")

Result = dict[str, Any]


# ------------------------------------------------------------------------------------------------
# building and running the load generator
# ------------------------------------------------------------------------------------------------


def build_c(source: Path, binary: Path) -> Path:
    """Compile one C file of bench/ unless ``binary`` is newer than it."""
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("gcc not found: run scripts/install-test-deps")
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(f".{binary.name}.{os.getpid()}")
    try:
        subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(source)], check=True)
        os.replace(tmp, binary)  # atomic: a concurrent user never sees a partial binary
    finally:
        tmp.unlink(missing_ok=True)
    return binary


def build_loadgen() -> Path:
    return build_c(LOADGEN_SRC, LOADGEN_BIN)


@dataclass
class Pinning:
    server: list[str]
    client: list[str]

    @classmethod
    def make(cls, server_cpu: int, client_cpu: int) -> Pinning:
        taskset = shutil.which("taskset")
        ncpu = os.cpu_count() or 1
        if taskset is None or ncpu < 2:
            print("warning: no taskset or < 2 CPUs: running unpinned", file=sys.stderr)
            return cls([], [])
        return cls([taskset, "-c", str(server_cpu)], [taskset, "-c", str(client_cpu)])


LOADGEN_OPTS: list[str] = []  # extra loadgen options from the command line (--spin-us)

# --auth: (ntpd key type, chrony key type, secret) of key 1, given to every server.
AUTH_TYPES = {"md5": ("MD5", "MD5", 16), "sha1": ("SHA1", "SHA1", 20),
              "aes128": ("AES128CMAC", "AES128", 16)}
AUTH: tuple[str, str, bytes] | None = None
NTS_PKI: Any = None  # tests.ntscerts.Pki with --auth nts
NTS_KE_PORTS: dict[Path, int] = {}  # workdir -> the server's NTS-KE port


def nts_ke_port(workdir: Path) -> int:
    NTS_KE_PORTS[workdir] = port = refdaemons.free_tcp_port(HOST)
    return port


def request_payload(workdir: Path) -> str | None:
    """The datagram the load generator sends to this server (hex), None for plain requests."""
    if AUTH is not None:
        return signed_request_hex()
    if NTS_PKI is None:
        return None
    import asyncio

    from pyntpd.daemon.ntsketls import key_exchange

    session = asyncio.run(key_exchange("localhost", NTS_KE_PORTS[workdir], ca=str(NTS_PKI.ca),
                                       connect_to=HOST))
    header = bytes([0x23]) + bytes(39) + (0x0123456789ABCDEF).to_bytes(8, "big")
    return session.build_request(header)[0].hex()


def write_keys(workdir: Path, chrony: bool) -> Path:
    assert AUTH is not None
    ntp_type, chrony_type, secret = AUTH
    path = workdir / ("chrony.keys" if chrony else "ntp.keys")
    if chrony:
        path.write_text(f"1 {chrony_type} HEX:{secret.hex()}\n")
    else:
        # ntpsec names AES-128-CMAC "AES"; pyntpd takes that too.
        path.write_text(f"1 {'AES' if ntp_type == 'AES128CMAC' else ntp_type} {secret.hex()}\n")
    path.chmod(0o600)
    return path


def signed_request_hex() -> str:
    from pyntpd.config.keys import SymmetricKey
    from pyntpd.proto.auth import mac_trailer

    assert AUTH is not None
    ntp_type, _, secret = AUTH
    request = bytes([0x23]) + bytes(39) + (0x0123456789ABCDEF).to_bytes(8, "big")
    return (request + mac_trailer(SymmetricKey(1, ntp_type, secret), request)).hex()  # type: ignore[arg-type]


def run_loadgen(
    pin: Pinning,
    port: int,
    rate: float,
    duration: float,
    batch: int,
    sockets: int = 4,
    extra: Sequence[str] = (),
    payload: str | None = None,
) -> Result:
    argv = [
        *pin.client,
        str(LOADGEN_BIN),
        *LOADGEN_OPTS,
        *extra,
        *(["--payload", payload] if payload else []),
        "--sockets",
        str(sockets),
        "--batch",
        str(batch),
        "--drain",
        "0.2",
        HOST,
        str(port),
        str(int(rate)),
        str(duration),
    ]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"loadgen failed ({r.returncode}): {r.stderr.strip()}")
    result: Result = json.loads(r.stdout)
    if payload is not None:
        # A reply without a MAC (or NTS fields) to an authenticated request is no answer.
        result["loss"] = 1.0 - result["with_trailer"] / max(result["sent"], 1)
    return result


# ------------------------------------------------------------------------------------------------
# servers under test
# ------------------------------------------------------------------------------------------------


def no_sys_time() -> list[str]:
    setpriv = refdaemons.find_setpriv()
    if setpriv is None:
        raise SystemExit("setpriv (util-linux) not found: run scripts/install-test-deps")
    return [setpriv, "--inh-caps=-sys_time", "--bounding-set=-sys_time"]


@dataclass
class ServerSpec:
    """How to start one server: ``make(port, workdir) -> argv`` (run pinned, without
    CAP_SYS_TIME); ``fixed_port`` for servers that only listen on 123."""

    name: str
    make: Callable[[int, Path], list[str]]
    fixed_port: int | None = None
    note: str = ""


def chronyd_argv(port: int, workdir: Path) -> list[str]:
    chronyd = refdaemons.find_chronyd()
    if chronyd is None:
        raise RefDaemonError("chronyd not found: run scripts/install-test-deps")
    conf = workdir / "chronyd.conf"
    conf.write_text(
        "\n".join(
            [
                f"pidfile {workdir / 'chronyd.pid'}",
                "cmdport 0",
                f"bindcmdaddress {workdir / 'chronyd.sock'}",
                f"port {port}",
                f"bindaddress {HOST}",
                "local stratum 10",
                f"allow {HOST}",
                # no client log => no rate limiting, no per-client bookkeeping
                "noclientlog",
                *([f"keyfile {write_keys(workdir, chrony=True)}"] if AUTH else []),
                *([f"ntsserverkey {NTS_PKI.key}", f"ntsservercert {NTS_PKI.cert}",
                   f"ntsport {nts_ke_port(workdir)}", f"ntsdumpdir {workdir}"]
                  if NTS_PKI is not None else []),
            ]
        )
        + "\n"
    )
    return [chronyd, "-x", "-d", "-u", "root", "-f", str(conf)]


def pyntpd_exe() -> Path:
    exe = REPO_ROOT / ".venv" / "bin" / "pyntpd"
    if not exe.exists():
        found = shutil.which("pyntpd")
        if found is None:
            raise RefDaemonError("pyntpd not installed in .venv: run scripts/install-test-deps")
        exe = Path(found)
    return exe


def pyntpd_argv(port: int, workdir: Path) -> list[str]:
    exe = pyntpd_exe()
    conf = workdir / "ntp.conf"
    conf.write_text(
        "server 127.127.1.0\nfudge 127.127.1.0 stratum 10\nrestrict default\nrestrict 127.0.0.1\n"
        + (f"keys {write_keys(workdir, chrony=False)}\ntrustedkey 1\n" if AUTH else "")
        + (f"nts enable cert {NTS_PKI.cert} key {NTS_PKI.key} cookie {workdir / 'nts-keys'} "
           f"listen {HOST} port {nts_ke_port(workdir)}\n" if NTS_PKI is not None else "")
    )
    # --observe: the server runs without CAP_SYS_TIME here and must not try to discipline.
    return [str(exe), "-n", "--observe", "--port", str(port), "-c", str(conf)]


def toy_argv(port: int, workdir: Path) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "toy_server.py"), "--host", HOST, "--port", str(port)]


def ntpsec_argv(port: int, workdir: Path) -> list[str]:
    ntpd = refdaemons.find_ntpsec_ntpd()
    if ntpd is None:
        raise RefDaemonError("ntpsec ntpd not found: run scripts/install-test-deps")
    conf = workdir / "ntpsec.conf"
    conf.write_text(
        "refclock local stratum 10 minpoll 0 maxpoll 0\n"
        "tos minclock 1 minsane 1\n"
        "restrict default\n"
        "restrict 127.0.0.1\n"
        "interface ignore all\n"
        f"interface listen {HOST}\n"
        f"driftfile {workdir / 'ntpsec.drift'}\n"
        + (f"keys {write_keys(workdir, chrony=False)}\ntrustedkey 1\n" if AUTH else "")
    )
    return [ntpd, "-n", "-c", str(conf), "-p", str(workdir / "ntpsec.pid")]


BUILTIN: dict[str, ServerSpec] = {
    "chronyd": ServerSpec("chronyd", chronyd_argv, note="chronyd -x, local stratum 10"),
    "pyntpd": ServerSpec("pyntpd", pyntpd_argv, note="127.127.1.0 stratum 10"),
    "cpython-minimal": ServerSpec(
        "cpython-minimal", toy_argv, note="blocking recvmsg loop + SO_TIMESTAMPNS"
    ),
    "ntpsec": ServerSpec("ntpsec", ntpsec_argv, fixed_port=123, note="port 123, LOCAL driver"),
}


def parse_extra(spec: str) -> ServerSpec:
    name, sep, cmd = spec.partition("=")
    if not sep or not name or not cmd:
        raise argparse.ArgumentTypeError(f"--extra-server wants NAME=CMD, got {spec!r}")
    template = shlex.split(cmd)

    def make(port: int, workdir: Path) -> list[str]:
        return [a.format(port=port, host=HOST, workdir=workdir) for a in template]

    fixed = None if "{port}" in cmd else 123
    return ServerSpec(name, make, fixed_port=fixed, note=cmd)


def _all_cpu() -> dict[int, tuple[int, float]]:
    """{pid: (ppid, utime+stime seconds)} for every process."""
    out: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2 :].split()
        out[int(entry)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK)
    return out


def _descendants(table: dict[int, tuple[int, float]], root: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = [root]
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(kids.get(p, []))
    return seen


def _cpu_busy_seconds() -> float:
    """Busy time of all CPUs (user+nice+system+irq+softirq, not steal) from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


def _self_cpu() -> float:
    """This process's CPU time plus that of its reaped children (load generators, servers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _kthread_cpu() -> float:
    return sum(cpu for pid, (ppid, cpu) in _all_cpu().items() if pid == 2 or ppid == 2)


class ForeignLoad:
    """CPU time used by other processes on this machine (not ours, not kernel threads such as
    ksoftirqd) between creation and stop(), which must be called after our children were reaped.
    A benchmark taken while it is high is not trustworthy (2 vCPUs, shared)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0, self.self0, self.k0 = _cpu_busy_seconds(), _self_cpu(), _kthread_cpu()

    def stop(self) -> float:
        """Foreign CPU use as a fraction of all CPUs."""
        wall = time.monotonic() - self.t0
        used = (
            (_cpu_busy_seconds() - self.busy0)
            - (_self_cpu() - self.self0)
            - (_kthread_cpu() - self.k0)
        )
        return max(0.0, used) / max(wall, 1e-3) / (os.cpu_count() or 1)


class RunningServer:
    def __init__(self, spec: ServerSpec, pin: Pinning, sync_timeout: float) -> None:
        self.spec = spec
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{spec.name}-"))
        os.chmod(self.workdir, 0o700)
        self.port = spec.fixed_port or free_udp_port(HOST)
        argv = [*pin.server, *no_sys_time(), *spec.make(self.port, self.workdir)]
        self.proc = ManagedProcess(argv, self.workdir / "server.log", cwd=self.workdir)
        self.synced = False
        self.payload: str | None = None
        try:
            self._wait_ready(sync_timeout)
            self.payload = request_payload(self.workdir)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, sync_timeout: float) -> None:
        def answering() -> refdaemons.SntpReply | None:
            if not self.proc.alive():
                raise RefDaemonError(
                    f"{self.spec.name} exited ({self.proc.proc.returncode}):\n"
                    + self.proc.log_text()[-2000:]
                )
            try:
                return sntp_query(HOST, self.port, timeout=0.2)
            except OSError:
                return None

        refdaemons.poll_until(answering, 15.0, f"{self.spec.name} to answer", interval=0.05)

        def synced() -> bool:
            reply = answering()
            return reply is not None and reply.leap != 3 and 0 < reply.stratum < 16

        try:
            refdaemons.poll_until(synced, sync_timeout, f"{self.spec.name} to be synchronised", 0.2)
            self.synced = True
        except TimeoutError:
            print(
                f"warning: {self.spec.name} still unsynchronised after {sync_timeout:.0f}s;"
                " benchmarking it anyway (its replies count as 'invalid')",
                file=sys.stderr,
            )

    def cpu(self) -> float:
        """utime+stime (s) of the server's process tree (threads and worker processes)."""
        table = _all_cpu()
        return sum(table[p][1] for p in _descendants(table, self.proc.pid) if p in table)

    def stop(self) -> None:
        try:
            self.proc.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------------


@dataclass
class SearchConfig:
    step: float
    loss: float
    min_rate: float
    max_rate: float
    batch: int
    resolution: float = 1.04  # stop bisecting when fail/pass < this
    max_steps: int = 14


@dataclass
class Search:
    best: float = 0.0
    best_result: Result | None = None
    best_cpu_us: float | None = None
    loadgen_limited: bool = False
    steps: list[Result] = field(default_factory=list)


def find_max_rate(
    server: RunningServer, pin: Pinning, cfg: SearchConfig, start: float, factor: float
) -> Search:
    """Geometric ramp from ``start`` (up while passing, down while failing), then bisection
    between the highest pass and the lowest fail.  A step passes with loss < cfg.loss at the
    offered rate; a narrow failure (loss < 5 x cfg.loss) or a step the load generator could
    not offer in full is retried once.  Bounded by cfg.max_steps load-generator runs."""
    s = Search()
    n = 0
    limited_fail: set[float] = set()

    def trial(rate: float) -> bool:
        nonlocal n
        limited = False
        for attempt in range(2):
            if n >= cfg.max_steps:
                break
            n += 1
            c0 = server.cpu()
            res = run_loadgen(pin, server.port, rate, cfg.step, cfg.batch, payload=server.payload)
            cpu = server.cpu() - c0
            res["attempt"] = attempt
            s.steps.append(res)
            limited = res["send_rate"] < 0.95 * rate
            if not limited and res["loss"] < cfg.loss:
                if rate > s.best:
                    s.best, s.best_result = rate, res
                    s.best_cpu_us = cpu / res["received"] * 1e6 if res["received"] else None
                return True
            if not limited and res["loss"] >= 5 * cfg.loss:
                return False
        if limited:
            limited_fail.add(rate)
        return False

    passed: float | None = None
    failed: float | None = None
    rate = max(cfg.min_rate, min(start, cfg.max_rate))
    while n < cfg.max_steps:  # ramp up / down geometrically
        if trial(rate):
            passed = rate
            if failed is not None or rate >= cfg.max_rate:
                break
            rate = min(rate * factor, cfg.max_rate)
        else:
            failed = rate
            if passed is not None or rate <= cfg.min_rate:
                break
            rate = max(rate / factor, cfg.min_rate)
    while (
        passed is not None
        and failed is not None
        and failed / passed > cfg.resolution
        and n < cfg.max_steps
    ):
        mid = (passed * failed) ** 0.5
        if trial(mid):
            passed = mid
        else:
            failed = mid
    # the ceiling we found was the load generator's, not the server's
    s.loadgen_limited = failed is not None and failed in limited_fail
    return s


HONESTY_LOADS = (0.1, 0.5, 0.9)  # fractions of the server's own maximum rate
HONESTY_MAX_LOSS = 0.01  # a step losing more is shown but not compared


def measure_honesty(
    server: RunningServer, pin: Pinning, cfg: SearchConfig, max_rate: float, duration: float
) -> dict[str, Result]:
    """RTT - (t3 - t2) under load: at each fraction of this server's maximum rate, the load
    generator sends --batch requests per sendmmsg from one socket (replies to identical
    signed or NTS requests are matched in order, which needs one socket). A server that
    stamps a whole batch of replies with one transmit time shows it here: the later
    replies leave after their stamp, and the delay the client computes grows."""
    out: dict[str, Result] = {}
    if not max_rate:
        return out
    for load in HONESTY_LOADS:
        res = run_loadgen(pin, server.port, load * max_rate, duration, cfg.batch, sockets=1,
                          payload=server.payload)
        out[f"{load:.0%}"] = {"rate": load * max_rate, "loss": res["loss"],
                              **res["latency"]}
    return out


def measure_server(
    spec: ServerSpec,
    pin: Pinning,
    cfg: SearchConfig,
    start: float,
    factor: float,
    latency_rate: float,
    latency_duration: float,
    sync_timeout: float,
) -> Result:
    t0 = time.monotonic()
    foreign = ForeignLoad()
    server = RunningServer(spec, pin, sync_timeout)
    try:
        run_loadgen(pin, server.port, 10_000, 0.5, 1, payload=server.payload)  # warm-up
        lat = run_loadgen(pin, server.port, latency_rate, latency_duration, 1, sockets=1,
                          payload=server.payload)
        search = find_max_rate(server, pin, cfg, start, factor)
        honesty = measure_honesty(server, pin, cfg, search.best, latency_duration)
    finally:
        server.stop()
    return {
        "server": spec.name,
        "synced": server.synced,
        "max_rate": search.best,
        "loadgen_limited": search.loadgen_limited,
        "cpu_us_per_request": search.best_cpu_us,
        "at_max": search.best_result,
        "latency": lat,
        "honesty": honesty,
        "steps": [
            {k: st[k] for k in ("target_rate", "send_rate", "loss", "invalid", "attempt")}
            for st in search.steps
        ],
        "seconds": round(time.monotonic() - t0, 1),
        "foreign_cpu": round(foreign.stop(), 3),
    }


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------


def med(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarise(rounds: list[dict[str, Result]], names: list[str]) -> dict[str, Result]:
    out: dict[str, Result] = {}
    for name in names:
        rs = [r[name] for r in rounds if name in r and "error" not in r[name]]
        if not rs:
            errs = [r[name]["error"] for r in rounds if name in r]
            out[name] = {"error": errs[0] if errs else "not run"}
            continue
        out[name] = {
            "max_rate": med([r["max_rate"] for r in rs]),
            "loadgen_limited": any(r["loadgen_limited"] for r in rs),
            "synced": all(r["synced"] for r in rs),
            "cpu_us_per_request": med([r["cpu_us_per_request"] for r in rs]),
            "delay_p50_us": med([r["latency"]["latency"]["delay_p50_us"] for r in rs]),
            "delay_p99_us": med([r["latency"]["latency"]["delay_p99_us"] for r in rs]),
            "rtt_p50_us": med([r["latency"]["latency"]["rtt_p50_us"] for r in rs]),
            "server_t3_t2_p50_us": med(
                [r["latency"]["latency"]["server_t3_t2_p50_us"] for r in rs]
            ),
            "latency_loss": med([r["latency"]["loss"] for r in rs]),
            "honesty": {
                load: {k: med([r["honesty"][load][k] for r in rs if load in r["honesty"]])
                       for k in ("delay_p50_us", "delay_p99_us", "rate", "loss")}
                for load in rs[0]["honesty"]
            },
            "foreign_cpu_max": max(r["foreign_cpu"] for r in rs),
            "rounds": len(rs),
        }
    return out


def ratios(rounds: list[dict[str, Result]], names: list[str], ref: str) -> dict[str, Result]:
    """Per-round ratios name/ref (rate and delay p50), median over rounds."""
    out: dict[str, Result] = {}
    for name in names:
        if name == ref:
            continue
        rr, lr = [], []
        hr: dict[str, list[float]] = {}
        for r in rounds:
            a, b = r.get(name), r.get(ref)
            if not a or not b or "error" in a or "error" in b:
                continue
            if b["max_rate"]:
                rr.append(a["max_rate"] / b["max_rate"])
            la, lb = (
                a["latency"]["latency"]["delay_p50_us"],
                b["latency"]["latency"]["delay_p50_us"],
            )
            if la > 0 and lb > 0:
                lr.append(la / lb)
            for load, h in a.get("honesty", {}).items():
                hb = b.get("honesty", {}).get(load)
                # Replies to identical (signed, NTS) requests are matched in order: after a
                # loss they are matched to the wrong requests, so such a step says nothing.
                if (hb and h["delay_p50_us"] > 0 and hb["delay_p50_us"] > 0
                        and max(h["loss"], hb["loss"]) <= HONESTY_MAX_LOSS):
                    hr.setdefault(load, []).append(h["delay_p50_us"] / hb["delay_p50_us"])
        out[name] = {"rate": med(rr), "delay_p50": med(lr),
                     "honesty_p50": {load: med(v) for load, v in hr.items()}}
    return out


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_report(summary: dict[str, Result], rat: dict[str, Result], ref: str, args: Any) -> None:
    print()
    print(
        f"serving benchmark: {args.rounds} round(s), {args.step:.1f}s steps, loss < "
        f"{args.loss:.0%}; latency at {args.latency_rate:.0f} req/s; medians over rounds"
    )
    head = (
        f"{'server':<16} {'max rate/s':>11} {'cpu us/req':>10} {'delay p50':>10} "
        f"{'delay p99':>10} {'RTT p50':>8} {'t3-t2 p50':>10}  note"
    )
    print(head)
    print("-" * len(head))
    for name, s in summary.items():
        if "error" in s:
            print(f"{name:<16} error: {s['error'].splitlines()[0][:90]}")
            continue
        notes = []
        if s["loadgen_limited"]:
            notes.append("load generator limited")
        if not s["synced"]:
            notes.append("UNSYNCHRONISED replies")
        if s["foreign_cpu_max"] > 0.05:
            notes.append(f"machine busy: {s['foreign_cpu_max']:.0%} CPU used by others")
        print(
            f"{name:<16} {fmt(s['max_rate'], ',.0f'):>11} {fmt(s['cpu_us_per_request'], '.2f'):>10}"
            f" {fmt(s['delay_p50_us'], '.1f'):>8}us {fmt(s['delay_p99_us'], '.1f'):>8}us"
            f" {fmt(s['rtt_p50_us'], '.1f'):>6}us {fmt(s['server_t3_t2_p50_us'], '.1f'):>8}us"
            f"  {', '.join(notes)}"
        )
    print("delay = RTT - (t3 - t2), t1 just before send(), t4 = kernel RX timestamp")
    for name, s in summary.items():
        if "error" in s or not s["honesty"]:
            continue
        print(f"{name:<16} under load (batches of {args.batch}), delay p50/p99: " + "  ".join(
            f"{load} {fmt(h['delay_p50_us'], '.1f')}/{fmt(h['delay_p99_us'], '.1f')}us"
            + (f" (loss {h['loss']:.1%})" if h["loss"] and h["loss"] > 0.01 else "")
            for load, h in s["honesty"].items()))
    if ref in summary and "error" not in summary[ref]:
        for name, r in rat.items():
            tgt = " (targets: >= 1.00, <= 1.00)" if name == "pyntpd" else ""
            print(
                f"ratio {name}/{ref}: rate {fmt(r['rate'], '.2f')}, "
                f"RTT-(t3-t2) p50 {fmt(r['delay_p50'], '.2f')}{tgt}; under load "
                + ", ".join(f"{load} {fmt(v, '.2f')}" for load, v in r["honesty_p50"].items())
            )


# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--servers", default="chronyd,pyntpd", help=f"from {','.join(BUILTIN)}")
    ap.add_argument(
        "--extra-server",
        action="append",
        type=parse_extra,
        default=[],
        metavar="NAME=CMD",
        help="another server; CMD may use {port} {host} {workdir}",
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--step", type=float, default=2.0, help="seconds per rate step")
    ap.add_argument("--loss", type=float, default=0.01, help="max loss fraction")
    ap.add_argument("--start-rate", type=float, default=80_000)
    ap.add_argument("--min-rate", type=float, default=5_000)
    ap.add_argument("--max-rate", type=float, default=600_000)
    ap.add_argument("--batch", type=int, default=16, help="loadgen sendmmsg batch for rate steps")
    ap.add_argument("--latency-rate", type=float, default=10_000)
    ap.add_argument("--latency-duration", type=float, default=2.0)
    ap.add_argument("--sync-timeout", type=float, default=20.0)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument(
        "--spin-us",
        type=float,
        default=1e9,
        help="loadgen: waits shorter than this spin, longer ones sleep (default: always spin)",
    )
    ap.add_argument("--reference", default="chronyd", help="denominator of the ratios")
    ap.add_argument("--auth", choices=[*sorted(AUTH_TYPES), "nts"],
                    help="sign every request with key 1 of this type (servers get the key), "
                         "or use NTS")
    ap.add_argument("--all", action="store_true",
                    help="every kind of request in turn: plain, md5, sha1, aes128, nts")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON ('-' = stdout)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or not 0.2 <= args.step <= 30:
        ap.error("--rounds >= 1 and 0.2 <= --step <= 30")

    specs: list[ServerSpec] = []
    for name in [n.strip() for n in args.servers.split(",") if n.strip()]:
        if name not in BUILTIN:
            ap.error(f"unknown server {name!r}; known: {', '.join(BUILTIN)}")
        specs.append(BUILTIN[name])
    specs += args.extra_server
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        ap.error("duplicate server names")

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)

    build_loadgen()
    LOADGEN_OPTS[:] = ["--spin-us", str(args.spin_us)]
    modes = list(MODES) if args.all else [args.auth or "plain"]
    if "cpython-minimal" in names and modes != ["plain"]:
        ap.error("--auth/--all: cpython-minimal has no keys")
    if "nts" in modes and set(names) - {"chronyd", "pyntpd"}:
        ap.error("--auth nts/--all: only chronyd and pyntpd")
    pin = Pinning.make(args.server_cpu, args.client_cpu)
    cfg = SearchConfig(args.step, args.loss, args.min_rate, args.max_rate, args.batch)
    t0 = time.monotonic()
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pki-") as pki_dir:
        for mode in modes:
            set_mode(mode, Path(pki_dir))
            print(f"== {mode} requests ==")
            rounds = run_rounds(args, specs, pin, cfg)
            summary = summarise(rounds, names)
            rat = ratios(rounds, names, args.reference)
            print_report(summary, rat, args.reference, args)
            results[mode] = {"summary": summary, "ratios_vs_" + args.reference: rat,
                             "rounds": rounds}
    if len(modes) > 1:
        print_overview(results, args.reference)
    print(f"wall time {time.monotonic() - t0:.0f}s")
    if args.json:
        doc = {
            "config": {k: v for k, v in vars(args).items() if k != "extra_server"}
            | {"extra_server": [s.note for s in args.extra_server]},
            **(results if len(modes) > 1 else results[modes[0]]),
        }
        text = json.dumps(doc, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0 if all("error" not in s for r in results.values()
                    for s in r["summary"].values()) else 1


MODES = ("plain", "md5", "sha1", "aes128", "nts")


def set_mode(mode: str, pki_dir: Path) -> None:
    """Plain requests, requests signed with key 1 of a type, or NTS (a test PKI)."""
    global AUTH, NTS_PKI
    AUTH, NTS_PKI = None, None
    if mode == "nts":
        from tests.ntscerts import make_pki

        NTS_PKI = make_pki(pki_dir)
    elif mode != "plain":
        ntp_type, chrony_type, size = AUTH_TYPES[mode]
        AUTH = (ntp_type, chrony_type, os.urandom(size))


def run_rounds(
    args: Any, specs: list[ServerSpec], pin: Pinning, cfg: SearchConfig
) -> list[dict[str, Result]]:
    rounds: list[dict[str, Result]] = []
    prev: dict[str, float] = {}
    for rnd in range(args.rounds):
        this: dict[str, Result] = {}
        for spec in specs:
            start = prev.get(spec.name, args.start_rate)
            factor = 1.5 if spec.name not in prev else 1.15
            try:
                res = measure_server(
                    spec,
                    pin,
                    cfg,
                    start,
                    factor,
                    args.latency_rate,
                    args.latency_duration,
                    args.sync_timeout,
                )
            except (RefDaemonError, TimeoutError, RuntimeError, OSError) as e:
                res = {"server": spec.name, "error": str(e)}
                print(
                    f"round {rnd + 1}: {spec.name}: ERROR {str(e).splitlines()[0]}", file=sys.stderr
                )
            else:
                if res["max_rate"]:
                    prev[spec.name] = res["max_rate"]
                lat = res["latency"]["latency"]
                print(
                    f"round {rnd + 1}: {spec.name:<16} max {res['max_rate']:>9,.0f}/s  "
                    f"delay p50 {lat['delay_p50_us']:.1f}us  ({res['seconds']:.0f}s)",
                    file=sys.stderr,
                )
            this[spec.name] = res
        rounds.append(this)
    return rounds


def print_overview(results: dict[str, Result], ref: str) -> None:
    """One table of every mode: each server's max rate, the ratio to the reference, and
    RTT - (t3 - t2) p50 at 10k/s one by one and at 10/50/90% of each server's max rate."""
    print()
    print(f"overview (medians; ratio = server / {ref}; delay = RTT - (t3 - t2) p50, us)")
    loads = [f"{x:.0%}" for x in HONESTY_LOADS]
    head = (f"{'requests':<8} {'server':<10} {'max rate/s':>11} {'ratio':>6} {'10k/s':>7} "
            + " ".join(f"{'@' + load:>7}" for load in loads) + "  delay ratios")
    print(head)
    print("-" * len(head))
    for mode, r in results.items():
        rat = r["ratios_vs_" + ref]
        for name, s in r["summary"].items():
            if "error" in s:
                print(f"{mode:<8} {name:<10} error: {s['error'].splitlines()[0][:70]}")
                continue
            ratio = rat.get(name, {})
            delays = " ".join(
                f"{fmt(s['honesty'].get(load, {}).get('delay_p50_us'), '.1f'):>7}"
                for load in loads)
            ratios_text = ""
            if ratio:
                ratios_text = " ".join(
                    [fmt(ratio["delay_p50"], ".2f")]
                    + [fmt(ratio["honesty_p50"].get(load), ".2f") for load in loads])
            print(f"{mode:<8} {name:<10} {fmt(s['max_rate'], ',.0f'):>11} "
                  f"{fmt(ratio.get('rate'), '.2f') if ratio else '':>6} "
                  f"{fmt(s['delay_p50_us'], '.1f'):>7} {delays}  {ratios_text}")


if __name__ == "__main__":
    sys.exit(main())
