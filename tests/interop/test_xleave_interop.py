"""Interleaved mode (xleave) with chronyd 4.3, both directions, and the kernel's T1."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from refdaemons import ChronyClient, ChronyServer, poll_until
from tests.support import LOCAL_CONF, Pyntpd, config_file

pytestmark = pytest.mark.interop

Require = Callable[..., dict[str, str]]


def chrony_ntpdata(client: ChronyClient) -> dict[str, str]:
    """The fields of `chronyc -c ntpdata` (4.3) a test looks at."""
    fields = client.chronyc("ntpdata", "127.0.0.1").strip().split(",")
    # ..., NTP tests, Interleaved, Authenticated, TX timestamping, RX timestamping,
    # total TX, total RX, total valid RX, total good RX
    return {"interleaved": fields[-8], "authenticated": fields[-7], "valid_rx": fields[-2]}


def chrony_interleaved_served(server: ChronyServer) -> int:
    """chronyc serverstats (4.3): NTP requests answered in interleaved mode."""
    fields = server.chronyc("serverstats").strip().split(",")
    # ntp, nke, cmd, ntp dropped, nke dropped, cmd dropped, log dropped, authenticated ntp,
    # interleaved, timestamps held, span
    return int(fields[8])


def test_chronyd_gets_interleaved_replies_from_pyntpd(require: Require) -> None:
    require("chronyd", "chronyc")
    with config_file(LOCAL_CONF) as path, Pyntpd("-c", path, status=True) as d, \
            ChronyClient([("127.0.0.1", d.port)], minpoll=-2, maxpoll=-2,
                         server_options="xleave") as client:
        client.wait_synced(timeout=20.0)

        def interleaved() -> dict[str, str] | None:
            data = chrony_ntpdata(client)
            return data if data["interleaved"] == "Yes" else None

        poll_until(interleaved, 10.0, "chronyd to report an interleaved response",
                   interval=0.1)
        served = d.status()["server"]["interleaved"]
    assert served["served"] > 0
    assert served["daemon_stamp"] == 0  # every one carried the kernel's transmit stamp


def test_pyntpd_gets_interleaved_replies_from_chronyd(require: Require) -> None:
    require("chronyd", "chronyc")
    with ChronyServer(stratum=5) as server:
        conf = (f"restrict default\nserver 127.0.0.1 port {server.port} iburst minpoll 3 "
                "maxpoll 3 xleave\n")
        with config_file(conf) as path, Pyntpd("-c", path, status=True) as d:
            def interleaved() -> dict | None:
                source = d.source()
                return source if source["interleaved"] >= 3 else None

            # iburst: 8 requests 2 s apart, the third reply the first interleaved one
            source = poll_until(interleaved, 40.0, "pyntpd's interleaved samples",
                                interval=0.2)
            assert d.wait_synced(timeout=10.0)[3] == "6"
        served = chrony_interleaved_served(server)
    assert served >= 3
    assert source["transmit_stamps"]["kernel"] > 0
    assert source["transmit_stamps"]["daemon"] == 0
    assert {k: v for k, v in source["dropped"].items() if v} == {
        "interleaved_exchange_spent": 1}  # the first interleaved reply, after basic ones


def test_pyntpd_client_falls_back_to_basic_with_a_server_without_xleave(
        require: Require) -> None:
    """chronyd with `noclientlog` keeps no timestamps: every reply is basic, and used."""
    require("chronyd", "chronyc")
    with ChronyServer(stratum=5, lines=["noclientlog"]) as server:
        conf = (f"restrict default\nserver 127.0.0.1 port {server.port} iburst minpoll 3 "
                "maxpoll 3 xleave\n")
        with config_file(conf) as path, Pyntpd("-c", path, status=True) as d:
            source = d.wait_source(received=4, timeout=20.0)
        served = chrony_interleaved_served(server)
    assert source["received"] >= 4 and source["interleaved"] == 0
    assert not any(source["dropped"].values())  # every basic reply gave a sample
    assert served == 0
