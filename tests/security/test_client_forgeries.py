"""Advisories against ntpd's client side, replayed against a real pyntpd process.

The test is pyntpd's upstream server (tests/security/upstream.py): it sees each request and
answers with the forgery the advisory describes, then with honest replies, and checks that the
forgery changed nothing while the honest replies still work.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyntpd.config.keys import SymmetricKey
from pyntpd.proto.packet import decode
from pyntpd.proto.timestamp import unix_to_ntp
from tests.security.upstream import Upstream, reply
from tests.support import Pyntpd, config_file

KEY = SymmetricKey(1, "SHA1", bytes.fromhex("0123456789abcdef0123456789abcdef01234567"))


@contextmanager
def client(upstream: Upstream, key: bool = False) -> Iterator[Pyntpd]:
    """pyntpd polling `upstream` every 2 s (iburst), signed with KEY when `key`."""
    with tempfile.TemporaryDirectory(prefix="pyntpd-sec-") as tmp:
        lines = ["restrict default"]
        option = ""
        if key:
            keys = Path(tmp) / "ntp.keys"
            keys.write_text(f"1 SHA1 {KEY.secret.hex()}\n")
            os.chmod(keys, 0o600)
            lines += [f"keys {keys}", "trustedkey 1"]
            option = " key 1"
        lines.append(f"server 127.0.0.1 port {upstream.port}{option} iburst minpoll 4 maxpoll 4")
        with config_file("\n".join(lines) + "\n") as conf, Pyntpd("-c", conf) as d:
            yield d


def synchronised(d: Pyntpd) -> bool:
    return "synchronised to 127.0.0.1" in d.output()


def serve_honestly(upstream: Upstream, d: Pyntpd, key: SymmetricKey | None = None,
                   timeout: float = 40.0) -> None:
    """Answer every request properly until pyntpd synchronises (the positive control)."""
    deadline = time.monotonic() + timeout
    while not synchronised(d):
        assert time.monotonic() < deadline, f"never synchronised:\n{d.output()}"
        data, peer = upstream.request(timeout=20.0)  # after the burst: every 16 s
        upstream.send(peer, reply(data, key=key))
    assert synchronised(d)


def test_cve_2015_7871_crypto_nak_is_not_authentication() -> None:
    """A crypto-NAK (a lone key id) with the right origin was taken as an authenticated
    reply by ntpd: an attacker could set the clock of a client that required keys."""
    with Upstream() as up, client(up, key=True) as d:
        for _ in range(2):
            data, peer = up.request()
            up.send(peer, reply(data, stratum=1) [:48] + (1).to_bytes(4, "big"))
        assert not synchronised(d)
        serve_honestly(up, d, KEY)


def test_cve_2016_1547_crypto_nak_does_not_demobilise() -> None:
    """Spoofed crypto-NAKs made ntpd drop a preemptable association; pyntpd keeps polling."""
    with Upstream() as up, client(up, key=True):
        data, peer = up.request()
        up.send(peer, data[:48] + (1).to_bytes(4, "big"))
        up.send(peer, reply(data)[:48] + (1).to_bytes(4, "big"))
        assert up.requests_within(5.0) >= 1


def test_cve_2015_7704_spoofed_kiss_with_a_wrong_origin_is_ignored() -> None:
    """An off-path attacker's RATE/DENY kiss (it cannot know our random origin) must not
    slow down or stop polling (CVE-2015-7704/7705, CVE-2020-11868)."""
    with Upstream() as up, client(up) as d:
        for code in (b"DENY", b"RSTR", b"RATE"):
            data, peer = up.request()
            up.send(peer, reply(data, stratum=0, refid=code, origin=0x1234_5678_9ABC_DEF0))
        serve_honestly(up, d)


def test_cve_2016_1547_unauthenticated_kiss_on_a_keyed_association_is_ignored() -> None:
    """Even with the right origin (an on-path attacker), an unsigned DENY kiss does not stop
    an authenticated association."""
    with Upstream() as up, client(up, key=True) as d:
        data, peer = up.request()
        up.send(peer, reply(data, stratum=0, refid=b"DENY"))
        serve_honestly(up, d, KEY)


def test_cve_2015_8138_zero_origin_replies_are_refused() -> None:
    """ntpd accepted a reply whose origin timestamp was zero: any off-path packet matched."""
    with Upstream() as up, client(up) as d:
        for _ in range(2):
            data, peer = up.request()
            up.send(peer, reply(data, origin=0))
        assert not synchronised(d)
        serve_honestly(up, d)


def test_cve_2020_13817_transmit_timestamps_are_unpredictable() -> None:
    """ntpd's transmit timestamp was its clock: an off-path attacker who knew roughly the
    time could forge the origin. pyntpd sends random 64-bit values."""
    with Upstream() as up, client(up):
        transmits = [decode(up.request()[0]).header.transmit for _ in range(3)]
    now = unix_to_ntp(time.time())
    assert len(set(transmits)) == 3
    assert all(abs(t - now) > (86400 << 32) for t in transmits)


def test_a_replayed_reply_is_refused() -> None:
    """The same genuine reply twice (or to the next request) gives one sample at most."""
    with Upstream() as up, client(up) as d:
        first, peer = up.request()
        genuine = reply(first)
        up.send(peer, genuine)
        for _ in range(3):
            up.request()
            up.send(peer, genuine)
        assert not synchronised(d)
