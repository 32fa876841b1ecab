"""Broadcast and multicast NTP (RFC 5905 mode 5), both ends, as ntpd 4.2.8 runs them. Pure.

Server (`Broadcaster`, one per `broadcast` line): a mode 5 packet every 2**minpoll s (plus
ntpd's random 0-6 % so that broadcasters do not fall into step), stating our system
variables, origin and receive zero, and nothing at all while we are unsynchronised (ntpd's
transmit(): `if (sys_leap != LEAP_NOTINSYNC) peer_xmit(peer)`). The packet's transmit
timestamp is read by the caller just before the send and, with `key N`, the MAC covers it
(`BroadcastPacket.finish`), as for a signed reply.

Client (`BroadcastClient`, for `broadcastclient`/`multicastclient`): a broadcast is used
only if its MAC verifies under a trusted key -- there is no unauthenticated broadcast client
(ntpd has one with `disable auth`). The first authentic packet from a synchronised
broadcaster mobilises a `BroadcastAssociation` (at most `max_associations`), which is an
ordinary `Association` for the driver and the engine, pinned to the broadcaster's key and
poll interval. Then ntpd's calibration: unless `broadcastdelay` gives a positive delay, the
association runs a client/server exchange with the broadcaster (signed with the same key);
its first sample gives the offset, and the next broadcast, compared with it, the delay:
delay = 2 |offset(unicast) - (T3 - T4)(broadcast)|, refused above |broadcastdelay| (50 ms by
default, ntpd's Bug 3031). From then on every broadcast is one sample, offset = T3 - T4 +
delay / 2, and the association only listens.

What a broadcast must pass once its association exists (ntpd's AM_PROCPKT checks, and what
the replay attacks on them taught, CVE-2015-7973): the association's key id; the poll
interval it started with; at least one poll interval (less a second) since the last clean
packet, so a forger cannot crowd out the real one; a transmit timestamp newer than the last
one, except after a whole poll interval (and 2 s) without a clean packet, so a broadcaster
whose clock was stepped back is followed a poll later (ntpd's `tos bcpollbstep 1`; its
default, 0, lets a replayed packet through).
"""

from __future__ import annotations

import enum
import ipaddress
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from pyntpd.proto.auth import AuthResult, KeyRing, SymmetricKey, mac_trailer, signed_part
from pyntpd.proto.packet import Mode, NtpPacket, PacketError, decode, li_vn_mode
from pyntpd.proto.server import stated_system
from pyntpd.proto.source import MAX_POLL, MIN_POLL, Association, SourceDrop, SourceSpec
from pyntpd.proto.timestamp import ntp_diff, short_to_seconds
from pyntpd.types import PHI, STRATUM_UNSYNC, Leap, Sample, SystemVars

DEFAULT_DELAY = -0.050  # ntpd's broadcastdelay default: calibrate, refuse above 50 ms
EARLY_SLACK = 1.0  # s: ntpd counts whole seconds, so a packet a little early is not "early"
BACKSTEP_POLLS = 1  # poll intervals without a clean packet before time may go backwards
BACKSTEP_GRACE = 2.0  # s, ntpd's "+ 2"
SILENT_POLLS = 10  # ntpd's NTP_UNREACH: polls without a clean packet before we give up
_ZERO_ORG_REC = bytes(16)


# --- server ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BroadcastPacket:
    """A broadcast without its transmit timestamp: `finish` appends it, then the MAC."""

    prefix: bytes  # the first 40 bytes
    key: SymmetricKey | None

    def finish(self, transmit: int) -> bytes:
        message = self.prefix + transmit.to_bytes(8, "big")
        return message if self.key is None else message + mac_trailer(self.key, message)


def broadcast_prefix(system: SystemVars, now: float, version: int, poll: int) -> bytes:
    """Header up to the transmit timestamp: our system variables at `now`, mode 5, the poll
    exponent we broadcast at, origin and receive zero (a broadcast answers nobody)."""
    leap, stratum, middle = stated_system(system, now)
    return (bytes([li_vn_mode(leap, version, Mode.BROADCAST), stratum, poll & 0xFF])
            + middle + _ZERO_ORG_REC)


def _jitter() -> int:
    return secrets.randbelow(256)


@dataclass
class Broadcaster:
    """The schedule and packets of one `broadcast` line."""

    address: str
    poll: int = 6
    version: int = 4
    key: SymmetricKey | None = None
    random_jitter: Callable[[], int] = _jitter  # 0..255, ntpd's ntp_random() & 0xff
    next_send: float = math.inf
    sent: int = 0  # packets handed to the caller to send
    unsynchronised: int = 0  # broadcasts not sent because we were unsynchronised

    def start(self, now: float) -> None:
        self.next_send = now

    def next_timer(self) -> float:
        return self.next_send

    def shift_timer(self, seconds: float) -> None:
        self.next_send += seconds

    def interval(self) -> float:
        """2**poll s stretched by 0..255/4096, as ntpd's poll_update() does."""
        return float((4096 + self.random_jitter()) << self.poll) / 4096

    def on_timer(self, now: float, system: SystemVars) -> BroadcastPacket | None:
        """The timer fired: the packet to send now, or None (not due yet, or we are
        unsynchronised and say nothing)."""
        if now < self.next_send:
            return None
        self.next_send = now + self.interval()
        if system.leap == Leap.UNSYNCHRONISED or system.stratum >= STRATUM_UNSYNC:
            self.unsynchronised += 1
            return None
        self.sent += 1
        return BroadcastPacket(broadcast_prefix(system, now, self.version, self.poll), self.key)


# --- client ---------------------------------------------------------------------------------


class BroadcastDrop(enum.StrEnum):
    """Why a broadcast gave no sample (besides the MAC failures of proto.auth)."""

    MALFORMED = "malformed"
    OWN = "own_broadcast"  # from one of our own addresses: we hear our own broadcasts
    WRONG_KEY = "wrong_key"  # authentic, but not under the key its association started with
    UNSYNCHRONISED = "unsynchronised"  # leap 3, stratum 0 or 16, or outside floor..ceiling
    BAD_POLL = "bad_poll"
    TOO_EARLY = "too_early"
    DUPLICATE = "duplicate"
    REPLAY = "replay"  # older than the last one, within the back-step gate
    BAD_TIMESTAMPS = "bad_timestamps"
    TOO_MANY = "too_many_broadcasters"
    CALIBRATING = "calibrating"  # heard before the client/server exchange gave an offset
    DELAY_TOO_LARGE = "delay_too_large"  # calibration refused: the association is dropped
    DISTANCE = "root_distance"


@dataclass(eq=False)
class BroadcastAssociation(Association):
    """A broadcaster we listen to (mobilised by its first authentic packet)."""

    delay_setting: float = DEFAULT_DELAY  # broadcastdelay
    calibrating: bool = field(init=False)
    delay: float = 0.0  # the round trip every broadcast sample is corrected by
    unicast_offset: float | None = None  # the calibration exchange's offset, until used
    last_heard: float | None = None  # `now` of the last clean broadcast
    last_transmit: int = 0  # its transmit timestamp
    heard_since_poll: bool = False
    demobilised: str | None = None  # why the caller should drop this association

    def __post_init__(self) -> None:
        super().__post_init__()
        self.calibrating = self.delay_setting <= 0
        if not self.calibrating:
            self.delay = self.delay_setting

    # --- polling: the calibration exchange, then only the reach register --------------------

    def start(self, now: float) -> None:
        if self.calibrating:
            super().start(now)  # iburst: the exchange starts at once
        else:
            self.next_poll = now + float(1 << self.poll)

    def make_request(self, now: float) -> bytes | None:
        if self.calibrating:
            request = super().make_request(now)
            if self.unreach >= SILENT_POLLS:
                self.demobilised = "no answer to the calibration exchange"
            return request
        # Listening: a poll only ages the reach register; nothing is sent.
        self.reach = (self.reach << 1) & 0xFF
        if not self.heard_since_poll:
            self.unreach += 1
            if self.unreach >= SILENT_POLLS:
                self.demobilised = "silent"
        self.heard_since_poll = False
        self.next_poll = now + float(1 << self.poll)
        return None

    def receive(self, data: bytes, t4: int, now: float) -> Sample | None:
        """A reply to the calibration exchange (on the association's own socket)."""
        if not self.calibrating:
            self.received += 1
            self._drop(SourceDrop.NO_REQUEST)  # a late reply: the exchange is over
            return None
        sample = super().receive(data, t4, now)
        if sample is not None:
            self.unicast_offset = sample.offset
            self.calibrating = False
            self._burst_left = 0
            self.unreach = 0
            self.next_poll = now + float(1 << self.poll)
        return sample

    def clock_stepped(self, step: float) -> None:
        super().clock_stepped(step)
        if self.last_heard is not None:
            self.last_heard += step
        if self.unicast_offset is not None:
            self.unicast_offset -= step  # measured against the clock before the step

    def shift_timer(self, seconds: float) -> None:
        super().shift_timer(seconds)
        if self.last_heard is not None:
            self.last_heard += seconds

    # --- broadcasts -------------------------------------------------------------------------

    def receive_broadcast(self, packet: NtpPacket, t4: int, now: float) -> Sample | BroadcastDrop:
        """An authentic broadcast from this association's address (MAC checked by the
        caller under a trusted key)."""
        self.received += 1
        h = packet.header
        key = self.spec.key
        if key is None or packet.mac is None or packet.mac.key_id != key.key_id:
            return BroadcastDrop.WRONG_KEY
        if h.poll != self.ppoll:
            return BroadcastDrop.BAD_POLL
        if not h.transmit:
            return BroadcastDrop.BAD_TIMESTAMPS
        if h.transmit == self.last_transmit:
            return BroadcastDrop.DUPLICATE
        if self.last_heard is not None:
            interval = float(1 << self.ppoll)
            since = now - self.last_heard
            if since < interval - EARLY_SLACK:
                return BroadcastDrop.TOO_EARLY
            if (ntp_diff(h.transmit, self.last_transmit) < 0
                    and since < interval * BACKSTEP_POLLS + BACKSTEP_GRACE):
                return BroadcastDrop.REPLAY
        # A clean packet: the broadcaster is reachable, whatever it says about its time.
        self.last_heard, self.last_transmit = now, h.transmit
        self.heard_since_poll = True
        self.reach |= 1
        self.unreach = 0
        self.stratum, self.leap, self.refid = h.stratum, h.leap, h.refid
        self.pmode, self.authentic = h.mode, True
        if h.leap == Leap.UNSYNCHRONISED or not 0 < h.stratum < STRATUM_UNSYNC:
            return BroadcastDrop.UNSYNCHRONISED
        if self.calibrating:
            return BroadcastDrop.CALIBRATING
        if h.reference and ntp_diff(h.transmit, h.reference) < 0:
            return BroadcastDrop.BAD_TIMESTAMPS
        one_way = ntp_diff(h.transmit, t4)  # offset minus the one-way delay
        if self.unicast_offset is not None:
            self.delay = 2 * abs(self.unicast_offset - one_way)
            self.unicast_offset = None
            if self.delay > abs(self.delay_setting):
                self.demobilised = (f"calibrated delay {self.delay:.6f} s exceeds "
                                    f"{abs(self.delay_setting):.6f} s (broadcastdelay)")
                return BroadcastDrop.DELAY_TOO_LARGE
        precision = 2.0**h.precision + 2.0**self.local_precision
        delay = max(self.delay, precision)
        sample = Sample(
            offset=one_way + self.delay / 2, delay=delay,
            dispersion=precision + PHI * delay, local_time=now, stratum=h.stratum,
            leap=h.leap, precision=h.precision, root_delay=short_to_seconds(h.root_delay),
            root_dispersion=short_to_seconds(h.root_dispersion), refid=h.refid,
            reference_time=h.reference,
        )
        if sample.root_distance > self.spec.max_distance + PHI * (1 << self.poll):
            return BroadcastDrop.DISTANCE
        self.keep(sample)
        return sample


Route = tuple[int, bool, int]  # (address, is_v6, port), as the responder keys a source


class Heard(NamedTuple):
    """What one broadcast did: the association it reached (`created` if it mobilised it),
    the sample it gave, or why it gave none."""

    association: BroadcastAssociation | None
    created: bool
    sample: Sample | None
    drop: str | None


def address_text(address: int, is_v6: bool) -> str:
    return str(ipaddress.IPv6Address(address) if is_v6 else ipaddress.IPv4Address(address))


@dataclass
class BroadcastClient:
    """Every broadcaster we listen to, and the counters of what their packets did."""

    keys: KeyRing
    delay: float = DEFAULT_DELAY  # broadcastdelay
    max_associations: int = 10  # `tos maxclock`
    floor: int = 0  # `tos floor`, `tos ceiling`: the strata a broadcaster may have
    ceiling: int = 15
    local_precision: int = -20
    max_distance: float = 1.5
    # This host's addresses: a broadcaster that also listens hears itself, and under its
    # own key; following that would be a loop.
    own_addresses: frozenset[tuple[int, bool]] = frozenset()
    associations: dict[Route, BroadcastAssociation] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # "sample", or why not

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _drop(self, what: str, assoc: BroadcastAssociation | None = None) -> Heard:
        self._count(what)
        return Heard(assoc, False, None, what)

    def receive(
        self, data: bytes, address: int, is_v6: bool, port: int, t4: int, now: float
    ) -> Heard:
        if (address, is_v6) in self.own_addresses:
            return self._drop(BroadcastDrop.OWN)
        try:
            packet = decode(data)
        except PacketError:
            return self._drop(BroadcastDrop.MALFORMED)
        if packet.header.mode != Mode.BROADCAST:
            return self._drop(BroadcastDrop.MALFORMED)
        # Authentication before anything else looks at the packet or changes any state.
        mac = packet.mac
        result = (AuthResult.NO_MAC if mac is None
                  else self.keys.check(mac, signed_part(data, mac)))
        if result is not AuthResult.OK or mac is None:
            return self._drop(result.value)
        route = (address, is_v6, port)
        assoc = self.associations.get(route)
        if assoc is not None:
            return self._deliver(assoc, packet, t4, now, created=False)
        return self._mobilise(route, packet, mac.key_id, t4, now)

    def _mobilise(
        self, route: Route, packet: NtpPacket, key_id: int, t4: int, now: float
    ) -> Heard:
        h = packet.header
        if (h.leap == Leap.UNSYNCHRONISED or not 0 < h.stratum < STRATUM_UNSYNC
                or h.stratum < self.floor or h.stratum >= self.ceiling):
            return self._drop(BroadcastDrop.UNSYNCHRONISED)
        if not MIN_POLL <= h.poll <= MAX_POLL:
            return self._drop(BroadcastDrop.BAD_POLL)
        if not h.transmit:
            return self._drop(BroadcastDrop.BAD_TIMESTAMPS)
        if len(self.associations) >= self.max_associations:
            return self._drop(BroadcastDrop.TOO_MANY)
        address, is_v6, port = route
        spec = SourceSpec(
            address=address_text(address, is_v6), port=port, minpoll=h.poll, maxpoll=h.poll,
            iburst=True, version=h.version, max_distance=self.max_distance,
            key=self.keys.trusted_key(key_id))
        assoc = BroadcastAssociation(spec, local_precision=self.local_precision,
                                     delay_setting=self.delay)
        assoc.ppoll = h.poll
        assoc.start(now)
        self.associations[route] = assoc
        return self._deliver(assoc, packet, t4, now, created=True)

    def _deliver(
        self, assoc: BroadcastAssociation, packet: NtpPacket, t4: int, now: float,
        created: bool,
    ) -> Heard:
        outcome = assoc.receive_broadcast(packet, t4, now)
        if isinstance(outcome, BroadcastDrop):
            self._count(outcome)
            return Heard(assoc, created, None, outcome)
        self._count("sample")
        return Heard(assoc, created, outcome, None)

    def forget(self, assoc: BroadcastAssociation) -> None:
        for route, known in list(self.associations.items()):
            if known is assoc:
                del self.associations[route]
