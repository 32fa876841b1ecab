"""One association with an upstream server (RFC 5905 peer process, client mode).

Sans-IO: the caller asks `due(now)` when to poll, `make_request(now)` for the datagram to
send, `sent(t1)` with the local NTP timestamp read just before the send, and hands every
datagram that arrives on the association's socket to `receive(data, t4, now)`, which returns a
`Sample` or None (the reason is counted in `drops`).

What a reply must pass before it is believed (each an attack that worked against ntpd):
- it answers the request we have outstanding: its origin equals the transmit timestamp we
  sent, which is random (not our clock: CVE-2020-13817), never zero (CVE-2015-8138), and is
  forgotten once answered, so a replay or a second copy is refused;
- it is not a duplicate of the last reply (same transmit timestamp);
- it is a server reply (mode 4) with a sane version, stratum and timestamps;
- Kiss-o'-Death is only honoured on a reply that passed the origin test (CVE-2015-7704/7705,
  CVE-2020-11868): RATE raises the poll interval, DENY/RSTR stop polling this server;
- with a key (`server ... key N`), the reply carries a MAC under that very key that
  verifies; a crypto-NAK, another key id or a bad digest is refused *before* the reply
  consumes the outstanding request, so a forgery can neither demobilise the association
  (CVE-2015-7871, CVE-2016-1547) nor spend the real reply's origin; unauthenticated KoDs
  are refused the same way;
- with NTS (`server ... nts`), the reply carries our request's unique identifier and an
  authenticator that verifies under the S2C key; its new cookies are kept. An NTS NAK
  (kiss NTSN echoing the unique identifier) only marks the cookies as spent: NTS-KE is
  run again by the caller; anything else unauthenticated is refused before it consumes
  the request, as for keys;
- leap 3 / stratum 16 (the server is unsynchronised) and an excessive root distance give no
  sample, though the server still counts as reachable.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from pyntpd.config.keys import SymmetricKey
from pyntpd.proto.auth import AuthResult, mac_trailer, signed_part, verify_with
from pyntpd.proto.nts import NtsSession, ReplyCheck
from pyntpd.proto.packet import (
    HEADER,
    DropReason,
    Leap,
    Mode,
    PacketError,
    decode,
    li_vn_mode,
)
from pyntpd.proto.server import PHI
from pyntpd.proto.timestamp import ntp_diff, short_to_seconds

MAX_DISPERSION = 16.0
MAX_DISTANCE = 1.5  # `tos maxdist`
MIN_POLL = 3
MAX_POLL = 17
BURST_COUNT = 8
BURST_SPACING = 2.0  # seconds between packets of a burst (ntpd: 2 s)
UNREACH_BACKOFF_AFTER = 8  # polls without reply before the poll interval backs off


class SourceDrop(enum.StrEnum):
    """Why a datagram on an association's socket was not taken as a sample."""

    MALFORMED = "malformed"
    NOT_SERVER_MODE = "not_server_mode"
    NO_REQUEST = "no_request_outstanding"
    BOGUS_ORIGIN = "bogus_origin"
    DUPLICATE = "duplicate"
    BAD_TIMESTAMPS = "bad_timestamps"
    UNSYNCHRONISED = "server_unsynchronised"
    BAD_STRATUM = "bad_stratum"
    DISTANCE = "root_distance"
    KOD_RATE = "kod_rate"
    KOD_DENY = "kod_deny"
    KOD_OTHER = "kod_other"
    AUTH = "authentication"
    NTS_NAK = "nts_nak"
    NO_COOKIE = "nts_no_cookie"  # a poll skipped: no NTS cookie (NTS-KE pending)


class State(enum.StrEnum):
    ACTIVE = "active"
    DENIED = "denied"  # a DENY/RSTR kiss: stop polling until reconfigured


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What an association needs from a `server`/`peer`/pool line, address resolved."""

    address: str
    port: int = 123
    minpoll: int = 6
    maxpoll: int = 10
    iburst: bool = False
    burst: bool = False
    prefer: bool = False
    noselect: bool = False
    true: bool = False
    version: int = 4
    max_distance: float = MAX_DISTANCE
    key: SymmetricKey | None = None  # sign requests and require signed replies
    nts: bool = False  # authenticate with NTS (the caller supplies `Association.nts`)


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement of the server's clock against ours (RFC 5905 §8).

    offset = ((t2 - t1) + (t3 - t4)) / 2 is how far the server is ahead of us; `local_time`
    is t4 in the local clock's timescale (seconds), when the sample was taken.
    """

    offset: float
    delay: float
    dispersion: float
    local_time: float
    stratum: int
    leap: int
    precision: int
    root_delay: float
    root_dispersion: float
    refid: bytes
    reference_time: int

    @property
    def root_distance(self) -> float:
        """Half the round trip to the primary source plus everything that could have drifted."""
        return (self.root_delay + self.delay) / 2 + self.root_dispersion + self.dispersion


RandomBits = Callable[[], int]


def _random_transmit() -> int:
    value = 0
    while value == 0:  # zero means "no timestamp" and must never be our origin
        value = secrets.randbits(64)
    return value


@dataclass
class Association:
    spec: SourceSpec
    local_precision: int = -20
    random_transmit: RandomBits = _random_transmit
    state: State = State.ACTIVE
    poll: int = field(init=False)  # current poll exponent (log2 s)
    reach: int = 0  # 8-bit shift register of answered polls
    unreach: int = 0  # polls in a row without any reply
    next_poll: float = 0.0
    drops: dict[SourceDrop, int] = field(default_factory=dict)
    kod_poll: int = 0  # the poll a RATE kiss asked for
    last_sample: Sample | None = None
    # Server's advertised state from the last reply that passed the origin test.
    stratum: int = 16
    leap: int = Leap.UNSYNCHRONISED
    refid: bytes = b"INIT"
    authentic: bool = False  # the last reply accepted was authenticated
    nts: NtsSession | None = None  # keys and cookies from NTS-KE (spec.nts)
    _sent_uid: bytes = b""  # the NTS unique identifier of the outstanding request
    _sent_transmit: int = 0  # the random value in our outstanding request; 0: none
    _t1: int = 0  # our clock when that request left
    _last_server_transmit: int = 0
    _burst_left: int = 0

    def __post_init__(self) -> None:
        self.poll = max(MIN_POLL, min(self.spec.minpoll, MAX_POLL))

    # --- polling ----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Schedule the first poll. iburst: a burst straight away while unreachable."""
        self.next_poll = now
        if self.spec.iburst:
            self._burst_left = BURST_COUNT

    def due(self, now: float) -> bool:
        return self.state == State.ACTIVE and now >= self.next_poll

    def make_request(self, now: float) -> bytes | None:
        """The client request for this poll; also advances the reach register and schedule.
        None: nothing to send (NTS without a cookie: the caller runs NTS-KE)."""
        self.reach = (self.reach << 1) & 0xFF
        if self._sent_transmit:
            self.unreach += 1  # the previous request was never answered
        self._sent_transmit = self.random_transmit()
        self._schedule(now)
        request = HEADER.pack(
            li_vn_mode(Leap.NONE, self.spec.version, Mode.CLIENT), 0, self.poll,
            self.local_precision, 0, 0, b"\0\0\0\0", 0, 0, 0, self._sent_transmit,
        )
        if self.spec.nts:
            if self.nts is None or self.nts.needs_ke:
                self._sent_transmit = 0
                self.unreach += 1
                self._drop(SourceDrop.NO_COOKIE)
                return None
            request, self._sent_uid = self.nts.build_request(request)
            return request
        key = self.spec.key
        return request if key is None else request + mac_trailer(key, request)

    def sent(self, t1: int) -> None:
        """The local NTP timestamp read immediately before the request was sent."""
        self._t1 = t1

    def _schedule(self, now: float) -> None:
        if self._burst_left > 0:
            self._burst_left -= 1
            if self._burst_left > 0:
                self.next_poll = now + BURST_SPACING
                return
        poll = self.poll
        if self.unreach >= UNREACH_BACKOFF_AFTER:
            # Nobody is answering: back off towards maxpoll rather than keep knocking.
            poll = min(poll + self.unreach - UNREACH_BACKOFF_AFTER + 1, self.spec.maxpoll)
        poll = max(poll, self.kod_poll)
        self.next_poll = now + float(1 << poll)
        if self.spec.burst and self.reach:
            self._burst_left = BURST_COUNT  # `burst`: the next poll is a burst

    def set_poll(self, exponent: int) -> None:
        """The discipline's choice of poll interval, kept within minpoll..maxpoll."""
        self.poll = max(self.spec.minpoll, min(exponent, self.spec.maxpoll))

    def clock_stepped(self) -> None:
        """The local clock was stepped: forget the outstanding request, whose reply would
        mix times from before and after the step. (Moving `next_poll` with the step is the
        caller's, as for every other timer.)"""
        self._sent_transmit = 0

    @property
    def reachable(self) -> bool:
        return self.reach != 0

    # --- replies ----------------------------------------------------------------------

    def _drop(self, reason: SourceDrop) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def receive(self, data: bytes, t4: int, now: float) -> Sample | None:
        """Validate a datagram from the server; a Sample if it yields one."""
        try:
            packet = decode(data)
        except PacketError as err:
            self._drop(SourceDrop.AUTH if err.reason is DropReason.BAD_TRAILER
                       else SourceDrop.MALFORMED)
            return None
        h = packet.header
        if h.mode != Mode.SERVER:
            self._drop(SourceDrop.NOT_SERVER_MODE)
            return None
        if h.transmit and h.transmit == self._last_server_transmit:
            self._drop(SourceDrop.DUPLICATE)
            return None
        if not self._sent_transmit:
            self._drop(SourceDrop.NO_REQUEST)
            return None
        if h.origin != self._sent_transmit:
            self._drop(SourceDrop.BOGUS_ORIGIN)
            return None
        key = self.spec.key
        if self.spec.nts:
            check = (ReplyCheck.BAD if self.nts is None
                     else self.nts.check_reply(data, packet, self._sent_uid))
            if check is ReplyCheck.NAK:
                self._sent_transmit = 0  # answered, though with "get new cookies"
                self._drop(SourceDrop.NTS_NAK)
                return None
            if check is not ReplyCheck.OK:
                self._drop(SourceDrop.AUTH)
                return None
        elif key is None:
            if packet.mac is not None:
                # We did not sign the request: a signed reply (or a crypto-NAK) is not an
                # answer to it.
                self._drop(SourceDrop.AUTH)
                return None
        elif (packet.mac is None
              or verify_with(key, packet.mac, signed_part(data, packet.mac)) is not AuthResult.OK):
            self._drop(SourceDrop.AUTH)
            return None
        self.authentic = key is not None or self.spec.nts
        # From here the reply answers our request: it is ours to consume, once.
        self._sent_transmit = 0
        self._last_server_transmit = h.transmit
        if h.stratum == 0:
            return self._kiss(h.refid)
        self.reach |= 1
        self.unreach = 0
        self.stratum, self.leap, self.refid = h.stratum, h.leap, h.refid
        if h.leap == Leap.UNSYNCHRONISED or h.stratum >= 16:
            self._drop(SourceDrop.UNSYNCHRONISED)
            return None
        if not h.receive or not h.transmit or ntp_diff(h.transmit, h.receive) < 0:
            self._drop(SourceDrop.BAD_TIMESTAMPS)
            return None
        if h.reference and ntp_diff(h.transmit, h.reference) < 0:
            self._drop(SourceDrop.BAD_TIMESTAMPS)  # a reference time after its own transmit
            return None
        t1, t2, t3 = self._t1, h.receive, h.transmit
        offset = (ntp_diff(t2, t1) + ntp_diff(t3, t4)) / 2
        delay = ntp_diff(t4, t1) - ntp_diff(t3, t2)
        precision = 2.0**h.precision + 2.0**self.local_precision
        delay = max(delay, precision)
        dispersion = precision + PHI * max(ntp_diff(t4, t1), 0.0)
        sample = Sample(
            offset=offset, delay=delay, dispersion=dispersion, local_time=now,
            stratum=h.stratum, leap=h.leap, precision=h.precision,
            root_delay=short_to_seconds(h.root_delay),
            root_dispersion=short_to_seconds(h.root_dispersion),
            refid=h.refid, reference_time=h.reference,
        )
        if sample.root_distance > self.spec.max_distance + PHI * (1 << self.poll):
            self._drop(SourceDrop.DISTANCE)
            return None
        self.last_sample = sample
        return sample

    def _kiss(self, code: bytes) -> None:
        if code == b"RATE":
            # Slow down: at least double the interval, and no more bursts (RFC 5905 §7.4).
            self.kod_poll = min(max(self.poll, self.kod_poll) + 1, MAX_POLL)
            self._burst_left = 0
            self._drop(SourceDrop.KOD_RATE)
        elif code in (b"DENY", b"RSTR"):
            self.state = State.DENIED
            self._drop(SourceDrop.KOD_DENY)
        else:
            self._drop(SourceDrop.KOD_OTHER)  # unknown codes are ignored, as the RFC says
        return None
