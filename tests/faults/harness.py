"""What the fault tests share: a pyntpd program with test-time patches, a scripted upstream
that the test can make vanish and come back, and a private mount namespace for the daemon.

The patches are applied in the child before pyntpd's main() runs, the way
tests/integration/test_service.py injects a simulated clock: module constants that only set
how long the daemon waits (retry back-off, when a silent source counts as unreachable) are
shortened so that a fault plays out in seconds, and `simclock=True` makes the daemon believe
it disciplines a clock (a SimClock) so that it keeps a drift file and keeps CAP_SYS_TIME,
while this machine's clock is never touched.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pyntpd.proto.packet import HEADER, decode, li_vn_mode
from pyntpd.proto.timestamp import seconds_to_short, unix_to_ntp

SIMCLOCK = """\
import time
from pyntpd.clock.simclock import SimClock
from pyntpd.daemon import app
app.make_clock = lambda options, config: SimClock(epoch_ns=time.time_ns())
"""


# A simulated clock that runs with this machine's time (as a disciplined clock would) until
# the daemon corrects it: then it runs that far off, and the real clock is never touched.
# Receive timestamps still come from the kernel, so after a step the next samples disagree:
# good for what happens up to the first correction (a panic), not beyond.
RUNNING_SIMCLOCK = """\
import time
from pyntpd.clock.simclock import SimClock
from pyntpd.daemon import app

class _RunningSimClock(SimClock):
    def __init__(self):
        super().__init__(epoch_ns=time.time_ns())
        self._started = time.monotonic()

    def now(self):
        self.advance_to(time.monotonic() - self._started)
        return super().now()

app.make_clock = lambda options, config: _RunningSimClock()
"""


def program(directory: Path, *, simclock: bool = False, running_clock: bool = False,
            preamble: str = "", tuning: dict[str, float] | None = None,
            **constants: dict[str, float]) -> Path:
    """An executable that runs pyntpd after the patches: constants={"pyntpd.daemon.sources":
    {"RESOLVE_RETRY_MIN": 0.5}} sets that module's constant first; tuning={"hold_wakeup": 2.0}
    makes the sync engine's default Tuning (sync/tuning.DEFAULT) start from those values;
    `preamble` is Python run before anything else (e.g. without_family); `running_clock`:
    RUNNING_SIMCLOCK."""
    lines = ["import importlib, sys"]
    if preamble:
        lines.append(preamble)
    if simclock:
        lines.append(SIMCLOCK)
    if running_clock:
        lines.append(RUNNING_SIMCLOCK)
    if tuning:
        lines += ["import dataclasses, pyntpd.sync.tuning as _t",
                  f"_t.DEFAULT = dataclasses.replace(_t.DEFAULT, **{tuning!r})"]
    for module, values in constants.items():
        lines.append(f"_m = importlib.import_module({module!r})")
        lines += [f"_m.{name} = {value!r}" for name, value in values.items()]
    lines += ["from pyntpd.cli.pyntpd import main", "sys.exit(main())"]
    path = directory / "pyntpd-test"
    path.write_text(f"#!{sys.executable}\n" + "\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def without_family(name: str) -> str:
    """A `program` preamble: socket() of `name` ("AF_INET6" or "AF_INET") fails with
    EAFNOSUPPORT, as on a kernel booted with ipv6.disable=1 (or, for IPv4, the mirror
    image); sockets made from an existing descriptor (accept, socketpair) are unaffected."""
    return f"""\
import errno as _errno, os as _os, socket as _socket
_Socket = _socket.socket
class _WithoutFamily(_Socket):
    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        if fileno is None and (_socket.AF_INET if family == -1 else family) == _socket.{name}:
            raise OSError(_errno.EAFNOSUPPORT, _os.strerror(_errno.EAFNOSUPPORT))
        super().__init__(family, type, proto, fileno)
_socket.socket = _WithoutFamily
"""


def wrapper(prog: Path, setup: str = "", prefix: tuple[str, ...] = ()
            ) -> Callable[[list[str]], list[str]]:
    """A `wrap` for tests.support.Pyntpd: run `prog` instead of `python -m pyntpd.cli.pyntpd`,
    after the shell commands `setup` in a mount namespace of its own if `setup` is given
    (mounts made there are invisible to the rest of the machine and go with the process),
    through the command `prefix` (e.g. setpriv) if given."""

    def wrap(argv: list[str]) -> list[str]:
        args = [*prefix, str(prog), *argv[3:]]
        if not setup:
            return args
        script = f"set -e\n{setup}\nexec {shlex.join(args)}"
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]

    return wrap


def ns_path(pid: int, path: Path | str) -> Path:
    """`path` as the process `pid` sees it (in its mount namespace)."""
    return Path(f"/proc/{pid}/root") / str(path).lstrip("/")


def poll_until(what: Callable[[], object], timeout: float, message: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {message}")
        time.sleep(0.05)


def answer(request: bytes, stratum: int) -> bytes | None:
    """A server's reply, stamped with this machine's clock (which the observing pyntpd
    reads too, so the offset is ~0)."""
    try:
        h = decode(request).header
    except ValueError:
        return None
    now = time.time()
    return HEADER.pack(li_vn_mode(0, 4, 4), stratum, h.poll, -20, seconds_to_short(0.001),
                       seconds_to_short(0.001), b"TEST", unix_to_ntp(now - 16), h.transmit,
                       unix_to_ntp(now), unix_to_ntp(now + 1e-5))


class Upstreams:
    """NTP servers on loopback addresses, answered by one thread. `vanish(addr)` closes the
    socket (the daemon then gets ICMP port unreachable, as when a server process dies);
    `come_back(addr)` binds the same address and port again."""

    def __init__(self, port: int = 0, stratum: int = 2) -> None:
        self.port = port
        self.stratum = stratum
        self.answered: dict[str, int] = {}
        self._socks: dict[str, socket.socket] = {}
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def come_back(self, address: str = "127.0.0.1") -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, self.port))
        self.port = sock.getsockname()[1]
        sock.setblocking(False)
        with self._lock:
            self._socks[address] = sock
            self._sel.register(sock, selectors.EVENT_READ, address)

    def vanish(self, address: str = "127.0.0.1") -> None:
        with self._lock:
            sock = self._socks.pop(address)
            self._sel.unregister(sock)
            sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                ready = self._sel.select(0.05) if self._socks else []
                for key, _ in ready:
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    with contextlib.suppress(OSError):
                        data, peer = sock.recvfrom(2048)
                        reply = answer(data, self.stratum)
                        if reply is not None:
                            sock.sendto(reply, peer)
                            self.answered[key.data] = self.answered.get(key.data, 0) + 1
            if not ready:
                time.sleep(0.01)

    def __enter__(self) -> Upstreams:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for address in list(self._socks):
            self.vanish(address)
        self._sel.close()


@contextlib.contextmanager
def upstreams(*addresses: str, stratum: int = 2) -> Iterator[Upstreams]:
    with Upstreams(stratum=stratum) as ups:
        for address in addresses:
            ups.come_back(address)
        yield ups


def no_traceback(output: str) -> None:
    assert "Traceback" not in output and "Exception" not in output, output


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)




def require_root(*tools: str) -> None:
    """Skip the calling test without root (mount namespaces, -u, -i) or without `tools`,
    except under CI=true, where it fails: the fault tests must run in CI."""
    import shutil

    import pytest

    missing = [t for t in tools if shutil.which(t) is None]
    if os.geteuid() != 0:
        missing.insert(0, "root")
    if missing:
        reason = f"needs {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI must run the fault tests)")
        pytest.skip(reason)
