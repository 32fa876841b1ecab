"""The responder and MS-SNTP: which requests go to ntp_signd, and which get nothing."""

from __future__ import annotations

import ipaddress

from pyntpd.proto.access import Access, RestrictTable
from pyntpd.proto.access_types import RestrictFlag as F
from pyntpd.proto.access_types import RestrictRule
from pyntpd.proto.auth import KeyRing
from pyntpd.proto.mssntp import MssntpFailure
from pyntpd.proto.packet import HEADER, DropReason, decode, li_vn_mode
from pyntpd.proto.server import MSSNTP_QUEUE_LIMIT, Responder
from pyntpd.proto.timestamp import unix_to_ntp
from pyntpd.sync.localclock import LocalClockDriver

NOW = 1_800_000_000.0
RX = unix_to_ntp(NOW)
TX = unix_to_ntp(NOW + 1e-5)
RID = (1102).to_bytes(4, "little")
CLIENT = 0xC0000201


def responder(flags: F, keys: KeyRing | None = None) -> Responder:
    rules = [RestrictRule(ipaddress.ip_network("0.0.0.0/0"), flags, is_default=True)]
    return Responder(Access(RestrictTable(rules)),
                     LocalClockDriver(stratum=10).system_vars(NOW - 30.0), keys=keys)


def w32time(version: int = 3, trailer: bytes = RID + bytes(16)) -> bytes:
    """A domain member's request: NTPv3, the Authenticator with a zero checksum."""
    return HEADER.pack(li_vn_mode(0, version, 3), 0, 10, -23, 0, 0, b"\0" * 4, 0, 0, 0,
                       0x0102030405060708) + trailer


def ask(r: Responder, data: bytes, now: float = NOW, address: int = CLIENT) -> bytes | None:
    return r.respond(data, address, False, 123, RX, now)


def test_request_from_an_mssntp_source_is_queued_for_signd_not_answered():
    r = responder(F.MSSNTP)
    assert ask(r, w32time()) is None
    [queued] = r.take_mssntp()
    assert (queued.key_id, queued.address, queued.port) == (RID, CLIENT, 123)
    assert r.counters.dropped == {} and r.counters.served == 0


def test_queued_reply_is_the_normal_server_reply_for_the_request():
    r = responder(F.MSSNTP)
    ask(r, w32time())
    header = decode(r.take_mssntp()[0].packet(TX)).header
    assert (header.mode, header.version, header.stratum) == (4, 3, 11)
    assert (header.origin, header.receive, header.transmit) == (0x0102030405060708, RX | 1, TX)


def test_key_id_goes_to_signd_as_the_client_sent_it():
    r = responder(F.MSSNTP)
    ask(r, w32time(trailer=b"\x4e\x04\x00\x80" + bytes(16)))  # top bit: the key selector
    assert r.take_mssntp()[0].key_id == b"\x4e\x04\x00\x80"


def test_without_mssntp_in_the_rule_it_gets_nothing_and_is_counted():
    r = responder(F.NONE)
    assert ask(r, w32time()) is None and r.take_mssntp() == []
    assert r.counters.mssntp_failed == {MssntpFailure.NOT_PERMITTED: 1}
    assert r.counters.dropped == {DropReason.MSSNTP: 1}


def test_ntpv4_authenticator_from_an_mssntp_source_goes_to_signd_too():
    # ntpd looks at the trailer only, not at the version.
    r = responder(F.MSSNTP)
    ask(r, w32time(version=4))
    assert len(r.take_mssntp()) == 1


def test_a_real_mac_from_an_mssntp_source_is_checked_as_a_mac():
    r = responder(F.MSSNTP, KeyRing())
    assert ask(r, w32time(trailer=RID + bytes(range(1, 17)))) is None
    assert r.take_mssntp() == [] and r.counters.dropped == {DropReason.BAD_AUTH: 1}


def test_plain_request_from_an_mssntp_source_is_served_plain_on_the_fast_path():
    r = responder(F.MSSNTP)
    assert ask(r, w32time(trailer=b"")) is not None
    assert r.counters.served == 1 and r.take_mssntp() == []


def test_extended_authenticator_gets_nothing_as_ntp_signd_cannot_sign_it():
    r = responder(F.MSSNTP)
    assert ask(r, w32time(trailer=RID + b"\0\0\1\1" + bytes(64))) is None
    assert r.take_mssntp() == []
    assert r.counters.mssntp_failed == {MssntpFailure.EXTENDED: 1}


def test_extended_authenticator_without_mssntp_is_not_permitted():
    r = responder(F.NONE)
    assert ask(r, w32time(trailer=RID + b"\0\0\1\1" + bytes(64))) is None
    assert r.counters.mssntp_failed == {MssntpFailure.NOT_PERMITTED: 1}


def test_notrust_refuses_it_as_unauthenticated_as_ntpd_does():
    r = responder(F.MSSNTP | F.NOTRUST)
    assert ask(r, w32time()) is None and r.take_mssntp() == []
    assert r.counters.dropped == {DropReason.AUTH_REQUIRED: 1}


def test_ignore_drops_it_before_anything_else():
    r = responder(F.MSSNTP | F.IGNORE)
    assert ask(r, w32time()) is None
    assert r.counters.dropped == {DropReason.RESTRICTED: 1} and r.counters.mssntp_failed == {}


def test_limited_drops_an_over_rate_request_before_it_reaches_signd():
    r = responder(F.MSSNTP | F.LIMITED)
    for i in range(3):
        ask(r, w32time(), now=NOW + i * 0.1)
    assert len(r.take_mssntp()) == 1
    assert r.counters.dropped == {DropReason.RATE_LIMITED: 2}


def test_the_queue_is_bounded_per_batch_and_the_excess_counted():
    r = responder(F.MSSNTP)
    for address in range(MSSNTP_QUEUE_LIMIT + 3):
        ask(r, w32time(), address=address)
    assert len(r.take_mssntp()) == MSSNTP_QUEUE_LIMIT
    assert r.counters.mssntp_failed == {MssntpFailure.QUEUE_FULL: 3}
