"""Mode 6 (ntpq) in the daemon: what the daemon knows, for proto.control's responder.

The serving path queues mode 6 requests (Responder.take_control) and calls `answer` after each
batch with the socket they came in on; restrict has been applied already (ignore and noquery
never get here). Each request costs what it asks for, never the size of the MRU list: the
responder refuses what it refuses before asking for anything, and LiveState builds only what
a request needs — the system variables (from the responder's and the engine's last result)
for readvar, one association for its id, every association for readstat, one reference
clock's variables for cv, the variables ntpq asks for by name (mode6vars) only those
groups a request names, and for mrulist a view of the MRU list read in place, a page at a
time.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from pyntpd import __version__
from pyntpd.daemon import mode6vars
from pyntpd.daemon.serve import address_text
from pyntpd.daemon.sources import Peer
from pyntpd.daemon.syncloop import Synchroniser
from pyntpd.proto.access import address_key
from pyntpd.proto.broadcast import BroadcastAssociation
from pyntpd.proto.control import (
    SST_LOCAL,
    SST_UHF,
    AccessMru,
    ControlResponder,
    ControlSnapshot,
    ControlState,
    PeerInfo,
    filter_register,
)
from pyntpd.proto.server import Responder, ServerCounters
from pyntpd.proto.source import State
from pyntpd.proto.timestamp import unix_ns_to_ntp, unix_to_ntp
from pyntpd.refclock import drop_reasons
from pyntpd.refclock.base import RefclockPeer
from pyntpd.sync.engine import SourceStatus

LOCAL_ASSOCID = 1


class ControlService:
    def __init__(
        self,
        responder: Responder,
        synchroniser: Callable[[], Synchroniser | None],
        time_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.responder = responder
        self.synchroniser = synchroniser
        self.time_ns = time_ns
        self.control = ControlResponder(os.urandom(32))
        self._ids: dict[Peer | RefclockPeer, int] = {}
        self._cast_ids: dict[str, int] = {}  # `broadcast` lines by address
        self._next_id = LOCAL_ASSOCID + 1
        self.sent = 0
        self.send_errors = 0
        self.requests = 0  # mode 6 requests handled (the metrics endpoint reports it)
        self.started_ns = time_ns()  # counters count from here (ntpq's uptime, resets)
        # The serving counters to report: with --workers, every process's (controlrelay).
        self.counters: Callable[[], ServerCounters] = lambda: responder.counters
        responder.control_enabled = True

    def _associd(self, peer: Peer | RefclockPeer) -> int:
        associd = self._ids.get(peer)
        if associd is None:
            associd = self._ids[peer] = self._next_id
            self._next_id += 1
        return associd

    def _refresh_ids(self, sync: Synchroniser) -> None:
        """Association ids for the live associations (new ones numbered on: reference
        clocks, servers and peers, broadcasts), none for gone ones; as many steps as there
        are associations."""
        live: set[Peer | RefclockPeer] = {*sync.sources.peers, *sync.refclocks.peers}
        if any(p not in live for p in self._ids):
            self._ids = {p: i for p, i in self._ids.items() if p in live}
        for clock in sync.refclocks.peers:
            self._associd(clock)
        for peer in sync.sources.peers:
            self._associd(peer)
        for target in sync.broadcaster.targets:
            if target.config.address not in self._cast_ids:
                self._cast_ids[target.config.address] = self._next_id
                self._next_id += 1

    def _system_peer(self, sync: Synchroniser | None) -> tuple[int, bool]:
        """The system peer's association id (the local clock's while it is what we serve;
        0: none), and whether it is a reference clock."""
        if sync is None:
            return 0, False
        self._refresh_ids(sync)
        last = sync.last
        if last is not None and last.system_peer is not None:
            associd = self._ids.get(last.system_peer, 0)  # type: ignore[arg-type]
            if associd:
                return associd, last.system_peer in sync.refclocks.peers
        local = self._local_clock(sync, self.responder.system.synchronised)
        return (LOCAL_ASSOCID if local is not None and local.tally == "*" else 0), False

    def system(self, now_ns: int) -> ControlSnapshot:
        """The system variables alone (no associations, no MRU list): what readvar needs."""
        s = self.responder.system
        sync = self.synchroniser()
        last = sync.last if sync is not None else None
        system_peer, refclock_peer = self._system_peer(sync)
        uname = platform.uname()
        return ControlSnapshot(
            version=f"pyntpd {__version__}", processor=uname.machine,
            system=f"{uname.system}/{uname.release}", leap=s.leap, stratum=s.stratum,
            precision=s.precision, rootdelay=s.root_delay, rootdisp=s.root_dispersion,
            refid=s.refid, reftime=s.reference_time, clock=unix_ns_to_ntp(now_ns),
            peer=system_peer, refclock=system_peer == LOCAL_ASSOCID or refclock_peer,
            clock_source=(SST_LOCAL if system_peer == LOCAL_ASSOCID
                          else SST_UHF if refclock_peer else None),
            offset=last.offset if last is not None else 0.0,
            frequency=last.frequency if last is not None else 0.0,
            sys_jitter=last.jitter if last is not None else 0.0,
        )

    def associations(self) -> list[PeerInfo]:
        """Every association as ntpq sees it: the local clock, reference clocks, servers
        and peers, broadcasts."""
        sync = self.synchroniser()
        if sync is None:
            return []
        system_peer, _ = self._system_peer(sync)
        last = sync.last
        peers = [self._refclock_info(clock, self._ids[clock],
                                     last.sources.get(clock) if last is not None else None)
                 for clock in sync.refclocks.peers]
        peers += [self._peer_info(peer, self._ids[peer],
                                  last.sources.get(peer) if last is not None else None)
                  for peer in sync.sources.peers]
        peers += self._broadcasts(sync)
        local = self._local_clock(sync, system_peer == LOCAL_ASSOCID)
        return [local, *peers] if local is not None else peers

    def association(self, associd: int) -> PeerInfo | None:
        """One association, without building the others."""
        sync = self.synchroniser()
        if sync is None:
            return None
        system_peer, _ = self._system_peer(sync)
        if associd == LOCAL_ASSOCID:
            return self._local_clock(sync, system_peer == LOCAL_ASSOCID)
        last = sync.last
        for known, known_id in self._ids.items():
            if known_id == associd:
                status = last.sources.get(known) if last is not None else None
                if isinstance(known, RefclockPeer):
                    return self._refclock_info(known, associd, status)
                return self._peer_info(known, associd, status)
        if associd in self._cast_ids.values():
            return next(p for p in self._broadcasts(sync) if p.associd == associd)
        return None

    def clock_variables(self, associd: int) -> tuple[int, dict[str, str]] | None:
        """A reference clock's status word and variables (ntpq's `cv`)."""
        sync = self.synchroniser()
        if sync is None:
            return None
        self._refresh_ids(sync)
        for clock in sync.refclocks.peers:
            if self._ids.get(clock) == associd:
                return clock.status_word(), clock.clock_variables()
        return None

    def snapshot(self, now_ns: int) -> ControlSnapshot:
        """The system variables, every association and reference clock, without the MRU
        list (the metrics endpoint, which needs only the list's size)."""
        sync = self.synchroniser()
        clocks: dict[int, tuple[int, dict[str, str]]] = {}
        if sync is not None:
            self._refresh_ids(sync)
            clocks = {self._ids[c]: (c.status_word(), c.clock_variables())
                      for c in sync.refclocks.peers}
        return replace(self.system(now_ns), peers=tuple(self.associations()), clocks=clocks)

    def named_variables(self, wanted: frozenset[str], now_ns: int,
                        state: ControlState) -> dict[str, str]:
        """The variables ntpd gives only when asked by name, each group computed only when
        `wanted` names one of its variables (sysinfo's needs the system peer, monstats'
        only the MRU list's ends, never a walk of it)."""
        uptime = (now_ns - self.started_ns) / 1e9
        out: dict[str, str] = {}
        if wanted & mode6vars.SYSINFO:
            system = state.system_snapshot()
            peer = state.association(system.peer) if system.peer else None
            out.update(mode6vars.system_peer(peer, system.rootdelay, system.rootdisp))
        if wanted & (mode6vars.SYSSTATS | mode6vars.IOSTATS):
            counters = self.counters()
            if wanted & mode6vars.SYSSTATS:
                out.update(mode6vars.sysstats(counters, self.requests, uptime))
            if wanted & mode6vars.IOSTATS:
                out.update(mode6vars.iostats(counters, uptime))
        if wanted & mode6vars.MONSTATS:
            out.update(mode6vars.monstats(self.responder.access, now_ns / 1e9))
        if wanted & mode6vars.AUTHINFO:
            out.update(mode6vars.authinfo(self.responder.keys, uptime))
        return out

    def _local_clock(self, sync: Synchroniser, serving_it: bool) -> PeerInfo | None:
        """127.127.1.0 as ntpq shows it: LOCAL(0), '*' while it is what we serve."""
        clocks = [c for c in sync.config.local_clocks if not c.noselect]
        if not clocks:
            return None
        clock = min(clocks, key=lambda c: c.stratum)
        refid = clock.refid.encode("ascii", "replace")[:4].ljust(4, b"\0")
        selected = serving_it and self.responder.system.refid == refid
        return PeerInfo(associd=LOCAL_ASSOCID, srcadr=clock.address, srcport=0,
                        srchost=f"LOCAL({clock.unit})", leap=0, stratum=clock.stratum,
                        refid=refid, refclock=True, reach=0o377, hmode=3, pmode=4,
                        tally="*" if selected else " ")

    def _broadcasts(self, sync: Synchroniser) -> list[PeerInfo]:
        """`broadcast` lines, as ntpd lists them: type B/M, refid BCST/MCST, never reached."""
        infos = []
        for target in sync.broadcaster.targets:
            associd = self._cast_ids[target.config.address]  # numbered by _refresh_ids
            key_id = target.config.key or 0
            infos.append(PeerInfo(
                associd=associd, srcadr=target.config.address,
                srcport=target.routes[0][0].getsockname()[1],
                refid=b"MCST" if target.dest.is_multicast else b"BCST", hmode=5, pmode=0,
                hpoll=target.config.minpoll, ppoll=target.config.minpoll, keyid=key_id,
                authenable=key_id != 0))
        return infos

    @staticmethod
    def _refclock_info(clock: RefclockPeer, associd: int,
                       status: SourceStatus | None) -> PeerInfo:
        """A reference clock as ntpq shows it: SHM(0), t = l, its code as refid."""
        fields: dict[str, object] = {}
        flash = 0
        if status is not None:
            fields = {"tally": status.tally, "offset": status.offset, "delay": status.delay,
                      "jitter": status.jitter, "dispersion": status.dispersion}
            flash = int(status.unfit)
        sample = clock.last_sample
        if sample is not None:
            fields.update(reftime=sample.reference_time, rec=unix_to_ntp(sample.local_time))
        refid = clock.fudge.refid if clock.fudge.refid is not None else clock.refid
        return PeerInfo(
            associd=associd, srcadr=clock.address, srcport=0, srchost=clock.name,
            leap=clock.leap, stratum=clock.fudge.stratum, precision=clock.precision,
            refid=refid, refclock=True, reach=clock.reach, hpoll=clock.poll,
            ppoll=clock.poll, flash=flash, hmode=3, pmode=4, received=clock.received,
            dropped={**dict.fromkeys(drop_reasons(clock.clock_type), 0), **clock.drops},
            **fields)  # type: ignore[arg-type]

    @staticmethod
    def _peer_info(peer: Peer, associd: int, status: SourceStatus | None) -> PeerInfo:
        a = peer.assoc
        sample = a.last_sample
        fields: dict[str, object] = {}
        flash = 0 if a.state == State.ACTIVE else 0x400
        if status is not None:
            fields = {"tally": status.tally, "offset": status.offset, "delay": status.delay,
                      "jitter": status.jitter, "dispersion": status.dispersion}
            flash |= int(status.unfit)  # ntpd's peer tests: why it is not selected
        if sample is not None:
            fields.update(rootdelay=sample.root_delay, rootdisp=sample.root_dispersion,
                          reftime=sample.reference_time, precision=sample.precision,
                          rec=unix_to_ntp(sample.local_time))
        delays, offsets, disps = filter_register(a.register)
        dstadr, dstport = _local_endpoint(peer)
        return PeerInfo(
            associd=associd, srcadr=peer.address, srcport=peer.ntp_port,
            leap=a.leap, stratum=a.stratum, refid=a.refid, reach=a.reach, unreach=a.unreach,
            hpoll=a.poll, ppoll=a.ppoll or a.poll, flash=flash,
            srchost=None if peer.address == peer.config.address else peer.config.address,
            keyid=a.spec.key.key_id if a.spec.key is not None else 0,
            authenable=a.spec.key is not None or a.spec.nts, authentic=a.authentic,
            # Symmetric active (1) for `peer`; the peer's mode as last heard (1 or 2); a
            # broadcast client association is ntpd's MODE_BCLIENT (6) once it only listens.
            hmode=(1 if a.spec.symmetric
                   else 6 if isinstance(a, BroadcastAssociation) and not a.calibrating else 3),
            pmode=a.pmode or (0 if a.spec.symmetric else 4),
            received=a.received,
            dropped={reason.value: n for reason, n in a.drops.items()},
            filtdelay=delays, filtoffset=offsets, filtdisp=disps,
            dstadr=dstadr, dstport=dstport,
            named={"received": str(a.received)},  # pstats: datagrams from the peer
            interleaved=a.interleaved,
            transmit_stamps={stamp.value: n for stamp, n in a.transmit_stamps.items()},
            **fields,  # type: ignore[arg-type]
        )

    def answer(self, sock: socket.socket) -> None:
        self.answer_queued(sock, self.responder.take_control())

    def answer_queued(self, sock: socket.socket,
                      queued: list[tuple[bytes, int, bool, int, int]]) -> None:
        """Answer `queued` requests on `sock`: this process's, or a worker's (controlrelay)."""
        if not queued:
            return
        # The keys and controlkey of the running configuration (a reload may change them).
        self.control.keys = self.responder.keys
        sync = self.synchroniser()
        self.control.control_key = sync.config.control_key if sync is not None else None
        self.requests += len(queued)
        now_ns = self.time_ns()
        state = LiveState(self, now_ns)
        for data, address, is_v6, port, flags in queued:
            key = address_key(address, is_v6)
            for fragment in self.control.respond(data, key, flags, now_ns / 1e9, state):
                try:
                    sock.sendto(fragment, (address_text(address, is_v6), port))
                    self.sent += 1
                except OSError:
                    self.send_errors += 1


class LiveState:
    """The daemon's state for one batch of mode 6 requests (proto.control.ControlState): each
    part is built when a request first needs it and kept for the rest of the batch, and the
    MRU list is read in place, a page at a time. A refused request builds nothing."""

    def __init__(self, service: ControlService, now_ns: int) -> None:
        self._service = service
        self._now_ns = now_ns
        self._system: ControlSnapshot | None = None
        self._associations: list[PeerInfo] | None = None

    @property
    def leap(self) -> int:
        return self._service.responder.system.leap

    def system_snapshot(self) -> ControlSnapshot:
        if self._system is None:
            self._system = self._service.system(self._now_ns)
        return self._system

    def associations(self) -> list[PeerInfo]:
        if self._associations is None:
            self._associations = self._service.associations()
        return self._associations

    def association(self, associd: int) -> PeerInfo | None:
        if self._associations is not None:
            return next((p for p in self._associations if p.associd == associd), None)
        return self._service.association(associd)

    def clock_variables(self, associd: int) -> tuple[int, dict[str, str]] | None:
        return self._service.clock_variables(associd)

    def mru_view(self, now: float) -> AccessMru:
        return AccessMru(self._service.responder.access)

    def named_variables(self, names: Sequence[str]) -> dict[str, str]:
        return self._service.named_variables(frozenset(names), self._now_ns, self)


def _local_endpoint(peer: Peer) -> tuple[str, int]:
    """ntpd's dstadr/dstport: the local address and port the association's packets leave
    from (its own connected socket, or the serving socket a symmetric peer shares)."""
    address = peer.local_address() or ("::" if peer.family == socket.AF_INET6 else "0.0.0.0")
    sock = peer.sock or peer.via
    try:
        port = sock.getsockname()[1] if sock is not None else 123
    except OSError:
        port = 123
    return address, port
