"""pyntpd under a long-running benchmark (bench/soak.py, bench/flood.py).

The daemon is started the way bench/serve.py starts servers (pinned with taskset, without
CAP_SYS_TIME, ``--observe``), with a given ntp.conf and the metrics endpoint, and is read from
outside only: its own counters (``/status``), the RSS and CPU time of its process tree
(/proc), and unhandled exceptions in its log.  Targets are evaluated by pure functions so the
tests can check their logic without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import serve  # noqa: E402
from serve import (  # noqa: E402
    HOST,
    Pinning,
    RunningServer,
    ServerSpec,
    _all_cpu,
    _descendants,
    pyntpd_exe,
    refdaemons,
)

Result = dict[str, Any]

# Log lines that betray an exception nobody handled (asyncio's "Exception in callback",
# logging.exception's traceback, a crash).
_PROBLEM = re.compile(r"traceback|exception", re.IGNORECASE)


def free_tcp_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def proc_status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def udp_rcvbuf_errors() -> int:
    """Datagrams the kernel dropped because a UDP socket's receive buffer was full (all
    sockets of the machine: /proc/net/snmp RcvbufErrors)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    names, values = rows[0], rows[1]
    return int(values[names.index("RcvbufErrors")])


class BenchDaemon:
    """pyntpd with ``config(workdir) -> ntp.conf text`` and ``--metrics`` on a free port."""

    def __init__(
        self,
        name: str,
        config: Callable[[Path], str],
        pin: Pinning,
        sync_timeout: float = 20.0,
    ) -> None:
        self.metrics_port = free_tcp_port()

        def make(port: int, workdir: Path) -> list[str]:
            conf = workdir / "ntp.conf"
            conf.write_text(config(workdir))
            return [
                str(pyntpd_exe()), "-n", "--observe", "--port", str(port), "-c", str(conf),
                "--metrics", f"{HOST}:{self.metrics_port}",
            ]

        self.server = RunningServer(ServerSpec(name, make), pin, sync_timeout)
        try:
            refdaemons.poll_until(self._status_or_none, 10.0, "the metrics endpoint", 0.05)
        except BaseException:
            self.server.stop()
            raise

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    def alive(self) -> bool:
        return self.server.proc.alive()

    def status(self) -> Result:
        """The daemon's /status document (its own counters)."""
        url = f"http://{HOST}:{self.metrics_port}/status"
        with urllib.request.urlopen(url, timeout=5) as reply:
            doc: Result = json.load(reply)
        return doc

    def _status_or_none(self) -> Result | None:
        try:
            return self.status()
        except OSError:
            return None

    def _tree(self) -> set[int]:
        return _descendants(_all_cpu(), self.pid)

    def rss_kib(self) -> int:
        """Resident memory of the process tree now."""
        return sum(proc_status_kib(p, "VmRSS") for p in self._tree())

    def peak_rss_kib(self) -> int:
        """The kernel's high-water mark of resident memory, summed over the tree."""
        return sum(proc_status_kib(p, "VmHWM") for p in self._tree())

    def cpu(self) -> float:
        return self.server.cpu()

    def log_problems(self) -> list[str]:
        """Log lines that show an unhandled exception (read before stop(), which removes it)."""
        return [ln for ln in self.server.proc.log_text().splitlines() if _PROBLEM.search(ln)]

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> BenchDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def counter_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """after - before for the daemon's ``server`` counters (nested dicts of ints)."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, Mapping):
            out[key] = counter_delta(before.get(key, {}), value)
        elif isinstance(value, int) and key != "mru_entries":
            out[key] = value - int(before.get(key, 0))
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Target:
    name: str
    want: str
    value: str
    ok: bool


def print_report(title: str, rows: Iterable[tuple[str, str]], targets: list[Target]) -> None:
    rows = list(rows)
    width = max(len(label) for label, _ in rows) if rows else 10
    print()
    print(title)
    print("-" * len(title))
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print()
    print(f"{'target':<{width}}  {'wanted':<14} {'measured':<16} result")
    for t in targets:
        print(f"{t.name:<{width}}  {t.want:<14} {t.value:<16} {'PASS' if t.ok else 'FAIL'}")


def document(
    config: Mapping[str, Any], figures: Mapping[str, Any], targets: list[Target]
) -> Result:
    return {
        "config": dict(config),
        "figures": dict(figures),
        "targets": [asdict(t) for t in targets],
        "passed": all(t.ok for t in targets),
    }


def write_json(path: str, doc: Result) -> None:
    text = json.dumps(doc, indent=2, default=str)
    if path == "-":
        print(text)
        return
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def drops_text(dropped: Mapping[str, int]) -> str:
    shown = [f"{reason} {n}" for reason, n in sorted(dropped.items(), key=lambda kv: -kv[1]) if n]
    return ", ".join(shown) or "none"


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every daemon benchmark has: pinning and --json."""
    ap = argparse.ArgumentParser(
        description=doc.split("\n\n")[0] if doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON ('-' = stdout)")
    return ap


def prepare(args: argparse.Namespace) -> Pinning:
    """SIGTERM unwinds (so the daemon is stopped), the load generator is built."""

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    serve.build_loadgen()
    return Pinning.make(args.server_cpu, args.client_cpu)


def common_rows(fig: Mapping[str, Any]) -> list[tuple[str, str]]:
    cpu = fig["cpu_us_per_datagram"]
    busy = "  (machine busy: figures less trustworthy)" if fig["foreign_cpu"] > 0.05 else ""
    return [
        ("UDP receive-buffer drops", f"{fig['udp_rcvbuf_errors']:,} (kernel, whole machine: "
                                     "datagrams lost before the daemon could read them)"),
        ("cpu per datagram", "-" if cpu is None else f"{cpu:.2f} us"),
        ("unhandled exceptions", str(fig["unhandled_exceptions"])),
        ("foreign CPU load", f"{fig['foreign_cpu']:.0%} of all CPUs{busy}"),
    ]


def finish(
    title: str,
    rows: list[tuple[str, str]],
    fig: Mapping[str, Any],
    targets: list[Target],
    args: argparse.Namespace,
) -> int:
    """Print the report (and the log lines behind any exception), write --json; exit status."""
    print_report(title, rows + common_rows(fig), targets)
    for line in fig["exception_lines"]:
        print(f"  log: {line}")
    if args.json:
        write_json(args.json, document(vars(args), fig, targets))
    return 0 if all(t.ok for t in targets) else 1


__all__ = [
    "HOST",
    "BenchDaemon",
    "Pinning",
    "Target",
    "counter_delta",
    "document",
    "drops_text",
    "free_tcp_port",
    "print_report",
    "proc_status_kib",
    "serve",
    "udp_rcvbuf_errors",
    "write_json",
]
