"""MS-SNTP through the running daemon, with the ntp_signd test double of tests/daemon/
test_signd.py (the protocol as documented; tests/interop/test_samba_interop.py runs Samba's
own): a Samba DC's ntp.conf is accepted whole, a reload moves the signd socket, and a
daemon with `mssntp` but no ntp_signd keeps serving everyone else."""

from __future__ import annotations

import hashlib
import json
import select
import signal
import socket
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyntpd.config import parse_text
from pyntpd.proto.access_types import RestrictFlag
from tests.daemon.test_signd import NT_HASH, FakeSignd
from tests.support import Pyntpd, client_request, exchange

RID = (1102).to_bytes(4, "little")
W32TIME = client_request(version=3, transmit=0x0102030405060708) + RID + bytes(16)

# What a Samba AD DC's ntp.conf looks like (Samba's wiki recommends these lines for ntpd).
SAMBA_DC_CONF = """\
server 127.127.1.0
fudge 127.127.1.0 stratum 10
driftfile {dir}/ntp.drift
ntpsigndsocket {dir}/signd/
restrict -4 default kod limited nomodify notrap nopeer noquery mssntp
restrict -6 default kod limited nomodify notrap nopeer noquery mssntp
restrict 127.0.0.1 kod nomodify notrap nopeer mssntp
restrict ::1
"""


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mssntp-") as tmp:
        (Path(tmp) / "signd").mkdir()
        (Path(tmp) / "other").mkdir()
        yield Path(tmp)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(conf: Path, *args: str) -> Pyntpd:
    return Pyntpd("-c", str(conf), *args)


def sign_one(fake: FakeSignd, port: int) -> bytes | None:
    """Send W32TIME, let the double sign it, return what the client receives."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5.0)
        client.sendto(W32TIME, ("127.0.0.1", port))
        if fake.conn is None:
            fake.accept()
        fake.sign(*fake.read_request())
        try:
            return client.recv(512)
        except TimeoutError:
            return None


def test_a_samba_dc_ntp_conf_parses_without_a_problem(workdir):
    result = parse_text(SAMBA_DC_CONF.format(dir=workdir))
    assert result.diagnostics == []
    assert all(r.flags & RestrictFlag.MSSNTP for r in result.config.restrictions[:3])
    assert result.config.signd_directory == f"{workdir}/signd/"


def test_the_daemon_sends_the_reply_ntp_signd_signed(workdir):
    conf = workdir / "ntp.conf"
    conf.write_text(SAMBA_DC_CONF.format(dir=workdir))
    fake = FakeSignd(workdir / "signd")
    try:
        with start(conf) as daemon:
            reply = sign_one(fake, daemon.port)
    finally:
        fake.close()
    assert reply is not None and len(reply) == 68 and reply[48:52] == RID
    assert reply[52:] == hashlib.md5(NT_HASH + reply[:48], usedforsecurity=False).digest()


def test_a_reload_moves_the_signd_socket(workdir):
    conf = workdir / "ntp.conf"
    conf.write_text(SAMBA_DC_CONF.format(dir=workdir))
    old, new = FakeSignd(workdir / "signd"), FakeSignd(workdir / "other")
    try:
        with start(conf) as daemon:
            assert sign_one(old, daemon.port) is not None
            conf.write_text(SAMBA_DC_CONF.format(dir=workdir).replace("/signd/", "/other/"))
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log("configuration reloaded")
            assert sign_one(new, daemon.port) is not None
            old.conn.settimeout(2.0)
            assert old.conn.recv(1) == b"", "the old connection is closed"
    finally:
        old.close()
        new.close()


def test_without_ntp_signd_plain_clients_are_served_and_ms_sntp_counted(workdir):
    conf = workdir / "ntp.conf"
    conf.write_text(SAMBA_DC_CONF.format(dir=workdir))
    metrics = free_tcp_port()
    with start(conf, "--metrics", str(metrics)) as daemon:
        assert exchange(daemon.port, W32TIME, timeout=1.5) is None
        assert exchange(daemon.port, client_request()) is not None
        url = f"http://127.0.0.1:{metrics}/status"
        with urllib.request.urlopen(url, timeout=5) as reply:
            server = json.load(reply)["server"]
        log = daemon.output()
    assert server["mssntp_failed"]["signd_unavailable"] == 1
    assert server["served"] == 1 and server["dropped"]["mssntp"] == 1
    assert f"cannot connect to ntp_signd at {workdir}/signd/socket" in log


def test_with_workers_each_process_signs_through_its_own_connection(workdir):
    # SO_REUSEPORT hashes each source port to a process: 24 ports miss one of two
    # processes with probability 2**-23.
    conf = workdir / "ntp.conf"
    conf.write_text(SAMBA_DC_CONF.format(dir=workdir))
    fake = FakeSignd(workdir / "signd")
    connections: list[socket.socket] = []
    signed = 0
    try:
        with start(conf, "--workers", "2") as daemon:
            for _ in range(24):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                    client.settimeout(5.0)
                    client.sendto(W32TIME, ("127.0.0.1", daemon.port))
                    ready, _, _ = select.select([fake.listener, *connections], [], [], 5.0)
                    assert ready, "no request reached ntp_signd"
                    if fake.listener in ready:
                        connections.append(fake.accept())  # a process's first request
                    else:
                        fake.conn = ready[0]
                    fake.sign(*fake.read_request())
                    signed += len(client.recv(512)) == 68
    finally:
        for conn in connections:
            conn.close()
        fake.conn = None
        fake.close()
    assert signed == 24 and len(connections) == 2
