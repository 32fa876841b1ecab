"""daemon.ntskehelper: the NTS-KE helper process and what passes between it and the main
process (cookie keys and restrict one way, counters the other, strictly checked)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from pathlib import Path

import pytest

from pyntpd.daemon import ntskehelper as kh
from pyntpd.daemon.ntsketls import KeCounters, KeFailure, NtsKeServer, key_exchange
from pyntpd.proto.access import RestrictTable
from pyntpd.proto.access_types import RestrictFlag, RestrictRule
from pyntpd.proto.nts import COOKIE_KEY_ID, CookieKeys
from tests.ntscerts import make_pki

NOW = 1_800_000_000.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_frames_come_out_whole_however_the_bytes_are_split() -> None:
    stream = kh.frame(kh.KEYS, b"abc") + kh.frame(kh.RELOAD, b"") + kh.frame(kh.COUNTERS, b"x")
    reader = kh.FrameReader(100)
    got = [f for i in range(len(stream)) for f in reader.feed(stream[i:i + 1])]
    assert got == [(kh.KEYS, b"abc"), (kh.RELOAD, b""), (kh.COUNTERS, b"x")]


@pytest.mark.parametrize("length", [0, 101])
def test_an_empty_or_oversized_frame_is_refused(length: int) -> None:
    with pytest.raises(ValueError):
        kh.FrameReader(100).feed(kh.FRAME.pack(length))


def test_counters_cross_as_json_and_only_in_their_own_shape() -> None:
    counters = KeCounters(accepted=5, served=3, evicted=1, errors={"tls": 1})
    assert KeCounters.from_dict(json.loads(json.dumps(counters.as_dict()))) == counters
    for bad in ([], {"accepted": 1}, {**counters.as_dict(), "served": -1},
                {**counters.as_dict(), "served": 1.5}, {**counters.as_dict(), "extra": 0},
                {**counters.as_dict(), "errors": {"tls": "1"}}):
        with pytest.raises(ValueError):
            KeCounters.from_dict(bad)


def test_counters_of_a_restarted_helper_add_up() -> None:
    total = KeCounters(accepted=2, served=1, errors={"tls": 1}).plus(
        KeCounters(accepted=3, timed_out=1, errors={"tls": 2, "no_alpn": 1}))
    assert total == KeCounters(accepted=5, served=1, timed_out=1,
                               errors={"tls": 3, "no_alpn": 1})


class _FakeSupervisor:
    def __init__(self) -> None:
        self.killed: list[int] = []
        self.current = KeCounters()

    def kill(self, pid: int) -> None:
        self.killed.append(pid)

    def link_lost(self, link: object) -> None:
        pass


class _FakeTransport:
    aborted = False

    def abort(self) -> None:
        self.aborted = True


@pytest.mark.parametrize("garbage", [
    kh.frame(kh.COUNTERS, b"not json"),
    kh.frame(kh.COUNTERS, b"[" * 50000),
    kh.frame(kh.COUNTERS, json.dumps({"accepted": "many"}).encode()),
    kh.frame(kh.KEYS, b"the helper has no keys to send"),
    kh.FRAME.pack(kh.MAX_FROM_HELPER + 1),
], ids=["not-json", "deep-json", "wrong-shape", "wrong-kind", "oversized"])
def test_a_helper_that_sends_garbage_is_killed(garbage: bytes) -> None:
    async def run() -> tuple[_FakeSupervisor, _FakeTransport]:
        supervisor, transport = _FakeSupervisor(), _FakeTransport()
        link = kh._MainLink(supervisor, 4242)  # type: ignore[arg-type]
        link.transport = transport  # type: ignore[assignment]
        link.data_received(kh.frame(kh.COUNTERS, json.dumps(
            KeCounters(served=7).as_dict()).encode()))
        assert supervisor.current.served == 7 and not supervisor.killed
        link.data_received(garbage)
        return supervisor, transport

    supervisor, transport = asyncio.run(run())
    assert supervisor.killed == [4242] and transport.aborted


def test_rotated_keys_and_a_new_restrict_table_reach_the_helper(tmp_path: Path) -> None:
    """A real helper, forked from this test: after a rotation its cookies are made with the
    new key; after `restrict 127.0.0.1 ignore` it refuses us, and says so in its counters."""
    pki = make_pki(tmp_path)

    async def run() -> tuple[list[int], int, KeCounters]:
        keys = CookieKeys()
        keys.rotate(NOW)
        server = NtsKeServer(str(pki.cert), str(pki.key), keys)
        port = free_port()
        server.bind(["127.0.0.1"], port)
        helper = kh.KeHelper(server)
        await helper.start()
        key_ids = []

        async def cookie_key_id() -> int:
            session = await key_exchange("localhost", port, str(pki.ca),
                                         connect_to="127.0.0.1")
            return int(COOKIE_KEY_ID.unpack(session.cookies[0][:4])[0])

        try:
            key_ids.append(await cookie_key_id())
            keys.rotate(NOW + 86400)
            helper.send_keys(keys)
            for _ in range(50):  # the frame and the next connection race in the helper
                key_ids.append(await cookie_key_id())
                if key_ids[-1] == keys.current().key_id:
                    break
            helper.send_restrict(RestrictTable([RestrictRule(
                ipaddress.ip_network("127.0.0.1/32"), RestrictFlag.IGNORE)]))
            refused = 0
            for _ in range(50):
                try:
                    await cookie_key_id()
                except (KeFailure, OSError):
                    refused += 1
                    break
            for _ in range(100):
                if helper.counters.refused_restrict:
                    break
                await asyncio.sleep(0.05)
        finally:
            await helper.stop()
            server.close()
        assert refused == 1
        return key_ids, keys.current().key_id, helper.counters

    key_ids, newest, counters = asyncio.run(run())
    assert key_ids[0] != newest and key_ids[-1] == newest
    assert counters.served == len(key_ids) and counters.refused_restrict >= 1
