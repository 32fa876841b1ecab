"""pyntpd's /metrics checked by the real tools: Debian's `promtool check metrics` accepts the
text, and a Prometheus server started here on loopback scrapes it and answers a query for a
value pyntpd exports. Four servers on one address and different ports are four series."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from tests.integration.test_metrics import free_tcp_port, scrape
from tests.proto.test_grafana_dashboard import DASHBOARD
from tests.support import Pyntpd, config_file, free_udp_port

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    (PROMTOOL is None or PROMETHEUS is None) and os.environ.get("CI") != "true",
    reason="Debian's prometheus package is not installed (bash scripts/install-test-deps)")


def four_ports_conf() -> tuple[str, list[int]]:
    # Nobody answers on these ports: the associations exist and are exported all the same.
    ports = [free_udp_port() for _ in range(4)]
    lines = [f"server 127.0.0.1 port {p} minpoll 4" for p in ports]
    return "\n".join([*lines, "server 127.127.1.0", "fudge 127.127.1.0 stratum 10", ""]), ports


@pytest.fixture(scope="module")
def daemon() -> Iterator[tuple[Pyntpd, int, list[int]]]:
    text, ports = four_ports_conf()
    metrics_port = free_tcp_port()
    with config_file(text) as path, \
            Pyntpd("-c", path, "--metrics", f"127.0.0.1:{metrics_port}") as d:
        yield d, metrics_port, ports


@needs_prometheus
def test_promtool_accepts_the_exposition(daemon):
    assert PROMTOOL is not None, "promtool is missing (scripts/install-test-deps)"
    _, metrics_port, _ = daemon
    text = scrape(metrics_port)
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, text=True,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def _query(prom_port: int, expr: str) -> list[dict]:
    url = (f"http://127.0.0.1:{prom_port}/api/v1/query?"
           + urllib.parse.urlencode({"query": expr}))
    with urllib.request.urlopen(url, timeout=10) as reply:
        doc = json.load(reply)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def _tail(path: str) -> str:
    with open(path) as f:
        return f.read()[-3000:]


@pytest.fixture(scope="module")
def prometheus(daemon) -> Iterator[int]:
    """A Prometheus server on loopback scraping the daemon every second; its HTTP port,
    once it has scraped the daemon successfully with all four servers in the scrape."""
    if PROMETHEUS is None:
        message = "Debian's prometheus package is not installed (scripts/install-test-deps)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    _, metrics_port, _ = daemon
    prom_port = free_tcp_port()
    with tempfile.TemporaryDirectory(prefix="pyntpd-prometheus-") as tmp:
        conf = os.path.join(tmp, "prometheus.yml")
        with open(conf, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: pyntpd\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{metrics_port}']\n")
        log_path = os.path.join(tmp, "prometheus.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={tmp}/data",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.5)  # waits for another process's scrape, not for our own logic
                assert proc.poll() is None, _tail(log_path)
                try:
                    up = _query(prom_port, 'up{job="pyntpd"}')
                    reach = _query(prom_port, 'ntp_source_reach{address="127.0.0.1"}')
                except OSError:
                    continue  # not listening yet
                if up and up[0]["value"][1] == "1" and len(reach) == 4:
                    break
            yield prom_port
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


@needs_prometheus
def test_a_real_prometheus_scrapes_pyntpd_and_answers_a_query(daemon, prometheus):
    _, _, ports = daemon
    assert [r["value"][1] for r in _query(prometheus, 'up{job="pyntpd"}')] == ["1"]
    with urllib.request.urlopen(
            f"http://127.0.0.1:{prometheus}/api/v1/targets", timeout=10) as reply:
        targets = json.load(reply)["data"]["activeTargets"]
    assert [t["lastError"] for t in targets] == [""]
    reach = _query(prometheus, 'ntp_source_reach{address="127.0.0.1"}')
    assert sorted(int(r["metric"]["port"]) for r in reach) == sorted(ports)
    assert [r["value"][1] for r in _query(prometheus, "ntp_system_stratum")] == ["11"]


@needs_prometheus
def test_every_dashboard_query_runs_in_prometheus(prometheus):
    # Grafana's variables as an import would fill them in for every instance and source.
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    answered = 0
    for expr in exprs:
        concrete = (expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
                    .replace("$source", ".*"))
        result = _query(prometheus, concrete)  # asserts status == success
        answered += bool(result)
    # Rates of counters that never moved are filtered by "> 0"; the rest answer.
    assert answered >= len(exprs) // 2, answered
