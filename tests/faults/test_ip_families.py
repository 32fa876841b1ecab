"""Hosts without IPv6 (or without IPv4): serve and poll on the family the host has, say once
which one is missing, never die with a traceback (issue 10, item 6).

Two ways a host lacks IPv6, both run for real:
- a kernel booted with `ipv6.disable=1` has no AF_INET6: socket() fails with EAFNOSUPPORT.
  The daemon runs through a program whose socket.socket raises exactly that for one family
  (harness.without_family), so the real start-up, serving, resolution, NTS-KE and metrics
  code meets the error where the kernel would raise it;
- `net.ipv6.conf.all.disable_ipv6=1`: AF_INET6 exists, `::` binds, but there is no IPv6
  address, so binding `::1` or connecting to an IPv6 address fails with EADDRNOTAVAIL. The
  daemon runs in a network namespace of the test's own with that setting.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pyntpd.daemon.ntsketls import key_exchange
from tests.faults.harness import (
    Upstreams,
    no_traceback,
    program,
    require_root,
    without_family,
    wrapper,
)
from tests.ntscerts import make_pki
from tests.support import LOCAL_CONF, Pyntpd, config_file, free_udp_port, query

NO_IPV6 = "IPv6 is not available on this host (Address family not supported by protocol)"
NO_IPV4 = "IPv4 is not available on this host (Address family not supported by protocol)"


def without(tmp_path: Path, family: str, setup: str = "") -> Callable[[list[str]], list[str]]:
    return wrapper(program(tmp_path, preamble=without_family(family)), setup)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def started_and_failed(daemon: Pyntpd) -> str:
    """Start a daemon that must refuse to start; its output."""
    with pytest.raises(AssertionError, match="pyntpd exited 1") as info:
        daemon.start()
    daemon.stop()
    daemon.cleanup()
    return str(info.value)


# --- a kernel without the family (EAFNOSUPPORT) ------------------------------------------------


def test_without_ipv6_the_daemon_serves_ipv4_and_says_so_once(tmp_path: Path) -> None:
    with config_file(LOCAL_CONF) as conf, \
            Pyntpd("-c", conf, wrap=without(tmp_path, "AF_INET6")) as daemon:
        assert query(daemon.port).header.stratum == 11
        output = daemon.output()
        assert output.count(NO_IPV6) == 1
        assert f"listening on 0.0.0.0 port {daemon.port}" in output
        assert "listening on :: " not in output
        assert daemon.stop() == 0
        no_traceback(daemon.output())


def test_without_ipv4_the_daemon_serves_ipv6_and_says_so_once(tmp_path: Path) -> None:
    with config_file(LOCAL_CONF) as conf, \
            Pyntpd("-c", conf, wrap=without(tmp_path, "AF_INET")) as daemon:
        assert query(daemon.port, host="::1").header.stratum == 11
        output = daemon.output()
        assert output.count(NO_IPV4) == 1
        assert f"listening on :: port {daemon.port}" in output
        assert "listening on 0.0.0.0" not in output
        assert daemon.stop() == 0
        no_traceback(daemon.output())


def test_without_ipv6_every_worker_process_serves_ipv4(tmp_path: Path) -> None:
    with config_file(LOCAL_CONF) as conf, \
            Pyntpd("-c", conf, "--workers", "2", wrap=without(tmp_path, "AF_INET6")) as daemon:
        daemon.wait_for_log("serving from 2 processes")
        for _ in range(8):  # the kernel spreads client ports over both processes
            assert query(daemon.port).header.stratum == 11
        assert daemon.output().count(NO_IPV6) == 1
        assert daemon.stop() == 0
        no_traceback(daemon.output())


def test_without_ipv4_interface_rules_listen_on_the_ipv6_addresses(tmp_path: Path) -> None:
    with config_file(LOCAL_CONF) as conf, \
            Pyntpd("-c", conf, "-I", "lo", wrap=without(tmp_path, "AF_INET")) as daemon:
        assert f"listening on ::1 port {daemon.port}" in daemon.output()
        assert query(daemon.port, host="::1").header.stratum == 11
        assert daemon.stop() == 0
        no_traceback(daemon.output())


def test_without_ipv6_and_with_minus_6_the_start_fails_with_the_reason(tmp_path: Path) -> None:
    with config_file(LOCAL_CONF) as conf:
        output = started_and_failed(Pyntpd("-c", conf, "-6", wrap=without(tmp_path, "AF_INET6")))
    assert "no IP family to serve on (-6): IPv6: Address family not supported" in output
    no_traceback(output)


def test_without_ipv6_an_ipv6_server_address_is_reported_once_and_not_polled(
        tmp_path: Path) -> None:
    conf_text = f"server ::1 port {free_udp_port()} iburst\n{LOCAL_CONF}"
    with config_file(conf_text) as conf, \
            Pyntpd("-c", conf, wrap=without(tmp_path, "AF_INET6")) as daemon:
        daemon.wait_for_log("::1 is an IPv6 address, and IPv6 is not used here")
        assert query(daemon.port).header.stratum == 11  # the local clock, served over IPv4
        assert daemon.output().count("is not used here") == 1
        assert "cannot open a socket" not in daemon.output()
        assert daemon.stop() == 0
        no_traceback(daemon.output())


def test_without_ipv6_a_pool_keeps_its_ipv4_members(tmp_path: Path) -> None:
    require_root("unshare")
    live = ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]
    hosts = tmp_path / "hosts"
    # The pool's answer has AAAA records first, as a dual-stack pool's often does (not ::1:
    # glibc's files backend turns that into 127.0.0.1 for an IPv4 lookup).
    hosts.write_text("127.0.0.1 localhost\n" + "".join(
        f"{a} pool.faults.test\n" for a in ["2001:db8::1", "2001:db8::2", *live]))
    nsswitch = tmp_path / "nsswitch.conf"
    nsswitch.write_text("hosts: files\n")
    setup = f"mount --bind {nsswitch} /etc/nsswitch.conf\nmount --bind {hosts} /etc/hosts"
    with Upstreams(stratum=2) as up:
        for address in live:
            up.come_back(address)
        conf = tmp_path / "ntp.conf"
        conf.write_text(f"pool pool.faults.test port {up.port} iburst\nrestrict default\n")
        with Pyntpd("-c", str(conf), wrap=without(tmp_path, "AF_INET6", setup)) as daemon:
            for address in live:
                daemon.wait_for_log(f"association with {address} port {up.port}", 10)
            daemon.wait_for_log("synchronised to 127.0.0.", 15)
            output = daemon.output()
            assert "2001:db8" not in output  # AAAA never tried
            assert output.count(NO_IPV6) == 1
            assert daemon.stop() == 0
            no_traceback(daemon.output())


def test_without_ipv6_the_nts_ke_listener_serves_ipv4(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    for attempt in range(3):  # a free TCP port may be taken by another test before we bind it
        ke_port = free_tcp_port()
        conf_text = (f"{LOCAL_CONF}nts enable cert {pki.cert} key {pki.key} "
                     f"cookie {tmp_path / 'nts-keys'} port {ke_port}\n")
        try:
            with config_file(conf_text) as conf, \
                    Pyntpd("-c", conf, wrap=without(tmp_path, "AF_INET6")) as daemon:
                assert f"NTS-KE listening on TCP 0.0.0.0 port {ke_port}" in daemon.output()
                session = asyncio.run(key_exchange("localhost", ke_port, str(pki.ca),
                                                   timeout=5.0, connect_to="127.0.0.1"))
                assert session.cookies
                assert daemon.stop() == 0
                no_traceback(daemon.output())
                return
        except AssertionError as exc:
            if f"port {ke_port}: Address already in use" not in str(exc) or attempt == 2:
                raise


def test_without_ipv6_an_ipv6_nts_ke_listen_address_stops_the_start(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    ke_port = free_tcp_port()
    conf_text = (f"{LOCAL_CONF}nts enable cert {pki.cert} key {pki.key} "
                 f"cookie {tmp_path / 'nts-keys'} listen ::1 port {ke_port}\n")
    with config_file(conf_text) as conf:
        output = started_and_failed(Pyntpd("-c", conf, wrap=without(tmp_path, "AF_INET6")))
    assert (f"NTS: cannot listen on TCP ::1 port {ke_port}: Address family not supported by "
            "protocol (IPv6 is not available on this host)") in output
    no_traceback(output)


def test_without_ipv6_an_nts_client_takes_keys_and_time_over_ipv4(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    ke_port = free_tcp_port()
    server_conf = (f"{LOCAL_CONF}nts enable cert {pki.cert} key {pki.key} "
                   f"cookie {tmp_path / 'nts-keys'} listen 127.0.0.1 port {ke_port}\n")
    with config_file(server_conf) as sconf, Pyntpd("-c", sconf) as server:
        client_conf = (f"server localhost port {server.port} nts ntsport {ke_port} iburst\n"
                       f"nts ca {pki.ca}\nrestrict default\n")
        with config_file(client_conf) as cconf, \
                Pyntpd("-c", cconf, wrap=without(tmp_path, "AF_INET6")) as client:
            client.wait_for_log(f"association with 127.0.0.1 port {server.port} (localhost), "
                                "NTS", 20)
            client.wait_for_log(f"synchronised to 127.0.0.1 port {server.port} (localhost)", 30)
            output = client.output()
            assert "NTS-KE with localhost" not in output  # no failed attempt logged
            assert "cannot open a socket" not in output
            assert client.stop() == 0
            no_traceback(client.output())


def test_without_ipv6_metrics_on_an_ipv6_address_stop_the_start_with_the_reason(
        tmp_path: Path) -> None:
    port = free_tcp_port()
    with config_file(LOCAL_CONF) as conf:
        output = started_and_failed(Pyntpd("-c", conf, "--metrics", f"[::1]:{port}",
                                           wrap=without(tmp_path, "AF_INET6")))
    assert (f"cannot serve metrics on [::1]:{port} (--metrics): Address family not supported "
            "by protocol (IPv6 is not available on this host)") in output
    no_traceback(output)


def _tool(tmp_path: Path, family: str, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = f"{without_family(family)}\nimport sys\nfrom {module} import main\nsys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=30, cwd=tmp_path)


def test_without_ipv6_mode_6_answers_over_ipv4_and_pyntpq_6_says_why(tmp_path: Path) -> None:
    with config_file(LOCAL_CONF) as conf, \
            Pyntpd("-c", conf, wrap=without(tmp_path, "AF_INET6")) as daemon:
        over_v4 = _tool(tmp_path, "AF_INET6", "pyntpd.cli.pyntpq", "--port", str(daemon.port),
                        "-c", "rv", "127.0.0.1")
        assert over_v4.returncode == 0, over_v4.stderr
        assert "stratum=11" in over_v4.stdout
        over_v6 = _tool(tmp_path, "AF_INET6", "pyntpd.cli.pyntpq", "-6", "--port",
                        str(daemon.port), "-c", "rv", "::1")
        assert over_v6.returncode == 1
        assert over_v6.stderr == (f"pyntpq: ::1 port {daemon.port}: ::1: Address family not "
                                  "supported by protocol\n")
        assert daemon.stop() == 0


def test_without_ipv6_pyntpctl_status_says_why_it_cannot_ask(tmp_path: Path) -> None:
    code = (f"{without_family('AF_INET6')}\nfrom pyntpd.cli.service import sync_state\n"
            "print(sync_state('::1', 123))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30)
    assert result.stdout == ("sync state unknown: cannot ask ::1 port 123: Address family not "
                             "supported by protocol\n"), result.stderr


# --- IPv6 disabled by sysctl (EADDRNOTAVAIL), in a network namespace ---------------------------


def in_netns_without_ipv6(argv: list[str]) -> list[str]:
    """Run the daemon in a new network namespace: lo up, IPv6 disabled on every interface."""
    script = ("set -e\nsysctl -qw net.ipv6.conf.all.disable_ipv6=1\nip link set lo up\n"
              f"exec {subprocess.list2cmdline(argv)}")
    return ["unshare", "--net", "sh", "-c", script]


def netns_query(daemon: Pyntpd, host: str = "127.0.0.1") -> str:
    """The daemon's answer's stratum, asked from inside its namespace (the pid is unshare's,
    which exec'd sh, which exec'd the daemon)."""
    assert daemon.proc is not None
    code = ("import sys\nfrom tests.support import query\n"
            f"print(query({daemon.port}, host={host!r}).header.stratum)")
    result = subprocess.run(["nsenter", f"--net=/proc/{daemon.proc.pid}/ns/net", sys.executable,
                             "-c", code], capture_output=True, text=True, timeout=30,
                            cwd=Path(__file__).resolve().parents[2])
    return result.stdout.strip() or result.stderr


def test_with_ipv6_disabled_by_sysctl_ipv6_sources_are_skipped_and_ipv4_served(
        tmp_path: Path) -> None:
    require_root("unshare", "nsenter", "sysctl", "ip")
    conf_text = f"server ::1 port {free_udp_port()} iburst\n{LOCAL_CONF}"
    with config_file(conf_text) as conf, \
            Pyntpd("-c", conf, wrap=in_netns_without_ipv6) as daemon:
        daemon.wait_for_log("cannot reach IPv6 addresses (::1, for ::1): Cannot assign "
                            "requested address")
        assert netns_query(daemon) == "11"
        output = daemon.output()
        assert output.count("cannot reach IPv6 addresses") == 1
        assert "is not available on this host" not in output  # the family exists
        assert daemon.stop() == 0
        no_traceback(daemon.output())


def test_with_ipv6_disabled_by_sysctl_metrics_on_ipv6_loopback_stop_the_start(
        tmp_path: Path) -> None:
    require_root("unshare", "sysctl", "ip")
    port = free_tcp_port()
    with config_file(LOCAL_CONF) as conf:
        output = started_and_failed(Pyntpd("-c", conf, "--metrics", f"[::1]:{port}",
                                           wrap=in_netns_without_ipv6))
    assert (f"cannot serve metrics on [::1]:{port} (--metrics): Cannot assign requested "
            "address (no interface has this address)") in output
    no_traceback(output)


def test_with_ipv6_disabled_by_sysctl_an_nts_ke_listener_on_ipv6_loopback_stops_the_start(
        tmp_path: Path) -> None:
    require_root("unshare", "sysctl", "ip")
    pki = make_pki(tmp_path / "pki")
    ke_port = free_tcp_port()
    conf_text = (f"{LOCAL_CONF}nts enable cert {pki.cert} key {pki.key} "
                 f"cookie {tmp_path / 'nts-keys'} listen ::1 port {ke_port}\n")
    with config_file(conf_text) as conf:
        output = started_and_failed(Pyntpd("-c", conf, wrap=in_netns_without_ipv6))
    assert (f"NTS: cannot listen on TCP ::1 port {ke_port}: Cannot assign requested address "
            "(no interface has this address)") in output
    no_traceback(output)
