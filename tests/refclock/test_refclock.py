"""The reference clock core and drivers against ntpd 4.2.8's documented behaviour
(docs/refclocks.md): ntp.conf lines taken unchanged, the median filter, the SHM segment's
checks, the GPSD JSON session's records and modes, the reconnect back-off, READCLOCK."""

from __future__ import annotations

import ctypes
import itertools
import json
import random

import pytest

from pyntpd.config import parse_text
from pyntpd.proto.control import ControlResponder, ControlSnapshot, Opcode, decode
from pyntpd.proto.control_client import request
from pyntpd.proto.source import SourceSpec
from pyntpd.refclock import gpsd, shm
from pyntpd.refclock.base import FLAG1, FLAG2, Event, Fudge, RefclockPeer, median_filter
from pyntpd.sync.engine import SyncConfig, SyncEngine
from pyntpd.types import Leap

NOW = 1_800_000_000.0


def peer(clock_type: int = 28, unit: int = 0, fudge: Fudge | None = None) -> RefclockPeer:
    spec = SourceSpec(address=f"127.127.{clock_type}.{unit}", port=0, minpoll=4, maxpoll=4)
    return RefclockPeer(clock_type, unit, f"SHM({unit})", b"SHM\0", "test", spec,
                        fudge or Fudge(), precision=-20, sys_precision=-22)


# --- ntp.conf ------------------------------------------------------------------------------


def test_shm_and_gpsd_lines_are_taken_in_ntpds_syntax():
    result = parse_text(
        "server 127.127.28.0 minpoll 4 maxpoll 4 prefer\n"
        "fudge 127.127.28.0 time1 0.142 time2 30 refid GPS stratum 1 flag1 1 flag4 1\n"
        "server 127.127.46.128 mode 1 noselect\n"
        "fudge 127.127.46.128 time1 0.0015\n")
    assert not result.diagnostics
    shm_clock, gpsd_clock = result.config.refclocks
    assert (shm_clock.name, shm_clock.minpoll, shm_clock.prefer) == ("SHM(0)", 4, True)
    assert (shm_clock.time1, shm_clock.time2, shm_clock.refid, shm_clock.stratum,
            shm_clock.flags) == (0.142, 30.0, "GPS", 1, FLAG1 | 8)
    assert (gpsd_clock.name, gpsd_clock.mode, gpsd_clock.noselect,
            gpsd_clock.time1) == ("GPSD_JSON(128)", 1, True, 0.0015)


def test_a_driver_pyntpd_does_not_build_is_ignored_with_the_alternative_named():
    result = parse_text("server 127.127.4.0\nfudge 127.127.4.0 time1 0.1\n")
    [warning] = result.diagnostics
    assert "refclock type 4 is not supported; line ignored" in warning.message
    assert "127.127.28.u" in str(warning) and "127.127.46.u" in str(warning)
    assert result.config.refclocks == ()


def test_a_fudge_flag_set_to_zero_clears_it():
    result = parse_text("server 127.127.28.1\nfudge 127.127.28.1 flag4 1\n"
                        "fudge 127.127.28.1 flag4 0 flag2 1\n")
    assert result.config.refclocks[0].flags == FLAG2


# --- the refclock core --------------------------------------------------------------------


def test_median_filter_drops_the_readings_furthest_from_the_median():
    offsets = [0.001, 0.0011, 0.0009, 0.001, 0.0012, 0.5, -0.4, 0.001, 0.0010, 0.0008]
    mean, jitter, kept = median_filter(offsets)
    assert kept == 6
    assert abs(mean - 0.001) < 1e-4
    assert jitter < 1e-4


def test_a_poll_turns_the_readings_into_one_stratum_0_sample_with_honest_dispersion():
    p = peer(fudge=Fudge(refid=b"GPS\0"))
    for k in range(16):
        p.add(0.25 + (k % 2) * 1e-6, NOW + k, NOW + k + 0.25)
    sample = p.take(NOW + 16)
    assert sample is not None
    assert abs(sample.offset - 0.2500005) < 1e-6
    assert (sample.delay, sample.stratum, sample.refid) == (0.0, 0, b"GPS\0")
    # the device's precision, the system's, and at least the system's as jitter
    assert sample.dispersion == pytest.approx(2.0**-20 + 2 * 2.0**-22, rel=0.2)
    assert p.reach == 1 and p.polls == 1


def test_a_poll_without_readings_is_a_timeout_and_no_sample():
    p = peer()
    assert p.take(NOW) is None
    assert (p.noreply, p.current, p.reach) == (1, Event.TIMEOUT, 0)


def test_an_unsynchronised_device_gives_no_sample():
    p = peer()
    p.add(0.1, NOW, NOW)
    p.leap = Leap.UNSYNCHRONISED
    assert p.take(NOW + 1) is None
    assert p.drops == {"unsynchronised": 1}


def test_a_step_forgets_the_readings_taken_before_it():
    p = peer()
    p.add(0.1, NOW, NOW)
    p.clock_stepped(0.1)
    assert p.take(NOW + 1) is None


def test_a_stratum_0_system_peer_makes_us_stratum_1_with_its_code_as_refid():
    engine = SyncEngine(SyncConfig(discipline=False), NOW)
    p = peer(fudge=Fudge(refid=b"GPS\0"))
    engine.add_source(p, p.spec)
    result = None
    for k in range(40):
        for s in range(16):
            t = NOW + k * 16 + s
            p.add(0.001, t, t)
        sample = p.take(NOW + (k + 1) * 16)
        assert sample is not None
        engine.on_sample(p, sample)
        result = engine.update(NOW + (k + 1) * 16)
    assert result is not None and result.system_peer is p
    assert (result.system.stratum, result.system.refid) == (1, b"GPS\0")


# --- SHM ----------------------------------------------------------------------------------


class FakeSegment(shm.SegmentIO):
    def __init__(self, *queries: shm.Query) -> None:
        self.queries = list(queries)
        self.attached = True

    def query(self) -> shm.Query:
        return self.queries.pop(0) if self.queries else shm.Query(shm.Status.NOT_READY)


def record(clock: float, receive: float, *, mode: int = 1, leap: int = 0,
           precision: int = -20) -> shm.ShmTime:
    """Times given as seconds after NOW: kept to the nanosecond."""
    r = shm.ShmTime()
    r.mode, r.leap, r.precision, r.valid = mode, leap, precision, 1
    for prefix, value in (("clock", clock), ("receive", receive)):
        ns = int(NOW) * 1_000_000_000 + round(value * 1e9)
        sec, rest = divmod(ns, 1_000_000_000)
        setattr(r, f"{prefix}TimeStampSec", sec)
        setattr(r, f"{prefix}TimeStampUSec", rest // 1000)
        setattr(r, f"{prefix}TimeStampNSec", rest)
    return r


def shm_driver(*queries: shm.Query, fudge: Fudge | None = None) -> shm.ShmDriver:
    return shm.ShmDriver(peer(fudge=fudge), FakeSegment(*queries))


def test_shm_reading_is_reference_minus_receive_time_in_nanoseconds_plus_time1():
    d = shm_driver(shm.Query(shm.Status.OK, record(0.123456789, 0)),
                   fudge=Fudge(time1=0.001))
    d.timer(NOW + 0.5)
    [reading] = d.peer.readings
    assert reading.offset == pytest.approx(0.124456789, abs=1e-9)
    assert d.good == 1 and d.peer.precision == -20


def test_shm_uses_microseconds_when_the_nanoseconds_are_not_their_truncation():
    r = record(0.5, 0)
    r.clockTimeStampNSec = 123  # stale: not 500000xxx
    d = shm_driver(shm.Query(shm.Status.OK, r))
    d.timer(NOW + 0.5)
    assert d.peer.readings[0].offset == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize("receive_age", [6.0, -2.0])
def test_shm_refuses_a_receive_time_older_than_5_s_or_in_the_future(receive_age):
    d = shm_driver(shm.Query(shm.Status.OK, record(0, -receive_age)))
    d.timer(NOW)
    assert (d.peer.readings, d.peer.drops, d.bad) == ([], {"stale": 1}, 1)


def test_shm_refuses_a_reference_4_hours_off_unless_time2_or_flag1_say_otherwise():
    far = record(5 * 3600, 0)
    d = shm_driver(shm.Query(shm.Status.OK, far))
    d.timer(NOW)
    assert d.peer.drops == {"difference_limit": 1}
    d = shm_driver(shm.Query(shm.Status.OK, record(2, 0)), fudge=Fudge(time2=1.0))
    d.timer(NOW)
    assert d.peer.drops == {"difference_limit": 1}
    d = shm_driver(shm.Query(shm.Status.OK, far), fudge=Fudge(flags=FLAG1))
    d.timer(NOW)
    assert len(d.peer.readings) == 1


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("clockTimeStampUSec", 1_000_000, "bad_fraction"),
    ("receiveTimeStampUSec", -1, "bad_fraction"),
    ("leap", 7, "bad_values"),
    ("precision", 5, "bad_values"),
])
def test_shm_drops_impossible_segment_values_by_reason(field, value, reason):
    r = record(0, 0)
    setattr(r, field, value)
    d = shm_driver(shm.Query(shm.Status.OK, r))
    d.timer(NOW)
    assert (d.peer.readings, d.peer.drops) == ([], {reason: 1})


def test_shm_counts_clashes_and_bad_modes_and_reports_the_dominant_one_at_the_poll():
    d = shm_driver(shm.Query(shm.Status.CLASH), shm.Query(shm.Status.CLASH),
                   shm.Query(shm.Status.BAD_MODE))
    for k in range(3):
        d.timer(NOW + k)
    assert d.peer.drops == {"clash": 2, "bad_mode": 1}
    assert d.poll() is None
    assert d.peer.current == Event.PROP and d.peer.baddata == 1


def test_shm_flag4_writes_ticks_good_notready_bad_clash_to_clockstats():
    d = shm_driver(shm.Query(shm.Status.OK, record(0, 0)), shm.Query(shm.Status.CLASH),
                   fudge=Fudge(flags=8))
    for k in range(3):
        d.timer(NOW + k)
    assert d.poll() == "  3   1   1   0   1"
    assert (d.ticks, d.good) == (0, 0)


def test_units_0_and_1_are_owner_only_and_2_up_world_writable_unless_mode_1():
    assert [shm.world_writable(u, 0) for u in range(4)] == [False, False, True, True]
    assert not shm.world_writable(2, shm.SHM_MODE_PRIVATE)


def test_a_real_segment_is_read_with_the_count_valid_protocol_and_valid_cleared():
    key = 0x70790000 + random.randrange(0xFFFF)
    segment = shm.ShmSegment(2, 0, key=key)
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        assert segment.attached
        assert segment.perm == 0o666
        assert segment.query().status is shm.Status.NOT_READY
        address = segment._addr
        assert address is not None
        raw = shm.ShmTime.from_address(address)  # the writer's view
        assert (raw.precision, raw.nsamples) == (shm.PRECISION, shm.NSAMPLES)
        written = record(1, 0)
        ctypes.memmove(address, ctypes.addressof(written), ctypes.sizeof(shm.ShmTime))
        query = segment.query()
        assert query.status is shm.Status.OK
        assert query.record is not None and query.record.clockTimeStampSec == int(NOW + 1)
        assert raw.valid == 0
    finally:
        segment.close()
        libc.shmget.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_int)
        libc.shmctl.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
        libc.shmctl(libc.shmget(key, 0, 0), shm.IPC_RMID, None)


# --- GPSD JSON ----------------------------------------------------------------------------


def line(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\r\n"


def iso(t: float) -> str:
    return gpsd._iso(round(t * 1e9))


VERSION = line(**{"class": "VERSION", "proto_major": 3, "proto_minor": 14})


def session(mode: int = 0, fudge: Fudge | None = None, pps: bool = False) -> gpsd.GpsdSession:
    primary = peer(46, 0, fudge)
    secondary = peer(46, 128) if pps else None
    return gpsd.GpsdSession(primary, secondary, device=None, mode=mode)


def _split(after: float) -> tuple[int, int]:
    """Seconds after NOW as (sec, nsec), to the nanosecond."""
    ns = int(NOW) * 1_000_000_000 + round(after * 1e9)
    return divmod(ns, 1_000_000_000)


def toff(real: float, clock: float) -> bytes:
    """A TOFF record; times in seconds after NOW."""
    (rs, rn), (cs, cn) = _split(real), _split(clock)
    return line(**{"class": "TOFF", "real_sec": rs, "real_nsec": rn, "clock_sec": cs,
                   "clock_nsec": cn})


def pulse(clock: float, real: float, precision: int = -20) -> bytes:
    """A PPS record; times in seconds after NOW."""
    (rs, rn), (cs, cn) = _split(real), _split(clock)
    return line(**{"class": "PPS", "real_sec": rs, "real_nsec": rn, "clock_sec": cs,
                   "clock_nsec": cn, "precision": precision})


def test_gpsd_version_is_answered_with_the_watch_request():
    s = session()
    assert s.feed(VERSION, NOW) == [b'?WATCH={"enable":true,"json":true,"pps":true};\r\n']
    assert gpsd.watch_request("/dev/gps0").startswith(b'?WATCH={"device":"/dev/gps0",')


def test_gpsd_tpv_in_a_fix_is_a_reading_against_our_receive_time_minus_time2():
    s = session(fudge=Fudge(time2=0.1))
    s.feed(line(**{"class": "TPV", "mode": 3, "time": iso(NOW + 2.0), "ept": 0.005}), NOW)
    [reading] = s.peer.readings
    assert reading.offset == pytest.approx(2.1, abs=1e-6)
    assert s.tallies["sti_used"] == 1


def test_gpsd_tpv_without_a_fix_is_dropped_and_counted():
    s = session()
    s.feed(line(**{"class": "TPV", "mode": 1, "time": iso(NOW)}), NOW)
    assert (s.peer.readings, s.peer.drops, s.tallies["nosync"]) == ([], {"no_fix": 1}, 1)


def test_gpsd_toff_gives_gpsds_own_receive_time_and_replaces_tpv():
    s = session()
    s.feed(toff(1, 0.5), NOW + 0.6)
    s.feed(line(**{"class": "TPV", "mode": 3, "time": iso(NOW + 1)}), NOW + 0.7)
    [reading] = s.peer.readings  # the TPV gave none once TOFF was seen
    assert reading.offset == pytest.approx(0.5, abs=1e-9)


def test_gpsd_strict_mode_takes_stis_second_at_the_pulses_local_time():
    s = session(mode=1, fudge=Fudge(time1=0.0001))
    s.feed(VERSION, NOW)
    s.feed(pulse(0.0003, 0), NOW + 0.01)
    assert s.peer.readings == []  # a pulse alone is no sample in strict mode
    s.feed(toff(0, 0.09), NOW + 0.2)
    [reading] = s.peer.readings
    assert reading.offset == pytest.approx(-0.0002, abs=1e-9)
    assert s.peer.precision == -20


def test_gpsd_auto_mode_falls_back_to_serial_time_when_pulses_stop():
    s = session(mode=2)
    s.feed(VERSION, NOW)
    for k in range(40):  # no pulses: the credit of 30 runs out after 30 serial times
        s.feed(toff(k, k), NOW + k + 0.1)
    assert s.fl_rawsti
    assert len(s.peer.readings) == 40 - 30 + 1


def test_gpsd_flag2_ignores_pulses_on_the_primary_unit_but_feeds_the_secondary():
    s = session(mode=1, fudge=Fudge(flags=FLAG2), pps=True)
    s.feed(VERSION, NOW)
    s.feed(pulse(0.0003, 0), NOW + 0.01)
    s.feed(toff(0, 0.09), NOW + 0.2)
    assert s.peer.readings == []
    assert s.pps_peer is not None
    [reading] = s.pps_peer.readings
    assert reading.offset == pytest.approx(-0.0003, abs=1e-9)


@pytest.mark.parametrize(("data", "reason"), [
    (b"{not json\n", "bad_json"),
    (b"[1, 2]\n", "bad_json"),
    (b'{"mode": 3}\n', "no_class"),
    (b"\xff\xfe\n", "bad_json"),
    (line(**{"class": "TPV", "mode": 3, "time": "2026-13-01T00:00:00Z"}), "bad_time"),
    (line(**{"class": "PPS", "real_sec": 1, "real_nsec": 2_000_000_000, "clock_sec": 1,
             "clock_nsec": 0}), "bad_pps"),
    (b"[" * 5000 + b"\n", "bad_json"),
])
def test_gpsd_garbage_is_a_counted_bad_reply_never_a_reading(data, reason):
    s = session()
    assert s.feed(data, NOW) == []
    assert (s.peer.readings, s.peer.drops, s.tallies["breply"]) == ([], {reason: 1}, 1)


def test_gpsd_records_split_across_reads_are_joined():
    s = session()
    data = line(**{"class": "TPV", "mode": 3, "time": iso(NOW + 1)})
    s.feed(data[:10], NOW)
    s.feed(data[10:], NOW)
    assert len(s.peer.readings) == 1


def test_reconnect_back_off_starts_at_10_s_doubles_to_10_minutes_and_resets():
    b = gpsd.Backoff()
    waits = [b.failed() for _ in range(8)]
    assert waits == [10, 20, 40, 80, 160, 320, 600, 600]
    b.reset()
    assert b.failed() == 10


def test_gpsd_driver_retries_a_gpsd_that_is_not_there_on_the_back_off_schedule():
    link = gpsd.GpsdLink(("127.0.0.1", 1))  # nothing listens on port 1
    d = gpsd.GpsdDriver(session(), link)
    failures = []
    for t in range(120):
        failed = d.failures
        d.timer(NOW + t)
        if d.failures != failed:
            failures.append(t)
    d.close()
    # the next attempt comes the back-off after a failure, and is found failed one
    # timer tick later (the non-blocking connect is checked once a second)
    gaps = [b - a for a, b in itertools.pairwise(failures)]
    assert gaps[:3] == [10 + 1, 20 + 1, 40 + 1]
    primary = d.session.peer
    assert primary is not None
    assert d.poll(primary) is None and primary.current == Event.FAULT


# --- mode 6 -------------------------------------------------------------------------------


def test_readclock_answers_a_clocks_variables_and_refuses_an_unknown_association():
    p = peer(fudge=Fudge(time1=0.142, refid=b"GPS\0", flags=8))
    p.timecode = "2026-12-06T06:07:51.250000000Z"
    snap = ControlSnapshot(clocks={5: (p.status_word(), p.clock_variables())}, peer=5)
    responder = ControlResponder(b"k" * 32)
    [reply] = responder.respond(request(Opcode.READCLOCK, 1, 0), "a", 0, NOW, snap)
    header, data = decode(reply)
    assert header.associd == 5
    text = data.decode()
    assert 'device="test"' in text and "fudgetime1=142.000" in text and "refid=GPS" in text
    [refused] = responder.respond(request(Opcode.READCLOCK, 2, 9), "a", 0, NOW, snap)
    assert decode(refused)[0].error
