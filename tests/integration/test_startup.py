"""Starting like ntpd, failing unlike it (issue 11, items 9 and 10).

A configuration that cannot be read stops the start with the reason, where ntpd would run
with no sources and no restrict rules (wide open) and its forking start would exit 0.
`-w S` makes the forking parent wait for synchronisation, with ntpd's exit statuses.

Each test starts pyntpd as an init script would, forking, observe-only, on a free port;
whatever a test started is stopped through its pidfile, also when an assertion fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Upstreams, poll_until, program, require_root, wrapper
from tests.support import Pyntpd, free_udp_port, query

# Root reads every file whatever its mode; without these two capabilities it cannot.
NO_DAC = ("setpriv", "--inh-caps=-dac_override,-dac_read_search",
          "--bounding-set=-dac_override,-dac_read_search")


def _stop(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def forking_start(tmp_path: Path, *args: str, prefix: tuple[str, ...] = (),
                  timeout: float = 30.0) -> Iterator[subprocess.CompletedProcess[str]]:
    """`pyntpd ARGS` without -n, as an init script runs it; yields the parent's result and
    stops the daemon it left behind (if any) afterwards."""
    pidfile = tmp_path / "pyntpd.pid"
    argv = [*prefix, sys.executable, "-m", "pyntpd.cli.pyntpd", "--observe",
            "--port", str(free_udp_port()), "-p", str(pidfile), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    try:
        yield result
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError):
            _stop(int(pidfile.read_text()))


def _unreadable_to_us(path: Path) -> tuple[str, ...]:
    """Make `path` unreadable to the daemon: mode 000, and as root no DAC override."""
    path.chmod(0)
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to drop root's file access override")
    return NO_DAC


# --- item 9: a configuration that cannot be read ---------------------------------------


def test_a_missing_configuration_refuses_to_start_and_the_forking_start_exits_1(tmp_path):
    missing = tmp_path / "ntp.cnof"
    with forking_start(tmp_path, "-c", str(missing)) as result:
        assert result.returncode == 1
        assert (f"not starting: {missing}: error: cannot read configuration: "
                "No such file or directory") in result.stderr
        assert not (tmp_path / "pyntpd.pid").exists()


def test_a_directory_as_configuration_refuses_to_start(tmp_path):
    with forking_start(tmp_path, "-c", str(tmp_path)) as result:
        assert result.returncode == 1
        assert "cannot read configuration: is a directory" in result.stderr
        assert not (tmp_path / "pyntpd.pid").exists()


def test_an_unreadable_configuration_refuses_to_start(tmp_path):
    conf = tmp_path / "ntp.conf"
    conf.write_text("server 127.127.1.0\nrestrict default noquery\n")
    with forking_start(tmp_path, "-c", str(conf), prefix=_unreadable_to_us(conf)) as result:
        assert result.returncode == 1
        assert "cannot read configuration: Permission denied" in result.stderr
        assert not (tmp_path / "pyntpd.pid").exists()


def test_an_unreadable_keys_file_is_reported_as_unreadable_and_refuses_to_start(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("1 MD5 secret\n")
    conf = tmp_path / "ntp.conf"
    conf.write_text(f"keys {keys}\ntrustedkey 1\nserver 127.0.0.1 port 9 key 1 iburst\n"
                    "restrict default\n")
    with forking_start(tmp_path, "-c", str(conf), prefix=_unreadable_to_us(keys)) as result:
        assert result.returncode == 1
        assert (f"cannot read keys file '{keys}': Permission denied; key 1 is needed by "
                f"'trustedkey' at {conf}:2:12") in result.stderr
        assert "not a trusted key" not in result.stderr


def test_an_unreadable_include_file_refuses_to_start(tmp_path):
    extra = tmp_path / "restrict.conf"
    extra.write_text("restrict default noquery nomodify\n")
    conf = tmp_path / "ntp.conf"
    conf.write_text(f"server 127.127.1.0\nincludefile {extra}\n")
    with forking_start(tmp_path, "-c", str(conf), prefix=_unreadable_to_us(extra)) as result:
        assert result.returncode == 1
        assert f"cannot read include file '{extra}': Permission denied" in result.stderr


def test_a_readable_configuration_still_starts(tmp_path):
    conf = tmp_path / "ntp.conf"
    conf.write_text("server 127.127.1.0\nfudge 127.127.1.0 stratum 10\nrestrict default\n")
    with forking_start(tmp_path, "-c", str(conf)) as result:
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "pyntpd.pid").exists()


# --- item 10: -w, wait for synchronisation ---------------------------------------------

ETIMEDOUT = errno.ETIMEDOUT  # ntpd 4.2.8's exit status when -w runs out (110 on Linux)


def _upstream_conf(tmp_path: Path, port: int) -> Path:
    conf = tmp_path / "ntp.conf"
    conf.write_text(f"server 127.0.0.1 port {port} iburst minpoll 4 maxpoll 4\n"
                    "restrict default\n")
    return conf


def test_dash_w_returns_0_once_the_daemon_is_synchronised(tmp_path):
    with Upstreams(stratum=2) as up:
        up.come_back("127.0.0.1")
        conf = _upstream_conf(tmp_path, up.port)
        started = time.monotonic()
        with forking_start(tmp_path, "-w", "30", "-c", str(conf)) as result:
            waited = time.monotonic() - started
            assert result.returncode == 0, result.stderr
            assert up.answered.get("127.0.0.1", 0) >= 1
            pid = int((tmp_path / "pyntpd.pid").read_text())
            port = int(result.args[result.args.index("--port") + 1])
            # The parent returned because the daemon follows the upstream: it says so.
            assert query(port).header.stratum == 3
            assert waited < 30
            os.kill(pid, 0)  # and the daemon goes on


def test_dash_w_times_out_with_etimedout_and_leaves_the_daemon_running(tmp_path):
    with Upstreams(stratum=2) as up:
        up.come_back("127.0.0.1")
        port = up.port
        up.vanish("127.0.0.1")  # nobody answers there
        conf = _upstream_conf(tmp_path, port)
        started = time.monotonic()
        with forking_start(tmp_path, "-w", "2", "-c", str(conf)) as result:
            waited = time.monotonic() - started
            assert result.returncode == ETIMEDOUT
            assert "pyntpd: -w/--wait-sync 2 timed out" in result.stderr
            assert 2.0 <= waited < 10.0
            os.kill(int((tmp_path / "pyntpd.pid").read_text()), 0)  # still running


def test_dash_w_does_not_count_the_local_clock_fallback_as_synchronised(tmp_path):
    # The seed's shape: a real server, and the local clock for when it is missing.
    with Upstreams(stratum=2) as up:
        up.come_back("127.0.0.1")
        port = up.port
        up.vanish("127.0.0.1")
        conf = tmp_path / "ntp.conf"
        conf.write_text(f"server 127.0.0.1 port {port} iburst\nserver 127.127.1.0\n"
                        "fudge 127.127.1.0 stratum 10\nrestrict default\n")
        with forking_start(tmp_path, "-w", "2", "-c", str(conf)) as result:
            assert result.returncode == ETIMEDOUT
            port = int(result.args[result.args.index("--port") + 1])
            assert query(port).header.stratum == 11  # serving from the local clock meanwhile


def test_dash_w_with_only_the_local_clock_configured_returns_once_it_is_selected(tmp_path):
    conf = tmp_path / "ntp.conf"
    conf.write_text("server 127.127.1.0\nfudge 127.127.1.0 stratum 10\nrestrict default\n")
    with forking_start(tmp_path, "-w", "20", "-c", str(conf)) as result:
        assert result.returncode == 0, result.stderr


def test_dash_w_reports_a_start_failure_as_before(tmp_path):
    with forking_start(tmp_path, "-w", "5", "-c", str(tmp_path / "nope")) as result:
        assert result.returncode == 1
        assert "cannot read configuration" in result.stderr


def test_without_dash_w_the_parent_returns_once_serving_unsynchronised(tmp_path):
    with Upstreams(stratum=2) as up:
        up.come_back("127.0.0.1")
        port = up.port
        up.vanish("127.0.0.1")
        with forking_start(tmp_path, "-c", str(_upstream_conf(tmp_path, port))) as result:
            assert result.returncode == 0, result.stderr


def test_dash_w_with_dash_n_is_ignored_with_a_warning(tmp_path):
    conf = tmp_path / "ntp.conf"
    conf.write_text("server 127.127.1.0\nrestrict default\n")
    with Pyntpd("-w", "5", "-c", str(conf)) as daemon:
        daemon.wait_for_log("-w ignored: it makes the forking parent wait, and -n/-d do not "
                            "fork")


# --- item 10: -G, step once at start however small (on a simulated clock) --------------


def _step_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "clock stepped by" in line]


@pytest.mark.needs_sys_time
@pytest.mark.parametrize("flag", ["-G", "-g"])
def test_capital_g_steps_the_clock_once_at_start_however_small_and_minus_g_does_not(
        tmp_path, flag):
    require_root()  # the simulated clock still wants CAP_SYS_TIME to be allowed
    with Upstreams(stratum=2) as up:
        up.come_back("127.0.0.1")
        conf = _upstream_conf(tmp_path, up.port)
        prog = program(tmp_path, running_clock=True)
        with Pyntpd(flag, "-c", str(conf), observe=False, wrap=wrapper(prog)) as daemon:
            daemon.wait_synced(30)
            # Sixteen seconds of polls after that: any second step would show.
            poll_until(lambda: up.answered.get("127.0.0.1", 0) >= 6, 40, "polls")
            steps = _step_lines(daemon.output())
            assert daemon.stop() == 0
    if flag == "-G":
        # The offset between two clocks of this machine is microseconds: far below the
        # 128 ms step threshold, stepped all the same, exactly once.
        [line] = steps
        assert abs(float(line.split("clock stepped by ")[1].split()[0])) < 0.128
    else:
        assert steps == []
