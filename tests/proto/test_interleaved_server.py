"""Interleaved mode, server side: which requests are queued, what the replies say, and the
transmit log that keeps our replies for the next request (bounded, each entry used once)."""

from __future__ import annotations

import ipaddress

import pytest

from pyntpd.proto import server as srv
from pyntpd.proto.access import Access, RestrictTable, address_key
from pyntpd.proto.access_types import RestrictFlag as F
from pyntpd.proto.access_types import RestrictRule
from pyntpd.proto.auth import KeyRing, SymmetricKey, mac_trailer
from pyntpd.proto.interleaved import InterleavedReply, TransmitLog
from pyntpd.proto.packet import HEADER, decode, li_vn_mode
from pyntpd.proto.server import Responder
from pyntpd.proto.timestamp import ntp_add, unix_to_ntp
from pyntpd.sync.localclock import LocalClockDriver

NOW = 1_800_000_000.0
CLIENT = 0xC0000201  # 192.0.2.1
PORT = 40000
RX = unix_to_ntp(NOW)  # the kernel's receive timestamp of the request
KERNEL_TX = ntp_add(RX, 50e-6) & ~1  # the kernel's stamp of the earlier reply
KEY = SymmetricKey(1, "MD5", b"0123456789abcdef")


def responder(keys: KeyRing | None = None) -> Responder:
    rules = [RestrictRule(ipaddress.ip_network("0.0.0.0/0"), F.NONE, is_default=True)]
    return Responder(Access(RestrictTable(rules)),
                     LocalClockDriver(stratum=10).system_vars(NOW - 30), keys)


def request(origin: int = 0, receive: int = 0x5EED_0000_0000_0001,
            transmit: int = 0x1122_3344_5566_7788, version: int = 4) -> bytes:
    return HEADER.pack(li_vn_mode(0, version, 3), 0, 6, 32, 0, 0, b"\0" * 4, 0, origin,
                       receive, transmit)


def ask(r: Responder, data: bytes, address: int = CLIENT) -> bytes | None:
    return r.respond(data, address, False, PORT, RX, NOW)


def kept_earlier(r: Responder, address: int = CLIENT) -> int:
    """A reply we sent earlier to `address`, kept with its kernel stamp: its receive
    timestamp, which the client names as its next origin."""
    earlier = ntp_add(RX, -16.0) | 1
    r.transmit_log.keep(earlier, ntp_add(KERNEL_TX, -10e-6), address_key(address, False))
    assert r.transmit_log.kernel_stamp(earlier, KERNEL_TX)
    return earlier


def test_every_receive_timestamp_has_its_lowest_bit_set():
    reply = ask(responder(), request())
    assert reply is not None and decode(reply + bytes(8)).header.receive == RX | 1


def test_a_request_with_an_even_origin_is_answered_in_the_batch():
    """ntpd's clients name our transmit timestamp (lowest bit clear), others zero."""
    r = responder()
    assert ask(r, request(origin=KERNEL_TX)) is not None
    assert (r.interleaved_queue, len(r.transmit_log)) == ([], 0)


def test_a_request_naming_a_kept_reply_gets_the_kernel_stamp_of_that_reply():
    r = responder()
    origin = kept_earlier(r)
    assert ask(r, request(origin=origin)) is None  # queued, not answered in the batch
    (queued,) = r.take_interleaved()
    h = decode(queued.prefix + queued.transmit.to_bytes(8, "big")).header
    # origin = the request's receive field: how the client tells an interleaved reply
    assert (h.origin, h.receive, h.transmit) == (0x5EED_0000_0000_0001, RX | 1, KERNEL_TX)
    assert (queued.receive, queued.client) == (RX | 1, address_key(CLIENT, False))
    assert (r.counters.interleaved, r.counters.interleaved_daemon_stamp) == (1, 0)
    assert r.counters.served == 1


def test_a_request_naming_nothing_kept_gets_a_basic_reply_that_is_kept():
    """The second request of a new client: its third reply is the first interleaved one."""
    r = responder()
    assert ask(r, request(origin=ntp_add(RX, -16.0) | 1)) is None
    (queued,) = r.take_interleaved()
    h = decode(queued.prefix + bytes(8)).header
    assert h.origin == 0x1122_3344_5566_7788  # the request's transmit field: basic
    assert queued.transmit == 0  # the serving path reads the clock, and keeps the reply
    assert r.counters.interleaved_missed == 1


def test_a_kept_reply_is_used_once():
    r = responder()
    origin = kept_earlier(r)
    ask(r, request(origin=origin))
    ask(r, request(origin=origin))
    first, second = r.take_interleaved()
    assert (first.transmit, second.transmit) == (KERNEL_TX, 0)


def test_a_kept_reply_is_not_given_to_another_address():
    r = responder()
    origin = kept_earlier(r, address=CLIENT + 1)
    ask(r, request(origin=origin))
    (queued,) = r.take_interleaved()
    assert queued.transmit == 0 and r.counters.interleaved_missed == 1


def test_a_reply_without_a_kernel_stamp_is_counted():
    r = responder()
    earlier = ntp_add(RX, -16.0) | 1
    r.transmit_log.keep(earlier, KERNEL_TX, address_key(CLIENT, False))
    ask(r, request(origin=earlier))
    assert r.counters.interleaved_daemon_stamp == 1


@pytest.mark.parametrize(("what", "data"), [
    ("NTPv3", request(origin=RX | 1, version=3)),
    ("receive == transmit", request(origin=RX | 1, receive=7, transmit=7)),
])
def test_requests_that_cannot_be_interleaved_are_answered_in_the_batch(what, data):
    r = responder()
    assert ask(r, data) is not None, what
    assert r.interleaved_queue == []


def test_a_signed_request_gets_a_signed_basic_reply():
    """Interleaved replies are plain only: the MAC would have to cover the kept stamp."""
    r = responder(KeyRing({1: KEY}, frozenset({1})))
    data = request(origin=kept_earlier(r))
    assert ask(r, data + mac_trailer(KEY, data)) is None
    assert r.interleaved_queue == [] and len(r.take_signed()) == 1


def test_beyond_the_queue_limit_requests_are_answered_in_the_batch(monkeypatch):
    monkeypatch.setattr(srv, "INTERLEAVED_QUEUE_LIMIT", 2)
    r = responder()
    replies = [ask(r, request(origin=ntp_add(RX, -n) | 1)) for n in range(1, 4)]
    assert replies[:2] == [None, None] and replies[2] is not None
    assert len(r.interleaved_queue) == 2


def test_the_full_path_queues_too():
    r = responder()
    origin = kept_earlier(r)
    assert r.respond_full(request(origin=origin), CLIENT, False, PORT, RX, NOW) is None
    assert r.take_interleaved()[0].transmit == KERNEL_TX


# --- the transmit log -------------------------------------------------------------------

def test_the_log_is_bounded_and_the_oldest_entry_goes_first():
    log = TransmitLog(max_entries=3)
    for n in range(5):
        log.keep(2 * n + 1, 100 + n, CLIENT)
    assert len(log) == 3 and log.evicted == 2
    assert log.take(1, CLIENT) is None and log.take(3, CLIENT) is None
    assert log.take(9, CLIENT) == (104, False)


def test_the_responders_log_holds_as_many_entries_as_the_mru_list():
    r = responder()
    assert r.transmit_log.max_entries == r.access.mru_limits.max_entries


@pytest.mark.parametrize("lag", [-1e-6, 1.5])
def test_an_implausible_kernel_stamp_is_refused(lag: float):
    """Earlier than the clock read before the send, or more than a second later: another
    datagram's stamp (the OPT_ID counter went astray)."""
    log = TransmitLog(4)
    log.keep(RX | 1, KERNEL_TX, CLIENT)
    assert not log.kernel_stamp(RX | 1, ntp_add(KERNEL_TX, lag))
    assert log.take(RX | 1, CLIENT) == (KERNEL_TX, False)


def test_a_kernel_stamp_for_nothing_kept_is_ignored():
    log = TransmitLog(4)
    assert not log.kernel_stamp(RX | 1, KERNEL_TX)
    assert len(log) == 0


def test_an_interleaved_reply_is_a_value_for_the_serving_path():
    reply = InterleavedReply(b"\0" * 40, 0, RX | 1, 1, 1, False, 123)
    with pytest.raises(AttributeError):
        reply.transmit = 5  # type: ignore[misc]
