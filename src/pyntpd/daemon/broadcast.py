"""Broadcast and multicast on the wire: which socket and interface a broadcast leaves from,
the multicast groups a broadcast client joins, and the sockets it needs beyond the serving
ones. The packets and every decision about them are proto.broadcast's.

Sending (`BroadcastSender`): broadcasts leave from a serving socket, so that their source
port is the NTP port (a broadcast client sends its calibration exchange back there):
- to a broadcast (or unicast) address: from the wildcard socket, the kernel choosing the
  interface by its routes, or, when the interface rules bound addresses, from the socket
  bound on the interface whose network holds the address (ntpd's findbcastinter);
  SO_BROADCAST is set only for the send and cleared after it, so that a request forged from
  a broadcast address can never be answered to the whole segment;
- to a multicast group: out of every multicast-capable interface the rules listen on, as
  ntpd does, with IP_MULTICAST_IF / IPV6_MULTICAST_IF and the hop limit that `ttl` gives.

Receiving: the wildcard sockets get broadcasts to the port as they are; for
`multicastclient` they join the groups on every multicast-capable interface. When the rules
bind addresses instead, broadcasts and group traffic do not reach those sockets, so the
daemon binds, as ntpd does, one socket on each listened interface's broadcast address and
one on each group (`cast_listen`), before it drops privileges.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import math
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pyntpd.config.model import BroadcastClientConfig, BroadcastConfig
from pyntpd.daemon.interfaces import CastInterface, cast_interfaces
from pyntpd.daemon.serve import ListenAddress
from pyntpd.logonce import LogOnce
from pyntpd.proto.auth import KeyRing
from pyntpd.proto.broadcast import Broadcaster
from pyntpd.proto.timestamp import unix_ns_to_ntp
from pyntpd.types import SystemVars

log = logging.getLogger("pyntpd")

WILDCARDS = ("0.0.0.0", "::")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Bound:
    """A serving socket as route planning sees it: its position and bound address."""

    index: int
    family: int
    host: str

    @property
    def wildcard(self) -> bool:
        return self.host in WILDCARDS


def _version(family: int) -> int:
    return 6 if family == socket.AF_INET6 else 4


def _cast_capable(interfaces: Iterable[CastInterface], version: int) -> list[CastInterface]:
    """One address per multicast-capable interface (the first), loopback left out."""
    seen: set[int] = set()
    chosen = []
    for iface in interfaces:
        if (iface.address.version == version and iface.multicast and not iface.loopback
                and iface.index not in seen):
            seen.add(iface.index)
            chosen.append(iface)
    return chosen


def plan_routes(
    dest: IPAddress, bound: Sequence[Bound], interfaces: Sequence[CastInterface]
) -> list[tuple[int, CastInterface | None]]:
    """(serving socket, interface) pairs a broadcast to `dest` leaves from; empty if the
    interface rules leave no socket for it."""
    same = [b for b in bound if _version(b.family) == dest.version]
    wildcard = next((b for b in same if b.wildcard), None)
    if dest.is_multicast:
        routes = []
        for iface in _cast_capable(interfaces, dest.version):
            sock = wildcard or next((b for b in same if b.host == str(iface.address)), None)
            if sock is not None:
                routes.append((sock.index, iface))
        return routes
    if wildcard is not None:
        return [(wildcard.index, None)]
    limited = dest == ipaddress.IPv4Address("255.255.255.255")
    known_broadcast = limited
    for iface in interfaces:
        if iface.address.version != dest.version or (limited and iface.loopback):
            continue
        known_broadcast |= dest == iface.broadcast
        sock = next((b for b in same if b.host == str(iface.address)), None)
        if sock is not None and (limited or dest == iface.broadcast or dest in iface.network):
            return [(sock.index, iface)]
    if same and not known_broadcast:
        return [(same[0].index, None)]  # a unicast address: the kernel routes it
    return []


def cast_listen(
    planned: Sequence[ListenAddress], client: BroadcastClientConfig,
    interfaces: Sequence[CastInterface],
) -> list[ListenAddress]:
    """Extra sockets a broadcast client needs when the interface rules bound addresses
    rather than the wildcard: one on each listened IPv4 interface's broadcast address, one
    on each multicast group."""
    extra: list[ListenAddress] = []
    wild = {_version(a.family) for a in planned if a.host in WILDCARDS}
    hosts = {a.host: a for a in planned}
    if client.enabled and 4 not in wild:
        for iface in interfaces:
            where = hosts.get(str(iface.address))
            if (where is not None and iface.broadcast is not None
                    and str(iface.broadcast) not in hosts):
                listen = ListenAddress(socket.AF_INET, str(iface.broadcast), where.port)
                if listen not in extra:
                    extra.append(listen)
    for group in client.groups:
        version = ipaddress.ip_address(group).version
        specific = [a for a in planned if _version(a.family) == version]
        if specific and version not in wild:
            family = socket.AF_INET6 if version == 6 else socket.AF_INET
            extra.append(ListenAddress(family, group, specific[0].port))
    return extra


@dataclass
class GroupMembership:
    """The multicast groups the client's sockets have joined (left again on close)."""

    joined: list[tuple[socket.socket, int, int, bytes]] = field(default_factory=list)

    def join(self, sockets: Iterable[socket.socket], groups: Iterable[str],
             interfaces: Sequence[CastInterface]) -> list[str]:
        """Join each group on every multicast-capable interface, on the wildcard socket of
        its family and on a socket bound to the group itself. Returns what was joined."""
        done: list[str] = []
        sockets = list(sockets)
        for group in groups:
            addr = ipaddress.ip_address(group)
            for sock in sockets:
                if _version(sock.family) != addr.version:
                    continue
                host = sock.getsockname()[0]
                if host not in WILDCARDS and host != group:
                    continue
                for iface in _cast_capable(interfaces, addr.version):
                    if self._join(sock, addr, iface):
                        done.append(f"{group} on {iface.name}")
        return done

    def _join(self, sock: socket.socket, group: IPAddress, iface: CastInterface) -> bool:
        if group.version == 4:
            level, option = socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP
            mreq = group.packed + bytes(4) + struct.pack("@i", iface.index)  # ip_mreqn
        else:
            level, option = socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP
            mreq = group.packed + struct.pack("@I", iface.index)
        try:
            sock.setsockopt(level, option, mreq)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:  # already a member: fine
                log.warning("cannot join multicast group %s on %s: %s", group, iface.name,
                            exc.strerror)
                return False
        self.joined.append((sock, level, option, mreq))
        return True

    def leave(self) -> None:
        for sock, level, option, mreq in self.joined:
            drop = (socket.IP_DROP_MEMBERSHIP if option == socket.IP_ADD_MEMBERSHIP
                    else socket.IPV6_LEAVE_GROUP)
            with contextlib.suppress(OSError):
                sock.setsockopt(level, drop, mreq)
        self.joined = []


@dataclass
class _Target:
    config: BroadcastConfig
    broadcaster: Broadcaster
    dest: IPAddress
    hops: int  # multicast hop limit; 0: the kernel's default (1)
    routes: list[tuple[socket.socket, CastInterface | None]]


class BroadcastSender:
    """Sends the `broadcast` lines' packets on the asyncio loop."""

    def __init__(
        self,
        configs: Sequence[BroadcastConfig],
        ttl_map: Sequence[int],
        keys: KeyRing,
        serving: Sequence[socket.socket],
        time_ns: Callable[[], int],
        system: Callable[[], SystemVars],
        interfaces: Callable[[], list[CastInterface]] = cast_interfaces,
    ) -> None:
        self.time_ns = time_ns
        self.system = system
        self.send_errors = 0
        self.targets: list[_Target] = []
        self._timer: asyncio.TimerHandle | None = None
        self._log_once = LogOnce(log)
        serving = [s for s in serving if s.fileno() >= 0]
        bound = [Bound(i, s.family, s.getsockname()[0]) for i, s in enumerate(serving)]
        found = interfaces() if configs else []
        for config in configs:
            key = None
            if config.key is not None:
                key = keys.trusted_key(config.key)
                if key is None:
                    # ntpd sends nothing without the key: an unsigned broadcast in its place
                    # would be dropped by every authenticating client anyway.
                    log.error("%s: key %d is not a trusted key in the keys file: nothing is "
                              "broadcast to %s", config.location, config.key, config.address)
                    continue
            dest = ipaddress.ip_address(config.address)
            routes = [(serving[i], iface) for i, iface in plan_routes(dest, bound, found)]
            if not routes:
                log.error("%s: no listening address to broadcast to %s from (interface "
                          "rules?): nothing is broadcast there", config.location, dest)
                continue
            hops = ttl_map[min(config.ttl, len(ttl_map) - 1)] if ttl_map else 0
            self.targets.append(_Target(
                config, Broadcaster(config.address, config.minpoll, config.version, key),
                dest, hops, routes))

    @property
    def sent(self) -> int:
        return sum(t.broadcaster.sent for t in self.targets)

    @property
    def unsynchronised(self) -> int:
        return sum(t.broadcaster.unsynchronised for t in self.targets)

    def _now(self) -> float:
        return self.time_ns() / 1e9

    def start(self) -> None:
        now = self._now()
        for t in self.targets:
            t.broadcaster.start(now)
            via = ", ".join(sorted({f"{s.getsockname()[0]}" + (f" ({i.name})" if i else "")
                                    for s, i in t.routes}))
            extra = [f"key {t.config.key}"] if t.config.key is not None else ["unsigned"]
            if t.dest.is_multicast:
                extra.append(f"{t.hops or 1} hop{'s' if t.hops > 1 else ''}")
            log.info("broadcasting to %s every %d s (%s) from %s, while synchronised",
                     t.dest, 1 << t.config.minpoll, ", ".join(extra), via)
        self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.targets = []

    def clock_stepped(self, step: float) -> None:
        for t in self.targets:
            t.broadcaster.shift_timer(step)
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = [t.broadcaster.next_timer() for t in self.targets]
        due = [d for d in due if d != math.inf]
        if not due:
            return
        delay = max(0.0, min(due) - self._now())
        self._timer = asyncio.get_running_loop().call_later(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        now = self._now()
        for t in self.targets:
            b = t.broadcaster
            if b.next_timer() - now > 2.0 * (1 << b.poll):
                b.next_send = now  # the wall clock went back: do not fall silent
            packet = b.on_timer(now, self.system())
            if packet is None:
                continue
            for sock, iface in t.routes:
                # Read the clock just before each send; the MAC covers it.
                self._send(t, sock, iface, packet.finish(unix_ns_to_ntp(self.time_ns())))
        self._schedule()

    def _send(self, t: _Target, sock: socket.socket, iface: CastInterface | None,
              data: bytes) -> None:
        port = sock.getsockname()[1]
        dest: tuple[str, int] | tuple[str, int, int, int] = (str(t.dest), port)
        try:
            if t.dest.is_multicast and iface is not None:
                if t.dest.version == 4:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                    iface.address.packed)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, t.hops or 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, iface.index)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS,
                                    t.hops or 1)
                    dest = (str(t.dest), port, 0, iface.index)
                sock.sendto(data, dest)
            elif t.dest.version == 4:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                try:
                    sock.sendto(data, dest)
                finally:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 0)
            else:
                sock.sendto(data, dest)
        except OSError as exc:
            self.send_errors += 1
            self._log_once.warning(("broadcast", str(t.dest), exc.errno),
                                   "cannot broadcast to %s: %s", t.dest, exc.strerror)
