"""Helpers for tests that run pyntpd as a real process and talk to it over loopback UDP."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pyntpd.proto.packet import HEADER, NtpPacket, decode, li_vn_mode

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "tests" / "data" / "seed"
READY_TIMEOUT = 20.0
# The daemon's log line when it follows a source: address, port (if not 123), stratum, offset.
SYNCED = re.compile(
    r"synchronised to (\S+)(?: port (\d+))? \(stratum (\d+)\)(?:, offset ([-+.\d]+) s)?")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_request(version: int = 4, transmit: int = 0x0123456789ABCDEF, poll: int = 6) -> bytes:
    return HEADER.pack(li_vn_mode(0, version, 3), 0, poll, -20, 0, 0, b"\0" * 4, 0, 0, 0,
                       transmit)


def exchange(port: int, data: bytes, host: str = "127.0.0.1",
             timeout: float = 2.0) -> bytes | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, (host, port))
        try:
            return s.recv(4096)
        except TimeoutError:
            return None


def query(port: int, host: str = "127.0.0.1", version: int = 4) -> NtpPacket:
    reply = exchange(port, client_request(version), host)
    assert reply is not None, f"no reply from {host} port {port}"
    return decode(reply)


class PortTaken(AssertionError):
    """The daemon could not bind the port chosen for it."""


class Pyntpd:
    """pyntpd in the foreground (-n) as a child process; ready when it says READY=1 over
    the systemd notify socket, so tests never guess with sleeps."""

    def __init__(
        self,
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
        observe: bool = True,
        status: bool = False,
    ):
        # Tests never let a daemon near this machine's clock: --observe unless a test asks.
        self.observe = observe
        self._port_given = port is not None
        self.port = port or free_udp_port()
        self.wrap = wrap or (lambda argv: argv)
        self.args = list(args)
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="pyntpd-test-")
        self.notify_path = os.path.join(self._dir.name, "notify")
        self.log_path = os.path.join(self._dir.name, "stderr.log")
        # `status`: serve the JSON status on a Unix socket, for tests that read counters.
        self.status_path = os.path.join(self._dir.name, "status") if status else None

    def start(self) -> Pyntpd:
        # A port picked by free_udp_port() can be taken by another process before the daemon
        # binds it (other tests, other daemons on the machine): then try another one.
        for _ in range(3):
            try:
                return self._start()
            except PortTaken:
                if self._port_given:
                    raise
                with contextlib.suppress(OSError):
                    os.unlink(self.notify_path)
                self.port = free_udp_port()
        return self._start()

    def _start(self) -> Pyntpd:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(self.notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, **self.env)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.wrap([sys.executable, "-m", "pyntpd.cli.pyntpd", "-n", "--port", str(self.port),
                       *(["--observe"] if self.observe else []),
                       *(["--status-socket", self.status_path] if self.status_path else []),
                       *self.args]),
            stdout=self._log, stderr=subprocess.STDOUT, env=env, text=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"pyntpd not ready in {READY_TIMEOUT}s:\n{self.output()}")
                if self.proc.poll() is not None:
                    output = self.output()
                    if f"port {self.port}: Address already in use" in output:
                        self._log.close()
                        raise PortTaken(output)
                    raise AssertionError(f"pyntpd exited {self.proc.returncode}:\n{output}")
                notify.settimeout(min(left, 0.2))
                try:
                    message = notify.recv(4096).decode()
                except TimeoutError:
                    continue
                if "READY=1" in message.split("\n"):
                    return self
        finally:
            notify.close()

    def output(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        """Bounded wait until the daemon has logged `text` (e.g. after a signal)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            time.sleep(0.02)
        raise AssertionError(f"pyntpd never logged {text!r}:\n{self.output()}")

    def search_log(self, pattern: re.Pattern[str] | str, timeout: float,
                   last: bool = False) -> re.Match[str] | None:
        """Bounded wait for a log line matching `pattern`: the first match (or, with `last`,
        the latest one at the time of the first); None if none came in `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            matches = list(re.finditer(pattern, self.output()))
            if matches:
                return matches[-1] if last else matches[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def wait_synced(self, timeout: float = 40.0, last: bool = False) -> re.Match[str]:
        """The system peer logged first (or latest, with `last`): groups as SYNCED's."""
        match = self.search_log(SYNCED, timeout, last)
        if match is None:
            raise AssertionError(f"pyntpd did not synchronise in {timeout}s:\n{self.output()}")
        return match

    def status(self) -> dict:
        """The daemon's JSON status document (docs/metrics.md), read from its status socket."""
        assert self.status_path is not None, "start Pyntpd with status=True"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(self.status_path)
            data = b"".join(iter(lambda: s.recv(65536), b""))
        return json.loads(data)

    def source(self, address: str = "127.0.0.1") -> dict:
        """The status of the association with `address` (its counters: received, dropped)."""
        sources = [s for s in self.status()["sources"] if s["address"] == address]
        assert len(sources) == 1, f"no one source {address} in {self.status()['sources']}"
        return sources[0]

    def wait_source(self, received: int, address: str = "127.0.0.1",
                    timeout: float = 5.0) -> dict:
        """The association's status once it has received `received` datagrams (bounded):
        every datagram is then either a sample or a counted drop, so a test can assert the
        exact counters without waiting for what a wrong outcome would never bring."""
        deadline = time.monotonic() + timeout
        while True:
            source = self.source(address)
            if source["received"] >= received or time.monotonic() >= deadline:
                return source
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        code = self.proc.returncode
        return code

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._dir.cleanup()

    def __enter__(self) -> Pyntpd:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(AssertionError):
            self.stop()
        self.cleanup()


def counted(counters: dict[str, int]) -> dict[str, int]:
    """The counters that moved: a status document lists every reason, zeros included."""
    return {name: value for name, value in counters.items() if value}


@contextlib.contextmanager
def config_file(text: str) -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write(text)
    try:
        yield f.name
    finally:
        os.unlink(f.name)


LOCAL_CONF = """\
server 127.127.1.0
fudge 127.127.1.0 stratum 10
restrict default
"""
