"""What pyntpq prints: ntpq 4.2.8's text layouts, the JSON shapes, the ntpstat-like line.

Pure functions of decoded mode 6 answers (proto.control_client) and `now`; no sockets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from pyntpd.proto.control import PST_AUTHENABLE, PST_AUTHENTIC, PST_CONFIG, PST_REACH
from pyntpd.proto.control_client import (
    Association,
    MruEntry,
    PeerRow,
    is_refclock,
    parse_number,
    parse_timestamp,
    typed,
    unquote,
)
from pyntpd.proto.timestamp import ntp_diff, ntp_to_unix

RULE = "=" * 78
PEERS_HEADER = "     remote           refid      st t when poll reach   delay   offset  jitter"
ASSOC_HEADER = "ind assid status  conf reach auth condition  last_event cnt"
MRU_HEADER = "lstint avgint rstr r m v  count rport remote address"
MAX_OUT_LINE = 72  # ntpq's MAXOUTLINE: variables are wrapped before this

RES_LIMITED = 0x0020
RES_KOD = 0x0400

LEAP_NAMES = ("leap_none", "leap_add_sec", "leap_del_sec", "leap_alarm")
SYNC_NAMES = ("sync_unspec", "sync_pps", "sync_lf_radio", "sync_hf_radio", "sync_uhf_radio",
              "sync_local", "sync_ntp", "sync_other", "sync_wristwatch", "sync_telephone")
SYS_EVENTS = ("unspecified", "freq_not_set", "freq_set", "spike_detect", "freq_mode",
              "clock_sync", "restart", "panic_stop", "no_system_peer", "leap_armed",
              "leap_disarmed", "leap_event", "clock_step", "kern", "TAI", "stale_leapsecond")
PEER_EVENTS = ("", "mobilize", "demobilize", "unreachable", "reachable", "restart", "no_reply",
               "rate_exceeded", "access_denied", "leap_armed", "sys_peer", "clock_alarm")
SELECT_NAMES = ("sel_reject", "sel_falsetick", "sel_excess", "sel_outlier", "sel_candidate",
                "sel_backup", "sel_sys.peer", "sel_pps.peer")
# ntpstat's names for the system status word's clock source.
SOURCE_NAMES = ("unspecified", "atomic clock", "VLF radio", "HF radio", "UHF radio",
                "local clock", "NTP server", "UDP/TIME server", "wristwatch", "modem")

Namer = Callable[[str], str]


def _name(table: Sequence[str], code: int, prefix: str) -> str:
    return table[code] if 0 <= code < len(table) and table[code] else f"{prefix}_{code}"


def _events(count: int) -> str:
    return "no events" if count == 0 else f"{count} event{'' if count == 1 else 's'}"


def sys_status_text(status: int) -> str:
    """`0615 leap_none, sync_ntp, 1 event, clock_sync`, as ntpq shows a system status."""
    return (f"{status:04x} {_name(LEAP_NAMES, status >> 14, 'leap')}, "
            f"{_name(SYNC_NAMES, (status >> 8) & 0x3F, 'sync')}, "
            f"{_events((status >> 4) & 0xF)}, {_name(SYS_EVENTS, status & 0xF, 'event')}")


def peer_status_text(status: int) -> str:
    """`961a reach, conf, sel_sys.peer, 1 event, sys_peer`, as ntpq shows a peer status."""
    flags = status >> 11
    parts = [f"{status:04x} " + ("reach" if flags & PST_REACH else "unreach")]
    if flags & PST_CONFIG:
        parts.append("conf")
    if flags & PST_AUTHENABLE:
        ok = not flags & PST_REACH or flags & PST_AUTHENTIC
        parts.append("auth" if ok else "unauth")
    parts.append(SELECT_NAMES[(status >> 8) & 7])
    parts.append(_events((status >> 4) & 0xF))
    if status & 0xF:
        parts.append(_name(PEER_EVENTS, status & 0xF, "event"))
    return ", ".join(parts)


# --- peers ---------------------------------------------------------------------------------


def pretty_interval(seconds: int | None) -> str:
    """ntpq's `when`/`poll` column: seconds up to 2048, then minutes, hours, days."""
    if seconds is None or seconds <= 0:
        return "-"
    if seconds <= 2048:
        return str(seconds)
    seconds = (seconds + 29) // 60
    if seconds <= 300:
        return f"{seconds}m"
    seconds = (seconds + 29) // 60
    if seconds <= 96:
        return f"{seconds}h"
    return f"{(seconds + 11) // 24}d"


def _ms(value: float, width: int) -> str:
    """ntpq's `%W.7s` of lfptoms(x, 3): three decimals, cut (not rounded) to 7 characters."""
    return f"{f'{value:.3f}'[:7]:>{width}}"


def _ascii(text: str) -> str:
    return "".join(c if " " <= c < "\x7f" else "." for c in text)


def printable(text: str) -> str:
    """What a server sent, made safe for a terminal: control characters (escape sequences)
    shown as ntpq's makeascii does, `^[`; line ends kept."""
    out = []
    for c in text:
        if c == "\n" or " " <= c < "\x7f" or c > "\x9f":
            out.append(c)
        elif c == "\x7f":
            out.append("^?")
        elif c < " ":
            out.append("^" + chr(ord(c) + 64))
        else:
            out.append("?")
    return "".join(out)


def refid_column(refid: str) -> str:
    """ntpq 4.2.8: a refid of up to four characters is a code, shown as .CODE."""
    return f".{refid}." if 0 < len(refid) <= 4 else refid


def peer_line(row: PeerRow, remote: str) -> str:
    refid = _ascii(refid_column(row.refid))
    return (f"{row.tally}{remote[:15]:<15} {refid:<15} {row.stratum:2d} {row.type} "
            f"{pretty_interval(row.when)[:4]:>4} {pretty_interval(row.poll)[:4]:>4}  "
            f"{row.reach:3o}  {_ms(row.delay, 7)} {_ms(row.offset, 8)} {_ms(row.jitter, 7)}")


def remote_name(row: PeerRow, namer: Namer) -> str:
    """The configured name if the server sent one (ntpq 4.2.8 prefers it), else srcadr."""
    return row.srchost if row.srchost else namer(row.srcadr)


def peers_text(rows: Iterable[PeerRow], namer: Namer) -> str:
    lines = [PEERS_HEADER, RULE] + [peer_line(r, remote_name(r, namer)) for r in rows]
    return "\n".join(lines) + "\n"


def peers_json(rows: Iterable[PeerRow], namer: Namer) -> dict[str, object]:
    return {"command": "peers", "peers": [
        {"associd": r.associd, "tally": r.tally, "condition": r.condition,
         "remote": remote_name(r, namer), "srcadr": r.srcadr, "srcport": r.srcport,
         "refid": r.refid,
         "stratum": r.stratum, "type": r.type, "when": r.when, "poll": r.poll,
         "reach": r.reach, "delay_ms": r.delay, "offset_ms": r.offset, "jitter_ms": r.jitter}
        for r in rows]}


# --- associations ----------------------------------------------------------------------------


def _assoc_fields(a: Association) -> tuple[str, str, str]:
    flags = a.flags
    conf = "yes" if flags & PST_CONFIG else "no"
    if a.broadcast:
        return conf, "none", "yes" if flags & PST_AUTHENABLE else "none"
    reach = "yes" if flags & PST_REACH else "no"
    if flags & PST_AUTHENABLE:
        return conf, reach, "ok " if flags & PST_AUTHENTIC else "bad"
    return conf, reach, "none"


def assoc_text(assocs: Sequence[Association]) -> str:
    if not assocs:
        return "No association ID's returned\n"
    lines = ["", ASSOC_HEADER, "=" * 59]
    for index, a in enumerate(assocs, 1):
        if not a.shown:
            continue
        conf, reach, auth = _assoc_fields(a)
        event = PEER_EVENTS[a.status & 0xF] if (a.status & 0xF) < len(PEER_EVENTS) else ""
        line = (f"{index:3d} {a.associd:5d}  {a.status:04x}   {conf:>3.3}  {reach:>4}  "
                f"{auth:>4.4} {a.condition:>9.9} {event:>11} {(a.status >> 4) & 0xF:2d}")
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def assoc_json(assocs: Sequence[Association]) -> dict[str, object]:
    out = []
    for index, a in enumerate(assocs, 1):
        conf, reach, auth = _assoc_fields(a)
        event = a.status & 0xF
        out.append({"ind": index, "associd": a.associd, "status": a.status,
                    "conf": conf == "yes", "reach": reach == "yes", "auth": auth.strip(),
                    "condition": a.condition, "tally": a.tally,
                    "last_event": PEER_EVENTS[event] if event < len(PEER_EVENTS) else "",
                    "event_count": (a.status >> 4) & 0xF})
    return {"command": "associations", "associations": out}


# --- readvar --------------------------------------------------------------------------------


def pretty_date(stamp: int, pivot_unix: float) -> str:
    """ntpq's timestamp: `e5a1b2c3.1a2b3c4d  Thu, Nov 26 2026 12:39:15.123` (local time)."""
    hexa = f"{stamp >> 32:08x}.{stamp & 0xFFFFFFFF:08x}"
    if stamp == 0:
        return f"{hexa}  Thu, Feb  7 2036  6:28:16.000"
    unix = ntp_to_unix(stamp, pivot_unix)
    t = time.localtime(unix)
    millis = int((unix % 1) * 1000)
    return (f"{hexa}  {time.strftime('%a, %b', t)} {t.tm_mday:2d} {t.tm_year:4d} "
            f"{t.tm_hour:2d}:{t.tm_min:02d}:{t.tm_sec:02d}.{millis:03d}")


def cooked_value(name: str, value: str, pivot_unix: float) -> str:
    """The few conversions ntpq's cooked output makes that matter to a reader."""
    if name == "leap":
        number = parse_number(value)
        return f"{int(number) & 3:02b}" if number is not None else value
    if name == "reach":
        number = parse_number(value)
        return f"{int(number):03o}" if number is not None else value
    stamp = parse_timestamp(value)
    if stamp is not None:
        return pretty_date(stamp, pivot_unix)
    return value


def wrap_vars(items: Iterable[tuple[str, str]]) -> str:
    """ntpq's output(): `a=1, b=2,` lines, broken before MAX_OUT_LINE characters."""
    out: list[str] = []
    line = 0
    first = True
    for name, value in items:
        length = len(name) + 1 + len(value)
        if not first:
            if line + length + 2 > MAX_OUT_LINE:
                out.append(",\n")
                line = 0
            else:
                out.append(", ")
                line += 2
        out.append(f"{name}={value}")
        line += length
        first = False
    return "".join(out) + ("\n" if out else "")


def readvar_text(associd: int, status: int, variables: dict[str, str],
                 pivot_unix: float) -> str:
    status_text = peer_status_text(status) if associd else sys_status_text(status)
    items = [("status", status_text)]
    items += [(n, cooked_value(n, v, pivot_unix)) for n, v in variables.items()]
    return f"associd={associd} " + wrap_vars(items)


def readvar_json(associd: int, status: int, variables: dict[str, str],
                 pivot_unix: float) -> dict[str, object]:
    status_text = peer_status_text(status) if associd else sys_status_text(status)
    return {"command": "readvar", "associd": associd, "status": status,
            "status_text": status_text.split(" ", 1)[1],
            "variables": {n: typed(n, v, pivot_unix) for n, v in variables.items()}}


CLOCK_EVENTS = ("clk_okay", "clk_noreply", "clk_badformat", "clk_fault", "clk_badsignal",
                "clk_baddate", "clk_badtime")


def clock_status_text(status: int) -> str:
    """`0101 clk_noreply, last_clk_noreply`-style, as ntpq shows a clock status: the
    current status in the low byte, the last event in the high one."""
    current = _name(CLOCK_EVENTS, status & 0xFF, "clk")
    last = _name(CLOCK_EVENTS, (status >> 8) & 0xFF, "clk")
    return f"{status:04x} {current}, last_{last}"


def clockvar_text(associd: int, status: int, variables: dict[str, str]) -> str:
    items = [("status", clock_status_text(status)), *variables.items()]
    return f"associd={associd} " + wrap_vars(items)


def clockvar_json(associd: int, status: int, variables: dict[str, str],
                  pivot_unix: float) -> dict[str, object]:
    return {"command": "clockvar", "associd": associd, "status": status,
            "status_text": clock_status_text(status).split(" ", 1)[1],
            "variables": {n: typed(n, v, pivot_unix) for n, v in variables.items()}}


# --- mrulist ---------------------------------------------------------------------------------


def _mru_numbers(entry: MruEntry, now: int) -> tuple[int, int]:
    lstint = int(ntp_diff(now, entry.last) + 0.5)
    avgint = int(ntp_diff(entry.last, entry.first) / max(entry.count, 1) + 0.5)
    return lstint, avgint


def _newest_first(entries: Iterable[MruEntry]) -> list[MruEntry]:
    return sorted(entries, key=lambda e: e.last, reverse=True)


def mrulist_text(entries: Iterable[MruEntry], now: int, namer: Namer) -> str:
    lines = [MRU_HEADER, RULE]
    for e in _newest_first(entries):
        lstint, avgint = _mru_numbers(e, now)
        code = "K" if e.rs & RES_KOD else "L" if e.rs & RES_LIMITED else "."
        lines.append(f"{lstint:6d} {avgint:6d} {e.rs & 0xFFFF:4x} {code} {e.mode} {e.version} "
                     f"{e.count:6d} {e.port:5d} {namer(e.addr)}")
    return "\n".join(lines) + "\n"


def mrulist_json(entries: Iterable[MruEntry], now: int, pivot_unix: float) -> dict[str, object]:
    rows = []
    for e in _newest_first(entries):
        lstint, avgint = _mru_numbers(e, now)
        rows.append({"addr": e.addr, "port": e.port, "count": e.count, "mode": e.mode,
                     "version": e.version, "rs": e.rs, "lstint": lstint, "avgint": avgint,
                     "first": ntp_to_unix(e.first, pivot_unix),
                     "last": ntp_to_unix(e.last, pivot_unix)})
    return {"command": "mrulist", "now": ntp_to_unix(now, pivot_unix), "entries": rows}


# --- ntpstat -----------------------------------------------------------------------------------

EXIT_SYNCHRONISED = 0
EXIT_UNSYNCHRONISED = 1
EXIT_UNKNOWN = 2


def sync_status(status: int, system: dict[str, str],
                peer: dict[str, str] | None) -> tuple[int, str]:
    """ntpstat's verdict from the system variables (and the system peer's, if any):
    (exit code, one line)."""
    leap = parse_number(system.get("leap", ""))
    stratum = parse_number(system.get("stratum", ""))
    if leap is None or stratum is None:
        return EXIT_UNKNOWN, "unknown: the server did not report leap and stratum"
    if int(leap) == 3 or not 0 < int(stratum) < 16:
        return EXIT_UNSYNCHRONISED, "unsynchronised"
    source = (status >> 8) & 0x3F
    what = SOURCE_NAMES[source] if source < len(SOURCE_NAMES) else f"source {source}"
    where = unquote(peer.get("srcadr", "")) if peer else ""
    if peer and is_refclock(where):
        # A reference clock is not an NTP server, whatever the status word says.
        what = what if source not in (0, 6) else "reference clock"
        where = unquote(peer.get("srchost", "")) or where
    where = where or unquote(system.get("refid", ""))
    text = f"synchronised to {what} ({where}) at stratum {int(stratum)}"
    delay = parse_number(system.get("rootdelay", ""))
    disp = parse_number(system.get("rootdisp", ""))
    if delay is not None and disp is not None:
        text += f", time correct to within {delay / 2 + disp:.3f} ms"
    offset = parse_number(system.get("offset", ""))
    if offset is not None:
        text += f", offset {offset:+.3f} ms"
    poll = None
    if peer:
        polls = [parse_number(peer.get(n, "")) for n in ("hpoll", "ppoll")]
        known = [int(p) for p in polls if p is not None]
        poll = min(known) if known else None
    if poll is None:
        tc = parse_number(system.get("tc", ""))
        poll = int(tc) if tc is not None else None
    if poll is not None and 0 <= poll <= 17:
        text += f", polling every {1 << poll} s"
    return EXIT_SYNCHRONISED, text
