"""ntpsec's ntpq against pyntpd (mode 6), in a network namespace: ntpq only speaks to port 123."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable

import pytest
from refdaemons import ChronyServer, NetNamespace, find_ntpq, ntpq_query
from tests.support import SEED, Pyntpd, config_file

pytestmark = pytest.mark.interop

Require = Callable[..., dict[str, str]]


def ntpq(netns: NetNamespace, *args: str) -> str:
    return ntpq_query(netns, *args, timeout=20)


def test_ntpq_shows_peers_system_variables_and_mrulist(require: Require,
                                                       netns: NetNamespace) -> None:
    require("ntpq", "chronyd", "chronyc")
    conf_text = ("server 127.0.0.1 port 10123 iburst minpoll 4 maxpoll 4\n"
                 "server 127.127.1.0\nfudge 127.127.1.0 stratum 10\nrestrict default\n")
    with ChronyServer(stratum=8, port=10123, bind="127.0.0.1", netns=netns), \
            config_file(conf_text) as conf, Pyntpd("-c", conf, port=123, wrap=netns.wrap) as d:
        d.wait_synced()
        peers = ntpq(netns, "-pn")
        variables = ntpq(netns, "-c", "rv")
        associations = ntpq(netns, "-c", "as")
        mru = ntpq(netns, "-n", "-c", "mrulist")
    chrony_line = next(line for line in peers.splitlines() if "127.0.0.1" in line)
    assert chrony_line.startswith("*") and chrony_line.split()[2] == "8"
    assert any("LOCAL(0)" in line or "127.127.1.0" in line for line in peers.splitlines())
    assert "stratum=9" in variables and "version=\"pyntpd" in variables
    assert "sys.peer" in associations
    assert "127.0.0.1" in mru


def test_ntpq_on_the_seed_config_shows_the_local_clock_selected(require: Require,
                                                                netns: NetNamespace) -> None:
    require("ntpq")
    with Pyntpd("-c", str(SEED / "ntp.conf"), port=123, wrap=netns.wrap):
        peers = ntpq(netns, "-pn")
        variables = ntpq(netns, "-c", "rv")
    local = next(line for line in peers.splitlines() if "LOCAL(0)" in line)
    assert local.startswith("*") and ".LOCL." in local and local.split()[2] == "10"
    assert "stratum=11" in variables and "refid=LOCL" in variables


def test_restrict_noquery_silences_ntpq(require: Require, netns: NetNamespace) -> None:
    require("ntpq")
    ntpq_path = find_ntpq()
    assert ntpq_path is not None
    with config_file("server 127.127.1.0\nrestrict default noquery\n") as conf, \
            Pyntpd("-c", conf, port=123, wrap=netns.wrap):
        result = netns.run([ntpq_path, "-c", "rv", "127.0.0.1"], timeout=30)
    assert "stratum=" not in result.stdout


SEND_FROM_MANY = textwrap.dedent("""
    import socket, sys
    request = bytes([0x23]) + bytes(47)
    for i in range(int(sys.argv[1])):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((f"127.0.{8 + i // 250}.{1 + i % 250}", 0))
            s.sendto(request, ("127.0.0.1", 123))
""")


def test_ntpq_mrulist_pages_through_hundreds_of_sources(require: Require,
                                                        netns: NetNamespace) -> None:
    # ntpq fetches the list in several requests, each naming the newest entries it has:
    # pyntpd must find them again, whatever the time between the requests.
    require("ntpq")
    with config_file("server 127.127.1.0\nrestrict default\n") as conf, \
            Pyntpd("-c", conf, port=123, wrap=netns.wrap):
        netns.run([sys.executable, "-c", SEND_FROM_MANY, "400"], timeout=30, check=True)
        mru = ntpq(netns, "-n", "-c", "mrulist")
    listed = {line.split()[-1] for line in mru.splitlines() if line.strip()}
    expected = {f"127.0.{8 + i // 250}.{1 + i % 250}" for i in range(400)}
    assert expected <= listed, f"{len(expected - listed)} of 400 sources missing"
