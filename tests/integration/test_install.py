"""packaging/install-service in a throwaway root (issue 11, item 11).

Each test runs the installer in a mount namespace of its own where /etc, /usr, /var and /opt
are overlays whose writable layers are this test's directories, and /run is an empty
tmpfs (so no systemd is seen and pidfiles land there): the machine's own files are never
written, and what the installer wrote stays behind in the upper layers for the test to
read. Inside, the installed service is started and stopped for real (observe-only, on a
free port), through pyntpd's SysV script and through the seed's ntpd.init with
NTPD=/usr/bin/pyntpd.

The installer installs offline from wheels built once for the module (`pip wheel` of this
repository and its dependencies), as an administrator of a host without PyPI would.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import require_root
from tests.support import REPO, free_udp_port

INSTALLER = REPO / "packaging" / "install-service"
SEED_INIT = REPO / "tests" / "data" / "seed" / "ntpd.init"
OVERLAID = ("etc", "usr", "var", "opt")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_root("unshare", "mount")
    out = tmp_path_factory.mktemp("wheels")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet",
                             "--disable-pip-version-check", "-w", str(out), str(REPO)],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        message = f"cannot build the wheels to install from: {result.stderr[-2000:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return out


@contextlib.contextmanager
def throwaway_root(tmp_path: Path) -> Iterator[Path]:
    """Upper layers under tmp_path/root; stops any daemon the test left running there."""
    root = tmp_path / "root"
    for d in OVERLAID:
        (root / d).mkdir(parents=True)
        (tmp_path / "work" / d).mkdir(parents=True)
    try:
        yield root
    finally:
        for pid in _processes_mentioning(str(tmp_path)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def run_inside(tmp_path: Path, root: Path, script: str,
               timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    mounts = "\n".join(
        f"mount -t overlay overlay -o lowerdir=/{d},upperdir={root / d},"
        f"workdir={tmp_path / 'work' / d} /{d}" for d in OVERLAID)
    # The installed programs must run on their own: not on this checkout's PYTHONPATH.
    full = f"set -eu\n{mounts}\nmount -t tmpfs tmpfs /run\nunset PYTHONPATH\n{script}\n"
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", full],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _passwd(root: Path) -> dict[str, list[str]]:
    lines = (root / "etc" / "passwd").read_text().splitlines()
    return {fields[0]: fields for fields in (line.split(":") for line in lines)}


def _conf(tmp_path: Path) -> Path:
    conf = tmp_path / "ntp.conf"
    conf.write_text("server 127.127.1.0\nfudge 127.127.1.0 stratum 10\nrestrict default\n")
    conf.chmod(0o644)
    return conf


def test_install_service_sysv_puts_everything_where_the_service_looks_and_it_runs(
        tmp_path: Path, wheels: Path) -> None:
    conf, port = _conf(tmp_path), free_udp_port()
    opts = f"-g -u ntp:ntp --observe --port {port} -c {conf}"
    seed_opts = f"-g -u ntp:ntp -p $PIDFILE -c {conf} --port {port} --observe"
    seed = SEED_INIT.read_text()
    seed = (seed.replace("NTPD=/usr/local/bin/ntpd", "NTPD=/usr/bin/pyntpd")
            .replace('NTPD_OPTS="-g -u ntp:ntp -p $PIDFILE"', f'NTPD_OPTS="{seed_opts}"'))
    (tmp_path / "ntpd.init").write_text(seed)
    env = "env -u COLUMNS -u LINES"  # ps would cut the seed's check at $COLUMNS
    script = f"""
sh {INSTALLER} --init sysv --wheels {wheels}
/usr/bin/pyntpd --version
echo "== pyntpd.init"
PYNTPD_OPTS={shlex.quote(opts)} /etc/init.d/pyntpd start
PYNTPD_OPTS={shlex.quote(opts)} /etc/init.d/pyntpd status
ps -o user= -p "$(cat /run/pyntpd.pid)"
PYNTPD_OPTS={shlex.quote(opts)} /etc/init.d/pyntpd stop
echo "== ntpd.init"
{env} sh {tmp_path / 'ntpd.init'} start
{env} sh {tmp_path / 'ntpd.init'} status
{env} sh {tmp_path / 'ntpd.init'} stop
echo "== done"
"""
    with throwaway_root(tmp_path) as root:
        result = run_inside(tmp_path, root, script)
        out = result.stdout
        assert result.returncode == 0, out + result.stderr
        # The programs, where the unit and both init scripts look.
        for name in ("pyntpd", "pyntpctl", "pyntpq"):
            link = root / "usr" / "bin" / name
            assert os.readlink(link) == f"/opt/pyntpd/bin/{name}"
        assert (root / "opt" / "pyntpd" / "bin" / "pyntpd").exists()
        assert "pyntpd 0." in out
        # The service user, as ntpd's packages make it.
        ntp = _passwd(root)["ntp"]
        assert ntp[6] == "/usr/sbin/nologin" and int(ntp[2]) < 1000
        for d in ("lib/ntp", "lib/pyntpd", "log/ntpstats"):
            assert (root / "var" / d).stat().st_uid == int(ntp[2]), d
        init = root / "etc" / "init.d" / "pyntpd"
        assert init.read_bytes() == (REPO / "packaging" / "pyntpd.init").read_bytes()
        assert init.stat().st_mode & 0o777 == 0o755
        assert (root / "etc" / "default" / "pyntpd").exists()
        assert not (root / "etc" / "systemd" / "system" / "pyntpd.service").exists()
        assert (root / "usr" / "share" / "doc" / "pyntpd" / "migration.md").exists()
        # pyntpd's own script started it (dropping to ntp) and stopped it.
        part = out.split("== pyntpd.init\n", 1)[1].split("== ntpd.init\n", 1)[0]
        assert "pyntpd started (pid" in part and "\nntp\n" in part
        # The seed's script, unchanged but for NTPD and the options, with the installed path.
        seed_part = out.split("== ntpd.init\n", 1)[1]
        assert "Starting NTP daemon... OK!\n" in seed_part
        assert "NTP daemon is running as" in seed_part
        assert "Stopping NTP daemon..." in seed_part and "OK!\n== done" in seed_part


def test_install_service_systemd_installs_a_unit_that_verifies(
        tmp_path: Path, wheels: Path) -> None:
    analyze = "systemd-analyze verify /etc/systemd/system/pyntpd.service"
    script = f"""
sh {INSTALLER} --init systemd --wheels {wheels}
if command -v systemd-analyze >/dev/null; then {analyze} && echo VERIFIED; fi
"""
    with throwaway_root(tmp_path) as root:
        result = run_inside(tmp_path, root, script)
        assert result.returncode == 0, result.stdout + result.stderr
        unit = root / "etc" / "systemd" / "system" / "pyntpd.service"
        assert unit.read_bytes() == (REPO / "packaging" / "pyntpd.service").read_bytes()
        assert not (root / "etc" / "init.d" / "pyntpd").exists()
        assert os.readlink(root / "usr" / "bin" / "pyntpd") == "/opt/pyntpd/bin/pyntpd"
        assert "not started; stop ntpd, then: systemctl enable --now pyntpd" in result.stdout
        if os.environ.get("CI") == "true" or "VERIFIED" in result.stdout:
            assert "VERIFIED" in result.stdout, result.stdout + result.stderr


def test_uninstall_removes_the_programs_and_keeps_user_and_state(
        tmp_path: Path, wheels: Path) -> None:
    script = f"""
sh {INSTALLER} --init sysv --wheels {wheels}
echo 0.5 > /var/lib/ntp/drift
sh {INSTALLER} --init sysv --uninstall
"""
    with throwaway_root(tmp_path) as root:
        result = run_inside(tmp_path, root, script)
        assert result.returncode == 0, result.stdout + result.stderr
        for name in ("pyntpd", "pyntpctl", "pyntpq"):
            assert not (root / "usr" / "bin" / name).exists()
        assert not (root / "opt" / "pyntpd").exists()
        assert not (root / "etc" / "init.d" / "pyntpd").exists()
        assert "ntp" in _passwd(root)
        assert (root / "var" / "lib" / "ntp" / "drift").read_text() == "0.5\n"
        assert (root / "etc" / "default" / "pyntpd").exists()


def test_install_leaves_a_pyntpd_that_is_not_its_own_alone(tmp_path: Path) -> None:
    require_root("unshare", "mount")
    script = f"""
printf '#!/bin/sh\\necho not ours\\n' > /usr/bin/pyntpd
sh {INSTALLER} --init sysv --wheels /nonexistent
"""
    with throwaway_root(tmp_path) as root:
        result = run_inside(tmp_path, root, script)
        assert result.returncode == 1
        assert "/usr/bin/pyntpd exists and is not a link into /opt/pyntpd" in result.stderr
        assert (root / "usr" / "bin" / "pyntpd").read_text() == "#!/bin/sh\necho not ours\n"
        assert not (root / "opt" / "pyntpd").exists()
