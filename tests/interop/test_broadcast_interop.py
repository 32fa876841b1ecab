"""Broadcast and multicast NTP across a veth pair between two network namespaces of the
test's own (10.124.0.1 broadcasts, 10.124.0.2 listens); nothing leaves them.

- pyntpd broadcasts (signed) and pyntpd follows it, by subnet broadcast and by multicast;
- unsigned and forged broadcasts are dropped and counted, and mobilise nothing;
- chronyd 4.3 as the broadcaster (it cannot sign broadcasts): pyntpd drops and counts them;
- ntpsec 1.2.2 has neither end any more (its NEWS: broadcast clients dropped in 0.9.x,
  broadcast servers in 1.1.0): its parser refuses the lines, so there is nothing to test
  against; the test below keeps that finding honest.

Each daemon's counters are read from its --status-socket (a Unix socket, which the network
namespaces do not separate).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import refdaemons
from refdaemons import ChronyServer, NetNamespace, poll_until
from tests.support import LOCAL_CONF, REPO, Pyntpd, config_file

pytestmark = pytest.mark.interop

Require = Callable[..., dict[str, str]]
SERVER = "10.124.0.1"
CLIENT = "10.124.0.2"
BROADCAST = "10.124.0.255"
GROUP = "224.0.1.1"
KEY_ID = 4
SECRET = "9a8b7c6d5e4f30211203f4e5d6c7b8a9a0b1c2d3"  # SHA1, hex


@contextmanager
def veth_pair() -> Iterator[tuple[NetNamespace, NetNamespace]]:
    """Two namespaces joined by a veth pair, created inside the first one."""
    refdaemons.require("netns")
    with NetNamespace() as server, NetNamespace() as client:
        holder = client.path.split("/")[2]
        for argv in (["ip", "link", "add", "bc0", "type", "veth", "peer", "name", "bc1",
                      "netns", holder],
                     ["ip", "addr", "add", f"{SERVER}/24", "dev", "bc0"],
                     ["ip", "link", "set", "bc0", "up"]):
            server.run(argv, timeout=5.0, check=True)
        for argv in (["ip", "addr", "add", f"{CLIENT}/24", "dev", "bc1"],
                     ["ip", "link", "set", "bc1", "up"]):
            client.run(argv, timeout=5.0, check=True)
        yield server, client


@contextmanager
def keys_file(secret: str = SECRET) -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", prefix="bcast-keys-", delete=False) as f:
        f.write(f"{KEY_ID} SHA1 {secret}\n")
    os.chmod(f.name, 0o600)
    try:
        yield f.name
    finally:
        os.unlink(f.name)


def status(path: str) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        s.connect(path)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


def heard(path: str) -> dict[str, int]:
    return status(path)["broadcast"]["heard"]  # type: ignore[index,return-value]


def counted(sock: str, enough: Callable[[dict[str, int]], bool],
            timeout: float) -> dict[str, int]:
    """The client's broadcast counters, once they say `enough` (bounded wait)."""
    def ready() -> dict[str, int] | None:
        counts = heard(sock)
        return counts if enough(counts) else None
    return poll_until(ready, timeout, "the broadcast client's counters")


def listening(keys: str, line: str = "broadcastclient") -> str:
    return f"restrict default\nkeys {keys}\ntrustedkey {KEY_ID}\n{line}\n"


def broadcasting(keys: str, target: str = BROADCAST, extra: str = "") -> str:
    return (f"{LOCAL_CONF}keys {keys}\ntrustedkey {KEY_ID}\n"
            f"broadcast {target} key {KEY_ID} minpoll 3 {extra}\n")


@contextmanager
def daemon(conf_text: str, ns: NetNamespace) -> Iterator[tuple[Pyntpd, str]]:
    with tempfile.TemporaryDirectory(prefix="bcast-") as tmp, config_file(conf_text) as conf:
        sock = str(Path(tmp) / "status.sock")
        with Pyntpd("-c", conf, "--status-socket", sock, port=123, wrap=ns.wrap) as d:
            yield d, sock


def wait_synced_to_server(d: Pyntpd, timeout: float = 60.0) -> None:
    match = d.wait_synced(timeout)
    assert match.group(1) == SERVER, d.output()


def test_pyntpd_follows_a_signed_pyntpd_broadcaster(require: Require) -> None:
    with veth_pair() as (server_ns, client_ns), keys_file() as keys, \
            daemon(broadcasting(keys), server_ns) as (server, server_sock), \
            daemon(listening(keys), client_ns) as (client, client_sock):
        wait_synced_to_server(client)
        counts = heard(client_sock)
        sent = status(server_sock)["broadcast"]
        client_log, server_log = client.output(), server.output()
        source = status(client_sock)["sources"][0]  # type: ignore[index]
    assert "broadcasting to 10.124.0.255 every 8 s (key 4)" in server_log
    assert "broadcast association with 10.124.0.1 (key 4, every 8 s)" in client_log
    assert "broadcast delay to 10.124.0.1 calibrated" in client_log
    assert counts["sample"] >= 1 and set(counts) <= {"sample", "calibrating"}, counts
    assert sent["sent"] >= 2 and sent["send_errors"] == 0  # type: ignore[index]
    assert source["address"] == SERVER and source["stratum"] == 11  # type: ignore[index]


def test_broadcast_under_interface_rules_that_bind_addresses(require: Require) -> None:
    """No wildcard socket: the broadcaster sends from the socket on 10.124.0.1, and the
    client binds 10.124.0.255 beside 10.124.0.2 to hear broadcasts at all (as ntpd does)."""
    rules = "interface ignore all\ninterface listen {}\n"
    with veth_pair() as (server_ns, client_ns), keys_file() as keys, \
            daemon(rules.format(SERVER) + broadcasting(keys), server_ns) as (server, _), \
            daemon(rules.format(CLIENT) + listening(keys), client_ns) as (client, sock):
        wait_synced_to_server(client)
        counts = heard(sock)
        client_log, server_log = client.output(), server.output()
    assert "broadcasting to 10.124.0.255 every 8 s (key 4) from 10.124.0.1 (bc0)" in server_log
    assert "listening on 10.124.0.255 port 123" in client_log
    assert counts["sample"] >= 1, counts


def test_unsynchronised_pyntpd_broadcasts_nothing(require: Require) -> None:
    """ntpd's transmit(): no broadcast while sys_leap is 'not synchronised'."""
    unsynced = f"restrict default\nkeys {{keys}}\ntrustedkey {KEY_ID}\n" \
        f"broadcast {BROADCAST} key {KEY_ID} minpoll 3\n"
    with veth_pair() as (server_ns, client_ns), keys_file() as keys, \
            daemon(unsynced.format(keys=keys), server_ns) as (_server, server_sock), \
            daemon(listening(keys), client_ns) as (_client, client_sock):
        def skipped() -> dict[str, int] | None:
            sent = status(server_sock)["broadcast"]
            return sent if sent["not_sent_unsynchronised"] >= 2 else None  # type: ignore[index,return-value]
        sent = poll_until(skipped, 20.0, "two broadcast times to pass unsynchronised")
        received = status(client_sock)["broadcast"]["received"]  # type: ignore[index]
    assert sent["sent"] == 0 and received == 0


def test_pyntpd_follows_a_signed_multicast_broadcaster(require: Require) -> None:
    with veth_pair() as (server_ns, client_ns), keys_file() as keys, \
            daemon(broadcasting(keys, GROUP, "ttl 1"), server_ns) as (server, _), \
            daemon(listening(keys, f"multicastclient {GROUP}"), client_ns) as (client, sock):
        wait_synced_to_server(client)
        counts = heard(sock)
        client_log, server_log = client.output(), server.output()
    assert "broadcasting to 224.0.1.1 every 8 s (key 4, 32 hops) from 0.0.0.0 (bc0)" in \
        server_log
    assert "joined multicast group 224.0.1.1 on bc1" in client_log
    assert counts["sample"] >= 1, counts


def test_unsigned_and_forged_broadcasts_are_dropped_and_counted(require: Require) -> None:
    """A host on the segment broadcasts an unsigned packet and one signed under the trusted
    key id with a guessed secret: neither mobilises an association."""
    with veth_pair() as (server_ns, client_ns), keys_file() as keys, \
            keys_file("00112233445566778899aabbccddeeff00112233") as wrong, \
            daemon(listening(keys), client_ns) as (client, sock):
        script = (
            "import socket, sys\n"
            "from pyntpd.config.keys import parse_keys\n"
            "from pyntpd.proto.broadcast import Broadcaster\n"
            "from pyntpd.sync.localclock import LocalClockDriver\n"
            "import time\n"
            "now = time.time()\n"
            "keys, _ = parse_keys(open(sys.argv[1]).read(), sys.argv[1])\n"
            "system = LocalClockDriver(stratum=2).system_vars(now)\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
            "s.bind(('10.124.0.1', 123))\n"
            "for key in (None, keys[4]):\n"
            "    b = Broadcaster('10.124.0.255', poll=3, key=key)\n"
            "    b.start(now)\n"
            "    packet = b.on_timer(now, system)\n"
            "    s.sendto(packet.finish(int((now + 2208988800) * 2**32)),"
            " ('10.124.0.255', 123))\n"
        )
        env = f"PYTHONPATH={REPO / 'src'}"
        result = server_ns.run(["env", env, sys.executable, "-c", script, wrong], timeout=30.0)
        assert result.returncode == 0, result.stderr
        counts = counted(sock, lambda c: sum(c.values()) >= 2, 10.0)
        state = status(sock)
        logs = client.output()
    assert counts == {"no_mac": 1, "bad_mac": 1}
    assert state["sources"] == [] and state["system"]["stratum"] == 16  # type: ignore[index]
    assert "broadcast from 10.124.0.1 dropped (no_mac)" in logs
    assert "broadcast association" not in logs


def test_chronyd_broadcasts_are_unauthenticated_and_pyntpd_drops_them(require: Require) -> None:
    """chronyd 4.3 serves broadcasts (`broadcast INTERVAL ADDRESS`) but cannot sign them."""
    require("chronyd", "chronyc")
    with veth_pair() as (server_ns, client_ns), keys_file() as keys, \
            daemon(listening(keys), client_ns) as (_client, sock), \
            ChronyServer(stratum=3, netns=server_ns, bind=SERVER, allow=("10.124.0.0/24",),
                         lines=[f"broadcast 8 {BROADCAST}"]):
        counts = counted(sock, lambda c: c.get("no_mac", 0) >= 1, 30.0)
        state = status(sock)
    assert set(counts) == {"no_mac"}, counts
    assert state["broadcast"]["received"] >= 1  # type: ignore[index]
    assert state["sources"] == []


def test_ntpsec_1_2_2_refuses_broadcast_in_either_direction(require: Require,
                                                            tmp_path: Path) -> None:
    """No ntpsec interop is possible: its parser rejects both ends (a finding, kept true)."""
    require("ntpsec-ntpd", "setpriv")
    conf = tmp_path / "ntp.conf"
    conf.write_text(f"broadcast {BROADCAST}\nbroadcastclient\nmulticastclient {GROUP}\n")
    with veth_pair() as (server_ns, _client_ns):
        argv = refdaemons.ntpsec_ntpd_argv(conf, tmp_path / "pid")
        result = server_ns.run(["timeout", "5", *argv], timeout=30.0)
    output = result.stdout + result.stderr
    assert output.count("syntax error") >= 3, output
