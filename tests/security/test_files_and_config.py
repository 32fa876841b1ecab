"""Advisories about files and configuration: what ntpd let a config line or a path do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import LOCAL_CONF, Pyntpd, config_file, free_udp_port


def pyntpd(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyntpd.cli.pyntpd", "--observe", "-n",
                           "--port", str(free_udp_port()), *args],
                          capture_output=True, text=True, timeout=timeout)


def check(conf: str) -> subprocess.CompletedProcess[str]:
    """`pyntpd --check`: a line in error is reported (and, as in ntpd, ignored by a running
    daemon, which is what the other tests show: the refused feature never works)."""
    return pyntpd("--check", "-c", conf)


def test_cve_2020_14367_pidfile_symlink_is_never_followed(tmp_path: Path) -> None:
    """ntpd wrote its pid through a symlink planted in the pidfile's place (as root)."""
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (tmp_path / "pyntpd.pid").symlink_to(victim)
    refused = r"(?s)pyntpd exited 1:.*pidfile \S+ is a symlink"
    with config_file(LOCAL_CONF) as conf, pytest.raises(AssertionError, match=refused), \
            Pyntpd("-c", conf, "-p", str(tmp_path / "pyntpd.pid")):
        pytest.fail("pyntpd started with its pidfile through a planted symlink")
    assert victim.read_text() == "keep me\n"


def test_cve_2015_7854_an_overlong_key_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    """ntpd overflowed a buffer on a key longer than it expected (CVE-2015-7854, also
    CVE-2014-9295 class): pyntpd bounds every key and says which line is wrong."""
    keys = tmp_path / "ntp.keys"
    keys.write_text("1 SHA1 " + "ab" * 1000 + "\n")
    os.chmod(keys, 0o600)
    with config_file(f"{LOCAL_CONF}keys {keys}\ntrustedkey 1\n") as conf:
        result = check(conf)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert f"{keys}:1:" in output and "limit is 64" in output
    assert "Traceback" not in output


def test_cve_2015_7851_saveconfigdir_is_refused_with_a_reason(tmp_path: Path) -> None:
    with config_file(f"{LOCAL_CONF}saveconfigdir {tmp_path}\n") as conf:
        result = check(conf)
    output = result.stdout + result.stderr
    assert "saveconfigdir" in output and "never saves" in output


def test_autokey_is_refused_and_points_to_nts() -> None:
    """Autokey's design is broken (CVE-2013-5221 class, RFC 8915 §1): no configuration of it
    is accepted, and the error says what to use instead."""
    with config_file(f"{LOCAL_CONF}crypto pw secret\n") as conf:
        result = check(conf)
    assert result.returncode == 1 and "NTS" in result.stdout + result.stderr


def test_enable_mode7_is_refused() -> None:
    with config_file(f"{LOCAL_CONF}enable mode7\n") as conf:
        result = check(conf)
    assert result.returncode == 1 and "mode7" in result.stdout + result.stderr


def test_a_peer_without_a_key_never_becomes_a_symmetric_association() -> None:
    """Unauthenticated symmetric peers let anyone become a time source (CVE-2016-1549): a
    `peer` line without a key is polled as a server (client mode), as ntpsec does."""
    with config_file(f"{LOCAL_CONF}peer 127.0.0.2 iburst\n") as conf, \
            Pyntpd("-c", conf) as d:
        d.wait_for_log("association with 127.0.0.2")
        output = d.output()
    assert "'peer' without 'key': polled as 'server' (client mode)" in output
    assert "symmetric association" not in output
