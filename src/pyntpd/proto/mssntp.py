"""MS-SNTP (Microsoft's signed NTP, [MS-SNTP]) as a Samba AD domain controller serves it.

A domain member's w32time sends an NTPv3 client request whose MAC trailer is a 4-byte key
identifier and sixteen zero bytes: the "Authenticator". The key identifier is the RID of
the member's machine account, little-endian, its top bit a key selector. The server cannot
sign the reply itself, since the key is the account's NT password hash, which only the
directory holds; ntpd and chrony hand the reply to Samba's ntp_signd over a Unix stream
socket (`ntpsigndsocket DIR` -> DIR/socket), and send on what comes back.

The ntp_signd protocol (Samba's librpc/idl/ntp_signd.idl, its server source4/ntp_signd):
every message is a 4-byte big-endian length (not counting itself) and a body.

    request  version u32 BE (0) | op u32 BE (0, SIGN_TO_CLIENT) | packet_id u16 BE |
             2 bytes padding | key_id u32 LE (the request's key identifier bytes, as
             received) | the 48-byte reply to sign
    reply    version u32 BE | op u32 BE (3 SIGNING_SUCCESS, 4 SIGNING_FAILURE) |
             packet_id u32 BE (the request's, echoed) | on success the signed reply:
             the 48 bytes, the key identifier, MD5(NT hash || the 48 bytes)

Samba answers one request after another on a connection, so several may be outstanding and
the replies come in order; for an account that exists but is disabled or not a trust
account it closes the connection without a reply. It implements only SIGN_TO_CLIENT with
the 16-byte MD5 checksum: the "ExtendedAuthenticator" (a 72-byte trailer, 64-byte
checksum, [MS-SNTP] 2.2.3) has no operation there, and chrony refuses it too.

Everything here is pure: framing, checks and the refusal reasons. The daemon's
`daemon/signd.py` owns the socket.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import NamedTuple

from .packet import HEADER_LEN, Mac

KEY_ID_LEN = 4
DIGEST_LEN = 16  # the Authenticator's MD5 checksum
REQUEST_LEN = HEADER_LEN + KEY_ID_LEN + DIGEST_LEN  # 68: what w32time sends, and gets back
EXTENDED_TRAILER_LEN = 72  # key id, reserved, flags, hash hints, hash id, 64-byte checksum
EXTENDED_REQUEST_LEN = HEADER_LEN + EXTENDED_TRAILER_LEN  # 120
_EXTENDED_CHECKSUM_AT = HEADER_LEN + 8

SIGND_VERSION = 0
OP_SIGN_TO_CLIENT = 0
OP_SIGNING_SUCCESS = 3
OP_SIGNING_FAILURE = 4

_LENGTH = struct.Struct("!I")
_REQUEST_HEAD = struct.Struct("!IIIHH")  # length, version, op, packet_id, padding
_REPLY_HEAD = struct.Struct("!III")  # version, op, packet_id
REPLY_HEAD_LEN = _REPLY_HEAD.size
# A reply carries at most a signed packet of the largest size we ever send (68 bytes);
# anything much longer is not ntp_signd talking, and a stream cannot be resynchronised.
MAX_REPLY_BODY = REPLY_HEAD_LEN + 1024
PACKET_ID_MODULUS = 1 << 16
_ZERO_DIGEST = bytes(DIGEST_LEN)
_ZERO_EXTENDED = bytes(EXTENDED_REQUEST_LEN - _EXTENDED_CHECKSUM_AT)


class MssntpFailure(enum.StrEnum):
    """Why an MS-SNTP request got no reply; each value names a counter."""

    NOT_PERMITTED = "not_permitted"  # the source's restrict rule lacks `mssntp`
    EXTENDED = "extended_unsupported"  # the ExtendedAuthenticator: ntp_signd cannot sign it
    QUEUE_FULL = "queue_full"  # too many requests waiting for ntp_signd
    UNAVAILABLE = "signd_unavailable"  # no connection to ntp_signd (not running, no access)
    TIMEOUT = "signd_timeout"  # ntp_signd did not answer in time
    REFUSED = "signd_refused"  # SIGNING_FAILURE: no such account, or not signable
    CLOSED = "signd_closed"  # ntp_signd closed the connection (disabled or non-trust account)
    PROTOCOL = "signd_protocol"  # a reply that breaks the protocol; the connection is dropped
    SEND_FAILED = "send_failed"  # signed, but the reply could not be sent


def is_authenticator(mac: Mac) -> bool:
    """The MS-SNTP Authenticator: a key identifier and a zero checksum (ntpd's test)."""
    return len(mac.digest) == DIGEST_LEN and mac.digest == _ZERO_DIGEST


def is_extended_request(data: bytes | bytearray | memoryview) -> bool:
    """An NTPv3 request with the 72-byte ExtendedAuthenticator and a zero checksum
    (chrony's test: only the checksum is compared, the four flag bytes before it vary; in
    NTPv4 those bytes would be extension fields, which the codec judges)."""
    return (len(data) == EXTENDED_REQUEST_LEN and (data[0] >> 3) & 7 == 3
            and data[_EXTENDED_CHECKSUM_AT:] == _ZERO_EXTENDED)


@dataclass(frozen=True, slots=True)
class MssntpRequest:
    """A reply waiting to be signed: the responder's 40-byte prefix (the transmit timestamp
    is added when it goes to ntp_signd) and the key identifier as the client sent it."""

    prefix: bytes
    key_id: bytes
    address: int
    is_v6: bool
    port: int

    def packet(self, transmit: int) -> bytes:
        """The 48-byte reply to sign, with its transmit timestamp."""
        return self.prefix + transmit.to_bytes(8, "big")


def encode_request(packet_id: int, key_id: bytes, packet: bytes) -> bytes:
    """One framed SIGN_TO_CLIENT request for ntp_signd."""
    if len(key_id) != KEY_ID_LEN:
        raise ValueError(f"a key identifier is {KEY_ID_LEN} bytes, not {len(key_id)}")
    body_len = _REQUEST_HEAD.size - _LENGTH.size + KEY_ID_LEN + len(packet)
    return _REQUEST_HEAD.pack(body_len, SIGND_VERSION, OP_SIGN_TO_CLIENT,
                              packet_id % PACKET_ID_MODULUS, 0) + key_id + packet


class SigndReply(NamedTuple):
    version: int
    op: int
    packet_id: int
    signed: bytes  # empty on failure


class SigndProtocolError(ValueError):
    """ntp_signd sent something the protocol does not allow; the connection must go."""


class ReplyReader:
    """Cuts ntp_signd's byte stream into replies; holds at most one partial reply."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete reply held."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[SigndReply]:
        """The replies completed by `data`; raises SigndProtocolError on a bad frame."""
        buffer = self._buffer
        buffer += data
        replies: list[SigndReply] = []
        while len(buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer)
            if not REPLY_HEAD_LEN <= length <= MAX_REPLY_BODY:
                raise SigndProtocolError(f"a {length}-byte reply")
            end = _LENGTH.size + length
            if len(buffer) < end:
                break
            version, op, packet_id = _REPLY_HEAD.unpack_from(buffer, _LENGTH.size)
            replies.append(SigndReply(version, op, packet_id,
                                      bytes(buffer[_LENGTH.size + REPLY_HEAD_LEN:end])))
            del buffer[:end]
        return replies


def check_reply(
    reply: SigndReply, packet_id: int, packet: bytes, key_id: bytes
) -> bytes | MssntpFailure:
    """The signed reply to send for the request (`packet_id`, `packet`, `key_id`), or why not.

    A success must return exactly what we asked to be signed followed by the same key
    identifier and a checksum: ntp_signd must not be able to make us send anything else.
    """
    if reply.packet_id != packet_id % PACKET_ID_MODULUS:
        return MssntpFailure.PROTOCOL
    if reply.op == OP_SIGNING_FAILURE:
        return MssntpFailure.REFUSED
    if reply.op != OP_SIGNING_SUCCESS:
        return MssntpFailure.PROTOCOL
    signed = reply.signed
    if (len(signed) != len(packet) + KEY_ID_LEN + DIGEST_LEN
            or signed[:len(packet)] != packet
            or signed[len(packet):len(packet) + KEY_ID_LEN] != key_id):
        return MssntpFailure.PROTOCOL
    return signed
