"""Upstream servers on the wire: name resolution, one connected socket per association.

Each association sends from its own UDP socket, connected to the server and bound to a
random ephemeral port, so an off-path attacker must guess the port as well as the 64-bit
random transmit timestamp (proto.source) to inject a reply; the kernel drops datagrams from
any other address or port before we see them. Replies carry kernel receive timestamps, and
requests kernel transmit timestamps (daemon/txstamp): read from the socket's error queue
right after the send and before any reply is looked at, they become T1.

Names are resolved asynchronously (the event loop's resolver; with -i a helper process
outside the jail, daemon/resolver) and retried with back-off when they fail; `pool` lines
expand to several associations, and a pool member that stops answering is replaced by a
fresh address from the next resolution. These tasks are supervised (daemon/tasks): one that
dies of an unexpected error is logged and started again, never silently gone.

`server HOST nts`: NTS-KE with HOST comes first (daemon/ntsketls, TCP `ntsport`, default 4460;
the certificate must name HOST); NTP then goes to the server and port the NTS-KE response
names (default: HOST's address, port 123). When the association runs out of cookies or gets
an NTS NAK, NTS-KE runs again in the background, with back-off on failure; polls meanwhile
are skipped (and count as unanswered).

`peer HOST key N` (symmetric active, proto.source): ntpd, ntpsec and chrony send peer
packets from their NTP socket to the peer's NTP port, so a symmetric association has no
socket of its own. Its packets leave from a serving socket (the one the peer was last heard
on, else the first of its family), and the peer's packets arrive there: the responder hands
those from a configured peer's address and port over (`symmetric_addresses`, `deliver`).

Broadcast client (`broadcastclient`, `multicastclient`; proto.broadcast): broadcasts arrive
on the serving sockets too and the responder hands them over (`deliver_broadcast`). The
first authentic one from a broadcaster mobilises an association, which gets a socket of its
own, like a server's, for the calibration exchange only; once the exchange has given its
offset the socket is closed and the association just listens. An association that gives up
(calibration refused, no answer, silence) is dropped; the broadcaster's next packet may
mobilise a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from pyntpd.config.diagnostics import Location
from pyntpd.config.keys import SymmetricKey
from pyntpd.config.model import NO_LOCATION, ServerConfig
from pyntpd.daemon.ipfamilies import family_name, unreachable
from pyntpd.daemon.ntsketls import KeFailure, key_exchange
from pyntpd.daemon.resolver import Lookup, lookup_here
from pyntpd.daemon.serve import SO_TIMESTAMPNS, address_text, receive_timestamp_ns
from pyntpd.daemon.tasks import Supervisor
from pyntpd.daemon.txstamp import CLIENT_FLAGS, RECEIVE_ANCILLARY, RequestStamps, read_stamps
from pyntpd.daemon.txstamp import enable as enable_stamps
from pyntpd.logonce import LogOnce
from pyntpd.proto.auth import KeyRing
from pyntpd.proto.broadcast import BroadcastAssociation, BroadcastClient, Heard
from pyntpd.proto.nts import NtsSession
from pyntpd.proto.packet import MAX_PACKET_LEN
from pyntpd.proto.server import PeerPacket
from pyntpd.proto.source import Association, SourceSpec
from pyntpd.proto.timestamp import unix_ns_to_ntp
from pyntpd.types import Sample, SystemVars

log = logging.getLogger("pyntpd")

RESOLVE_RETRY_MIN = 16.0
RESOLVE_RETRY_MAX = 3600.0
POOL_REPLACE_AFTER = 8  # polls without a reply before a pool member is replaced
DEFAULT_POOL_SIZE = 4

DEAD_MEMORY = 3600.0  # seconds a replaced pool address is not taken again
WALL_JUMP = 0.5  # s the wall clock may move back against the monotonic one before we follow
KE_RETRY_MIN = 16.0
KE_RETRY_MAX = 3600.0
KE_ADDRESSES = 4  # addresses of one name tried in turn for NTS-KE

SampleHandler = Callable[["Peer", Sample], None]


def spec_for(
    server: ServerConfig, address: str, max_distance: float, key: SymmetricKey | None = None
) -> SourceSpec:
    return SourceSpec(
        address=address, port=server.port, minpoll=server.minpoll, maxpoll=server.maxpoll,
        iburst=server.iburst, burst=server.burst, prefer=server.prefer,
        noselect=server.noselect, true=server.true, version=server.version,
        max_distance=max_distance, key=key, nts=server.nts, symmetric=server.kind == "peer",
        xleave=server.xleave,
    )


def is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def address_family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


@dataclass(eq=False)
class Peer:
    """One association and its socket."""

    config: ServerConfig
    address: str
    assoc: Association
    sock: socket.socket | None = None
    port: int = 0  # where NTP goes; 0: the configured port (NTS-KE may name another)
    rekeying: bool = False
    ke_retry_at: float = 0.0
    ke_delay: float = KE_RETRY_MIN
    via: socket.socket | None = None  # symmetric: the serving socket the peer was heard on
    stamps: RequestStamps = field(default_factory=RequestStamps)  # kernel T1 of requests
    # The kernel's transmit stamps are on our clock's timescale only if our clock is the
    # kernel's (not a simulated one injected into the daemon).
    kernel_time: bool = True

    @property
    def ntp_port(self) -> int:
        return self.port or self.config.port

    @property
    def symmetric(self) -> bool:
        return self.assoc.spec.symmetric

    @property
    def route(self) -> tuple[int, bool, int]:
        """(address, is_v6, port) as the responder keys a datagram's source."""
        return self.address_int, self.family == socket.AF_INET6, self.ntp_port

    @property
    def family(self) -> int:
        return address_family(self.address)

    @property
    def address_int(self) -> int:
        return int(ipaddress.ip_address(self.address))

    def local_address(self) -> str | None:
        """The address we reach the peer from (ntpd's orphan election compares it with the
        peer's): our connected socket's, or, for a symmetric peer that shares the serving
        sockets, the one the kernel would choose (connecting a UDP socket sends nothing)."""
        try:
            if self.sock is not None:
                return str(self.sock.getsockname()[0]).split("%", 1)[0]
            with socket.socket(self.family, socket.SOCK_DGRAM) as probe:
                probe.connect((self.address, self.ntp_port))
                return str(probe.getsockname()[0]).split("%", 1)[0]
        except OSError:
            return None

    def open(self) -> None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.stamps = RequestStamps(
                enabled=self.kernel_time and enable_stamps(sock, CLIENT_FLAGS))
            sock.setblocking(False)
            # connect() binds a random ephemeral port and makes the kernel filter replies.
            sock.connect((self.address, self.ntp_port))
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


@dataclass
class SourceManager:
    """Keeps the configured servers resolved, polled and listened to."""

    servers: tuple[ServerConfig, ...]
    on_sample: SampleHandler
    time_ns: Callable[[], int]
    local_precision: int = -20
    max_distance: float = 1.5
    max_sources: int = 10  # `tos maxclock`: no pool grows the set beyond this
    # -4 / -6, or the one family this host has (daemon/ipfamilies): names resolve to it only
    family: int = socket.AF_UNSPEC
    peers: list[Peer] = field(default_factory=list)
    on_change: Callable[[], None] = lambda: None
    keys: KeyRing = field(default_factory=KeyRing)
    nts_ca: str | None = None  # `nts ca`: trust anchors for NTS-KE servers (None: system)
    serving: list[socket.socket] = field(default_factory=list)  # symmetric peers send here
    system: Callable[[], SystemVars] = SystemVars  # what our symmetric packets state
    broadcast: BroadcastClient | None = None  # broadcastclient / multicastclient
    broadcast_location: Location = NO_LOCATION  # the line that enabled the broadcast client
    # (host, port, family) -> addresses: here, or outside the jail (daemon/resolver)
    lookup: Lookup = lookup_here
    kernel_time: bool = True  # the clock is CLOCK_REALTIME: kernel T1 is on its timescale
    tasks: Supervisor = field(default_factory=Supervisor)  # restarted if they die
    _dead: dict[str, float] = field(default_factory=dict)  # replaced address -> when
    _timer: asyncio.TimerHandle | None = None
    _skew: float | None = None  # wall clock minus monotonic clock at the last reschedule
    _closed: bool = False
    _once: LogOnce = field(default_factory=lambda: LogOnce(log))

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        for server in self.servers:
            if server.key is not None and self.keys.trusted_key(server.key) is None:
                # Polling without the key would quietly trade authentication away.
                why = ("is not listed in 'trustedkey'" if server.key in self.keys.keys
                       else "is not in the keys file")
                log.error("%s: key %d %s: %s is not polled", server.location, server.key, why,
                          server.address)
                continue
            if not self._family_allowed(server):
                continue
            if server.nts:
                self.tasks.spawn(f"NTS-KE with {server.address}",
                                 lambda s=server: self._nts_start(s))
            else:
                self.tasks.spawn(f"resolving {server.address}",
                                 lambda s=server: self._resolve_loop(s))

    def close(self) -> None:
        self._closed = True
        self.tasks.close()
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        for peer in self.peers:
            if peer.sock is not None:
                loop.remove_reader(peer.sock.fileno())
            peer.close()
        self.peers = []

    # --- resolution -------------------------------------------------------------------

    def _family_allowed(self, server: ServerConfig) -> bool:
        """A literal address of a family we cannot use is never polled: said once, at start."""
        if not is_literal(server.address):
            return True
        family = address_family(server.address)
        if self.family in (socket.AF_UNSPEC, family):
            return True
        name = family_name(family)
        log.error("%s: %s is an %s address, and %s is not used here (not available on this "
                  "host, or -%s): not polled", server.location, server.address, name, name,
                  "4" if family == socket.AF_INET6 else "6")
        return False

    async def _lookup(self, host: str, port: int) -> list[str]:
        if is_literal(host):
            return [host.split("%", 1)[0]]
        return await self.lookup(host, port, self.family)

    async def _resolve_loop(self, server: ServerConfig) -> None:
        """Resolve until the server (or the pool's share) has associations; back off."""
        delay = RESOLVE_RETRY_MIN
        while not self._closed:
            try:
                addresses = await self._lookup(server.address, server.port)
            except (OSError, UnicodeError) as exc:
                log.warning("cannot resolve %s: %s; retrying in %.0f s", server.address,
                            getattr(exc, "strerror", None) or exc, delay)
                addresses = []
            if addresses and self._add(server, addresses):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESOLVE_RETRY_MAX)

    def _add(self, server: ServerConfig, addresses: list[str]) -> bool:
        now = self._now()
        self._dead = {a: t for a, t in self._dead.items() if now - t < DEAD_MEMORY}
        # The same address on another port is another server (tests, chrony's `port`).
        used = {(p.address, p.config.port) for p in self.peers}
        used |= {(a, server.port) for a in self._dead}
        wanted = DEFAULT_POOL_SIZE if server.kind == "pool" else 1
        have = sum(1 for p in self.peers if p.config is server)
        added = False
        for address in addresses:
            if have >= wanted or len(self.peers) >= self.max_sources:
                break
            if (address, server.port) in used:
                continue
            if self._open_peer(server, address):
                have += 1
                added = True
        if added:
            self.on_change()
        return have >= wanted or (added and len(self.peers) >= self.max_sources)

    # --- NTS --------------------------------------------------------------------------------

    async def _key_exchange(self, server: ServerConfig) -> NtsSession | None:
        """NTS-KE with the server's addresses in turn (the name resolved as every name is,
        so also from outside a jail), the certificate checked against its name."""
        try:
            addresses = await self._lookup(server.address, server.nts_port)
        except (OSError, UnicodeError) as exc:
            log.warning("cannot resolve %s for NTS-KE: %s", server.address,
                        getattr(exc, "strerror", None) or exc)
            return None
        failure: Exception = KeFailure(f"{server.address} has no address")
        for address in addresses[:KE_ADDRESSES]:
            try:
                return await key_exchange(server.address, server.nts_port, self.nts_ca,
                                          connect_to=address, family=self.family)
            except (KeFailure, OSError) as exc:
                failure = exc
        log.warning("NTS-KE with %s port %d failed: %s", server.address, server.nts_port,
                    getattr(failure, "strerror", None) or failure)
        return None

    async def _nts_start(self, server: ServerConfig) -> None:
        """NTS-KE until it works (backing off), then the association it names."""
        delay = KE_RETRY_MIN
        while not self._closed:
            session = await self._key_exchange(server)
            if session is not None:
                host = session.server or server.address
                port = session.port or server.port
                try:
                    addresses = await self._lookup(host, port)
                except (OSError, UnicodeError) as exc:
                    log.warning("cannot resolve %s (from NTS-KE with %s): %s", host,
                                server.address, exc)
                    addresses = []
                for address in addresses:
                    if self._open_peer(server, address, port, session):
                        self.on_change()
                        return
            await asyncio.sleep(delay)
            delay = min(delay * 2, KE_RETRY_MAX)

    async def _rekey(self, peer: Peer) -> None:
        """Fresh keys and cookies for a running NTS association (same server and port)."""
        if peer not in self.peers:
            return  # dropped meanwhile
        peer.rekeying = True
        try:
            session = await self._key_exchange(peer.config)
        finally:
            peer.rekeying = False
        if session is None:
            peer.ke_retry_at = self._now() + peer.ke_delay
            peer.ke_delay = min(peer.ke_delay * 2, KE_RETRY_MAX)
            return
        peer.ke_delay = KE_RETRY_MIN
        peer.assoc.nts = session
        log.info("NTS: new keys and %d cookies from %s", len(session.cookies),
                 peer.config.address)

    def _rekey_if_needed(self, peer: Peer, now: float) -> None:
        nts = peer.assoc.nts
        if (peer.assoc.spec.nts and nts is not None and nts.needs_ke and not peer.rekeying
                and now >= peer.ke_retry_at):
            self.tasks.spawn(f"NTS-KE again with {peer.config.address}",
                             lambda p=peer: self._rekey(p))

    def _open_peer(self, server: ServerConfig, address: str, port: int = 0,
                   session: NtsSession | None = None) -> bool:
        key = None if server.key is None else self.keys.trusted_key(server.key)
        assoc = Association(spec_for(server, address, self.max_distance, key),
                            local_precision=self.local_precision, nts=session)
        peer = Peer(server, address, assoc, port=port, kernel_time=self.kernel_time)
        if not peer.symmetric:
            try:
                peer.open()
            except OSError as exc:
                if not unreachable(exc):
                    log.warning("cannot open a socket to %s (%s): %s", address,
                                server.address, exc.strerror)
                else:
                    # IPv6 disabled by sysctl (no source address), no route: every address
                    # of the family fails alike, so it is said once while it lasts, and
                    # the other addresses (a pool's IPv4 members) are used instead.
                    self._once.warning(("unreachable", peer.family),
                                       "cannot reach %s addresses (%s, for %s): %s; using "
                                       "other addresses while this lasts",
                                       family_name(peer.family), address, server.address,
                                       exc.strerror)
                return False
            self._once.reset(("unreachable", peer.family))
            assert peer.sock is not None
            asyncio.get_running_loop().add_reader(peer.sock.fileno(), self._readable, peer)
        assoc.start(self._now())
        self.peers.append(peer)
        where = address if peer.ntp_port == 123 else f"{address} port {peer.ntp_port}"
        log.info("%s with %s%s%s", "symmetric association" if peer.symmetric
                 else "association", where,
                 "" if address == server.address else f" ({server.address})",
                 ", NTS" if session is not None else "")
        self._reschedule()
        return True

    # --- polling ----------------------------------------------------------------------

    def _now(self) -> float:
        return self.time_ns() / 1e9

    def _follow_wall_clock(self, loop: asyncio.AbstractEventLoop) -> None:
        """Polls are due in wall-clock time but waited for on the monotonic clock. If
        someone else sets the wall clock back, move the schedule with it, or nothing would
        poll until the wall clock caught up (an hour for an hour). A jump forward (also
        what a resume from suspend looks like) just makes the polls due now."""
        skew = self._now() - loop.time()
        if self._skew is not None and skew < self._skew - WALL_JUMP:
            for peer in self.peers:
                peer.assoc.shift_timer(skew - self._skew)
        self._skew = skew

    def _reschedule(self) -> None:
        if self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._follow_wall_clock(loop)
        active = [t for p in self.peers if (t := p.assoc.next_timer()) != math.inf]
        if not active:
            self._timer = None
            return
        self._timer = loop.call_later(max(0.0, min(active) - self._now()), self._poll_due)

    def _poll_due(self) -> None:
        now = self._now()
        for peer in list(self.peers):
            if peer.assoc.on_timer(now):
                self._send(peer, now)
            self._rekey_if_needed(peer, now)
            assoc = peer.assoc
            if isinstance(assoc, BroadcastAssociation) and assoc.demobilised is not None:
                self._demobilise(peer, assoc)
        self._replace_dead_pool_members()
        self._reschedule()

    def _send(self, peer: Peer, now: float) -> None:
        if peer.symmetric:
            self._send_symmetric(peer, now)
            return
        request = peer.assoc.make_request(now)
        if peer.sock is None or request is None:
            return
        try:
            peer.assoc.sent(unix_ns_to_ntp(self.time_ns()))
            peer.sock.send(request)
        except OSError as exc:
            # ICMP unreachable and the like: the reach register records the silence.
            peer.stamps.failed()
            log.debug("send to %s failed: %s", peer.address, exc.strerror)
            return
        if peer.stamps.enabled:
            peer.stamps.sent()
            self._collect_stamps(peer)

    @staticmethod
    def _collect_stamps(peer: Peer) -> None:
        """The kernel's transmit stamps on the association's error queue: the outstanding
        request's becomes its T1. The queue is read whether or not a stamp is awaited:
        epoll calls a socket with a non-empty error queue readable until it is read."""
        if peer.sock is None:
            return
        for key, stamp_ns in read_stamps(peer.sock):
            if peer.stamps.take(key):
                peer.assoc.transmitted(unix_ns_to_ntp(stamp_ns))

    def _serving_socket(self, peer: Peer) -> socket.socket | None:
        if peer.via is not None and peer.via.fileno() >= 0:
            return peer.via
        return next((s for s in self.serving if s.family == peer.family and s.fileno() >= 0),
                    None)

    def _send_symmetric(self, peer: Peer, now: float) -> None:
        sock = self._serving_socket(peer)
        packet = peer.assoc.make_symmetric(now, unix_ns_to_ntp(self.time_ns()), self.system())
        if sock is None:
            log.debug("no serving socket for %s: symmetric packet not sent", peer.address)
            return
        try:
            sock.sendto(packet, (peer.address, peer.ntp_port))
        except OSError as exc:
            log.debug("send to %s failed: %s", peer.address, exc.strerror)

    def symmetric_addresses(self) -> frozenset[tuple[int, bool, int]]:
        """Where the responder may take symmetric packets from: the configured peers."""
        return frozenset(p.route for p in self.peers if p.symmetric)

    def deliver(self, sock: socket.socket, packets: list[PeerPacket]) -> None:
        """Symmetric packets the responder took from configured peers' addresses."""
        routes = {p.route: p for p in self.peers if p.symmetric}
        for packet in packets:
            peer = routes.get((packet.address, packet.is_v6, packet.port))
            if peer is None:
                continue  # unconfigured meanwhile (reload)
            heard = peer.assoc.heard_at
            sample = peer.assoc.receive(packet.data, packet.receive_ts, packet.now)
            if peer.assoc.heard_at != heard:
                peer.via = sock  # an authentic packet: answer on the socket it came to
            if sample is not None:
                self.on_sample(peer, sample)

    # --- broadcast client ---------------------------------------------------------------

    def deliver_broadcast(self, packets: list[PeerPacket]) -> None:
        """Broadcasts the responder took; only authentic ones reach an association."""
        client = self.broadcast
        if client is None:
            return
        for packet in packets:
            known = client.associations.get((packet.address, packet.is_v6, packet.port))
            pending = known is not None and known.unicast_offset is not None
            heard = client.receive(packet.data, packet.address, packet.is_v6, packet.port,
                                   packet.receive_ts, packet.now)
            assoc = heard.association
            if assoc is None:
                self._broadcast_refused(packet, heard)
                continue
            peer = self._broadcast_peer(assoc) if not heard.created else \
                self._mobilise(assoc)
            if peer is None:
                continue
            if heard.sample is not None:
                if pending:
                    log.info("broadcast delay to %s calibrated: %.3f ms", peer.address,
                             assoc.delay * 1e3)
                self.on_sample(peer, heard.sample)
            if assoc.demobilised is not None:
                self._demobilise(peer, assoc)

    def _broadcast_refused(self, packet: PeerPacket, heard: Heard) -> None:
        where = packet.address, packet.is_v6
        self._once.warning(
            ("broadcast refused", where, heard.drop),
            "broadcast from %s dropped (%s): pyntpd listens only to broadcasts signed with a "
            "trusted key from a synchronised broadcaster", address_text(*where), heard.drop)

    def _broadcast_peer(self, assoc: BroadcastAssociation) -> Peer | None:
        return next((p for p in self.peers if p.assoc is assoc), None)

    def _mobilise(self, assoc: BroadcastAssociation) -> Peer | None:
        key = assoc.spec.key
        config = ServerConfig(
            "server", assoc.spec.address, port=assoc.spec.port, minpoll=assoc.spec.minpoll,
            maxpoll=assoc.spec.maxpoll, key=key.key_id if key is not None else None,
            version=assoc.spec.version, location=self.broadcast_location)
        peer = Peer(config, assoc.spec.address, assoc, kernel_time=self.kernel_time)
        if assoc.calibrating:
            try:
                peer.open()
            except OSError as exc:
                log.warning("cannot open a socket to broadcaster %s: %s", peer.address,
                            exc.strerror)
                assert self.broadcast is not None
                self.broadcast.forget(assoc)
                return None
            assert peer.sock is not None
            asyncio.get_running_loop().add_reader(peer.sock.fileno(), self._readable, peer)
        self.peers.append(peer)
        log.info("broadcast association with %s (key %s, every %d s): %s", peer.address,
                 config.key, 1 << assoc.ppoll,
                 "calibrating the delay with a client/server exchange" if assoc.calibrating
                 else f"delay {assoc.delay * 1e3:.3f} ms (broadcastdelay)")
        self.on_change()
        self._reschedule()
        return peer

    def _demobilise(self, peer: Peer, assoc: BroadcastAssociation) -> None:
        log.warning("broadcast association with %s dropped: %s", peer.address,
                    assoc.demobilised)
        if self.broadcast is not None:
            self.broadcast.forget(assoc)
        if peer in self.peers:
            self._drop(peer)

    def _calibrated(self, peer: Peer) -> None:
        """The calibration exchange is over: the association only listens from now on."""
        if peer.sock is not None:
            asyncio.get_running_loop().remove_reader(peer.sock.fileno())
            peer.close()

    def _readable(self, peer: Peer) -> None:
        sock = peer.sock
        if sock is None:
            return
        if peer.stamps.enabled:
            self._collect_stamps(peer)  # before the reply: it may be the stamp's request's
        for _ in range(16):  # a connected socket sees only its server; bounded anyway
            try:
                data, ancillary, _flags, _addr = sock.recvmsg(MAX_PACKET_LEN + 1,
                                                              RECEIVE_ANCILLARY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error from an earlier send
            rx_ns = receive_timestamp_ns(ancillary) or self.time_ns()
            sample = peer.assoc.receive(data, unix_ns_to_ntp(rx_ns), rx_ns / 1e9)
            if sample is not None:
                self.on_sample(peer, sample)
            self._rekey_if_needed(peer, rx_ns / 1e9)
            if isinstance(peer.assoc, BroadcastAssociation) and not peer.assoc.calibrating:
                self._calibrated(peer)
                return

    def _replace_dead_pool_members(self) -> None:
        for peer in list(self.peers):
            if (peer.config.kind == "pool" and peer.assoc.reach == 0
                    and peer.assoc.unreach >= POOL_REPLACE_AFTER):
                log.info("pool member %s (%s) is not answering; replacing it", peer.address,
                         peer.config.address)
                self._dead[peer.address] = self._now()
                self._drop(peer)
                self.tasks.spawn(f"resolving {peer.config.address}",
                                 lambda s=peer.config: self._resolve_loop(s))

    def _drop(self, peer: Peer) -> None:
        if peer.sock is not None:
            asyncio.get_running_loop().remove_reader(peer.sock.fileno())
        peer.close()
        self.peers.remove(peer)
        self.on_change()

    def clock_stepped(self) -> None:
        """Our clock was stepped (every association has moved its timer with it): wait for
        the new first poll, and do not take our own step for someone else's."""
        self._skew = None
        self._reschedule()
