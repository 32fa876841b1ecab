"""The responder: one request datagram in, at most one reply out (RFC 5905 mode 3 -> 4).

Every serving path (the single-process loop, SO_REUSEPORT workers, tests) calls
`Responder.respond`. It is pure: the caller passes the source address, the kernel receive
timestamp and `now`, and gets back either nothing (the drop is counted) or the reply
*without* its last 8 bytes, the transmit timestamp, which the caller appends immediately
before sending so that it is as late and as honest as possible.

A batched IO layer may split `respond` in two so that it builds no bytes per request:
`classify` makes the fast path's decision (and accounts it); for FAST the reply is
`template()`'s lead for the request's version, the request's poll byte, the template's
middle, the request's transmit timestamp and the receive timestamp; any other verdict goes
to `respond_full` unchanged. `respond` itself is exactly that composition.

Decisions, in ntpd's order (ntp_proto.c receive()):
1. mode 7 is never answered; mode 6 goes to the control responder (issue 4) — refused for
   now and counted; malformed datagrams are dropped by the codec's strict rules;
2. `restrict ignore` drops everything; `noserve` drops time requests (KoD RSTR with `kod`);
   `version` drops anything but NTPv4;
   a request with a MAC is answered only if the MAC verifies under a trusted key (no reply,
   not even a crypto-NAK, otherwise: the failure is counted by kind); `notrust` requires
   such a MAC (KoD DENY with `kod`);
3. the source's rate (MRU list): with `limited`, over-rate requests are dropped, and with
   `kod` the first of a burst gets a RATE kiss;
4. only client requests (mode 3, or mode 0 from NTPv1) are served: symmetric modes never
   create an association here (CVE-2016-1549 class), replies are not requests. A symmetric
   packet (mode 1/2) from the address and port of a configured `peer` (`peer_addresses`,
   set by the daemon) is queued for that association (`take_peer`), which requires its
   MAC; every other symmetric packet is dropped as NOT_A_REQUEST. A broadcast (mode 5) is
   queued for the broadcast client (`take_broadcast`, proto.broadcast, which requires a MAC
   under a trusted key) when one runs (`broadcast_client`), after `noserve`, `version` and
   `limited` as ntpd applies them; otherwise it is dropped as NOT_A_REQUEST too;
5. the reply is 48 bytes, never longer than the request, and carries no extension fields:
   unknown ones are ignored, as chrony does. A signed request gets a reply signed with the
   same key (as long as the request); it is queued as a `SignedReply` for the serving path,
   which appends the transmit timestamp and then the MAC over it;
6. an NTS request (RFC 8915: unique identifier, cookie, authenticator) is answered only if
   the cookie opens under one of our cookie keys and the authenticator verifies under the
   key inside it; the reply (unique identifier, fresh cookies encrypted under S2C, never
   longer than the request) is queued like a signed reply, because its authenticator
   covers the transmit timestamp. A cookie we cannot open gets an NTS NAK (kiss NTSN); any
   other failure gets nothing, counted by kind;
7. an MS-SNTP request (proto.mssntp: a key identifier and a zero checksum) from a source
   whose rule has `mssntp` is queued (`take_mssntp`) for Samba's ntp_signd to sign, which
   the daemon asks off the serving path; as in ntpd, it counts as unauthenticated for
   `notrust`. From any other source it gets nothing (ntpd would send a crypto-NAK), and
   neither does the ExtendedAuthenticator, which ntp_signd cannot sign (chrony's rule);
   both are counted in `mssntp_failed`.
8. interleaved mode (proto.interleaved): a plain request (not signed, not NTS) that names one
   of our receive timestamps as its origin is queued (`take_interleaved`) rather than
   answered in the batch, so that the serving path sends it with a kernel transmit
   timestamp asked for and keeps it (`transmit_log`); if the reply to the request it names
   is kept, the answer is interleaved. Every receive timestamp we send has its lowest bit
   set and every transmit timestamp its lowest bit clear (chrony's marks): a plain request
   whose origin's lowest bit is clear -- nearly all -- is answered in the batch as before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Protocol

from pyntpd.proto import access as acc
from pyntpd.proto import mssntp, nts
from pyntpd.proto.access import Access, address_key
from pyntpd.proto.auth import AuthResult, KeyRing, SymmetricKey, mac_trailer, signed_part
from pyntpd.proto.interleaved import InterleavedReply, TransmitLog, may_interleave
from pyntpd.proto.packet import (
    HEADER_LEN,
    MAX_LEGACY_MAC_LEN,
    DropReason,
    Mode,
    NtpPacket,
    PacketError,
    decode,
    decode_mac,
    li_vn_mode,
)
from pyntpd.proto.timestamp import seconds_to_short
from pyntpd.types import PHI, STRATUM_UNSYNC, Leap, SystemVars

# Signed replies wait for their transmit timestamp outside the batch; a batch is bounded,
# and so is this queue.
SIGNED_QUEUE_LIMIT = 256
MAX_STRATUM = 15
# The reply's first 40 bytes; the caller appends the 8-byte transmit timestamp.
_REPLY_HEAD = struct.Struct("!BBbbII4sQQQ")
REPLY_PREFIX_LEN = _REPLY_HEAD.size
_MAC_ONLY_LEN = HEADER_LEN + MAX_LEGACY_MAC_LEN

_MIDDLE = struct.Struct("!bII4sQ")  # precision .. reference timestamp
_TEMPLATE_LIFETIME = 1.0

# Restrict results that need the full decision path; over-rate alone is served unless
# `limited` is set.
_SPECIAL = acc.IGNORE | acc.NOSERVE | acc.VERSION | acc.NOTRUST | acc.OVER_RATE
_SPECIAL_LIMITED = _SPECIAL | acc.LIMITED
_OVER_RATE = acc.OVER_RATE
_CLIENT = int(Mode.CLIENT)

# `classify` verdicts; any other (non-negative) verdict is the restrict flags already
# checked for the packet, to be passed on to `respond_full`.
FAST = -1  # served (and counted): answer from `template()`
UNCHECKED = -2  # not a fast-path candidate; nothing is accounted yet

CONTROL_QUEUE_LIMIT = 64  # mode 6 requests held per batch; more are dropped and counted
MSSNTP_QUEUE_LIMIT = 64  # MS-SNTP requests held per batch for ntp_signd
PEER_QUEUE_LIMIT = 64  # symmetric packets from configured peers held per batch
# Interleaved-mode requests held per batch; beyond, they get a basic reply in the batch.
INTERLEAVED_QUEUE_LIMIT = 256
BROADCAST_QUEUE_LIMIT = 64  # broadcasts held per batch for the broadcast client
_SYMMETRIC = frozenset({Mode.SYMMETRIC_ACTIVE, Mode.SYMMETRIC_PASSIVE})

KISS_RATE = b"RATE"
KISS_DENY = b"DENY"
KISS_RSTR = b"RSTR"


def stated_system(s: SystemVars, now: float) -> tuple[int, int, bytes]:
    """(leap, stratum, the 21 bytes from precision to the reference timestamp): what a
    packet we send (a reply, a symmetric peer packet) says about our time at `now`."""
    if s.leap == Leap.UNSYNCHRONISED:
        # Unsynchronised: say so, and claim nothing about a reference.
        return Leap.UNSYNCHRONISED, STRATUM_UNSYNC, _MIDDLE.pack(
            s.precision, 0, 0, b"\0\0\0\0", 0)
    age = now - s.updated_at
    dispersion = s.root_dispersion + PHI * (age if age > 0.0 else 0.0)
    return s.leap, s.stratum, _MIDDLE.pack(
        s.precision, seconds_to_short(s.root_delay), seconds_to_short(dispersion),
        s.refid, s.reference_time)


@dataclass(slots=True)
class ServerCounters:
    received: int = 0
    served: int = 0
    kod_sent: dict[bytes, int] = field(default_factory=dict)
    dropped: dict[DropReason, int] = field(default_factory=dict)

    auth_failed: dict[AuthResult, int] = field(default_factory=dict)

    nts_served: int = 0
    peer_packets: int = 0  # symmetric packets handed to a configured peer's association
    broadcast_packets: int = 0  # broadcasts handed to the broadcast client
    nts_failed: dict[nts.NtsFailure, int] = field(default_factory=dict)
    mssntp_signed: int = 0  # MS-SNTP replies signed by ntp_signd and sent (also in served)
    mssntp_failed: dict[mssntp.MssntpFailure, int] = field(default_factory=dict)
    # Interleaved mode (also in served): replies in interleaved mode, those of them that
    # could only carry the transmit timestamp read before the send (no kernel stamp came),
    # and requests for it answered in basic mode (nothing kept for them).
    interleaved: int = 0
    interleaved_daemon_stamp: int = 0
    interleaved_missed: int = 0

    def refuse_mssntp(self, failure: mssntp.MssntpFailure) -> None:
        self.mssntp_failed[failure] = self.mssntp_failed.get(failure, 0) + 1
        self.drop(DropReason.MSSNTP)

    def refuse_nts(self, failure: nts.NtsFailure) -> None:
        self.nts_failed[failure] = self.nts_failed.get(failure, 0) + 1
        self.drop(DropReason.BAD_AUTH)

    def refuse_auth(self, result: AuthResult) -> None:
        self.auth_failed[result] = self.auth_failed.get(result, 0) + 1
        self.drop(DropReason.BAD_AUTH)

    def drop(self, reason: DropReason) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def kiss(self, code: bytes) -> None:
        self.kod_sent[code] = self.kod_sent.get(code, 0) + 1

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class QueuedReply(Protocol):
    """A reply whose last bytes depend on its transmit timestamp (a MAC, an NTS
    authenticator): the serving path reads the clock and calls `finish` after the batch."""

    address: int
    is_v6: bool
    port: int

    def finish(self, transmit: int) -> bytes: ...


@dataclass(frozen=True, slots=True)
class NakReply:
    """An NTS NAK: fixed bytes (a kiss carries no transmit timestamp), sent in order with
    the other queued replies because it does not fit the 40-byte-prefix shape."""

    message: bytes
    address: int
    is_v6: bool
    port: int

    def finish(self, transmit: int) -> bytes:
        return self.message


@dataclass(frozen=True, slots=True)
class SignedReply:
    """A reply to an authenticated request: its MAC covers the transmit timestamp, so the
    serving path appends both once it has read the clock (`finish`), after the batch."""

    prefix: bytes  # the reply's first 40 bytes, as for an unsigned reply
    key: SymmetricKey
    address: int
    is_v6: bool
    port: int

    def finish(self, transmit: int) -> bytes:
        message = self.prefix + transmit.to_bytes(8, "big")
        return message + mac_trailer(self.key, message)


@dataclass(frozen=True, slots=True)
class PeerPacket:
    """A packet for the sync side rather than a request: symmetric from a configured peer's
    address and port, or a broadcast for the broadcast client."""

    data: bytes
    address: int
    is_v6: bool
    port: int
    receive_ts: int  # NTP timestamp from the kernel
    now: float


class Responder:
    def __init__(
        self, access: Access, system: SystemVars | None = None, keys: KeyRing | None = None
    ) -> None:
        self.access = access
        self.keys = keys or KeyRing()
        self.signed_queue: list[QueuedReply] = []
        self.nts_keys: nts.CookieKeys | None = None  # set when the NTS-KE server runs
        self.counters = ServerCounters()
        self.system = system or SystemVars()
        self.control_enabled = False  # set by whoever runs the control responder
        self.control_queue: list[tuple[bytes, int, bool, int, int]] = []
        # (address, is_v6, port) of every configured `peer`, resolved; set by the daemon.
        self.peer_addresses: frozenset[tuple[int, bool, int]] = frozenset()
        self.peer_queue: list[PeerPacket] = []
        self.broadcast_client = False  # set by the daemon when it listens to broadcasts
        self.broadcast_queue: list[PeerPacket] = []
        self.mssntp_queue: list[mssntp.MssntpRequest] = []
        self.interleaved_queue: list[InterleavedReply] = []
        # One live entry per interleaved client: as many as the MRU list holds sources.
        self.transmit_log = TransmitLog(access.mru_limits.max_entries)
        self._template_at = -1e300
        self._leads: list[bytes] = []
        self._middle = b""
        self._generation = 0  # bumped by every template rebuild

    def _queue_control(
        self,
        data: bytes | bytearray | memoryview,
        address: int,
        is_v6: bool,
        port: int,
        now: float,
        verdict: int,
    ) -> None:
        """Mode 6 goes to the control responder (proto.control), which the caller runs after
        the batch: its answers are fragments of another shape than a time reply."""
        flags = verdict if verdict != UNCHECKED else self.access.check(
            address, is_v6, port, now, data[0] & 0x3F)
        if not self.control_enabled or flags & acc.IGNORE or flags & acc.NOQUERY:
            self.counters.drop(DropReason.CONTROL_DENIED)
        elif len(self.control_queue) >= CONTROL_QUEUE_LIMIT:
            self.counters.drop(DropReason.RATE_LIMITED)
        else:
            self.control_queue.append((bytes(data), address, is_v6, port, flags))
        return None

    def take_control(self) -> list[tuple[bytes, int, bool, int, int]]:
        """The mode 6 requests queued since the last call: (data, address, is_v6, port, flags)."""
        queued, self.control_queue = self.control_queue, []
        return queued

    def take_peer(self) -> list[PeerPacket]:
        """The symmetric packets from configured peers queued since the last call."""
        queued, self.peer_queue = self.peer_queue, []
        return queued

    def take_interleaved(self) -> list[InterleavedReply]:
        """The interleaved-mode replies queued since the last call, to send and keep."""
        queued, self.interleaved_queue = self.interleaved_queue, []
        return queued

    def take_broadcast(self) -> list[PeerPacket]:
        """The broadcasts queued since the last call, for the broadcast client."""
        queued, self.broadcast_queue = self.broadcast_queue, []
        return queued

    def take_mssntp(self) -> list[mssntp.MssntpRequest]:
        """The MS-SNTP requests queued since the last call, for ntp_signd to sign."""
        queued, self.mssntp_queue = self.mssntp_queue, []
        return queued

    def set_system(self, system: SystemVars) -> None:
        self.system = system
        self._template_at = -1e300  # rebuild on the next reply

    def respond(
        self,
        data: bytes | bytearray | memoryview,
        address: int,
        is_v6: bool,
        port: int,
        receive_ts: int,
        now: float,
    ) -> bytes | None:
        """The reply minus its transmit timestamp, or None (the drop is counted)."""
        n = len(data)
        verdict = self.classify(data[0] if n else 0, n, address, is_v6, port, now)
        if verdict == FAST:
            if data[31] & 1:
                return self.interleave(data, address, is_v6, port, receive_ts, now)
            return self._reply(data, (data[0] >> 3) & 7, receive_ts, now)
        return self.respond_full(data, address, is_v6, port, receive_ts, now, verdict)

    def classify(
        self, first: int, length: int, address: int, is_v6: bool, port: int, now: float
    ) -> int:
        """The fast path's decision for a request of `length` bytes starting with `first`.

        FAST: a plain 48-byte NTPv1-4 client request from a source with nothing special in
        its restrict flags -- nearly all traffic. It is accounted as received and served;
        the caller answers from `template(now)`. Any other verdict: the caller must pass it
        to `respond_full`, which makes the same decisions step by step without checking
        or accounting the packet a second time.
        """
        if length != HEADER_LEN or first & 7 != _CLIENT or not 8 <= first & 0x38 <= 32:
            return UNCHECKED
        flags = self.access.check(address, is_v6, port, now, first & 0x3F)
        if not flags & _SPECIAL or flags & _SPECIAL_LIMITED == _OVER_RATE:
            counters = self.counters
            counters.received += 1
            counters.served += 1
            return FAST
        return flags

    def template(self, now: float) -> tuple[int, list[bytes], bytes]:
        """(generation, leads, middle) of the reply template valid at `now`.

        leads[version] is the reply's first two bytes (LI/VN/mode, stratum); middle is the
        21 bytes from precision to the reference timestamp. The generation changes whenever
        they are rebuilt (once a second, and after `set_system`), so a caller that copies
        them elsewhere only needs to compare it.
        """
        if not 0.0 <= now - self._template_at < _TEMPLATE_LIFETIME:
            self._build_templates(now)
        return self._generation, self._leads, self._middle

    def respond_full(
        self,
        data: bytes | bytearray | memoryview,
        address: int,
        is_v6: bool,
        port: int,
        receive_ts: int,
        now: float,
        verdict: int = UNCHECKED,
    ) -> bytes | None:
        """`respond` for a packet `classify` did not find FAST; `verdict` is its result."""
        counters = self.counters
        counters.received += 1
        n = len(data)
        if not n:
            counters.drop(DropReason.TOO_SHORT)
            return None
        first = data[0]
        mode = first & 7
        if mode == Mode.PRIVATE:
            counters.drop(DropReason.MODE7)
            return None
        if mode == Mode.CONTROL:
            return self._queue_control(data, address, is_v6, port, now, verdict)
        try:
            # The header is all a plain request has; longer ones go through the full codec
            # so that malformed extension fields and trailers are refused, not skipped.
            extended = False
            if n == HEADER_LEN:
                version = (first >> 3) & 7
                if not 1 <= version <= 4:
                    raise PacketError(DropReason.BAD_VERSION, f"version {version}")
                mac = None
            elif mssntp.is_extended_request(data):
                # Not an NTP trailer the codec knows; refused below, once restrict has spoken.
                extended, version, mac = True, (first >> 3) & 7, None
            elif HEADER_LEN < n <= _MAC_ONLY_LEN:
                # Too short for an extension field: the header and a MAC (a signed request)
                # are all it can be, so the codec's trailer rule alone decides.
                version = (first >> 3) & 7
                if not 1 <= version <= 4:
                    raise PacketError(DropReason.BAD_VERSION, f"version {version}")
                mac = decode_mac(data, version)
            else:
                packet = decode(data)
                version = packet.header.version
                mac = packet.mac
                if self.nts_keys is not None and any(
                        ef.field_type in nts.NTS_FIELDS for ef in packet.extensions):
                    return self._respond_nts(bytes(data), packet, address, is_v6, port,
                                             receive_ts, now, verdict)
        except PacketError as err:
            counters.drop(err.reason)
            return None

        flags = verdict
        if flags == UNCHECKED:
            flags = self.access.check(address, is_v6, port, now, first & 0x3F)
        if flags & acc.IGNORE:
            counters.drop(DropReason.RESTRICTED)
            return None
        if extended:
            counters.refuse_mssntp(mssntp.MssntpFailure.EXTENDED if flags & acc.MSSNTP
                                   else mssntp.MssntpFailure.NOT_PERMITTED)
            return None
        if mode == Mode.RESERVED and version == 1:
            mode = Mode.CLIENT  # NTPv1 had no client mode; RFC 5905 appendix treats it so
        if mode in _SYMMETRIC and (address, is_v6, port) in self.peer_addresses:
            # Only a configured peer's address gets this far, and its association decides
            # (MAC first): no packet ever creates one (CVE-2016-1549).
            if len(self.peer_queue) >= PEER_QUEUE_LIMIT:
                counters.drop(DropReason.RATE_LIMITED)
            else:
                counters.peer_packets += 1
                self.peer_queue.append(PeerPacket(bytes(data), address, is_v6, port,
                                                  receive_ts, now))
            return None
        if mode == Mode.BROADCAST and self.broadcast_client:
            return self._queue_broadcast(data, address, is_v6, port, receive_ts, now, flags,
                                         version)
        if mode != Mode.CLIENT:
            counters.drop(DropReason.NOT_A_REQUEST)
            return None
        if flags & acc.NOSERVE:
            return self._refuse(flags, data, version, KISS_RSTR, DropReason.RESTRICTED)
        if flags & acc.VERSION and version != 4:
            counters.drop(DropReason.RESTRICTED)
            return None
        key = None
        signd_key: bytes | None = None  # an MS-SNTP request's key identifier, as received
        if mac is not None and not mac.is_crypto_nak:
            if mssntp.is_authenticator(mac):
                if not flags & acc.MSSNTP:
                    counters.refuse_mssntp(mssntp.MssntpFailure.NOT_PERMITTED)
                    return None
                signd_key = bytes(data[HEADER_LEN:HEADER_LEN + mssntp.KEY_ID_LEN])
            else:
                # A request that claims a key must prove it: one that fails is not answered
                # at all (no crypto-NAK either), so a forger learns nothing and reflects
                # nothing.
                result = self.keys.check(mac, signed_part(data, mac))
                if result is not AuthResult.OK:
                    counters.refuse_auth(result)
                    return None
                key = self.keys.keys[mac.key_id]
        if key is None and flags & acc.NOTRUST:
            return self._refuse(flags, data, version, KISS_DENY, DropReason.AUTH_REQUIRED)
        if flags & acc.OVER_RATE and flags & acc.LIMITED:
            counters.drop(DropReason.RATE_LIMITED)
            if flags & acc.KOD and flags & acc.KOD_ALLOWED:
                counters.kiss(KISS_RATE)
                return self._kiss(data, version, KISS_RATE)
            return None
        if signd_key is not None:
            if len(self.mssntp_queue) >= MSSNTP_QUEUE_LIMIT:
                counters.refuse_mssntp(mssntp.MssntpFailure.QUEUE_FULL)
                return None
            # Counted as served once the signed reply has left (daemon/signd).
            self.mssntp_queue.append(mssntp.MssntpRequest(
                self._reply(data, version, receive_ts, now), signd_key, address, is_v6, port))
            return None
        if key is not None:
            if len(self.signed_queue) >= SIGNED_QUEUE_LIMIT:
                counters.drop(DropReason.RATE_LIMITED)
                return None
            counters.served += 1
            self.signed_queue.append(SignedReply(
                self._reply(data, version, receive_ts, now), key, address, is_v6, port))
            return None
        counters.served += 1
        if data[31] & 1:
            return self.interleave(data, address, is_v6, port, receive_ts, now)
        return self._reply(data, version, receive_ts, now)

    def interleave(
        self,
        data: bytes | bytearray | memoryview,
        address: int,
        is_v6: bool,
        port: int,
        receive_ts: int,
        now: float,
    ) -> bytes | None:
        """A plain client request, accounted as served, whose origin has its lowest bit set
        (the serving path's cheap test): if it may be interleaved, its reply is queued
        (`take_interleaved`) and None returned; otherwise the basic reply's prefix, as
        `respond` gives it."""
        version = (data[0] >> 3) & 7
        if not may_interleave(data) or len(self.interleaved_queue) >= INTERLEAVED_QUEUE_LIMIT:
            return self._reply(data, version, receive_ts, now)
        counters = self.counters
        client = address_key(address, is_v6)
        kept = self.transmit_log.take(int.from_bytes(data[24:32], "big"), client)
        if kept is None:
            counters.interleaved_missed += 1
            prefix, transmit = self._reply(data, version, receive_ts, now), 0
        else:
            transmit, from_kernel = kept
            counters.interleaved += 1
            if not from_kernel:
                counters.interleaved_daemon_stamp += 1
            # origin = the request's receive field: how the client knows the mode
            prefix = self._reply(data, version, receive_ts, now, origin=data[32:40])
        self.interleaved_queue.append(InterleavedReply(
            prefix, transmit, receive_ts | 1, client, address, is_v6, port))
        return None

    def _queue_broadcast(
        self,
        data: bytes | bytearray | memoryview,
        address: int,
        is_v6: bool,
        port: int,
        receive_ts: int,
        now: float,
        flags: int,
        version: int,
    ) -> None:
        """ntpd drops a broadcast from a `noserve` source, one that `version` excludes, and
        an over-rate one under `limited` (never with a kiss: nobody asked)."""
        counters = self.counters
        if flags & acc.NOSERVE or (flags & acc.VERSION and version != 4):
            counters.drop(DropReason.RESTRICTED)
        elif ((flags & acc.OVER_RATE and flags & acc.LIMITED)
              or len(self.broadcast_queue) >= BROADCAST_QUEUE_LIMIT):
            counters.drop(DropReason.RATE_LIMITED)
        else:
            counters.broadcast_packets += 1
            self.broadcast_queue.append(PeerPacket(bytes(data), address, is_v6, port,
                                                   receive_ts, now))
        return None

    def _respond_nts(
        self,
        data: bytes,
        packet: NtpPacket,
        address: int,
        is_v6: bool,
        port: int,
        receive_ts: int,
        now: float,
        verdict: int,
    ) -> None:
        """An NTS request: the restrict and rate decisions first (cheap), then the crypto."""
        counters = self.counters
        flags = verdict
        if flags == UNCHECKED:
            flags = self.access.check(address, is_v6, port, now, data[0] & 0x3F)
        h = packet.header
        if flags & acc.IGNORE or flags & acc.NOSERVE or (flags & acc.VERSION and h.version != 4):
            counters.drop(DropReason.RESTRICTED)
            return None
        if h.mode != Mode.CLIENT:
            counters.drop(DropReason.NOT_A_REQUEST)
            return None
        if flags & acc.OVER_RATE and flags & acc.LIMITED:
            counters.drop(DropReason.RATE_LIMITED)  # no kiss: unauthenticated to an NTS client
            return None
        if len(self.signed_queue) >= SIGNED_QUEUE_LIMIT:
            counters.drop(DropReason.RATE_LIMITED)
            return None
        assert self.nts_keys is not None
        checked = nts.check_request(data, packet, self.nts_keys)
        if isinstance(checked, tuple):
            failure, uid_field = checked
            counters.refuse_nts(failure)
            if failure is nts.NtsFailure.BAD_COOKIE and uid_field is not None:
                counters.kiss(nts.KISS_NTSN)
                self.signed_queue.append(NakReply(
                    nts.nak(h.version, h.poll, self.system.precision, h.transmit, uid_field),
                    address, is_v6, port))
            return None
        budget = len(data) - nts.fixed_reply_length(checked.uid_field)
        counters.served += 1
        counters.nts_served += 1
        self.signed_queue.append(nts.NtsReply(
            self._reply(data, h.version, receive_ts, now), checked.uid_field,
            nts.reply_cookies(checked, self.nts_keys, budget), checked.s2c, address, is_v6,
            port))
        return None

    def take_signed(self) -> list[QueuedReply]:
        """The replies queued since the last call (signed, NTS), to finish and send."""
        queued, self.signed_queue = self.signed_queue, []
        return queued

    def _refuse(
        self,
        flags: int,
        data: bytes | bytearray | memoryview,
        version: int,
        code: bytes,
        reason: DropReason,
    ) -> bytes | None:
        self.counters.drop(reason)
        # A kiss only where asked for, and never more often than the rate allows: a
        # refused source must not be able to use us as a reflector.
        if flags & acc.KOD and (not flags & acc.OVER_RATE or flags & acc.KOD_ALLOWED):
            self.counters.kiss(code)
            return self._kiss(data, version, code)
        return None

    def _reply(
        self, data: bytes | bytearray | memoryview, version: int, receive_ts: int, now: float,
        origin: bytes | bytearray | memoryview | None = None,
    ) -> bytes:
        """The reply's first 40 bytes: origin = the request's transmit field (or `origin`),
        receive = `receive_ts` with its lowest bit set (proto.interleaved)."""
        if not 0.0 <= now - self._template_at < _TEMPLATE_LIFETIME:
            self._build_templates(now)
        return (
            self._leads[version] + data[2:3] + self._middle
            + (data[40:48] if origin is None else origin)
            + (receive_ts | 1).to_bytes(8, "big")
        )

    def _build_templates(self, now: float) -> None:
        """Precompute the reply around the three per-request fields (poll, origin, receive).

        Root dispersion grows with the age of the system variables; rebuilding once a second
        keeps it within one unit (15 us) of exact.
        """
        leap, stratum, middle = stated_system(self.system, now)
        self._leads = [bytes([li_vn_mode(leap, v, Mode.SERVER), stratum]) for v in range(8)]
        self._middle = middle
        self._template_at = now
        self._generation += 1

    def _kiss(self, data: bytes | bytearray | memoryview, version: int, code: bytes) -> bytes:
        """A Kiss-o'-Death: stratum 0, the code in refid, origin = the client's transmit."""
        poll = data[2] if data[2] < 128 else data[2] - 256
        client_transmit = int.from_bytes(data[40:48], "big")
        return _REPLY_HEAD.pack(
            li_vn_mode(Leap.UNSYNCHRONISED, version, Mode.SERVER),
            0, poll, self.system.precision, 0, 0, code, 0, client_transmit, 0,
        )

