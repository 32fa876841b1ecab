"""systemd's notify protocol (Type=notify), without python-systemd.

The protocol is one datagram of "KEY=VALUE" lines to the AF_UNIX socket named by
$NOTIFY_SOCKET; a leading '@' names the abstract namespace. The first call connects the
socket and later calls reuse it, so notifications still reach systemd after chroot (-i) has
hidden /run/systemd/notify: call notify() once (STATUS=...) before chrooting.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

_SEND_TIMEOUT = 1.0

_sock: socket.socket | None = None
_sock_addr: str | None = None


def _address(value: str) -> str | None:
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and other transports are not ours to speak


def _connect(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    # A stalled manager must not stall the time service for long; a lost STATUS is harmless.
    sock.settimeout(_SEND_TIMEOUT)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def _close() -> None:
    global _sock, _sock_addr
    if _sock is not None:
        _sock.close()
    _sock, _sock_addr = None, None


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=...") to systemd; False if not under systemd."""
    global _sock, _sock_addr
    value = os.environ.get("NOTIFY_SOCKET", "")
    address = _address(value)
    if address is None or not state:
        return False
    payload = state.encode("utf-8")
    for attempt in range(2):
        try:
            if _sock is None or _sock_addr != address:
                _close()
                _sock, _sock_addr = _connect(address), address
            _sock.send(payload)
            return True
        except ConnectionRefusedError:
            # The manager was re-executed since we connected (a new socket at the same
            # path): reconnect once.
            _close()
            if attempt:
                return False
        except OSError:
            _close()
            return False
    return False


def ready(status: str | None = None) -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def reloading() -> bool:
    # Type=notify-reload (systemd 253+) wants the CLOCK_MONOTONIC time of the reload start.
    return notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")


def stopping() -> bool:
    return notify("STOPPING=1")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between keep-alives systemd expects (WatchdogSec=), or None if none asked."""
    try:
        usec = int(os.environ["WATCHDOG_USEC"])
    except (KeyError, ValueError):
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    return usec / 1e6 if usec > 0 else None


def close() -> None:
    """Forget the connected socket (tests, or before exec)."""
    with contextlib.suppress(OSError):
        _close()
