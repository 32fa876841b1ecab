"""pyntpd takes time from Debian's gpsd, fed by gpsfake replaying an NMEA log written here
with known timing: through gpsd's SHM segment (127.127.28.0, which gpsd as root creates
owner-only) and, separately, through its JSON socket (127.127.46.0).

gpsfake writes one $GPRMC a second over TCP (gpsd writes no SHM time for a pty source,
its test-harness guard), each claiming the time of its planned send instant plus OFFSET.
gpsfake's pacing is not exact (it starts when it is ready and drifts ~1 ms a second), so
the test also watches gpsd's JSON stream itself (gpspipe) and takes the log's time minus
each TPV's arrival as the truth; pyntpd's offsets must match it within what that pacing
allows (TOLERANCE). Everything runs in a network and IPC namespace of the test's own:
gpsd on 127.0.0.1:2947 and the NTP0 segments are private to it. Daemon under --observe.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.interop.refdaemons import require
from tests.support import Pyntpd, config_file

REPO = Path(__file__).resolve().parents[2]
PORT = 12300
OFFSET = 1.25  # s: the log's time is this far ahead of its planned send instant
SENTENCES = 90
TOLERANCE = 0.05  # s: gpsfake drifts ~1 ms a second: up to 20 ms within the window, + noise

pytestmark = pytest.mark.interop


def checksum(body: str) -> str:
    value = 0
    for ch in body:
        value ^= ord(ch)
    return f"{value:02X}"


def nmea_log(path: Path, start: int) -> None:
    lines = []
    for k in range(SENTENCES):
        t = datetime.datetime.fromtimestamp(start + k + OFFSET, datetime.UTC)
        hms = t.strftime("%H%M%S") + f".{t.microsecond // 10000:02d}"
        body = (f"GPRMC,{hms},A,4807.038,N,01131.000,E,000.0,000.0,{t.strftime('%d%m%y')}"
                ",,,A")
        lines.append(f"${body}*{checksum(body)}\r\n")
    path.write_text("".join(lines))


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    """A network + IPC namespace with lo up; yields its holder's pid."""
    holder = subprocess.Popen(["unshare", "--net", "--ipc", "--", "cat"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        own = Path("/proc/self/ns/net").readlink()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{holder.pid}/ns/net").readlink() == own:
            assert time.monotonic() < deadline, "unshare never made the namespace"
            time.sleep(0.01)
        subprocess.run([*enter(str(holder.pid)), "ip", "link", "set", "lo", "up"], check=True,
                       timeout=10)
        yield str(holder.pid)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        try:
            holder.wait(5)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(5)


def enter(pid: str) -> list[str]:
    return ["nsenter", f"--net=/proc/{pid}/ns/net", f"--ipc=/proc/{pid}/ns/ipc", "--"]


@contextlib.contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def observed_offsets(pipe_log: Path) -> list[tuple[float, float]]:
    """(arrival, log time - arrival) of every TPV gpspipe saw."""
    out = []
    for line in pipe_log.read_text(errors="replace").splitlines():
        m = re.match(r"(\S+ \S+): (\{.*\})$", line)
        if not m:
            continue
        record = json.loads(m.group(2))
        if record.get("class") != "TPV" or "time" not in record:
            continue
        arrival = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(
            tzinfo=datetime.UTC).timestamp()
        stamp = datetime.datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.UTC).timestamp()
        out.append((arrival, stamp - arrival))
    return out


def pyntpq(pid: str, *commands: str) -> list[dict[str, object]]:
    args = [a for c in commands for a in ("-c", c)]
    result = subprocess.run(
        [*enter(pid), sys.executable, "-m", "pyntpd.cli.pyntpq", "--json", "--port", str(PORT),
         *args, "127.0.0.1"], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def billboard(pid: str) -> dict[str, dict[str, object]]:
    """The peers rows by name, and each clock's `cv` answer as cv:NAME."""
    [peers] = pyntpq(pid, "peers")
    rows = {str(row["remote"]): row for row in peers["peers"]}  # type: ignore[union-attr]
    names = list(rows)
    clocks = pyntpq(pid, *(f"cv {rows[name]['associd']}" for name in names))
    for name, clock in zip(names, clocks, strict=True):
        rows[f"cv:{name}"] = clock
    return rows


def test_pyntpd_takes_gpsds_time_from_its_shm_segment_and_its_json_socket(tmp_path):
    require("gpsd", "gpsfake", "gpspipe", "netns")
    log = tmp_path / "replay.nmea"
    start = int(time.time()) + 2
    nmea_log(log, start)
    conf = ("server 127.127.28.0 minpoll 4 maxpoll 4\n"
            "fudge 127.127.28.0 refid GPS\n"
            "server 127.127.46.0 minpoll 4 maxpoll 4 noselect\n"
            "restrict 127.0.0.1\n")
    with (namespace() as ns, config_file(conf) as path,
          process([*enter(ns), "gpsfake", "-1", "-n", "-t", "-q", "-c", "1", "-P", "2947",
                   str(log)], tmp_path / "gpsfake.log") as fake,
          Pyntpd("-c", path, port=PORT, wrap=lambda argv: [*enter(ns), *argv]) as daemon,
          process([*enter(ns), "gpspipe", "-w", "-u", "127.0.0.1:2947"],
                  tmp_path / "pipe.log")):
        deadline = time.monotonic() + 75
        rows: dict[str, dict[str, object]] = {}
        while time.monotonic() < deadline:
            time.sleep(2)
            assert fake.poll() is None, (tmp_path / "gpsfake.log").read_text()
            rows = billboard(ns)
            if all(int(rows.get(name, {}).get("reach", 0)) & 0o7 == 0o7  # type: ignore[call-overload]
                   for name in ("SHM(0)", "GPSD_JSON(0)")):
                break
        seen = time.time()
        observed = observed_offsets(tmp_path / "pipe.log")
        output = daemon.output()
    assert observed, (tmp_path / "pipe.log").read_text()
    # the truth for the last poll: what gpsd's own stream showed in the 16 s before
    recent = [off for at, off in observed if seen - 20 <= at <= seen]
    truth = sorted(recent)[len(recent) // 2]
    assert abs(truth - OFFSET) < 2.0  # the log's claim, give or take gpsfake's start
    shm_row, json_row = rows["SHM(0)"], rows["GPSD_JSON(0)"]
    assert (shm_row["refid"], shm_row["stratum"], shm_row["type"]) == ("GPS", 0, "l"), rows
    assert (json_row["refid"], json_row["stratum"], json_row["type"]) == ("GPSD", 0, "l"), rows
    print(f"log offset {OFFSET:+.3f} s; gpsd's stream showed {truth:+.6f} s; pyntpd: "
          f"SHM(0) {shm_row['offset_ms']} ms, GPSD_JSON(0) {json_row['offset_ms']} ms")
    for row in (shm_row, json_row):
        offset = float(str(row["offset_ms"])) / 1e3
        assert abs(offset - truth) < TOLERANCE, (row, truth, output)
    devices = {rows[f"cv:{k}"]["variables"]["device"]  # type: ignore[index]
               for k in ("SHM(0)", "GPSD_JSON(0)")}
    assert devices == {"SHM/Shared memory interface", "GPSD JSON client clock"}
