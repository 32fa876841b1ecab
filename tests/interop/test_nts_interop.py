"""NTS (RFC 8915) with chronyd and ntpsec, both directions: pyntpd's NTS client against their
NTS servers, and their NTS clients against pyntpd's. The tests make a CA and a leaf for
127.0.0.1 / localhost; nothing leaves loopback or the test's own network namespace."""

from __future__ import annotations

import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import refdaemons
from refdaemons import ChronyClient, ChronyServer, ManagedProcess, NetNamespace
from tests.ntscerts import Pki, make_pki
from tests.support import LOCAL_CONF, Pyntpd, config_file

pytestmark = pytest.mark.interop

Require = Callable[..., dict[str, str]]
SYNCED = re.compile(r"synchronised to 127\.0\.0\.1(?: port \d+)? \(stratum (\d+)\)")


@pytest.fixture
def pki() -> Iterator[Pki]:
    with tempfile.TemporaryDirectory(prefix="nts-pki-") as tmp:
        yield make_pki(Path(tmp))


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_synced(d: Pyntpd, timeout: float = 40.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = SYNCED.search(d.output())
        if match:
            return int(match.group(1))
        time.sleep(0.1)
    raise AssertionError(f"pyntpd did not synchronise in {timeout}s:\n{d.output()}")


def nts_server_conf(pki: Pki, ke_port: int, cookie: Path) -> str:
    return (f"{LOCAL_CONF}nts enable cert {pki.cert} key {pki.key} cookie {cookie} "
            f"listen 127.0.0.1 port {ke_port}\n")


def chrony_authdata(client: ChronyClient) -> list[str]:
    """chronyc -c authdata (4.3): name, mode, key id, type, key length, last, attempts,
    NAKs, cookies, cookie length."""
    line = client.chronyc("authdata").strip().splitlines()[0]
    return line.split(",")


def test_pyntpd_gets_authenticated_time_from_chronyd_nts(require: Require, pki: Pki
                                                         ) -> None:
    require("chronyd", "chronyc")
    ke_port = free_tcp_port()
    with tempfile.TemporaryDirectory(prefix="chrony-nts-") as dump, \
            ChronyServer(stratum=5, lines=[f"ntsserverkey {pki.key}",
                                           f"ntsservercert {pki.cert}",
                                           f"ntsport {ke_port}", f"ntsdumpdir {dump}"]) \
            as server:
        conf = (f"nts ca {pki.ca}\nrestrict default\n"
                f"server 127.0.0.1 port {server.port} ntsport {ke_port} nts iburst "
                "minpoll 3 maxpoll 3\n")
        with config_file(conf) as path, Pyntpd("-c", path) as d:
            assert wait_synced(d) == 6
            assert "NTS" in d.output()
        stats = server.chronyc("serverstats").strip().split(",")
    # serverstats (4.3): ntp, nke, cmd, ..., authenticated ntp (8th); chronyd's NTS-KE
    # helper processes keep their own count, so "nke" says nothing here.
    assert int(stats[7]) >= 1, stats


def test_chronyd_nts_client_authenticates_pyntpd(require: Require, pki: Pki,
                                                 tmp_path: Path) -> None:
    require("chronyd", "chronyc")
    ke_port = free_tcp_port()
    with config_file(nts_server_conf(pki, ke_port, tmp_path / "nts-keys")) as path, \
            Pyntpd("-c", path) as d, \
            ChronyClient([("127.0.0.1", d.port)],
                         server_options=f"nts ntsport {ke_port}",
                         lines=[f"ntstrustedcerts {pki.ca}",
                                f"ntsdumpdir {tmp_path}"]) as client:
        source = client.wait_synced(timeout=20.0)
        auth = chrony_authdata(client)
        ntpdata = client.chronyc("ntpdata", "127.0.0.1").strip().split(",")
    assert source.stratum == 11
    assert auth[1] == "NTS", auth
    assert int(auth[7]) == 0 and int(auth[8]) > 0, auth  # no NAK, cookies in hand
    assert ntpdata[-7] == "Yes", f"chronyd says the replies were not authenticated: {ntpdata}"
