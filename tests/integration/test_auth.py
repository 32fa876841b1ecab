"""Symmetric keys between real processes: pyntpd serves signed time and follows it."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pyntpd.config.keys import SymmetricKey
from pyntpd.proto.auth import AuthResult, mac_trailer, signed_part, verify_with
from pyntpd.proto.packet import decode
from tests.support import LOCAL_CONF, Pyntpd, client_request, config_file, exchange

KEYS = {
    1: SymmetricKey(1, "MD5", bytes.fromhex("00112233445566778899aabbccddeeff")),
    2: SymmetricKey(2, "SHA1", bytes.fromhex("0123456789abcdef0123456789abcdef01234567")),
    3: SymmetricKey(3, "AES128CMAC", bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")),
}
SYNCED = re.compile(r"synchronised to 127\.0\.0\.1 port \d+ \(stratum (\d+)\)")


@contextmanager
def keys_file(keys: dict[int, SymmetricKey]) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="pyntpd-keys-") as tmp:
        path = Path(tmp) / "ntp.keys"
        names = {"MD5": "MD5", "SHA1": "SHA1", "AES128CMAC": "AES128CMAC"}
        path.write_text("".join(f"{k.key_id} {names[k.algorithm]} {k.secret.hex()}\n"
                                for k in keys.values()))
        os.chmod(path, 0o600)
        yield str(path)


def server_conf(keys: str, trusted: str = "1 2 3") -> str:
    return f"{LOCAL_CONF}keys {keys}\ntrustedkey {trusted}\n"


def signed_request(key: SymmetricKey) -> bytes:
    request = client_request()
    return request + mac_trailer(key, request)


@pytest.mark.parametrize("key_id", [1, 2, 3], ids=["MD5", "SHA1", "AES128CMAC"])
def test_the_server_answers_a_signed_request_with_a_signed_reply(key_id: int) -> None:
    key = KEYS[key_id]
    with keys_file(KEYS) as keys, config_file(server_conf(keys)) as conf, \
            Pyntpd("-c", conf) as d:
        reply = exchange(d.port, signed_request(key))
    assert reply is not None
    packet = decode(reply)
    assert packet.mac is not None and packet.header.stratum == 11
    assert verify_with(key, packet.mac, signed_part(reply, packet.mac)) is AuthResult.OK


def test_the_server_ignores_a_forged_mac_and_keeps_serving() -> None:
    forged = bytearray(signed_request(KEYS[1]))
    forged[-3] ^= 0x40
    with keys_file(KEYS) as keys, config_file(server_conf(keys)) as conf, \
            Pyntpd("-c", conf) as d:
        assert exchange(d.port, bytes(forged), timeout=0.5) is None
        assert exchange(d.port, signed_request(SymmetricKey(9, "MD5", b"x")), timeout=0.5) \
            is None
        assert exchange(d.port, client_request()) is not None


def test_an_untrusted_key_gets_no_reply() -> None:
    with keys_file(KEYS) as keys, config_file(server_conf(keys, trusted="1")) as conf, \
            Pyntpd("-c", conf) as d:
        assert exchange(d.port, signed_request(KEYS[2]), timeout=0.5) is None
        assert exchange(d.port, signed_request(KEYS[1])) is not None


@pytest.mark.parametrize("key_id", [1, 2, 3], ids=["MD5", "SHA1", "AES128CMAC"])
def test_a_client_with_the_key_synchronises_to_a_signing_server(key_id: int) -> None:
    with keys_file(KEYS) as keys, config_file(server_conf(keys)) as server_conf_path, \
            Pyntpd("-c", server_conf_path) as server:
        client_text = (f"keys {keys}\ntrustedkey {key_id}\nrestrict default\n"
                       f"server 127.0.0.1 port {server.port} key {key_id} iburst "
                       "minpoll 4 maxpoll 4\n")
        with config_file(client_text) as conf, Pyntpd("-c", conf) as client:
            match = client.search_log(SYNCED, 30.0)
            assert match is not None, client.output()
    assert match.group(1) == "12"


def test_a_client_whose_key_differs_from_the_servers_never_synchronises() -> None:
    wrong = {1: SymmetricKey(1, "MD5", b"not-the-same-key")}
    with keys_file(KEYS) as keys, keys_file(wrong) as client_keys, \
            config_file(server_conf(keys)) as server_conf_path, \
            Pyntpd("-c", server_conf_path) as server:
        client_text = (f"keys {client_keys}\ntrustedkey 1\nrestrict default\n"
                       f"server 127.0.0.1 port {server.port} key 1 iburst minpoll 4 maxpoll 4\n")
        with config_file(client_text) as conf, Pyntpd("-c", conf) as client:
            # iburst: eight requests 2 s apart, every one refused by the server.
            assert client.search_log(SYNCED, 6.0) is None


def test_a_server_line_with_an_untrusted_key_is_not_polled_unauthenticated() -> None:
    with keys_file(KEYS) as keys:
        text = f"keys {keys}\ntrustedkey 1\nserver 127.0.0.1 port 9 key 2 iburst\n"
        with config_file(text) as conf, Pyntpd("-c", conf) as client:
            client.wait_for_log("key 2 is not listed in 'trustedkey'")


def test_dash_t_trusts_a_key_as_trustedkey_would() -> None:
    with keys_file(KEYS) as keys, config_file(server_conf(keys, trusted="1")) as conf, \
            Pyntpd("-c", conf, "-t", "2") as d:
        assert exchange(d.port, signed_request(KEYS[2])) is not None
        assert exchange(d.port, signed_request(KEYS[3]), timeout=0.5) is None


def signed_control(key: SymmetricKey) -> bytes:
    from pyntpd.proto.control import ControlHeader, Opcode, encode

    raw = encode(ControlHeader(version=2, opcode=Opcode.READVAR, sequence=1), b"stratum")
    raw += bytes(-len(raw) % 8)
    return raw + mac_trailer(key, raw)


def test_mode_6_requests_signed_with_the_controlkey_are_answered_others_not() -> None:
    with keys_file(KEYS) as keys, \
            config_file(server_conf(keys) + "controlkey 2\n") as conf, Pyntpd("-c", conf) as d:
        assert exchange(d.port, signed_control(KEYS[2])) is not None
        assert exchange(d.port, signed_control(KEYS[1]), timeout=0.5) is None
