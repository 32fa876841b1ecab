"""Symmetric-key MACs (RFC 5905 §7.3, RFC 8573): digests, trust, and refusals by name."""

from __future__ import annotations

import hashlib

import pytest

from pyntpd.config.keys import SymmetricKey
from pyntpd.proto.auth import (
    AuthResult,
    KeyRing,
    compute_digest,
    mac_trailer,
    signed_part,
    verify_with,
)
from pyntpd.proto.packet import Mac, decode
from tests.support import client_request

MD5 = SymmetricKey(1, "MD5", b"md5secret")
SHA1 = SymmetricKey(2, "SHA1", bytes(range(20)))
# RFC 4493 §4 test key.
AES = SymmetricKey(3, "AES128CMAC", bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"))
RING = KeyRing.build([MD5, SHA1, AES], trusted=[1, 2, 3])


def signed(key: SymmetricKey) -> bytes:
    message = client_request()
    return message + mac_trailer(key, message)


def test_md5_digest_is_md5_of_key_then_message() -> None:
    assert compute_digest(MD5, b"abc") == hashlib.md5(b"md5secretabc").digest()


def test_sha1_digest_is_sha1_of_key_then_message_and_20_bytes() -> None:
    digest = compute_digest(SHA1, b"abc")
    assert digest == hashlib.sha1(bytes(range(20)) + b"abc").digest()
    assert len(digest) == 20


def test_aes_cmac_matches_rfc4493_vectors() -> None:
    assert compute_digest(AES, b"").hex() == "bb1d6929e95937287fa37d129b756746"
    message = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert compute_digest(AES, message).hex() == "070a16b46b4d4144f79bdd9dd04a287c"


def test_aes_cmac_refuses_a_key_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="16-byte"):
        compute_digest(SymmetricKey(4, "AES128CMAC", b"short"), b"x")


@pytest.mark.parametrize("key", [MD5, SHA1, AES], ids=lambda k: k.algorithm)
def test_a_signed_request_verifies_under_its_trusted_key(key: SymmetricKey) -> None:
    data = signed(key)
    packet = decode(data)
    assert packet.mac is not None and packet.mac.key_id == key.key_id
    assert RING.check(packet.mac, signed_part(data, packet.mac)) is AuthResult.OK


def test_one_flipped_bit_in_the_header_fails_the_mac() -> None:
    data = bytearray(signed(MD5))
    data[44] ^= 1
    packet = decode(bytes(data))
    assert packet.mac is not None
    assert RING.check(packet.mac, signed_part(data, packet.mac)) is AuthResult.BAD_MAC


def test_a_tampered_digest_fails_the_mac() -> None:
    data = bytearray(signed(SHA1))
    data[-1] ^= 0x80
    packet = decode(bytes(data))
    assert packet.mac is not None
    assert RING.check(packet.mac, signed_part(data, packet.mac)) is AuthResult.BAD_MAC


def test_a_crypto_nak_never_authenticates() -> None:
    assert RING.check(Mac(1, b""), client_request()) is AuthResult.CRYPTO_NAK
    assert verify_with(MD5, Mac(1, b""), client_request()) is AuthResult.CRYPTO_NAK


def test_an_unknown_key_id_is_refused() -> None:
    assert RING.check(Mac(99, b"\0" * 16), client_request()) is AuthResult.UNKNOWN_KEY


def test_a_known_but_untrusted_key_is_refused() -> None:
    ring = KeyRing.build([MD5], trusted=[])
    data = signed(MD5)
    packet = decode(data)
    assert packet.mac is not None
    assert ring.check(packet.mac, signed_part(data, packet.mac)) is AuthResult.UNTRUSTED_KEY
    assert ring.trusted_key(1) is None


def test_a_trusted_key_id_without_a_key_is_unknown() -> None:
    ring = KeyRing.build([], trusted=[7])
    assert ring.trusted_key(7) is None
    assert ring.check(Mac(7, b"\0" * 16), b"") is AuthResult.UNKNOWN_KEY


def test_a_digest_of_the_wrong_length_for_the_algorithm_is_refused() -> None:
    # A 16-byte digest under a SHA1 key: truncation must not weaken the check.
    digest = compute_digest(SHA1, client_request())[:16]
    assert RING.check(Mac(2, digest), client_request()) is AuthResult.BAD_LENGTH


def test_a_mac_under_another_key_id_is_the_wrong_key_for_an_association() -> None:
    data = signed(SHA1)
    packet = decode(data)
    assert packet.mac is not None
    assert verify_with(MD5, packet.mac, signed_part(data, packet.mac)) is AuthResult.WRONG_KEY


def test_no_trailer_is_no_mac() -> None:
    assert RING.check(None, client_request()) is AuthResult.NO_MAC


def test_secrets_never_appear_in_a_keyrings_repr() -> None:
    assert "md5secret" not in repr(RING)
