"""The mode 6 variables ntpd gives only when asked by name, from the daemon's counters.

ntpsec's ntpq asks for them in `sysinfo`, `sysstats`, `monstats`, `authinfo`, `iostats` and
`pstats`. Only what pyntpd really counts is given: a variable it has no counter for (ntpd's
per-version tallies, receive buffers, timer overruns) is left out, so ntpq shows `?` for it,
as it does for a variable an older ntpd lacks, rather than a made-up zero.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyntpd.proto.access import MRU_ENTRY_BYTES, Access
from pyntpd.proto.auth import KeyRing
from pyntpd.proto.control import PeerInfo
from pyntpd.proto.packet import DropReason
from pyntpd.proto.server import ServerCounters

# ntpd's sys_badlength: datagrams that are not a well-formed request.
_BAD_FORMAT = (DropReason.TOO_SHORT, DropReason.TOO_LONG, DropReason.BAD_VERSION,
               DropReason.BAD_MODE, DropReason.BAD_EXTENSION, DropReason.BAD_TRAILER,
               DropReason.NOT_A_REQUEST, DropReason.BAD_PORT)
# ntpd's sys_badauth: no MAC where one is needed, or one that fails.
_BAD_AUTH = (DropReason.AUTH_REQUIRED, DropReason.BAD_AUTH)
# ntpd's sys_restricted: refused by a restrict line.
_RESTRICTED = (DropReason.RESTRICTED, DropReason.CONTROL_DENIED)
# ntpd's sys_declined: requests of a kind it does not serve.
_DECLINED = (DropReason.MODE7, DropReason.MSSNTP)


# The variables of each group, by the ntpq command that asks for them: the daemon computes
# a group only when a request names one of its variables.
SYSINFO = frozenset({"peeradr", "peermode", "rootdist", "authdelay"})
SYSSTATS = frozenset({"ss_uptime", "ss_reset", "ss_numctlreq", "ss_received", "ss_badformat",
                      "ss_badauth", "ss_declined", "ss_restricted", "ss_limited",
                      "ss_kodsent", "ss_processed"})
MONSTATS = frozenset({"mru_enabled", "mru_depth", "mru_maxdepth", "mru_mindepth",
                      "mru_maxage", "mru_mem", "mru_maxmem", "mru_recycleold",
                      "mru_oldest_age"})
AUTHINFO = frozenset({"authreset", "authkeys"})
IOSTATS = frozenset({"iostats_reset", "io_received", "io_dropped"})


def _sum(counters: ServerCounters, reasons: Sequence[DropReason]) -> int:
    return sum(counters.dropped.get(reason, 0) for reason in reasons)


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def system_peer(peer: PeerInfo | None, rootdelay: float, rootdisp: float) -> dict[str, str]:
    """sysinfo's: the system peer's address and mode (ntpd: 0.0.0.0:0 and 0 without one),
    the root distance, the symmetric authentication delay (pyntpd adds none)."""
    return {
        "peeradr": _endpoint(peer.srcadr, peer.srcport) if peer else "0.0.0.0:0",
        "peermode": str(peer.hmode if peer else 0),
        "rootdist": f"{(rootdelay / 2 + rootdisp) * 1e3:.3f}",
        "authdelay": "0.000",
    }


def sysstats(counters: ServerCounters, control_requests: int, uptime: float) -> dict[str, str]:
    since = str(int(uptime))  # counters are never reset: the reset is the start
    return {
        "ss_uptime": since,
        "ss_reset": since,
        "ss_numctlreq": str(control_requests),
        "ss_received": str(counters.received),
        "ss_badformat": str(_sum(counters, _BAD_FORMAT)),
        "ss_badauth": str(_sum(counters, _BAD_AUTH)),
        "ss_declined": str(_sum(counters, _DECLINED)),
        "ss_restricted": str(_sum(counters, _RESTRICTED)),
        "ss_limited": str(counters.dropped.get(DropReason.RATE_LIMITED, 0)),
        "ss_kodsent": str(sum(counters.kod_sent.values())),
        "ss_processed": str(counters.served),
    }


def monstats(access: Access, now: float) -> dict[str, str]:
    limits = access.mru_limits
    depth = len(access.mru)
    oldest = access.oldest()  # the list's end, not the dict's first key (entries move)
    out = {
        "mru_enabled": "0x1",  # the MRU list is always kept (restrict limited needs it)
        "mru_depth": str(depth),
        "mru_maxdepth": str(limits.max_entries),
        "mru_mindepth": str(limits.min_depth),
        "mru_maxage": str(int(limits.max_age)),
        "mru_mem": str(depth * MRU_ENTRY_BYTES // 1024),
        "mru_maxmem": str(limits.max_entries * MRU_ENTRY_BYTES // 1024),
        "mru_recycleold": str(access.recycled),
    }
    if oldest is not None:
        out["mru_oldest_age"] = str(max(int(now - oldest.last), 0))
    return out


def authinfo(keys: KeyRing, uptime: float) -> dict[str, str]:
    return {"authreset": str(int(uptime)), "authkeys": str(len(keys.keys))}


def iostats(counters: ServerCounters, uptime: float) -> dict[str, str]:
    """Datagrams read from the serving sockets, and those dropped (by reason in metrics)."""
    return {
        "iostats_reset": str(int(uptime)),
        "io_received": str(counters.received),
        "io_dropped": str(counters.dropped_total),
    }
