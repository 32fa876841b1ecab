"""Symmetric-key authentication of NTP packets: the legacy MAC (RFC 5905 §7.3, RFC 8573).

The MAC trailer is a 32-bit key id and a digest of everything before it (header and any
extension fields): MD5(key || message) and SHA1(key || message) as ntpd computes them, or
AES-128-CMAC(key, message) as RFC 8573 specifies. A lone key id (a crypto-NAK) carries no
digest and proves nothing: it never authenticates a packet.

Verification is pure and constant-time in the digest; its outcome names why a packet fails,
because each failure is a counter an administrator reads when authentication "does not
work" (unknown key, untrusted key, wrong digest length, wrong digest).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from .packet import Mac

# The key material as the wire code needs it: config/keys parses the keys file into these.
Algorithm = Literal["MD5", "SHA1", "AES128CMAC"]


@dataclass(frozen=True, slots=True)
class SymmetricKey:
    key_id: int
    algorithm: Algorithm
    secret: bytes = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"SymmetricKey(key_id={self.key_id}, algorithm={self.algorithm!r}, "
            f"secret=<{len(self.secret)} bytes>)"
        )

    __str__ = __repr__

DIGEST_LENGTH: dict[Algorithm, int] = {"MD5": 16, "SHA1": 20, "AES128CMAC": 16}
AES_KEY_LENGTH = 16


class AuthResult(enum.StrEnum):
    """The outcome of checking a packet's MAC trailer; every value but OK is a refusal."""

    OK = "ok"
    NO_MAC = "no_mac"
    CRYPTO_NAK = "crypto_nak"
    UNKNOWN_KEY = "unknown_key"
    UNTRUSTED_KEY = "untrusted_key"
    WRONG_KEY = "wrong_key"  # a key id other than the one this association uses
    BAD_LENGTH = "bad_digest_length"
    BAD_MAC = "bad_mac"


def compute_digest(key: SymmetricKey, message: bytes | bytearray | memoryview) -> bytes:
    """The digest of `message` (all bytes before the key id) under `key`."""
    if key.algorithm == "AES128CMAC":
        if len(key.secret) != AES_KEY_LENGTH:
            # The keys parser refuses these; a key built elsewhere must not slip through
            # as a weaker key either.
            raise ValueError(f"key {key.key_id}: AES-128-CMAC needs a 16-byte key")
        cmac = _keyed_cmac(key.secret).copy()
        cmac.update(bytes(message))
        return cmac.finalize()
    h = _keyed_hash(key).copy()
    h.update(message)
    return h.digest()


@functools.lru_cache(maxsize=256)
def _keyed_cmac(secret: bytes) -> CMAC:
    """The CMAC with its AES key schedule done: a copy costs a quarter of a new one."""
    return CMAC(algorithms.AES(secret))


@functools.lru_cache(maxsize=256)
def _keyed_hash(key: SymmetricKey) -> hashlib._Hash:
    """The hash state after the key: each MAC copies it rather than starting over."""
    name = "md5" if key.algorithm == "MD5" else "sha1"
    # usedforsecurity=False: ntpd's MD5 MAC still works on a FIPS-mode OpenSSL, as there.
    return hashlib.new(name, key.secret, usedforsecurity=False)


def mac_trailer(key: SymmetricKey, message: bytes | bytearray | memoryview) -> bytes:
    """The 4-byte key id and the digest, to append to `message`."""
    return key.key_id.to_bytes(4, "big") + compute_digest(key, message)


def verify_with(key: SymmetricKey, mac: Mac, message: bytes | bytearray | memoryview) -> AuthResult:
    """Check `mac` against `key` alone (the caller has chosen the key)."""
    if mac.is_crypto_nak:
        return AuthResult.CRYPTO_NAK
    if mac.key_id != key.key_id:
        return AuthResult.WRONG_KEY
    if len(mac.digest) != DIGEST_LENGTH[key.algorithm]:
        return AuthResult.BAD_LENGTH
    if not hmac.compare_digest(compute_digest(key, message), mac.digest):
        return AuthResult.BAD_MAC
    return AuthResult.OK


@dataclass(frozen=True)
class KeyRing:
    """The keys file and `trustedkey`: which key ids may authenticate a packet.

    ntpd's rule: a key authenticates only if it is both known and trusted; a key listed in
    the file but not trusted (or a `trustedkey` without a key) authenticates nothing.
    """

    keys: Mapping[int, SymmetricKey] = field(default_factory=dict)
    trusted: frozenset[int] = frozenset()

    @classmethod
    def build(cls, keys: Iterable[SymmetricKey], trusted: Iterable[int]) -> KeyRing:
        return cls({k.key_id: k for k in keys}, frozenset(trusted))

    def __bool__(self) -> bool:
        return bool(self.keys)

    def trusted_key(self, key_id: int) -> SymmetricKey | None:
        """The key for `key_id` if it may be used, else None."""
        if key_id not in self.trusted:
            return None
        return self.keys.get(key_id)

    def check(self, mac: Mac | None, message: bytes | bytearray | memoryview) -> AuthResult:
        """Whether `message` is authenticated by `mac` under any trusted key."""
        if mac is None:
            return AuthResult.NO_MAC
        if mac.is_crypto_nak:
            return AuthResult.CRYPTO_NAK
        key = self.keys.get(mac.key_id)
        if key is None:
            return AuthResult.UNKNOWN_KEY
        if mac.key_id not in self.trusted:
            return AuthResult.UNTRUSTED_KEY
        return verify_with(key, mac, message)


def signed_part(data: bytes | bytearray | memoryview, mac: Mac) -> bytes | bytearray | memoryview:
    """The bytes a MAC trailer covers: everything before its key id."""
    return data[: len(data) - 4 - len(mac.digest)]
