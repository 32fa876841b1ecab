"""pyntpd (observing the clock, never adjusting it) synchronises from chronyd and ntpsec."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import refdaemons
from refdaemons import ChronyServer, ManagedProcess, NetNamespace
from tests.support import REPO, Pyntpd, config_file, free_udp_port, query

pytestmark = pytest.mark.interop

Require = Callable[..., dict[str, str]]
def client_conf(*servers: str) -> str:
    return "".join(f"server {s} iburst minpoll 4 maxpoll 4\n" for s in servers) + \
        "restrict default\n"


def test_synchronises_from_chronyd(require: Require) -> None:
    require("chronyd", "chronyc")
    with ChronyServer(stratum=8) as server, \
            config_file(client_conf(f"127.0.0.1 port {server.port}")) as conf, \
            Pyntpd("-c", conf) as d:
        m = d.wait_synced()
        address, stratum, offset = m[1], int(m[3]), float(m[4])
        h = query(d.port).header
    assert (address, stratum) == ("127.0.0.1", 9)
    assert abs(offset) < 100e-6  # same host, same clock
    assert (h.stratum, h.refid, h.leap) == (9, bytes([127, 0, 0, 1]), 0)


def test_synchronises_from_ntpsec(require: Require, netns: NetNamespace) -> None:
    """ntpsec serves only on port 123, so it runs in a namespace of the test's own. With no
    upstream it serves as an orphan (its local refclock never becomes selectable)."""
    require("ntpsec-ntpd", "setpriv")
    with tempfile.TemporaryDirectory(prefix="ntpsec-") as tmp:
        work = Path(tmp)
        conf = work / "ntp.conf"
        conf.write_text("tos orphan 6 orphanwait 1\nrestrict default\ndisable kernel\n"
                        f"driftfile {work / 'drift'}\nstatsdir {work}\n")
        ntpsec = ManagedProcess(netns.wrap(refdaemons.ntpsec_ntpd_argv(conf, work / "pid")),
                                work / "ntpd.log")
        with ntpsec, config_file(client_conf("127.0.0.1")) as client, \
                Pyntpd("-c", client, wrap=netns.wrap) as d:
            m = d.wait_synced(timeout=60.0)
            address, stratum, offset = m[1], int(m[3]), float(m[4])
    assert (address, stratum) == ("127.0.0.1", 7)
    assert abs(offset) < 100e-6


def test_a_liar_among_three_honest_servers_is_a_falseticker(require: Require) -> None:
    require("chronyd", "chronyc")
    liar_port = free_udp_port()
    liar = subprocess.Popen([sys.executable, "-m", "tests.liar", str(liar_port), "0.050"],
                            cwd=REPO)
    try:
        with ChronyServer(stratum=3, name="a") as a, ChronyServer(stratum=3, name="b") as b, \
                ChronyServer(stratum=3, name="c") as c:
            servers = [f"127.0.0.1 port {s.port}" for s in (a, b, c)]
            with config_file(client_conf(*servers, f"127.0.0.1 port {liar_port}")) as conf, \
                    Pyntpd("-c", conf) as d:
                d.wait_for_log(f"127.0.0.1 port {liar_port} is a falseticker", timeout=60.0)
                # Before the liar is outvoted, the first server to answer may be followed.
                m = d.wait_synced(last=True)
                stratum, offset = int(m[3]), float(m[4])
    finally:
        liar.terminate()
        liar.wait(10)
    assert stratum == 4 and abs(offset) < 1e-3
