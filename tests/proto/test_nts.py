"""NTS for NTPv4 (RFC 8915 §5-6): AEAD, cookies, and a request/reply between the pure server
(Responder) and client (NtsSession, Association) halves, including each attack."""

from __future__ import annotations

import ipaddress
import secrets

import pytest

from pyntpd.proto import nts
from pyntpd.proto.access import Access, RestrictTable
from pyntpd.proto.access_types import RestrictFlag as F
from pyntpd.proto.access_types import RestrictRule
from pyntpd.proto.ntske import MAX_COOKIES
from pyntpd.proto.packet import (
    HEADER,
    DropReason,
    ExtensionField,
    decode,
    encode_extension,
    li_vn_mode,
)
from pyntpd.proto.server import Responder
from pyntpd.proto.source import Association, SourceDrop, SourceSpec
from pyntpd.proto.timestamp import unix_to_ntp
from pyntpd.sync.localclock import LocalClockDriver

NOW = 1_800_000_000.0
RX = unix_to_ntp(NOW)
TX = unix_to_ntp(NOW + 1e-5)
ADDRESS, PORT = 0x7F000001, 40000


def header(transmit: int = 0x1122334455667788) -> bytes:
    return HEADER.pack(li_vn_mode(0, 4, 3), 0, 6, -20, 0, 0, b"\0" * 4, 0, 0, 0, transmit)


def cookie_keys() -> nts.CookieKeys:
    keys = nts.CookieKeys()
    keys.rotate(NOW)
    return keys


def session(keys: nts.CookieKeys, cookies: int = MAX_COOKIES) -> nts.NtsSession:
    """What NTS-KE would have given a client of `keys`' server."""
    c2s, s2c = secrets.token_bytes(32), secrets.token_bytes(32)
    return nts.NtsSession(c2s, s2c, [keys.make_cookie(c2s, s2c) for _ in range(cookies)])


def responder(keys: nts.CookieKeys | None, flags: F = F.NONE) -> Responder:
    rules = [RestrictRule(ipaddress.ip_network("0.0.0.0/0"), flags, is_default=True)]
    r = Responder(Access(RestrictTable(rules)), LocalClockDriver(stratum=10).system_vars(NOW))
    r.nts_keys = keys
    return r


def serve(r: Responder, data: bytes) -> bytes | None:
    """One request through the responder and the serving path's finish step."""
    assert r.respond(data, ADDRESS, False, PORT, RX, NOW) is None
    queued = r.take_signed()
    assert len(queued) <= 1
    return queued[0].finish(TX) if queued else None


# --- AEAD and fields ----------------------------------------------------------------------


def test_aes_siv_round_trips_and_binds_the_associated_data() -> None:
    key, nonce = secrets.token_bytes(32), secrets.token_bytes(16)
    sealed = nts.seal(key, b"header", nonce, b"")  # empty plaintext: what clients send
    assert nts.unseal(key, b"header", nonce, sealed) == b""
    assert nts.unseal(key, b"Header", nonce, sealed) is None
    assert nts.unseal(key, b"header", bytes(16), sealed) is None


def test_an_authenticator_field_parses_back_to_nonce_and_ciphertext() -> None:
    key = secrets.token_bytes(32)
    field = nts.authenticator(key, b"ad", b"secret", nonce=b"n" * 16)
    value = field[4:]
    parsed = nts.parse_authenticator(value)
    assert parsed is not None and parsed[0] == b"n" * 16
    assert nts.unseal(key, b"ad", *parsed) == b"secret"


def test_an_authenticator_with_a_short_nonce_is_refused() -> None:
    assert nts.parse_authenticator(b"\x00\x08\x00\x10" + bytes(24)) is None
    assert nts.parse_authenticator(b"\x00\x10\xff\xff" + bytes(32)) is None


# --- cookies -------------------------------------------------------------------------------


def test_a_cookie_holds_both_keys_for_the_server_only() -> None:
    keys = cookie_keys()
    cookie = keys.make_cookie(b"c" * 32, b"s" * 32)
    assert len(cookie) == nts.COOKIE_LENGTH == 100
    assert keys.open_cookie(cookie) == (b"c" * 32, b"s" * 32)
    assert cookie_keys().open_cookie(cookie) is None  # another server's keys


def test_a_tampered_cookie_does_not_open() -> None:
    keys = cookie_keys()
    cookie = bytearray(keys.make_cookie(b"c" * 32, b"s" * 32))
    cookie[50] ^= 1
    assert keys.open_cookie(bytes(cookie)) is None


def test_cookies_of_the_previous_two_keys_still_open_after_rotation() -> None:
    keys = cookie_keys()
    old = keys.make_cookie(b"c" * 32, b"s" * 32)
    keys.rotate(NOW + 86400)
    keys.rotate(NOW + 2 * 86400)
    assert keys.open_cookie(old) is not None
    keys.rotate(NOW + 3 * 86400)
    assert keys.open_cookie(old) is None


def test_rotation_is_due_daily() -> None:
    keys = cookie_keys()
    assert not keys.rotate_due(NOW + 3600)
    assert keys.rotate_due(NOW + 86400)
    assert nts.CookieKeys().rotate_due(NOW)


def test_cookie_keys_survive_their_text_form() -> None:
    keys = cookie_keys()
    keys.rotate(NOW + 86400)
    cookie = keys.make_cookie(b"c" * 32, b"s" * 32)
    again = nts.CookieKeys.from_text(keys.to_text())
    assert again.open_cookie(cookie) == (b"c" * 32, b"s" * 32)
    assert [k.key_id for k in again.keys] == [k.key_id for k in keys.keys]


@pytest.mark.parametrize("text", ["1 00 5\n", "1 zz 5\n", "x\n", f"1 {'00' * 32}\n"])
def test_a_damaged_key_file_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        nts.CookieKeys.from_text(text)


# --- the exchange --------------------------------------------------------------------------


def test_an_nts_request_gets_an_authenticated_reply_with_fresh_cookies() -> None:
    keys = cookie_keys()
    client = session(keys)
    request, uid = client.build_request(header())
    reply = serve(responder(keys), request)
    assert reply is not None
    packet = decode(reply)
    assert packet.header.mode == 4 and packet.header.origin == 0x1122334455667788
    assert client.check_reply(reply, packet, uid) is nts.ReplyCheck.OK
    assert len(client.cookies) == MAX_COOKIES  # one spent, one received


def test_the_client_asks_for_the_cookies_it_is_missing_with_placeholders_sized_like_them(
) -> None:
    keys = cookie_keys()
    client = session(keys, cookies=5)
    request, uid = client.build_request(header())
    packet = decode(request)
    kinds = [ef.field_type for ef in packet.extensions]
    assert kinds.count(nts.COOKIE_PLACEHOLDER) == 3
    assert {len(ef.value) for ef in packet.extensions
            if ef.field_type == nts.COOKIE_PLACEHOLDER} == {100}
    reply = serve(responder(keys), request)
    assert reply is not None and len(reply) <= len(request)
    assert client.check_reply(reply, decode(reply), uid) is nts.ReplyCheck.OK
    assert len(client.cookies) == MAX_COOKIES


def test_a_cookie_is_never_sent_twice() -> None:
    keys = cookie_keys()
    client = session(keys, cookies=3)
    sent = []
    for _ in range(3):
        request, _uid = client.build_request(header())
        sent += [ef.value for ef in decode(request).extensions if ef.field_type == nts.NTS_COOKIE]
    assert len(set(sent)) == 3 and client.needs_ke


def test_cookies_over_256_bytes_in_an_authentic_reply_are_not_kept_and_are_counted() -> None:
    """(Replies are at most 1,232 bytes, so no cookie in one can reach 1,024 bytes.)"""
    keys = cookie_keys()
    client = session(keys, cookies=2)
    _request, uid = client.build_request(header())
    inner = b"".join(encode_extension(ExtensionField(nts.NTS_COOKIE, value))
                     for value in (b"x" * 520, b"y" * 258, b"z" * 100))
    head = (HEADER.pack(li_vn_mode(0, 4, 4), 2, 6, -20, 0, 0, b"GPS\0", 0, 0, 0, 1)
            + encode_extension(ExtensionField(nts.UNIQUE_IDENTIFIER, uid)))
    reply = head + nts.authenticator(client.s2c, head, inner)  # sealed as the server would
    assert client.check_reply(reply, decode(reply), uid) is nts.ReplyCheck.OK
    assert [len(c) for c in client.cookies] == [100, 100]  # the one left, the usable one
    assert client.refused_cookies == 2


@pytest.mark.parametrize("placeholders", [0, 13], ids=["none", "short"])
def test_the_reply_is_never_longer_than_the_request(placeholders: int) -> None:
    """Each cookie in the reply is paid for by a placeholder at least as long (or the
    request's own cookie): placeholders shorter than a cookie buy nothing."""
    keys = cookie_keys()
    client = session(keys, cookies=1)
    request, _ = client.build_request(header())
    # Keep the unique identifier and the cookie, and add `placeholders` of 4 bytes.
    packet = decode(request)
    lean = header() + b"".join(encode_extension(ef) for ef in packet.extensions
                               if ef.field_type in (nts.UNIQUE_IDENTIFIER, nts.NTS_COOKIE))
    lean += encode_extension(ExtensionField(nts.COOKIE_PLACEHOLDER, bytes(4))) * placeholders
    lean += nts.authenticator(client.c2s, lean, b"")
    reply = serve(responder(keys), lean)
    assert reply is not None and len(reply) <= len(lean)
    assert client.check_reply(reply, decode(reply), decode(lean).extensions[0].value) \
        is nts.ReplyCheck.OK
    assert len(client.cookies) == 1  # one new cookie for the one spent


def test_a_bad_cookie_gets_an_nts_nak_echoing_the_unique_identifier() -> None:
    client = session(cookie_keys())  # cookies from some other server
    request, uid = client.build_request(header())
    r = responder(cookie_keys())
    reply = serve(r, request)
    assert reply is not None
    packet = decode(reply)
    assert packet.header.stratum == 0 and packet.header.refid == b"NTSN"
    assert client.check_reply(reply, packet, uid) is nts.ReplyCheck.NAK and client.needs_ke
    assert r.counters.nts_failed == {nts.NtsFailure.BAD_COOKIE: 1}


def test_a_tampered_request_gets_nothing() -> None:
    keys = cookie_keys()
    request, _ = session(keys).build_request(header())
    forged = bytearray(request)
    forged[47] ^= 1  # the transmit timestamp, covered by the authenticator
    r = responder(keys)
    assert serve(r, bytes(forged)) is None
    assert r.counters.nts_failed == {nts.NtsFailure.BAD_AUTHENTICATOR: 1}
    assert r.counters.dropped[DropReason.BAD_AUTH] == 1


def test_a_request_signed_with_the_wrong_key_gets_nothing() -> None:
    keys = cookie_keys()
    client = session(keys)
    client.c2s = secrets.token_bytes(32)
    request, _ = client.build_request(header())
    assert serve(responder(keys), request) is None


@pytest.mark.parametrize("drop", [nts.UNIQUE_IDENTIFIER, nts.NTS_COOKIE, nts.AUTHENTICATOR])
def test_a_request_missing_a_required_field_gets_nothing(drop: int) -> None:
    keys = cookie_keys()
    client = session(keys)
    request, _ = client.build_request(header())
    fields = [ef for ef in decode(request).extensions
              if ef.field_type not in (drop, nts.AUTHENTICATOR)]
    data = header() + b"".join(encode_extension(ef) for ef in fields)
    if drop != nts.AUTHENTICATOR:
        data += nts.authenticator(client.c2s, data, b"")
    r = responder(keys)
    assert serve(r, data) is None
    assert r.counters.nts_failed == {nts.NtsFailure.MALFORMED: 1}


@pytest.mark.parametrize("flags", [F.IGNORE, F.NOSERVE, F.NOSERVE | F.KOD])
def test_restricted_sources_get_no_nts_reply(flags: F) -> None:
    """restrict applies to NTS requests as to plain ones, before any cryptography."""
    keys = cookie_keys()
    request, _ = session(keys).build_request(header())
    r = responder(keys, flags)
    assert serve(r, request) is None
    assert r.counters.dropped == {DropReason.RESTRICTED: 1} and r.counters.served == 0


def test_a_replayed_request_is_answered_afresh_and_changes_nothing() -> None:
    """RFC 8915 servers keep no state: a replay gets a new reply (new nonce, new cookies)
    that only the holder of S2C can read, and the original client rejects it (see below)."""
    keys = cookie_keys()
    client = session(keys)
    request, uid = client.build_request(header())
    r = responder(keys)
    first, second = serve(r, request), serve(r, request)
    assert first is not None and second is not None and first != second
    assert client.check_reply(first, decode(first), uid) is nts.ReplyCheck.OK


def test_a_reply_with_another_unique_identifier_is_refused() -> None:
    keys = cookie_keys()
    client = session(keys)
    request, _uid = client.build_request(header())
    reply = serve(responder(keys), request)
    assert reply is not None
    assert client.check_reply(reply, decode(reply), secrets.token_bytes(32)) \
        is nts.ReplyCheck.BAD


def test_a_reply_with_a_tampered_authenticator_is_refused() -> None:
    keys = cookie_keys()
    client = session(keys)
    request, uid = client.build_request(header())
    reply = bytearray(serve(responder(keys), request) or b"")
    reply[-5] ^= 1
    assert client.check_reply(bytes(reply), decode(bytes(reply)), uid) is nts.ReplyCheck.BAD


def test_an_unauthenticated_reply_is_refused() -> None:
    keys = cookie_keys()
    client = session(keys)
    _request, uid = client.build_request(header())
    plain = header() + encode_extension(ExtensionField(nts.UNIQUE_IDENTIFIER, uid))
    assert client.check_reply(plain, decode(plain), uid) is nts.ReplyCheck.BAD


def test_a_server_without_nts_ignores_the_fields_and_answers_plainly() -> None:
    keys = cookie_keys()
    client = session(keys)
    request, uid = client.build_request(header())
    r = responder(None)
    prefix = r.respond(request, ADDRESS, False, PORT, RX, NOW)
    assert prefix is not None
    plain = prefix + TX.to_bytes(8, "big")
    assert client.check_reply(plain, decode(plain), uid) is nts.ReplyCheck.BAD


# --- the association -----------------------------------------------------------------------


def association(keys: nts.CookieKeys) -> Association:
    assoc = Association(SourceSpec("127.0.0.1", nts=True), nts=session(keys))
    assoc.start(NOW)
    return assoc


def poll(assoc: Association, r: Responder) -> bytes:
    request = assoc.make_request(NOW)
    assert request is not None
    assoc.sent(unix_to_ntp(NOW))
    reply = serve(r, request)
    assert reply is not None
    return reply


def test_an_nts_association_takes_samples_and_says_they_are_authentic() -> None:
    keys = cookie_keys()
    assoc = association(keys)
    sample = assoc.receive(poll(assoc, responder(keys)), unix_to_ntp(NOW + 2e-5), NOW)
    assert sample is not None and assoc.authentic and assoc.drops == {}


def test_a_replayed_reply_is_refused_by_the_association() -> None:
    keys = cookie_keys()
    assoc = association(keys)
    reply = poll(assoc, responder(keys))
    assert assoc.receive(reply, unix_to_ntp(NOW + 2e-5), NOW) is not None
    assert assoc.receive(reply, unix_to_ntp(NOW + 3e-5), NOW) is None
    assert sum(assoc.drops.values()) == 1


def test_a_forged_reply_does_not_consume_the_outstanding_request() -> None:
    keys = cookie_keys()
    assoc = association(keys)
    reply = poll(assoc, responder(keys))
    forged = bytearray(reply)
    forged[-1] ^= 1
    assert assoc.receive(bytes(forged), unix_to_ntp(NOW + 2e-5), NOW) is None
    assert assoc.drops == {SourceDrop.AUTH: 1}
    assert assoc.receive(reply, unix_to_ntp(NOW + 2e-5), NOW) is not None


def test_an_nts_nak_makes_the_association_ask_for_new_keys() -> None:
    assoc = association(cookie_keys())
    reply = poll(assoc, responder(cookie_keys()))
    assert assoc.receive(reply, unix_to_ntp(NOW + 2e-5), NOW) is None
    assert assoc.drops == {SourceDrop.NTS_NAK: 1}
    assert assoc.nts is not None and assoc.nts.needs_ke
    assert assoc.make_request(NOW + 100) is None  # no cookie spent until NTS-KE ran again


def test_without_cookies_the_association_sends_nothing_and_counts_it() -> None:
    assoc = Association(SourceSpec("127.0.0.1", nts=True))
    assoc.start(NOW)
    assert assoc.make_request(NOW) is None
    assert assoc.drops == {SourceDrop.NO_COOKIE: 1}
