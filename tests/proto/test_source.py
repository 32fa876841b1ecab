"""The association's acceptance rules: every spoofing and replay case is refused."""

import itertools

import pytest

from pyntpd.proto import source
from pyntpd.proto.packet import HEADER, NtpHeader, decode, li_vn_mode
from pyntpd.proto.source import Association, SourceDrop, SourceSpec, State
from pyntpd.proto.timestamp import ntp_add, ntp_diff, seconds_to_short, unix_to_ntp

T0 = 1_800_000_000.0
SERVER_AHEAD = 0.005
ONE_WAY = 0.001


def assoc(**spec):
    counter = itertools.count(0x1111_0000_0000_0001)
    a = Association(SourceSpec("192.0.2.1", **spec), random_transmit=lambda: next(counter))
    a.start(T0)
    return a


def request(a, now=T0):
    data = a.make_request(now)
    a.sent(unix_to_ntp(now))
    return decode(data).header


def reply_to(req: NtpHeader, now=T0, *, stratum=2, leap=0, origin=None, transmit=None,
             refid=b"GPS\0", root_delay=0.01, root_disp=0.01, mode=4, trailer=b"",
             precision=-20):
    t2 = unix_to_ntp(now + ONE_WAY + SERVER_AHEAD)
    t3 = transmit if transmit is not None else ntp_add(t2, 1e-5)
    data = HEADER.pack(li_vn_mode(leap, 4, mode), stratum, req.poll, precision,
                       seconds_to_short(root_delay), seconds_to_short(root_disp), refid,
                       unix_to_ntp(now - 10), req.transmit if origin is None else origin,
                       t2, t3) + trailer
    return data, unix_to_ntp(now + 2 * ONE_WAY + 1e-5)


def test_valid_reply_gives_offset_and_delay():
    a = assoc()
    data, t4 = reply_to(request(a))
    s = a.receive(data, t4, T0 + 0.002)
    assert s is not None
    assert s.offset == pytest.approx(SERVER_AHEAD, abs=1e-6)
    assert s.delay == pytest.approx(2 * ONE_WAY, abs=1e-6)
    assert a.reach == 1 and a.stratum == 2


def test_request_transmit_is_random_not_our_clock():
    a = Association(SourceSpec("192.0.2.1"))
    a.start(T0)
    first = decode(a.make_request(T0)).header.transmit
    second = decode(a.make_request(T0 + 64)).header.transmit
    assert first != second and abs(first - unix_to_ntp(T0)) > 1 << 40


def test_the_random_transmit_timestamp_is_never_zero(monkeypatch):
    """Zero means "no timestamp": as our origin it would match a reply's empty origin."""
    draws = iter([0, 0, 0x5EED])
    monkeypatch.setattr(source.secrets, "randbits", lambda bits: next(draws))
    assert source._random_transmit() == 0x5EED


def test_request_carries_nothing_else_about_us():
    h = request(assoc())
    assert (h.mode, h.version, h.origin, h.receive, h.reference) == (3, 4, 0, 0, 0)


def test_reply_with_wrong_origin_is_bogus():
    a = assoc()
    data, t4 = reply_to(request(a), origin=12345)
    assert a.receive(data, t4, T0) is None and a.drops[SourceDrop.BOGUS_ORIGIN] == 1


def test_reply_with_zero_origin_is_refused():
    a = assoc()
    data, t4 = reply_to(request(a), origin=0)
    assert a.receive(data, t4, T0) is None and a.drops[SourceDrop.BOGUS_ORIGIN] == 1


def test_replayed_reply_is_refused():
    a = assoc()
    data, t4 = reply_to(request(a))
    assert a.receive(data, t4, T0) is not None
    assert a.receive(data, t4, T0) is None and a.drops[SourceDrop.DUPLICATE] == 1


def test_second_reply_to_the_same_request_is_refused():
    a = assoc()
    req = request(a)
    first, t4 = reply_to(req)
    second, _ = reply_to(req, transmit=unix_to_ntp(T0 + 0.5))
    assert a.receive(first, t4, T0) is not None
    assert a.receive(second, t4, T0) is None and a.drops[SourceDrop.NO_REQUEST] == 1


def test_reply_without_any_request_is_refused():
    a = assoc()
    data, t4 = reply_to(HEADER_REQ)
    assert a.receive(data, t4, T0) is None and a.drops[SourceDrop.NO_REQUEST] == 1


def test_a_zero_origin_reply_with_no_request_outstanding_is_refused():
    """CVE-2015-8138: with nothing outstanding our origin is "none", which a reply's zero
    origin must not match."""
    a = assoc()
    req = request(a)
    data, t4 = reply_to(req)
    assert a.receive(data, t4, T0) is not None  # answered: nothing outstanding any more
    forged, t4 = reply_to(req, origin=0, transmit=unix_to_ntp(T0 + 0.5))
    assert a.receive(forged, t4, T0 + 0.5) is None
    assert a.drops == {SourceDrop.NO_REQUEST: 1}


HEADER_REQ = NtpHeader(li_vn_mode(0, 4, 3), 0, 6, -20, 0, 0, b"\0" * 4, 0, 0, 0, 99)


def test_reply_to_an_older_request_is_refused():
    a = assoc()
    old = request(a)
    request(a, T0 + 64)
    data, t4 = reply_to(old)
    assert a.receive(data, t4, T0 + 64) is None and a.drops[SourceDrop.BOGUS_ORIGIN] == 1


@pytest.mark.parametrize("mode", [1, 2, 3, 5])
def test_only_server_mode_replies_are_accepted(mode):
    a = assoc()
    data, t4 = reply_to(request(a), mode=mode)
    assert a.receive(data, t4, T0) is None and a.drops[SourceDrop.NOT_SERVER_MODE] == 1


def test_malformed_reply_is_counted():
    a = assoc()
    request(a)
    assert a.receive(b"\x24" * 30, 0, T0) is None and a.drops[SourceDrop.MALFORMED] == 1


def test_signed_reply_without_a_key_is_refused():
    a = assoc()
    data, t4 = reply_to(request(a), trailer=bytes(20))
    assert a.receive(data, t4, T0) is None and a.drops[SourceDrop.AUTH] == 1


def test_crypto_nak_is_not_accepted_as_authentication():
    a = assoc()
    data, t4 = reply_to(request(a), trailer=bytes(4))
    assert a.receive(data, t4, T0) is None and a.drops[SourceDrop.AUTH] == 1


def test_unsynchronised_server_is_reachable_but_gives_no_sample():
    a = assoc()
    data, t4 = reply_to(request(a), leap=3, stratum=16)
    assert a.receive(data, t4, T0) is None
    assert a.reach == 1 and a.drops[SourceDrop.UNSYNCHRONISED] == 1


def test_excessive_root_distance_gives_no_sample():
    a = assoc()
    data, t4 = reply_to(request(a), root_disp=5.0)
    assert a.receive(data, t4, T0) is None and a.drops[SourceDrop.DISTANCE] == 1


def test_transmit_before_receive_is_refused():
    a = assoc()
    req = request(a)
    data, t4 = reply_to(req, transmit=unix_to_ntp(T0 - 100))
    assert a.receive(data, t4, T0) is None
    assert a.drops == {SourceDrop.TRANSMIT_BEFORE_RECEIVE: 1}


def test_zero_receive_timestamp_is_refused():
    a = assoc()
    data, t4 = reply_to(request(a))
    data = data[:32] + bytes(8) + data[40:]
    assert a.receive(data, t4, T0) is None and a.drops == {SourceDrop.BAD_TIMESTAMPS: 1}


def t2_of(data):
    return decode(data).header.receive


@pytest.mark.parametrize("precision", [-20, -23])
def test_transmit_before_receive_within_the_server_precision_is_noise_and_accepted(precision):
    # chronyd randomises the bits below its precision in T2 and T3: with a processing time
    # shorter than that, T3 may come out earlier than T2.
    a = assoc()
    req = request(a)
    data, _ = reply_to(req, precision=precision)
    t3 = ntp_add(t2_of(data), -0.9 * 2.0**precision)
    data, t4 = reply_to(req, transmit=t3, precision=precision)
    s = a.receive(data, t4, T0 + 0.002)
    assert s is not None and a.drops == {}
    t1, t2 = unix_to_ntp(T0), t2_of(data)
    # no processing time to take off: the delay is the whole round trip, t4 - t1
    assert s.delay == ntp_diff(t4, t1)
    assert s.offset == (ntp_diff(t2, t1) + ntp_diff(t3, t4)) / 2


def test_transmit_before_receive_beyond_the_server_precision_is_refused():
    a = assoc()
    req = request(a)
    data, _ = reply_to(req, precision=-20)
    data, t4 = reply_to(req, transmit=ntp_add(t2_of(data), -1.1 * 2.0**-20), precision=-20)
    assert a.receive(data, t4, T0) is None
    assert a.drops == {SourceDrop.TRANSMIT_BEFORE_RECEIVE: 1}


def test_rate_kiss_with_matching_origin_slows_polling():
    a = assoc(minpoll=6)
    data, t4 = reply_to(request(a), stratum=0, refid=b"RATE")
    assert a.receive(data, t4, T0) is None
    assert a.kod_poll == 7
    request(a, T0 + 1)
    assert a.next_poll >= T0 + 1 + 128


def test_rate_kiss_with_wrong_origin_is_ignored():
    a = assoc()
    data, t4 = reply_to(request(a), stratum=0, refid=b"RATE", origin=777)
    a.receive(data, t4, T0)
    assert a.kod_poll == 0 and a.drops[SourceDrop.BOGUS_ORIGIN] == 1


@pytest.mark.parametrize("code", [b"DENY", b"RSTR"])
def test_deny_kiss_with_matching_origin_stops_polling(code):
    a = assoc()
    data, t4 = reply_to(request(a), stratum=0, refid=code)
    a.receive(data, t4, T0)
    assert a.state == State.DENIED and not a.on_timer(T0 + 1e6)


@pytest.mark.parametrize("code", [b"DENY", b"RSTR"])
def test_spoofed_deny_kiss_does_not_demobilise(code):
    a = assoc()
    data, t4 = reply_to(request(a), stratum=0, refid=code, origin=0)
    a.receive(data, t4, T0)
    assert a.state == State.ACTIVE


def test_unknown_kiss_is_ignored():
    a = assoc()
    data, t4 = reply_to(request(a), stratum=0, refid=b"ABCD")
    a.receive(data, t4, T0)
    assert a.state == State.ACTIVE and a.drops[SourceDrop.KOD_OTHER] == 1


def test_reach_register_shifts_on_every_poll():
    a = assoc(minpoll=4)
    for i in range(3):
        data, t4 = reply_to(request(a, T0 + 16 * i), now=T0 + 16 * i)
        a.receive(data, t4, T0 + 16 * i)
    request(a, T0 + 48)
    assert a.reach == 0b1110


def test_reach_register_empties_after_eight_silent_polls():
    a = assoc(minpoll=4)
    data, t4 = reply_to(request(a))
    a.receive(data, t4, T0)
    for i in range(8):
        request(a, T0 + 16 * (i + 1))
    assert a.reach == 0 and not a.reachable


def test_iburst_sends_eight_requests_two_seconds_apart():
    a = assoc(iburst=True, minpoll=6)
    times = []
    now = T0
    for _ in range(9):
        times.append(now)
        request(a, now)
        now = a.next_poll
    gaps = [b - a_ for a_, b in itertools.pairwise(times)]
    assert gaps[:7] == [2.0] * 7 and gaps[7] == 64.0


def test_without_iburst_polls_at_minpoll():
    a = assoc(minpoll=5)
    request(a)
    assert a.next_poll == T0 + 32


def test_unanswered_polls_back_off_towards_maxpoll():
    a = assoc(minpoll=4, maxpoll=8)
    now = T0
    for _ in range(20):
        request(a, now)
        now = a.next_poll
    request(a, now)
    assert a.next_poll - now == 256


def test_set_poll_is_clamped_to_the_configured_range():
    a = assoc(minpoll=6, maxpoll=10)
    a.set_poll(3)
    assert a.poll == 6
    a.set_poll(15)
    assert a.poll == 10


def test_clock_step_forgets_the_outstanding_request():
    a = assoc()
    req = request(a)
    a.clock_stepped(0.0)
    data, t4 = reply_to(req)
    assert a.receive(data, t4, T0 + 30.002) is None
    assert a.drops[SourceDrop.NO_REQUEST] == 1


def test_the_register_keeps_the_last_eight_samples_newest_first():
    a = assoc()
    samples = []
    for i in range(10):
        now = T0 + 64 * i
        data, t4 = reply_to(request(a, now), now)
        samples.append(a.receive(data, t4, now + 0.002))
    assert list(a.register) == samples[:1:-1]
    assert a.register[0] is a.last_sample and len(a.register) == source.REGISTER_SIZE
