"""Broadcast mode (RFC 5905 mode 5) as ntpd 4.2.8 runs it, with authentication required.

The broadcaster's clock reads true time + AHEAD; the client's reads true time. A broadcast
takes ONE_WAY to arrive; the calibration exchange takes ONE_WAY each way.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyntpd.config.keys import SymmetricKey
from pyntpd.proto.access import Access, RestrictTable
from pyntpd.proto.access_types import RestrictFlag, RestrictRule
from pyntpd.proto.auth import AuthResult, KeyRing, mac_trailer, signed_part, verify_with
from pyntpd.proto.broadcast import (
    BroadcastAssociation,
    BroadcastClient,
    BroadcastDrop,
    Broadcaster,
)
from pyntpd.proto.packet import HEADER, DropReason, Mode, decode, li_vn_mode
from pyntpd.proto.server import Responder
from pyntpd.proto.timestamp import ntp_diff, unix_to_ntp
from pyntpd.sync.localclock import LocalClockDriver
from pyntpd.types import SystemVars

T0 = 1_800_000_000.0
AHEAD = 0.25
ONE_WAY = 0.002
KEY = SymmetricKey(3, "SHA1", b"broadcastsecret")
OTHER = SymmetricKey(4, "MD5", b"anotherkey")
UNTRUSTED = SymmetricKey(9, "MD5", b"notrusted")
KEYS = KeyRing.build([KEY, OTHER, UNTRUSTED], [3, 4])
SYNCED = LocalClockDriver(stratum=2).system_vars(T0 - 10.0)  # we serve stratum 3
BCAST_ADDR = 0x0A090001  # 10.9.0.1, the broadcaster


def broadcaster(key: SymmetricKey | None = KEY, **kw: object) -> Broadcaster:
    b = Broadcaster("10.9.0.255", key=key, random_jitter=lambda: 0, **kw)  # type: ignore[arg-type]
    b.start(T0)
    return b


def broadcast_at(sent: float, key: SymmetricKey | None = KEY, poll: int = 6,
                 system: SystemVars = SYNCED) -> bytes:
    """The broadcast the broadcaster sends at true time `sent`."""
    b = broadcaster(key, poll=poll)
    b.next_send = sent
    packet = b.on_timer(sent, system)
    assert packet is not None
    return packet.finish(unix_to_ntp(sent + AHEAD))


def client(**kw: object) -> BroadcastClient:
    return BroadcastClient(KEYS, **kw)  # type: ignore[arg-type]


def hear(c: BroadcastClient, data: bytes, sent: float, address: int = BCAST_ADDR):
    arrival = sent + ONE_WAY
    return c.receive(data, address, False, 123, unix_to_ntp(arrival), arrival)


def answer(request: bytes, sent: float, key: SymmetricKey = KEY) -> bytes:
    """The broadcaster's signed reply to a calibration request sent at true time `sent`."""
    req = decode(request)
    header = HEADER.pack(li_vn_mode(0, 4, Mode.SERVER), 3, 6, -20, 0, 0, b"GPS\0", 0,
                         req.header.transmit, unix_to_ntp(sent + ONE_WAY + AHEAD),
                         unix_to_ntp(sent + ONE_WAY + 0.0001 + AHEAD))
    return header + mac_trailer(key, header)


def calibrated(c: BroadcastClient) -> BroadcastAssociation:
    """A broadcaster heard at T0, its calibration exchange answered, not yet used."""
    heard = hear(c, broadcast_at(T0), T0)
    assoc = heard.association
    assert assoc is not None and heard.created
    request = assoc.make_request(T0 + ONE_WAY)
    assert request is not None
    assoc.sent(unix_to_ntp(T0 + ONE_WAY))
    back = T0 + 3 * ONE_WAY + 0.0001
    assert assoc.receive(answer(request, T0 + ONE_WAY), unix_to_ntp(back), back) is not None
    return assoc


# --- the broadcaster ----------------------------------------------------------------------


def test_broadcast_is_mode_5_stating_our_time_with_zero_origin_and_receive() -> None:
    h = decode(broadcast_at(T0, key=None)).header
    assert (h.mode, h.version, h.stratum, h.poll) == (Mode.BROADCAST, 4, 3, 6)
    assert h.origin == 0 and h.receive == 0
    assert h.transmit == unix_to_ntp(T0 + AHEAD)
    assert h.reference == SYNCED.reference_time


def test_unsigned_broadcast_has_no_mac() -> None:
    assert decode(broadcast_at(T0, key=None)).mac is None


def test_signed_broadcast_mac_covers_the_transmit_timestamp() -> None:
    data = broadcast_at(T0)
    mac = decode(data).mac
    assert mac is not None and mac.key_id == 3
    assert verify_with(KEY, mac, signed_part(data, mac)) is AuthResult.OK
    tampered = data[:40] + unix_to_ntp(T0 + 1.0).to_bytes(8, "big") + data[48:]
    assert verify_with(KEY, mac, signed_part(tampered, mac)) is AuthResult.BAD_MAC


def test_broadcast_states_the_configured_version() -> None:
    b = broadcaster(version=3)
    packet = b.on_timer(T0, SYNCED)
    assert packet is not None and decode(packet.finish(1)).header.version == 3


def test_nothing_is_broadcast_while_unsynchronised() -> None:
    b = broadcaster()
    assert b.on_timer(T0, SystemVars()) is None
    assert (b.unsynchronised, b.sent) == (1, 0)
    assert b.next_timer() == T0 + 64.0


def test_broadcasts_every_2_to_the_minpoll_seconds() -> None:
    b = broadcaster(poll=4)
    assert b.on_timer(T0, SYNCED) is not None
    assert b.next_timer() == T0 + 16.0


def test_broadcast_interval_is_stretched_by_ntpds_random_jitter() -> None:
    b = Broadcaster("224.0.1.1", poll=6, random_jitter=lambda: 255)
    b.start(T0)
    b.on_timer(T0, SYNCED)
    assert b.next_timer() == pytest.approx(T0 + 64.0 * 4351 / 4096)


def test_a_timer_that_fires_early_sends_nothing() -> None:
    b = broadcaster()
    b.on_timer(T0, SYNCED)
    assert b.on_timer(T0 + 10.0, SYNCED) is None
    assert b.sent == 1


# --- the client: authentication first ---------------------------------------------------------


def test_unsigned_broadcast_is_dropped_and_counted() -> None:
    c = client()
    heard = hear(c, broadcast_at(T0, key=None), T0)
    assert heard.association is None and heard.drop == "no_mac"
    assert c.counts == {"no_mac": 1} and not c.associations


def test_broadcast_forged_under_a_trusted_key_id_is_dropped_as_bad_mac() -> None:
    forged = SymmetricKey(3, "SHA1", b"guessedsecret")
    c = client()
    hear(c, broadcast_at(T0, key=forged), T0)
    assert c.counts == {"bad_mac": 1} and not c.associations


def test_broadcast_under_an_untrusted_key_is_dropped() -> None:
    c = client()
    hear(c, broadcast_at(T0, key=UNTRUSTED), T0)
    assert c.counts == {"untrusted_key": 1}


def test_broadcast_under_an_unknown_key_is_dropped() -> None:
    c = client()
    hear(c, broadcast_at(T0, key=SymmetricKey(77, "MD5", b"x")), T0)
    assert c.counts == {"unknown_key": 1}


def test_our_own_broadcast_heard_back_is_dropped() -> None:
    c = client(own_addresses=frozenset({(BCAST_ADDR, False)}))
    hear(c, broadcast_at(T0), T0)
    assert c.counts == {"own_broadcast": 1} and not c.associations


# --- mobilising ------------------------------------------------------------------------------


def test_first_authentic_broadcast_mobilises_an_association_that_calibrates() -> None:
    c = client()
    heard = hear(c, broadcast_at(T0), T0)
    assoc = heard.association
    assert heard.created and heard.sample is None and heard.drop == "calibrating"
    assert isinstance(assoc, BroadcastAssociation) and assoc.calibrating
    assert (assoc.spec.address, assoc.spec.port, assoc.spec.key) == ("10.9.0.1", 123, KEY)
    assert assoc.spec.minpoll == assoc.spec.maxpoll == 6


def test_calibration_exchange_is_a_client_request_signed_with_the_broadcasters_key() -> None:
    assoc = hear(client(), broadcast_at(T0), T0).association
    assert assoc is not None
    packet = decode(assoc.make_request(T0) or b"")
    assert packet.header.mode == Mode.CLIENT
    assert packet.mac is not None and packet.mac.key_id == KEY.key_id


def test_unsynchronised_broadcaster_mobilises_nothing() -> None:
    # Another implementation may broadcast while unsynchronised (leap 3, stratum 16).
    header = bytes([li_vn_mode(3, 4, Mode.BROADCAST), 16]) + broadcast_at(T0)[2:48]
    c = client()
    hear(c, header + mac_trailer(KEY, header), T0)
    assert c.counts == {"unsynchronised": 1} and not c.associations


def test_broadcaster_below_the_stratum_floor_mobilises_nothing() -> None:
    c = client(floor=5)
    hear(c, broadcast_at(T0), T0)  # stratum 3
    assert c.counts == {"unsynchronised": 1}


def test_number_of_broadcast_associations_is_bounded() -> None:
    c = client(max_associations=2)
    for host in range(3):
        hear(c, broadcast_at(T0), T0, address=BCAST_ADDR + host)
    assert len(c.associations) == 2
    assert c.counts["too_many_broadcasters"] == 1


# --- calibration and samples ----------------------------------------------------------------


def test_calibration_gives_the_delay_and_the_next_broadcast_the_offset() -> None:
    c = client()
    assoc = calibrated(c)
    heard = hear(c, broadcast_at(T0 + 64.0), T0 + 64.0)
    assert heard.sample is not None and not assoc.calibrating
    assert assoc.delay == pytest.approx(2 * ONE_WAY, abs=2e-4)
    assert heard.sample.offset == pytest.approx(AHEAD, abs=2e-4)
    assert c.counts["sample"] == 1


def test_listening_association_sends_nothing() -> None:
    assoc = calibrated(client())
    assert assoc.make_request(T0 + 64.0) is None


def test_calibrated_delay_beyond_the_limit_drops_the_broadcaster() -> None:
    c = client(delay=-0.001)  # broadcastdelay -0.001: refuse anything farther than 1 ms
    assoc = calibrated(c)
    heard = hear(c, broadcast_at(T0 + 64.0), T0 + 64.0)
    assert heard.drop == BroadcastDrop.DELAY_TOO_LARGE and heard.sample is None
    assert assoc.demobilised is not None and "exceeds 0.001000 s" in assoc.demobilised


def test_fixed_broadcastdelay_skips_calibration_and_uses_the_first_broadcast() -> None:
    c = client(delay=0.004)
    heard = hear(c, broadcast_at(T0), T0)
    assert heard.created and heard.sample is not None
    assert heard.association is not None and not heard.association.calibrating
    assert heard.sample.delay == 0.004
    assert heard.sample.offset == pytest.approx(AHEAD - ONE_WAY + 0.002, abs=1e-6)


def test_broadcast_before_the_exchange_answered_gives_no_sample() -> None:
    c = client()
    hear(c, broadcast_at(T0), T0)
    assert hear(c, broadcast_at(T0 + 64.0), T0 + 64.0).drop == "calibrating"


def test_no_answer_to_the_calibration_exchange_gives_up_after_ten_polls() -> None:
    assoc = hear(client(), broadcast_at(T0), T0).association
    assert assoc is not None
    now = T0
    for _ in range(20):
        assoc.make_request(now)
        now += 64.0
        if assoc.demobilised:
            break
    assert assoc.demobilised == "no answer to the calibration exchange"


# --- what a broadcast must pass once the association exists -------------------------------


def test_broadcast_arriving_before_a_poll_interval_is_dropped_as_too_early() -> None:
    c = client(delay=0.004)
    hear(c, broadcast_at(T0), T0)
    assert hear(c, broadcast_at(T0 + 30.0), T0 + 30.0).drop == "too_early"


def test_replayed_older_broadcast_is_dropped() -> None:
    c = client(delay=0.004)
    old = broadcast_at(T0)
    hear(c, old, T0)
    hear(c, broadcast_at(T0 + 64.0), T0 + 64.0)
    # The first packet again, a poll interval after the last clean one: older than it.
    assert hear(c, old, T0 + 128.0).drop == "replay"


def test_broadcaster_stepped_back_is_believed_after_one_poll_interval() -> None:
    c = client(delay=0.004)
    hear(c, broadcast_at(T0), T0)
    back = broadcast_at(T0 - 5.0)  # its clock went back 5 s
    assert hear(c, back, T0 + 64.0).drop == "replay"
    heard = hear(c, broadcast_at(T0 - 5.0 + 128.0), T0 + 128.0 + 0.1)
    assert heard.sample is not None


def test_duplicate_broadcast_is_dropped() -> None:
    c = client(delay=0.004)
    data = broadcast_at(T0)
    hear(c, data, T0)
    assert hear(c, data, T0 + 64.0).drop == "duplicate"


def test_broadcast_with_another_poll_is_dropped() -> None:
    c = client(delay=0.004)
    hear(c, broadcast_at(T0), T0)
    assert hear(c, broadcast_at(T0 + 64.0, poll=7), T0 + 64.0).drop == "bad_poll"


def test_broadcast_under_another_trusted_key_is_refused_by_its_association() -> None:
    c = client(delay=0.004)
    hear(c, broadcast_at(T0), T0)
    assert hear(c, broadcast_at(T0 + 64.0, key=OTHER), T0 + 64.0).drop == "wrong_key"


def test_reach_ages_while_listening_and_a_broadcast_sets_it() -> None:
    c = client(delay=0.004)
    assoc = hear(c, broadcast_at(T0), T0).association
    assert assoc is not None and assoc.reach == 1
    assoc.make_request(T0 + 64.0)
    hear(c, broadcast_at(T0 + 64.5), T0 + 64.5)
    assert assoc.reach == 0b11 and assoc.unreach == 0


def test_silent_broadcaster_is_demobilised_after_ten_polls() -> None:
    assoc = hear(client(delay=0.004), broadcast_at(T0), T0).association
    assert assoc is not None
    for poll in range(1, 11):  # the first poll counts the packet that mobilised it
        assoc.make_request(T0 + 64.0 * poll)
    assert assoc.demobilised is None
    assoc.make_request(T0 + 64.0 * 11)
    assert assoc.demobilised == "silent" and assoc.reach == 0


def test_clock_step_moves_the_too_early_window_with_it() -> None:
    c = client(delay=0.004)
    assoc = hear(c, broadcast_at(T0), T0).association
    assert assoc is not None
    assoc.clock_stepped(-10.0)  # our clock now reads 10 s less
    arrival = T0 + 64.0 + ONE_WAY - 10.0
    heard = c.receive(broadcast_at(T0 + 64.0), BCAST_ADDR, False, 123, unix_to_ntp(arrival),
                      arrival)
    assert heard.sample is not None
    assert heard.sample.offset == pytest.approx(AHEAD + 10.0, abs=0.01)


# --- the responder routes broadcasts -------------------------------------------------------


def responder(flags: RestrictFlag = RestrictFlag.NONE) -> Responder:
    rule = RestrictRule(ipaddress.ip_network("0.0.0.0/0"), flags, is_default=True)
    return Responder(Access(RestrictTable([rule])))


def deliver(r: Responder, data: bytes) -> None:
    assert r.respond(data, BCAST_ADDR, False, 123, unix_to_ntp(T0), T0) is None


def test_broadcast_is_queued_for_the_broadcast_client() -> None:
    r = responder()
    r.broadcast_client = True
    deliver(r, broadcast_at(T0))
    queued = r.take_broadcast()
    assert [(p.address, p.port) for p in queued] == [(BCAST_ADDR, 123)]
    assert r.counters.broadcast_packets == 1 and not r.counters.dropped


def test_broadcast_is_not_a_request_when_no_broadcast_client_runs() -> None:
    r = responder()
    deliver(r, broadcast_at(T0))
    assert r.counters.dropped == {DropReason.NOT_A_REQUEST: 1} and not r.broadcast_queue


def test_broadcast_from_a_noserve_source_is_dropped_as_restricted() -> None:
    r = responder(RestrictFlag.NOSERVE)
    r.broadcast_client = True
    deliver(r, broadcast_at(T0))
    assert r.counters.dropped == {DropReason.RESTRICTED: 1} and not r.broadcast_queue


def test_unsigned_broadcast_still_reaches_the_client_to_be_counted() -> None:
    r = responder()
    r.broadcast_client = True
    deliver(r, broadcast_at(T0, key=None))
    c = client()
    for p in r.take_broadcast():
        c.receive(p.data, p.address, p.is_v6, p.port, p.receive_ts, p.now)
    assert c.counts == {"no_mac": 1}


def test_sample_offset_is_the_broadcasters_clock_minus_ours() -> None:
    c = client(delay=2 * ONE_WAY)
    sample = hear(c, broadcast_at(T0), T0).sample
    assert sample is not None
    assert ntp_diff(unix_to_ntp(T0 + AHEAD), unix_to_ntp(T0)) == pytest.approx(sample.offset)


# --- bad input --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=120), st.booleans())
def test_any_datagram_is_counted_once_and_never_raises(data: bytes, mode5: bool) -> None:
    if mode5 and data:
        data = bytes([(data[0] & 0xF8) | Mode.BROADCAST]) + data[1:]
    c = client(delay=0.004)
    heard = hear(c, data, T0)
    assert sum(c.counts.values()) == 1
    assert (heard.sample is None) == (heard.drop is not None)
