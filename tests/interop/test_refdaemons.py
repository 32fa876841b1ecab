"""Smoke tests of the reference-daemon helpers: chronyd server + client, ntpdig, ntpq."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import refdaemons
from refdaemons import ChronyClient, ChronyServer, NetNamespace

pytestmark = pytest.mark.interop

Require = Callable[..., dict[str, str]]


def test_chronyd_client_reaches_chronyd_server(require: Require) -> None:
    require("chronyd", "chronyc")
    with ChronyServer(stratum=8) as server:
        reply = refdaemons.sntp_query("127.0.0.1", server.port, timeout=1.0)
        assert (reply.mode, reply.stratum, reply.leap) == (4, 8, 0)
        assert server.tracking().stratum == 8

        with ChronyClient([("127.0.0.1", server.port)], minpoll=-4, maxpoll=-4) as client:
            src = client.wait_reachable(timeout=10.0)
            assert src.name == "127.0.0.1"
            assert src.stratum == 8
            selected = client.wait_synced(timeout=10.0)
            assert selected.reach != 0
            tracking = client.tracking()
            assert tracking.stratum == 9
            assert tracking.leap_status == "Normal"
            # same machine, same clock: the measured offset is tiny
            assert abs(selected.measured_offset) < 0.01
    # both daemons were stopped by SIGTERM (chronyd exits 0 on it)
    assert server.last_returncode == 0
    assert client.last_returncode == 0
    assert "Disabled control of system clock" in server.last_log


def test_ntpdig_against_chronyd_in_netns(require: Require, netns: NetNamespace) -> None:
    """ntpdig only speaks to port 123: run chronyd server and client there, in a namespace."""
    require("chronyd", "chronyc", "ntpdig")
    with ChronyServer(stratum=8, port=123, bind="127.0.0.1", netns=netns) as server:
        res = refdaemons.ntpdig_query("127.0.0.1", timeout=2.0, netns=netns)
        assert res.stratum == 8
        assert res.leap == "no-leap"
        assert abs(res.offset) < 0.01

        # a chronyd client of that server, itself serving on 127.0.0.2:123: stratum 9
        with ChronyClient(
            [("127.0.0.1", server.port)],
            port=123,
            bind="127.0.0.2",
            allow=("127.0.0.0/8",),
            netns=netns,
        ) as client:
            client.wait_synced(timeout=10.0)
            res9 = refdaemons.ntpdig_query("127.0.0.2", timeout=2.0, netns=netns)
            assert res9.stratum == 9
            assert res9.ip == "127.0.0.2"


def test_ntpdig_refuses_other_ports() -> None:
    with pytest.raises(ValueError, match="port 123"):
        refdaemons.ntpdig_query("127.0.0.1", port=12345)


def test_refuses_non_loopback_targets() -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        refdaemons.sntp_query("192.0.2.1", 123)


def test_chronyc_parsers() -> None:
    rows = refdaemons.parse_chronyc_sources(
        "^,*,127.0.0.1,8,-4,377,0,0.000000149,0.000000169,0.000003717\n"
        "^,?,127.0.0.2,0,-4,0,-,0.0,0.0,0.0\n"
    )
    assert rows[0].state == "*" and rows[0].reach == 0o377 and rows[0].stratum == 8
    assert not rows[1].reachable and rows[1].last_rx == -1
    t = refdaemons.parse_chronyc_tracking(
        "7F000001,127.0.0.1,9,1795688495.729294779,-0.000002788,0.000000099,0.000000650,"
        "2.285,0.309,7.238,0.000009249,0.000007287,0.1,Normal\n"
    )
    assert t.stratum == 9 and t.leap_status == "Normal" and t.ref_name == "127.0.0.1"


def test_require_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(refdaemons.TOOL_FINDERS, "chronyd", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install-test-deps"):
        refdaemons.require("chronyd")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="install-test-deps"):
        refdaemons.require("chronyd")
