"""The leapfile in a running daemon: the LI it serves (from every worker), and a changed
file read again without a restart.

The daemon runs with --observe on a clock that reads 30 June 2027, 12:00 UTC (an
ObserveClock shifted by a constant, patched in before main() as tests/faults/harness.py
does), so that a leap at the end of June is announced whatever the date on this machine:
LI goes on the wire on the leap's day only. The local clock driver is
its only source: the leap list holds whatever the daemon serves from.
"""

from __future__ import annotations

import calendar
import hashlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pyntpd.config.leapfile import hash_input
from pyntpd.proto.timestamp import NTP_UNIX_OFFSET
from tests.support import LOCAL_CONF, Pyntpd, query

JUN_30_2027_NOON = calendar.timegm((2027, 6, 30, 12, 0, 0))
JAN_2017 = calendar.timegm((2017, 1, 1, 0, 0, 0))
JUL_2027 = calendar.timegm((2027, 7, 1, 0, 0, 0))
EXPIRES = calendar.timegm((2027, 12, 28, 0, 0, 0))

SHIFTED = f"""\
import sys, time
from pyntpd.clock.observe import ObserveClock
from pyntpd.daemon import app

SHIFT = {JUN_30_2027_NOON} * 10**9 - time.time_ns()


class ShiftedClock(ObserveClock):
    def now(self) -> int:
        return time.time_ns() + SHIFT


app.make_clock = lambda options, config: ShiftedClock()
from pyntpd.cli.pyntpd import main
sys.exit(main())
"""


def shifted(directory: Path) -> Callable[[list[str]], list[str]]:
    program = directory / "pyntpd-30-june-2027"
    program.write_text(f"#!{sys.executable}\n{SHIFTED}")
    program.chmod(0o755)
    return lambda argv: [str(program), *argv[3:]]  # instead of python -m pyntpd.cli.pyntpd


def leap_seconds_list(*changes: tuple[int, int]) -> str:
    """A leap-seconds.list with a good hash: (Unix midnight, TAI-UTC from then on)."""
    lines = [f"#$\t{JAN_2017 + NTP_UNIX_OFFSET}", f"#@\t{EXPIRES + NTP_UNIX_OFFSET}"]
    lines += [f"{t + NTP_UNIX_OFFSET}\t{tai}" for t, tai in changes]
    digest = hashlib.sha1("".join(hash_input(line) for line in lines).encode()).digest()
    words = (int.from_bytes(digest[i:i + 4], "big") for i in range(0, 20, 4))
    return "\n".join([*lines, "#h\t" + " ".join(f"{w:08x}" for w in words)]) + "\n"


NO_LEAP = leap_seconds_list((JAN_2017, 37))
NEGATIVE_LEAP = leap_seconds_list((JAN_2017, 37), (JUL_2027, 36))


def served_leaps(port: int, count: int) -> set[int]:
    return {query(port).header.leap for _ in range(count)}


def test_workers_serve_li_2_on_the_day_of_a_negative_leap_in_the_leapfile(tmp_path: Path) -> None:
    leapfile = tmp_path / "leap-seconds.list"
    leapfile.write_text(NEGATIVE_LEAP)
    conf = tmp_path / "ntp.conf"
    conf.write_text(LOCAL_CONF + f"leapfile {leapfile}\n")
    with Pyntpd("-c", str(conf), "--workers", "2", wrap=shifted(tmp_path)) as d:
        assert served_leaps(d.port, 40) == {2}
        assert d.proc is not None and d.proc.poll() is None
        output = d.output()
    assert "Traceback" not in output and "struct.error" not in output


def test_a_changed_leapfile_is_read_again_at_sighup(tmp_path: Path) -> None:
    leapfile = tmp_path / "leap-seconds.list"
    leapfile.write_text(NO_LEAP)
    conf = tmp_path / "ntp.conf"
    conf.write_text(LOCAL_CONF + f"leapfile {leapfile}\n")
    with Pyntpd("-c", str(conf), wrap=shifted(tmp_path)) as d:
        assert served_leaps(d.port, 5) == {0}
        new = tmp_path / "leap-seconds.list.new"
        new.write_text(NEGATIVE_LEAP)
        new.replace(leapfile)  # as update-leap and package managers install a new copy
        d.signal(signal.SIGHUP)
        d.wait_for_log("read again")  # logged once the new list is being served
        assert served_leaps(d.port, 5) == {2}
