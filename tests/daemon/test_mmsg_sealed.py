"""Signed and NTS replies on the batched path: sent with the batch, sealed over the stamp
their own sendmmsg carries, and byte for byte what the full path (Responder.respond, then
`finish` after the batch, as UdpServer does) sends for the same datagrams."""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import types

import pytest

from pyntpd.daemon import mmsg
from pyntpd.daemon.mmsg import MmsgServer
from pyntpd.proto import nts
from pyntpd.proto.auth import KeyRing, SymmetricKey, mac_trailer
from pyntpd.proto.packet import DropReason, decode
from pyntpd.proto.server import QueuedReply, Responder
from pyntpd.proto.timestamp import unix_ns_to_ntp
from tests.daemon.test_mmsg import (
    FIXED_NS,
    FakeLibc,
    collect_until_quiet,
    family_of,
    make_responder,
    plain_socket,
    pump,
    request,
    send_all,
)

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="needs Linux recvmmsg/sendmmsg")

KEYS = {
    "MD5": SymmetricKey(1, "MD5", bytes(range(16))),
    "SHA1": SymmetricKey(2, "SHA1", bytes(range(20))),
    "AES128CMAC": SymmetricKey(3, "AES128CMAC", bytes(range(16, 32))),
}
WRONG = SymmetricKey(1, "MD5", b"not the key 1 we".ljust(16))
COOKIE_KEY_SECRET = bytes(range(64))
C2S, S2C = bytes(range(100, 164)), bytes(range(164, 228))


@pytest.fixture(params=["127.0.0.1", "::1"])
def host(request: pytest.FixtureRequest) -> str:
    from tests.daemon.test_mmsg import has_ipv6_loopback

    if request.param == "::1" and not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    return request.param


def cookie_keys() -> nts.CookieKeys:
    return nts.CookieKeys([nts.CookieKey(0x1234, COOKIE_KEY_SECRET, FIXED_NS / 1e9)])


def responder() -> Responder:
    r = make_responder(updated=FIXED_NS / 1e9 - 100.0)
    r.keys = KeyRing.build(KEYS.values(), [1, 2, 3])
    r.nts_keys = cookie_keys()
    return r


@pytest.fixture
def counted_randomness(monkeypatch: pytest.MonkeyPatch):
    """secrets.token_bytes in proto.nts made reproducible: n bytes of a counter, restarted
    by calling the fixture's value, so both paths draw the same nonces in the same order."""
    counter = itertools.count()

    def token_bytes(n: int) -> bytes:
        return (next(counter) % 251).to_bytes(1, "big") * n

    monkeypatch.setattr(nts.secrets, "token_bytes", token_bytes)

    def restart() -> None:
        nonlocal counter
        counter = itertools.count()

    return restart


def nts_request(transmit: int, cookie: bytes | None = None, placeholders: int = 0) -> bytes:
    keys = cookie_keys()
    session = nts.NtsSession(C2S[:32], S2C[:32], [])
    session.cookies = [cookie or keys.make_cookie(C2S[:32], S2C[:32])] * (8 - placeholders)
    return session.build_request(request(transmit))[0]


def signed_request(transmit: int, key: SymmetricKey) -> bytes:
    data = request(transmit)
    return data + mac_trailer(key, data)


def sealed_mix() -> list[bytes]:
    """Plain, signed under each algorithm, bad MACs, NTS (1 and 3 cookies asked for), an NTS
    request with a cookie we cannot open (a NAK), and junk, interleaved."""
    bad_cookie = bytes(4) + bytes(96)
    kinds = [
        lambda t: request(t),
        lambda t: signed_request(t, KEYS["MD5"]),
        lambda t: signed_request(t, KEYS["SHA1"]),
        lambda t: signed_request(t, WRONG),
        lambda t: signed_request(t, KEYS["AES128CMAC"]),
        lambda t: nts_request(t),
        lambda t: nts_request(t, placeholders=2),
        lambda t: nts_request(t, cookie=bad_cookie),
        lambda t: b"\x23" * 10,
    ]
    return [kinds[k % len(kinds)](0x5000 + k) for k in range(45)]


def full_path(datagrams: list[bytes], address: str, port: int, is_v6: bool) -> list[bytes]:
    """What UdpServer sends: respond() per datagram, the queued replies finished after."""
    r = responder()
    stamp = unix_ns_to_ntp(FIXED_NS)
    out: list[bytes | QueuedReply] = []
    for data in datagrams:
        queued = len(r.signed_queue)
        prefix = r.respond(data, int(ipaddress.ip_address(address)), is_v6, port, stamp,
                           FIXED_NS / 1e9)
        if prefix is not None:
            out.append(prefix + stamp.to_bytes(8, "big"))
        elif len(r.signed_queue) > queued:
            out.append(r.signed_queue[-1])
    r.take_signed()
    return [reply if isinstance(reply, bytes) else reply.finish(stamp) for reply in out]


@pytest.mark.parametrize("chunks", [(64, 64), (16, 4), (1, 1)])
def test_signed_and_nts_replies_are_the_full_path_s_bytes(host, counted_randomness, chunks):
    datagrams = sealed_mix()
    sock = plain_socket(host)
    client = socket.socket(family_of(host), socket.SOCK_DGRAM)
    try:
        client.bind((host, 0))
        server = MmsgServer(responder(), time_ns=lambda: FIXED_NS, send_chunk=chunks[0],
                            sealed_chunk=chunks[1])
        send_all([client], sock, [(0, d) for d in datagrams])
        counted_randomness()
        assert pump(server, sock, len(datagrams)) == len(datagrams)
        got = collect_until_quiet(client)
        address, port = client.getsockname()[:2]
    finally:
        sock.close()
        client.close()
    counted_randomness()
    expected = full_path(datagrams, address, port, ":" in host)
    assert got == expected
    c = server.responder.counters
    assert c.nts_served == 10 and c.kod_sent == {b"NTSN": 5}
    assert c.dropped[DropReason.BAD_AUTH] == 5 + 5  # wrong MAC, bad cookie
    assert c.served == 5 * 4 + 10  # plain and three algorithms, NTS
    assert server.send_errors == 0 and not server.responder.signed_queue


def test_a_batch_with_signed_and_nts_replies_goes_out_in_one_sendmmsg(
        monkeypatch, counted_randomness):
    fake = FakeLibc()
    monkeypatch.setattr(mmsg, "_LIBC", types.SimpleNamespace(
        recvmmsg=fake.recvmmsg, sendmmsg=fake.sendmmsg))
    datagrams = [signed_request(1, KEYS["MD5"]), request(2), nts_request(3),
                 signed_request(4, KEYS["AES128CMAC"])]
    sock = plain_socket("127.0.0.1")
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.bind(("127.0.0.1", 0))
        server = MmsgServer(responder(), send_chunk=64, sealed_chunk=64)
        send_all([client], sock, [(0, d) for d in datagrams])
        assert pump(server, sock, 4) == 4
        replies = collect_until_quiet(client)
    finally:
        sock.close()
        client.close()
    assert fake.send_calls == [4]
    assert [decode(r).header.origin for r in replies] == [1, 2, 3, 4]


def test_each_sendmmsg_reads_its_own_stamp_and_seals_over_it(monkeypatch):
    """Chunks of at most `sealed_chunk` sealed replies: the clock is read before each call,
    and each reply's MAC covers the stamp its call carries."""
    fake = FakeLibc()
    monkeypatch.setattr(mmsg, "_LIBC", types.SimpleNamespace(
        recvmmsg=fake.recvmmsg, sendmmsg=fake.sendmmsg))
    ticks = itertools.count(FIXED_NS, 1_000_000)  # every read 1 ms later
    datagrams = [signed_request(k, KEYS["MD5"]) for k in range(1, 6)] + [request(6), request(7)]
    sock = plain_socket("127.0.0.1")
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.bind(("127.0.0.1", 0))
        server = MmsgServer(responder(), time_ns=lambda: next(ticks), send_chunk=64,
                            sealed_chunk=2)
        send_all([client], sock, [(0, d) for d in datagrams])
        assert pump(server, sock, 7) == 7
        replies = collect_until_quiet(client)
    finally:
        sock.close()
        client.close()
    assert fake.send_calls == [2, 2, 3]  # slots [0, 2), [2, 4), [4, 7)
    transmits = [decode(r).header.transmit for r in replies]
    assert transmits[0] == transmits[1] < transmits[2] == transmits[3] < transmits[4]
    assert transmits[4] == transmits[5] == transmits[6]
    for reply in replies[:5]:
        assert reply[48:] == mac_trailer(KEYS["MD5"], reply[:48])


def test_at_most_send_chunk_replies_share_a_stamp(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(mmsg, "_LIBC", types.SimpleNamespace(
        recvmmsg=fake.recvmmsg, sendmmsg=fake.sendmmsg))
    ticks = itertools.count(FIXED_NS, 1_000_000)
    sock = plain_socket("127.0.0.1")
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.bind(("127.0.0.1", 0))
        server = MmsgServer(make_responder(), time_ns=lambda: next(ticks), send_chunk=16)
        send_all([client], sock, [(0, request(k)) for k in range(40)])
        assert pump(server, sock, 40) == 40
        replies = collect_until_quiet(client)
    finally:
        sock.close()
        client.close()
    assert fake.send_calls == [16, 16, 8]
    stamps = [decode(r).header.transmit for r in replies]
    assert len(set(stamps[:16])) == len(set(stamps[16:32])) == len(set(stamps[32:])) == 1
    assert stamps[0] < stamps[16] < stamps[32]


def test_a_sealed_reply_longer_than_a_slot_is_refused():
    batch = mmsg._Batch(socket.AF_INET, 2)
    with pytest.raises(ValueError):
        batch.put_sealed(0, bytes(mmsg._RECV_BUFFER + 1))


def test_the_slots_go_back_to_prefix_and_stamp_after_a_batch_with_sealed_replies():
    batch = mmsg._Batch(socket.AF_INET, 2)
    pristine = bytes(batch.iovecs)
    batch.put_sealed(1, os.urandom(68))
    assert bytes(batch.iovecs) != pristine
    batch.restore_iovecs()
    assert bytes(batch.iovecs) == pristine
