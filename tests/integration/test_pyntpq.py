"""pyntpq against a running pyntpd on a loopback port: what it prints is what the daemon serves."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import LOCAL_CONF, Pyntpd, client_request, config_file, query


def pyntpq(port: int, *args: str, timeout: float = 2.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyntpd.cli.pyntpq", "--port", str(port),
                           "--timeout", str(timeout), *args, "127.0.0.1"],
                          capture_output=True, text=True, timeout=60)


def pyntpq_json(port: int, *args: str) -> dict[str, object]:
    result = pyntpq(port, "--json", *args)
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


@pytest.fixture(scope="module")
def daemon() -> Iterator[Pyntpd]:
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as d:
        yield d


def test_rv_shows_what_the_daemon_serves_in_mode_4(daemon: Pyntpd) -> None:
    served = query(daemon.port).header
    variables = pyntpq_json(daemon.port, "-c", "rv")["variables"]
    assert isinstance(variables, dict)
    assert (variables["stratum"], variables["leap"], variables["precision"]) == (
        served.stratum, served.leap, served.precision)
    assert variables["refid"] == served.refid.rstrip(b"\0").decode() == "LOCL"


def test_rv_text_starts_with_the_system_status(daemon: Pyntpd) -> None:
    result = pyntpq(daemon.port, "-c", "rv")
    assert result.returncode == 0
    assert result.stdout.startswith("associd=0 status=")
    assert "stratum=11" in result.stdout and "leap=00" in result.stdout


def test_as_lists_the_local_clock_as_system_peer(daemon: Pyntpd) -> None:
    result = pyntpq(daemon.port, "-c", "as")
    rows = result.stdout.splitlines()[3:]
    assert result.returncode == 0 and len(rows) == 1
    assert rows[0].split()[1:3] == ["1", "9600"] and "sys.peer" in rows[0]


def test_peers_show_local0_selected(daemon: Pyntpd) -> None:
    result = pyntpq(daemon.port, "-pn")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["remote", "refid", "st", "t", "when", "poll", "reach", "delay",
                                "offset", "jitter"]
    assert lines[2].startswith("*LOCAL(0)        .LOCL.          10 l ")


def test_peers_json_agrees_with_rv_of_the_system_peer(daemon: Pyntpd) -> None:
    peers = pyntpq_json(daemon.port, "-n", "-p")["peers"]
    system = pyntpq_json(daemon.port, "-c", "rv")["variables"]
    assert isinstance(peers, list) and isinstance(system, dict)
    selected = [p for p in peers if p["tally"] == "*"]
    assert [p["associd"] for p in selected] == [system["peer"]]
    assert selected[0]["stratum"] + 1 == system["stratum"]


def test_mrulist_counts_this_clients_packets(daemon: Pyntpd) -> None:
    # The MRU list is kept per address: a client of its own (127.0.0.2) keeps our mode 6
    # queries out of its count.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
        for _ in range(3):
            s.sendto(client_request(), ("127.0.0.1", daemon.port))
            s.recv(1024)
    entries = pyntpq_json(daemon.port, "-n", "-c", "mrulist")["entries"]
    assert isinstance(entries, list)
    mine = [e for e in entries if (e["addr"], e["port"]) == ("127.0.0.2", port)]
    assert len(mine) == 1 and mine[0]["count"] == 3 and mine[0]["mode"] == 3
    text = pyntpq(daemon.port, "-n", "-c", "mrulist").stdout
    assert any(line.split()[-2:] == [str(port), "127.0.0.2"] for line in text.splitlines())


def send_from_many(port: int, count: int, first: str = "127.0.8.1") -> list[str]:
    """One client request from each of `count` loopback addresses: that many MRU entries."""
    base = int.from_bytes(socket.inet_aton(first), "big")
    addresses = [socket.inet_ntoa((base + i).to_bytes(4, "big")) for i in range(count)]
    for address in addresses:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
            s.sendto(client_request(), ("127.0.0.1", port))
    return addresses


def test_mrulist_pages_through_hundreds_of_sources() -> None:
    # Several READ_MRU pages, each resuming after the newest entry of the last: every source
    # arrives once, whatever the time between the requests.
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as d:
        addresses = send_from_many(d.port, 400)
        query(d.port)  # the daemon has read every request before pyntpq asks
        entries = pyntpq_json(d.port, "-n", "-c", "mrulist")["entries"]
    assert isinstance(entries, list)
    listed = [e["addr"] for e in entries]
    assert set(addresses) <= set(listed) and len(listed) == len(set(listed))


def test_status_says_synchronised_to_the_local_clock(daemon: Pyntpd) -> None:
    result = pyntpq(daemon.port, "--status")
    assert result.returncode == 0
    assert result.stdout.startswith("synchronised to local clock (LOCAL(0)) at stratum 11")


def test_noquery_makes_pyntpq_fail_cleanly() -> None:
    with config_file("server 127.127.1.0\nrestrict default noquery\n") as conf, \
            Pyntpd("-c", conf) as d:
        result = pyntpq(d.port, "-c", "rv", timeout=0.5)
        status = pyntpq(d.port, "--status", timeout=0.5)
    assert result.returncode == 1 and result.stdout == ""
    assert "timed out, nothing received" in result.stderr and "Traceback" not in result.stderr
    assert status.returncode == 2 and status.stdout.startswith("unknown:")
