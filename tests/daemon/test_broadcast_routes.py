"""Which socket and interface a broadcast leaves from, and which extra sockets a broadcast
client needs, under the interface rules (daemon/broadcast)."""

from __future__ import annotations

import ipaddress
import socket

from pyntpd.config.model import BroadcastClientConfig
from pyntpd.daemon.broadcast import Bound, cast_listen, plan_routes
from pyntpd.daemon.interfaces import CastInterface
from pyntpd.daemon.serve import ListenAddress

V4, V6 = socket.AF_INET, socket.AF_INET6
LO = CastInterface("lo", 1, ipaddress.ip_address("127.0.0.1"),
                   ipaddress.ip_network("127.0.0.0/8"), None, False, True)
ETH0 = CastInterface("eth0", 2, ipaddress.ip_address("192.168.1.10"),
                     ipaddress.ip_network("192.168.1.0/24"),
                     ipaddress.IPv4Address("192.168.1.255"), True, False)
ETH1 = CastInterface("eth1", 3, ipaddress.ip_address("10.9.0.1"),
                     ipaddress.ip_network("10.9.0.0/16"), ipaddress.IPv4Address("10.9.255.255"),
                     True, False)
ETH1_V6 = CastInterface("eth1", 3, ipaddress.ip_address("2001:db8::1"),
                        ipaddress.ip_network("2001:db8::/64"), None, True, False)
INTERFACES = [LO, ETH0, ETH1, ETH1_V6]
WILDCARD = [Bound(0, V4, "0.0.0.0"), Bound(1, V6, "::")]
BOUND = [Bound(0, V4, "127.0.0.1"), Bound(1, V4, "10.9.0.1")]


def route(dest: str, bound: list[Bound]) -> list[tuple[int, str | None]]:
    return [(i, iface.name if iface else None)
            for i, iface in plan_routes(ipaddress.ip_address(dest), bound, INTERFACES)]


def test_broadcast_leaves_the_wildcard_socket_and_the_kernel_routes_it():
    assert route("192.168.1.255", WILDCARD) == [(0, None)]


def test_broadcast_leaves_the_socket_bound_on_its_network():
    assert route("10.9.255.255", BOUND) == [(1, "eth1")]


def test_broadcast_to_a_network_no_socket_listens_on_has_no_route():
    assert route("192.168.1.255", BOUND) == []


def test_limited_broadcast_leaves_the_first_non_loopback_bound_socket():
    assert route("255.255.255.255", BOUND) == [(1, "eth1")]


def test_multicast_leaves_every_multicast_capable_interface_but_loopback():
    assert route("224.0.1.1", WILDCARD) == [(0, "eth0"), (0, "eth1")]


def test_multicast_leaves_only_interfaces_the_rules_listen_on():
    assert route("224.0.1.1", BOUND) == [(1, "eth1")]


def test_ipv6_multicast_leaves_the_ipv6_wildcard_socket():
    assert route("ff05::101", WILDCARD) == [(1, "eth1")]


def test_wildcard_listening_needs_no_extra_client_sockets():
    planned = [ListenAddress(V4, "0.0.0.0", 123)]
    client = BroadcastClientConfig(enabled=True, groups=("224.0.1.1",))
    assert cast_listen(planned, client, INTERFACES) == []


def test_bound_addresses_get_a_socket_on_their_interfaces_broadcast_address():
    planned = [ListenAddress(V4, "127.0.0.1", 123), ListenAddress(V4, "10.9.0.1", 123)]
    assert cast_listen(planned, BroadcastClientConfig(enabled=True), INTERFACES) == [
        ListenAddress(V4, "10.9.255.255", 123)]


def test_bound_addresses_get_a_socket_on_each_multicast_group():
    planned = [ListenAddress(V4, "10.9.0.1", 123)]
    client = BroadcastClientConfig(groups=("224.0.1.1",))
    assert cast_listen(planned, client, INTERFACES) == [ListenAddress(V4, "224.0.1.1", 123)]


def test_broadcast_to_a_unicast_address_leaves_a_bound_socket_the_kernel_routes():
    assert route("172.16.5.5", BOUND) == [(0, None)]


def test_an_address_added_without_brd_has_its_prefixs_broadcast_address():
    from pyntpd.daemon.interfaces import _broadcast_of

    addr = ipaddress.ip_address("10.99.0.2")
    net = ipaddress.ip_network("10.99.0.0/24")
    assert _broadcast_of(addr, net, addr) == ipaddress.ip_address("10.99.0.255")
    assert _broadcast_of(addr, net, None) == ipaddress.ip_address("10.99.0.255")
    assert _broadcast_of(addr, net, ipaddress.ip_address("10.99.0.127")) == \
        ipaddress.ip_address("10.99.0.127")
