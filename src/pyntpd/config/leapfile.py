"""The leap second list (ntp.conf `leapfile`): IERS/NIST `leap-seconds.list`.

The format, as published by the IERS (hpiers.obspm.fr) and formerly by NIST, and as tzdata
ships it in /usr/share/zoneinfo/leap-seconds.list:

    #$  3960835200                       last update, NTP seconds (since 1900-01-01 UTC)
    #@  3991593600                       expiry, NTP seconds
    2272060800      10      # 1 Jan 1972 from this instant on, TAI-UTC is 10 s
    ...
    #h  49db2447 571e5e1b 2f002a53 9c8da8e4 39b8e49e    SHA-1 of the data, five 32-bit words

Every other line starting with '#' is a comment. A data line's time is the first second of
the UTC day *after* the leap: the leap second itself (23:59:60) ends the day before it.

The hash. The file's header says the hash is computed "on the data in the file, excluding
comments and white space" (NIST), i.e. the update time, the expiry and the data lines. The
exact rule, as ntpd's leapsec_validate() applies it and as we do: take, in file order,

- for a line starting with '#$' or '#@': the text after those two characters,
- for a line starting with a digit: the whole line,
- (every other line, including '#h' and comments, contributes nothing)

cut each at its first '#', keep only the ASCII digits 0-9, concatenate, and SHA-1 the
result. The '#h' line holds the digest as five whitespace-separated hexadecimal 32-bit words,
most significant byte first; like ntpd we accept a word whose leading zeros were dropped.

With `checkhash` (ntpd's default) a file is accepted only with a good hash, as ntpd does: a
missing, malformed or mismatching hash is an error. With `ignorehash` those are warnings.

Unlike ntpd (which keeps only the last 10 entries) the whole table is kept. Any error rejects
the whole file: a leap table with a line missing would report a wrong TAI offset. Times are
NTP seconds as unbounded integers (`unix_seconds + 2_208_988_800`), not 32-bit era values,
so the table stays correct after 2036.

The daemon keeps the file under watch (`LeapFileWatch`): it is read again when its
modification time, size or inode change (an update in place or a new copy renamed over
it), checked hourly and at SIGHUP. A new copy that does not parse leaves the table read
before in force. What the table means for the clock is `sync.leap`'s business: the engine
gets it as a `LeapList` in Unix seconds.
"""

from __future__ import annotations

import bisect
import datetime
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pyntpd.proto.timestamp import NTP_UNIX_OFFSET
from pyntpd.sync.leap import LeapList

from . import files
from .diagnostics import Diagnostic, DiagnosticSink, Location

SECONDS_PER_DAY = 86_400
MAX_LINE_LENGTH = 4096
# |TAI-UTC| far beyond anything plausible for centuries; a bound, not a physical claim.
MAX_TAI_OFFSET = 1000
# 13 digits reach the year ~318000: enough, and it keeps absurd numbers out.
_NUMBER = re.compile(r"[0-9]{1,13}")
_SIGNED = re.compile(r"[+-]?[0-9]{1,4}")
_HEX_WORD = re.compile(r"[0-9A-Fa-f]{1,8}")
_TOKEN = re.compile(r"[^ \t\r\v\f]+")
_NON_DIGIT = re.compile(r"[^0-9]")

HashStatus = Literal["good", "missing", "bad", "malformed"]


@dataclass(frozen=True, slots=True)
class LeapEntry:
    """From `ntp_seconds` on (the first second of a UTC day), TAI-UTC is `tai_offset`."""

    ntp_seconds: int
    tai_offset: int


@dataclass(frozen=True, slots=True)
class LeapTable:
    """A validated leap second table. `expiry` and `updated` are NTP seconds (or None)."""

    entries: tuple[LeapEntry, ...]
    expiry: int | None
    updated: int | None

    def _index(self, at: int) -> int:
        """Index of the entry in force at `at`, -1 before the first."""
        return bisect.bisect_right(self.entries, at, key=lambda e: e.ntp_seconds) - 1

    def tai_offset(self, at: int) -> int | None:
        """TAI-UTC in force at NTP second `at`; None before the table starts (1972)."""
        i = self._index(at)
        return self.entries[i].tai_offset if i >= 0 else None

    def leap_pending(self, now: int) -> int:
        """+1 (insert) or -1 (delete) if a leap second ends the current UTC day, else 0.

        That is, when the next UTC midnight after NTP second `now` starts a new entry. This
        is what the leap indicator and the kernel's STA_INS/STA_DEL must say during that day.
        """
        i = self._index(now) + 1
        if i < 1 or i >= len(self.entries):
            return 0
        nxt = self.entries[i]
        if nxt.ntp_seconds - now > SECONDS_PER_DAY:
            return 0
        step = nxt.tai_offset - self.entries[i - 1].tai_offset
        return (step > 0) - (step < 0)

    def next_leap(self, now: int) -> LeapEntry | None:
        """The next entry after NTP second `now` (a leap to come), if the table lists one."""
        i = self._index(now) + 1
        return self.entries[i] if 1 <= i < len(self.entries) else None

    def expired(self, now: int) -> bool:
        """True once NTP second `now` is past the expiry (a table without one is expired)."""
        return self.expiry is None or now >= self.expiry

    def leap_list(self) -> LeapList:
        """The table in Unix seconds, as the synchronisation engine takes it."""
        return LeapList(
            tuple((e.ntp_seconds - NTP_UNIX_OFFSET, e.tai_offset) for e in self.entries),
            None if self.expiry is None else self.expiry - NTP_UNIX_OFFSET)


@dataclass(frozen=True, slots=True)
class LeapFileResult:
    """`table` is None when the file was rejected; the diagnostics say why."""

    table: LeapTable | None
    diagnostics: tuple[Diagnostic, ...]
    hash_status: HashStatus

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.is_error)


def ntp_date(ntp_seconds: int) -> str:
    """'2017-01-01' for an NTP second, or the bare number when out of the calendar's range."""
    try:
        day = datetime.datetime.fromtimestamp(ntp_seconds - NTP_UNIX_OFFSET, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"NTP second {ntp_seconds}"
    return day.strftime("%Y-%m-%d")


def hash_input(line: str) -> str:
    """The digits one line contributes to the SHA-1 (see the module docstring)."""
    if line.startswith(("#$", "#@")):
        line = line[2:]
    elif not line[:1].isascii() or not line[:1].isdigit():
        return ""
    return _NON_DIGIT.sub("", line.split("#", 1)[0])


def _control_at(text: str) -> int:
    for i, ch in enumerate(text):
        cp = ord(ch)
        if (cp < 0x20 and ch != "\t") or cp == 0x7F:
            return i
    return -1


class _Parser:
    def __init__(self, filename: str, checkhash: bool) -> None:
        self.filename = filename
        self.checkhash = checkhash
        self.sink = DiagnosticSink()
        self.entries: list[LeapEntry] = []
        self.specials: dict[str, int] = {}  # '#$' / '#@' -> value
        self.digest: bytes | None = None
        self.hash_malformed = False
        self.sha1 = hashlib.sha1(usedforsecurity=False)

    def loc(self, line: int, col: int) -> Location:
        return Location(self.filename, line, col)

    def line(self, number: int, raw: str) -> None:
        raw = raw.removesuffix("\r")
        if len(raw) > MAX_LINE_LENGTH:
            self.sink.error(
                self.loc(number, MAX_LINE_LENGTH + 1),
                f"line is longer than {MAX_LINE_LENGTH} characters",
            )
            return
        bad = _control_at(raw)
        if bad >= 0:
            what = "NUL byte" if raw[bad] == "\0" else f"control character U+{ord(raw[bad]):04X}"
            self.sink.error(self.loc(number, bad + 1), what)
            return
        self.sha1.update(hash_input(raw).encode("ascii"))
        if raw.startswith(("#$", "#@")):
            self.special(number, raw)
        elif raw.startswith("#h"):
            self.hash_line(number, raw)
        elif raw.startswith("#") or not raw.strip():
            return
        else:
            self.data(number, raw)

    @staticmethod
    def tokens(raw: str, start: int) -> list[tuple[str, int]]:
        """(token, 1-based column) of the text after `start` up to a '#' comment."""
        body = raw[start:].split("#", 1)[0]
        return [(m.group(), m.start() + start + 1) for m in _TOKEN.finditer(body)]

    def special(self, number: int, raw: str) -> None:
        tag = raw[:2]
        what = "update time" if tag == "#$" else "expiry time"
        tokens = self.tokens(raw, 2)
        if tag in self.specials:
            self.sink.error(self.loc(number, 1), f"second {tag} ({what}) line")
            return
        if len(tokens) != 1 or not _NUMBER.fullmatch(tokens[0][0]):
            col = tokens[0][1] if tokens else 3
            self.sink.error(
                self.loc(number, col),
                f"{tag} line must hold one number: the {what} in NTP seconds",
            )
            return
        self.specials[tag] = int(tokens[0][0])

    def hash_line(self, number: int, raw: str) -> None:
        if self.digest is not None or self.hash_malformed:
            self.sink.error(self.loc(number, 1), "second #h (hash) line")
            return
        tokens = self.tokens(raw, 2)
        bad = next((t for t in tokens if not _HEX_WORD.fullmatch(t[0])), None)
        if len(tokens) != 5 or bad is not None:
            self.hash_malformed = True
            col = bad[1] if bad else (tokens[-1][1] if len(tokens) > 5 else 3)
            self.hash_problem(
                self.loc(number, col),
                "malformed #h line: expected five hexadecimal 32-bit words",
            )
            return
        self.digest = b"".join(int(t, 16).to_bytes(4, "big") for t, _ in tokens)

    def hash_problem(self, loc: Location, message: str) -> None:
        if self.checkhash:
            self.sink.error(loc, message, "or use 'leapfile FILE ignorehash' to skip the check")
        else:
            self.sink.warning(loc, message + " (ignorehash)")

    def data(self, number: int, raw: str) -> None:
        if raw[:1] in " \t\v\f":
            first = len(raw) - len(raw.lstrip(" \t\v\f")) + 1
            self.sink.error(
                self.loc(number, first),
                "a data line must start in column 1 (ntpd does not hash indented lines)",
            )
            return
        tokens = self.tokens(raw, 0)
        if len(tokens) < 2:
            self.sink.error(self.loc(number, 1), "expected 'NTP-seconds TAI-UTC' (two numbers)")
            return
        (t_text, t_col), (o_text, o_col) = tokens[0], tokens[1]
        if len(tokens) > 2:
            self.sink.error(
                self.loc(number, tokens[2][1]),
                f"unexpected '{tokens[2][0][:40]}' after TAI-UTC; a comment starts with '#'",
            )
            return
        if not _NUMBER.fullmatch(t_text):
            self.sink.error(self.loc(number, t_col), f"'{t_text[:40]}' is not NTP seconds")
            return
        if not _SIGNED.fullmatch(o_text) or abs(int(o_text)) > MAX_TAI_OFFSET:
            self.sink.error(
                self.loc(number, o_col),
                f"'{o_text[:40]}' is not a TAI-UTC offset in seconds "
                f"(an integer within ±{MAX_TAI_OFFSET})",
            )
            return
        self.entry(number, t_col, o_col, LeapEntry(int(t_text), int(o_text)))

    def entry(self, number: int, t_col: int, o_col: int, entry: LeapEntry) -> None:
        if entry.ntp_seconds % SECONDS_PER_DAY:
            self.sink.error(
                self.loc(number, t_col),
                f"{entry.ntp_seconds} is not a UTC midnight (not a multiple of 86400)",
            )
            return
        if self.entries:
            last = self.entries[-1]
            if entry.ntp_seconds <= last.ntp_seconds:
                self.sink.error(
                    self.loc(number, t_col),
                    f"entries must be in increasing time order: {ntp_date(entry.ntp_seconds)}"
                    f" does not follow {ntp_date(last.ntp_seconds)}",
                )
                return
            if abs(entry.tai_offset - last.tai_offset) != 1:
                self.sink.error(
                    self.loc(number, o_col),
                    f"TAI-UTC goes from {last.tai_offset} to {entry.tai_offset}: "
                    "a leap second changes it by exactly one",
                )
                return
        self.entries.append(entry)

    def finish(self, now_ntp: int | None) -> LeapFileResult:
        whole = Location(self.filename)
        status: HashStatus
        if self.hash_malformed:
            status = "malformed"
        elif self.digest is None:
            status = "missing"
            self.hash_problem(whole, "no #h line: the file's SHA-1 hash cannot be checked")
        elif self.digest != self.sha1.digest():
            status = "bad"
            self.hash_problem(whole, "SHA-1 hash mismatch: the file was altered or damaged")
        else:
            status = "good"
        if not self.entries:
            self.sink.error(whole, "no leap second entries")
        expiry = self.specials.get("#@")
        if expiry is None:
            self.sink.warning(whole, "no #@ (expiry) line: the table counts as expired")
        elif now_ntp is not None and now_ntp >= expiry:
            self.sink.warning(
                whole,
                f"leap second file expired on {ntp_date(expiry)}",
                "install a current copy (tzdata's leap-seconds.list or the IERS file)",
            )
        table = None
        if not self.sink.error_count:
            table = LeapTable(tuple(self.entries), expiry, self.specials.get("#$"))
        return LeapFileResult(table, tuple(self.sink.items), status)


def parse_leapfile(
    data: bytes | str,
    filename: str = "leapfile",
    *,
    checkhash: bool = True,
    now_ntp: int | None = None,
) -> LeapFileResult:
    """Parse a leap second list. Never raises on bad input.

    `now_ntp` (NTP seconds) enables the "expired" warning; the parse itself reads no clock.
    """
    parser = _Parser(filename, checkhash)
    text = files.decode(data, filename, parser.sink) if isinstance(data, bytes) else data
    for number, raw in enumerate(text.split("\n"), start=1):
        parser.line(number, raw)
    return parser.finish(now_ntp)


def load_leapfile(
    path: str,
    *,
    checkhash: bool = True,
    now_ntp: int | None = None,
    read_file: files.ReadFile = files.read_file,
) -> LeapFileResult:
    """Read and parse the leap file at `path`; `now_ntp` defaults to the current time."""
    if now_ntp is None:
        now_ntp = int(time.time()) + NTP_UNIX_OFFSET
    try:
        data = read_file(path)
    except OSError as exc:
        diag = Diagnostic(
            "error", path, 0, 0, f"cannot read leap second file: {files.describe_os_error(exc)}"
        )
        return LeapFileResult(None, (diag,), "missing")
    return parse_leapfile(data, path, checkhash=checkhash, now_ntp=now_ntp)


class LeapFileWatch:
    """The `leapfile`, read again whenever it changes; `table` is the last good one."""

    def __init__(
        self,
        path: str,
        *,
        checkhash: bool = True,
        stat: Callable[[str], os.stat_result] = os.stat,
        read_file: files.ReadFile = files.read_file,
    ) -> None:
        self.path = path
        self.checkhash = checkhash
        self.table: LeapTable | None = None
        self._stat = stat
        self._read_file = read_file
        self._seen: tuple[object, ...] | None = None

    def check(self, now_ntp: int | None = None) -> LeapFileResult | None:
        """Read and parse the file if it is new or changed since the last check (or could
        not be examined then, and can now); None when nothing changed."""
        try:
            st = self._stat(self.path)
            seen: tuple[object, ...] = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)
        except OSError as exc:
            seen = ("unreadable", exc.errno)
        if seen == self._seen:
            return None
        self._seen = seen
        result = load_leapfile(self.path, checkhash=self.checkhash, now_ntp=now_ntp,
                               read_file=self._read_file)
        if result.table is not None:
            self.table = result.table
        return result
