"""atheris harness: symmetric-key authentication (proto.auth) and the responder's signed path.

    .venv/bin/python fuzz/fuzz_auth.py fuzz/corpus/auth -max_total_time=60

The first input byte picks how the rest is used. Bit 0 clear: the rest is the datagram as
received, MAC trailer and all. Bit 0 set: the rest is the message, and the harness signs it
with key 1 (MD5), 2 (SHA1), 3 (AES-128-CMAC) or 4 (known but not trusted) -- bits 1-2 --
and with bit 3 flips a bit of the digest, so the fuzzer reaches the checks behind a valid
MAC. Bit 4 makes the source `notrust`.

Checked: `KeyRing.check` returns an AuthResult and never raises; the responder never raises,
never answers (not even with a kiss) a request whose MAC does not verify under a trusted
key, answers a signed request only with a reply signed by that key that verifies, and no
reply -- plain, kiss or signed -- is longer than the request.
"""

import ipaddress
import sys

import atheris

with atheris.instrument_imports():
    from pyntpd.config.keys import SymmetricKey
    from pyntpd.proto.access import Access, RestrictTable
    from pyntpd.proto.access_types import RestrictFlag, RestrictRule
    from pyntpd.proto.auth import AuthResult, KeyRing, mac_trailer, signed_part
    from pyntpd.proto.packet import PacketError, decode
    from pyntpd.proto.server import Responder
    from pyntpd.sync.localclock import LocalClockDriver

NOW = 1_800_000_000.0
KEYS = (
    SymmetricKey(1, "MD5", b"md5 secret"),
    SymmetricKey(2, "SHA1", bytes(range(20))),
    SymmetricKey(3, "AES128CMAC", bytes(range(16, 32))),
    SymmetricKey(4, "MD5", b"not trusted"),
)
RING = KeyRing.build(KEYS, trusted=(1, 2, 3))


def _responder(flags: RestrictFlag) -> Responder:
    everyone = RestrictRule(ipaddress.ip_network("0.0.0.0/0"), flags, True)
    return Responder(Access(RestrictTable([everyone])), LocalClockDriver(stratum=10)
                     .system_vars(NOW), RING)


RESPONDERS = (_responder(RestrictFlag.KOD), _responder(RestrictFlag.KOD | RestrictFlag.NOTRUST))


def _datagram(mode: int, data: bytes) -> bytes:
    if not mode & 1:
        return data
    key = KEYS[(mode >> 1) & 3]
    trailer = bytearray(mac_trailer(key, data))
    if mode & 8:
        trailer[-1] ^= 1 << (len(data) & 7)
    return data + bytes(trailer)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, datagram = data[0], _datagram(data[0], data[1:])
    try:
        mac = decode(datagram).mac
    except PacketError:
        mac = None
    result = None
    if mac is not None:
        result = RING.check(mac, signed_part(datagram, mac))
        assert isinstance(result, AuthResult)
    responder = RESPONDERS[(mode >> 4) & 1]
    reply = responder.respond(datagram, 0x7F000001, False, 123, 1 << 32, NOW + (mode >> 5))
    signed = responder.take_signed()
    if reply is not None:
        assert len(reply) + 8 <= len(datagram), "reply longer than the request"
    if mac is not None and not mac.is_crypto_nak and result is not AuthResult.OK:
        assert reply is None and not signed, f"answered a request whose MAC is {result}"
    for queued in signed:
        assert mac is not None and result is AuthResult.OK and queued.key.key_id == mac.key_id
        out = queued.finish(0x1234_5678_9ABC_DEF0)
        assert len(out) <= len(datagram), "signed reply longer than the request"
        out_mac = decode(out).mac
        assert out_mac is not None and RING.check(out_mac, signed_part(out, out_mac)) \
            is AuthResult.OK, "signed reply does not verify"


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
