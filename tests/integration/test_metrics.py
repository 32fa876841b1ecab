"""pyntpd --metrics as a real process: counters move exactly with the traffic, /status is the
same state as JSON, bad HTTP is answered and counted, and bad flags or a taken port are
clear errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from pyntpd.proto.packet import decode
from tests.support import Pyntpd, client_request, config_file, exchange, free_udp_port

RATE_LIMITED_CONF = """\
server 127.127.1.0
fudge 127.127.1.0 stratum 10
restrict default limited kod
discard average 3 minimum 2
"""


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
        assert reply.status == 200
        return reply.read().decode()


def samples(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def raw_http(port: int, data: bytes, timeout: float = 15.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def daemon():
    metrics_port = free_tcp_port()
    with config_file(RATE_LIMITED_CONF) as path, \
            Pyntpd("-c", path, "--metrics", f"127.0.0.1:{metrics_port}") as d:
        d.metrics_port = metrics_port  # type: ignore[attr-defined]
        yield d


def test_counters_move_exactly_with_the_traffic(daemon):
    before = samples(scrape(daemon.metrics_port))
    served = exchange(daemon.port, client_request())
    kiss = exchange(daemon.port, client_request())  # within `discard minimum`: over the rate
    exchange(daemon.port, b"\x23" * 20, timeout=0.3)  # too short: no reply
    exchange(daemon.port, b"\x17" + b"\0" * 47, timeout=0.3)  # mode 7: never answered
    assert served is not None and decode(served).header.stratum == 11
    assert kiss is not None and decode(kiss).header.refid == b"RATE"
    after = samples(scrape(daemon.metrics_port))

    def moved(key: str) -> float:
        return after[key] - before[key]

    assert moved("ntp_server_packets_received_total") == 4
    assert moved("ntp_server_packets_served_total") == 1
    assert moved('ntp_server_packets_dropped_total{reason="rate_limited"}') == 1
    assert moved('ntp_server_packets_dropped_total{reason="too_short"}') == 1
    assert moved('ntp_server_packets_dropped_total{reason="mode7"}') == 1
    assert moved('ntp_server_kod_sent_total{code="RATE"}') == 1
    assert moved('ntp_server_kod_sent_total{code="DENY"}') == 0
    assert moved("ntp_server_rate_limited_total") == 1
    assert after["ntp_server_mru_entries"] >= 1


def test_system_and_source_metrics_of_the_local_clock(daemon):
    values = samples(scrape(daemon.metrics_port))
    assert values["ntp_system_stratum"] == 11
    assert values["ntp_system_synchronised"] == 1
    assert values['ntp_system_refid_info{refid="LOCL"}'] == 1
    local = 'address="127.127.1.0",name="LOCAL(0)",port="0"'
    assert values[f"ntp_source_reach{{{local}}}"] == 255
    assert values[f'ntp_source_selected{{{local},tally="sys.peer"}}'] == 1


def test_status_json_has_stratum_offset_and_sources(daemon):
    doc = json.loads(scrape(daemon.metrics_port, "/status"))
    assert doc["system"]["stratum"] == 11 and "offset" in doc["system"]
    assert [s["name"] for s in doc["sources"]] == ["LOCAL(0)"]
    assert doc["server"]["dropped"]["rate_limited"] == 0


def test_bad_http_is_answered_and_counted_and_the_daemon_still_serves(daemon):
    port = daemon.metrics_port
    assert raw_http(port, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    oversized = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
    assert raw_http(port, oversized).startswith(b"HTTP/1.1 431 ")
    with pytest.raises(urllib.error.HTTPError) as info:
        scrape(port, "/nope")
    assert info.value.code == 404
    started = time.monotonic()
    # Slowloris: half a request head, then nothing; the daemon gives up after its timeout.
    assert raw_http(port, b"GET /metrics HTTP/1.1\r\n").startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 10
    values = samples(scrape(port))
    for outcome in ("bad_request", "too_large", "not_found", "timeout"):
        assert values[f'ntp_metrics_http_requests_total{{outcome="{outcome}"}}'] == 1
    assert decode(exchange(daemon.port, client_request()) or b"").header.stratum == 11


def run_pyntpd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyntpd.cli.pyntpd", "--observe", "-n", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("value", "message"), [
    ("localhost:9975", "'localhost' is not an IP address"),
    ("::1:9975", "put an IPv6 address in brackets"),
    ("127.0.0.1:0", "port 0 is outside 1-65535"),
    ("[::1]9975", "expected [IPV6]:PORT"),
])
def test_bad_metrics_value_is_a_usage_error(value, message):
    result = run_pyntpd("--metrics", value)
    assert result.returncode == 2
    assert "pyntpd: argument --metrics: " in result.stderr and message in result.stderr


def test_metrics_port_in_use_is_a_clear_start_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with config_file(RATE_LIMITED_CONF) as path:
            result = run_pyntpd("-c", path, "--port", str(free_udp_port()),
                                "--metrics", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert (f"cannot serve metrics on 127.0.0.1:{port} (--metrics): Address already in use"
            in result.stderr)


def test_status_socket_serves_json_and_is_removed_at_exit(tmp_path):
    path = tmp_path / "pyntpd.status"
    with config_file(RATE_LIMITED_CONF) as conf, \
            Pyntpd("-c", conf, "--status-socket", str(path)) as d:
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(path))
            data = b"".join(iter(lambda: s.recv(65536), b""))
        assert json.loads(data)["system"]["stratum"] == 11
        assert d.stop() == 0
    assert not path.exists()
