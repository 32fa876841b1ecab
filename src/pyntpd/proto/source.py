"""One association with an upstream server (RFC 5905 peer process, client mode).

Sans-IO: the caller asks `due(now)` when to poll, `make_request(now)` for the datagram to
send, `sent(t1)` with the local NTP timestamp read just before the send, then
`transmitted(t1)` with the kernel's transmit timestamp of it (SO_TIMESTAMPING) if the kernel
gives one, and hands every datagram that arrives on the association's socket to
`receive(data, t4, now)`, which returns a `Sample` or None (the reason is counted in
`drops`). T1 is the kernel's stamp when it came in time and is plausible, else the one read
before the send: each sample counts which (`transmit_stamps`).

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

Symmetric mode (`peer HOST key N`, RFC 5905 §8-9; `spec.symmetric`): the same association
sends mode 1 packets (`make_symmetric`) carrying our system variables, org = the peer's last
transmit timestamp, rec = when it arrived, xmt = our clock, always signed with the key. A
packet from the peer (mode 1 or 2) must first carry a MAC that verifies under that key: a
crypto-NAK, another key id, a bad digest or no MAC is refused before anything changes. Then:
- a transmit timestamp equal to the last one seen is a duplicate, and one equal to one of
  our own recent transmit timestamps is our packet reflected (neither changes any state);
- an origin of zero (the peer has not heard from us yet: the first packet) or one that is
  not the transmit timestamp of one of our last few unanswered packets (bogus: each side
  polls on its own timer, so the faster one has often sent again) gives no sample, but
  updates org/rec so that our next packet lets the peer measure -- unless its transmit
  timestamp is not newer than the last one seen: a replayed old packet, refused without a
  state change;
- otherwise T1..T4 = (org, rec, xmt, arrival) give the sample, and the origin is consumed,
  as for a client reply; reach, poll, KoD and the sanity checks are the client's.
No packet ever creates an association: only a configured peer's packets reach one.

Interleaved mode (`server HOST xleave`; chrony's client/server interleaved mode, which ntpd
4.2.8 has only for symmetric and broadcast associations): a server can put in a reply only
a transmit timestamp read before the send; the kernel's, taken as the reply left, exists
only afterwards. So the request names the previous exchange -- origin = the server's
receive timestamp of our previous request -- and the server answers with the kernel transmit
timestamp of its previous reply to it. The request's receive field carries a second random
value, and a reply whose origin is that value is the interleaved answer to this request
(the random transmit value still identifies a basic one: a server that kept no timestamp
for us, or does not know the mode, answers in basic mode and is used as such). The
interleaved reply completes the previous exchange: T1, T2, T4 as kept from it, T3 from this
reply; its sample is taken at that exchange's time (the engine corrects it for what the
clock did since). An exchange whose basic reply gave a sample gives no second one (the
first interleaved reply after basic ones), as chrony 4.3; after four unanswered requests
the requests go back to basic mode, since the server would name a very old reply.
"""

from __future__ import annotations

import enum
import math
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pyntpd.proto.auth import AuthResult, SymmetricKey, mac_trailer, signed_part, verify_with
from pyntpd.proto.nts import NtsSession, ReplyCheck
from pyntpd.proto.packet import (
    HEADER,
    DropReason,
    Mode,
    NtpHeader,
    NtpPacket,
    PacketError,
    decode,
    li_vn_mode,
)
from pyntpd.proto.server import stated_system
from pyntpd.proto.timestamp import ntp_diff, short_to_seconds
from pyntpd.types import PHI, Leap, Sample, SystemVars

MAX_DISPERSION = 16.0
MAX_DISTANCE = 1.5  # `tos maxdist`
MIN_POLL = 3
MAX_POLL = 17
BURST_COUNT = 8
BURST_SPACING = 2.0  # seconds between packets of a burst (ntpd: 2 s)
UNREACH_BACKOFF_AFTER = 8  # polls without reply before the poll interval backs off
# Symmetric mode: how many of our packets before the last one a peer's packet may still
# answer. Each side polls on its own timer, so the one polling faster (iburst, a lower
# minpoll) has usually sent again before the other's packet arrives.
EARLIER_ORIGINS = 3
# Interleaved requests after the last reply, at most (chrony's MAX_CLIENT_INTERLEAVED_TX):
# beyond, the server's answer would complete an exchange that is long past.
INTERLEAVED_MAX_UNANSWERED = 4
# How much later than the stamp read before send() the kernel's transmit timestamp may be
# (chrony's MAX_TX_DELAY); a later or an earlier one is not this request's.
MAX_TRANSMIT_DELAY = 1.0


class SourceDrop(enum.StrEnum):
    """Why a datagram on an association's socket was not taken as a sample."""

    MALFORMED = "malformed"
    NOT_SERVER_MODE = "not_server_mode"
    NO_REQUEST = "no_request_outstanding"
    BOGUS_ORIGIN = "bogus_origin"
    DUPLICATE = "duplicate"
    BAD_TIMESTAMPS = "bad_timestamps"
    # T3 before T2 by more than the server's stated precision: beyond sub-precision noise
    TRANSMIT_BEFORE_RECEIVE = "transmit_before_receive"
    UNSYNCHRONISED = "server_unsynchronised"
    BAD_STRATUM = "bad_stratum"
    DISTANCE = "root_distance"
    KOD_RATE = "kod_rate"
    KOD_DENY = "kod_deny"
    KOD_OTHER = "kod_other"
    AUTH = "authentication"
    NOT_PEER_MODE = "not_peer_mode"  # a symmetric association got something but mode 1/2
    ZERO_ORIGIN = "zero_origin"  # the peer's first packet: state kept, no sample
    REPLAY = "replay"  # an authentic packet older than the last one seen
    NTS_NAK = "nts_nak"
    NO_COOKIE = "nts_no_cookie"  # a poll skipped: no NTS cookie (NTS-KE pending)
    # An interleaved reply completing an exchange that gave its sample in basic mode
    # already (the first one after basic replies), or whose server was unsynchronised.
    INTERLEAVED_SPENT = "interleaved_exchange_spent"


class Stamp(enum.StrEnum):
    """Where a request's T1 came from."""

    KERNEL = "kernel"  # SO_TIMESTAMPING: the kernel's, as the datagram left
    DAEMON = "daemon"  # read in user space before send(): no kernel stamp came


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
    symmetric: bool = False  # `peer`: symmetric active mode (requires `key`)
    xleave: bool = False  # interleaved mode (client/server)
    pps: bool = False  # a PPS clock (type 22): followed while the prefer peer numbers its seconds


RandomBits = Callable[[], int]


def _random_transmit() -> int:
    value = 0
    while value == 0:  # zero means "no timestamp" and must never be our origin
        value = secrets.randbits(64)
    return value


REGISTER_SIZE = 8  # ntpd's NTP_SHIFT


@dataclass(frozen=True, slots=True)
class _Exchange:
    """One request and its reply, kept for the interleaved reply that completes it."""

    t1: int  # our transmit timestamp of the request
    stamp: Stamp  # where t1 came from
    t2: int  # the server's receive timestamp: the origin of our next interleaved request
    t4: int  # our receive timestamp of the reply
    now: float  # t4 as the caller's local time: the sample's time
    header: NtpHeader  # the reply: the server's root delay and dispersion then
    spent: bool  # it gave its sample already (basic mode), or it cannot give one


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
    received: int = 0  # datagrams handed to `receive`: each one a sample or a counted drop
    drops: dict[SourceDrop, int] = field(default_factory=dict)
    kod_poll: int = 0  # the poll a RATE kiss asked for
    last_sample: Sample | None = None
    # The last REGISTER_SIZE samples, newest first: ntpd's clock filter register, which
    # ntpq shows as filtdelay/filtoffset/filtdisp (our filter keeps no such window).
    register: deque[Sample] = field(default_factory=lambda: deque(maxlen=REGISTER_SIZE))
    # Server's advertised state from the last reply that passed the origin test.
    stratum: int = 16
    leap: int = Leap.UNSYNCHRONISED
    refid: bytes = b"INIT"
    authentic: bool = False  # the last reply accepted was authenticated
    pmode: int = 0  # the mode of the last packet accepted from the other end
    heard_at: float = 0.0  # symmetric: `now` when the peer's last authentic packet arrived
    ppoll: int = 0  # symmetric: the poll exponent the peer states (0: not heard yet)
    nts: NtsSession | None = None  # keys and cookies from NTS-KE (spec.nts)
    _sent_uid: bytes = b""  # the NTS unique identifier of the outstanding request
    _sent_transmit: int = 0  # the random value in our outstanding request; 0: none
    # Interleaved: the second random value, in the request's receive field; 0: basic request
    _sent_receive: int = 0
    _t1: int = 0  # our clock when that request left
    _t1_kernel: bool = False  # _t1 is the kernel's transmit timestamp
    _last_server_transmit: int = 0
    _last_server_receive: int = 0
    _previous: _Exchange | None = None  # interleaved: the exchange the next reply completes
    interleaved: int = 0  # samples from interleaved replies
    transmit_stamps: dict[Stamp, int] = field(default_factory=dict)  # T1 of samples, by source
    _burst_left: int = 0
    # Symmetric mode: the peer's last transmit timestamp and when it arrived (our clock),
    # the org and rec of our next packet (ntpd's peer->rec and peer->dst).
    _peer_org: int = 0
    _peer_rec: int = 0
    _earlier: tuple[int, ...] = ()  # our packets before the last one not yet answered, oldest first

    def __post_init__(self) -> None:
        self.poll = max(MIN_POLL, min(self.spec.minpoll, MAX_POLL))

    # --- polling ----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Schedule the first poll. iburst: a burst straight away while unreachable."""
        self.next_poll = now
        if self.spec.iburst:
            self._burst_left = BURST_COUNT

    def next_timer(self) -> float:
        """The local time of this association's next poll (inf: it polls no more)."""
        return self.next_poll if self.state == State.ACTIVE else math.inf

    def on_timer(self, now: float) -> bool:
        """The timer fired at `now`: True if a poll is due (the caller then builds and sends
        the request, which reschedules); False if it fired early (the clock moved)."""
        return self.state == State.ACTIVE and now >= self.next_poll

    def shift_timer(self, seconds: float) -> None:
        """The local clock jumped by `seconds` (a step of ours, or someone setting the wall
        clock): the next poll stays the same distance away in real time."""
        self.next_poll += seconds

    def _begin_poll(self, now: float, transmit: int) -> None:
        self.reach = (self.reach << 1) & 0xFF
        if self._sent_transmit:
            self.unreach += 1  # the previous request was never answered
        self._sent_transmit = transmit
        self._schedule(now)

    def make_request(self, now: float) -> bytes | None:
        """The client request for this poll; also advances the reach register and schedule.
        None: nothing to send (NTS without a cookie: the caller runs NTS-KE)."""
        self._begin_poll(now, self.random_transmit())
        origin = self._sent_receive = 0
        previous = self._previous
        if (self.spec.xleave and previous is not None
                and self.unreach < INTERLEAVED_MAX_UNANSWERED):
            origin = previous.t2
            while self._sent_receive in (0, self._sent_transmit):
                self._sent_receive = self.random_transmit()
        request = HEADER.pack(
            li_vn_mode(Leap.NONE, self.spec.version, Mode.CLIENT), 0, self.poll,
            self.local_precision, 0, 0, b"\0\0\0\0", 0, origin, self._sent_receive,
            self._sent_transmit,
        )
        if self.spec.nts:
            if self.nts is None or self.nts.needs_ke:
                self._sent_transmit = self._sent_receive = 0
                self.unreach += 1
                self._drop(SourceDrop.NO_COOKIE)
                return None
            request, self._sent_uid = self.nts.build_request(request)
            return request
        key = self.spec.key
        return request if key is None else request + mac_trailer(key, request)

    def make_symmetric(self, now: float, transmit: int, system: SystemVars) -> bytes:
        """The symmetric active packet for this poll, `transmit` being our clock read just
        before; it states our system variables, since the peer may synchronise to us.

        Unlike a client request's, this transmit timestamp cannot be random: the peer takes
        it as T3, the time its measurement of us was sent. Forgeries are kept out by the MAC
        instead, which symmetric mode always has.
        """
        key = self.spec.key
        if key is None:
            raise ValueError("a symmetric association needs a key")
        if self._sent_transmit:
            self._earlier = (*self._earlier, self._sent_transmit)[-EARLIER_ORIGINS:]
        self._begin_poll(now, transmit)
        self._t1 = transmit
        leap, stratum, middle = stated_system(system, now)
        packet = (bytes([li_vn_mode(leap, self.spec.version, Mode.SYMMETRIC_ACTIVE), stratum,
                         self.poll & 0xFF]) + middle
                  + self._peer_org.to_bytes(8, "big") + self._peer_rec.to_bytes(8, "big")
                  + transmit.to_bytes(8, "big"))
        return packet + mac_trailer(key, packet)

    def sent(self, t1: int) -> None:
        """The local NTP timestamp read immediately before the request was sent."""
        self._t1 = t1
        self._t1_kernel = False

    def transmitted(self, t1: int) -> bool:
        """The kernel's transmit timestamp of the outstanding request: T1 from now on, if it
        is no earlier than the one read before the send and at most MAX_TRANSMIT_DELAY
        later (anything else belongs to another datagram). True if taken."""
        if not self._sent_transmit or self._t1_kernel or self.spec.symmetric:
            return False
        if not 0.0 <= ntp_diff(t1, self._t1) <= MAX_TRANSMIT_DELAY:
            return False
        self._t1, self._t1_kernel = t1, True
        return True

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

    def clock_stepped(self, step: float) -> None:
        """The local clock was stepped by `step` s: the next poll moves with it, and the
        outstanding request is forgotten, since its reply would mix times from before and
        after the step."""
        self.shift_timer(step)
        self._sent_transmit = self._sent_receive = 0
        self._previous = None  # its timestamps are from before the step
        # A peer's org/rec mix in our pre-step clock too: start over as at the first packet.
        self._peer_org = self._peer_rec = 0
        self._earlier = ()

    @property
    def reachable(self) -> bool:
        return self.reach != 0

    # --- replies ----------------------------------------------------------------------

    def _drop(self, reason: SourceDrop) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def receive(self, data: bytes, t4: int, now: float) -> Sample | None:
        """Validate a datagram from the server; a Sample if it yields one."""
        self.received += 1
        try:
            packet = decode(data)
        except PacketError as err:
            self._drop(SourceDrop.AUTH if err.reason is DropReason.BAD_TRAILER
                       else SourceDrop.MALFORMED)
            return None
        if self.spec.symmetric:
            return self._receive_symmetric(data, packet, t4, now)
        h = packet.header
        if h.mode != Mode.SERVER:
            self._drop(SourceDrop.NOT_SERVER_MODE)
            return None
        # Both stamps: in interleaved mode a server that has no kernel stamp repeats the
        # transmit timestamp of its previous (basic) reply, to a new request.
        if (h.transmit and h.transmit == self._last_server_transmit
                and h.receive == self._last_server_receive):
            self._drop(SourceDrop.DUPLICATE)
            return None
        if not self._sent_transmit:
            self._drop(SourceDrop.NO_REQUEST)
            return None
        interleaved = bool(self._sent_receive) and h.origin == self._sent_receive
        if h.origin != self._sent_transmit and not interleaved:
            self._drop(SourceDrop.BOGUS_ORIGIN)
            return None
        key = self.spec.key
        if self.spec.nts:
            check = (ReplyCheck.BAD if self.nts is None
                     else self.nts.check_reply(data, packet, self._sent_uid))
            if check is ReplyCheck.NAK:
                # answered, though with "get new cookies"
                self._sent_transmit = self._sent_receive = 0
                self._drop(SourceDrop.NTS_NAK)
                return None
            if check is not ReplyCheck.OK:
                self._drop(SourceDrop.AUTH)
                return None
        elif not self._mac_as_keyed(data, packet):
            self._drop(SourceDrop.AUTH)
            return None
        self.authentic = key is not None or self.spec.nts
        # From here the reply answers our request: it is ours to consume, once.
        self._sent_transmit = 0
        self._sent_receive = 0
        self._last_server_transmit = h.transmit
        self._last_server_receive = h.receive
        self.pmode = h.mode
        stamp = Stamp.KERNEL if self._t1_kernel else Stamp.DAEMON
        if interleaved:
            return self._complete_previous(packet, t4, now, stamp)
        sample = self._measure(packet, self._t1, t4, now)
        if sample is not None:
            self.transmit_stamps[stamp] = self.transmit_stamps.get(stamp, 0) + 1
        if self.spec.xleave:
            self._keep_exchange(h, t4, now, spent=sample is not None, stamp=stamp)
        return sample

    def _keep_exchange(self, h: NtpHeader, t4: int, now: float, spent: bool,
                       stamp: Stamp) -> None:
        """Remember this exchange for the interleaved reply that will complete it."""
        if h.stratum == 0 or not h.receive:
            self._previous = None  # a kiss: nothing the server could name
            return
        spent = spent or h.leap == Leap.UNSYNCHRONISED or h.stratum >= 16
        self._previous = _Exchange(self._t1, stamp, h.receive, t4, now, h, spent)

    def _complete_previous(
        self, packet: NtpPacket, t4: int, now: float, stamp: Stamp
    ) -> Sample | None:
        """An interleaved reply: its transmit timestamp is the server's kernel stamp of its
        reply to our previous request, whose exchange it completes; this exchange waits for
        the next reply."""
        h = packet.header
        previous = self._previous
        self._keep_exchange(h, t4, now, spent=False, stamp=stamp)
        if h.stratum == 0:
            return self._kiss(h.refid)
        if previous is None or previous.spent:
            self._heard(h)
            self._drop(SourceDrop.INTERLEAVED_SPENT)
            return None
        sample = self._measure(packet, previous.t1, previous.t4, previous.now,
                               t2=previous.t2, stated=previous.header)
        if sample is not None:
            self.interleaved += 1
            self.transmit_stamps[previous.stamp] = (
                self.transmit_stamps.get(previous.stamp, 0) + 1)
        return sample

    def _mac_as_keyed(self, data: bytes, packet: NtpPacket) -> bool:
        """With a key: a MAC under that very key that verifies (a crypto-NAK, another key
        id or a bad digest does not). Without one: no MAC at all -- we did not sign the
        request, so a signed reply (or a crypto-NAK) is not an answer to it."""
        key, mac = self.spec.key, packet.mac
        if key is None:
            return mac is None
        return (mac is not None
                and verify_with(key, mac, signed_part(data, mac)) is AuthResult.OK)

    def _receive_symmetric(
        self, data: bytes, packet: NtpPacket, t4: int, now: float
    ) -> Sample | None:
        h = packet.header
        if h.mode not in (Mode.SYMMETRIC_ACTIVE, Mode.SYMMETRIC_PASSIVE):
            self._drop(SourceDrop.NOT_PEER_MODE)
            return None
        if self.spec.key is None or not self._mac_as_keyed(data, packet):
            self._drop(SourceDrop.AUTH)  # refused before any state changes
            return None
        if not h.transmit:
            self._drop(SourceDrop.BAD_TIMESTAMPS)
            return None
        last = self._last_server_transmit
        if h.transmit == last:
            self._drop(SourceDrop.DUPLICATE)
            return None
        if h.transmit == self._t1 or h.transmit in self._earlier:
            # Our own packet sent back: the key is the same both ways, so the MAC
            # verifies, but it is no news from the peer.
            self._drop(SourceDrop.REPLAY)
            return None
        answered = h.origin and (h.origin == self._sent_transmit or h.origin in self._earlier)
        if not answered:
            if last and ntp_diff(h.transmit, last) <= 0:
                # Older than what the peer already sent: an authentic packet replayed.
                # (A fresh one answering our last packet passes below even so.)
                self._drop(SourceDrop.REPLAY)
                return None
            # The peer's first packet, or ours crossed its in flight: no sample, but keep
            # its timestamps, or neither side could ever measure the other (RFC 5905 §8).
            self._remember_peer(h, t4, now)
            self._drop(SourceDrop.ZERO_ORIGIN if not h.origin else SourceDrop.BOGUS_ORIGIN)
            return None
        self._remember_peer(h, t4, now)
        self.authentic = True
        # One sample per packet of ours, as for client replies; the ones before it are
        # answered too (a peer's packets arrive in order).
        if h.origin == self._sent_transmit:
            self._sent_transmit, self._earlier = 0, ()
        else:
            self._earlier = self._earlier[self._earlier.index(h.origin) + 1:]
        return self._measure(packet, h.origin, t4, now)

    def _remember_peer(self, h: NtpHeader, t4: int, now: float) -> None:
        self._last_server_transmit = self._peer_org = h.transmit
        self._peer_rec = t4
        self.pmode, self.ppoll, self.heard_at = h.mode, h.poll, now

    def _heard(self, h: NtpHeader) -> None:
        """A reply that answers our request: the server is reachable, and says this."""
        self.reach |= 1
        self.unreach = 0
        self.stratum, self.leap, self.refid = h.stratum, h.leap, h.refid

    def _measure(
        self, packet: NtpPacket, t1: int, t4: int, now: float, *, t2: int | None = None,
        stated: NtpHeader | None = None,
    ) -> Sample | None:
        """A reply (or peer packet) that passed the origin test and authentication: KoD,
        reach, the other end's state, and the sample from T1..T4 (T2, T3 from the reply).

        Interleaved, the reply completes an earlier exchange: `t1`, `t2`, `t4` and `now`
        are that exchange's, T3 is this reply's transmit timestamp, and `stated` is that
        exchange's reply, whose root delay, dispersion and reference the sample carries."""
        h = packet.header
        if h.stratum == 0:
            return self._kiss(h.refid)
        self._heard(h)
        if h.leap == Leap.UNSYNCHRONISED or h.stratum >= 16:
            self._drop(SourceDrop.UNSYNCHRONISED)
            return None
        t2 = h.receive if t2 is None else t2
        stated = h if stated is None else stated
        if not t2 or not h.transmit:
            self._drop(SourceDrop.BAD_TIMESTAMPS)
            return None
        # chronyd fills the bits of T2 and T3 below its precision with random noise, so a
        # server that answers faster than its precision may send T3 < T2 by up to that
        # much; only an earlier T3 is really inconsistent. (The precision a server states is
        # also in the sample's dispersion, so stating a coarse one buys nothing.)
        t3 = h.transmit
        processing = ntp_diff(t3, t2)
        if processing < -(2.0 ** min(h.precision, 0)):
            self._drop(SourceDrop.TRANSMIT_BEFORE_RECEIVE)
            return None
        if stated.reference and ntp_diff(t3, stated.reference) < 0:
            self._drop(SourceDrop.BAD_TIMESTAMPS)  # a reference time after its own transmit
            return None
        offset = (ntp_diff(t2, t1) + ntp_diff(t3, t4)) / 2
        # Within the noise the server's processing took no measurable time.
        delay = ntp_diff(t4, t1) - max(processing, 0.0)
        precision = 2.0**h.precision + 2.0**self.local_precision
        delay = max(delay, precision)
        dispersion = precision + PHI * max(ntp_diff(t4, t1), 0.0)
        sample = Sample(
            offset=offset, delay=delay, dispersion=dispersion, local_time=now,
            stratum=stated.stratum, leap=stated.leap, precision=stated.precision,
            root_delay=short_to_seconds(stated.root_delay),
            root_dispersion=short_to_seconds(stated.root_dispersion),
            refid=stated.refid, reference_time=stated.reference,
        )
        if sample.root_distance > self.spec.max_distance + PHI * (1 << self.poll):
            self._drop(SourceDrop.DISTANCE)
            return None
        self.keep(sample)
        return sample

    def keep(self, sample: Sample) -> None:
        """`sample` is the association's newest: last_sample and the register's head."""
        self.last_sample = sample
        self.register.appendleft(sample)

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
