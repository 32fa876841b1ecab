"""The NMEA driver (type 20) against ntpd 4.2.8's driver20 page (docs/refclocks.md): mode
bits choose sentences and line speed, checksums are checked, time2 is the sentence's
delay, a pulse on /dev/gpsppsU takes the second, bad sentences are dropped by reason; and
the serial port itself over a pseudo-terminal pair."""

from __future__ import annotations

import calendar
import os
import select
import termios

import pytest

from pyntpd.config import parse_text
from pyntpd.proto.source import SourceSpec
from pyntpd.refclock import nmea
from pyntpd.refclock.base import FLAG1, FLAG4, Fudge, RefclockPeer
from pyntpd.refclock.pps import Edge, EdgeSource

DAY = calendar.timegm((2027, 3, 14, 0, 0, 0))


def sentence(body: str) -> bytes:
    value = 0
    for ch in body.encode():
        value ^= ch
    return f"${body}*{value:02X}\r\n".encode()


def rmc(hms: str = "123456.00", date: str = "140327", status: str = "A",
        talker: str = "GP") -> bytes:
    return sentence(f"{talker}RMC,{hms},{status},4807.038,N,01131.000,E,0.0,0.0,{date},,,A")


def gga(hms: str = "123456.00", quality: str = "1", talker: str = "GP") -> bytes:
    return sentence(f"{talker}GGA,{hms},4807.038,N,01131.000,E,{quality},08,0.9,545.4,M,"
                    "46.9,M,,")


def gll(hms: str = "123456.00", status: str = "A") -> bytes:
    return sentence(f"GPGLL,4807.038,N,01131.000,E,{hms},{status},A")


def zda(hms: str = "123456.00", date: str = "14,03,2027") -> bytes:
    return sentence(f"GPZDA,{hms},{date},00,00")


T = DAY + 12 * 3600 + 34 * 60 + 56  # what all the sentences above say


def session(mode: int = 0, fudge: Fudge | None = None) -> nmea.NmeaSession:
    spec = SourceSpec(address="127.127.20.0", port=0, minpoll=4, maxpoll=4)
    peer = RefclockPeer(20, 0, "NMEA(0)", b"GPS\0", nmea.DESCRIPTION, spec,
                        fudge or Fudge(), precision=nmea.PRECISION, sys_precision=-22)
    return nmea.NmeaSession(peer, mode)


def offsets(s: nmea.NmeaSession) -> list[float]:
    return [round(r.offset, 6) for r in s.peer.readings]  # a float Unix time: 0.2 us ulps


# --- ntp.conf ------------------------------------------------------------------------------


def test_nmea_and_pps_lines_are_taken_in_ntpds_syntax():
    result = parse_text("server 127.127.20.0 mode 17 prefer\n"
                        "fudge 127.127.20.0 time2 0.407 flag1 1 refid GPS\n"
                        "server 127.127.22.0 minpoll 4 maxpoll 4\n"
                        "fudge 127.127.22.0 flag2 1 time1 0.000002\n")
    assert not result.diagnostics
    gps, pps = result.config.refclocks
    assert (gps.name, gps.mode, gps.time2, gps.flags) == ("NMEA(0)", 17, 0.407, FLAG1)
    assert (pps.name, pps.flags, pps.time1) == ("PPS(0)", 2, 0.000002)


@pytest.mark.parametrize("clock", ["127.127.20.0", "127.127.22.1"])
def test_flag3_kernel_pps_is_refused_with_the_reason(clock):
    result = parse_text(f"server {clock}\nfudge {clock} flag3 1 flag2 1\n")
    [warning] = result.diagnostics
    assert "flag3 1" in warning.message and "kernel's PPS discipline" in warning.message
    [conf] = result.config.refclocks
    assert conf.flags == 2  # flag2 kept, flag3 not


@pytest.mark.parametrize(("mode", "bps"), [(0, 4800), (0x10, 9600), (0x21, 19200),
                                           (0x30, 38400), (0x40, 57600), (0x52, 115200),
                                           (0x60, None)])
def test_mode_bits_4_to_6_choose_the_line_speed(mode, bps):
    assert nmea.speed(mode) == bps


# --- sentences ---------------------------------------------------------------------------


def test_rmc_reading_is_sentence_time_minus_receive_time_plus_time2():
    s = session(fudge=Fudge(time2=0.4))
    s.sentence(rmc(), receive=T + 0.45)
    assert offsets(s) == [round(-0.45 + 0.4, 6)]
    assert s.peer.reference_time == T and s.peer.timecode.startswith("$GPRMC,123456.00")


def test_fractional_seconds_in_the_sentence_count():
    s = session()
    s.sentence(gga("123456.25"), receive=T + 0.5)
    assert offsets(s) == [-0.25]


@pytest.mark.parametrize("build", [gga, gll])
def test_a_dateless_sentence_takes_the_day_nearest_the_receive_time(build):
    s = session()
    s.sentence(build("235959.00"), receive=DAY + 86400 + 0.3)  # received just after midnight
    assert offsets(s) == [round(-1.3, 6)]
    assert s.peer.reference_time == DAY + 86399


def test_zda_carries_a_four_digit_year():
    s = session()
    s.sentence(zda(), receive=T + 0.2)
    assert offsets(s) == [-0.2]


@pytest.mark.parametrize(("mode", "used"), [(0, ["RMC", "GGA", "GLL", "ZDA"]),
                                            (1, ["RMC"]), (2, ["GGA"]), (4, ["GLL"]),
                                            (8, ["ZDA"]), (0x16, ["GGA", "GLL"])])
def test_mode_bits_0_to_3_choose_which_sentences_give_samples(mode, used):
    s = session(mode)
    for k, build in enumerate((rmc, gga, gll, zda)):
        s.last_second = None  # each counted on its own (one sample a second otherwise)
        s.sentence(build(), receive=T + 0.1 * (k + 1))
    kinds = ["RMC", "GGA", "GLL", "ZDA"]
    assert offsets(s) == [round(-0.1 * (kinds.index(k) + 1), 6) for k in used]
    assert s.ignored == 4 - len(used)


def test_gn_talker_counts_other_talkers_are_ignored_quietly():
    s = session()
    s.sentence(rmc(talker="GN"), receive=T + 0.2)
    s.sentence(rmc("123457.00", talker="GL"), receive=T + 1.2)
    assert offsets(s) == [-0.2]
    assert s.ignored == 1 and s.peer.drops == {}


def test_one_sample_per_second_however_many_sentences_name_it():
    s = session()
    s.sentence(rmc(), receive=T + 0.2)
    s.sentence(gga(), receive=T + 0.3)
    assert offsets(s) == [-0.2] and s.duplicate == 1


@pytest.mark.parametrize(("line", "reason"), [
    (rmc()[:-5] + b"*00\r\n", "bad_checksum"),
    (b"$GPRMC,123456.00,A,4807.038,N,01131.000,E,0.0,0.0,140327,,,A\r\n", "no_checksum"),
    (sentence("GPRMC," + "1" * 90), "too_long"),
    (b"GPRMC,123456*00\r\n", "bad_format"),
    (rmc("256000.00"), "bad_time"),
    (rmc("12a456.00"), "bad_time"),
    (rmc(date="310227"), "bad_date"),
    (zda(date="14,13,2027"), "bad_date"),
    (rmc(status="V"), "no_fix"),
    (gga(quality="0"), "no_fix"),
    (gll(status="V"), "no_fix"),
    (sentence("GPRMC,123456.00,A"), "bad_format"),
    (b"$GPRMC,\xff\xfe*41\r\n", "bad_format"),
])
def test_bad_sentences_are_dropped_and_counted_by_reason(line, reason):
    s = session()
    s.feed(line, T + 0.2)
    assert s.peer.readings == []
    assert s.peer.drops == {reason: 1}
    assert s.peer.badformat + s.peer.baddata == 1


def test_a_line_that_never_ends_is_thrown_away_and_counted():
    s = session()
    s.feed(b"$" + b"x" * 300, T)
    assert s.buffer == bytearray() and s.peer.drops == {"too_long": 1}


def test_sentences_split_across_reads_are_joined():
    s = session()
    line = rmc()
    s.feed(line[:20], T + 0.1)
    s.feed(line[20:], T + 0.2)
    assert offsets(s) == [-0.2]


def test_flag4_blanks_the_position_in_the_timecode():
    s = session(fudge=Fudge(flags=FLAG4))
    s.sentence(rmc(), receive=T + 0.2)
    assert "4807.038" not in s.peer.timecode and "01131.000" not in s.peer.timecode
    assert s.peer.timecode.startswith("$GPRMC,123456.00,A,")


def test_with_flag1_the_pulse_takes_the_second_and_time1_is_its_delay():
    s = session(fudge=Fudge(time1=0.000003, time2=0.3, flags=FLAG1))
    s.pps_edge = Edge(7, T - 1, 999_998_800, 0)  # our clock 1.2 us fast at the pulse
    s.sentence(rmc(), receive=T + 0.35)
    assert [r.offset for r in s.peer.readings] == [pytest.approx(1.2e-6 + 3e-6, abs=1e-12)]
    assert s.peer.precision == nmea.PPS_PRECISION and s.pps_used == 1


def test_a_pulse_far_from_where_the_serial_time_puts_the_second_is_not_used():
    s = session(fudge=Fudge(time2=0.3, flags=FLAG1))
    s.pps_edge = Edge(7, T - 1, 300_000_000, 0)
    s.sentence(rmc(), receive=T + 0.35)
    assert offsets(s) == [-0.05] and s.pps_used == 0
    assert s.peer.precision == nmea.PRECISION


def test_without_flag1_a_pulse_is_not_used():
    s = session(fudge=Fudge(time2=0.3))
    s.pps_edge = Edge(7, T - 1, 998_800_000, 0)
    s.sentence(rmc(), receive=T + 0.35)
    assert offsets(s) == [-0.05]


# --- the serial port over a pseudo-terminal --------------------------------------------------


@pytest.fixture
def pty():
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def test_the_port_is_opened_raw_8n1_at_the_modes_speed(pty):
    _, path = pty
    port = nmea.SerialPort(path, nmea.speed(0x10) or 0)
    assert port.open()
    try:
        assert port.fd is not None
        iflag, _, cflag, lflag, ispeed, ospeed, _ = termios.tcgetattr(port.fd)
        assert (ispeed, ospeed) == (termios.B9600, termios.B9600)
        assert cflag & termios.CSIZE == termios.CS8 and not cflag & termios.PARENB
        assert lflag & termios.ICANON == 0 and iflag & termios.ICRNL == 0
    finally:
        port.close()


def test_a_sentence_written_on_the_pty_gives_its_offset_at_the_instant_it_is_read(pty):
    master, path = pty
    s = session(fudge=Fudge(time2=0.1))
    driver = nmea.NmeaDriver(s, nmea.SerialPort(path, 4800))
    driver.timer(T)
    assert driver.fileno() is not None
    os.write(master, rmc() + b"garbage\r\n" + gga("123457.00"))
    ready, _, _ = select.select([driver.fileno()], [], [], 5)
    assert ready
    driver.readable(T + 0.25)  # the instant the daemon's loop stamps the lines with
    assert offsets(s) == [round(-0.25 + 0.1, 6), round(1 - 0.25 + 0.1, 6)]
    assert s.peer.drops == {"bad_format": 1}
    assert driver.poll(s.peer) == s.peer.timecode
    driver.close()


def test_a_missing_port_is_retried_and_counted_not_fatal(tmp_path):
    driver = nmea.NmeaDriver(session(), nmea.SerialPort(str(tmp_path / "gps0"), 4800))
    driver.timer(T)
    driver.timer(T + 1)
    assert driver.peer.drops == {"no_device": 2}
    assert "No such file" in (driver.port.error or "")


def test_the_port_closed_by_the_other_end_is_reopened_by_the_timer(pty):
    master, path = pty
    driver = nmea.NmeaDriver(session(), nmea.SerialPort(path, 4800))
    driver.timer(T)
    os.write(master, rmc())
    select.select([driver.fileno()], [], [], 5)
    driver.readable(T + 0.2)
    assert driver.fileno() is not None
    driver.close()
    driver.timer(T + 1)
    assert driver.fileno() is not None
    driver.close()


def test_the_metrics_know_every_reason_the_driver_drops_for():
    from pyntpd.refclock import drop_reasons

    assert {*nmea.DROP_REASONS, "no_device"} <= set(drop_reasons(20))


class FixedPulses(EdgeSource):
    def __init__(self, edge: Edge) -> None:
        self.edge = edge

    def fetch(self) -> Edge | None:
        return self.edge


def test_the_driver_reads_the_pulse_from_the_pps_device_when_the_sentence_arrives(pty):
    master, path = pty
    s = session(fudge=Fudge(time2=0.3, flags=FLAG1))
    driver = nmea.NmeaDriver(s, nmea.SerialPort(path, 4800),
                             FixedPulses(Edge(41, T, 2_500, 0)))  # 2.5 us late: we are slow
    driver.timer(T)
    os.write(master, rmc())
    select.select([driver.fileno()], [], [], 5)
    driver.readable(T + 0.31)
    assert [r.offset for r in s.peer.readings] == [pytest.approx(-2.5e-6, abs=1e-12)]
    assert s.pps_used == 1
    driver.close()
