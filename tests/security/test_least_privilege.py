"""Least privilege, verified on the running process (issue 6, item 6).

The daemons here discipline a simulated clock (tests/faults/harness.program(simclock=True)):
they take the code path that keeps CAP_SYS_TIME, while this machine's clock is never touched.
Without a simulated clock, with --observe, no capability is kept at all: that is
tests/integration/test_daemon.py::test_user_flag_in_observe_mode_keeps_no_capability, and
the chroot with -i is ::test_jaildir_flag_chroots_after_binding.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.faults.harness import (
    poll_until,
    proc_status,
    program,
    require_root,
    wrapper,
)
from tests.support import LOCAL_CONF, REPO, Pyntpd, query

CAP_SYS_TIME = 1 << 25
UNIT = REPO / "packaging" / "pyntpd.service"
MAX_EXPOSURE = 3.0  # systemd-analyze's score for the unit as shipped: 2.3


@pytest.fixture
def root() -> None:
    require_root("setpriv", "unshare")


def _world_readable_dir(tmp_path: Path) -> Path:
    # pytest's tmp_path is 0700: the -u user could not reach the files in it.
    directory = tmp_path / "run"
    directory.mkdir()
    for d in (tmp_path, directory):
        d.chmod(0o755)
    return directory


@pytest.mark.needs_sys_time
def test_after_dash_u_only_cap_sys_time_is_left(
        root: None, tmp_path: Path) -> None:
    d = _world_readable_dir(tmp_path)
    conf = d / "ntp.conf"
    conf.write_text(LOCAL_CONF)
    prog = program(d, simclock=True)
    with Pyntpd("-c", str(conf), "-u", "nobody", observe=False, wrap=wrapper(prog)) as daemon:
        status = proc_status(daemon.proc.pid)
        assert query(daemon.port).header.stratum == 11
    caps = {name: int(status[name], 16) for name in
            ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb")}
    assert caps == {"CapEff": CAP_SYS_TIME, "CapPrm": CAP_SYS_TIME, "CapBnd": CAP_SYS_TIME,
                    "CapInh": 0, "CapAmb": 0}
    assert status["NoNewPrivs"] == "1"
    assert status["Uid"].split() == ["65534"] * 4
    nobody = pwd.getpwnam("nobody")
    assert status["Gid"].split() == [str(nobody.pw_gid)] * 4
    # nobody's own groups (initgroups), root's are gone
    assert {int(g) for g in status["Groups"].split()} == set(
        os.getgrouplist("nobody", nobody.pw_gid))


@pytest.mark.needs_sys_time
def test_chroot_with_dash_i_serves_from_inside_the_jail_keeping_cap_sys_time(
        root: None, tmp_path: Path) -> None:
    d = _world_readable_dir(tmp_path)
    jail = d / "jail"
    jail.mkdir()
    conf = d / "ntp.conf"
    conf.write_text(LOCAL_CONF)
    prog = program(d, simclock=True)
    with Pyntpd("-c", str(conf), "-u", "nobody", "-i", str(jail), observe=False,
                wrap=wrapper(prog)) as daemon:
        root = os.readlink(f"/proc/{daemon.proc.pid}/root")
        status = proc_status(daemon.proc.pid)
        assert query(daemon.port).header.stratum == 11
        assert daemon.stop() == 0
    assert root == str(jail)
    assert int(status["CapEff"], 16) == CAP_SYS_TIME


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode)
            for p in root.rglob("*")}


@pytest.mark.needs_sys_time
def test_no_file_the_daemon_creates_is_world_writable_even_under_umask_000(
        root: None, tmp_path: Path) -> None:
    from tests.ntscerts import make_pki
    d = _world_readable_dir(tmp_path)
    pki = make_pki(tmp_path / "pki")
    made = d / "made"  # everything the daemon creates, and nothing else
    made.mkdir()
    (made / "stats").mkdir()
    conf = d / "ntp.conf"
    conf.write_text(
        f"{LOCAL_CONF}tinker freq 3.5\nstatsdir {made / 'stats'}/\nstatistics sysstats\n"
        f"nts enable cert {pki.cert} key {pki.key} cookie {made / 'nts' / 'keys'} "
        f"listen 127.0.0.1 port {_free_tcp_port()}\n")
    prog = program(d, simclock=True)

    def umask_000(argv: list[str]) -> list[str]:
        return ["sh", "-c", 'umask 000 && exec "$@"', "sh", *wrapper(prog)(argv)]

    daemon = Pyntpd("-c", str(conf), "-p", str(made / "pyntpd.pid"), "-f",
                    str(made / "ntp.drift"), "-l", str(made / "pyntpd.log"),
                    "--status-socket", str(made / "status.sock"), observe=False,
                    wrap=umask_000)
    with daemon:
        poll_until(lambda: (made / "status.sock").exists(), 10, "status socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(made / "status.sock"))
        during = _modes(made)
        assert daemon.stop() == 0
    after = _modes(made)
    created = during | after
    expected = {"pyntpd.pid", "pyntpd.log", "status.sock", "nts", "nts/keys", "stats",
                "ntp.drift"}
    assert expected <= set(created), created
    assert any(re.fullmatch(r"stats/sysstats\.\d{8}", name) for name in after), after
    for name, mode in created.items():  # (for the status socket, o+w is "anyone may ask")
        assert not mode & stat.S_IWOTH, f"{name} is world-writable ({mode:o})"
    assert created["nts/keys"] == 0o600 and created["nts"] == 0o700
    assert created["status.sock"] == 0o600
    assert created["pyntpd.log"] & 0o077 in (0o040, 0o000)


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_units_sandboxing_scores_no_worse_than_it_does_today() -> None:
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (install-test-deps installs systemd)")
        pytest.skip("no systemd-analyze")
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for pyntpd\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.needs_sys_time
def test_the_daemon_runs_under_the_units_restrictions(
        root: None, tmp_path: Path) -> None:
    """What pyntpd.service imposes, reproduced without systemd: the root file system
    read-only but for the state and log directories (ProtectSystem=strict, StateDirectory,
    LogsDirectory), a bounding set of the unit's two capabilities, no new privileges. The
    daemon starts, serves, writes its statistics and, at exit, its drift file there."""
    d = _world_readable_dir(tmp_path)
    state, logs = d / "lib-ntp", d / "ntpstats"
    state.mkdir()
    logs.mkdir()
    conf = d / "ntp.conf"
    conf.write_text(f"{LOCAL_CONF}tinker freq 4.25\ndriftfile {state / 'ntp.drift'}\n"
                    f"statsdir {logs}/\nstatistics sysstats\n")
    prog = program(d, simclock=True)
    notify_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    setup = (f"mount --bind {state} {state}\nmount --bind {logs} {logs}\n"
             "mount -o remount,bind,ro /\n"
             f"for dir in /tmp {notify_dir}; do "
             "mountpoint -q $dir && mount -o remount,bind,ro $dir || true; done\n"
             # the file system really is read-only outside the two directories
             f"if [ -w /etc ] || touch {d}/ro-check 2>/dev/null; then exit 98; fi")

    caps = "+sys_time,+net_bind_service"
    restricted = wrapper(prog, setup, prefix=(
        "setpriv", "--no-new-privs", f"--bounding-set=-all,{caps}",
        f"--inh-caps=-all,{caps}"))

    with Pyntpd("-c", str(conf), observe=False, wrap=restricted) as daemon:
        status = proc_status(daemon.proc.pid)
        assert query(daemon.port).header.stratum == 11
        assert daemon.stop() == 0, daemon.output()
    assert status["NoNewPrivs"] == "1"
    assert int(status["CapBnd"], 16) == CAP_SYS_TIME | 1 << 10
    assert float((state / "ntp.drift").read_text()) == 4.25
    assert any(p.name.startswith("sysstats.") for p in logs.iterdir())
