"""NTS-KE abuse against a real pyntpd (issue 12, item 2): slots a few addresses try to hold,
and an NTS-KE server that must never hold up the time service.

Legitimate clients here are stdlib TLS clients bound to a chosen source address (the
loopback network routes all of 127.0.0.0/8), so an attacker's network and another network
can both be tried. The counts come from the daemon's JSON status (`nts_ke`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import selectors
import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from types import TracebackType

import pytest

from pyntpd.daemon.ntsketls import SESSION_TIMEOUT
from pyntpd.proto import ntske
from pyntpd.proto.ntske import RecordType
from tests.faults.harness import poll_until, proc_status, program, require_root, wrapper
from tests.integration.test_nts import ke, nts_server, read_response
from tests.ntscerts import Pki, make_pki
from tests.support import LOCAL_CONF, Pyntpd, query

HELPER = re.compile(r"NTS-KE served by helper process (\d+)")


def cookies_for(port: int, pki: Pki, source: str, timeout: float = 5.0) -> int:
    """A whole NTS-KE exchange from `source`: the number of cookies received (0 if the
    connection was refused or dropped)."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["ntske/1"])
    raw = socket.socket()
    raw.settimeout(timeout)
    try:
        raw.bind((source, 0))
        raw.connect(("127.0.0.1", port))
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(ntske.client_request())
            records = read_response(sock)
    except (OSError, ssl.SSLError, ntske.NtsKeError):
        return 0
    finally:
        raw.close()
    return sum(1 for r in records if r.type == RecordType.NEW_COOKIE)


class IdleConnections:
    """`each` idle TCP connections from every source address, each re-opened as soon as the
    server drops it (in rounds 50 ms apart): the issue's slot attack. Runs in a
    thread for at most `lifetime` seconds."""

    def __init__(self, port: int, sources: list[str], each: int, lifetime: float = 60.0):
        self.port = port
        self.sources = sources
        self.each = each
        self.lifetime = lifetime
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> IdleConnections:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def _open(self, selector: selectors.BaseSelector, source: str) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((source, 0))
        code = sock.connect_ex(("127.0.0.1", self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            return
        selector.register(sock, selectors.EVENT_READ, source)
        self.opened += 1

    def _run(self) -> None:
        deadline = time.monotonic() + self.lifetime
        with selectors.DefaultSelector() as selector:
            for source in self.sources:
                for _ in range(self.each):
                    self._open(selector, source)
            while not self._stop.is_set() and time.monotonic() < deadline:
                dropped = []
                for key, _ in selector.select(0.01):
                    try:
                        data = key.fileobj.recv(4096)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        dropped.append(key)
                for key in dropped:
                    selector.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
                    self._open(selector, key.data)
                time.sleep(0.05)
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]


def nts_ke(d: Pyntpd) -> dict[str, int]:
    return d.status().get("nts_ke", {})


def test_idle_connections_from_eight_addresses_do_not_starve_legitimate_clients(
        tmp_path: Path) -> None:
    """The finding: 64 idle connections from 8 addresses, re-opened when dropped, left 0 of
    44 legitimate clients served. Now a client from another network, and one from the
    attackers' own /24, are all served while the attack goes on."""
    attackers = [f"127.0.0.{i}" for i in range(2, 10)]
    with nts_server(tmp_path, status=True) as (d, ke_port, pki), \
            IdleConnections(ke_port, attackers, each=8) as attack:
        poll_until(lambda: nts_ke(d).get("accepted", 0) >= 64, 10.0, "64 attack connections")
        served = [cookies_for(ke_port, pki, source)
                  for _ in range(11) for source in ("127.1.0.1", "127.0.0.1", "127.2.0.1",
                                                    "127.0.0.200")]
        assert attack.opened >= 64
        counters = poll_until(lambda: (c := nts_ke(d)).get("served", 0) >= 44 and c, 5.0,
                              "44 served")
    assert served == [8] * 44
    assert isinstance(counters, dict)
    # The attackers' own /24 holds at most its share; their surplus displaced their own.
    assert counters["evicted"] + counters["refused_rate"] > 0


def test_a_silent_connection_is_closed_within_the_session_deadline(tmp_path: Path) -> None:
    """chrony's NTS-KE deadline is 2 s; ours is the same, from accept to the response."""
    assert SESSION_TIMEOUT == 2.0
    with nts_server(tmp_path, status=True) as (d, ke_port, _pki), \
            socket.create_connection(("127.0.0.1", ke_port)) as idle:
        started = time.monotonic()
        idle.settimeout(SESSION_TIMEOUT + 3.0)
        with contextlib.suppress(ConnectionResetError):
            assert idle.recv(4096) == b""
        waited = time.monotonic() - started
        poll_until(lambda: nts_ke(d).get("timed_out", 0) == 1, 5.0, "the timeout counted")
    assert SESSION_TIMEOUT - 0.2 <= waited < SESSION_TIMEOUT + 1.0


def helper_pid(d: Pyntpd, after: int = 0) -> int:
    def found() -> int:
        pids = [int(m.group(1)) for m in HELPER.finditer(d.output())]
        return pids[after] if len(pids) > after else 0

    return int(poll_until(found, 10.0, f"NTS-KE helper #{after + 1} logged"))  # type: ignore[arg-type]


def test_the_time_service_does_not_wait_for_nts_ke(tmp_path: Path) -> None:
    """TLS runs in a helper process: with the helper frozen mid-flood, time is still served
    at once; NTS-KE clients wait in the kernel's queue and are served when it resumes."""
    with nts_server(tmp_path, status=True) as (d, ke_port, pki):
        pid = helper_pid(d)
        assert pid != d.proc.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            queued = socket.create_connection(("127.0.0.1", ke_port), timeout=5.0)
            started = time.monotonic()
            answers = [query(d.port).header.stratum for _ in range(50)]
            elapsed = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        queued.close()
        assert answers == [11] * 50 and elapsed < 2.0
        assert ke(ke_port, pki).cookies


def test_a_dead_helper_is_restarted_and_its_counts_kept(tmp_path: Path) -> None:
    with nts_server(tmp_path, status=True) as (d, ke_port, pki):
        first = helper_pid(d)
        assert ke(ke_port, pki).cookies
        poll_until(lambda: nts_ke(d).get("served") == 1, 5.0, "served counted")
        os.kill(first, signal.SIGKILL)
        d.wait_for_log(f"NTS-KE helper (pid {first}) was killed by SIGKILL")
        assert query(d.port).header.stratum == 11
        second = helper_pid(d, after=1)
        assert second != first
        assert ke(ke_port, pki).cookies
        poll_until(lambda: nts_ke(d).get("served") == 2, 5.0, "both served counted")
        assert d.stop() == 0
        said = d.output()
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)
    assert "NTS-KE: 2 connections, 2 served" in said


def test_the_helper_runs_as_the_user_in_the_jail_with_no_capability(tmp_path: Path) -> None:
    """Forked once the main process is confined: -u's user, -i's root, and not even the
    CAP_SYS_TIME the main process keeps to discipline the clock."""
    require_root("setpriv", "unshare")
    run = tmp_path / "run"
    run.mkdir()
    for directory in (tmp_path, run):
        directory.chmod(0o755)
    jail = run / "jail"
    jail.mkdir()
    pki = make_pki(run / "pki")
    ke_port = ke_port_free()
    conf = run / "ntp.conf"
    conf.write_text(f"{LOCAL_CONF}nts enable cert {pki.cert} key {pki.key} "
                    f"cookie {run / 'nts-keys'} listen 127.0.0.1 port {ke_port}\n")
    prog = program(run, simclock=True)
    with Pyntpd("-c", str(conf), "-u", "nobody", "-i", str(jail), observe=False,
                wrap=wrapper(prog)) as d:
        pid = helper_pid(d)
        helper, main = proc_status(pid), proc_status(d.proc.pid)  # type: ignore[union-attr]
        helper_root = os.readlink(f"/proc/{pid}/root")
        assert ke(ke_port, pki).cookies
        assert d.stop() == 0
    assert helper_root == str(jail)
    assert helper["Uid"].split() == main["Uid"].split() == ["65534"] * 4
    assert int(main["CapEff"], 16) == int(main["CapBnd"], 16) == 1 << 25
    # The bounding set cannot shrink further without CAP_SETPCAP; no_new_privs makes it moot.
    assert (int(helper["CapEff"], 16), int(helper["CapPrm"], 16)) == (0, 0)
    assert int(helper["CapBnd"], 16) & ~int(main["CapBnd"], 16) == 0
    assert helper["NoNewPrivs"] == "1"


def ke_port_free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
