"""A panic exit (issue 10, item 6): the sources' time is beyond `tinker panic` (1000 s).

The daemon exits with a status of its own (EXIT_PANIC, 150) that the shipped unit does not
restart on (tests/cli/test_service.py checks the unit); under a SysV init the pidfile keeps
a note, and `pyntpctl status` (and so the init script) says what happened and what to do.

The upstream is tests/liar.py, a real responder whose clock runs 2000 s ahead. The daemon
runs with a simulated clock (tests/faults/harness.RUNNING_SIMCLOCK): it believes it
disciplines a clock, which is the only way it can panic, while this machine's clock is never
touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyntpd.daemon.exitcodes import EXIT_PANIC
from pyntpd.daemon.pidfile import pid_running
from tests.faults.harness import no_traceback, program, wrapper
from tests.support import Pyntpd, client_request, exchange, free_udp_port

REPO = Path(__file__).resolve().parents[2]
INIT_SCRIPT = REPO / "packaging" / "pyntpd.init"
AHEAD = 2000.0  # s: twice the panic threshold
PANIC_LOG = "exceeds the sanity limit of 1000 s"


@pytest.fixture
def liar() -> Iterator[int]:
    """A server 2000 s ahead on 127.0.0.1; its port."""
    port = free_udp_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.liar", str(port), str(AHEAD)],
                            cwd=REPO)
    try:
        # Answering before anyone else picks a "free" port: it is taken from then on.
        deadline = time.monotonic() + 10
        while exchange(port, client_request(), timeout=0.2) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "the liar never answered"
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # World-readable (unlike tmp_path): the daemon reads it after -u nobody.
    with tempfile.TemporaryDirectory(prefix="pyntpd-panic-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


def conf_for(directory: Path, liar_port: int) -> Path:
    conf = directory / "ntp.conf"
    conf.write_text(f"server 127.0.0.1 port {liar_port} iburst minpoll 3 maxpoll 3\n"
                    "restrict default\n")
    conf.chmod(0o644)
    return conf


def wait_exit(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pid_running(pid):
        assert time.monotonic() < deadline, f"pid {pid} still running after {timeout} s"
        time.sleep(0.05)


@pytest.mark.needs_sys_time
def test_a_panic_exits_with_its_own_status_and_notes_it_in_the_pidfile(
        workdir: Path, liar: int) -> None:
    pidfile = workdir / "pyntpd.pid"
    simclock = program(workdir, running_clock=True)
    daemon = Pyntpd("-c", str(conf_for(workdir, liar)), "-p", str(pidfile),
                    wrap=wrapper(simclock), observe=False)
    with daemon:
        assert daemon.proc is not None
        daemon.proc.wait(30)
        assert daemon.proc.returncode == EXIT_PANIC
        output = daemon.output()
        assert f"time correction of +{AHEAD:.0f} s {PANIC_LOG}" in output
        assert f"exiting with status {EXIT_PANIC} (panic)" in output
        assert "clock stepped" not in output
        no_traceback(output)
    assert pidfile.read_text() == f"{daemon.proc.pid}\npanic\n"


@pytest.mark.needs_sys_time
def test_with_dash_g_the_first_correction_is_not_a_panic(workdir: Path, liar: int) -> None:
    simclock = program(workdir, running_clock=True)
    with Pyntpd("-c", str(conf_for(workdir, liar)), "-g", wrap=wrapper(simclock),
                observe=False) as daemon:
        daemon.wait_for_log("clock stepped by +2000", 30)
        assert daemon.stop() == 0
        assert PANIC_LOG not in daemon.output()


def _init(env: dict[str, str], action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(INIT_SCRIPT), action], capture_output=True, text=True,
                          timeout=60, env=env)


@pytest.mark.needs_sys_time
def test_the_init_script_reports_a_panic_exit_and_what_to_do(workdir: Path, liar: int) -> None:
    """As the SysV script runs it by default: detached, -u (here nobody), a pidfile in a
    directory the daemon cannot write once it has dropped root."""
    pidfile = workdir / "pyntpd.pid"
    ctl = workdir / "pyntpctl"
    ctl.write_text(f'#!/bin/sh\nexec {sys.executable} -m pyntpd.cli.pyntpctl "$@"\n')
    ctl.chmod(0o755)
    log = workdir / "pyntpd.log"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PYNTPD_DEFAULTS")}
    daemon = program(workdir, running_clock=True)
    env.update(PYNTPCTL=str(ctl), PIDFILE=str(pidfile), PYNTPD=str(daemon),
               PYNTPD_DEFAULTS=str(workdir / "none"),
               PYNTPD_OPTS=f"-u nobody --port {free_udp_port()} -c {conf_for(workdir, liar)} "
                           f"-l {log}")
    started = _init(env, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int(pidfile.read_text())
    try:
        wait_exit(pid, 30)
        assert pidfile.read_text() == f"{pid}\npanic\n", log.read_text()
        status = _init(env, "status")
        assert status.returncode == 1  # LSB: the program is dead and its pidfile remains
        assert status.stdout.startswith(
            "pyntpd is not running: it exited in panic at 20")
        assert (f"(pid {pid}, exit status {EXIT_PANIC}): its sources' time was further from "
                "the clock than the panic threshold. Check the sources and the time, set the "
                "clock by hand, then start pyntpd again") in status.stdout
        again = _init(env, "start")  # the administrator's decision: honoured, and said
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"pyntpd last exited in panic (pid {pid}); starting it again as asked" in (
            again.stdout)
        assert f"removing stale pidfile {pidfile}: pid {pid} exited in panic" in again.stdout
    finally:
        _init(env, "stop")
        wait_exit(pid, 5)
