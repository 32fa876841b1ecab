"""Advisories against ntpd's symmetric mode, replayed against a real pyntpd process.

The test plays pyntpd's configured peer (`peer 127.0.0.1 port P key 1`) from the peer's own
address and port -- what an attacker who spoofs the peer's address can do -- and a stranger
on another port. pyntpd's next packet to the peer shows what it believed: its origin and
receive timestamps are the last peer packet it accepted, zero while none.

- CVE-2016-1549 (Sybil/ephemeral peers): unauthenticated mode 1 packets mobilised
  associations in ntpd. pyntpd never mobilises anything; a stranger's mode 1 gets nothing.
- Symmetric-mode zero origin (CVE-2015-8138 class) and crypto-NAK (CVE-2015-7871): an
  unauthenticated packet with origin zero reset ntpd's peer state; here every packet from
  the peer's address must carry a MAC under the peer's key before anything changes.
- Replays and reflections: an authentic packet sent again, or pyntpd's own packet sent
  back (the key is the same both ways), changes nothing.

Each refusal is also read back from the daemon's JSON status, counted under its reason (the
peer association's `dropped`, the server's `dropped` for strangers).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyntpd.config.keys import SymmetricKey
from pyntpd.proto.auth import AuthResult, mac_trailer, signed_part, verify_with
from pyntpd.proto.packet import HEADER, NtpHeader, decode, li_vn_mode
from pyntpd.proto.timestamp import unix_to_ntp
from tests.security.upstream import Upstream
from tests.support import Pyntpd, config_file, counted

KEY = SymmetricKey(1, "SHA1", bytes.fromhex("0123456789abcdef0123456789abcdef01234567"))
OTHER = SymmetricKey(2, "SHA1", KEY.secret)


@contextmanager
def peered(peer: Upstream) -> Iterator[Pyntpd]:
    """pyntpd with `peer` as its symmetric peer: a packet every 2 s (iburst)."""
    with tempfile.TemporaryDirectory(prefix="pyntpd-sec-") as tmp:
        keys = Path(tmp) / "ntp.keys"
        keys.write_text(f"1 SHA1 {KEY.secret.hex()}\n2 SHA1 {KEY.secret.hex()}\n")
        os.chmod(keys, 0o600)
        text = (f"keys {keys}\ntrustedkey 1 2\nrestrict default\n"
                f"peer 127.0.0.1 port {peer.port} key 1 iburst minpoll 3 maxpoll 3\n")
        with config_file(text) as conf, Pyntpd("-c", conf, status=True) as d:
            yield d


def next_packet(peer: Upstream) -> NtpHeader:
    """pyntpd's next symmetric packet to its peer, checked to be signed with the key."""
    return decode(next_datagram(peer)).header


def next_datagram(peer: Upstream) -> bytes:
    data, _ = peer.request(timeout=10.0)
    packet = decode(data)
    assert packet.header.mode == 1 and packet.mac is not None
    assert verify_with(KEY, packet.mac, signed_part(data, packet.mac)) is AuthResult.OK
    return data


def peer_packet(*, origin: int = 0, transmit: int | None = None, key: SymmetricKey | None = KEY,
                mode: int = 1) -> bytes:
    """A packet as the peer would send it (stratum 2, synchronised), signed under `key`."""
    now = time.time()
    data = HEADER.pack(li_vn_mode(0, 4, mode), 2, 3, -20, 0, 0, b"GPS\0",
                       unix_to_ntp(now - 16), origin, unix_to_ntp(now) if origin else 0,
                       transmit if transmit is not None else unix_to_ntp(now))
    return data if key is None else data + mac_trailer(key, data)


def test_cve_2016_1549_a_strangers_symmetric_packets_get_nothing() -> None:
    with Upstream() as peer, peered(peer) as d, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.settimeout(0.5)
        before = d.status()["server"]["dropped"]["not_a_request"]
        for mode in (1, 2):
            for key in (None, KEY):  # signed or not: the stranger is not a configured peer
                stranger.sendto(peer_packet(key=key, mode=mode), ("127.0.0.1", d.port))
        try:
            got = stranger.recvfrom(2048)
        except TimeoutError:
            got = None
        assert got is None
        assert d.status()["server"]["dropped"]["not_a_request"] - before == 4
        next_packet(peer)
        h = next_packet(peer)
        assert (h.origin, h.receive) == (0, 0)
        assert d.source()["received"] == 0  # nothing reached the peer's association


def test_unauthenticated_packets_from_the_peers_address_change_nothing() -> None:
    """Zero origin, a right origin, a crypto-NAK, another key, a bad digest: all refused."""
    with Upstream() as peer, peered(peer) as d:
        first = next_packet(peer)
        where = ("127.0.0.1", d.port)
        signed = peer_packet(origin=first.transmit)
        for forged in (
            peer_packet(key=None),  # the zero-origin class: would reset the peer state
            peer_packet(origin=first.transmit, key=None),  # a perfect answer, unsigned
            signed[:48] + KEY.key_id.to_bytes(4, "big"),  # crypto-NAK
            peer_packet(origin=first.transmit, key=OTHER),  # trusted, but not this peer's key
            signed[:-1] + bytes([signed[-1] ^ 1]),  # a bad digest
        ):
            peer.send(where, forged)
        assert counted(d.wait_source(received=5)["dropped"]) == {"authentication": 5}
        h = next_packet(peer)
        assert (h.origin, h.receive) == (0, 0), "a forged packet was believed"
        # The genuine peer is still heard: its signed packet is what pyntpd answers next.
        transmit = unix_to_ntp(time.time())
        peer.send(where, peer_packet(transmit=transmit))
        h = next_packet(peer)
        assert h.origin == transmit and h.receive != 0
        # Its first packet (origin zero) updates the state but gives no sample.
        assert counted(d.source()["dropped"]) == {"authentication": 5, "zero_origin": 1}


def test_replayed_and_reflected_packets_change_nothing() -> None:
    with Upstream() as peer, peered(peer) as d:
        where = ("127.0.0.1", d.port)
        first = next_packet(peer)
        newer = unix_to_ntp(time.time())
        older = peer_packet(transmit=newer - (10 << 32))  # authentic, sent 10 s earlier
        fresh = peer_packet(transmit=newer)
        peer.send(where, fresh)
        peer.send(where, fresh)  # a duplicate
        ours = next_datagram(peer)
        h = decode(ours).header
        assert h.origin == newer
        peer.send(where, older)  # a replay of an older authentic packet
        peer.send(where, ours)  # pyntpd's own packet sent back: its MAC verifies
        assert counted(d.wait_source(received=4)["dropped"]) == {
            "zero_origin": 1, "duplicate": 1, "replay": 2}
        assert next_packet(peer).origin == newer
        assert first.transmit < h.transmit
