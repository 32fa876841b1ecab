import ipaddress
import struct

import pytest

from pyntpd.proto.access import OVER_RATE, Access, RestrictTable
from pyntpd.proto.access_types import RestrictFlag as F
from pyntpd.proto.access_types import RestrictRule
from pyntpd.proto.packet import HEADER, DropReason, NtpHeader, decode, li_vn_mode
from pyntpd.proto.server import FAST, REPLY_PREFIX_LEN, UNCHECKED, Responder
from pyntpd.proto.timestamp import unix_to_ntp
from pyntpd.sync.localclock import LocalClockDriver
from pyntpd.types import SystemVars

NOW = 1_800_000_000.0
CLIENT_XMT = 0x1122334455667788
RX = unix_to_ntp(NOW)
TX = unix_to_ntp(NOW + 1e-5)


def request(version=4, mode=3, poll=6, trailer=b"", transmit=CLIENT_XMT):
    return HEADER.pack(li_vn_mode(0, version, mode), 0, poll, -6, 0, 0, b"\0" * 4, 0, 0, 0,
                       transmit) + trailer


def responder(flags=F.NONE, system=None, rate=None):
    rules = [RestrictRule(ipaddress.ip_network("0.0.0.0/0"), flags, is_default=True)]
    synced = LocalClockDriver(stratum=10).system_vars(NOW - 30.0)
    return Responder(Access(RestrictTable(rules), rate), system or synced)


def ask(r, data, now=NOW, address=0xC0000201, port=40000):
    prefix = r.respond(data, address, False, port, RX, now)
    return None if prefix is None else decode(prefix + TX.to_bytes(8, "big"))


def test_reply_is_prefix_of_40_bytes_and_caller_appends_transmit():
    r = responder()
    assert len(r.respond(request(), 1, False, 1, RX, NOW)) == REPLY_PREFIX_LEN == 40


def test_reply_is_mode_4_with_echoed_version_and_origin():
    h = ask(responder(), request(version=3)).header
    assert (h.mode, h.version, h.origin, h.receive, h.transmit) == (
        4, 3, CLIENT_XMT, RX | 1, TX)  # the receive timestamp marked (proto.interleaved)


def test_local_clock_at_fudge_stratum_10_serves_stratum_11_with_refid_locl():
    h = ask(responder(), request()).header
    assert (h.stratum, h.refid, h.leap) == (11, b"LOCL", 0)


def test_reference_time_is_the_last_update():
    assert ask(responder(), request()).header.reference == unix_to_ntp(NOW - 30.0)


def test_root_dispersion_grows_with_age_of_the_system_variables():
    young = ask(responder(), request(), now=NOW - 29.0).header.root_dispersion
    old = ask(responder(), request(), now=NOW + 3600.0).header.root_dispersion
    assert old > young


def test_poll_is_echoed():
    assert ask(responder(), request(poll=10)).header.poll == 10


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_versions_1_to_4_are_answered(version):
    assert ask(responder(), request(version=version)).header.version == version


def test_ntpv1_mode_0_is_treated_as_client():
    assert ask(responder(), request(version=1, mode=0)).header.mode == 4


def test_unsynchronised_server_says_leap_3_stratum_16_and_claims_no_reference():
    h = ask(responder(system=SystemVars()), request()).header
    assert (h.leap, h.stratum, h.reference, h.refid) == (3, 16, 0, b"\0\0\0\0")


def test_fudge_stratum_15_leaves_the_server_unsynchronised():
    assert LocalClockDriver(stratum=15).system_vars(NOW).synchronised is False


@pytest.mark.parametrize("mode", [1, 2, 4, 5])
def test_non_client_modes_are_not_answered(mode):
    r = responder()
    assert ask(r, request(mode=mode)) is None
    assert r.counters.dropped[DropReason.NOT_A_REQUEST] == 1


def test_mode_7_is_never_answered():
    r = responder()
    assert ask(r, bytes([0x17, 0x00, 0x03, 0x2A]) + bytes(4)) is None  # monlist request
    assert r.counters.dropped[DropReason.MODE7] == 1


def test_mode_6_is_refused_and_counted():
    r = responder()
    assert ask(r, bytes([0x16, 0x01]) + bytes(10)) is None
    assert r.counters.dropped[DropReason.CONTROL_DENIED] == 1


def test_truncated_request_is_dropped_and_counted():
    r = responder()
    assert ask(r, request()[:47]) is None
    assert r.counters.dropped[DropReason.TOO_SHORT] == 1


def test_empty_datagram_is_dropped_and_counted():
    r = responder()
    assert ask(r, b"") is None and r.counters.dropped[DropReason.TOO_SHORT] == 1


def test_bad_extension_field_is_dropped_and_counted():
    r = responder()
    assert ask(r, request(trailer=struct.pack("!HH", 0x1234, 30) + bytes(26))) is None
    assert r.counters.dropped[DropReason.BAD_EXTENSION] == 1


def test_unknown_extension_field_is_answered_without_it():
    r = responder()
    data = request(trailer=struct.pack("!HH", 0x7777, 32) + bytes(28))
    reply = r.respond(data, 1, False, 1, RX, NOW)
    assert reply is not None and len(reply) + 8 == 48 < len(data)


def test_signed_request_without_keys_gets_no_reply():
    r = responder()
    assert ask(r, request(trailer=struct.pack("!I", 1) + bytes(range(1, 17)))) is None
    assert r.counters.dropped[DropReason.BAD_AUTH] == 1


def test_crypto_nak_trailer_is_not_authentication_and_is_served_plain():
    assert ask(responder(), request(trailer=bytes(4))).mac is None


def test_ignore_drops_silently_even_with_kod():
    r = responder(F.IGNORE | F.KOD)
    assert ask(r, request()) is None and r.counters.kod_sent == {}


def test_noserve_drops_time_requests():
    assert ask(responder(F.NOSERVE), request()) is None


def test_noserve_with_kod_sends_rstr():
    h = ask(responder(F.NOSERVE | F.KOD), request()).header
    assert (h.stratum, h.refid, h.leap, h.origin) == (0, b"RSTR", 3, CLIENT_XMT)


def test_notrust_drops_unauthenticated_requests():
    assert ask(responder(F.NOTRUST), request()) is None


def test_notrust_with_kod_sends_deny():
    assert ask(responder(F.NOTRUST | F.KOD), request()).header.refid == b"DENY"


def test_version_flag_drops_older_versions():
    r = responder(F.VERSION)
    assert ask(r, request(version=3)) is None and ask(r, request(version=4)) is not None


@pytest.mark.parametrize("flag", [F.NOQUERY, F.NOMODIFY, F.NOTRAP, F.NOPEER, F.LOWPRIOTRAP])
def test_flags_about_other_services_do_not_stop_time_service(flag):
    assert ask(responder(flag), request()) is not None


def test_limited_drops_requests_over_rate():
    r = responder(F.LIMITED)
    assert ask(r, request()) is not None
    assert ask(r, request(), now=NOW + 0.1) is None
    assert r.counters.dropped[DropReason.RATE_LIMITED] == 1


def test_limited_with_kod_sends_one_rate_kiss_per_burst():
    r = responder(F.LIMITED | F.KOD)
    replies = [ask(r, request(), now=NOW + 0.01 * i) for i in range(10)]
    kisses = [p for p in replies[1:] if p is not None]
    assert len(kisses) == 1 and kisses[0].header.refid == b"RATE"
    assert kisses[0].header.stratum == 0 and r.counters.kod_sent == {b"RATE": 1}


@pytest.mark.parametrize("flag, code", [(F.NOSERVE, b"RSTR"), (F.NOTRUST, b"DENY")])
def test_refusal_kisses_are_rate_limited_too(flag, code):
    """A refused source that floods us (or spoofs a victim's address) gets one kiss per
    burst, not one per packet: a kiss must never make us a reflector."""
    r = responder(flag | F.KOD)
    replies = [ask(r, request(), now=NOW + 0.01 * i) for i in range(10)]
    kisses = [p for p in replies if p is not None]
    assert [k.header.refid for k in kisses] == [code, code]  # the first packet, then a burst's
    assert r.counters.kod_sent == {code: 2}
    assert r.counters.dropped[DropReason.RESTRICTED if flag == F.NOSERVE
                              else DropReason.AUTH_REQUIRED] == 10


def test_kod_is_never_larger_than_the_request():
    r = responder(F.NOSERVE | F.KOD)
    assert len(r.respond(request(), 1, False, 1, RX, NOW)) + 8 <= 48


def test_kiss_without_limited_is_not_rate_kod():
    r = responder(F.KOD)
    assert [ask(r, request(), now=NOW + 0.01 * i).header.stratum for i in range(3)] == [11] * 3


def test_received_and_served_are_counted():
    r = responder()
    ask(r, request())
    ask(r, b"x")
    assert (r.counters.received, r.counters.served, r.counters.dropped_total) == (2, 1, 1)


def test_reply_header_fields_survive_a_round_trip_through_the_codec():
    h = ask(responder(), request()).header
    assert isinstance(h, NtpHeader) and h.precision == -20


# --- classify/template: the fast path split for batched IO ---------------------------------


def from_template(r, data, now=NOW):
    """What a batched caller sends for a FAST verdict, minus the transmit timestamp."""
    _, leads, middle = r.template(now)
    return (leads[(data[0] >> 3) & 7] + data[2:3] + middle + data[40:48]
            + (RX | 1).to_bytes(8, "big"))


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_classify_fast_is_accounted_once_and_the_template_gives_respond_s_reply(version):
    data = request(version=version, poll=9)
    r = responder()
    assert r.classify(data[0], len(data), 1, False, 2, NOW) == FAST
    assert (r.counters.received, r.counters.served) == (1, 1)
    assert [e.count for _, e in r.access.entries()] == [1]
    assert from_template(r, data) == responder().respond(data, 1, False, 2, RX, NOW)


@pytest.mark.parametrize("data", [
    request(trailer=struct.pack("!HH", 0x7777, 32) + bytes(28)),  # not 48 bytes
    request(mode=4), request(version=5), request(version=1, mode=0), b"",
])
def test_classify_leaves_everything_else_unchecked_and_unaccounted(data):
    r = responder()
    assert r.classify(data[0] if data else 0, len(data), 1, False, 2, NOW) == UNCHECKED
    assert (r.counters.received, list(r.access.entries())) == (0, [])
    assert r.respond_full(data, 1, False, 2, RX, NOW, UNCHECKED) == \
        responder().respond(data, 1, False, 2, RX, NOW)


@pytest.mark.parametrize("flags", [F.NOSERVE | F.KOD, F.NOTRUST, F.VERSION, F.IGNORE])
def test_classify_hands_restricted_sources_to_respond_full_already_checked(flags):
    data = request(version=3)
    r = responder(flags)
    verdict = r.classify(data[0], len(data), 1, False, 2, NOW)
    assert verdict >= 0 and verdict & flags.value == flags.value
    assert r.respond_full(data, 1, False, 2, RX, NOW, verdict) == \
        responder(flags).respond(data, 1, False, 2, RX, NOW)
    assert r.counters.received == 1
    assert [e.count for _, e in r.access.entries()] in ([], [1])  # ignore: not monitored


def test_classify_serves_over_rate_sources_unless_limited():
    for flags, expected in ((F.NONE, FAST), (F.KOD, FAST), (F.LIMITED, None)):
        r = responder(flags)
        verdicts = [r.classify(0x23, 48, 1, False, 2, NOW + 0.01 * i) for i in range(3)]
        if expected is None:
            assert verdicts[0] == FAST and all(v & OVER_RATE for v in verdicts[1:])
        else:
            assert verdicts == [expected] * 3


def test_template_generation_changes_only_when_the_template_is_rebuilt():
    r = responder()
    first, leads, middle = r.template(NOW)
    assert r.template(NOW + 0.5) == (first, leads, middle)
    assert r.template(NOW + 1.5)[0] != first
    again = r.template(NOW + 1.5)[0]
    r.set_system(LocalClockDriver(stratum=3).system_vars(NOW))
    generation, leads, _ = r.template(NOW + 1.5)
    assert generation != again and leads[4][1] == 4
    assert len(leads) == 8 and all(len(lead) == 2 for lead in leads)
    assert len(middle) == REPLY_PREFIX_LEN - 2 - 1 - 8 - 8


def test_respond_and_template_share_the_rebuild():
    r = responder()
    generation = r.template(NOW)[0]
    r.respond(request(), 1, False, 2, RX, NOW + 0.2)
    assert r.template(NOW + 0.2)[0] == generation
    r.respond(request(), 1, False, 2, RX, NOW + 1.2)
    assert r.template(NOW + 1.2)[0] != generation


def test_mode_6_is_queued_for_the_control_responder_when_enabled():
    r = responder()
    r.control_enabled = True
    request_6 = bytes([0x16, 0x02, 0, 1]) + bytes(8)
    assert ask(r, request_6) is None
    assert [q[0] for q in r.take_control()] == [request_6] and r.take_control() == []


def test_mode_6_from_a_noquery_source_is_dropped_not_queued():
    r = responder(F.NOQUERY)
    r.control_enabled = True
    ask(r, bytes([0x16, 0x02, 0, 1]) + bytes(8))
    assert r.take_control() == [] and r.counters.dropped[DropReason.CONTROL_DENIED] == 1


def test_mode_6_queue_is_bounded():
    from pyntpd.proto.server import CONTROL_QUEUE_LIMIT

    r = responder()
    r.control_enabled = True
    for _ in range(CONTROL_QUEUE_LIMIT + 5):
        ask(r, bytes([0x16, 0x01, 0, 1]) + bytes(8))
    assert len(r.take_control()) == CONTROL_QUEUE_LIMIT
    assert r.counters.dropped[DropReason.RATE_LIMITED] == 5
