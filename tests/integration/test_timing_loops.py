"""Two real pyntpd servers configured against each other must not lock onto each other
(issue 10, item 6; RFC 5905 fit(): "loop", ntpd's TEST12 `peer_loop`).

Both daemons run in a network namespace of the test's own, where `lo` also carries
127.0.0.2 and 127.0.0.3: one daemon listens on each (-I), on the same port, as two hosts
would. What each one follows is read the way an administrator would, over mode 6 with
pyntpq (run inside the namespace): the tally of the other, `flash` (0x800: peer_loop), and
the stratum and refid it serves.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.faults.harness import no_traceback, require_root
from tests.support import Pyntpd, config_file

REPO = Path(__file__).resolve().parents[2]
PORT = 12300  # a new namespace: every port is free
A, B = "127.0.0.2", "127.0.0.3"
PEER_LOOP = 0x0800
WATCH = 24.0  # s: three polls of the other at minpoll 3


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    """A network namespace with lo up and 127.0.0.2, 127.0.0.3 on it; its nsenter path."""
    require_root("unshare", "nsenter", "ip")
    holder = subprocess.Popen(["unshare", "--net", "--", "cat"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL)
    try:
        path = f"/proc/{holder.pid}/ns/net"
        own = Path("/proc/self/ns/net").readlink()
        deadline = time.monotonic() + 5
        while Path(path).readlink() == own:
            assert time.monotonic() < deadline, "unshare --net never made the namespace"
            time.sleep(0.01)
        for command in (["ip", "link", "set", "lo", "up"],
                        ["ip", "addr", "add", f"{A}/8", "dev", "lo"],
                        ["ip", "addr", "add", f"{B}/8", "dev", "lo"]):
            subprocess.run(["nsenter", f"--net={path}", "--", *command], check=True,
                           timeout=10)
        yield path
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        try:
            holder.wait(5)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(5)


def inside(path: str) -> Callable[[list[str]], list[str]]:
    return lambda argv: ["nsenter", f"--net={path}", "--", *argv]


def mode6(path: str, host: str, *commands: str) -> list[dict[str, object]]:
    args = [a for c in commands for a in ("-c", c)]
    result = subprocess.run(
        ["nsenter", f"--net={path}", "--", sys.executable, "-m", "pyntpd.cli.pyntpq",
         "--json", "--port", str(PORT), *args, host],
        capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def view(path: str, host: str, other: str) -> tuple[dict[str, object], dict[str, object]]:
    """(the server's own variables, its association with `other` plus that one's flash)."""
    system, peers = mode6(path, host, "rv", "peers")
    [row] = [p for p in peers["peers"] if p["srcadr"] == other]  # type: ignore[index]
    [assoc] = mode6(path, host, f"rv {row['associd']}")
    value = assoc["variables"]["flash"]  # type: ignore[index]
    flash = value if isinstance(value, int) else int(str(value), 0)
    return system["variables"], {**row, "flash": flash}  # type: ignore[return-value]


def conf(other: str, local_stratum: int | None) -> str:
    text = f"server {other} port {PORT} iburst minpoll 3 maxpoll 3\nrestrict default\n"
    if local_stratum is not None:
        text += f"server 127.127.1.0\nfudge 127.127.1.0 stratum {local_stratum}\n"
    return text


def daemon(path: str, conf_path: str, address: str) -> Pyntpd:
    return Pyntpd("-c", conf_path, "-I", address, port=PORT, wrap=inside(path))


def wait_heard(path: str, host: str, other: str, timeout: float = 30.0) -> None:
    """Until `host` has had four replies from `other` (its reach register says so)."""
    deadline = time.monotonic() + timeout
    while True:
        _, peer = view(path, host, other)
        if int(str(peer["reach"])) & 0x0F == 0x0F:
            return
        assert time.monotonic() < deadline, f"{host} never heard {other}: {peer}"
        time.sleep(0.5)


def test_two_servers_on_their_local_clocks_never_follow_each_other() -> None:
    """Each also has its local clock at stratum 10. Without the loop test each would take
    the other (a real source) over its local clock, and then each other's echo, counting
    up the strata."""
    with namespace() as ns, config_file(conf(B, 10)) as conf_a, \
            config_file(conf(A, 10)) as conf_b, \
            daemon(ns, conf_a, A) as a, daemon(ns, conf_b, B) as b:
        wait_heard(ns, A, B)
        wait_heard(ns, B, A)
        deadline = time.monotonic() + WATCH
        while time.monotonic() < deadline:
            for host, other in ((A, B), (B, A)):
                system, peer = view(ns, host, other)
                assert (system["stratum"], system["refid"]) == (11, "LOCL"), (host, system)
                assert peer["tally"] == " ", (host, peer)
                assert peer["flash"] & PEER_LOOP, (host, peer)
            time.sleep(1.0)
        for d in (a, b):
            assert "a timing loop, not followed" in d.output()
            assert "synchronised to 127.0.0." not in d.output()
            assert d.stop() == 0
            no_traceback(d.output())


def test_a_server_never_follows_a_client_that_follows_it() -> None:
    """A has its local clock (stratum 8) and B as a server; B has only A. B follows A and
    states A's address as its refid: A must see itself there and keep its local clock."""
    with namespace() as ns, config_file(conf(B, 8)) as conf_a, \
            config_file(conf(A, None)) as conf_b, \
            daemon(ns, conf_a, A) as a, daemon(ns, conf_b, B) as b:
        b.wait_for_log(f"synchronised to {A} port {PORT}", 30)
        wait_heard(ns, A, B)
        deadline = time.monotonic() + WATCH
        while time.monotonic() < deadline:
            system_a, b_seen_by_a = view(ns, A, B)
            assert (system_a["stratum"], system_a["refid"]) == (9, "LOCL"), system_a
            system_b, a_seen_by_b = view(ns, B, A)
            assert (system_b["stratum"], system_b["refid"]) == (10, A), system_b
            assert a_seen_by_b["tally"] == "*"
            if b_seen_by_a["refid"] == A:  # once A has heard B's new refid
                assert b_seen_by_a["tally"] == " " and b_seen_by_a["flash"] & PEER_LOOP
            time.sleep(1.0)
        assert b_seen_by_a["refid"] == A and b_seen_by_a["flash"] & PEER_LOOP
        assert f"{B} port {PORT} is synchronised to us" in a.output()
        for d in (a, b):
            assert d.stop() == 0
            no_traceback(d.output())

