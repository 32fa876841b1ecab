from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator

import pytest

from pyntpd.daemon import sdnotify


@pytest.fixture(autouse=True)
def fresh_connection() -> Iterator[None]:
    # notify() caches its connected socket across calls; each test starts without one.
    sdnotify.close()
    yield
    sdnotify.close()


@pytest.fixture
def sockdir() -> Iterator[str]:
    # Short: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can exceed it.
    with tempfile.TemporaryDirectory(prefix="pyntpd-sd") as d:
        yield d


def bind(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


@pytest.fixture
def manager(sockdir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A stand-in for systemd's notify socket at a filesystem path."""
    path = os.path.join(sockdir, "notify")
    sock = bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def test_notify_returns_false_when_not_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False


def test_notify_sends_state_to_path_socket(manager: socket.socket) -> None:
    assert sdnotify.notify("READY=1") is True
    assert manager.recv(4096) == b"READY=1"


def test_notify_sends_state_to_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"pyntpd-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = bind("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STATUS=abstract")
        assert sock.recv(4096) == b"STATUS=abstract"
    finally:
        sock.close()


def test_notify_returns_false_when_socket_is_missing(
    sockdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(sockdir, "gone"))
    assert sdnotify.notify("READY=1") is False


@pytest.mark.parametrize("value", ["vsock:2:1234", "relative/path", "@"])
def test_notify_returns_false_for_unsupported_address(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.notify("READY=1") is False


def test_notify_returns_false_for_empty_state(manager: socket.socket) -> None:
    assert sdnotify.notify("") is False


def test_notify_keeps_working_when_socket_path_becomes_unreachable(
    manager: socket.socket, sockdir: str
) -> None:
    # As after chroot (-i): the first notification connected; later ones need no path.
    sdnotify.notify("STATUS=starting")
    os.rename(os.path.join(sockdir, "notify"), os.path.join(sockdir, "moved"))
    assert sdnotify.notify("READY=1")
    assert [manager.recv(4096), manager.recv(4096)] == [b"STATUS=starting", b"READY=1"]


def test_notify_reconnects_after_manager_reexecutes(manager: socket.socket, sockdir: str) -> None:
    path = os.path.join(sockdir, "notify")
    sdnotify.notify("STATUS=one")
    manager.close()
    os.unlink(path)
    again = bind(path)
    try:
        assert sdnotify.notify("STATUS=two")
        assert again.recv(4096) == b"STATUS=two"
    finally:
        again.close()


def test_notify_follows_a_changed_notify_socket(
    manager: socket.socket, sockdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdnotify.notify("STATUS=first")
    other_path = os.path.join(sockdir, "other")
    other = bind(other_path)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", other_path)
        assert sdnotify.notify("STATUS=second")
        assert other.recv(4096) == b"STATUS=second"
    finally:
        other.close()


def test_ready_sends_ready_with_status(manager: socket.socket) -> None:
    assert sdnotify.ready("serving")
    assert manager.recv(4096) == b"READY=1\nSTATUS=serving"


def test_reloading_sends_monotonic_usec(manager: socket.socket) -> None:
    before = time.monotonic_ns() // 1000
    assert sdnotify.reloading()
    match = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", manager.recv(4096))
    assert match and before <= int(match[1]) <= time.monotonic_ns() // 1000


def test_stopping_sends_stopping(manager: socket.socket) -> None:
    assert sdnotify.stopping()
    assert manager.recv(4096) == b"STOPPING=1"


def test_watchdog_sends_keepalive(manager: socket.socket) -> None:
    assert sdnotify.watchdog()
    assert manager.recv(4096) == b"WATCHDOG=1"


def test_watchdog_interval_converts_usec_to_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0


def test_watchdog_interval_is_none_when_meant_for_another_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None


def test_watchdog_interval_is_none_without_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval() is None
