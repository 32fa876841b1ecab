"""pyntpctl start/stop/restart/reload/status and the SysV script, run for real: forked pyntpd
daemons on loopback test ports (always --observe), real unrelated processes at the pidfile's
pid, every pidfile situation (none, live, stale, not ours, symlink, garbage)."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pyntpd.daemon.pidfile import pid_running
from tests.support import (
    LOCAL_CONF,
    Pyntpd,
    client_request,
    config_file,
    exchange,
    free_udp_port,
    query,
)

REPO = Path(__file__).resolve().parents[2]
INIT_SCRIPT = REPO / "packaging" / "pyntpd.init"
CTL_TIMEOUT = 60.0
STALE_REASON = re.compile(r"pid \d+ is not running")


@dataclass
class Service:
    """One test's pidfile, port and configuration; every daemon it saw is stopped after."""

    dir: Path
    port: int
    seen: set[int] = field(default_factory=set)

    @property
    def pidfile(self) -> Path:
        return self.dir / "pyntpd.pid"

    @property
    def log(self) -> Path:
        return self.dir / "pyntpd.log"

    def options(self, conf: str = LOCAL_CONF) -> str:
        config = self.dir / "ntp.conf"
        config.write_text(conf)
        return f"--observe --port {self.port} -c {config} -l {self.log}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PYNTPD")}
        if "PYNTPD_OPTS" not in extra:
            extra["PYNTPD_OPTS"] = self.options()
        return {**env, **extra}

    def ctl(self, command: str, *args: str,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "pyntpd.cli.pyntpctl", command, "--pidfile",
             str(self.pidfile), *args],
            capture_output=True, text=True, timeout=CTL_TIMEOUT, env=env or self.env())
        self.note(result.stdout + result.stderr)
        return result

    def note(self, text: str) -> None:
        self.seen.update(int(pid) for pid in re.findall(r"pid (\d+)", text))
        if self.pidfile.is_file() and not self.pidfile.is_symlink():
            content = self.pidfile.read_text().strip()
            if content.isdigit():
                self.seen.add(int(content))

    def daemon_pid(self) -> int:
        pid = int(self.pidfile.read_text())
        self.seen.add(pid)
        return pid

    def cleanup(self) -> None:
        self.note("")
        for pid in self.seen:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"pyntpd" in cmdline:  # a daemon of ours; the not-ours processes have fixtures
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def svc() -> Iterator[Service]:
    # World-readable, unlike pytest's tmp_path, so the unprivileged user can read the pidfile.
    with tempfile.TemporaryDirectory(prefix="pyntpd-svc-") as d:
        os.chmod(d, 0o755)
        s = Service(Path(d), free_udp_port())
        try:
            yield s
        finally:
            s.cleanup()


def _spawn_renamed(name: str, *, ignore_term: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    trap = "trap '' TERM; " if ignore_term else ""  # SIG_IGN survives exec
    proc = subprocess.Popen(["bash", "-c", f"{trap}exec -a {name} sleep 60"])
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0] != name.encode():
            assert time.monotonic() < deadline, "the stand-in never exec'd"
            time.sleep(0.01)
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def unrelated() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not an NTP daemon, as a reused pid would be."""
    yield from _spawn_renamed("sleep")


@pytest.fixture
def stubborn() -> Iterator[subprocess.Popen[bytes]]:
    """Looks like pyntpd but ignores SIGTERM: a hung daemon."""
    yield from _spawn_renamed("pyntpd-hung", ignore_term=True)


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _serving(port: int) -> bool:
    return exchange(port, client_request(), timeout=0.5) is not None


def _started_pid(result: subprocess.CompletedProcess[str]) -> int:
    match = re.search(r"pyntpd started \(pid (\d+)\)", result.stdout)
    assert match, result.stdout + result.stderr
    return int(match.group(1))


def _make_symlink(svc: Service) -> Path:
    target = svc.dir / "precious"
    target.write_text("keep me\n")
    svc.pidfile.symlink_to(target)
    return target


def _assert_symlink_untouched(svc: Service, target: Path) -> None:
    assert svc.pidfile.is_symlink() and target.read_text() == "keep me\n"


# --- start ------------------------------------------------------------------------------------


def test_start_without_a_pidfile_returns_once_serving(svc: Service) -> None:
    result = svc.ctl("start")
    assert result.returncode == 0, result.stderr
    pid = _started_pid(result)
    assert svc.daemon_pid() == pid and pid_running(pid)
    assert query(svc.port).header.stratum == 11  # no wait: start returned once it served


def test_start_with_a_live_daemon_starts_no_second_one(svc: Service) -> None:
    pid = _started_pid(svc.ctl("start"))
    result = svc.ctl("start")
    assert result.returncode == 0
    assert result.stdout == f"pyntpd is already running (pid {pid}); not starting another\n"
    assert svc.daemon_pid() == pid


def test_start_replaces_a_stale_pidfile(svc: Service, dead_pid: int) -> None:
    svc.pidfile.write_text(f"{dead_pid}\n")
    result = svc.ctl("start")
    assert result.returncode == 0, result.stderr
    assert (f"removing stale pidfile {svc.pidfile}: pid {dead_pid} is not running\n"
            in result.stdout)
    assert svc.daemon_pid() == _started_pid(result)


def test_start_over_a_pidfile_naming_another_program_leaves_that_program_alone(
    svc: Service, unrelated: subprocess.Popen[bytes]
) -> None:
    svc.pidfile.write_text(f"{unrelated.pid}\n")
    result = svc.ctl("start")
    assert result.returncode == 0, result.stderr
    assert (f"pid {unrelated.pid} (sleep) is not an NTP daemon (pid reused); that process is "
            "left alone" in result.stdout)
    assert unrelated.poll() is None
    assert svc.daemon_pid() == _started_pid(result) != unrelated.pid


@pytest.mark.parametrize("content", ["", "\n", "garbage\n", "-1\n"])
def test_start_replaces_a_garbage_pidfile(svc: Service, content: str) -> None:
    svc.pidfile.write_text(content)
    result = svc.ctl("start")
    assert result.returncode == 0, result.stderr
    assert "it holds no valid pid" in result.stdout
    _started_pid(result)


def test_start_refuses_a_symlinked_pidfile_and_starts_nothing(svc: Service) -> None:
    target = _make_symlink(svc)
    result = svc.ctl("start")
    assert result.returncode == 1
    assert result.stderr == (f"pyntpctl: pidfile {svc.pidfile} is a symlink; refusing to "
                             "follow it (remove it by hand)\n")
    _assert_symlink_untouched(svc, target)
    assert not _serving(svc.port)


def test_start_failure_reports_the_daemons_reason(svc: Service) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("0.0.0.0", svc.port))
        result = svc.ctl("start")
    assert result.returncode == 1
    assert "cannot bind" in result.stderr
    assert "pyntpctl: pyntpd failed to start (exit status 1)" in result.stderr
    assert not svc.pidfile.exists()


def test_start_gives_up_when_the_daemon_never_says_it_serves(svc: Service) -> None:
    hangs = svc.dir / "pyntpd-hangs"
    hangs.write_text("#!/bin/sh\nexec sleep 30\n")
    hangs.chmod(0o755)
    began = time.monotonic()
    result = svc.ctl("start", "--pyntpd", str(hangs), "--timeout", "0.5")
    assert time.monotonic() - began < 10
    assert result.returncode == 1
    assert "pyntpd did not report serving within 0.5 s: not started" in result.stderr


# --- stop -------------------------------------------------------------------------------------


def test_stop_a_running_daemon_waits_until_it_has_exited(svc: Service) -> None:
    pid = _started_pid(svc.ctl("start"))
    result = svc.ctl("stop")
    assert (result.returncode, result.stdout) == (0, f"pyntpd stopped (pid {pid})\n")
    assert not pid_running(pid)  # no wait: stop returned once it had exited
    assert not svc.pidfile.exists()
    assert "daemon exiting" in svc.log.read_text()


def test_stop_without_a_pidfile_is_success(svc: Service) -> None:
    result = svc.ctl("stop")
    assert result.returncode == 0
    assert result.stdout == f"pyntpd is not running (no pidfile {svc.pidfile})\n"


def test_stop_with_a_stale_pidfile_removes_it(svc: Service, dead_pid: int) -> None:
    svc.pidfile.write_text(f"{dead_pid}\n")
    result = svc.ctl("stop")
    assert result.returncode == 0
    assert result.stdout == (f"pyntpd is not running: pid {dead_pid} is not running; removing "
                             f"stale pidfile {svc.pidfile}\n")
    assert not svc.pidfile.exists()


def test_stop_never_signals_a_process_that_is_not_pyntpd(
    svc: Service, unrelated: subprocess.Popen[bytes]
) -> None:
    svc.pidfile.write_text(f"{unrelated.pid}\n")
    result = svc.ctl("stop")
    assert result.returncode == 0
    assert (f"pid {unrelated.pid} (sleep) is not an NTP daemon (pid reused) (not signalled)"
            in result.stdout)
    assert unrelated.poll() is None
    assert not svc.pidfile.exists()


def test_stop_with_a_garbage_pidfile_removes_it(svc: Service) -> None:
    svc.pidfile.write_text("garbage\n")
    assert svc.ctl("stop").returncode == 0
    assert not svc.pidfile.exists()


def test_stop_refuses_a_symlinked_pidfile(svc: Service) -> None:
    target = _make_symlink(svc)
    result = svc.ctl("stop")
    assert result.returncode == 1 and "is a symlink" in result.stderr
    _assert_symlink_untouched(svc, target)


def test_stop_reports_a_daemon_that_does_not_exit(
    svc: Service, stubborn: subprocess.Popen[bytes]
) -> None:
    svc.pidfile.write_text(f"{stubborn.pid}\n")
    result = svc.ctl("stop", "--timeout", "0.5")
    assert result.returncode == 1
    assert result.stderr == (f"pyntpctl: pyntpd (pid {stubborn.pid}) still running 0.5 s after "
                             "SIGTERM: not stopped\n")
    assert stubborn.poll() is None
    assert svc.pidfile.read_text() == f"{stubborn.pid}\n"


def test_stop_without_permission_to_signal_is_lsb_code_4(svc: Service) -> None:
    pid = _started_pid(svc.ctl("start"))
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
         "-m", "pyntpd.cli.pyntpctl", "stop", "--pidfile", str(svc.pidfile)],
        capture_output=True, text=True, timeout=CTL_TIMEOUT, env=svc.env(), cwd=svc.dir)
    assert result.returncode == 4, result.stdout + result.stderr
    assert f"not permitted to signal pyntpd (pid {pid})" in result.stderr
    assert pid_running(pid)


# --- restart ----------------------------------------------------------------------------------


def test_restart_a_running_daemon_replaces_it(svc: Service) -> None:
    old = _started_pid(svc.ctl("start"))
    result = svc.ctl("restart")
    assert result.returncode == 0, result.stderr
    new = _started_pid(result)
    assert f"pyntpd stopped (pid {old})" in result.stdout
    assert new != old and not pid_running(old) and svc.daemon_pid() == new
    assert query(svc.port).header.stratum == 11


def test_restart_a_stopped_daemon_starts_it(svc: Service) -> None:
    result = svc.ctl("restart")
    assert result.returncode == 0, result.stderr
    assert "pyntpd is not running (no pidfile" in result.stdout
    _started_pid(result)


def test_restart_over_a_stale_pidfile(svc: Service, dead_pid: int) -> None:
    svc.pidfile.write_text(f"{dead_pid}\n")
    result = svc.ctl("restart")
    assert result.returncode == 0, result.stderr
    assert STALE_REASON.search(result.stdout)
    _started_pid(result)


def test_restart_over_a_pidfile_naming_another_program(
    svc: Service, unrelated: subprocess.Popen[bytes]
) -> None:
    svc.pidfile.write_text(f"{unrelated.pid}\n")
    result = svc.ctl("restart")
    assert result.returncode == 0, result.stderr
    assert _started_pid(result) != unrelated.pid and unrelated.poll() is None


def test_restart_over_a_garbage_pidfile(svc: Service) -> None:
    svc.pidfile.write_text("\0\0\0")
    result = svc.ctl("restart")
    assert result.returncode == 0, result.stderr
    _started_pid(result)


def test_restart_refuses_a_symlinked_pidfile(svc: Service) -> None:
    target = _make_symlink(svc)
    result = svc.ctl("restart")
    assert result.returncode == 1
    assert "is a symlink" in result.stderr and "pyntpctl: not restarted" in result.stderr
    _assert_symlink_untouched(svc, target)
    assert not _serving(svc.port)


def test_restart_does_not_start_a_second_daemon_beside_a_hung_one(
    svc: Service, stubborn: subprocess.Popen[bytes]
) -> None:
    svc.pidfile.write_text(f"{stubborn.pid}\n")
    result = svc.ctl("restart", "--stop-timeout", "0.3")
    assert result.returncode == 1 and "not restarted" in result.stderr
    assert not _serving(svc.port)


# --- status -----------------------------------------------------------------------------------


def test_status_of_a_running_daemon_shows_its_sync_state(svc: Service) -> None:
    pid = _started_pid(svc.ctl("start"))
    result = svc.ctl("status")
    assert result.returncode == 0
    assert result.stdout == (f"pyntpd is running (pid {pid}), synchronised: stratum 11, "
                             "refid LOCL\n")


def test_status_of_an_unsynchronised_daemon(svc: Service) -> None:
    env = svc.env(PYNTPD_OPTS=svc.options("restrict default\n"))
    pid = _started_pid(svc.ctl("start", env=env))
    result = svc.ctl("status", env=env)
    assert (result.returncode, result.stdout) == (
        0, f"pyntpd is running (pid {pid}), unsynchronised (stratum 16)\n")


def test_status_says_when_the_daemon_does_not_answer(svc: Service) -> None:
    pid = _started_pid(svc.ctl("start"))
    silent = free_udp_port()
    result = svc.ctl("status", "--port", str(silent))
    assert result.returncode == 0
    assert result.stdout.startswith(f"pyntpd is running (pid {pid}), sync state unknown:")


def test_status_without_a_pidfile_is_3(svc: Service) -> None:
    result = svc.ctl("status")
    assert (result.returncode, result.stdout) == (3, "pyntpd is not running\n")


def test_status_with_a_stale_pidfile_is_1(svc: Service, dead_pid: int) -> None:
    svc.pidfile.write_text(f"{dead_pid}\n")
    result = svc.ctl("status")
    assert result.returncode == 1
    assert result.stdout == (f"pyntpd is not running, but its pidfile {svc.pidfile} remains: "
                             f"pid {dead_pid} is not running\n")
    assert svc.pidfile.exists()  # status changes nothing


def test_status_with_a_pidfile_naming_another_program_is_1(
    svc: Service, unrelated: subprocess.Popen[bytes]
) -> None:
    svc.pidfile.write_text(f"{unrelated.pid}\n")
    result = svc.ctl("status")
    assert result.returncode == 1
    assert f"pid {unrelated.pid} (sleep) is not an NTP daemon" in result.stdout


def test_status_with_a_garbage_pidfile_is_1(svc: Service) -> None:
    svc.pidfile.write_text("garbage\n")
    result = svc.ctl("status")
    assert result.returncode == 1 and "it holds no valid pid" in result.stdout


def test_status_with_a_symlinked_pidfile_cannot_tell(svc: Service) -> None:
    target = _make_symlink(svc)
    result = svc.ctl("status")
    assert result.returncode == 4 and "is a symlink" in result.stdout
    _assert_symlink_untouched(svc, target)


def test_status_with_a_directory_at_the_pidfile_cannot_tell(svc: Service) -> None:
    svc.pidfile.mkdir()
    assert svc.ctl("status").returncode == 4


# --- reload -----------------------------------------------------------------------------------


def test_reload_makes_the_daemon_reread_its_configuration(svc: Service) -> None:
    pid = _started_pid(svc.ctl("start"))
    result = svc.ctl("reload")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in svc.log.read_text():
        assert time.monotonic() < deadline, svc.log.read_text()
        time.sleep(0.05)
    assert svc.daemon_pid() == pid


def test_reload_when_not_running_is_lsb_code_7(svc: Service, dead_pid: int) -> None:
    svc.pidfile.write_text(f"{dead_pid}\n")
    assert svc.ctl("reload").returncode == 7


# --- graceful stop keeps the frequency --------------------------------------------------------

# pyntpd with a simulated clock: the real one is never adjustable from this process, yet the
# daemon believes it disciplines a clock, which is when it keeps a drift file.
SIMCLOCK_PYNTPD = """\
import sys, time
from pyntpd.clock.simclock import SimClock
from pyntpd.daemon import app
app.make_clock = lambda options, config: SimClock(epoch_ns=time.time_ns())
from pyntpd.cli.pyntpd import main
sys.exit(main())
"""


def _simclock_program(directory: Path, preamble: str = "") -> Path:
    program = directory / "pyntpd-simclock"
    program.write_text(f"#!{sys.executable}\n{preamble}{SIMCLOCK_PYNTPD}")
    program.chmod(0o755)
    return program


@pytest.mark.needs_sys_time
def test_graceful_stop_writes_the_drift_file(svc: Service) -> None:
    program = _simclock_program(svc.dir)
    drift = svc.dir / "ntp.drift"
    env = svc.env(PYNTPD_OPTS=svc.options(LOCAL_CONF + "tinker freq 12.5\n") + f" -f {drift}")
    _started_pid(svc.ctl("start", "--pyntpd", str(program), env=env))
    assert not drift.exists()
    assert svc.ctl("stop", env=env).returncode == 0
    assert float(drift.read_text()) == 12.5


# --- what the systemd unit grants is enough ---------------------------------------------------

# The kernel's own MemoryDenyWriteExecute (PR_SET_MDWE, Linux 6.3): no memory may become
# writable and executable from here on, inherited by everything the daemon runs.
MDWE_PREAMBLE = """\
import ctypes, os
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    print("PR_SET_MDWE:", os.strerror(ctypes.get_errno()), flush=True)
    raise SystemExit(97)
"""
UNIT_CAPS = "+sys_time,+net_bind_service"


def _free_privileged_port() -> int:
    for port in range(1023, 900, -1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free UDP port below 1024 on 127.0.0.1")


@pytest.mark.needs_sys_time
def test_the_units_user_and_capabilities_suffice(svc: Service) -> None:
    """As pyntpd.service runs it: an unprivileged user whose only capabilities are the
    unit's two (ambient), no new privileges, no writable executable memory. The daemon must
    bind a port below 1024 and pass its CAP_SYS_TIME check (a simulated clock stands in)."""
    program = _simclock_program(svc.dir, MDWE_PREAMBLE)
    (svc.dir / "ntp.conf").write_text(LOCAL_CONF)
    (svc.dir / "ntp.conf").chmod(0o644)
    notify_path = svc.dir / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify_path.chmod(0o777)
    port = _free_privileged_port()
    proc = subprocess.Popen(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         f"--inh-caps=-all,{UNIT_CAPS}", f"--ambient-caps={UNIT_CAPS}",
         f"--bounding-set=-all,{UNIT_CAPS}", "--no-new-privs",
         str(program), "-n", "--observe", "--port", str(port), "-I", "127.0.0.1",
         "-c", str(svc.dir / "ntp.conf")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=svc.dir,
        env=dict(os.environ, NOTIFY_SOCKET=str(notify_path)))
    try:
        try:
            _notifications(notify, "READY=1", timeout=20)
        except AssertionError:
            proc.kill()
            output = proc.communicate(5)[0]
            if proc.returncode == 97:
                pytest.skip(output.strip())
            raise AssertionError(output) from None
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caps = dict(line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))
        wanted = (1 << 25) | (1 << 10)  # CAP_SYS_TIME, CAP_NET_BIND_SERVICE
        assert int(caps["CapEff"], 16) == int(caps["CapBnd"], 16) == wanted
        assert "Uid:\t65534" in status
        assert query(port).header.stratum == 11
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=10)[0]
        assert proc.returncode == 0, output
        assert "clock disciplined" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(5)
        notify.close()


# --- systemd notifications --------------------------------------------------------------------


def _notifications(sock: socket.socket, until: str, timeout: float = 30.0) -> list[str]:
    """Datagrams from the notify socket, up to the first one containing `until`."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(until in m for m in got):
        left = deadline - time.monotonic()
        assert left > 0, f"never got {until!r}: {got}"
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return got


def test_status_notifications_follow_the_sync_state_without_repeats() -> None:
    with config_file(LOCAL_CONF) as upstream_conf, Pyntpd("-c", upstream_conf) as upstream, \
            tempfile.TemporaryDirectory(prefix="pyntpd-sd") as d:
        conf = Path(d) / "ntp.conf"
        conf.write_text(f"server 127.0.0.1 port {upstream.port} iburst minpoll 3 maxpoll 3\n"
                        "restrict default\n")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(os.path.join(d, "notify"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyntpd.cli.pyntpd", "-n", "--observe", "--port",
             str(free_udp_port()), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, NOTIFY_SOCKET=notify.getsockname()))
        synchronised = f"STATUS=synchronised to 127.0.0.1 port {upstream.port}, stratum 12"
        try:
            got = _notifications(notify, synchronised)
            proc.send_signal(signal.SIGTERM)
            got += _notifications(notify, "STOPPING=1")
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            notify.close()
    statuses = [m for m in got if m.startswith("STATUS=")]
    assert statuses[:2] == ["STATUS=starting", "STATUS=unsynchronised (stratum 16)"]
    assert statuses[-1] == synchronised
    assert all(a != b for a, b in itertools.pairwise(statuses))
    assert any(m.startswith("READY=1") for m in got)


# --- the SysV script --------------------------------------------------------------------------


@pytest.fixture
def init(svc: Service) -> Iterator[tuple[Service, dict[str, str]]]:
    wrapper = svc.dir / "pyntpctl"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m pyntpd.cli.pyntpctl "$@"\n')
    wrapper.chmod(0o755)
    defaults = svc.dir / "default"
    defaults.write_text(f'PYNTPD_OPTS="{svc.options()}"\nPIDFILE={svc.pidfile}\n')
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYNTPD_OPTS", "PIDFILE", "PYNTPCTL", "NOTIFY_SOCKET")}
    env.update(PYNTPCTL=str(wrapper), PYNTPD_DEFAULTS=str(defaults))
    yield svc, env


def _init(svc: Service, env: dict[str, str], action: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["sh", str(INIT_SCRIPT), action], capture_output=True, text=True,
                            timeout=CTL_TIMEOUT, env=env)
    svc.note(result.stdout + result.stderr)
    return result


def test_init_script_life_cycle(init: tuple[Service, dict[str, str]]) -> None:
    svc, env = init
    assert _init(svc, env, "status").returncode == 3
    started = _init(svc, env, "start")
    assert started.returncode == 0, started.stderr
    pid = _started_pid(started)
    status = _init(svc, env, "status")
    assert (status.returncode, status.stdout) == (
        0, f"pyntpd is running (pid {pid}), synchronised: stratum 11, refid LOCL\n")
    assert "already running" in _init(svc, env, "start").stdout
    assert _init(svc, env, "force-reload").returncode == 0
    restarted = _init(svc, env, "restart")
    assert restarted.returncode == 0
    assert _started_pid(restarted) != pid and not pid_running(pid)
    assert _init(svc, env, "stop").returncode == 0
    assert _init(svc, env, "status").returncode == 3
    assert _init(svc, env, "stop").returncode == 0


def test_init_script_environment_wins_over_the_defaults_file(
    init: tuple[Service, dict[str, str]],
) -> None:
    svc, env = init
    other = svc.dir / "other.pid"
    result = _init(svc, dict(env, PIDFILE=str(other)), "start")
    assert result.returncode == 0, result.stderr
    assert int(other.read_text()) == _started_pid(result)
    assert not svc.pidfile.exists()
    assert _init(svc, dict(env, PIDFILE=str(other)), "stop").returncode == 0


def test_init_script_start_over_a_stale_pidfile(init: tuple[Service, dict[str, str]],
                                                dead_pid: int) -> None:
    svc, env = init
    svc.pidfile.write_text(f"{dead_pid}\n")
    result = _init(svc, env, "start")
    assert result.returncode == 0 and STALE_REASON.search(result.stdout)
    assert _init(svc, env, "stop").returncode == 0


def test_init_script_try_restart_starts_nothing_when_stopped(
    init: tuple[Service, dict[str, str]],
) -> None:
    svc, env = init
    result = _init(svc, env, "try-restart")
    assert (result.returncode, result.stdout) == (0, "pyntpd is not running: not restarted\n")
    assert not svc.pidfile.exists()


def test_init_script_without_pyntpctl(init: tuple[Service, dict[str, str]]) -> None:
    svc, env = init
    env = dict(env, PYNTPCTL=str(svc.dir / "missing"))
    codes = {action: _init(svc, env, action).returncode for action in ("start", "stop", "status")}
    assert codes == {"start": 5, "stop": 0, "status": 4}


def test_init_script_unknown_action_is_a_usage_error(
    init: tuple[Service, dict[str, str]],
) -> None:
    svc, env = init
    result = _init(svc, env, "bogus")
    assert result.returncode == 2 and result.stderr.startswith("Usage:")
