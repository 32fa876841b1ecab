"""Which IP families this host has: ntpd's `ipv4_works` / `ipv6_works`.

A kernel booted with `ipv6.disable=1` (common on RHEL/CentOS) has no AF_INET6 at all:
socket() fails with EAFNOSUPPORT. The same happens under a sandbox that restricts address
families. ntpd probes once at start and then serves, resolves and polls on the families
that work; pyntpd does the same, and says once at start which family it goes without.

A family can also exist and still be unusable: with `net.ipv6.conf.all.disable_ipv6=1`
socket(AF_INET6) works and the wildcard `::` binds, but no IPv6 address is configured, so
binding `::1` or connecting to any IPv6 address fails with EADDRNOTAVAIL. That is only
seen per address (`unreachable`), which also covers IPv6 disabled on some interfaces only.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

# socket() errors that mean "this kernel (or sandbox) has no such family".
_NO_FAMILY = frozenset({errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.EPFNOSUPPORT})
# connect()/bind() errors that mean "this host cannot use that address": no source address
# of the family (disabled by sysctl), no route, or no family at all.
_UNREACHABLE = _NO_FAMILY | {errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.EHOSTUNREACH}

NAMES = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


def family_name(family: int) -> str:
    return NAMES.get(family, f"address family {family}")


def no_family(err: OSError) -> bool:
    """socket() failed because the host has no such address family."""
    return err.errno in _NO_FAMILY


def unreachable(err: OSError) -> bool:
    """bind()/connect() failed because this host cannot use the address's family (or has no
    route there): skipping that address is right, retrying others is useful."""
    return err.errno in _UNREACHABLE


@dataclass(frozen=True, slots=True)
class IpFamilies:
    """The families a socket can be made for; `missing` says why each absent one is absent."""

    ipv4: bool = True
    ipv6: bool = True
    missing: tuple[tuple[int, str], ...] = ()

    def has(self, family: int) -> bool:
        if family == socket.AF_INET:
            return self.ipv4
        if family == socket.AF_INET6:
            return self.ipv6
        return False

    def restricted(self, ipv4: bool = True, ipv6: bool = True) -> IpFamilies:
        """Further limited by -4 / -6 (which leave `missing` as the host's own reasons)."""
        return IpFamilies(self.ipv4 and ipv4, self.ipv6 and ipv6, self.missing)

    @property
    def lookup_family(self) -> int:
        """getaddrinfo()'s family: only records of a family this host can use."""
        if self.ipv4 and not self.ipv6:
            return socket.AF_INET
        if self.ipv6 and not self.ipv4:
            return socket.AF_INET6
        return socket.AF_UNSPEC


def probe() -> IpFamilies:
    """Try one UDP socket per family (closed at once); nothing is bound or sent."""
    works = {}
    missing = []
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.socket(family, socket.SOCK_DGRAM).close()
        except OSError as exc:
            works[family] = False
            missing.append((family, exc.strerror or os.strerror(exc.errno or 0) or str(exc)))
        else:
            works[family] = True
    return IpFamilies(works[socket.AF_INET], works[socket.AF_INET6], tuple(missing))
