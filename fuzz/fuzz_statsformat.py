"""atheris harness: ntpd statistics lines (loopstats, peerstats, sysstats) as `pyntpctl plot`
reads them from files a user points it at.

    .venv/bin/python fuzz/fuzz_statsformat.py fuzz/corpus/statsformat -max_total_time=60

The input is a file's bytes, decoded as the plot tool decodes it. Every line goes to each of
the three parsers; loopstats and peerstats lines also go through the plot tool's reader and
its summary. Checked: the parsers raise only StatsParseError; what they accept has a finite
time that a datetime holds (the plot's axis) and finite values, formats back to a line
(`line()`) that parses to the same record again, and the summary of whatever was read never
fails.
"""

import datetime
import io
import math
import sys

import atheris

with atheris.instrument_imports():
    from pyntpd.cli.plot import SetData, read_lines, summary_rows
    from pyntpd.stats.statsformat import PARSERS, StatsParseError


def _check_line(line: str) -> None:
    for parse in PARSERS.values():
        try:
            record = parse(line)
        except StatsParseError:
            continue
        assert math.isfinite(record.time)
        datetime.datetime.fromtimestamp(record.time, datetime.UTC)  # what the plot draws
        once = record.line()
        again = parse(once)
        assert again.line() == once, f"{once!r} reads back as {again.line()!r}"


def test_one_input(data: bytes) -> None:
    lines = io.TextIOWrapper(io.BytesIO(data), encoding="ascii", errors="replace").readlines()
    for line in lines[:64]:
        _check_line(line)
    loop, peers = SetData("loopstats"), SetData("peerstats")
    read_lines("fuzz.loopstats", lines, PARSERS["loopstats"], -math.inf, math.inf, loop)
    read_lines("fuzz.peerstats", lines, PARSERS["peerstats"], -math.inf, math.inf, peers)
    assert loop.skipped + len(loop.records) <= len(lines)
    summary_rows(loop, peers)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
