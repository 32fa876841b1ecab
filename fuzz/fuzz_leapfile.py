"""atheris harness: the leap second list parser never raises, and what it accepts is sane.

    .venv/bin/python fuzz/fuzz_leapfile.py fuzz/corpus/leapfile -max_total_time=60
"""

import sys

import atheris

with atheris.instrument_imports():
    from pyntpd.config.leapfile import parse_leapfile


NOW = 3_991_593_600  # 2026-06-28


def _check(data: bytes, checkhash: bool) -> None:
    result = parse_leapfile(data, "fuzz.list", checkhash=checkhash, now_ntp=NOW)
    table = result.table
    if table is None:
        assert result.errors
        return
    assert not result.errors
    if checkhash:
        assert result.hash_status == "good"
    times = [e.ntp_seconds for e in table.entries]
    assert times == sorted(set(times))
    for t in (0, NOW, times[0] - 1, times[-1] - 1, times[-1]):
        assert table.leap_pending(t) in (-1, 0, 1)
        offset = table.tai_offset(t)
        assert offset is None or abs(offset) <= 1000


def test_one_input(data: bytes) -> None:
    _check(data, checkhash=True)
    _check(data, checkhash=False)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
