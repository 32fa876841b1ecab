"""ntpd 4.2.8's statistics lines (ntp_util.c record_loop/peer/sys_stats), exactly."""

from __future__ import annotations

import math

import pytest

from pyntpd.proto.packet import DropReason
from pyntpd.proto.server import ServerCounters
from pyntpd.stats.statsformat import (
    PARSERS,
    LoopRecorder,
    LoopStats,
    PeerStats,
    StatsParseError,
    SysCounts,
    SysStats,
    mjd_seconds,
    parse_loopstats,
    parse_peerstats,
    parse_sysstats,
    peer_record,
    sys_counts,
)
from pyntpd.sync.engine import SourceStatus, SyncResult
from pyntpd.types import SystemVars, Tally

# 2026-11-26 12:34:56.789 UTC = MJD 61370, 45296.789 s past midnight
T = 1795696496.789


def test_time_is_mjd_and_seconds_past_utc_midnight_to_the_millisecond():
    assert mjd_seconds(T) == (61370, "45296.789")
    assert mjd_seconds(0.0) == (40587, "0.000")


def test_a_time_just_before_midnight_rounds_into_the_next_day_never_to_second_86400():
    midnight = 1795737600.0  # 2026-11-27 00:00:00
    assert mjd_seconds(midnight - 0.0004) == (61371, "0.000")
    assert mjd_seconds(midnight - 0.0006) == (61370, "86399.999")


def test_loopstats_line_has_ntpds_fields_and_decimals():
    line = LoopStats(T, -0.000123456789, 12.3456, 0.0000321, 0.0123456789, 6).line()
    assert line == "61370 45296.789 -0.000123457 12.346 0.000032100 0.012346 6"


def test_peerstats_line_has_ntpds_fields_and_decimals():
    line = PeerStats(T, "192.0.2.1", 0x9614, 0.0012345, 0.0254, 0.000123, 0.0000456).line()
    assert line == ("61370 45296.789 192.0.2.1 9614 0.001234500 0.025400000 0.000123000 "
                    "0.000045600")


def test_peerstats_writes_an_ipv6_address_as_ntpd_does_without_brackets():
    line = PeerStats(T, "2001:db8::1", 0x9014, 0.0, 0.0, 0.0, 0.0).line()
    assert line.split()[2:4] == ["2001:db8::1", "9014"]


def test_sysstats_line_has_the_time_since_reset_and_ten_counters():
    counts = SysCounts(received=100, processed=90, newversion=80, oldversion=10, restricted=3,
                       badlength=2, badauth=1, declined=4, limited=5, kodsent=6)
    assert SysStats(T, 3600, counts).line() == "61370 45296.789 3600 100 90 80 10 3 2 1 4 5 6"


@pytest.mark.parametrize("record", [
    LoopStats(T, 0.000001234, -4.567, 0.000000891, 0.001, 10),
    PeerStats(T, "198.51.100.7", 0x9314, -0.0501, 0.0203, 0.00401, 0.000777),
    SysStats(T, 3600, SysCounts(*range(1, 11))),
])
def test_every_line_parses_back_to_its_record(record):
    parse = {LoopStats: parse_loopstats, PeerStats: parse_peerstats,
             SysStats: parse_sysstats}[type(record)]
    assert parse(record.line()) == record


def test_lines_written_by_ntpd_parse():
    # The examples of ntpd's monopt.html.
    loop = parse_loopstats("50935 75440.031 0.000006019 13.778190 0.000351733 0.013380 6")
    assert (loop.offset, loop.frequency, loop.poll) == (0.000006019, 13.778190, 6)
    assert loop.time == pytest.approx((50935 - 40587) * 86400 + 75440.031)
    peer = parse_peerstats(
        "48773 10847.650 127.127.4.1 9714 -0.001605376 0.000000000 0.001424877 0.000958674")
    assert (peer.address, peer.status, peer.jitter) == ("127.127.4.1", 0x9714, 0.000958674)


MALFORMED = {
    "loopstats": [
        "",
        "61370 45296.789 0.1 1.0 0.1 0.1",  # a field short
        "61370 45296.789 0.1 1.0 0.1 0.1 6 7",  # a field too many
        "61370 45296.789 nan 1.0 0.1 0.1 6",
        "61370 45296.789 inf 1.0 0.1 0.1 6",
        "61370 45296.789 0x10 1.0 0.1 0.1 6",
        "61370 86401.000 0.1 1.0 0.1 0.1 6",  # past the end of the day
        "61370 -1.000 0.1 1.0 0.1 0.1 6",
        "-5 1.000 0.1 1.0 0.1 0.1 6",
        "61370.5 1.000 0.1 1.0 0.1 0.1 6",
        "61370 1.000 0.1 1.0 0.1 0.1 6.5",
        "61_370 1.000 0.1 1.0 0.1 0.1 6",
    ],
    "peerstats": [
        "61370 45296.789 192.0.2.1 zz14 0.1 0.1 0.1 0.1",
        "61370 45296.789 192.0.2.1 10000 0.1 0.1 0.1 0.1",  # more than 16 bits
        "61370 45296.789 192.0.2.1 9614 0.1 0.1 0.1",
        "61370 45296.789 192.0.2.1 9614 0.1 0.1 0.1 x",
    ],
    "sysstats": [
        "61370 45296.789 3600 1 2 3 4 5 6 7 8 9",  # 9 counters
        "61370 45296.789 3600 1 2 3 4 5 6 7 8 9 -10",
        "61370 45296.789 3600 1 2 3 4 5 6 7 8 9 1.5",
    ],
}


@pytest.mark.parametrize(("name", "line"),
                         [(name, line) for name, lines in MALFORMED.items() for line in lines])
def test_malformed_lines_are_refused(name, line):
    with pytest.raises(StatsParseError):
        PARSERS[name](line)


def test_a_value_that_is_not_finite_is_never_written():
    with pytest.raises(ValueError):
        LoopStats(T, math.nan, 0.0, 0.0, 0.0, 6).line()
    with pytest.raises(ValueError):
        PeerStats(T, "192.0.2.1", 0, math.inf, 0.0, 0.0, 0.0).line()


def test_an_address_with_a_space_is_never_written():
    with pytest.raises(ValueError):
        PeerStats(T, "a b", 0, 0.0, 0.0, 0.0, 0.0).line()


def test_the_peer_status_word_is_the_one_mode_6_reports():
    status = SourceStatus(Tally.SYSPEER, 0.001, 0.02, 0.0001, 0.0003, 0.1, 6, 8)
    record = peer_record(T, "192.0.2.1", status, reach=0o377)
    # configured + reachable (0x10 | 0x02) << 11, selection 6 (system peer) << 8
    assert record.status == 0x9600
    assert (record.offset, record.delay, record.dispersion, record.jitter) == (
        0.001, 0.02, 0.0003, 0.0001)


def test_an_unreachable_candidate_has_no_reach_bit():
    status = SourceStatus(Tally.REJECT, 0.0, 0.0, 0.0, 0.0, 1.0, 6, 0)
    assert peer_record(T, "192.0.2.1", status, reach=0).status == 0x8000


def _result(frequency: float, poll: int = 7) -> SyncResult:
    return SyncResult(actions=(), system=SystemVars(), sources={}, polls={"a": poll},
                      wakeup=None, offset=0.0001, frequency=frequency, jitter=0.00002,
                      system_peer="a")


def test_loopstats_carry_the_engine_offset_frequency_jitter_and_system_poll():
    record = LoopRecorder().record(T, _result(12.5, poll=8))
    assert (record.offset, record.frequency, record.jitter, record.poll) == (
        0.0001, 12.5, 0.00002, 8)
    assert record.wander == 0.0


def test_wander_is_ntpds_running_rms_of_frequency_changes():
    recorder = LoopRecorder()
    recorder.record(T, _result(10.0))
    assert recorder.record(T, _result(12.0)).wander == pytest.approx(math.sqrt(4.0 / 8))
    steady = [recorder.record(T, _result(12.0)).wander for _ in range(50)]
    assert steady[-1] < steady[0] < math.sqrt(0.5)


def test_responder_counters_map_onto_ntpds_sysstats_counters():
    c = ServerCounters(received=50, served=40)
    for reason, n in [(DropReason.RESTRICTED, 2), (DropReason.CONTROL_DENIED, 1),
                      (DropReason.TOO_SHORT, 3), (DropReason.BAD_EXTENSION, 1),
                      (DropReason.AUTH_REQUIRED, 4), (DropReason.RATE_LIMITED, 5),
                      (DropReason.MODE7, 6)]:
        c.dropped[reason] = n
    c.kod_sent = {b"RATE": 2, b"DENY": 1}
    assert sys_counts(c) == SysCounts(received=50, processed=40, restricted=3, badlength=4,
                                      badauth=4, declined=6, limited=5, kodsent=3)


def test_sysstats_counts_are_differences_and_never_negative():
    later = SysCounts(received=10, processed=8)
    assert later - SysCounts(received=4, processed=9) == SysCounts(received=6, processed=0)
