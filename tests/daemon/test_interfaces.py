import ipaddress
import os
import shutil
import socket
import subprocess
import sys

import pytest

from pyntpd.config.model import InterfaceRule
from pyntpd.daemon.interfaces import LocalAddress, local_addresses, own_refids_of, plan_listen
from pyntpd.sync.engine import refid_for

LOCALS = [
    LocalAddress("lo", ipaddress.ip_address("127.0.0.1")),
    LocalAddress("eth0", ipaddress.ip_address("192.0.2.2")),
    LocalAddress("eth0", ipaddress.ip_address("2001:db8::2")),
    LocalAddress("eth0", ipaddress.ip_address("fe80::1")),
    LocalAddress("lo", ipaddress.ip_address("::1")),
]


def hosts(plan):
    return sorted(a.host for a in plan)


def test_no_rules_means_wildcard():
    assert plan_listen([], 123, LOCALS) is None


def test_ignore_all_then_listen_one_address():
    rules = [InterfaceRule("ignore", "all"),
             InterfaceRule("listen", "address", network=ipaddress.ip_network("127.0.0.1/32"))]
    assert hosts(plan_listen(rules, 123, LOCALS)) == ["127.0.0.1"]


def test_listen_by_interface_name():
    rules = [InterfaceRule("ignore", "all"), InterfaceRule("listen", "name", name="lo")]
    assert hosts(plan_listen(rules, 123, LOCALS)) == ["127.0.0.1", "::1"]


def test_ignore_ipv6_keeps_ipv4_addresses():
    assert hosts(plan_listen([InterfaceRule("ignore", "ipv6")], 123, LOCALS)) == \
        ["127.0.0.1", "192.0.2.2"]


def test_drop_is_treated_as_ignore():
    rules = [InterfaceRule("drop", "name", name="eth0")]
    assert hosts(plan_listen(rules, 123, LOCALS)) == ["127.0.0.1", "::1"]


def test_link_local_addresses_are_skipped():
    assert "fe80::1" not in hosts(plan_listen([InterfaceRule("listen", "all")], 123, LOCALS))


def test_listen_wildcard_binds_wildcard_only():
    plan = plan_listen([InterfaceRule("listen", "wildcard")], 123, LOCALS)
    assert hosts(plan) == ["0.0.0.0", "::"]


def test_family_switch_filters_addresses():
    plan = plan_listen([InterfaceRule("listen", "all")], 123, LOCALS, ipv6=False)
    assert {a.family for a in plan} == {socket.AF_INET}


def test_this_host_has_a_loopback_address():
    assert any(str(a.address) == "127.0.0.1" for a in local_addresses())


def test_this_hosts_refids_are_its_addresses_ipv6_hashed() -> None:
    refids = own_refids_of(["192.0.2.7", "2001:db8::7", "0.0.0.0", "::"])
    assert refids == {bytes([192, 0, 2, 7]), refid_for("2001:db8::7")}  # wildcards are no one


def test_secondary_addresses_are_listed() -> None:
    """getifaddrs: every address, not only an interface's primary one (ntpd's list)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare (a network namespace of the test's own)")
    code = ("from pyntpd.daemon.interfaces import local_addresses\n"
            "print(sorted(str(a.address) for a in local_addresses() if a.interface == 'lo'))")
    script = ("set -e\nip link set lo up\nip addr add 127.0.0.2/8 dev lo\n"
              f"exec {sys.executable} -c \"$0\"")
    result = subprocess.run(["unshare", "--net", "sh", "-c", script, code], capture_output=True,
                            text=True, timeout=30)
    assert result.stdout.strip() == "['127.0.0.1', '127.0.0.2', '::1']", result.stderr
