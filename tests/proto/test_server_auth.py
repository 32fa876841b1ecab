"""The responder and symmetric keys: signed requests get signed replies, forgeries nothing."""

from __future__ import annotations

import ipaddress

import pytest

from pyntpd.config.keys import SymmetricKey
from pyntpd.proto.access import Access, RestrictTable
from pyntpd.proto.access_types import RestrictFlag as F
from pyntpd.proto.access_types import RestrictRule
from pyntpd.proto.auth import AuthResult, KeyRing, mac_trailer, signed_part, verify_with
from pyntpd.proto.packet import HEADER, DropReason, decode, li_vn_mode
from pyntpd.proto.server import SIGNED_QUEUE_LIMIT, Responder
from pyntpd.proto.timestamp import unix_to_ntp
from pyntpd.sync.localclock import LocalClockDriver

NOW = 1_800_000_000.0
RX = unix_to_ntp(NOW)
TX = unix_to_ntp(NOW + 1e-5)
MD5 = SymmetricKey(1, "MD5", b"md5secret")
SHA1 = SymmetricKey(2, "SHA1", bytes(range(20)))
AES = SymmetricKey(3, "AES128CMAC", bytes(range(16)))
UNTRUSTED = SymmetricKey(4, "MD5", b"nottrusted")
RING = KeyRing.build([MD5, SHA1, AES, UNTRUSTED], trusted=[1, 2, 3])


def responder(flags: F = F.NONE) -> Responder:
    rules = [RestrictRule(ipaddress.ip_network("0.0.0.0/0"), flags, is_default=True)]
    return Responder(Access(RestrictTable(rules)),
                     LocalClockDriver(stratum=10).system_vars(NOW - 30.0), keys=RING)


def request(key: SymmetricKey | None = None) -> bytes:
    head = HEADER.pack(li_vn_mode(0, 4, 3), 0, 6, -20, 0, 0, b"\0" * 4, 0, 0, 0, 0xABCDEF)
    return head if key is None else head + mac_trailer(key, head)


def answer(r: Responder, data: bytes) -> bytes | None:
    """What the serving path would send: a plain reply or the finished signed one."""
    prefix = r.respond(data, 0x7F000001, False, 40000, RX, NOW)
    if prefix is not None:
        return prefix + TX.to_bytes(8, "big")
    queued = r.take_signed()
    return queued[0].finish(TX) if queued else None


@pytest.mark.parametrize("key", [MD5, SHA1, AES], ids=lambda k: k.algorithm)
def test_a_signed_request_gets_a_reply_signed_with_the_same_key(key: SymmetricKey) -> None:
    data = request(key)
    reply = answer(responder(), data)
    assert reply is not None
    packet = decode(reply)
    assert packet.mac is not None and packet.mac.key_id == key.key_id
    assert verify_with(key, packet.mac, signed_part(reply, packet.mac)) is AuthResult.OK
    assert packet.header.transmit == TX and packet.header.origin == 0xABCDEF


@pytest.mark.parametrize("key", [MD5, SHA1, AES], ids=lambda k: k.algorithm)
def test_a_signed_reply_is_never_longer_than_its_request(key: SymmetricKey) -> None:
    data = request(key)
    reply = answer(responder(), data)
    assert reply is not None and len(reply) <= len(data)


def test_a_signed_reply_is_queued_with_the_clients_address_and_port() -> None:
    r = responder()
    assert r.respond(request(MD5), 0x7F000001, False, 40000, RX, NOW) is None
    (signed,) = r.take_signed()
    assert (signed.address, signed.is_v6, signed.port) == (0x7F000001, False, 40000)
    assert r.take_signed() == []
    assert r.counters.served == 1


def test_a_tampered_mac_gets_no_reply_and_is_counted_by_kind() -> None:
    data = bytearray(request(MD5))
    data[-1] ^= 1
    r = responder()
    assert answer(r, bytes(data)) is None
    assert r.counters.auth_failed == {AuthResult.BAD_MAC: 1}
    assert r.counters.dropped[DropReason.BAD_AUTH] == 1


def test_an_unknown_key_gets_no_reply() -> None:
    r = responder()
    assert answer(r, request(SymmetricKey(9, "MD5", b"who"))) is None
    assert r.counters.auth_failed == {AuthResult.UNKNOWN_KEY: 1}


def test_an_untrusted_key_gets_no_reply() -> None:
    r = responder()
    assert answer(r, request(UNTRUSTED)) is None
    assert r.counters.auth_failed == {AuthResult.UNTRUSTED_KEY: 1}


def test_a_key_used_with_another_algorithms_digest_length_gets_no_reply() -> None:
    head = request()
    forged = head + (2).to_bytes(4, "big") + mac_trailer(MD5, head)[4:]  # 16 bytes for SHA1
    r = responder()
    assert answer(r, forged) is None
    assert r.counters.auth_failed == {AuthResult.BAD_LENGTH: 1}


def test_notrust_serves_authenticated_requests() -> None:
    assert answer(responder(F.NOTRUST), request(AES)) is not None


def test_notrust_refuses_unauthenticated_requests() -> None:
    r = responder(F.NOTRUST)
    assert answer(r, request()) is None
    assert r.counters.dropped[DropReason.AUTH_REQUIRED] == 1


def test_notrust_refuses_a_crypto_nak_as_unauthenticated() -> None:
    r = responder(F.NOTRUST)
    assert answer(r, request() + bytes(4)) is None
    assert r.counters.dropped[DropReason.AUTH_REQUIRED] == 1


def test_the_signed_queue_is_bounded() -> None:
    r = responder()
    data = request(MD5)
    for _ in range(SIGNED_QUEUE_LIMIT + 5):
        r.respond(data, 0x7F000001, False, 40000, RX, NOW)
    assert len(r.take_signed()) == SIGNED_QUEUE_LIMIT
    assert r.counters.dropped[DropReason.RATE_LIMITED] == 5
