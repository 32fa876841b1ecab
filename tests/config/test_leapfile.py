"""The leap second list: parsing, ntpd's SHA-1 check, table queries, file:line:col errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyntpd.config.leapfile import (
    LeapEntry,
    LeapFileWatch,
    LeapTable,
    hash_input,
    load_leapfile,
    ntp_date,
    parse_leapfile,
)

# (NTP seconds, TAI-UTC) for 1 Jan 1972 .. 1 Jan 2017: the 28 entries of the real list.
LEAPS = [
    (2272060800, 10), (2287785600, 11), (2303683200, 12), (2335219200, 13),
    (2366755200, 14), (2398291200, 15), (2429913600, 16), (2461449600, 17),
    (2492985600, 18), (2524521600, 19), (2571782400, 20), (2603318400, 21),
    (2634854400, 22), (2698012800, 23), (2776982400, 24), (2840140800, 25),
    (2871676800, 26), (2918937600, 27), (2950473600, 28), (2982009600, 29),
    (3029443200, 30), (3076704000, 31), (3124137600, 32), (3345062400, 33),
    (3439756800, 34), (3550089600, 35), (3644697600, 36), (3692217600, 37),
]
UPDATED = 3960835200  # 2025-07-08
EXPIRES = 3991593600  # 2026-06-28
# The IERS digest for exactly these numbers (the list published with these #$ and #@).
IERS_HASH = "49db2447 571e5e1b 2f002a53 9c8da8e4 39b8e49e"
DAY = 86400


def sample(updated: int | None = UPDATED, expires: int = EXPIRES, hash_line: str | None = None,
           leaps: list[tuple[int, int]] = LEAPS) -> str:
    """A leap-seconds.list in the IERS layout (comments shortened)."""
    lines = [
        "#\tLEAP SECONDS LIST (test sample in the IERS format)",
        "#",
        "#\tThe following line shows the last update of this file in NTP timestamp:",
        "#",
        f"#$\t{updated}" if updated is not None else "#",
        "#",
        "#\tExpire date in NTP timestamp:",
        "#",
        f"#@\t{expires}",
        "#",
        "#NTP Time      DTAI    Day Month Year",
        "#",
    ]
    lines += [f"{t}      {tai}      # {ntp_date(t)}" for t, tai in leaps]
    lines += ["#", "#\tThe hash of the data:", "#"]
    if hash_line is not None:
        lines.append(f"#h\t{hash_line}")
    return "\n".join(lines) + "\n"


def rehash(text: str, fmt: str = "{:08x}") -> str:
    """`text` with a correct #h line appended, words formatted with `fmt`."""
    digest = hashlib.sha1("".join(hash_input(line) for line in text.split("\n")).encode())
    words = [int.from_bytes(digest.digest()[i:i + 4], "big") for i in range(0, 20, 4)]
    return text + "#h\t" + " ".join(fmt.format(w) for w in words) + "\n"


def at(year_month_day: str) -> int:
    """NTP seconds of a UTC midnight, e.g. at('2017-01-01')."""
    return next(t for t, _ in LEAPS if ntp_date(t) == year_month_day)


def messages(result) -> list[str]:
    return [str(d) for d in result.diagnostics]


# -- the real format ---------------------------------------------------------------------


def test_sample_parses_with_the_iers_hash():
    result = parse_leapfile(sample(hash_line=IERS_HASH), "leap-seconds.list")
    assert result.diagnostics == ()
    assert result.hash_status == "good"
    table = result.table
    assert table is not None
    assert len(table.entries) == 28
    assert table.entries[0] == LeapEntry(2272060800, 10)
    assert table.entries[-1] == LeapEntry(3692217600, 37)
    assert (table.updated, table.expiry) == (UPDATED, EXPIRES)


def test_hash_input_follows_ntpd():
    assert hash_input("#$\t3960835200") == "3960835200"
    assert hash_input("#@ 3991593600 # 28 June 2026") == "3991593600"
    assert hash_input("2272060800      10      # 1 Jan 1972") == "227206080010"
    assert hash_input("#h 49db2447") == ""
    assert hash_input("# 1 Jan 1972") == ""
    assert hash_input(" 2272060800 10") == ""  # ntpd hashes only lines starting with a digit
    assert hash_input("\u0663 1") == ""  # Arabic-Indic three is no ASCII digit


def test_crlf_line_endings_are_accepted():
    text = sample(hash_line=IERS_HASH).replace("\n", "\r\n")
    assert parse_leapfile(text.encode()).hash_status == "good"


@pytest.mark.skipif(not Path("/usr/share/zoneinfo/leap-seconds.list").exists(),
                    reason="no tzdata leap-seconds.list on this machine")
def test_the_system_copy_verifies():
    result = load_leapfile("/usr/share/zoneinfo/leap-seconds.list", now_ntp=UPDATED)
    assert result.hash_status == "good" and result.table is not None
    assert result.table.tai_offset(EXPIRES - 1) == 37


# -- the hash ----------------------------------------------------------------------------


def test_altered_data_fails_the_hash():
    text = sample(hash_line=IERS_HASH).replace("3644697600      36", "3644697600      36 ", 1)
    assert parse_leapfile(text).hash_status == "good"  # white space is not hashed
    text = sample(hash_line=IERS_HASH, expires=EXPIRES + 180 * DAY)  # a forged expiry
    result = parse_leapfile(text, "leap.list")
    assert result.hash_status == "bad" and result.table is None
    assert messages(result) == [
        "leap.list: error: SHA-1 hash mismatch: the file was altered or damaged; "
        "or use 'leapfile FILE ignorehash' to skip the check"
    ]


def test_ignorehash_loads_a_bad_hash_with_a_warning():
    text = sample(hash_line=IERS_HASH, expires=EXPIRES + 180 * DAY)
    result = parse_leapfile(text, checkhash=False)
    assert result.table is not None and result.table.expiry == EXPIRES + 180 * DAY
    assert [d.severity for d in result.diagnostics] == ["warning"]


def test_a_missing_hash_is_rejected_like_ntpd_unless_ignorehash():
    checked = parse_leapfile(sample())
    assert checked.hash_status == "missing" and checked.table is None
    assert "no #h line" in messages(checked)[0]
    ignored = parse_leapfile(sample(), checkhash=False)
    assert ignored.table is not None
    assert [d.severity for d in ignored.diagnostics] == ["warning"]


def test_hash_words_without_leading_zeros_are_accepted():
    # Find an update time whose digest has a word below 0x10000000, then drop its zeros.
    for updated in range(UPDATED, UPDATED + 100):
        text = sample(updated=updated)
        if rehash(text, "{:08x}") != rehash(text, "{:x}"):
            break
    else:
        pytest.fail("no digest with a leading zero in 100 tries")
    result = parse_leapfile(rehash(text, "{:x}"))
    assert result.hash_status == "good" and result.table is not None


@pytest.mark.parametrize(
    ("hash_line", "col"),
    [("49db2447 571e5e1b 2f002a53 9c8da8e4", 3),
     ("49db2447 571e5e1b 2f002a53 9c8da8e4 39b8e49e 00", 49),
     ("49db2447 571e5e1b 2f002a53 9c8da8e4 39b8e49g", 40),
     ("49db2447 571e5e1b 2f002a53 9c8da8e4 139b8e49e", 40)],
)
def test_a_malformed_hash_line_is_located(hash_line, col):
    text = sample(hash_line=hash_line)
    line = text.split("\n").index(f"#h\t{hash_line}") + 1
    result = parse_leapfile(text, "l")
    assert result.hash_status == "malformed" and result.table is None
    assert messages(result)[0].startswith(f"l:{line}:{col}: error: malformed #h line")


# -- queries -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table() -> LeapTable:
    result = parse_leapfile(sample(hash_line=IERS_HASH))
    assert result.table is not None
    return result.table


def test_tai_offset(table):
    assert table.tai_offset(2272060800 - 1) is None  # before 1972: not an integer offset
    assert table.tai_offset(2272060800) == 10
    assert table.tai_offset(at("2017-01-01") - 1) == 36  # 2016-12-31T23:59:59 (and :60)
    assert table.tai_offset(at("2017-01-01")) == 37
    assert table.tai_offset(EXPIRES + 10 * 365 * DAY) == 37


def test_leap_pending_only_on_the_last_day(table):
    leap = at("2017-01-01")
    assert table.leap_pending(leap - DAY - 1) == 0  # 2016-12-30T23:59:59
    assert table.leap_pending(leap - DAY) == 1  # 2016-12-31T00:00:00
    assert table.leap_pending(leap - 1) == 1
    assert table.leap_pending(leap) == 0  # done
    assert table.leap_pending(at("2015-07-01") - 3600) == 1
    assert table.leap_pending(2272060800 - 3600) == 0  # the first entry is no leap
    assert table.leap_pending(EXPIRES) == 0


def test_next_leap(table):
    assert table.next_leap(at("2015-07-01")) == LeapEntry(3692217600, 37)
    assert table.next_leap(at("2017-01-01")) is None
    assert table.next_leap(0) is None  # the base entry is no leap


def test_a_negative_leap_second_is_pending_as_minus_one():
    leaps = [*LEAPS, (3692217600 + 1000 * DAY, 36)]
    result = parse_leapfile(sample(leaps=leaps), checkhash=False)
    assert result.table is not None
    assert result.table.leap_pending(3692217600 + 999 * DAY + 5) == -1


def test_expiry(table):
    assert not table.expired(EXPIRES - 1)
    assert table.expired(EXPIRES)
    assert LeapTable(table.entries, None, None).expired(0)


def test_an_expired_file_loads_with_a_warning():
    text = sample(hash_line=IERS_HASH)
    assert parse_leapfile(text, now_ntp=EXPIRES - 1).diagnostics == ()
    result = parse_leapfile(text, "leap.list", now_ntp=EXPIRES)
    assert result.table is not None
    assert messages(result)[0].startswith("leap.list: warning: leap second file expired on "
                                          "2026-06-28")


def test_no_expiry_line_warns():
    text = rehash("\n".join(f"{t} {tai}" for t, tai in LEAPS) + "\n")
    result = parse_leapfile(text, "x")
    assert result.table is not None and result.table.expiry is None
    assert messages(result) == ["x: warning: no #@ (expiry) line: the table counts as expired"]


# -- bad lines: each one named with file:line:col, and the file rejected ------------------


def bad(line: str, checkhash: bool = False) -> list[str]:
    """Messages for a good sample with `line` added after the data (line 41)."""
    text = sample(updated=None).replace("#\n#\tThe hash", f"{line}\n#\tThe hash", 1)
    assert text.split("\n")[40] == line
    result = parse_leapfile(text, "f", checkhash=checkhash)
    assert result.table is None
    return messages(result)


NEXT = 3692217600 + 365 * DAY


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("hello 38", "f:41:1: error: 'hello' is not NTP seconds"),
        ("4000000000", "f:41:1: error: expected 'NTP-seconds TAI-UTC' (two numbers)"),
        (f"{NEXT} 38 1 Jan 2018", "f:41:15: error: unexpected '1' after TAI-UTC"),
        (f"{NEXT} x38", "f:41:12: error: 'x38' is not a TAI-UTC offset"),
        (f"{NEXT} 99999", "f:41:12: error: '99999' is not a TAI-UTC offset"),
        (f"{NEXT + 1} 38", f"f:41:1: error: {NEXT + 1} is not a UTC midnight"),
        ("3692217600 38", "f:41:1: error: entries must be in increasing time order: "
                          "2017-01-01 does not follow 2017-01-01"),
        ("3683577600 38", "f:41:1: error: entries must be in increasing time order"),
        (f"{NEXT} 39", "f:41:12: error: TAI-UTC goes from 37 to 39"),
        (f"  {NEXT} 38", "f:41:3: error: a data line must start in column 1"),
        (f"{NEXT}\x0038", "f:41:11: error: NUL byte"),
        (f"{NEXT} 38\x1b", "f:41:14: error: control character U+001B"),
        ("#@ 4000000000", "f:41:1: error: second #@ (expiry time) line"),
        ("#$", "f:41:3: error: #$ line must hold one number: the update time"),
        ("#$ 12345678901234", "f:41:4: error: #$ line must hold one number"),
        ("1" * 5000, "f:41:4097: error: line is longer than 4096 characters"),
    ],
)
def test_bad_lines(line, expected):
    found = bad(line)
    assert any(m.startswith(expected) for m in found), found


def test_invalid_utf8_outside_a_comment_is_an_error():
    data = sample(hash_line=IERS_HASH).encode().replace(b"2272060800", b"22720608\xff0", 1)
    result = parse_leapfile(data, "f")
    assert result.table is None
    assert messages(result)[0].startswith("f:13:9: error: invalid UTF-8 byte 0xFF")


def test_latin1_in_a_comment_only_warns():
    data = sample(hash_line=IERS_HASH).encode().replace(b"sample", b"\xe9chantillon", 1)
    result = parse_leapfile(data, "f")
    assert result.table is not None and result.hash_status == "good"
    assert [d.severity for d in result.diagnostics] == ["warning"]


def test_an_empty_file_is_rejected():
    result = parse_leapfile(b"", "f", checkhash=False)
    assert result.table is None
    assert "f: error: no leap second entries" in messages(result)


def test_load_reports_an_unreadable_file(tmp_path):
    result = load_leapfile(str(tmp_path / "nope"))
    assert result.table is None
    assert messages(result)[0].startswith(f"{tmp_path / 'nope'}: error: cannot read leap")


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "leap-seconds.list"
    path.write_text(sample(hash_line=IERS_HASH))
    result = load_leapfile(str(path), now_ntp=UPDATED)
    assert result.table is not None and result.diagnostics == ()


@given(st.text(max_size=300), st.booleans())
def test_never_raises(text, checkhash):
    result = parse_leapfile(text, "fuzz", checkhash=checkhash, now_ntp=EXPIRES)
    if result.table is not None:
        assert not result.errors
        now = result.table.entries[-1].ntp_seconds
        assert result.table.leap_pending(now) in (-1, 0, 1)


# -- the table for the engine, and the daemon's watch on the file -----------------------


def test_the_engine_gets_the_table_in_unix_seconds(table):
    listed = table.leap_list()
    assert listed.changes[0] == (63_072_000, 10)  # 1972-01-01
    assert listed.changes[-1] == (1_483_228_800, 37)  # 2017-01-01
    assert listed.expires == EXPIRES - 2_208_988_800
    assert listed.tai_offset(1_483_228_800 - 1) == 36


def test_the_watch_reads_the_file_once_until_it_changes(tmp_path):
    path = tmp_path / "leap-seconds.list"
    path.write_text(sample(hash_line=IERS_HASH))
    reads = []
    watch = LeapFileWatch(str(path), read_file=lambda p: reads.append(p) or Path(p).read_bytes())
    first = watch.check(EXPIRES - DAY)
    assert first is not None and first.table is not None and watch.table is first.table
    assert watch.check(EXPIRES - DAY) is None
    assert len(reads) == 1


def test_the_watch_reads_a_new_copy_renamed_over_the_file(tmp_path):
    path = tmp_path / "leap-seconds.list"
    path.write_text(sample(hash_line=IERS_HASH))
    watch = LeapFileWatch(str(path))
    watch.check(EXPIRES - DAY)
    newer = tmp_path / "new"
    later = EXPIRES + 180 * DAY
    newer.write_text(rehash(sample(expires=later)))
    newer.replace(path)
    result = watch.check(EXPIRES - DAY)
    assert result is not None and watch.table is not None and watch.table.expiry == later


def test_a_changed_file_that_does_not_parse_leaves_the_last_good_table(tmp_path):
    path = tmp_path / "leap-seconds.list"
    path.write_text(sample(hash_line=IERS_HASH))
    watch = LeapFileWatch(str(path))
    good = watch.check(EXPIRES - DAY)
    assert good is not None
    path.write_text(sample(hash_line=IERS_HASH) + "3723753600 38\n")  # and the hash fails
    damaged = watch.check(EXPIRES - DAY)
    assert damaged is not None and damaged.table is None and damaged.errors
    assert watch.table is good.table


def test_a_file_that_goes_away_and_comes_back_is_read_again(tmp_path):
    path = tmp_path / "leap-seconds.list"
    text = sample(hash_line=IERS_HASH)
    path.write_text(text)
    watch = LeapFileWatch(str(path))
    watch.check(EXPIRES - DAY)
    path.unlink()
    gone = watch.check(EXPIRES - DAY)
    assert gone is not None and gone.table is None and watch.table is not None
    assert watch.check(EXPIRES - DAY) is None  # still gone: not read (or logged) again
    path.write_text(text)
    back = watch.check(EXPIRES - DAY)
    assert back is not None and back.table is not None
