"""The smaller holes of the second hardening round (issue 12, item 5), each attack run
against a real daemon as a local user would run it, and what the daemon does now."""

from __future__ import annotations

import os
import pwd
import re
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pyntpd.proto.nts import CookieKeys
from tests.faults.harness import require_root
from tests.ntscerts import make_pki
from tests.support import LOCAL_CONF, Pyntpd, config_file


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory the -u user (nobody) can reach: pytest's tmp_path sits under a 0700
    directory of root's."""
    require_root()
    directory = Path(tempfile.mkdtemp(prefix="pyntpd-test-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the metrics endpoint -----------------------------------------------------------------


@contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[int]]:
    """`count` connections that never send a byte, each opened again as soon as the daemon
    drops it (as the issue's attacker did)."""
    opened = [0]
    stop = threading.Event()
    selector = selectors.DefaultSelector()

    def connect() -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        opened[0] += 1

    def run() -> None:
        while not stop.is_set():
            for key, _ in selector.select(0.05):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if not data:  # dropped: back at once
                    selector.unregister(sock)
                    sock.close()  # type: ignore[union-attr]
                    if not stop.is_set():
                        connect()

    for _ in range(count):
        connect()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield opened
    finally:
        stop.set()
        thread.join(5)
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()


def _scrape(port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    return data.decode() if data.startswith(b"HTTP/1.1 200 ") else None


def _outcome(text: str, outcome: str) -> int:
    match = re.search(rf'^ntp_metrics_http_requests_total{{outcome="{outcome}"}} (\d+)', text,
                      re.MULTILINE)
    return int(match.group(1)) if match else 0


def test_sixteen_idle_connections_reopened_when_dropped_do_not_keep_scrapes_out() -> None:
    port = _free_tcp_port()
    with config_file(LOCAL_CONF) as conf, \
            Pyntpd("-c", conf, "--metrics", f"127.0.0.1:{port}"), \
            idle_connections(port, 16):
        scrapes = [_scrape(port, timeout=2.0) for _ in range(27)]
    served = [text for text in scrapes if text is not None]
    assert len(served) == 27
    # each scrape took the place of an idle connection, none was refused
    assert _outcome(served[-1], "evicted") >= 27
    assert _outcome(served[-1], "too_many_connections") == 0


# --- secrets readable by others -------------------------------------------------------------


def test_an_nts_private_key_and_cookie_keys_at_0644_are_warned_about_and_the_keys_rewritten(
        tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    pki.key.chmod(0o644)
    cookie = tmp_path / "nts-keys"
    keys = CookieKeys()
    keys.rotate(time.time())
    cookie.write_text(keys.to_text())
    cookie.chmod(0o644)
    conf = tmp_path / "ntp.conf"
    conf.write_text(f"{LOCAL_CONF}nts enable cert {pki.cert} key {pki.key} cookie {cookie} "
                    f"listen 127.0.0.1 port {_free_tcp_port()}\n")
    with Pyntpd("-c", str(conf)) as daemon:
        mode = stat.S_IMODE(cookie.stat().st_mode)  # at once, not at the next rotation
        output = daemon.output()
    assert f"NTS private key {pki.key} is readable by others (mode 0644)" in output
    assert f"NTS cookie key file {cookie} is readable by others (mode 0644)" in output
    assert mode == 0o600
    kept = CookieKeys.from_text(cookie.read_text()).keys
    assert [(k.key_id, k.secret) for k in kept] == [(k.key_id, k.secret) for k in keys.keys]


# --- the cookie key file in a directory the service user controls ---------------------------


def test_a_directory_link_the_service_user_planted_does_not_send_roots_write_elsewhere(
        reachable: Path) -> None:
    """`nts cookie DIR/sub/keys` with DIR owned by the -u user, who made DIR/sub a link to
    a directory only root may write: the keys are written as that user (who cannot write
    there), never by root through the link."""
    tmp_path = reachable
    nobody = pwd.getpwnam("nobody")
    owned = tmp_path / "state"  # the service user's own directory
    owned.mkdir()
    os.chown(owned, nobody.pw_uid, nobody.pw_gid)
    protected = tmp_path / "root-only"
    protected.mkdir(mode=0o700)
    (owned / "sub").symlink_to(protected)
    os.lchown(owned / "sub", nobody.pw_uid, nobody.pw_gid)
    pki = make_pki(tmp_path / "pki")
    for path in (pki.directory, pki.cert, pki.key):
        path.chmod(0o755 if path.is_dir() else 0o644)
    conf = tmp_path / "ntp.conf"
    conf.write_text(f"{LOCAL_CONF}nts enable cert {pki.cert} key {pki.key} "
                    f"cookie {owned / 'sub' / 'keys'} listen 127.0.0.1 "
                    f"port {_free_tcp_port()}\n")
    conf.chmod(0o644)
    with Pyntpd("-c", str(conf), "-u", "nobody") as daemon:
        output = daemon.output()
    assert list(protected.iterdir()) == []
    assert f"NTS: cannot write cookie keys to {owned / 'sub' / 'keys'}: Permission denied" \
        in output


# --- the log file under -u ------------------------------------------------------------------


def test_the_log_file_root_created_before_dash_u_is_reopened_on_sighup(reachable: Path) -> None:
    """-l FILE is created by root before the drop; SIGHUP reopens it as the -u user, both
    in place and after logrotate moved it away (the directory is the user's, as
    /var/log/ntpstats is ntpd's)."""
    tmp_path = reachable
    nobody = pwd.getpwnam("nobody")
    logs = tmp_path / "log"
    logs.mkdir()
    os.chown(logs, nobody.pw_uid, nobody.pw_gid)
    logfile = logs / "pyntpd.log"
    conf = tmp_path / "ntp.conf"
    conf.write_text(LOCAL_CONF)
    conf.chmod(0o644)
    with Pyntpd("-c", str(conf), "-u", "nobody", "-l", str(logfile)) as daemon:
        owner = logfile.stat().st_uid
        daemon.signal(signal.SIGHUP)
        _wait_for(logfile, "configuration reloaded")
        logfile.rename(logs / "pyntpd.log.1")  # logrotate without copytruncate
        daemon.signal(signal.SIGHUP)
        _wait_for(logfile, "configuration reloaded")
        assert daemon.stop() == 0
    rotated = (logs / "pyntpd.log.1").read_text()
    assert owner == nobody.pw_uid
    assert "cannot reopen" not in rotated + logfile.read_text()
    assert logfile.stat().st_uid == nobody.pw_uid
    assert "daemon exiting" in logfile.read_text()


def _wait_for(path: Path, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} not in {path}:\n" + (
            path.read_text() if path.exists() else "(none)")
        time.sleep(0.02)


# --- includefile without end ----------------------------------------------------------------


def test_two_thousand_includes_of_a_20000_line_file_are_refused_quickly_with_a_clear_error(
        tmp_path: Path) -> None:
    big = tmp_path / "big.conf"
    big.write_text("".join(f"restrict 10.{i // 62500}.{i // 250 % 250}.{i % 250} nomodify\n"
                           for i in range(20_000)))
    conf = tmp_path / "ntp.conf"
    conf.write_text(LOCAL_CONF + f"includefile {big}\n" * 2000)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pyntpd.cli.pyntpd", "--check", "-c",
                             str(conf)], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 1
    assert (f"{conf}:6:13: error: include file '{big}' not read: with it the configuration "
            "would exceed 50000 lines or 4 MiB (it has 20001 lines, 42006 are read already)"
            in result.stdout)
    assert f"{conf}:6:13: error: 1997 more includefile line(s) after this one" in result.stdout
    assert took < 30, took  # was still running after 60 s
