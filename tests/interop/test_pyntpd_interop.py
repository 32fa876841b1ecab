"""pyntpd as a server for the reference clients: chronyd and ntpsec's ntpdig."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import refdaemons
from refdaemons import ChronyClient, NetNamespace
from tests.support import LOCAL_CONF, SEED, Pyntpd, config_file

pytestmark = pytest.mark.interop

Require = Callable[..., dict[str, str]]


def test_chronyd_selects_pyntpd_serving_the_seed_config(require: Require) -> None:
    require("chronyd", "chronyc")
    with Pyntpd("-c", str(SEED / "ntp.conf")) as d, \
            ChronyClient([("127.0.0.1", d.port)], minpoll=-4, maxpoll=-4) as client:
        source = client.wait_reachable(timeout=15.0)
        assert source.stratum == 11
        selected = client.wait_synced(timeout=15.0)
        assert selected.reach != 0 and abs(selected.measured_offset) < 0.01
        assert client.tracking().stratum == 12


def test_chronyd_accepts_pyntpd_over_ipv6(require: Require) -> None:
    require("chronyd", "chronyc")
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as d, \
            ChronyClient([("::1", d.port)], minpoll=-4, maxpoll=-4, allow=()) as client:
        assert client.wait_reachable(timeout=15.0).stratum == 11


def test_chronyd_sees_unsynchronised_pyntpd_as_unusable(require: Require) -> None:
    require("chronyd", "chronyc")
    with config_file("restrict default\n") as conf, Pyntpd("-c", conf) as d, \
            ChronyClient([("127.0.0.1", d.port)], minpoll=-4, maxpoll=-4) as client, \
            pytest.raises(TimeoutError):
        client.wait_synced(timeout=3.0)


def test_ntpdig_gets_a_valid_reply_from_pyntpd(require: Require, netns: NetNamespace) -> None:
    require("ntpdig")
    with Pyntpd("-c", str(SEED / "ntp.conf"), port=123, wrap=netns.wrap):
        result = refdaemons.ntpdig_query("127.0.0.1", timeout=2.0, netns=netns)
    assert result.stratum == 11
    assert result.leap == "no-leap"
    assert abs(result.offset) < 0.01
