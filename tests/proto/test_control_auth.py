"""Mode 6 and `controlkey`: a signed request must verify, and then it unlocks nothing."""

from __future__ import annotations

from pyntpd.config.keys import SymmetricKey
from pyntpd.proto.auth import AuthResult, KeyRing, mac_trailer
from pyntpd.proto.control import (
    HEADER_LEN,
    ControlDrop,
    ControlHeader,
    ControlResponder,
    Opcode,
    decode,
    encode,
    parse_text,
    reassemble,
)
from pyntpd.proto.packet import Mac
from tests.proto.test_control import CLIENT, NOW, snapshot

CONTROL = SymmetricKey(9, "SHA1", b"controlsecret")
OTHER = SymmetricKey(8, "MD5", b"othersecret")
RING = KeyRing.build([CONTROL, OTHER], trusted=[8, 9])


def responder(control_key: int | None = 9) -> ControlResponder:
    return ControlResponder(secret=b"s", keys=RING, control_key=control_key)


def signed(opcode: int, data: bytes, key: SymmetricKey) -> bytes:
    """As ntpq signs: the request padded to 8 bytes, then key id and digest."""
    raw = encode(ControlHeader(version=2, opcode=opcode, sequence=3), data)
    raw += bytes(-len(raw) % 8)
    return raw + mac_trailer(key, raw)


def test_a_request_signed_with_the_controlkey_is_answered() -> None:
    reply = responder().handle(signed(Opcode.READVAR, b"stratum", CONTROL), CLIENT, 0, NOW,
                               snapshot())
    _, data = reassemble(reply.fragments)
    assert dict(parse_text(data)) == {"stratum": "3"}


def test_a_write_signed_with_the_controlkey_is_still_refused() -> None:
    reply = responder().handle(signed(Opcode.CONFIGURE, b"server 192.0.2.1", CONTROL), CLIENT,
                               0, NOW, snapshot())
    (fragment,) = reply.fragments
    header, _ = decode(fragment)
    assert header.error and header.status >> 8 == 1  # CERR_PERMISSION


def test_a_request_signed_with_another_trusted_key_gets_no_answer() -> None:
    r = responder()
    reply = r.handle(signed(Opcode.READVAR, b"stratum", OTHER), CLIENT, 0, NOW, snapshot())
    assert reply.fragments == [] and r.drops == {ControlDrop.BAD_AUTH: 1}


def test_a_tampered_signed_request_gets_no_answer() -> None:
    raw = bytearray(signed(Opcode.READVAR, b"stratum", CONTROL))
    raw[12] ^= 0x20  # "Stratum"
    reply = responder().handle(bytes(raw), CLIENT, 0, NOW, snapshot())
    assert reply.drop is ControlDrop.BAD_AUTH


def test_a_crypto_nak_style_lone_key_id_gets_no_answer() -> None:
    raw = encode(ControlHeader(version=2, opcode=Opcode.READVAR, sequence=3), b"stratum")
    raw += bytes(-len(raw) % 8) + (9).to_bytes(4, "big")
    assert responder().handle(raw, CLIENT, 0, NOW, snapshot()).drop is ControlDrop.BAD_AUTH


def test_unsigned_requests_need_no_key() -> None:
    raw = encode(ControlHeader(version=2, opcode=Opcode.READVAR, sequence=3), b"stratum")
    assert responder(control_key=None).handle(raw, CLIENT, 0, NOW, snapshot()).fragments


def test_the_answer_to_a_signed_request_is_signed_with_the_same_key() -> None:
    reply = responder().handle(signed(Opcode.READVAR, b"stratum", CONTROL), CLIENT, 0, NOW,
                               snapshot())
    [fragment] = reply.fragments
    header, _ = decode(fragment)
    end = HEADER_LEN + header.count + (-(HEADER_LEN + header.count) % 8)
    mac = Mac(int.from_bytes(fragment[end:end + 4], "big"), fragment[end + 4:])
    assert mac.key_id == CONTROL.key_id
    assert RING.check(mac, fragment[:end]) is AuthResult.OK


def test_the_answer_to_an_unsigned_request_carries_no_mac() -> None:
    raw = encode(ControlHeader(version=2, opcode=Opcode.READVAR, sequence=3), b"stratum")
    [fragment] = responder().handle(raw, CLIENT, 0, NOW, snapshot()).fragments
    header, _ = decode(fragment)
    assert len(fragment) == HEADER_LEN + header.count + (-header.count % 4)
