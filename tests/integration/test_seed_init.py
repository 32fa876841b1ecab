"""The seed machine's own init script, unchanged, with NTPD pointing at pyntpd (issue 11,
item 8).

`ntpd.init` decides whether the start worked by grepping `ps -Ao args` for
`^$NTPD $NTPD_OPTS` one second later; when it does not match it prints FAILED!, deletes the
pidfile and leaves the daemon running. So the daemon's argument line must read exactly as
invoked (pyntpd retitles itself with setproctitle), not `.../python .../pyntpd ...`.

The script runs as a copy whose variable assignments only are pointed at this test's
pyntpd, pidfile and options (observe-only, a free port, this test's configuration); every
line of its logic is the seed's, which the test checks before running it.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO, Pyntpd, free_udp_port, query

SEED_INIT = REPO / "tests" / "data" / "seed" / "ntpd.init"
SHARED_INIT = REPO / ".." / "shared" / "seed" / "ntpd.init"
# The script's settings: the only lines the copy changes.
VARIABLES = ("NTPD=", "PIDFILE=", "USER=", "GROUP=", "NTPD_OPTS=")
CONF = "server 127.127.1.0\nfudge 127.127.1.0 stratum 10\nrestrict default\n"


def _entry_point(path: Path) -> Path:
    """A `pyntpd` as pip installs it: a Python script whose interpreter line runs it."""
    path.write_text(f"#!{sys.executable}\nimport sys\nfrom pyntpd.cli.pyntpd import main\n"
                    "sys.exit(main())\n")
    path.chmod(0o755)
    return path


def _drop_to() -> str:
    """The seed's `-u ntp:ntp`, with a user every Debian system has."""
    nobody = pwd.getpwnam("nobody")
    return f"nobody:{grp.getgrgid(nobody.pw_gid).gr_name}"


def _pointed_copy(tmp_path: Path, settings: dict[str, str]) -> Path:
    lines = SEED_INIT.read_text().splitlines(keepends=True)
    out = []
    for line in lines:
        name = line.split("=", 1)[0] + "=" if line.startswith(VARIABLES) else None
        out.append(f"{name}{settings[name]}\n" if name in settings else line)
    copy = tmp_path / "ntpd.init"
    copy.write_text("".join(out))
    # Nothing but the settings differs from the seed.
    changed = [(a, b) for a, b in zip(lines, out, strict=True) if a != b]
    assert changed and all(a.startswith(VARIABLES) for a, _ in changed), changed
    return copy


@contextlib.contextmanager
def seed_script(tmp_path: Path) -> Iterator[tuple[Path, Path, int]]:
    """The seed's ntpd.init pointed at pyntpd; yields (script, pidfile, port) and stops
    whatever daemon is left when the test ends."""
    pyntpd = _entry_point(tmp_path / "pyntpd")
    pidfile = tmp_path / "ntpd.pid"
    conf = tmp_path / "ntp.conf"
    conf.write_text(CONF)
    port = free_udp_port()
    settings = {
        "NTPD=": str(pyntpd),
        "PIDFILE=": str(pidfile),
        # The seed's "-g -u ntp:ntp -p $PIDFILE", plus what keeps a test off port 123 and
        # off this machine's clock.
        "NTPD_OPTS=": f'"-g -u {_drop_to()} -p $PIDFILE -c {conf} --port {port} --observe"',
    }
    script = _pointed_copy(tmp_path, settings)
    pids: list[int] = []
    try:
        yield script, pidfile, port
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError):
            pids.append(int(pidfile.read_text()))
        for pid in pids + _daemons_of(pyntpd):
            _kill(pid)


def _daemons_of(program: Path) -> list[int]:
    """Processes running `program`, retitled or not (FAILED! leaves one behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if str(program).encode() in cmdline.replace(b"\0", b" ").split(b" ")[:2]:
                    found.append(int(entry.name))
    return found


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


def _run(script: Path, action: str) -> subprocess.CompletedProcess[str]:
    # ps cuts its lines at $COLUMNS, and this test's paths make a long line: readline, if
    # something in the test process loaded it, exported COLUMNS=80 behind os.environ's back.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(["sh", str(script), action], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env=env)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/cmdline").read_bytes() != b""  # not a zombie


def test_the_test_copy_of_the_seed_script_is_the_seeds():
    if not SHARED_INIT.exists():
        pytest.skip("shared seed directory not present")
    assert SEED_INIT.read_bytes() == SHARED_INIT.read_bytes()


def test_the_seed_init_script_starts_reports_restarts_and_stops_pyntpd(tmp_path):
    with seed_script(tmp_path) as (script, pidfile, port):
        started = _run(script, "start")
        assert started.stdout == "Starting NTP daemon... OK!\n", started
        assert started.returncode == 0
        first = int(pidfile.read_text())
        assert _alive(first)
        assert query(port).header.stratum == 11

        status = _run(script, "status")
        assert status.stdout == f"NTP daemon is running as {first}\n"

        restarted = _run(script, "restart")
        assert re.fullmatch(r"Stopping NTP daemon\.\.\.\.* OK!\nStarting NTP daemon\.\.\. OK!\n",
                            restarted.stdout), restarted
        assert restarted.returncode == 0
        second = int(pidfile.read_text())
        assert second != first and not _alive(first) and _alive(second)
        assert query(port).header.stratum == 11

        stopped = _run(script, "stop")
        assert re.fullmatch(r"Stopping NTP daemon\.\.\.\.* OK!\n", stopped.stdout), stopped
        assert stopped.returncode == 0
        assert not pidfile.exists() and not _alive(second)
        assert _run(script, "status").stdout == "NTP daemon is not running\n"


def test_the_daemon_started_through_its_entry_point_reads_as_invoked(tmp_path):
    with seed_script(tmp_path) as (script, pidfile, _port):
        assert _run(script, "start").returncode == 0
        pid = int(pidfile.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")
        opts = script.read_text().split('NTPD_OPTS="', 1)[1].split('"', 1)[0]
        expected = f"{tmp_path / 'pyntpd'} {opts.replace('$PIDFILE', str(pidfile))}"
        assert " ".join(argv) == expected  # no interpreter in front
        # The program's name stays the kernel's: pidof, killall and pgrep look there.
        assert Path(f"/proc/{pid}/comm").read_text() == "pyntpd\n"


def test_a_daemon_run_as_python_dash_m_keeps_its_argument_line(tmp_path):
    (tmp_path / "ntp.conf").write_text(CONF)
    with Pyntpd("-c", str(tmp_path / "ntp.conf")) as daemon:
        assert daemon.proc is not None
        cmdline = Path(f"/proc/{daemon.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[:3] == [sys.executable.encode(), b"-m", b"pyntpd.cli.pyntpd"]
