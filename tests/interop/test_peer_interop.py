"""Authenticated symmetric peers (`peer ... key N`) between pyntpd and chronyd / ntpsec's ntpd.

Both ends send mode 1 from their NTP socket to the other's NTP port, signed with the shared
key. chronyd runs on its own port beside pyntpd; ntpsec's ntpd only uses port 123, so it and
pyntpd each get a network namespace, joined by a veth pair.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import refdaemons
from refdaemons import ChronyServer, ManagedProcess
from test_auth_interop import IDS, KEYS, Require, key_files
from test_nts_interop import CLIENT_ADDRESS, SERVER_ADDRESS, linked_namespaces, ntpsec_conf
from tests.support import Pyntpd, config_file, free_udp_port

pytestmark = pytest.mark.interop


def wait_for(d: Pyntpd, pattern: str, timeout: float) -> re.Match[str]:
    match = d.search_log(pattern, timeout)
    assert match is not None, f"pyntpd never logged {pattern!r} in {timeout}s:\n{d.output()}"
    return match


def pyntpd_peer_conf(ntp_keys: Path, key_id: int, peer: str) -> str:
    return (f"keys {ntp_keys}\ntrustedkey {key_id}\nrestrict default\n"
            f"peer {peer} key {key_id} iburst minpoll 3 maxpoll 3\n")


@pytest.mark.parametrize("key_id", [key for key, *_ in KEYS], ids=IDS)
def test_pyntpd_and_chronyd_peer_and_pyntpd_follows_it(require: Require, key_id: int) -> None:
    require("chronyd", "chronyc")
    pyntpd_port = free_udp_port()
    with key_files() as (ntp_keys, chrony_keys), \
            ChronyServer(stratum=5, lines=[
                f"keyfile {chrony_keys}",
                f"peer 127.0.0.1 port {pyntpd_port} key {key_id} minpoll 0 maxpoll 0"]) as chrony:
        conf = pyntpd_peer_conf(ntp_keys, key_id, f"127.0.0.1 port {chrony.port}")
        with config_file(conf) as path, Pyntpd("-c", path, port=pyntpd_port) as d:
            match = wait_for(d, r"synchronised to 127\.0\.0\.1 port (\d+) \(stratum (\d+)\)",
                             40.0)

            def pyntpd_reachable() -> refdaemons.ChronySource | None:
                return next((s for s in chrony.sources()
                             if s.mode == "=" and s.reachable), None)

            source = refdaemons.poll_until(pyntpd_reachable, 20.0,
                                           "chronyd to hear its peer pyntpd", interval=0.2)
            ntpdata = chrony.chronyc("ntpdata", "127.0.0.1")
            logs = d.output()
    assert (int(match.group(1)), match.group(2)) == (chrony.port, "6")
    assert "WARNING" not in logs and "Traceback" not in logs
    assert source.name == "127.0.0.1"
    # chronyc -c ntpdata (4.3): remote address, refid, remote port, local address, refid,
    # leap, version, mode, stratum, ..., Interleaved, Authenticated, TX/RX stamping, ...
    fields = ntpdata.strip().split(",")
    assert int(fields[2]) == pyntpd_port, "pyntpd's packets leave from its NTP port"
    assert fields[7] == "Symmetric active"
    assert fields[-7] == "Yes", f"chronyd says pyntpd's packets were not authenticated: {ntpdata}"


def test_chronyd_selects_its_peer_pyntpd_when_pyntpd_is_the_better_source(
    require: Require
) -> None:
    """The other way round: pyntpd has the lower stratum (local clock), chronyd follows it."""
    require("chronyd", "chronyc")
    key_id = 3
    pyntpd_port = free_udp_port()
    with key_files() as (ntp_keys, chrony_keys), \
            ChronyServer(stratum=10, lines=[
                f"keyfile {chrony_keys}",
                f"peer 127.0.0.1 port {pyntpd_port} key {key_id} minpoll 0 maxpoll 0"]) as chrony:
        conf = ("server 127.127.1.0\nfudge 127.127.1.0 stratum 3\n"
                + pyntpd_peer_conf(ntp_keys, key_id, f"127.0.0.1 port {chrony.port}"))
        with config_file(conf) as path, Pyntpd("-c", path, port=pyntpd_port):

            def selected() -> refdaemons.ChronySource | None:
                return next((s for s in chrony.sources() if s.mode == "=" and s.state == "*"),
                            None)

            source = refdaemons.poll_until(selected, 30.0, "chronyd to select pyntpd",
                                           interval=0.2)
            # `sources` marks the selection before `tracking` has taken the update.
            tracking = refdaemons.poll_until(
                lambda: (t := chrony.tracking()).stratum == 5 and t, 30.0,
                "chronyd's tracking to follow pyntpd", interval=0.2)
    assert source.stratum == 4
    assert tracking.stratum == 5


def test_chronyd_with_another_key_is_never_heard(require: Require) -> None:
    require("chronyd", "chronyc")
    pyntpd_port = free_udp_port()
    with key_files() as (ntp_keys, chrony_keys), \
            ChronyServer(stratum=5, lines=[
                f"keyfile {chrony_keys}",
                f"peer 127.0.0.1 port {pyntpd_port} key 2 minpoll 0 maxpoll 0"]) as chrony:
        conf = pyntpd_peer_conf(ntp_keys, 1, f"127.0.0.1 port {chrony.port}")
        with config_file(conf) as path, Pyntpd("-c", path, port=pyntpd_port) as d:
            assert d.search_log(r"synchronised to", 6.0) is None
            assert not any(s.reachable for s in chrony.sources())


def test_ntpsec_peers_as_a_client_and_gets_signed_time_from_a_peered_pyntpd(
    require: Require, tmp_path: Path
) -> None:
    """ntpsec has no symmetric mode: its `peer` is an alias of `server` (logged "peer
    deprecated, treated as server") and it drops mode 1 packets. Peered with pyntpd on both
    sides, ntpsec polls pyntpd as a client and gets signed replies; pyntpd's own symmetric
    packets go unanswered, so its association stays unreachable (use `server` on pyntpd's
    side for an ntpsec peer)."""
    require("ntpsec-ntpd", "setpriv")
    key_id = 3  # AES-128-CMAC; the other digests are covered by test_auth_interop
    with key_files() as (ntp_keys, _):
        conf = ntpsec_conf(tmp_path, f"keys {ntp_keys}\ntrustedkey {key_id}\n"
                                     f"peer {CLIENT_ADDRESS} key {key_id} iburst minpoll 3 "
                                     "maxpoll 3\n")
        pyntpd_conf = ("server 127.127.1.0\nfudge 127.127.1.0 stratum 5\n"
                       + pyntpd_peer_conf(ntp_keys, key_id, SERVER_ADDRESS))
        with linked_namespaces() as (ntpsec_ns, pyntpd_ns), config_file(pyntpd_conf) as path:
            ntpsec = ManagedProcess(
                ntpsec_ns.wrap(refdaemons.ntpsec_ntpd_argv(conf, tmp_path / "pid")),
                tmp_path / "ntpd.out")
            with ntpsec, Pyntpd("-c", path, port=123, wrap=pyntpd_ns.wrap) as d:

                def authentic_pyntpd() -> str | None:
                    # peerstats: day second address status-word ...; 0x2000 = authentic
                    stats = tmp_path / "peerstats"
                    for line in (stats.read_text() if stats.exists() else "").splitlines():
                        fields = line.split()
                        if len(fields) > 3 and fields[2] == CLIENT_ADDRESS \
                                and int(fields[3], 16) & 0x2000:
                            return line
                    return None

                refdaemons.poll_until(authentic_pyntpd, 30.0,
                                      "ntpsec to authenticate pyntpd's replies", interval=0.2)
                logs = d.output()
            ntpsec_log = (tmp_path / "ntpd.log").read_text()
    assert f"peer deprecated, treated as server: {CLIENT_ADDRESS}" in ntpsec_log
    assert f"symmetric association with {SERVER_ADDRESS}" in logs
    assert "synchronised to 10.123.0.1" not in logs
