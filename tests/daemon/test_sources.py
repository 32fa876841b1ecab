"""SourceManager against a real pyntpd on loopback: resolution, sockets, samples."""

from __future__ import annotations

import asyncio
import time

from pyntpd.config.model import ServerConfig
from pyntpd.daemon.sources import Peer, SourceManager
from pyntpd.types import Sample
from tests.support import LOCAL_CONF, Pyntpd, config_file, free_udp_port


class FakeDnsManager(SourceManager):
    """Resolves every name to both loopback addresses, as a pool's DNS would give several."""

    async def _lookup(self, host: str, port: int) -> list[str]:
        return ["127.0.0.1", "::1"]


def collect(servers, want: int, timeout: float = 10.0, manager_class=SourceManager,
            **kw) -> tuple[list, SourceManager]:
    samples: list[tuple[Peer, Sample]] = []

    async def main() -> SourceManager:
        done = asyncio.Event()

        def on_sample(peer: Peer, sample: Sample) -> None:
            samples.append((peer, sample))
            if len(samples) >= want:
                done.set()

        manager = manager_class(tuple(servers), on_sample, time.time_ns, **kw)
        manager.start()
        try:
            await asyncio.wait_for(done.wait(), timeout)
        finally:
            manager.close()
        return manager

    manager = asyncio.run(main())
    return samples, manager


def test_iburst_gets_samples_from_a_local_server():
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as d:
        samples, _ = collect([ServerConfig("server", "127.0.0.1", port=d.port, iburst=True)], 1)
    peer, sample = samples[0]
    assert peer.address == "127.0.0.1"
    assert sample.stratum == 11 and abs(sample.offset) < 0.005 and 0 < sample.delay < 0.01


def test_each_association_has_its_own_connected_socket():
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as d:
        servers = [ServerConfig("server", "127.0.0.1", port=d.port, iburst=True),
                   ServerConfig("server", "::1", port=d.port, iburst=True)]
        samples, _ = collect(servers, 2)
    assert {p.address for p, _ in samples} == {"127.0.0.1", "::1"}


def test_pool_expands_to_several_addresses():
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as d:
        samples, _ = collect([ServerConfig("pool", "pool.test", port=d.port, iburst=True)],
                             2, manager_class=FakeDnsManager)
    assert len({p.address for p, _ in samples}) == 2


def test_unresolvable_name_is_retried_not_fatal():
    async def main() -> int:
        manager = SourceManager((ServerConfig("server", "no-such-host.invalid"),),
                                lambda p, s: None, time.time_ns)
        manager.start()
        await asyncio.sleep(0.2)
        count = len(manager.peers)
        manager.close()
        return count

    assert asyncio.run(main()) == 0


def test_silent_server_gives_no_sample():
    port = free_udp_port()
    samples: list = []

    async def main() -> None:
        manager = SourceManager((ServerConfig("server", "127.0.0.1", port=port, iburst=True),),
                                lambda p, s: samples.append(s), time.time_ns)
        manager.start()
        await asyncio.sleep(0.3)
        assert manager.peers and manager.peers[0].assoc.reach == 0
        manager.close()

    asyncio.run(main())
    assert samples == []


def test_nts_ke_tries_the_names_addresses_in_turn_and_checks_the_name(tmp_path):
    """The NTS-KE server's name is looked up like every name (so from outside a jail, -i),
    its addresses tried in turn; the certificate must name the server, not the address."""
    import socket

    from pyntpd.daemon.ntsketls import NtsKeServer
    from pyntpd.proto.nts import CookieKeys
    from tests.ntscerts import make_pki

    pki = make_pki(tmp_path, names=("ntp.example",), addresses=())
    looked_up: list[tuple[str, int]] = []

    async def lookup(host: str, port: int, family: int) -> list[str]:
        looked_up.append((host, port))
        return ["127.0.0.2", "127.0.0.1"]  # nobody listens at the first

    async def run():
        keys = CookieKeys()
        keys.rotate(time.time())
        server = NtsKeServer(str(pki.cert), str(pki.key), keys, ntp_port=12345)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server.bind(["127.0.0.1"], port)
        await server.start()
        manager = SourceManager((), lambda *a: None, time.time_ns, lookup=lookup,
                                nts_ca=str(pki.ca))
        try:
            session = await manager._key_exchange(
                ServerConfig("server", "ntp.example", nts=True, nts_port=port))
        finally:
            server.close()
        return port, session

    port, session = asyncio.run(run())
    assert looked_up == [("ntp.example", port)]
    assert session is not None and session.server == "127.0.0.1" and session.port == 12345
