"""Types shared by the restrict engine (proto.access) and the config parser.

Kept apart from the engine so that config/ can describe restrict lines without importing
the rate-limiting machinery.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RestrictFlag(enum.Flag):
    """ntpd 4.2.8 `restrict` flags (ntp_acc(5)); the names are ntpd's keywords."""

    NONE = 0
    IGNORE = enum.auto()        # drop every packet
    KOD = enum.auto()           # send KoD (RATE/DENY/RSTR) where ntpd would
    LIMITED = enum.auto()       # rate-limit per `discard average/minimum`
    LOWPRIOTRAP = enum.auto()   # traps: accepted and ignored (no traps in pyntpd)
    NOMODIFY = enum.auto()      # no mode 6/7 writes (pyntpd refuses them always)
    NOPEER = enum.auto()        # no ephemeral peer associations
    NOQUERY = enum.auto()       # no mode 6 queries
    NOSERVE = enum.auto()       # no time service (mode 6 still allowed)
    NOTRAP = enum.auto()        # no mode 6 trap service
    NOTRUST = enum.auto()       # only authenticated packets are served
    NTPPORT = enum.auto()       # match only when the source port is 123
    VERSION = enum.auto()       # deny packets whose version is not the current one (4)
    NOMRULIST = enum.auto()     # deny mrulist queries (ntpd 4.2.8p? / ntpsec)
    # Not ntpd keywords but ntp.conf syntax for a restrict *line*; carried for completeness.
    SOURCE = enum.auto()        # template for associations' own addresses (`restrict source`)
    MSSNTP = enum.auto()        # sign replies through Samba's ntp_signd (MS-SNTP)


# Keyword -> flag, exactly as ntpd spells them in ntp.conf.
RESTRICT_KEYWORDS: dict[str, RestrictFlag] = {
    "ignore": RestrictFlag.IGNORE,
    "kod": RestrictFlag.KOD,
    "limited": RestrictFlag.LIMITED,
    "lowpriotrap": RestrictFlag.LOWPRIOTRAP,
    "nomodify": RestrictFlag.NOMODIFY,
    "nopeer": RestrictFlag.NOPEER,
    "noquery": RestrictFlag.NOQUERY,
    "noserve": RestrictFlag.NOSERVE,
    "notrap": RestrictFlag.NOTRAP,
    "notrust": RestrictFlag.NOTRUST,
    "ntpport": RestrictFlag.NTPPORT,
    "version": RestrictFlag.VERSION,
    "nomrulist": RestrictFlag.NOMRULIST,
    "mssntp": RestrictFlag.MSSNTP,
}


@dataclass(frozen=True, slots=True)
class RestrictRule:
    """One `restrict` line, resolved to a network.

    `network` is None for `restrict source` (applies to the addresses of configured
    servers, resolved at association time). `default` lines carry 0.0.0.0/0 or ::/0.
    """

    network: IPNetwork | None
    flags: RestrictFlag
    is_default: bool = False
    # `restrict` lines may also name a host that must be resolved; the config layer keeps the
    # name for error messages and for re-resolution.
    hostname: str | None = None
    # A mask that is not a prefix (ntpd takes any mask): the rule matches a source whose
    # address ANDed with `mask` is `network`'s address, and `network` is that one address.
    mask: int | None = None

    def describe(self) -> str:
        """The rule as a `restrict` line would name it."""
        if self.hostname:
            return self.hostname
        net = self.network
        if net is None:
            return "source"
        if self.is_default:
            return "default" if net.version == 4 else "-6 default"
        if self.mask is not None:
            mask = (ipaddress.IPv4Address(self.mask) if net.version == 4
                    else ipaddress.IPv6Address(self.mask))
            return f"{net.network_address} mask {mask}"
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address)
        return str(net) if net.version == 6 else f"{net.network_address} mask {net.netmask}"
