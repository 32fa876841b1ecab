"""daemon.ntske without the network: certificate names, the cookie-key file, an NTS-KE
exchange between the server and client halves over a loopback TCP socket."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import pytest
from cryptography import x509

from pyntpd.daemon import ntsketls as dke
from pyntpd.daemon.ntsservice import NtsService, NtsSetupError
from pyntpd.proto.nts import CookieKeys
from pyntpd.proto.ntskeslots import SlotLimits
from tests.ntscerts import make_pki

NOW = 1_800_000_000.0


def leaf(tmp_path: Path, names: tuple[str, ...], addresses: tuple[str, ...]
         ) -> x509.Certificate:
    pki = make_pki(tmp_path, names, addresses)
    return x509.load_pem_x509_certificate(pki.cert.read_bytes())


def test_a_certificate_matches_its_dns_names_and_addresses(tmp_path: Path) -> None:
    cert = leaf(tmp_path, ("ntp.example.org", "*.pool.example.org"), ("192.0.2.1", "::1"))
    assert dke.certificate_matches(cert, "ntp.example.org")
    assert dke.certificate_matches(cert, "NTP.Example.org.")
    assert dke.certificate_matches(cert, "a.pool.example.org")
    assert not dke.certificate_matches(cert, "a.b.pool.example.org")
    assert not dke.certificate_matches(cert, "pool.example.org")
    assert dke.certificate_matches(cert, "192.0.2.1")
    assert dke.certificate_matches(cert, "::1")
    assert not dke.certificate_matches(cert, "192.0.2.2")
    assert not dke.certificate_matches(cert, "other.example.org")


def test_a_dns_name_does_not_vouch_for_an_address(tmp_path: Path) -> None:
    cert = leaf(tmp_path, ("192.0.2.1",), ())
    assert not dke.certificate_matches(cert, "192.0.2.1")


def test_cookie_keys_are_created_saved_0600_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "state" / "nts-keys"
    keys = dke.load_cookie_keys(str(path), NOW)
    assert len(keys.keys) == 1
    assert path.stat().st_mode & 0o777 == 0o600
    again = dke.load_cookie_keys(str(path), NOW + 60)
    assert [k.key_id for k in again.keys] == [k.key_id for k in keys.keys]


def test_cookie_keys_others_can_read_are_written_again_0600_at_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "nts-keys"
    first = dke.load_cookie_keys(str(path), NOW)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="pyntpd"):
        again = dke.load_cookie_keys(str(path), NOW + 60)  # no rotation due
    assert path.stat().st_mode & 0o777 == 0o600
    assert [k.key_id for k in again.keys] == [k.key_id for k in first.keys]
    assert [r.getMessage() for r in caplog.records] == [
        f"NTS: cookie key file {path} is accessible to group/others (mode 0644); "
        "written again with mode 0600 now"]


def test_stale_cookie_keys_are_rotated_on_load(tmp_path: Path) -> None:
    path = tmp_path / "nts-keys"
    first = dke.load_cookie_keys(str(path), NOW)
    later = dke.load_cookie_keys(str(path), NOW + 86400 + 1)
    assert len(later.keys) == 2 and later.keys[1].key_id == first.keys[0].key_id


def test_a_symlinked_key_file_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    link = tmp_path / "nts-keys"
    link.symlink_to(target)
    keys = dke.load_cookie_keys(str(link), NOW)
    assert keys.keys and target.read_text() == "precious\n"
    assert not link.is_symlink()  # replaced by a regular file


def test_a_damaged_key_file_is_replaced_by_fresh_keys(tmp_path: Path) -> None:
    path = tmp_path / "nts-keys"
    path.write_text("garbage\n")
    assert dke.load_cookie_keys(str(path), NOW).keys


def test_an_unwritable_directory_keeps_the_keys_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert not dke.save_cookie_keys(str(blocker / "nts-keys"), CookieKeys())


def test_server_and_client_halves_agree_on_keys_over_loopback(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)

    async def run() -> tuple[bytes, bytes, int, CookieKeys]:
        keys = CookieKeys()
        keys.rotate(NOW)
        server = dke.NtsKeServer(str(pki.cert), str(pki.key), keys, ntp_port=12345)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server.bind(["127.0.0.1"], port)
        await server.start()
        try:
            session = await dke.key_exchange("localhost", port, str(pki.ca),
                                             connect_to="127.0.0.1")
        finally:
            server.close()
        opened = keys.open_cookie(session.cookies[0])
        assert opened is not None
        assert opened == (session.c2s, session.s2c)
        assert session.server == "127.0.0.1"  # NTP goes where NTS-KE went, not to a lookup
        return session.c2s, session.s2c, session.port or 0, keys

    c2s, s2c, port, _ = asyncio.run(run())
    assert c2s != s2c and port == 12345


def test_a_server_handing_out_1024_byte_cookies_gets_no_session(tmp_path: Path) -> None:
    """Every request would carry the cookie and seven placeholders of its size."""
    pki = make_pki(tmp_path)

    class HugeCookies(CookieKeys):
        def make_cookie(self, c2s: bytes, s2c: bytes) -> bytes:
            return b"\x00" * 1024

    async def run() -> None:
        keys = HugeCookies()
        keys.rotate(NOW)
        server = dke.NtsKeServer(str(pki.cert), str(pki.key), keys)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server.bind(["127.0.0.1"], port)
        await server.start()
        try:
            await dke.key_exchange("localhost", port, str(pki.ca), connect_to="127.0.0.1")
        finally:
            server.close()

    with pytest.raises(dke.KeFailure, match=r"no usable cookie \(8 refused"):
        asyncio.run(run())


def test_a_client_times_out_on_a_silent_server() -> None:
    async def run() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await dke.key_exchange("127.0.0.1", port, None, timeout=0.5)
        finally:
            server.close()

    with pytest.raises(dke.KeFailure, match="timed out"):
        asyncio.run(run())


def test_a_bad_certificate_is_a_setup_error(tmp_path: Path) -> None:
    from pyntpd.config.model import NtsConfig

    bad = tmp_path / "cert.pem"
    bad.write_text("no\n")
    with pytest.raises(NtsSetupError, match="nts cert"):
        NtsService(NtsConfig(True, str(bad), str(bad), cookie=str(tmp_path / "k")), 123)
    assert not os.path.exists(tmp_path / "k")


def test_one_address_cannot_open_sessions_faster_than_the_accept_limit(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)

    async def run() -> dke.KeCounters:
        keys = CookieKeys()
        keys.rotate(NOW)
        server = dke.NtsKeServer(str(pki.cert), str(pki.key), keys)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server.bind(["127.0.0.1"], port)
        await server.start()
        try:
            for _ in range(2 * SlotLimits().accepts_per_address + 8):  # spans at most 2 s
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await asyncio.sleep(0)
            await asyncio.sleep(0.1)
        finally:
            server.close()
        return server.counters

    counters = asyncio.run(run())
    assert counters.refused_rate >= 8
