import ipaddress
import socket

from pyntpd.config.model import InterfaceRule
from pyntpd.daemon.interfaces import LocalAddress, local_addresses, plan_listen

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
