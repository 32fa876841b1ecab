"""NTS for NTPv4 (RFC 8915 §5-6): extension fields, AEAD, server cookies, both sides.

Pure: the daemon reads the clock, the sockets and the cookie-key file; this module only
takes bytes and gives bytes. Randomness (nonces, unique identifiers) comes from `secrets`.

The AEAD is AEAD_AES_SIV_CMAC_256 (cryptography's AESSIV: associated data first, the nonce
last in the list; DESIGN.md §3). The authenticator covers the whole packet before it, header
included, so a server reply can only be sealed once its transmit timestamp is known: the
responder queues an `NtsReply` and the serving path calls `finish(transmit)`.

Cookies (the server's, RFC 8915 §6's suggested layout): key id (4) || nonce (16) ||
AES-SIV(master key, AD = key id, plaintext = C2S || S2C) -- 100 bytes, the size chrony uses.
The server keeps no per-client state; master keys rotate daily and the previous two stay
valid, so a client that got cookies yesterday is still served.
"""

from __future__ import annotations

import enum
import functools
import secrets
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from pyntpd.proto.ntske import AEAD_AES_SIV_CMAC_256, KEY_LENGTHS, MAX_COOKIES, usable_cookie
from pyntpd.proto.packet import (
    EF_HEAD,
    HEADER,
    HEADER_LEN,
    ExtensionField,
    Mode,
    NtpPacket,
    encode_extension,
    li_vn_mode,
)
from pyntpd.types import Leap

UNIQUE_IDENTIFIER = 0x0104
NTS_COOKIE = 0x0204
COOKIE_PLACEHOLDER = 0x0304
AUTHENTICATOR = 0x0404
NTS_FIELDS = frozenset({UNIQUE_IDENTIFIER, NTS_COOKIE, COOKIE_PLACEHOLDER, AUTHENTICATOR})

UID_LENGTH = 32  # RFC 8915 §5.3: at least 32 bytes
NONCE_LENGTH = 16  # chrony refuses shorter nonces
KEY_LENGTH = KEY_LENGTHS[AEAD_AES_SIV_CMAC_256]
KISS_NTSN = b"NTSN"

COOKIE_KEY_ID = struct.Struct("!I")
COOKIE_LENGTH = COOKIE_KEY_ID.size + NONCE_LENGTH + 16 + 2 * KEY_LENGTH  # 100
COOKIE_KEY_LIFETIME = 86400.0  # a new master key each day
COOKIE_KEYS_KEPT = 3  # current + two previous
_AUTH_HEAD = struct.Struct("!HH")


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


# AES-SIV objects by key: setting one up costs twice what sealing a reply does. The cookie
# keys (COOKIE_KEYS_KEPT) are always in; the rest are clients' C2S/S2C keys, which a client
# uses for every request until it runs NTS-KE again. Bounded, least recently used out.
CIPHER_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=CIPHER_CACHE_SIZE)
def _cipher(key: bytes) -> AESSIV:
    return AESSIV(key)


def seal(key: bytes, associated: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    return _cipher(key).encrypt(plaintext, [associated, nonce])


def unseal(key: bytes, associated: bytes, nonce: bytes, ciphertext: bytes) -> bytes | None:
    try:
        return _cipher(key).decrypt(ciphertext, [associated, nonce])
    except (InvalidTag, ValueError):
        return None


def authenticator(key: bytes, associated: bytes, plaintext: bytes,
                  nonce: bytes | None = None) -> bytes:
    """The NTS Authenticator and Encrypted Extension Fields field, whole (head included)."""
    nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_LENGTH)
    ciphertext = seal(key, associated, nonce, plaintext)
    body = _AUTH_HEAD.pack(len(nonce), len(ciphertext)) + _pad4(nonce) + _pad4(ciphertext)
    return encode_extension(ExtensionField(AUTHENTICATOR, body))


def parse_authenticator(value: bytes) -> tuple[bytes, bytes] | None:
    """(nonce, ciphertext) of an authenticator's body, or None if it does not add up."""
    if len(value) < _AUTH_HEAD.size:
        return None
    nonce_len, ct_len = _AUTH_HEAD.unpack_from(value)
    nonce_end = _AUTH_HEAD.size + nonce_len + (-nonce_len % 4)
    if nonce_len < NONCE_LENGTH or ct_len < 16 or nonce_end + ct_len > len(value):
        return None
    nonce = value[_AUTH_HEAD.size : _AUTH_HEAD.size + nonce_len]
    return nonce, value[nonce_end : nonce_end + ct_len]


def field_offsets(packet: NtpPacket) -> list[int]:
    """Where each extension field of a decoded packet starts in the datagram."""
    offsets = []
    pos = HEADER_LEN
    for ef in packet.extensions:
        offsets.append(pos)
        pos += 4 + len(ef.value)
    return offsets


def parse_fields(data: bytes) -> list[ExtensionField] | None:
    """Extension fields packed back to back (the plaintext of an authenticator)."""
    fields = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < EF_HEAD.size:
            return None
        kind, length = EF_HEAD.unpack_from(data, pos)
        if length < EF_HEAD.size or length % 4 or length > len(data) - pos:
            return None
        fields.append(ExtensionField(kind, data[pos + 4 : pos + length]))
        pos += length
    return fields


# --- server cookies ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CookieKey:
    key_id: int
    secret: bytes = field(repr=False)
    created: float  # wall-clock seconds (the daemon's clock), for rotation


@dataclass
class CookieKeys:
    """The server's master keys: newest first. Persisted by the daemon (`to_text`)."""

    keys: list[CookieKey] = field(default_factory=list)

    def current(self) -> CookieKey:
        return self.keys[0]

    def rotate_due(self, now: float) -> bool:
        return not self.keys or now - self.keys[0].created >= COOKIE_KEY_LIFETIME \
            or now < self.keys[0].created - COOKIE_KEY_LIFETIME  # clock stepped far back

    def rotate(self, now: float) -> None:
        used = {k.key_id for k in self.keys}
        key_id = secrets.randbits(32)
        while key_id in used:
            key_id = secrets.randbits(32)
        self.keys.insert(0, CookieKey(key_id, secrets.token_bytes(KEY_LENGTH), now))
        del self.keys[COOKIE_KEYS_KEPT:]

    def make_cookie(self, c2s: bytes, s2c: bytes) -> bytes:
        key = self.current()
        key_id = COOKIE_KEY_ID.pack(key.key_id)
        nonce = secrets.token_bytes(NONCE_LENGTH)
        return key_id + nonce + seal(key.secret, key_id, nonce, c2s + s2c)

    def open_cookie(self, cookie: bytes) -> tuple[bytes, bytes] | None:
        """(C2S, S2C) from a cookie this server made, or None."""
        if len(cookie) != COOKIE_LENGTH:
            return None
        key_id = cookie[:4]
        (wanted,) = COOKIE_KEY_ID.unpack(key_id)
        for key in self.keys:
            if key.key_id == wanted:
                plain = unseal(key.secret, key_id, cookie[4:20], cookie[20:])
                if plain is None or len(plain) != 2 * KEY_LENGTH:
                    return None
                return plain[:KEY_LENGTH], plain[KEY_LENGTH:]
        return None

    def to_text(self) -> str:
        lines = ["# pyntpd NTS cookie keys: key-id secret created; keep this file secret"]
        lines += [f"{k.key_id} {k.secret.hex()} {k.created:.0f}" for k in self.keys]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(cls, text: str) -> CookieKeys:
        """Raises ValueError on anything but the format `to_text` writes."""
        keys = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3:
                raise ValueError(f"line {number}: expected 'key-id secret created'")
            secret = bytes.fromhex(parts[1])
            if len(secret) != KEY_LENGTH:
                raise ValueError(f"line {number}: a key must be {KEY_LENGTH} bytes")
            keys.append(CookieKey(int(parts[0]) & 0xFFFFFFFF, secret, float(parts[2])))
        return cls(keys[:COOKIE_KEYS_KEPT])


# --- server side of an NTS request ---------------------------------------------------------


class NtsFailure(enum.StrEnum):
    """Why an NTS request was not answered (or answered with a NAK); each names a counter."""

    MALFORMED = "nts_malformed"  # missing/duplicate fields, bad lengths
    BAD_COOKIE = "nts_bad_cookie"  # answered with an NTS NAK
    BAD_AUTHENTICATOR = "nts_bad_authenticator"
    DISABLED = "nts_disabled"


@dataclass(frozen=True, slots=True)
class NtsRequest:
    """A verified request: what the reply needs."""

    uid_field: bytes  # the Unique Identifier field as received, echoed verbatim
    s2c: bytes
    cookies_wanted: int
    c2s: bytes


def check_request(data: bytes, packet: NtpPacket, keys: CookieKeys
                  ) -> NtsRequest | tuple[NtsFailure, bytes | None]:
    """Verify an NTS request. On failure: (kind, the UID field for a NAK or None)."""
    if packet.mac is not None or not packet.extensions:
        return NtsFailure.MALFORMED, None
    offsets = field_offsets(packet)
    uid: bytes | None = None
    cookie: bytes | None = None
    placeholders: list[int] = []
    auth_at = -1
    for index, ef in enumerate(packet.extensions):
        if auth_at >= 0:
            return NtsFailure.MALFORMED, None  # nothing may follow the authenticator
        kind = ef.field_type
        if kind == UNIQUE_IDENTIFIER:
            if uid is not None or len(ef.value) < UID_LENGTH:
                return NtsFailure.MALFORMED, None
            uid = data[offsets[index] : offsets[index] + 4 + len(ef.value)]
        elif kind == NTS_COOKIE:
            if cookie is not None:
                return NtsFailure.MALFORMED, None
            cookie = ef.value
        elif kind == COOKIE_PLACEHOLDER:
            placeholders.append(len(ef.value))
        elif kind == AUTHENTICATOR:
            auth_at = index
    if uid is None or cookie is None or auth_at < 0:
        return NtsFailure.MALFORMED, None
    parsed = parse_authenticator(packet.extensions[auth_at].value)
    if parsed is None:
        return NtsFailure.MALFORMED, None
    opened = keys.open_cookie(cookie)
    if opened is None:
        return NtsFailure.BAD_COOKIE, uid
    c2s, s2c = opened
    plaintext = unseal(c2s, data[: offsets[auth_at]], parsed[0], parsed[1])
    if plaintext is None:
        return NtsFailure.BAD_AUTHENTICATOR, None
    inner = parse_fields(plaintext)
    if inner is None:
        return NtsFailure.MALFORMED, None
    placeholders += [len(ef.value) for ef in inner if ef.field_type == COOKIE_PLACEHOLDER]
    # A placeholder shorter than a cookie would let the reply outgrow the request.
    wanted = 1 + sum(1 for n in placeholders if n >= COOKIE_LENGTH)
    return NtsRequest(uid, s2c, min(wanted, MAX_COOKIES), c2s)


def reply_cookies(request: NtsRequest, keys: CookieKeys, reply_budget: int) -> bytes:
    """The encrypted part of the reply: as many fresh cookie fields as the request asked
    for and the budget (request length minus the reply's fixed part) allows."""
    one = 4 + COOKIE_LENGTH
    count = max(0, min(request.cookies_wanted, reply_budget // one))
    return b"".join(
        encode_extension(ExtensionField(NTS_COOKIE, keys.make_cookie(request.c2s, request.s2c)))
        for _ in range(count))


def fixed_reply_length(uid_field: bytes) -> int:
    """Header, UID and an authenticator with no plaintext: what every reply costs."""
    return HEADER_LEN + len(uid_field) + 4 + _AUTH_HEAD.size + NONCE_LENGTH + 16


@dataclass(frozen=True, slots=True)
class NtsReply:
    """A reply to a verified NTS request, sealed once its transmit timestamp is known."""

    prefix: bytes  # the reply's first 40 bytes
    uid_field: bytes
    cookie_fields: bytes
    s2c: bytes
    address: int
    is_v6: bool
    port: int

    def finish(self, transmit: int) -> bytes:
        head = self.prefix + transmit.to_bytes(8, "big") + self.uid_field
        return head + authenticator(self.s2c, head, self.cookie_fields)


def nak(version: int, poll: int, precision: int, client_transmit: int, uid_field: bytes
        ) -> bytes:
    """NTS NAK: a kiss NTSN carrying the request's Unique Identifier, unauthenticated."""
    return HEADER.pack(li_vn_mode(Leap.UNSYNCHRONISED, version, Mode.SERVER), 0, poll,
                       precision, 0, 0, KISS_NTSN, 0, client_transmit, 0, 0) + uid_field


# --- client side ---------------------------------------------------------------------------


class ReplyCheck(enum.StrEnum):
    OK = "ok"
    NAK = "nak"  # authentic enough to act on: the cookies are no good, run NTS-KE again
    BAD = "bad"  # not an answer to our request


@dataclass
class NtsSession:
    """What NTS-KE gave a client: keys, cookies, and where to send NTP."""

    c2s: bytes = field(repr=False)
    s2c: bytes = field(repr=False)
    cookies: list[bytes]
    server: str | None = None
    port: int | None = None
    aead: int = AEAD_AES_SIV_CMAC_256
    nak: bool = False  # the server refused our cookie: NTS-KE again
    refused_cookies: int = 0  # cookies in authentic replies not kept (ntske.usable_cookie)

    @property
    def needs_ke(self) -> bool:
        return self.nak or not self.cookies

    def build_request(self, header: bytes) -> tuple[bytes, bytes]:
        """(request, unique identifier). Takes one cookie -- a cookie is never sent twice --
        and asks for as many more as keep the jar full (placeholders sized like it)."""
        cookie = self.cookies.pop(0)
        uid = secrets.token_bytes(UID_LENGTH)
        missing = MAX_COOKIES - 1 - len(self.cookies)
        parts = [header, encode_extension(ExtensionField(UNIQUE_IDENTIFIER, uid)),
                 encode_extension(ExtensionField(NTS_COOKIE, cookie))]
        placeholder = encode_extension(ExtensionField(COOKIE_PLACEHOLDER, bytes(len(cookie))))
        parts += [placeholder] * max(0, missing)
        head = b"".join(parts)
        return head + authenticator(self.c2s, head, b""), uid

    def check_reply(self, data: bytes, packet: NtpPacket, uid: bytes) -> ReplyCheck:
        """Verify a reply to the request that carried `uid`; keep the cookies it brings."""
        if packet.mac is not None:
            return ReplyCheck.BAD
        offsets = field_offsets(packet)
        uid_ok = False
        auth_at = -1
        for index, ef in enumerate(packet.extensions):
            if ef.field_type == UNIQUE_IDENTIFIER:
                if uid_ok or ef.value[: len(uid)] != uid:
                    return ReplyCheck.BAD
                uid_ok = True
            elif ef.field_type == AUTHENTICATOR and auth_at < 0:
                auth_at = index
        if not uid_ok:
            return ReplyCheck.BAD
        if auth_at < 0:
            h = packet.header
            if h.stratum == 0 and h.refid == KISS_NTSN:
                self.nak = True
                return ReplyCheck.NAK
            return ReplyCheck.BAD
        parsed = parse_authenticator(packet.extensions[auth_at].value)
        if parsed is None:
            return ReplyCheck.BAD
        plaintext = unseal(self.s2c, data[: offsets[auth_at]], parsed[0], parsed[1])
        if plaintext is None:
            return ReplyCheck.BAD
        inner = parse_fields(plaintext) or []
        for ef in inner:
            if ef.field_type != NTS_COOKIE:
                continue
            if not usable_cookie(ef.value):
                self.refused_cookies += 1
            elif len(self.cookies) < MAX_COOKIES:
                self.cookies.append(ef.value)
        return ReplyCheck.OK
