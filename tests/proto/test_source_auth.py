"""An association with a key (`server ... key N`): signed requests, only signed replies."""

from __future__ import annotations

import pytest

from pyntpd.config.keys import SymmetricKey
from pyntpd.proto.auth import AuthResult, mac_trailer, signed_part, verify_with
from pyntpd.proto.packet import decode
from pyntpd.proto.source import SourceDrop
from pyntpd.proto.timestamp import unix_to_ntp
from tests.proto.test_source import T0, assoc, reply_to

KEY = SymmetricKey(5, "SHA1", b"sharedsecret")
OTHER = SymmetricKey(6, "SHA1", b"sharedsecret")  # same secret, another key id
AES = SymmetricKey(7, "AES128CMAC", bytes(range(16)))


def signed_request(a, now=T0):
    data = a.make_request(now)
    a.sent(unix_to_ntp(now))
    return data


def signed_reply(req_data: bytes, key: SymmetricKey | None, **kw) -> tuple[bytes, int]:
    data, t4 = reply_to(decode(req_data).header, **kw)
    return (data if key is None else data + mac_trailer(key, data)), t4


@pytest.mark.parametrize("key", [KEY, AES], ids=lambda k: k.algorithm)
def test_requests_are_signed_with_the_associations_key(key: SymmetricKey) -> None:
    data = signed_request(assoc(key=key))
    packet = decode(data)
    assert packet.mac is not None and packet.mac.key_id == key.key_id
    assert verify_with(key, packet.mac, signed_part(data, packet.mac)) is AuthResult.OK


def test_a_reply_signed_with_the_key_gives_a_sample_and_is_authentic() -> None:
    a = assoc(key=KEY)
    data, t4 = signed_reply(signed_request(a), KEY)
    assert a.receive(data, t4, T0 + 0.002) is not None
    assert a.authentic


def test_an_unsigned_reply_is_refused() -> None:
    a = assoc(key=KEY)
    data, t4 = signed_reply(signed_request(a), None)
    assert a.receive(data, t4, T0 + 0.002) is None
    assert a.drops == {SourceDrop.AUTH: 1} and not a.authentic


def test_a_reply_under_another_key_id_is_refused() -> None:
    a = assoc(key=KEY)
    data, t4 = signed_reply(signed_request(a), OTHER)
    assert a.receive(data, t4, T0 + 0.002) is None
    assert a.drops == {SourceDrop.AUTH: 1}


def test_a_tampered_reply_is_refused() -> None:
    a = assoc(key=KEY)
    data, t4 = signed_reply(signed_request(a), KEY)
    forged = bytearray(data)
    forged[33] ^= 1  # the receive timestamp: shifts the offset
    assert a.receive(bytes(forged), t4, T0 + 0.002) is None
    assert a.drops == {SourceDrop.AUTH: 1}


def test_a_crypto_nak_neither_authenticates_nor_spends_the_request() -> None:
    """CVE-2015-7871: a crypto-NAK was taken as authentic. It must also not consume the
    outstanding request, or a forger could make the genuine reply look like a replay."""
    a = assoc(key=KEY)
    req = signed_request(a)
    nak, t4 = signed_reply(req, None)
    assert a.receive(nak + (5).to_bytes(4, "big"), t4, T0 + 0.002) is None
    genuine, t4 = signed_reply(req, KEY)
    assert a.receive(genuine, t4, T0 + 0.003) is not None


def test_an_unauthenticated_deny_kiss_does_not_demobilise() -> None:
    """CVE-2016-1547 class: a forged kiss, even with the right origin, changes nothing."""
    a = assoc(key=KEY)
    data, t4 = signed_reply(signed_request(a), None, stratum=0, refid=b"DENY")
    assert a.receive(data, t4, T0 + 0.002) is None
    assert a.state == "active" and a.drops == {SourceDrop.AUTH: 1}


def test_a_signed_deny_kiss_stops_polling() -> None:
    a = assoc(key=KEY)
    data, t4 = signed_reply(signed_request(a), KEY, stratum=0, refid=b"DENY")
    assert a.receive(data, t4, T0 + 0.002) is None
    assert a.state == "denied"
