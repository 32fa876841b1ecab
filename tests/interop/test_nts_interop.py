"""NTS (RFC 8915) with chronyd and ntpsec, both directions: pyntpd's NTS client against their
NTS servers, and their NTS clients against pyntpd's. The tests make a CA and a leaf for
127.0.0.1 / localhost; nothing leaves loopback or the test's own network namespace."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import refdaemons
from refdaemons import ChronyClient, ChronyServer, ManagedProcess, NetNamespace
from tests.ntscerts import Pki, make_pki
from tests.support import LOCAL_CONF, Pyntpd, config_file

pytestmark = pytest.mark.interop

Require = Callable[..., dict[str, str]]


@pytest.fixture
def pki() -> Iterator[Pki]:
    with tempfile.TemporaryDirectory(prefix="nts-pki-") as tmp:
        yield make_pki(Path(tmp))


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def synced_stratum(d: Pyntpd, timeout: float = 40.0) -> int:
    match = d.wait_synced(timeout)
    assert match[1] == "127.0.0.1", match[0]
    return int(match[3])


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
            assert synced_stratum(d) == 6
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


def ntpsec_conf(work: Path, extra: str) -> Path:
    conf = work / "ntp.conf"
    conf.write_text(f"tos orphan 6 orphanwait 1\nrestrict default\ndisable kernel\n"
                    f"driftfile {work / 'drift'}\nstatsdir {work}/\nlogfile {work / 'ntpd.log'}\n"
                    "statistics peerstats\nfilegen peerstats file peerstats type none enable\n"
                    f"{extra}")
    return conf


def test_pyntpd_gets_authenticated_time_from_ntpsec_nts(require: Require, netns: NetNamespace,
                                                        pki: Pki, tmp_path: Path) -> None:
    """ntpsec serves NTP on 123 and NTS-KE on 4460 only: both run in the test's namespace."""
    require("ntpsec-ntpd", "setpriv")
    conf = ntpsec_conf(tmp_path, f"nts enable\nnts cert {pki.cert}\nnts key {pki.key}\n"
                                 f"nts cookie {tmp_path / 'nts-keys'}\n")
    ntpsec = ManagedProcess(netns.wrap(refdaemons.ntpsec_ntpd_argv(conf, tmp_path / "pid")),
                            tmp_path / "ntpd.out")
    client = (f"nts ca {pki.ca}\nrestrict default\n"
              "server 127.0.0.1 nts iburst minpoll 3 maxpoll 3\n")
    with ntpsec, config_file(client) as path, Pyntpd("-c", path, wrap=netns.wrap) as d:
        assert synced_stratum(d, timeout=60.0) == 7
        assert "NTS" in d.output()


@contextmanager
def linked_namespaces() -> Iterator[tuple[NetNamespace, NetNamespace]]:
    """Two namespaces joined by a veth pair (10.123.0.1 <-> 10.123.0.2): ntpsec's ntpd and
    pyntpd both insist on UDP port 123, so they cannot share one."""
    refdaemons.require("netns")
    with NetNamespace() as server, NetNamespace() as client:
        holder = client.path.split("/")[2]
        for argv in (["ip", "link", "add", "nts0", "type", "veth", "peer", "name", "nts1"],
                     ["ip", "link", "set", "nts1", "netns", holder],
                     ["ip", "addr", "add", f"{SERVER_ADDRESS}/24", "dev", "nts0"],
                     ["ip", "link", "set", "nts0", "up"]):
            server.run(argv, timeout=5.0, check=True)
        for argv in (["ip", "addr", "add", f"{CLIENT_ADDRESS}/24", "dev", "nts1"],
                     ["ip", "link", "set", "nts1", "up"]):
            client.run(argv, timeout=5.0, check=True)
        yield server, client


SERVER_ADDRESS = "10.123.0.1"
CLIENT_ADDRESS = "10.123.0.2"


def test_ntpsec_nts_client_authenticates_pyntpd(require: Require, tmp_path: Path) -> None:
    require("ntpsec-ntpd", "setpriv")
    pki = make_pki(tmp_path / "pki", addresses=(SERVER_ADDRESS,))
    server = f"{LOCAL_CONF}nts enable cert {pki.cert} key {pki.key} cookie {tmp_path / 'k'}\n"
    work = tmp_path / "ntpsec"
    work.mkdir()
    conf = ntpsec_conf(work, f"nts ca {pki.ca}\nserver {SERVER_ADDRESS} nts iburst minpoll 3 "
                             "maxpoll 3\n")
    with linked_namespaces() as (server_ns, client_ns), config_file(server) as path, \
            Pyntpd("-c", path, port=123, wrap=server_ns.wrap) as d:
        ntpsec = ManagedProcess(client_ns.wrap(refdaemons.ntpsec_ntpd_argv(conf, work / "pid")),
                                work / "ntpd.out")
        with ntpsec:
            def authenticated() -> str | None:
                # peerstats: day second address status-word ...; the status word's
                # "authentic" bit (0x2000) is set once a reply verified (ntpq cannot talk to
                # ntpsec's ntpd on this machine, so its own statistics are the witness).
                stats = work / "peerstats"
                text = stats.read_text() if stats.exists() else ""
                for line in text.splitlines():
                    fields = line.split()
                    if len(fields) > 3 and fields[2] == SERVER_ADDRESS \
                            and int(fields[3], 16) & 0x2000:
                        return line
                return None

            try:
                refdaemons.poll_until(authenticated, 40.0, "ntpsec to authenticate pyntpd",
                                      interval=0.2)
            except TimeoutError:
                raise AssertionError(f"{d.output()}\n"
                                     f"{(work / 'ntpd.log').read_text()[-3000:]}") from None
