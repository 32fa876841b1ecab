"""NTS between real processes on loopback: NTS-KE over TLS 1.3, authenticated time, and the
attacks the daemon must shrug off while it keeps serving (a stalled TLS client, truncated and
oversized NTS-KE messages, bad cookies, replays), certificate reload and cookie-key
persistence. Each test makes its own CA and leaf."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from pyntpd.daemon.ntsketls import SESSION_TIMEOUT, KeFailure, key_exchange
from pyntpd.proto import ntske
from pyntpd.proto.nts import NtsSession, ReplyCheck
from pyntpd.proto.ntske import Record, RecordType
from pyntpd.proto.packet import decode
from tests.ntscerts import Pki, make_pki
from tests.support import LOCAL_CONF, Pyntpd, client_request, config_file, exchange, query

U16 = struct.Struct("!H")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nts_server(tmp: Path, pki: Pki | None = None, cookie: Path | None = None, *,
               listen: str | None = "127.0.0.1", extra: str = "", status: bool = False,
               args: tuple[str, ...] = ()) -> Iterator[tuple[Pyntpd, int, Pki]]:
    """pyntpd serving NTS (`listen` None: NTS-KE where NTP listens); `extra` lines go into
    the configuration after the NTS line."""
    pki = pki or make_pki(tmp / "pki")
    ke_port = free_tcp_port()
    conf = (f"{LOCAL_CONF}nts enable cert {pki.cert} key {pki.key} "
            f"cookie {cookie or tmp / 'nts-keys'} "
            f"{f'listen {listen} ' if listen else ''}port {ke_port}\n{extra}")
    with config_file(conf) as path, Pyntpd("-c", path, *args, status=status) as d:
        yield d, ke_port, pki


def ke(port: int, pki: Pki, host: str = "127.0.0.1", timeout: float = 5.0) -> NtsSession:
    return asyncio.run(key_exchange(host, port, str(pki.ca), timeout=timeout,
                                    connect_to="127.0.0.1"))


def nts_query(d: Pyntpd, session: NtsSession) -> tuple[bytes | None, ReplyCheck | None]:
    request, uid = session.build_request(client_request(transmit=0x0102030405060708))
    reply = exchange(session.port or d.port, request)
    if reply is None:
        return None, None
    return reply, session.check_reply(reply, decode(reply), uid)


def tls_client(port: int, pki: Pki, alpn: str = "ntske/1") -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols([alpn])
    raw = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    return context.wrap_socket(raw, server_hostname="localhost")


def read_response(sock: ssl.SSLSocket) -> list[Record]:
    reader = ntske.MessageReader(ntske.RESPONSE_LIMITS)
    while True:
        data = sock.recv(4096)
        if not data:
            reader.eof()
        records = reader.feed(data)
        if records is not None:
            return records


def error_code(records: list[Record]) -> int | None:
    for r in records:
        if r.type == RecordType.ERROR:
            return int(U16.unpack(r.body)[0])
    return None


def test_a_client_gets_keys_and_authenticated_time(tmp_path: Path) -> None:
    with nts_server(tmp_path) as (d, ke_port, pki):
        session = ke(ke_port, pki)
        assert len(session.cookies) == 8 and session.port == d.port
        reply, check = nts_query(d, session)
    assert check is ReplyCheck.OK and reply is not None
    assert decode(reply).header.stratum == 11 and len(session.cookies) == 8


def test_the_client_refuses_a_certificate_for_another_name(tmp_path: Path) -> None:
    with nts_server(tmp_path) as (_d, ke_port, pki), pytest.raises(KeFailure):
        ke(ke_port, pki, host="time.example.org")


def test_the_client_refuses_a_server_its_ca_did_not_sign(tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", tag="-other")
    with nts_server(tmp_path) as (_d, ke_port, _pki), pytest.raises(KeFailure):
        ke(ke_port, other)


@pytest.mark.parametrize("records, code", [
    ([Record(RecordType.NEXT_PROTOCOL, U16.pack(0), True)]
     + [Record(RecordType.NEW_COOKIE, b"x")] * 40
     + [Record(RecordType.END_OF_MESSAGE, critical=True)], 1),
    ([Record(RecordType.NEXT_PROTOCOL, U16.pack(0), True),
      Record(RecordType.AEAD_ALGORITHM, U16.pack(15), True), Record(0x2222, b"", True),
      Record(RecordType.END_OF_MESSAGE, critical=True)], 0),
    ([Record(RecordType.AEAD_ALGORITHM, U16.pack(15), True),
      Record(RecordType.END_OF_MESSAGE, critical=True)], 1),
], ids=["oversized-record-list", "unknown-critical-record", "no-next-protocol"])
def test_bad_requests_get_an_error_record_and_the_daemon_keeps_serving(
        tmp_path: Path, records: list[Record], code: int) -> None:
    with nts_server(tmp_path) as (d, ke_port, pki):
        with tls_client(ke_port, pki) as sock:
            sock.sendall(ntske.encode_records(records))
            response = read_response(sock)
        assert error_code(response) == code
        assert ke(ke_port, pki).cookies
        assert query(d.port).header.stratum == 11


def test_a_truncated_record_gets_an_error_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    with nts_server(tmp_path) as (d, ke_port, pki):
        with tls_client(ke_port, pki) as sock:
            sock.sendall(ntske.client_request()[:6])  # half a record
            # TCP end of stream inside the record (SSLSocket.shutdown would drop TLS too)
            socket.socket.shutdown(sock, socket.SHUT_WR)
            response = read_response(sock)
        assert error_code(response) == ntske.ErrorCode.BAD_REQUEST
        assert ke(ke_port, pki).cookies
        assert query(d.port).header.stratum == 11


def test_no_aead_in_common_gets_no_cookies(tmp_path: Path) -> None:
    with nts_server(tmp_path) as (_d, ke_port, pki), tls_client(ke_port, pki) as sock:
        sock.sendall(ntske.client_request(aeads=(30,)))
        response = read_response(sock)
    assert Record(RecordType.AEAD_ALGORITHM, b"", True) in response
    assert not [r for r in response if r.type == RecordType.NEW_COOKIE]


def test_a_client_without_the_ntske_alpn_is_refused(tmp_path: Path) -> None:
    with nts_server(tmp_path) as (_d, ke_port, pki), pytest.raises((ssl.SSLError, OSError)), \
            tls_client(ke_port, pki, alpn="http/1.1") as sock:
        sock.sendall(ntske.client_request())
        if not sock.recv(4096):
            raise OSError("closed without an answer")


def stalled_connection(stack: ExitStack, port: int, source: str) -> socket.socket:
    sock = socket.socket()
    stack.callback(sock.close)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_stalled_tls_clients_do_not_stop_others_or_the_time_service(tmp_path: Path) -> None:
    with nts_server(tmp_path) as (d, ke_port, pki), ExitStack() as stack:
        # One hostile host holds as many sessions as it may and asks for more: some say
        # nothing, some send half a ClientHello and stop.
        stalled = [stalled_connection(stack, ke_port, "127.0.0.2") for _ in range(12)]
        for sock in stalled[::2]:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(20))
        started = time.monotonic()
        session = ke(ke_port, pki)  # another host is served at once
        assert time.monotonic() - started < 2.0
        assert nts_query(d, session)[1] is ReplyCheck.OK
        assert query(d.port).header.stratum == 11
        # ... and every stalled session is cut off by its deadline (or refused outright).
        for sock in stalled:
            sock.settimeout(SESSION_TIMEOUT + 5.0)
            try:
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                pass
        assert ke(ke_port, pki).cookies


def test_a_bad_cookie_over_the_wire_gets_an_nts_nak(tmp_path: Path) -> None:
    with nts_server(tmp_path) as (d, ke_port, pki):
        session = ke(ke_port, pki)
        session.cookies = [bytes(100)] * 8
        reply, check = nts_query(d, session)
        assert query(d.port).header.stratum == 11
    assert check is ReplyCheck.NAK and reply is not None
    assert decode(reply).header.refid == b"NTSN"


def test_a_replayed_nts_request_gets_nothing_the_attacker_can_use(tmp_path: Path) -> None:
    with nts_server(tmp_path) as (d, ke_port, pki):
        session = ke(ke_port, pki)
        request, uid = session.build_request(client_request(transmit=0x0A0B0C0D01020304))
        first = exchange(d.port, request)
        replay = exchange(d.port, request)
        assert first is not None and replay is not None
        assert session.check_reply(first, decode(first), uid) is ReplyCheck.OK
        # A stranger's copy: sealed under S2C, which the attacker does not have.
        stranger = NtsSession(bytes(32), bytes(32), [])
        assert stranger.check_reply(replay, decode(replay), uid) is ReplyCheck.BAD
        assert query(d.port).header.stratum == 11


def test_cookies_stay_valid_across_a_restart(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with nts_server(tmp_path, pki) as (_d, ke_port, _):
        session = ke(ke_port, pki)
    keys_file = tmp_path / "nts-keys"
    assert keys_file.stat().st_mode & 0o777 == 0o600
    with nts_server(tmp_path, pki) as (d, _ke, _):
        session.port = d.port
        assert nts_query(d, session)[1] is ReplyCheck.OK


def test_sighup_reloads_the_certificate_without_dropping_sessions(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with nts_server(tmp_path, pki) as (d, ke_port, _):
        session = ke(ke_port, pki)
        with tls_client(ke_port, pki) as in_flight:  # handshake done under the old certificate
            renewed = make_pki(tmp_path / "renewed", tag="-renewed")
            shutil.copy(renewed.cert, pki.cert)
            shutil.copy(renewed.key, pki.key)
            d.signal(signal.SIGHUP)
            d.wait_for_log("NTS: certificate reloaded")
            in_flight.sendall(ntske.client_request())
            assert error_code(read_response(in_flight)) is None
        assert nts_query(d, session)[1] is ReplyCheck.OK  # cookies outlive the certificate
        assert ke(ke_port, renewed).cookies
        with pytest.raises(KeFailure):
            ke(ke_port, pki)  # the old CA no longer vouches for the server


def test_a_broken_certificate_on_sighup_keeps_the_old_one(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with nts_server(tmp_path, pki) as (d, ke_port, _):
        good = pki.cert.read_bytes()
        pki.cert.write_text("not a certificate\n")
        d.signal(signal.SIGHUP)
        d.wait_for_log("keeping the old one")
        pki.cert.write_bytes(good)
        assert ke(ke_port, pki).cookies


def test_nts_enable_without_a_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    conf = tmp_path / "ntp.conf"
    conf.write_text(f"{LOCAL_CONF}nts enable\n")
    result = subprocess.run([sys.executable, "-m", "pyntpd.cli.pyntpd", "--check", "-c",
                             str(conf)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert f"{conf}:4:1: error: 'nts enable' needs cert and key" in result.stdout + result.stderr


def test_an_unreadable_certificate_stops_the_start_with_a_reason(tmp_path: Path) -> None:
    conf = (f"{LOCAL_CONF}nts enable cert {tmp_path / 'missing.pem'} "
            f"key {tmp_path / 'missing.key'} cookie {tmp_path / 'k'}\n")
    with config_file(conf) as path, pytest.raises(AssertionError, match="nts cert") as failed:
        Pyntpd("-c", path).start()
    # one error line and exit status 1, as for any other start-up error: no traceback
    assert "pyntpd exited 1:" in str(failed.value) and "Traceback" not in str(failed.value)


def test_worker_processes_answer_nts_requests_too(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    ke_port = free_tcp_port()
    conf = (f"{LOCAL_CONF}nts enable cert {pki.cert} key {pki.key} "
            f"cookie {tmp_path / 'nts-keys'} listen 127.0.0.1 port {ke_port}\n")
    with config_file(conf) as path, Pyntpd("-c", path, "--workers", "2") as d:
        session = ke(ke_port, pki)
        # Each query comes from a new ephemeral port: the kernel spreads them over both
        # processes, which must all hold the cookie keys.
        results = [nts_query(d, session)[1] for _ in range(12)]
    assert results == [ReplyCheck.OK] * 12


def test_sighup_follows_a_certificate_moved_to_new_files(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    renewed = make_pki(tmp_path / "renewed", tag="-renewed")
    ke_port = free_tcp_port()

    def conf(p: Pki) -> str:
        return (f"{LOCAL_CONF}nts enable cert {p.cert} key {p.key} "
                f"cookie {tmp_path / 'nts-keys'} listen 127.0.0.1 port {ke_port}\n")

    path = tmp_path / "ntp.conf"
    path.write_text(conf(pki))
    with Pyntpd("-c", str(path)) as d:
        assert ke(ke_port, pki).cookies
        path.write_text(conf(renewed))
        d.signal(signal.SIGHUP)
        d.wait_for_log(f"NTS: certificate reloaded from {renewed.cert}")
        assert ke(ke_port, renewed).cookies


def test_a_client_runs_nts_ke_again_when_its_cookies_are_refused(tmp_path: Path) -> None:
    """The server loses its cookie keys (a new key file): the client's next request gets an
    NTS NAK, it fetches new keys at once and goes on with authenticated time."""
    pki = make_pki(tmp_path / "pki")
    ke_port = free_tcp_port()
    udp_port = Pyntpd().port

    def server_conf(keys: str) -> str:
        return (f"{LOCAL_CONF}nts enable cert {pki.cert} key {pki.key} "
                f"cookie {tmp_path / keys} listen 127.0.0.1 port {ke_port}\n")

    client_conf = (f"nts ca {pki.ca}\nrestrict default\nserver 127.0.0.1 port {udp_port} "
                   f"ntsport {ke_port} nts iburst minpoll 3 maxpoll 3\n")
    with config_file(server_conf("keys-1")) as first_path, \
            config_file(server_conf("keys-2")) as second_path, \
            config_file(client_conf) as client_path, \
            Pyntpd("-c", first_path, port=udp_port) as first, \
            Pyntpd("-c", client_path) as client:
        client.wait_for_log(f"association with 127.0.0.1 port {udp_port}, NTS")
        first.stop()  # the client holds cookies only the first server can open
        with Pyntpd("-c", second_path, port=udp_port) as second:
            client.wait_for_log("NTS: new keys and 8 cookies", timeout=20.0)
            client.wait_for_log("synchronised to 127.0.0.1", timeout=30.0)
            second.stop()
            served = second.output()
    assert "NTS-KE: 1 connections, 1 served" in served, served
