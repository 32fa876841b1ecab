"""A real pyntpd reads NMEA from ntpd's fixed /dev/gps0, here a pseudo-terminal.

The daemon runs in a private mount namespace of the test's own whose /dev is a tmpfs with
the few nodes Python needs, the host's /dev/pts, and gps0 -> the pty's slave: the path is
ntpd's, unchanged, and nothing in the daemon honours a test hook. The test writes one $GPRMC
a second on the master, each stating its write instant plus OFFSET (and one garbage line a
second); pyntpd must report NMEA(0) with that offset (within the loop's and the scheduler's
latency) and count the garbage. Daemon under --observe."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import Pyntpd, config_file

REPO = Path(__file__).resolve().parents[2]
OFFSET = 0.75  # s: the sentences' time ahead of their write instant
TIME2 = 0.05  # s: fudge time2, added to every offset
TOLERANCE = 0.02  # s: the event loop's wake-up and the scheduler, on a busy 2-core machine

PRIVATE_DEV = r"""
set -e
d=$(mktemp -d)
mount -t tmpfs -o mode=755 tmpfs "$d"
for n in null zero random urandom; do touch "$d/$n"; mount --bind "/dev/$n" "$d/$n"; done
mkdir "$d/pts"; mount --bind /dev/pts "$d/pts"
ln -s "$GPS_SLAVE" "$d/gps0"
mount --move "$d" /dev
exec "$@"
"""


def checksum(body: str) -> str:
    value = 0
    for ch in body.encode():
        value ^= ch
    return f"{value:02X}"


def rmc(at: float) -> bytes:
    t = datetime.datetime.fromtimestamp(at, datetime.UTC)
    body = (f"GPRMC,{t.strftime('%H%M%S')}.{t.microsecond // 1000:03d},A,4807.038,N,"
            f"01131.000,E,0.0,0.0,{t.strftime('%d%m%y')},,,A")
    return f"${body}*{checksum(body)}\r\n".encode()


def pyntpq(port: int, *commands: str) -> list[dict[str, object]]:
    args = [a for c in commands for a in ("-c", c)]
    result = subprocess.run(
        [sys.executable, "-m", "pyntpd.cli.pyntpq", "--json", "--port", str(port), *args,
         "127.0.0.1"], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_pyntpd_takes_nmea_time_from_dev_gps0_with_the_offset_the_sentences_were_written_at():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    master, slave = os.openpty()
    slave_path = os.ttyname(slave)
    os.close(slave)
    conf = ("server 127.127.20.0 minpoll 4 maxpoll 4 mode 1\n"
            f"fudge 127.127.20.0 time2 {TIME2}\n"
            "restrict 127.0.0.1\n")
    wrap = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", PRIVATE_DEV,
            "sh"]
    try:
        with (config_file(conf) as path,
              Pyntpd("-c", path, env={"GPS_SLAVE": slave_path},
                     wrap=lambda argv: [*wrap, *argv]) as daemon):
            deadline = time.monotonic() + 60
            row: dict[str, object] = {}
            while time.monotonic() < deadline:
                os.write(master, rmc(time.time() + OFFSET) + b"$GPRMC,garbage*00\r\n")
                time.sleep(1.0)
                [peers] = pyntpq(daemon.port, "peers")
                row = {str(r["remote"]): r for r in peers["peers"]}.get(  # type: ignore[union-attr]
                    "NMEA(0)", {})
                if int(row.get("reach", 0)) & 0o3 == 0o3:  # type: ignore[call-overload]
                    break
            output = daemon.output()
            [clock] = pyntpq(daemon.port, f"cv {row.get('associd')}")
    finally:
        os.close(master)
    assert int(row.get("reach", 0)) & 0o3 == 0o3, (row, output)  # type: ignore[call-overload]
    assert (row["refid"], row["stratum"], row["type"]) == ("GPS", 0, "l"), row
    offset = float(str(row["offset_ms"])) / 1e3
    print(f"NMEA over a pty: sentences {OFFSET + TIME2:+.3f} s ahead; pyntpd reports "
          f"{offset:+.6f} s")
    assert abs(offset - (OFFSET + TIME2)) < TOLERANCE, (row, output)
    variables = clock["variables"]  # type: ignore[index]
    assert variables["device"] == "NMEA GPS Clock"
    assert int(variables["badformat"]) >= 2  # the garbage lines, counted
    assert str(variables["timecode"]).startswith("$GPRMC,")
