"""atheris harness: NTS extension fields (RFC 8915 §5-6) in requests (server) and replies
(client).

    .venv/bin/python fuzz/fuzz_nts.py fuzz/corpus/nts -max_total_time=60

The fuzzer cannot forge AES-SIV, so the input is read as a recipe (FuzzedDataProvider):
`raw` takes the rest as a datagram; `skeleton` varies a request shaped as a client builds it
(UID, cookie, placeholders, authenticator; see `_skeleton`); `request` builds one from a
header and a free list of fields,
each a Unique Identifier, the server's valid cookie or fuzzed cookie bytes, a placeholder,
an authenticator sealed with the cookie's C2S key over everything before it (its plaintext
fuzzed) or fuzzed authenticator bytes, or any other field; `reply` builds what a client
receives: the UID it sent or another, and an authenticator sealed with S2C (plaintext
fuzzed) or fuzzed bytes.

Checked, server side: `check_request`, `parse_authenticator` and `parse_fields` never raise;
the responder never raises, queues at most one answer, never one longer than the request, a
NAK only for a request with a UID whose cookie does not open, and a reply that the client
with that cookie's keys accepts. Client side: `NtsSession.check_reply` never raises, keeps
at most nts.MAX_COOKIES cookies, and accepts nothing that does not carry its UID.
"""

import ipaddress
import sys

from run import require

require("pyntpd.proto.nts", "NTS comes with the nts branch")

import atheris  # noqa: E402

with atheris.instrument_imports():
    from pyntpd.proto import nts
    from pyntpd.proto.access import Access, RestrictTable
    from pyntpd.proto.access_types import RestrictFlag, RestrictRule
    from pyntpd.proto.packet import (
        HEADER_LEN,
        ExtensionField,
        PacketError,
        decode,
        encode_extension,
    )
    from pyntpd.proto.server import Responder
    from pyntpd.sync.localclock import LocalClockDriver

NOW = 1_800_000_000.0
C2S, S2C = bytes(range(32)), bytes(range(32, 64))
KEYS = nts.CookieKeys([nts.CookieKey(7, bytes(range(64, 96)), NOW)])
COOKIE = KEYS.make_cookie(C2S, S2C)
CLIENT_HEADER = bytes([0x23]) + bytes(HEADER_LEN - 1)
RESPONDER = Responder(
    Access(RestrictTable([RestrictRule(ipaddress.ip_network("0.0.0.0/0"), RestrictFlag.KOD,
                                       True)])),
    LocalClockDriver(stratum=10).system_vars(NOW),
)
RESPONDER.nts_keys = KEYS
MAX_FIELDS = 12


def _ef(kind: int, value: bytes) -> bytes:
    return encode_extension(ExtensionField(kind, value))


def _request(fdp: atheris.FuzzedDataProvider) -> bytes:
    head = fdp.ConsumeBytes(HEADER_LEN).ljust(HEADER_LEN, b"\0")
    parts = [CLIENT_HEADER if fdp.ConsumeBool() else head]
    for _ in range(fdp.ConsumeIntInRange(0, MAX_FIELDS)):
        choice = fdp.ConsumeIntInRange(0, 6)
        if choice == 0:
            parts.append(_ef(nts.UNIQUE_IDENTIFIER, fdp.ConsumeBytes(fdp.ConsumeIntInRange(
                0, 64))))
        elif choice == 1:
            parts.append(_ef(nts.NTS_COOKIE, COOKIE))
        elif choice == 2:
            parts.append(_ef(nts.NTS_COOKIE, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 128))))
        elif choice == 3:
            parts.append(_ef(nts.COOKIE_PLACEHOLDER, bytes(fdp.ConsumeIntInRange(0, 128))))
        elif choice == 4:
            inner = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))
            parts.append(nts.authenticator(C2S, b"".join(parts), inner, bytes(16)))
        elif choice == 5:
            parts.append(_ef(nts.AUTHENTICATOR, fdp.ConsumeBytes(fdp.ConsumeIntInRange(
                0, 128))))
        else:
            parts.append(_ef(fdp.ConsumeIntInRange(0, 0xFFFF),
                             fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))))
    return b"".join(parts) + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))


def _plaintext(fdp: atheris.FuzzedDataProvider) -> bytes:
    """What an authenticator encrypts: nothing, placeholders, or fuzzed bytes."""
    how = fdp.ConsumeIntInRange(0, 2)
    if how == 0:
        return b""
    if how == 1:
        return b"".join(_ef(nts.COOKIE_PLACEHOLDER, bytes(fdp.ConsumeIntInRange(0, 128)))
                        for _ in range(fdp.ConsumeIntInRange(0, nts.MAX_COOKIES)))
    return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))


def _skeleton(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A request as a client builds it, varied: the UID's length, the cookie (valid, a bit
    flipped, fuzzed), placeholders, extra fields anywhere, the authenticator (valid over its
    fuzzed plaintext, fuzzed, missing), fields after it."""
    head = fdp.ConsumeBytes(HEADER_LEN).ljust(HEADER_LEN, b"\0")
    fields = [_ef(nts.UNIQUE_IDENTIFIER, fdp.ConsumeBytes(
        nts.UID_LENGTH if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 64)))]
    cookie = bytearray(COOKIE)
    how = fdp.ConsumeIntInRange(0, 2)
    if how == 1:
        cookie[fdp.ConsumeIntInRange(0, len(cookie) - 1)] ^= 1 << fdp.ConsumeIntInRange(0, 7)
    elif how == 2:
        cookie = bytearray(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 128)))
    fields.append(_ef(nts.NTS_COOKIE, bytes(cookie)))
    for _ in range(fdp.ConsumeIntInRange(0, nts.MAX_COOKIES)):
        size = nts.COOKIE_LENGTH if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 128)
        fields.append(_ef(nts.COOKIE_PLACEHOLDER, bytes(size)))
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        fields.insert(fdp.ConsumeIntInRange(0, len(fields)), _ef(
            fdp.ConsumeIntInRange(0, 0xFFFF), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))))
    parts = [CLIENT_HEADER if fdp.ConsumeBool() else head, *fields]
    how = fdp.ConsumeIntInRange(0, 2)
    if how == 0:
        parts.append(nts.authenticator(C2S, b"".join(parts), _plaintext(fdp), bytes(16)))
    elif how == 1:
        parts.append(_ef(nts.AUTHENTICATOR, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 128))))
    if fdp.ConsumeBool():
        parts.append(_ef(fdp.ConsumeIntInRange(0, 0xFFFF), fdp.ConsumeBytes(16)))
    return b"".join(parts)


def _reply(fdp: atheris.FuzzedDataProvider, uid: bytes) -> bytes:
    head = fdp.ConsumeBytes(HEADER_LEN).ljust(HEADER_LEN, b"\0")
    parts = [head]
    if fdp.ConsumeBool():
        parts.append(_ef(nts.UNIQUE_IDENTIFIER, uid if fdp.ConsumeBool() else
                         fdp.ConsumeBytes(nts.UID_LENGTH)))
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        if fdp.ConsumeBool():
            inner = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1024))
            parts.append(nts.authenticator(S2C, b"".join(parts), inner, bytes(16)))
        else:
            parts.append(_ef(fdp.ConsumeIntInRange(0, 0xFFFF),
                             fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 128))))
    return b"".join(parts) + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))


def _server(datagram: bytes) -> None:
    try:
        packet = decode(datagram)
    except PacketError:
        packet = None
    checked = None
    if packet is not None:
        for ef in packet.extensions:
            nts.parse_authenticator(ef.value)
            nts.parse_fields(ef.value)
        checked = nts.check_request(datagram, packet, KEYS)
    reply = RESPONDER.respond(datagram, 0x7F000001, False, 123, 1 << 32, NOW)
    queued = RESPONDER.take_signed()
    assert len(queued) <= 1 and (reply is None or not queued)
    if reply is not None:
        assert len(reply) + 8 <= len(datagram)
    for answer in queued:
        out = answer.finish(0x1234_5678_9ABC_DEF0)
        assert len(out) <= len(datagram), f"NTS answer of {len(out)} to {len(datagram)} bytes"
        if isinstance(answer, nts.NtsReply):
            assert isinstance(checked, nts.NtsRequest)
            uid = checked.uid_field[4:]
            client = nts.NtsSession(C2S, S2C, [])
            assert client.check_reply(out, decode(out), uid) is nts.ReplyCheck.OK
            assert len(client.cookies) == checked.cookies_wanted or len(out) + \
                4 + nts.COOKIE_LENGTH > len(datagram)
        else:
            assert isinstance(checked, tuple) and checked[0] is nts.NtsFailure.BAD_COOKIE
            assert checked[1] is not None and out.endswith(checked[1])


def _client(fdp: atheris.FuzzedDataProvider) -> None:
    uid = bytes(range(nts.UID_LENGTH))
    datagram = _reply(fdp, uid) if fdp.ConsumeBool() else fdp.ConsumeBytes(1232)
    try:
        packet = decode(datagram)
    except PacketError:
        return
    session = nts.NtsSession(C2S, S2C, [])
    verdict = session.check_reply(datagram, packet, uid)
    assert len(session.cookies) <= nts.MAX_COOKIES
    if verdict is not nts.ReplyCheck.BAD:
        assert any(ef.field_type == nts.UNIQUE_IDENTIFIER and ef.value.startswith(uid)
                   for ef in packet.extensions), "accepted a reply without our UID"


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        _server(fdp.ConsumeBytes(1232))
    elif kind == 1:
        _server(_skeleton(fdp))
    elif kind == 2:
        _server(_request(fdp))
    else:
        _client(fdp)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
