"""The GPSD JSON driver, ntpd's type 46 (GPSD_JSON): time from gpsd's JSON socket.

As ntpd's refclock_gpsdjson: a TCP connection to gpsd on 127.0.0.1:2947; on gpsd's VERSION
the driver asks `?WATCH={"enable":true,"json":true,"pps":true}` (with `"device":"/dev/gpsU"`
when that link exists, as ntpd always sends it; without one, every device gpsd has). It
reads VERSION, WATCH, TPV, TOFF and PPS records; anything else is ignored, anything that is
not a JSON object with a class is a bad reply, counted, never a sample.

Serial time information (STI) comes from TOFF records (gpsd's own receive timestamp of the
sentence: no transport delay) once gpsd speaks protocol 3.10 or sends one, else from TPV
with our receive time standing in. TPV still says whether there is a fix: mode < 2 drops
what is pending. PPS records give the pulse's local time (`clock_*`) and gpsd's second for
it (`real_*`). The server line's mode word picks what a sample is (ntpd's MODE_OP_*):
0 the STI alone (`fudge time2` its delay), 1 STI's second at the PPS pulse's local time
(`fudge time1` the pulse's delay; nothing without a pulse), 2 auto: pulses while they come
(a credit of 3 a good pulse, a debit of 1 a missing one, up to 60), STI alone when they stop.
`fudge flag2 1` ignores PPS on the primary unit. Unit U + 128 is the secondary channel:
PPS samples only (its own `time1`), fed by the primary unit's connection.

The connection (ntpd's tick-over): gpsd silent for 10 s closes it (a `?VERSION;` at 4 s to
go asks for a sign of life); a failed or lost connection is tried again after 10 s, then
with an exponential back-off up to 10 minutes (docs/refclocks.md), reset once gpsd answers.
`fudge flag4 1` writes the tallies (recv breply nosync sti_recv sti_used pps_recv pps_used)
to clockstats at each poll. `GpsdSession` is pure (bytes and `now` in, requests out);
`GpsdLink` is the non-blocking socket.
"""

from __future__ import annotations

import datetime
import errno
import json
import math
import os
import re
import socket
from dataclasses import dataclass, field

from pyntpd.refclock.base import FLAG2, FLAG4, Event, RefclockPeer

GPSD_ADDRESS = ("127.0.0.1", 2947)
PRECISION = -9  # about 2 ms: serial time
PPS_PRECISION = -20  # about 1 us
DESCRIPTION = "GPSD JSON client clock"
MAX_PDU_LEN = 1600  # longer lines are cut (and then fail to parse: a bad reply)
TICKOVER_LOW = 10  # s
BACKOFF_MAX = 600  # s
LIVECHECK = 4  # s before the timeout: ask ?VERSION
PPS_MAXCOUNT, PPS_INCCOUNT, PPS_DECCOUNT = 60, 3, 1
PPS2_MAXCOUNT = 10
MODE_STI, MODE_STRICT, MODE_AUTO = 0, 1, 2
VERSION_REQUEST = b"?VERSION;\r\n"
_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?Z")


def watch_request(device: str | None) -> bytes:
    body: dict[str, object] = {}
    if device is not None:
        body["device"] = device
    body.update(enable=True, json=True, pps=True)
    return b"?WATCH=" + json.dumps(body, separators=(",", ":")).encode() + b";\r\n"


def parse_iso(text: str) -> int | None:
    """gpsd's ISO 8601 UTC time -> Unix nanoseconds; None unless exactly that form."""
    m = _ISO.fullmatch(text)
    if m is None:
        return None
    try:
        t = datetime.datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]),
                              int(m[6]), tzinfo=datetime.UTC)
    except ValueError:
        return None
    frac = int((m[7] or "0").ljust(9, "0"))
    return int(t.timestamp()) * 1_000_000_000 + frac


def _clamped_precision(raw: int) -> int:
    return max(-32, min(raw, 0))


def _int(record: dict[str, object], name: str) -> int | None:
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _binary_time(record: dict[str, object], sec: str, frac: str, scale: int) -> int | None:
    s, f = _int(record, sec), _int(record, frac)
    if s is None or f is None or not 0 <= f * scale < 1_000_000_000 or s < 0:
        return None
    return s * 1_000_000_000 + f * scale


@dataclass
class GpsdSession:
    """One gpsd connection's protocol state for unit U (and its secondary U + 128)."""

    peer: RefclockPeer | None  # the primary unit, 127.127.46.U
    pps_peer: RefclockPeer | None = None  # the secondary, 127.127.46.(U+128)
    device: str | None = None
    mode: int = MODE_STI
    buffer: bytearray = field(default_factory=bytearray)
    proto: tuple[int, int] = (0, 0)
    fl_vers: bool = False
    fl_watch: bool = False
    fl_nosync: bool = False
    fl_sti: bool = False
    fl_pps: bool = False
    fl_pps2: bool = False
    fl_rawsti: bool = False
    pf_toff: bool = False
    sti_stamp: int = 0  # ns
    sti_recvt: int = 0
    sti_local: float = 0.0
    sti_prec: int = PRECISION
    pps_stamp: int = 0
    pps_recvt: int = 0
    pps_local: float = 0.0
    pps_stamp2: int = 0
    pps_recvt2: int = 0
    pps_prec: int = PPS_PRECISION
    ppscount: int = 0
    ppscount2: int = 0
    tallies: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("recv", "breply", "nosync", "sti_recv", "sti_used", "pps_recv", "pps_used"), 0))

    def __post_init__(self) -> None:
        self.set_mode(self.mode)

    def set_mode(self, mode: int) -> None:
        """The server line's mode word (bits 0-1); 3 is no mode: serial time, as ntpd."""
        self.mode = mode if mode in (MODE_STI, MODE_STRICT, MODE_AUTO) else MODE_STI
        self.ppscount = PPS_MAXCOUNT // 2 if self.mode == MODE_AUTO else 0
        self.fl_rawsti = False

    # --- the connection's life -------------------------------------------------------

    def connected(self) -> None:
        self.buffer.clear()
        self.fl_vers = self.fl_watch = self.fl_sti = self.fl_pps = self.fl_pps2 = False

    def feed(self, data: bytes, now: float) -> list[bytes]:
        """Bytes from gpsd, received at local time `now`: requests to send back."""
        out: list[bytes] = []
        for byte_line in _lines(self.buffer, data):
            request = self.record(byte_line, now)
            if request is not None:
                out.append(request)
        return out

    # --- one record --------------------------------------------------------------------

    def record(self, line: bytes, now: float) -> bytes | None:
        line = line.strip()
        if not line:
            return None
        try:
            record = json.loads(line.decode("ascii"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self._bad("bad_json")
        if not isinstance(record, dict):
            return self._bad("bad_json")
        cls = record.get("class")
        if not isinstance(cls, str):
            return self._bad("no_class")
        request = None
        if cls == "TPV":
            self._tpv(record, now)
        elif cls == "PPS":
            self._pps(record, now)
        elif cls == "TOFF":
            self._toff(record, now)
        elif cls == "VERSION":
            request = self._version(record)
        elif cls == "WATCH":
            self._watch(record)
        else:
            return None  # SKY, DEVICES, ...: nothing the clock needs
        self.tallies["recv"] += 1
        self._evaluate()
        return request

    def _bad(self, reason: str) -> None:
        self.tallies["breply"] += 1
        if self.peer is not None:
            self.peer.drop(reason)
        return None

    def _version(self, record: dict[str, object]) -> bytes | None:
        major, minor = _int(record, "proto_major"), _int(record, "proto_minor")
        if major is None or minor is None:
            return self._bad("bad_version")
        self.proto = (major, minor)
        self.fl_vers = True
        if self.proto >= (3, 10):
            self.pf_toff = True
        # The version is also our sign-of-life question: once watching, no new request.
        return None if self.fl_watch else watch_request(self.device)

    def _watch(self, record: dict[str, object]) -> None:
        if self.device is not None and record.get("device") not in (None, self.device):
            return
        self.fl_watch = record.get("enable") is True and record.get("json") is True

    def _tpv(self, record: dict[str, object], now: float) -> None:
        mode = _int(record, "mode") or 0
        text = record.get("time")
        if mode < 2 or not isinstance(text, str):
            # no fix: nothing pending may be used
            if not self.pf_toff:
                self.tallies["sti_recv"] += 1
            self.tallies["nosync"] += 1
            self.fl_sti = self.fl_pps = False
            self.fl_nosync = True
            if self.peer is not None:
                self.peer.drop("no_fix")
            return
        self.fl_nosync = False
        if not self.pf_toff:
            self.tallies["sti_recv"] += 1
            stamp = parse_iso(text)
            if stamp is None:
                self._bad("bad_time")
                self.fl_sti = False
            else:
                if self.peer is not None:
                    self.peer.timecode = text
                self.sti_stamp = stamp
                self.sti_local = now
                self.sti_recvt = round(now * 1e9) - self._fudge_ns(2)
                self.fl_sti = True
        ept = record.get("ept", 2.0e-3)
        if isinstance(ept, bool) or not isinstance(ept, int | float) or not math.isfinite(ept):
            ept = 2.0e-3
        mantissa, exponent = math.frexp(abs(ept) * 0.70710678)
        if mantissa < 0.25:
            exponent = -32
        self.sti_prec = _clamped_precision(exponent)

    def _toff(self, record: dict[str, object], now: float) -> None:
        self.tallies["sti_recv"] += 1
        self.pf_toff = True
        if self.fl_nosync:
            return
        recvt = _binary_time(record, "clock_sec", "clock_nsec", 1)
        stamp = _binary_time(record, "real_sec", "real_nsec", 1)
        if recvt is None or stamp is None:
            self._bad("bad_toff")
            return
        self.sti_recvt = recvt - self._fudge_ns(2)
        self.sti_stamp = stamp
        self.sti_local = now
        self.fl_sti = True
        if self.peer is not None:
            self.peer.timecode = _iso(stamp)

    def _pps(self, record: dict[str, object], now: float) -> None:
        self.tallies["pps_recv"] += 1
        if self.fl_nosync:
            return
        nsec = self.proto >= (3, 9) or "clock_nsec" in record
        frac, scale = ("nsec", 1) if nsec else ("musec", 1000)
        recvt = _binary_time(record, "clock_sec", f"clock_{frac}", scale)
        stamp = _binary_time(record, "real_sec", f"real_{frac}", scale)
        if recvt is None or stamp is None:
            self._bad("bad_pps")
            return
        precision = _int(record, "precision")
        self.pps_prec = _clamped_precision(self.sti_prec if precision is None else precision)
        self.pps_local = now
        self.pps_recvt = recvt - self._fudge_ns(1)
        self.pps_stamp2 = stamp
        self.pps_recvt2 = recvt - (round(self.pps_peer.fudge.time1 * 1e9)
                                   if self.pps_peer is not None else 0)
        # the primary channel's reference: the pulse's own second, rounded
        self.pps_stamp = (self.pps_recvt + 500_000_000) // 1_000_000_000 * 1_000_000_000
        if self.pps_peer is not None:
            self.pps_peer.timecode = _iso(stamp)
        primary_pps = self.peer is not None and not self.peer.fudge.flag(FLAG2)
        self.fl_pps = primary_pps
        self.fl_pps2 = True

    def _fudge_ns(self, which: int) -> int:
        if self.peer is None:
            return 0
        value = self.peer.fudge.time1 if which == 1 else self.peer.fudge.time2
        return round(value * 1e9)

    # --- what a record leads to ------------------------------------------------------

    def _evaluate(self) -> None:
        if self.pps_peer is not None and self.fl_pps2:
            self._sample(self.pps_peer, self.pps_stamp2, self.pps_recvt2)
            self.pps_peer.precision = self.pps_prec
            self.ppscount2 = min(PPS2_MAXCOUNT, self.ppscount2 + 2)
            self.fl_pps2 = False
            self.tallies["pps_used"] += 1
        if self.fl_pps and self.fl_sti:
            diff = self.sti_local - self.pps_local
            if diff >= 1.0:
                self.fl_pps = False  # the pulse is older than the serial time
            elif diff < 0.0:
                self.fl_sti = False  # the serial time is older than the pulse
        if self.peer is None:
            return
        if self.mode == MODE_STRICT:
            self._strict()
        elif self.mode == MODE_AUTO:
            self._auto()
        else:
            self._serial()

    def _sample(self, peer: RefclockPeer, stamp: int, recvt: int) -> None:
        peer.add((stamp - recvt) * 1e-9, recvt * 1e-9, stamp * 1e-9)

    def _serial(self) -> None:
        if self.fl_sti and self.peer is not None:
            self._sample(self.peer, self.sti_stamp, self.sti_recvt)
            self.peer.precision = self.sti_prec
            self.fl_sti = False
            self.tallies["sti_used"] += 1

    def _strict(self) -> None:
        if self.fl_sti and self.fl_pps and self.peer is not None:
            self._sample(self.peer, self.sti_stamp, self.pps_recvt)
            self.peer.precision = self.pps_prec
            self.fl_sti = self.fl_pps = False
            self.tallies["sti_used"] += 1

    def _auto(self) -> None:
        if not self.fl_sti:
            return
        if self.fl_pps:
            self.ppscount = min(PPS_MAXCOUNT, self.ppscount + PPS_INCCOUNT)
            if self.ppscount == PPS_MAXCOUNT:
                self.fl_rawsti = False
        else:
            self.ppscount = max(0, self.ppscount - PPS_DECCOUNT)
            if self.ppscount == 0:
                self.fl_rawsti = True
        if self.fl_rawsti:
            self._serial()
        else:
            self._strict()

    def timer_secondary(self) -> None:
        """Once a second: a secondary channel without pulses forgets its readings."""
        self.ppscount2 = max(0, self.ppscount2 - 1)
        if self.ppscount2 == 0 and self.pps_peer is not None and self.pps_peer.readings:
            self.pps_peer.report(Event.TIMEOUT)
            self.pps_peer.readings.clear()

    def clockstats(self) -> str:
        t = self.tallies
        line = " ".join(str(t[k]) for k in ("recv", "breply", "nosync", "sti_recv",
                                             "sti_used", "pps_recv", "pps_used"))
        for key in t:
            t[key] = 0
        return line


def _iso(ns: int) -> str:
    t = datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"


def _lines(buffer: bytearray, data: bytes) -> list[bytes]:
    """Complete lines from gpsd's stream; an over-long line is cut at MAX_PDU_LEN (what
    is left of it then fails to parse, as ntpd's truncation does)."""
    lines = []
    parts = data.split(b"\n")
    for part in parts[:-1]:
        room = MAX_PDU_LEN - len(buffer)
        buffer.extend(part[:max(room, 0)])
        lines.append(bytes(buffer))
        buffer.clear()
    room = MAX_PDU_LEN - len(buffer)
    buffer.extend(parts[-1][:max(room, 0)])
    return lines


@dataclass
class Backoff:
    """When to try gpsd again: 10 s after a failure, doubling up to 10 minutes; reset when
    gpsd answers (ntpd's driver page)."""

    delay: float = TICKOVER_LOW

    def failed(self) -> float:
        wait = self.delay
        self.delay = min(self.delay * 2, BACKOFF_MAX)
        return wait

    def reset(self) -> None:
        self.delay = TICKOVER_LOW


class GpsdLink:
    """The TCP connection to gpsd: non-blocking, never waits."""

    def __init__(self, address: tuple[str, int] = GPSD_ADDRESS) -> None:
        self.address = address
        self.sock: socket.socket | None = None
        self.ready = False  # connected (not just connecting)
        self.error: str | None = None

    def fileno(self) -> int | None:
        return self.sock.fileno() if self.sock is not None and self.ready else None

    def connect(self) -> bool:
        """Start a connection; False if it failed at once (`error` says why)."""
        self.close()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.error = os.strerror(code)
            return False
        self.sock = sock
        self.ready = code == 0
        return True

    def check(self) -> bool | None:
        """A pending connection: True connected, False failed, None still pending."""
        if self.sock is None:
            return False
        if self.ready:
            return True
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            try:
                self.sock.getpeername()
            except OSError:
                return None  # not connected yet
            self.ready = True
            return True
        self.error = os.strerror(code)
        self.close()
        return False

    def recv(self) -> bytes | None:
        """What is there (b"" if nothing yet); None: gpsd closed or the link failed."""
        if self.sock is None:
            return None
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return b""
        except OSError as exc:
            self.error = exc.strerror
            return None
        return data if data else None

    def send(self, data: bytes) -> bool:
        if self.sock is None or not self.ready:
            return False
        try:
            return self.sock.send(data) == len(data)
        except OSError as exc:
            self.error = exc.strerror
            return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.ready = False


@dataclass
class GpsdDriver:
    """Type 46 for one unit (and its secondary channel): the session on a link."""

    session: GpsdSession
    link: GpsdLink
    tickover: float = 0.0  # s until the next connection step (ntpd's count-down)
    backoff: Backoff = field(default_factory=Backoff)
    connects: int = 0
    failures: int = 0

    @property
    def peers(self) -> list[RefclockPeer]:
        return [p for p in (self.session.peer, self.session.pps_peer) if p is not None]

    def fileno(self) -> int | None:
        return self.link.fileno()

    def timer(self, now: float) -> None:
        """Once a second: connect, check a pending connect, time out a silent gpsd."""
        self.session.timer_secondary()
        self.tickover = max(0.0, self.tickover - 1.0)
        if self.link.sock is not None and not self.link.ready:
            state = self.link.check()
            if state is True:
                self._connected()
            elif state is False:
                self._failed()
            elif self.tickover == 0:
                self.link.close()
                self._failed()
            return
        if self.link.ready:
            if self.tickover == LIVECHECK and not self.link.send(VERSION_REQUEST):
                self._failed()
            elif self.tickover == 0:
                self.link.close()  # gpsd said nothing for too long
                self._failed()
            return
        if self.tickover == 0:
            if not self.link.connect():
                self._failed()
            elif self.link.ready:
                self._connected()
            else:
                self.tickover = TICKOVER_LOW

    def readable(self, now: float) -> None:
        data = self.link.recv()
        if data is None:
            self.link.close()
            self._failed()
            return
        if not data:
            return
        self.tickover = TICKOVER_LOW
        for request in self.session.feed(data, now):
            self.backoff.reset()
            if not self.link.send(request):
                self.link.close()
                self._failed()
                return

    def _connected(self) -> None:
        self.connects += 1
        self.session.connected()
        self.tickover = TICKOVER_LOW

    def _failed(self) -> None:
        self.failures += 1
        self.session.connected()
        self.tickover = self.backoff.failed()

    def poll(self, peer: RefclockPeer) -> str | None:
        """At `peer`'s poll, before it takes its sample: ntpd's event, and under flag4 the
        tallies for clockstats (primary unit only)."""
        if peer is self.session.pps_peer:
            if peer.readings:
                peer.report(Event.NOMINAL)
            return None
        if peer.readings:
            peer.report(Event.NOMINAL)
        elif not self.link.ready:
            peer.report(Event.FAULT)
        elif self.session.tallies["breply"]:
            peer.report(Event.BADREPLY)
        line = self.session.clockstats() if peer.fudge.flag(FLAG4) else None
        if line is None:
            for key in self.session.tallies:
                self.session.tallies[key] = 0
        return line

    def close(self) -> None:
        self.link.close()

