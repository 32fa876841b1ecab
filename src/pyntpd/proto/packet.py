"""The one NTP packet codec: 48-byte header, RFC 7822 extension fields, legacy MAC trailer.

`decode` is strict and total: for any input it returns an `NtpPacket` or raises
`PacketError` carrying a `DropReason` (the counter the daemon increments), never anything
else. `encode` is its inverse for well-formed packets.

Layout after the header (RFC 7822 §7.5, and what chrony and ntpsec do):
- nothing;
- a MAC: 4-byte key id + 16-byte (MD5, AES-CMAC) or 20-byte (SHA1) digest — anything of
  24 bytes or less after the header (or after the last extension field) is a MAC, never an
  extension field;
- a crypto-NAK: a lone 4-byte key id, which is *not* a MAC and authenticates nothing;
- NTPv4 only: extension fields, each type(16) + length(16) + value, length counting the
  4-byte head, a multiple of 4 and at least 16; then optionally one of the above.
  Because a trailer of 24 bytes or less is read as a MAC, an extension field that ends the
  packet without a MAC must be at least 28 bytes (RFC 7822's last-EF rule falls out of it).

Mode 6 (control) and mode 7 (private) packets have other layouts and are not decoded here;
`peek_mode` lets the caller dispatch on the first byte.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

HEADER = struct.Struct("!BBbbII4sQQQQ")
HEADER_LEN = HEADER.size  # 48

MAX_PACKET_LEN = 1232  # fits an IPv6 minimum-MTU datagram; NTS requests with 8 cookies fit
MIN_EF_LEN = 16
MAX_LEGACY_MAC_LEN = 24  # key id + SHA1 digest
CRYPTO_NAK_LEN = 4
DIGEST_LENGTHS = frozenset({16, 20})
EF_HEAD = struct.Struct("!HH")


class Mode(enum.IntEnum):
    RESERVED = 0
    SYMMETRIC_ACTIVE = 1
    SYMMETRIC_PASSIVE = 2
    CLIENT = 3
    SERVER = 4
    BROADCAST = 5
    CONTROL = 6
    PRIVATE = 7


class DropReason(enum.StrEnum):
    """Why an incoming datagram was dropped; each value names a counter."""

    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    BAD_VERSION = "bad_version"
    BAD_MODE = "bad_mode"
    BAD_EXTENSION = "bad_extension"
    BAD_TRAILER = "bad_trailer"
    MODE7 = "mode7"
    CONTROL_DENIED = "control_denied"
    RESTRICTED = "restricted"
    RATE_LIMITED = "rate_limited"
    NOT_A_REQUEST = "not_a_request"
    AUTH_REQUIRED = "auth_required"
    BAD_AUTH = "bad_auth"  # a MAC that does not verify under a trusted key (see auth_failed)
    BAD_PORT = "bad_port"
    MSSNTP = "mssntp"  # an MS-SNTP request left unanswered (see mssntp_failed)


class PacketError(ValueError):
    """A datagram that the codec refuses; `reason` names the drop counter."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class NtpHeader(NamedTuple):
    """The 48-byte header, fields as on the wire (shorts and timestamps left raw)."""

    li_vn_mode: int
    stratum: int
    poll: int
    precision: int
    root_delay: int
    root_dispersion: int
    refid: bytes
    reference: int
    origin: int
    receive: int
    transmit: int

    @property
    def leap(self) -> int:
        return self.li_vn_mode >> 6

    @property
    def version(self) -> int:
        return (self.li_vn_mode >> 3) & 7

    @property
    def mode(self) -> int:
        return self.li_vn_mode & 7


class ExtensionField(NamedTuple):
    """One RFC 7822 extension field; `value` excludes the 4-byte head, includes padding."""

    field_type: int
    value: bytes


class Mac(NamedTuple):
    """Legacy MAC trailer. An empty digest is a crypto-NAK, which authenticates nothing."""

    key_id: int
    digest: bytes

    @property
    def is_crypto_nak(self) -> bool:
        return not self.digest


class NtpPacket(NamedTuple):
    header: NtpHeader
    extensions: tuple[ExtensionField, ...] = ()
    mac: Mac | None = None

    def encode(self) -> bytes:
        return encode(self)


def li_vn_mode(leap: int, version: int, mode: int) -> int:
    return ((leap & 3) << 6) | ((version & 7) << 3) | (mode & 7)


def peek_mode(data: bytes | bytearray | memoryview) -> int | None:
    """The mode bits of a datagram, or None if it is empty."""
    return data[0] & 7 if len(data) else None


def decode(data: bytes | bytearray | memoryview) -> NtpPacket:
    """Parse one NTP (mode 0-5) datagram strictly."""
    n = len(data)
    if n < HEADER_LEN:
        raise PacketError(DropReason.TOO_SHORT, f"{n} bytes, header needs {HEADER_LEN}")
    if n > MAX_PACKET_LEN:
        raise PacketError(DropReason.TOO_LONG, f"{n} bytes, limit {MAX_PACKET_LEN}")
    header = NtpHeader._make(HEADER.unpack_from(data))
    version = header.version
    if not 1 <= version <= 4:
        raise PacketError(DropReason.BAD_VERSION, f"version {version}")
    mode = header.mode
    if mode == Mode.PRIVATE:
        raise PacketError(DropReason.MODE7, "mode 7 (ntpdc) is never answered")
    if mode == Mode.CONTROL:
        raise PacketError(DropReason.BAD_MODE, "mode 6 is not an NTP time packet")
    if n == HEADER_LEN:
        return NtpPacket(header)
    extensions, mac = _decode_trailer(bytes(data[HEADER_LEN:]), version)
    return NtpPacket(header, extensions, mac)


def decode_mac(data: bytes | bytearray | memoryview, version: int) -> Mac | None:
    """The MAC of a datagram of at most HEADER_LEN + MAX_LEGACY_MAC_LEN bytes whose version
    and mode the caller has checked: what `decode` would find, by the same rule, without
    building the header and packet objects."""
    n = len(data)
    if n > HEADER_LEN + MAX_LEGACY_MAC_LEN:
        raise ValueError("longer datagrams can carry extension fields: use decode()")
    if n < HEADER_LEN:
        raise PacketError(DropReason.TOO_SHORT, f"{n} bytes, header needs {HEADER_LEN}")
    return _decode_trailer(bytes(data[HEADER_LEN:]), version)[1]


def _decode_trailer(
    rest: bytes, version: int
) -> tuple[tuple[ExtensionField, ...], Mac | None]:
    extensions: list[ExtensionField] = []
    pos = 0
    end = len(rest)
    while end - pos > MAX_LEGACY_MAC_LEN:
        if version < 4:
            raise PacketError(
                DropReason.BAD_TRAILER, f"NTPv{version} packet with {end - pos} trailing bytes"
            )
        field_type, length = EF_HEAD.unpack_from(rest, pos)
        if length < MIN_EF_LEN or length % 4 or length > end - pos:
            raise PacketError(
                DropReason.BAD_EXTENSION,
                f"extension field 0x{field_type:04x} at offset {HEADER_LEN + pos} "
                f"has length {length} ({end - pos} bytes left)",
            )
        extensions.append(ExtensionField(field_type, rest[pos + 4 : pos + length]))
        pos += length
    left = end - pos
    if left == 0:
        return tuple(extensions), None
    if left == CRYPTO_NAK_LEN or (left - 4) in DIGEST_LENGTHS:
        key_id = int.from_bytes(rest[pos : pos + 4], "big")
        return tuple(extensions), Mac(key_id, rest[pos + 4 :])
    raise PacketError(DropReason.BAD_TRAILER, f"{left} trailing bytes are neither MAC nor EF")


def encode_header(header: NtpHeader) -> bytes:
    return HEADER.pack(*header)


def encode(packet: NtpPacket) -> bytes:
    parts = [HEADER.pack(*packet.header)]
    for ef in packet.extensions:
        parts.append(encode_extension(ef))
    if packet.mac is not None:
        parts.append(packet.mac.key_id.to_bytes(4, "big"))
        parts.append(packet.mac.digest)
    return b"".join(parts)


def encode_extension(ef: ExtensionField, min_length: int = MIN_EF_LEN) -> bytes:
    """One extension field, value zero-padded to a multiple of 4 and to `min_length`."""
    body = ef.value
    length = max(4 + len(body), min_length)
    length += -length % 4
    if length > 0xFFFF:
        raise ValueError(f"extension field of {length} bytes does not fit")
    return EF_HEAD.pack(ef.field_type, length) + body + bytes(length - 4 - len(body))
