"""pyntpd as a real process: serving, flags, signals, pidfile, bad input on the wire."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys

import pytest

from pyntpd.proto.packet import decode
from tests.support import (
    LOCAL_CONF,
    SEED,
    Pyntpd,
    client_request,
    config_file,
    exchange,
    free_udp_port,
    query,
)


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    # --observe: no test lets a daemon adjust this machine's clock.
    return subprocess.run([sys.executable, "-m", "pyntpd.cli.pyntpd", "--observe", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_seed_config_serves_stratum_11_from_the_local_clock():
    with Pyntpd("-c", str(SEED / "ntp.conf")) as d:
        h = query(d.port).header
    assert (h.mode, h.stratum, h.refid, h.leap) == (4, 11, b"LOCL", 0)


def test_seed_config_reports_the_perfer_typo_with_line_and_suggestion():
    with Pyntpd("-c", str(SEED / "ntp.conf")) as d:
        output = d.output()
    assert "ntp.conf:22:26:" in output and "did you mean 'prefer'?" in output


def test_as_published_seed_with_non_breaking_spaces_serves_the_same():
    with Pyntpd("-c", str(SEED / "ntp.conf.as-published")) as d:
        h = query(d.port).header
        output = d.output()
    assert h.stratum == 11 and "non-breaking" in output


def test_builtin_default_configuration_serves_stratum_11():
    with Pyntpd("--builtin-config") as d:
        assert query(d.port).header.stratum == 11


def test_serves_ipv6_loopback_too():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as d:
        assert query(d.port, host="::1").header.stratum == 11


def test_ipv4_only_flag_does_not_listen_on_ipv6():
    with config_file(LOCAL_CONF) as conf, Pyntpd("-4", "-c", conf) as d:
        assert exchange(d.port, client_request(), host="::1", timeout=0.5) is None
        assert query(d.port).header.stratum == 11


def test_receive_and_transmit_timestamps_are_between_client_send_and_receive():
    import time

    from pyntpd.proto.timestamp import ntp_to_unix

    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as d:
        t1 = time.time()
        h = query(d.port).header
        t4 = time.time()
    t2 = ntp_to_unix(h.receive, t1)
    t3 = ntp_to_unix(h.transmit, t1)
    assert t1 - 1e-3 <= t2 <= t3 <= t4 + 1e-3


def test_malformed_datagrams_are_dropped_and_the_server_keeps_answering():
    garbage = [b"", b"\x00", b"\xff" * 47, os.urandom(48 * 3 + 5), b"\x17\x00\x03\x2a" + bytes(4),
               client_request()[:40], client_request() + struct.pack("!HH", 1, 30) + bytes(26)]
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as d:
        for data in garbage:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(data, ("127.0.0.1", d.port))
        assert query(d.port).header.stratum == 11


def test_oversized_datagram_is_dropped_and_the_server_keeps_answering():
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as d:
        assert exchange(d.port, client_request() + bytes(8000), timeout=0.5) is None
        assert query(d.port).header.stratum == 11


def test_mode_7_monlist_is_never_answered():
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as d:
        assert exchange(d.port, b"\x17\x00\x03\x2a" + bytes(44), timeout=0.5) is None


def test_sigterm_exits_zero_and_removes_the_pidfile(tmp_path):
    pidfile = tmp_path / "pyntpd.pid"
    with config_file(LOCAL_CONF) as conf:
        d = Pyntpd("-c", conf, "-p", str(pidfile)).start()
        try:
            assert int(pidfile.read_text()) == d.proc.pid
            assert d.stop() == 0
            assert not pidfile.exists()
        finally:
            d.cleanup()


def test_live_pidfile_refuses_a_second_daemon(tmp_path):
    pidfile = tmp_path / "pyntpd.pid"
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf, "-p", str(pidfile)):
        second = run_cli("-n", "--port", str(free_udp_port()), "-c", conf, "-p", str(pidfile))
    assert second.returncode == 1 and "already running" in second.stderr


def test_symlinked_pidfile_is_refused(tmp_path):
    target = tmp_path / "victim"
    target.write_text("keep me\n")
    link = tmp_path / "pyntpd.pid"
    link.symlink_to(target)
    with config_file(LOCAL_CONF) as conf:
        result = run_cli("-n", "--port", str(free_udp_port()), "-c", conf, "-p", str(link))
    assert result.returncode == 1 and "symlink" in result.stderr
    assert target.read_text() == "keep me\n"


def test_port_in_use_is_a_clear_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
        with config_file(LOCAL_CONF) as conf:
            result = run_cli("-n", "-4", "--port", str(port), "-c", conf)
    assert result.returncode == 1 and f"cannot bind UDP 0.0.0.0 port {port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_sighup_with_a_broken_config_keeps_serving(tmp_path):
    conf = tmp_path / "ntp.conf"
    conf.write_text(LOCAL_CONF)
    with Pyntpd("-c", str(conf)) as d:
        conf.write_text(LOCAL_CONF + "restrict default nosuchflag\n")
        d.signal(signal.SIGHUP)
        d.wait_for_log("reload rejected")
        assert query(d.port).header.stratum == 11


def test_sighup_applies_a_good_config(tmp_path):
    conf = tmp_path / "ntp.conf"
    conf.write_text(LOCAL_CONF)
    with Pyntpd("-c", str(conf)) as d:
        conf.write_text(LOCAL_CONF.replace("stratum 10", "stratum 4"))
        d.signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded")
        assert query(d.port).header.stratum == 5


def test_restrict_ignore_on_loopback_silences_the_server(tmp_path):
    with config_file(LOCAL_CONF + "restrict 127.0.0.1 ignore\n") as conf, Pyntpd("-c", conf) as d:
        assert exchange(d.port, client_request(), timeout=0.5) is None


def test_kod_rate_limit_over_the_wire():
    conf_text = LOCAL_CONF.replace("restrict default", "restrict default limited kod")
    with config_file(conf_text) as conf, Pyntpd("-c", conf) as d:
        replies = [exchange(d.port, client_request(), timeout=0.5) for _ in range(5)]
    decoded = [decode(r) for r in replies if r is not None]
    assert decoded[0].header.stratum == 11
    assert [p.header.refid for p in decoded[1:]] == [b"RATE"]


def test_check_exits_non_zero_on_the_seed_and_names_the_line():
    result = run_cli("--check", "-c", str(SEED / "ntp.conf"))
    assert result.returncode == 1
    assert "ntp.conf:22:26:" in result.stdout and "did you mean 'prefer'?" in result.stdout


def test_check_exits_zero_on_a_clean_config():
    with config_file(LOCAL_CONF) as conf:
        assert run_cli("--check", "-c", conf).returncode == 0


def test_version_flag():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("pyntpd ")


def test_multicast_client_flag_needs_a_group_address():
    result = run_cli("-m", "192.0.2.1")
    assert result.returncode == 2 and "not a multicast group address" in result.stderr


def test_unknown_flag_is_a_usage_error():
    result = run_cli("--bogus")
    assert result.returncode == 2 and "Try 'pyntpd --help'" in result.stderr


def test_forking_start_exits_only_once_serving(tmp_path):
    pidfile = tmp_path / "pyntpd.pid"
    port = free_udp_port()
    with config_file(LOCAL_CONF) as conf:
        result = run_cli("--port", str(port), "-c", conf, "-p", str(pidfile))
        assert result.returncode == 0, result.stderr
        pid = int(pidfile.read_text())
        try:
            assert query(port).header.stratum == 11
        finally:
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid)
    assert not pidfile.exists()


def test_forking_start_failure_is_reported_by_the_parent():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
        with config_file(LOCAL_CONF) as conf:
            result = run_cli("-4", "--port", str(port), "-c", conf)
    assert result.returncode == 1 and "cannot bind" in result.stderr


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"pid {pid} did not exit")


def test_interface_rules_limit_the_listening_addresses():
    text = LOCAL_CONF + "interface ignore all\ninterface listen 127.0.0.1\n"
    with config_file(text) as conf, Pyntpd("-c", conf) as d:
        assert query(d.port).header.stratum == 11
        assert exchange(d.port, client_request(), host="::1", timeout=0.5) is None
        assert "listening on 127.0.0.1 port" in d.output()


def test_dash_capital_i_listens_only_on_the_named_interface():
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf, "-I", "lo") as d:
        assert query(d.port).header.stratum == 11
        assert "0.0.0.0" not in d.output()


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as f:
        return [int(p) for p in f.read().split()]


def test_workers_share_the_port_and_stop_with_the_daemon():
    with config_file(LOCAL_CONF) as conf:
        d = Pyntpd("-c", conf, "--workers", "3").start()
        try:
            workers = _children(d.proc.pid)
            assert len(workers) == 2
            strata = {query(d.port).header.stratum for _ in range(40)}
            assert strata == {11}
            assert d.stop() == 0
            for pid in workers:
                _wait_gone(pid)
        finally:
            d.cleanup()


def test_workers_follow_a_reload(tmp_path):
    conf = tmp_path / "ntp.conf"
    conf.write_text(LOCAL_CONF)
    with Pyntpd("-c", str(conf), "--workers", "2") as d:
        conf.write_text(LOCAL_CONF.replace("stratum 10", "stratum 4"))
        d.signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded")
        import time

        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            strata = {query(d.port).header.stratum for _ in range(20)}
            if strata == {5}:
                break
            time.sleep(0.05)
        assert strata == {5}


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


@pytest.mark.skipif(os.geteuid() != 0, reason="-u and -i need root")
def test_user_flag_in_observe_mode_keeps_no_capability(tmp_path):
    # (Keeping CAP_SYS_TIME when the clock is disciplined is tested on drop_privileges in a
    # forked child, tests/daemon/test_privileges.py: no test runs a disciplining daemon.)
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf, "-u", "nobody") as d:
        status = _status(d.proc.pid)
        assert query(d.port).header.stratum == 11
    assert status["Uid"].split()[0] == "65534"
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0


def test_disciplining_without_cap_sys_time_is_a_clear_error():
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    with config_file(LOCAL_CONF) as conf:
        result = subprocess.run(
            [setpriv, "--inh-caps=-sys_time", "--bounding-set=-sys_time", sys.executable, "-m",
             "pyntpd.cli.pyntpd", "-n", "--port", str(free_udp_port()), "-c", conf],
            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "CAP_SYS_TIME" in result.stderr
    assert "--observe" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="-u and -i need root")
def test_jaildir_flag_chroots_after_binding(tmp_path):
    jail = tmp_path / "jail"
    jail.mkdir()
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf, "-i", str(jail), "-u", "nobody") as d:
        root = os.readlink(f"/proc/{d.proc.pid}/root")
        assert query(d.port).header.stratum == 11
    assert root == str(jail)


def test_workers_end_when_the_main_process_is_killed():
    with config_file(LOCAL_CONF) as conf:
        d = Pyntpd("-c", conf, "--workers", "2").start()
        try:
            workers = _children(d.proc.pid)
            d.proc.kill()
            d.proc.wait(10)
            for pid in workers:
                _wait_gone(pid)
        finally:
            d.cleanup()
