"""The smaller holes of the second hardening round (issue 12, item 5), each attack run
against a real daemon as a local user would run it, and what the daemon does now."""

from __future__ import annotations

import re
import selectors
import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyntpd.proto.nts import CookieKeys
from tests.ntscerts import make_pki
from tests.support import LOCAL_CONF, Pyntpd, config_file


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
