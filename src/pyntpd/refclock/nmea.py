"""The generic NMEA GPS driver, ntpd's type 20 (NMEA): time from a receiver's serial port.

As ntpd's refclock_nmea (driver20 page): the receiver on /dev/gpsU, 8N1 at the speed the
server line's mode bits 4-6 choose (0: 4800, 1: 9600, 2: 19200, 3: 38400, 4: 57600,
5: 115200 bps). Mode bits 0-3 choose the sentences a sample may come from: RMC (1), GGA
(2), GLL (4), ZDA (8); none set means all four. Talkers GP (GPS) and GN (any GNSS) count;
other talkers and other sentences are ignored quietly, as ntpd does.

A sentence is taken only whole: `$`, at most 80 characters, and `*HH`, the XOR of the
characters between them. A broken sentence (no checksum, a wrong one, an impossible
time or date, a receiver without fix) is dropped and counted by reason, never a sample.
GGA and GLL carry no date: the day is the one that puts the sentence nearest our receive
time, as ntpd takes it from the system clock. One sample per second at most (a receiver
sending RMC and GGA for the same second gives one).

The sample is the sentence's time minus our receive time of its end of line, plus `fudge
time2` (the receiver's delay from the second to the end of line; 0 by default, often some
hundred ms). With `fudge flag1 1` and a PPS device (/dev/gpsppsU, the Linux PPS API of
refclock.pps), the second is taken at the pulse instead (`fudge time1` its delay): the
pulse must lie within 0.5 s of where the serial time puts the second, else the serial
sample stands. `flag2` picks the clear edge, `flag3` (kernel PPS) is refused with the
reason, `flag4` blanks the position in the timecode. At each poll the last timecode goes
to clockstats, as ntpd writes it. `NmeaSession` is pure (bytes, `now` in); `SerialPort`
is the device.
"""

from __future__ import annotations

import calendar
import errno
import math
import os
import termios
from dataclasses import dataclass, field

from pyntpd.refclock.base import FLAG1, FLAG4, Event, RefclockPeer
from pyntpd.refclock.pps import Edge, EdgeSource, PpsDevice, pulse_time

PpsSource = PpsDevice | EdgeSource

PRECISION = -9  # about 2 ms: serial time
PPS_PRECISION = -20
DESCRIPTION = "NMEA GPS Clock"
DEVICE = "/dev/gps{unit}"
PPS_DEVICE = "/dev/gpspps{unit}"
MAX_LEN = 80  # characters between '$' and '*' (ntpd's NMEA_PROTO_MAXLEN)
MAX_LINE = 256  # bytes buffered without an end of line before they are thrown away
PPS_GATE = 0.5  # s: how far the pulse may be from the serial time's second
MODE_RMC, MODE_GGA, MODE_GLL, MODE_ZDA = 0x01, 0x02, 0x04, 0x08
MESSAGE_MASK = 0x0F
BAUD_SHIFT = 4
BAUD_MASK = 0x70
SPEEDS = (4800, 9600, 19200, 38400, 57600, 115200)
TALKERS = ("GP", "GN")
SENTENCE_BITS = {"RMC": MODE_RMC, "GGA": MODE_GGA, "GLL": MODE_GLL, "ZDA": MODE_ZDA}
DROP_REASONS = ("no_checksum", "bad_checksum", "too_long", "bad_format", "bad_time",
                "bad_date", "no_fix")


def checksum(body: bytes) -> int:
    value = 0
    for byte in body:
        value ^= byte
    return value


def speed(mode: int) -> int | None:
    """The line speed in bps the mode bits choose; None for the unused codes 6 and 7."""
    code = (mode & BAUD_MASK) >> BAUD_SHIFT
    return SPEEDS[code] if code < len(SPEEDS) else None


def selected(mode: int) -> int:
    bits = mode & MESSAGE_MASK
    return bits if bits else MESSAGE_MASK


@dataclass(frozen=True, slots=True)
class Fix:
    """What one sentence says: its time, and whether it carries its own date."""

    kind: str  # RMC, GGA, GLL, ZDA
    seconds_of_day: float  # hh*3600 + mm*60 + ss.fff (ss may be 60 in a leap second)
    date: tuple[int, int, int] | None  # (year, month, day), None for GGA/GLL


class BadSentence(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def split(line: bytes) -> list[str] | None:
    """The fields of a whole sentence (checksum verified), or None for one not ours to
    judge (no `$`, another talker, another sentence). Raises BadSentence."""
    line = line.strip(b"\r\n ")
    if not line.startswith(b"$"):
        raise BadSentence("bad_format")
    star = line.rfind(b"*")
    if star < 0:
        raise BadSentence("no_checksum")
    body, given = line[1:star], line[star + 1:]
    if len(body) > MAX_LEN:
        raise BadSentence("too_long")
    if len(given) != 2:
        raise BadSentence("no_checksum")
    try:
        want = int(given, 16)
        text = body.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise BadSentence("bad_format") from None
    if checksum(body) != want:
        raise BadSentence("bad_checksum")
    fields = text.split(",")
    tag = fields[0]
    if len(tag) != 5 or tag[:2] not in TALKERS or tag[2:] not in SENTENCE_BITS:
        return None
    return fields


def _time_of_day(text: str) -> float:
    """hhmmss[.f...] -> seconds of the day (a leap second's 60 allowed)."""
    if len(text) < 6 or not text[:6].isdigit():
        raise BadSentence("bad_time")
    hh, mm, ss = int(text[0:2]), int(text[2:4]), int(text[4:6])
    frac = 0.0
    if len(text) > 6:
        if text[6] != "." or not text[7:].isdigit():
            raise BadSentence("bad_time")
        frac = float("0" + text[6:]) if len(text) > 7 else 0.0
    if hh > 23 or mm > 59 or ss > 60:
        raise BadSentence("bad_time")
    return hh * 3600 + mm * 60 + ss + frac


def _date(year: int, month: int, day: int) -> tuple[int, int, int]:
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise BadSentence("bad_date")
    return year, month, day


def _field(fields: list[str], index: int) -> str:
    if index >= len(fields):
        raise BadSentence("bad_format")
    return fields[index]


def decode(fields: list[str]) -> Fix:
    """The time a (checksummed, selected-talker) sentence states; BadSentence if it has
    none to give."""
    kind = fields[0][2:]
    if kind == "RMC":  # RMC,time,status,lat,N,lon,E,speed,course,ddmmyy,...
        if _field(fields, 2) != "A":
            raise BadSentence("no_fix")
        tod = _time_of_day(_field(fields, 1))
        ddmmyy = _field(fields, 9)
        if len(ddmmyy) != 6 or not ddmmyy.isdigit():
            raise BadSentence("bad_date")
        yy = int(ddmmyy[4:6])
        # a two-digit year: the receiver's era is 1980..2079, as ntpd unfolds it
        date = _date(2000 + yy if yy < 80 else 1900 + yy, int(ddmmyy[2:4]), int(ddmmyy[0:2]))
        return Fix(kind, tod, date)
    if kind == "GGA":  # GGA,time,lat,N,lon,E,quality,...
        quality = _field(fields, 6)
        if not quality.isdigit() or int(quality) == 0:
            raise BadSentence("no_fix")
        return Fix(kind, _time_of_day(_field(fields, 1)), None)
    if kind == "GLL":  # GLL,lat,N,lon,E,time,status[,mode]
        if _field(fields, 6) != "A":
            raise BadSentence("no_fix")
        return Fix(kind, _time_of_day(_field(fields, 5)), None)
    # ZDA,time,dd,mm,yyyy,zone hours,zone minutes
    tod = _time_of_day(_field(fields, 1))
    dd, mm, yyyy = _field(fields, 2), _field(fields, 3), _field(fields, 4)
    if not (dd.isdigit() and mm.isdigit() and yyyy.isdigit() and len(yyyy) == 4):
        raise BadSentence("bad_date")
    return Fix(kind, tod, _date(int(yyyy), int(mm), int(dd)))


def reference_time(fix: Fix, receive: float) -> float:
    """The Unix time the sentence states; a dateless one on the day nearest `receive`."""
    if fix.date is not None:
        midnight = calendar.timegm((*fix.date, 0, 0, 0))
        return midnight + fix.seconds_of_day
    midnight = math.floor(receive / 86400.0) * 86400.0
    candidates = (midnight - 86400.0, midnight, midnight + 86400.0)
    return min((m + fix.seconds_of_day for m in candidates), key=lambda t: abs(t - receive))


def obscure(line: str) -> str:
    """flag4: the timecode without the receiver's position (ntpd blanks it too)."""
    fields = line.split(",")
    kind = fields[0][-3:]
    spans = {"RMC": range(3, 7), "GGA": range(2, 6), "GLL": range(1, 5)}.get(kind, range(0))
    for i in spans:
        if i < len(fields):
            fields[i] = "_" * len(fields[i])
    return ",".join(fields)


@dataclass
class NmeaSession:
    """Unit U's sentences -> the peer's readings. Pure: bytes and receive times in."""

    peer: RefclockPeer
    mode: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    last_second: int | None = None
    pps_edge: Edge | None = None  # the newest pulse (its local time), if PPS is used
    # ntpd's NMEA tallies (clockstats under mode bit 16 in ntpd; here in READCLOCK)
    total: int = 0
    accepted: int = 0
    ignored: int = 0
    duplicate: int = 0
    pps_used: int = 0

    def feed(self, data: bytes, now: float) -> None:
        """Bytes from the port, their arrival time `now`: every whole line is judged."""
        self.buffer += data
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self.buffer[:end + 1])
            del self.buffer[:end + 1]
            if line.strip():
                self.sentence(line, now)
        if len(self.buffer) > MAX_LINE:  # a line that never ends: noise on the wire
            self.buffer.clear()
            self._bad("too_long")

    def sentence(self, line: bytes, receive: float) -> None:
        self.total += 1
        try:
            fields = split(line)
            if fields is None or not selected(self.mode) & SENTENCE_BITS[fields[0][2:]]:
                self.ignored += 1
                return
            fix = decode(fields)
        except BadSentence as bad:
            self._bad(bad.reason)
            return
        text = line.decode("ascii", "replace").strip()
        self.peer.timecode = obscure(text) if self.peer.fudge.flag(FLAG4) else text
        reference = reference_time(fix, receive)
        second = math.floor(reference)
        if second == self.last_second:
            self.duplicate += 1  # another sentence for a second already taken
            return
        self.last_second = second
        self.accepted += 1
        offset = reference - receive + self.peer.fudge.time2
        precision = PRECISION
        if self.pps_edge is not None and self.peer.fudge.flag(FLAG1):
            # the pulse at the second the sentence names, where the serial time puts it;
            # whole seconds apart from the fraction: a float Unix time has 0.2 us steps
            edge = self.pps_edge
            pps_offset = (second - edge.sec) - edge.nsec * 1e-9 + self.peer.fudge.time1
            if abs(pps_offset - offset) < PPS_GATE:
                offset, precision = pps_offset, PPS_PRECISION
                self.pps_used += 1
        self.peer.precision = precision
        self.peer.add(offset, receive, reference)

    def _bad(self, reason: str) -> None:
        self.peer.drop(reason)
        self.peer.report(Event.BADREPLY if reason != "no_fix" else Event.BADTIME)


class SerialPort:
    """/dev/gpsU opened as ntpd opens it: non-blocking, no controlling tty, raw 8N1 at
    the chosen speed. Opening is retried every second until it works."""

    def __init__(self, path: str, bps: int) -> None:
        self.path = path
        self.bps = bps
        self.fd: int | None = None
        self.error: str | None = None
        self.persistent = False  # opened as root before -u: kept across reloads

    def open(self) -> bool:
        if self.fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            self.error = f"{self.path}: {exc.strerror or exc}"
            return False
        try:
            attrs = termios.tcgetattr(fd)
            rate = getattr(termios, f"B{self.bps}")
            attrs[0] = termios.IGNBRK | termios.IGNPAR  # iflag: no translation of CR/LF
            attrs[1] = 0  # oflag
            attrs[2] = termios.CS8 | termios.CLOCAL | termios.CREAD  # 8N1, no modem lines
            attrs[3] = 0  # lflag: raw; we split the lines ourselves
            attrs[4] = attrs[5] = rate
            attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 1, 0
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except (termios.error, OSError) as exc:
            os.close(fd)
            self.error = f"{self.path}: not a serial port ({exc})"
            return False
        self.fd, self.error = fd, None
        return True

    def read(self) -> bytes | None:
        """What is waiting; b"" for nothing yet, None when the port is gone (closed)."""
        if self.fd is None:
            return None
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EINTR:
                return b""
            data = b""
            self.error = f"{self.path}: {exc.strerror or exc}"
            self.close(final=True)
            return None
        if not data:  # the other end hung up (a pty's master closed)
            self.close(final=True)
            return None
        return data

    def close(self, final: bool = False) -> None:
        if self.persistent and not final:
            return
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass
class NmeaDriver:
    """Type 20 for one unit: the session on its serial port (and PPS device, if any)."""

    session: NmeaSession
    port: SerialPort
    pps: PpsSource | None = None

    @property
    def peer(self) -> RefclockPeer:
        return self.session.peer

    @property
    def peers(self) -> list[RefclockPeer]:
        return [self.session.peer]

    def fileno(self) -> int | None:
        return self.port.fd

    def timer(self, now: float) -> None:
        """Once a second: (re)open the port if it is not open."""
        if self.port.fd is None and not self.port.open():
            self.peer.drop("no_device")

    def readable(self, now: float) -> None:
        """Data on the port; `now` stamps every line that ends in it."""
        data = self.port.read()
        if data is None:
            return  # closed: reopened by the timer
        if self.pps is not None and self.peer.fudge.flag(FLAG1):
            edge = self.pps.fetch()
            usable = edge is not None and edge.sequence and pulse_time(edge) is not None
            self.session.pps_edge = edge if usable else None
        self.session.feed(data, now)

    def poll(self, peer: RefclockPeer) -> str | None:
        """At the poll: the event, and the last timecode for clockstats (as ntpd)."""
        if self.peer.readings:
            self.peer.report(Event.NOMINAL)
        elif self.port.fd is None:
            self.peer.report(Event.FAULT)
        return self.peer.timecode or None

    def close(self) -> None:
        self.port.close()
        if self.pps is not None:
            self.pps.close()
