"""pyntpctl's service commands without a daemon: option reconciliation, the sync state line,
and the packaging files (systemd unit, SysV script) checked as far as this machine can."""

from __future__ import annotations

import argparse
import configparser
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyntpd.cli import service
from pyntpd.cli.pyntpctl import build_parser
from pyntpd.config.defaults import load_default
from pyntpd.config.model import NtsConfig
from pyntpd.daemon.exitcodes import EXIT_PANIC
from pyntpd.proto.packet import NtpHeader, decode, encode_header, li_vn_mode

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


@pytest.fixture(autouse=True)
def no_ambient_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(service.OPTS_VARIABLE, raising=False)
    monkeypatch.delenv(service.PROGRAM_VARIABLE, raising=False)


# --- which pidfile, which daemon arguments ----------------------------------------------------


def test_defaults_are_the_seeds_options_and_run_pyntpd() -> None:
    s = service.service_from(parse("start"))
    assert s.pidfile == "/run/pyntpd.pid"
    assert s.daemon_args == ("-g", "-u", "ntp:ntp", "-p", "/run/pyntpd.pid")
    assert s.program[1:] == ("-m", "pyntpd.cli.pyntpd")
    assert (s.host, s.port) == ("127.0.0.1", 123)


def test_pidfile_option_is_passed_to_the_daemon() -> None:
    s = service.service_from(parse("start", "--pidfile", "/tmp/x.pid"))
    assert s.daemon_args[-2:] == ("-p", "/tmp/x.pid")


def test_daemon_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNTPD_OPTS", "--observe --port 1234 -c '/etc/my ntp.conf'")
    s = service.service_from(parse("status"))
    assert s.daemon_args == ("--observe", "--port", "1234", "-c", "/etc/my ntp.conf", "-p",
                             "/run/pyntpd.pid")
    assert s.port == 1234


def test_arguments_after_the_separator_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYNTPD_OPTS", "--port 1234")
    s = service.service_from(parse("start", "--", "-x", "--port", "999"))
    assert s.daemon_args == ("-x", "--port", "999", "-p", "/run/pyntpd.pid")


def test_dash_p_in_the_daemon_options_names_the_pidfile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNTPD_OPTS", "-g -p /var/run/ntpd.pid")
    s = service.service_from(parse("stop"))
    assert s.pidfile == "/var/run/ntpd.pid"
    assert s.daemon_args == ("-g", "-p", "/var/run/ntpd.pid")


def test_contradicting_pidfiles_are_a_usage_error() -> None:
    with pytest.raises(service.UsageError, match=r"contradicts -p /b\.pid"):
        service.service_from(parse("start", "--pidfile", "/a.pid", "--", "-p", "/b.pid"))


@pytest.mark.parametrize("flag", ["-n", "-d", "--check"])
def test_foreground_daemon_options_are_refused(flag: str) -> None:
    with pytest.raises(service.UsageError, match="foreground"):
        service.service_from(parse("start", "--", flag))


def test_options_pyntpd_refuses_are_a_usage_error() -> None:
    with pytest.raises(service.UsageError, match="saveconfig"):
        service.service_from(parse("start", "--", "--saveconfigquit", "/tmp/x"))


def test_unbalanced_quotes_in_the_environment_are_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYNTPD_OPTS", "-c 'unterminated")
    with pytest.raises(service.UsageError, match="PYNTPD_OPTS"):
        service.service_from(parse("start"))


def test_ipv6_only_daemon_is_asked_on_ipv6_loopback() -> None:
    assert service.service_from(parse("status", "--", "-6")).host == "::1"


def test_status_port_and_host_options_win() -> None:
    s = service.service_from(parse("status", "--port", "5123", "--host", "127.0.0.2", "--",
                                   "--port", "99"))
    assert (s.host, s.port) == ("127.0.0.2", 5123)


def test_program_from_option_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNTPD", "/opt/pyntpd/bin/pyntpd")
    assert service.service_from(parse("start")).program == ("/opt/pyntpd/bin/pyntpd",)
    assert service.service_from(parse("start", "--pyntpd", "/x")).program == ("/x",)


def test_usage_error_exit_codes_are_lsb(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse("start", "--", "-n").func(parse("start", "--", "-n")) == 2
    # status has its own codes: 4 is "cannot tell".
    assert parse("status", "--", "-n").func(parse("status", "--", "-n")) == 4
    assert "foreground" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "99999"])
def test_timeouts_must_be_sensible(bad: str) -> None:
    with pytest.raises(SystemExit):
        parse("stop", "--timeout", bad)


def test_every_service_command_is_registered() -> None:
    for command in ("start", "stop", "restart", "reload", "status"):
        assert parse(command).func is service._run


# --- the sync state line ----------------------------------------------------------------------


@pytest.mark.parametrize(("refid", "stratum", "text"), [
    (b"GPS\0", 1, "GPS"),
    (b"LOCL", 11, "LOCL"),
    (bytes([192, 0, 2, 1]), 3, "192.0.2.1"),
    (bytes([10, 1, 2, 3]), 2, "10.1.2.3"),
    (b"\xc0\x00\x02\x01", 1, "...."),
])
def test_refid_text(refid: bytes, stratum: int, text: str) -> None:
    assert service.refid_text(refid, stratum) == text


def header(leap: int = 0, stratum: int = 3, refid: bytes = bytes([192, 0, 2, 1]),
           origin: int = 0, mode: int = 4) -> NtpHeader:
    return NtpHeader(li_vn_mode(leap, 4, mode), stratum, 6, -20, 0, 0, refid, 0, origin, 0, 1)


def test_describe_synchronised_reply() -> None:
    assert service.describe_reply(header()) == "synchronised: stratum 3, refid 192.0.2.1"


def test_describe_leap_3_as_unsynchronised() -> None:
    assert service.describe_reply(header(leap=3)) == "unsynchronised (stratum 16)"


def test_describe_kiss_of_death() -> None:
    assert service.describe_reply(header(stratum=0, refid=b"RATE")) == \
        "unsynchronised (kiss code RATE)"


@pytest.fixture
def responder() -> Iterator[tuple[int, list[bytes]]]:
    """A stand-in server on loopback: first a reply with a wrong origin (ignored), then junk,
    then the real answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    received: list[bytes] = []

    def serve() -> None:
        try:
            data, peer = sock.recvfrom(2048)
        except OSError:
            return
        received.append(data)
        request = decode(data).header
        sock.sendto(encode_header(header(origin=request.transmit ^ 1)), peer)
        sock.sendto(b"junk", peer)
        sock.sendto(encode_header(header(stratum=2, origin=request.transmit)), peer)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield sock.getsockname()[1], received
    finally:
        thread.join(10)
        sock.close()


def test_sync_state_sends_one_client_request_and_trusts_only_the_matching_reply(
    responder: tuple[int, list[bytes]],
) -> None:
    port, received = responder
    assert service.sync_state("127.0.0.1", port) == "synchronised: stratum 2, refid 192.0.2.1"
    [request] = received
    assert len(request) == 48 and decode(request).header.mode == 3


def test_sync_state_without_a_server_says_unknown() -> None:
    # Nothing listens: Linux answers with port unreachable, or the wait runs out.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        text = service.sync_state("127.0.0.1", port, timeout=0.3)
    assert text.startswith("sync state unknown:") and f"port {port}" in text


# --- packaging --------------------------------------------------------------------------------


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(PACKAGING / "pyntpd.service")
    return parser


def test_unit_is_type_notify_in_the_foreground() -> None:
    s = unit()["Service"]
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["ExecStart"].split()[:2] == ["/usr/bin/pyntpd", "-n"]
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_unit_keeps_only_the_clock_and_port_capabilities() -> None:
    s = unit()["Service"]
    wanted = {"CAP_SYS_TIME", "CAP_NET_BIND_SERVICE"}
    assert set(s["CapabilityBoundingSet"].split()) == wanted
    assert set(s["AmbientCapabilities"].split()) == wanted
    assert s["NoNewPrivileges"] == "yes" and s["User"] == "ntp"
    # -u needs CAP_SETUID, which the bounding set withholds: systemd switches the user.
    assert "-u" not in s["ExecStart"].split()


def test_unit_sandboxing() -> None:
    s = unit()["Service"]
    for key in ("ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
                "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute"):
        assert s[key] == "yes", key
    assert s["ProtectSystem"] == "strict"
    assert (s["StateDirectory"], s["LogsDirectory"]) == ("ntp pyntpd", "ntpstats")
    assert set(s["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX",
                                                          "AF_NETLINK"}
    assert set(s["SystemCallFilter"].split()) == {"@system-service", "@clock"}
    assert "ProtectClock" not in s  # it would forbid the service's job
    assert "WatchdogSec" not in s  # pyntpd does not ping a watchdog


def _writable_under_the_unit() -> list[Path]:
    s = unit()["Service"]
    return ([Path("/var/lib", d) for d in s["StateDirectory"].split()]
            + [Path("/var/log", d) for d in s["LogsDirectory"].split()])


def test_the_default_drift_file_is_in_a_directory_the_unit_can_write() -> None:
    # Without /etc/ntp.conf the daemon runs the embedded default, whose drift file must be
    # writable under ProtectSystem=strict: a StateDirectory= of the unit.
    drift = Path(load_default().driftfile or "")
    assert drift.parent in _writable_under_the_unit(), drift


def test_ntpds_usual_drift_and_statistics_paths_are_writable_under_the_unit() -> None:
    writable = _writable_under_the_unit()
    assert Path("/var/lib/ntp") in writable and Path("/var/log/ntpstats") in writable


def test_the_default_nts_cookie_key_file_is_in_a_directory_the_unit_can_write() -> None:
    cookie = Path(NtsConfig().cookie)
    assert cookie.parent in _writable_under_the_unit(), cookie


def test_unit_conflicts_with_the_other_time_daemons() -> None:
    u = unit()["Unit"]
    conflicts = set(u["Conflicts"].split())
    assert {"systemd-timesyncd.service", "ntp.service", "ntpsec.service",
            "chrony.service"} <= conflicts
    assert "time-sync.target" in u["Before"]


def test_unit_restarts_after_a_failure_but_never_after_a_panic_exit() -> None:
    s = unit()["Service"]
    assert s["Restart"] == "on-failure"
    # A restarted daemon with -g would step the clock to the sources that made it panic.
    assert s["RestartPreventExitStatus"].split() == [str(EXIT_PANIC)]
    assert "-g" in (PACKAGING / "pyntpd.default").read_text()  # why it matters


def require_tool(name: str) -> str:
    """The tool's path; scripts/install-test-deps installs it, so under CI a missing one
    is a failure, never a silent skip."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/install-test-deps installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    # verify insists that ExecStart's program exists: point it at any executable.
    text = (PACKAGING / "pyntpd.service").read_text()
    copy = tmp_path / "pyntpd.service"
    copy.write_text(text.replace("/usr/bin/pyntpd", shutil.which("true") or "/bin/true"))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_defaults_file_is_valid_shell_with_the_seeds_options() -> None:
    script = f". {PACKAGING / 'pyntpd.default'}; echo \"$PYNTPD_OPTS|$PIDFILE\""
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10)
    assert result.stdout.strip() == "-g -u ntp:ntp|/run/pyntpd.pid"


@pytest.mark.parametrize("script", ["pyntpd.init", "install-service"])
@pytest.mark.parametrize("shell", ["sh", "dash", "bash"])
def test_init_script_syntax(shell: str, script: str) -> None:
    require_tool(shell)
    result = subprocess.run([shell, "-n", str(PACKAGING / script)], capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", ["pyntpd.init", "install-service"])
def test_init_script_passes_shellcheck(script: str) -> None:
    require_tool("shellcheck")
    result = subprocess.run(["shellcheck", "-s", "sh", str(PACKAGING / script)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_init_script_has_an_lsb_header() -> None:
    text = (PACKAGING / "pyntpd.init").read_text()
    header = text.split("### BEGIN INIT INFO\n", 1)[1].split("### END INIT INFO", 1)[0]
    fields = dict(line[2:].split(":", 1) for line in header.splitlines()
                  if line.startswith("# ") and ":" in line and not line.startswith("#  "))
    assert fields["Provides"].strip() == "pyntpd"
    assert fields["Default-Start"].split() == ["2", "3", "4", "5"]
    assert "$network" in fields["Required-Start"]


# --- stop where the kernel has no pidfd_open ----------------------------------------------------


@pytest.fixture
def daemon_stand_in() -> Iterator[subprocess.Popen[bytes]]:
    """A child that looks like pyntpd and exits on SIGTERM; as our child, it stays a zombie
    until reaped, which stop must count as stopped."""
    proc = subprocess.Popen(["bash", "-c", "exec -a pyntpd-stand-in sleep 60"])
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/cmdline").read_bytes()[:15] != b"pyntpd-stand-in":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_stop_without_pidfd_signals_by_pid_and_polls_until_exit(
    tmp_path: Path, daemon_stand_in: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(service.os, "pidfd_open", no_pidfd)
    pidfile = tmp_path / "pyntpd.pid"
    pidfile.write_text(f"{daemon_stand_in.pid}\n")
    s = service.Service(str(pidfile), ("pyntpd",), (), "127.0.0.1", 123)
    assert service.stop(s, timeout=10) == 0
    assert capsys.readouterr().out == f"pyntpd stopped (pid {daemon_stand_in.pid})\n"
    assert daemon_stand_in.wait(1) == -15  # SIGTERM, and still unreaped until now
    assert not pidfile.exists()
