"""Which addresses to listen on: ntpd's `interface` rules and `-I`, applied to this host.

Without rules pyntpd binds the wildcard addresses (one socket per family), which serves every
interface with the fewest sockets. With rules, it does what ntpd does per address: the last
rule that matches an address decides (`listen`, or `ignore`/`drop`, which pyntpd treats the
same: no socket at all is better than a socket that discards), and the wildcard socket is
only opened when a rule says `listen wildcard`, so nothing listens where the administrator
said it must not.

The addresses come from getifaddrs(3) (netlink: every address, secondary ones included, as
ntpd enumerates them); where that fails, from SIOCGIFADDR (each interface's primary IPv4
address) and /proc/net/if_inet6. They are also this host's own refids (`own_refids`): a
source whose reference is one of them is synchronised to us (a timing loop).
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pyntpd.config.model import InterfaceRule
from pyntpd.daemon.serve import ListenAddress
from pyntpd.sync.engine import refid_for

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_SIOCGIFADDR = 0x8915
_SIOCGIFFLAGS = 0x8913
_SIOCGIFBRDADDR = 0x8919
_SIOCGIFNETMASK = 0x891B
_IFF_BROADCAST = 0x2
_IFF_LOOPBACK = 0x8
_IFF_UP = 0x1
_IFF_MULTICAST = 0x1000


@dataclass(frozen=True, slots=True)
class LocalAddress:
    interface: str
    address: IPAddress


class _Sockaddr(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort)]


class _SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_ushort),
                ("addr", ctypes.c_ubyte * 4)]


class _SockaddrIn6(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_ushort),
                ("flowinfo", ctypes.c_uint32), ("addr", ctypes.c_ubyte * 16),
                ("scope_id", ctypes.c_uint32)]


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [
    ("next", ctypes.POINTER(_Ifaddrs)), ("name", ctypes.c_char_p), ("flags", ctypes.c_uint),
    ("addr", ctypes.POINTER(_Sockaddr)), ("netmask", ctypes.POINTER(_Sockaddr)),
    ("ifu", ctypes.POINTER(_Sockaddr)), ("data", ctypes.c_void_p),
]


def _ifaddrs() -> Iterator[_Ifaddrs]:
    """getifaddrs(3), entry by entry (the list is freed when the walk ends); OSError (or
    AttributeError) if libc will not say."""
    libc = ctypes.CDLL(None, use_errno=True)
    head = ctypes.POINTER(_Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        raise OSError(ctypes.get_errno(), "getifaddrs failed")
    try:
        node = head
        while node:
            entry = node.contents
            node = entry.next
            yield entry
    finally:
        libc.freeifaddrs(head)


def _getifaddrs() -> list[LocalAddress]:
    """Every address of every interface."""
    found = []
    for entry in _ifaddrs():
        if not (entry.addr and entry.name):
            continue
        family = entry.addr.contents.family
        if family in (socket.AF_INET, socket.AF_INET6):
            name = entry.name.decode("utf-8", "replace")
            found.append(LocalAddress(name, _ip(entry.addr, 4 if family == socket.AF_INET
                                                else 6)))
    return found


def _ipv4_address(probe: socket.socket, name: str) -> IPAddress | None:
    try:
        raw = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
    except OSError:
        return None  # no IPv4 address on this interface
    return ipaddress.IPv4Address(raw[20:24])


def local_addresses(ipv4: bool = True, ipv6: bool = True) -> list[LocalAddress]:
    """This host's addresses of the families asked for (the ones it has)."""
    try:
        every = _getifaddrs()
    except (OSError, AttributeError):
        return _fallback_addresses(ipv4, ipv6)
    return [a for a in every if (ipv4 if a.address.version == 4 else ipv6)]


def own_refids(extra: Iterable[str] = ()) -> frozenset[bytes]:
    """The refids a server synchronised to us would state: one per address of this host
    (`extra`: the addresses we are bound to, should an interface not be listed)."""
    return own_refids_of([str(a.address) for a in local_addresses()] + list(extra))


def own_refids_of(addresses: Iterable[str]) -> frozenset[bytes]:
    return frozenset(refid_for(a) for a in addresses if a not in ("0.0.0.0", "::"))


def _fallback_addresses(ipv4: bool, ipv6: bool) -> list[LocalAddress]:
    """Each interface's primary IPv4 address and all its IPv6 addresses (without IPv4 there
    is no socket to ask)."""
    found = []
    if ipv4:
        try:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError:
            probe = None  # no IPv4 in this kernel or sandbox
        if probe is not None:
            with probe:
                for _, name in socket.if_nameindex():
                    v4 = _ipv4_address(probe, name)
                    if v4 is not None:
                        found.append(LocalAddress(name, v4))
    if not ipv6:
        return found
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if len(fields) == 6:
                    found.append(LocalAddress(fields[5], ipaddress.IPv6Address(
                        int(fields[0], 16))))
    except OSError:
        pass  # no IPv6 in this kernel or namespace
    return found


def _matches(rule: InterfaceRule, local: LocalAddress) -> bool:
    match rule.match:
        case "all":
            return True
        case "ipv4":
            return local.address.version == 4
        case "ipv6":
            return local.address.version == 6
        case "name":
            return rule.name == local.interface
        case "address":
            return rule.network is not None and local.address in rule.network
    return False  # "wildcard" names no interface address


def plan_listen(
    rules: Iterable[InterfaceRule],
    port: int,
    locals_: Iterable[LocalAddress],
    ipv4: bool = True,
    ipv6: bool = True,
) -> list[ListenAddress] | None:
    """Addresses to bind, or None when there are no rules (bind the wildcard addresses)."""
    rules = list(rules)
    if not rules:
        return None
    chosen: list[ListenAddress] = []
    for rule in rules:
        if rule.match == "wildcard" and rule.action == "listen":
            if ipv4:
                chosen.append(ListenAddress(socket.AF_INET, "0.0.0.0", port))
            if ipv6:
                chosen.append(ListenAddress(socket.AF_INET6, "::", port))
            break
    wildcard = bool(chosen)
    for local in locals_:
        v6 = local.address.version == 6
        if (v6 and not ipv6) or (not v6 and not ipv4) or wildcard:
            continue
        if local.address.is_link_local:
            continue  # needs a scope id per interface; ntpd's clients do not use them
        action = "listen"
        for rule in rules:
            if _matches(rule, local):
                action = rule.action
        if action == "listen":
            family = socket.AF_INET6 if v6 else socket.AF_INET
            chosen.append(ListenAddress(family, str(local.address), port))
    return chosen


@dataclass(frozen=True, slots=True)
class CastInterface:
    """An interface address as broadcasting needs it: its network, broadcast address and
    whether it is up, multicast-capable, loopback."""

    name: str
    index: int
    address: IPAddress
    network: IPNetwork
    broadcast: ipaddress.IPv4Address | None
    multicast: bool
    loopback: bool


def _ifreq(probe: socket.socket, name: str, request: int) -> bytes | None:
    try:
        return fcntl.ioctl(probe.fileno(), request, struct.pack("256s", name.encode()[:15]))
    except OSError:
        return None


def _ip(entry: ctypes._Pointer[_Sockaddr], version: int) -> IPAddress:  # type: ignore[name-defined]
    if version == 4:
        return ipaddress.IPv4Address(bytes(ctypes.cast(entry, ctypes.POINTER(_SockaddrIn))
                                           .contents.addr))
    return ipaddress.IPv6Address(bytes(ctypes.cast(entry, ctypes.POINTER(_SockaddrIn6))
                                       .contents.addr))


def _cast_getifaddrs() -> list[CastInterface]:
    """getifaddrs(3): every address with its netmask, broadcast address and flags."""
    found = []
    for entry in _ifaddrs():
        if not (entry.addr and entry.netmask and entry.name) or not entry.flags & _IFF_UP:
            continue
        family = entry.addr.contents.family
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        version = 4 if family == socket.AF_INET else 6
        name = entry.name.decode("utf-8", "replace")
        addr = _ip(entry.addr, version)
        mask = _ip(entry.netmask, version)
        network = ipaddress.ip_network(f"{addr}/{mask}" if version == 4
                                       else f"{addr}/{bin(int(mask)).count('1')}",
                                       strict=False)
        broadcast = None
        if version == 4 and entry.flags & _IFF_BROADCAST:
            broadcast = _broadcast_of(
                addr, network, _ip(entry.ifu, 4) if entry.ifu else None)
        found.append(CastInterface(
            name, socket.if_nametoindex(name), addr, network, broadcast,
            bool(entry.flags & _IFF_MULTICAST), bool(entry.flags & _IFF_LOOPBACK)))
    return found


def _broadcast_of(
    addr: IPAddress, network: IPNetwork, stated: IPAddress | None
) -> ipaddress.IPv4Address | None:
    """The interface's broadcast address. An address added without `brd` states none (or
    itself), yet the kernel still routes the prefix's broadcast address to it: that one."""
    if isinstance(stated, ipaddress.IPv4Address) and stated not in (
            addr, ipaddress.IPv4Address(0)):
        return stated
    if isinstance(network, ipaddress.IPv4Network) and network.prefixlen < 31:
        return network.broadcast_address
    return None


def cast_interfaces() -> list[CastInterface]:
    """The interfaces that are up: every address with its network, broadcast address and
    flags (from getifaddrs; else each primary IPv4 address through ioctls)."""
    try:
        return _cast_getifaddrs()
    except (OSError, AttributeError):
        pass
    found: list[CastInterface] = []
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return found
    with probe:
        for index, name in socket.if_nameindex():
            raw = _ifreq(probe, name, _SIOCGIFFLAGS)
            flags = struct.unpack_from("H", raw, 16)[0] if raw is not None else 0
            addr = _ipv4_address(probe, name)
            mask = _ifreq(probe, name, _SIOCGIFNETMASK)
            if not flags & _IFF_UP or addr is None or mask is None:
                continue
            brd = _ifreq(probe, name, _SIOCGIFBRDADDR) if flags & _IFF_BROADCAST else None
            network = ipaddress.IPv4Network(f"{addr}/{ipaddress.IPv4Address(mask[20:24])}",
                                            strict=False)
            broadcast = None
            if flags & _IFF_BROADCAST:
                broadcast = _broadcast_of(
                    addr, network, ipaddress.IPv4Address(brd[20:24]) if brd else None)
            found.append(CastInterface(name, index, addr, network, broadcast,
                                       bool(flags & _IFF_MULTICAST),
                                       bool(flags & _IFF_LOOPBACK)))
    return found
