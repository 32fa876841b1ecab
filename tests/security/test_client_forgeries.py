"""Advisories against ntpd's client side, replayed against a real pyntpd process.

The test is pyntpd's upstream server (tests/security/upstream.py): it sees each request and
answers with the forgery the advisory describes, then with the honest reply, and reads the
association's counters from the daemon's JSON status: each forgery is counted under the
reason that refused it, and the honest reply to the same request still gives a sample (the
forgery spent nothing). Each test fails when the check it names is removed
(tests/mutation/mutate.py).
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
from tests.support import Pyntpd, config_file, counted

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
        with config_file("\n".join(lines) + "\n") as conf, Pyntpd("-c", conf, status=True) as d:
            yield d


def crypto_nak(data: bytes) -> bytes:
    """`data`'s header with a lone key id (key 1) for a MAC: what ntpd took as authentic."""
    return data[:48] + KEY.key_id.to_bytes(4, "big")


def test_cve_2015_7871_crypto_nak_is_not_authentication() -> None:
    """A crypto-NAK (a lone key id) with the right origin was taken as an authenticated
    reply by ntpd: an attacker could set the clock of a client that required keys."""
    with Upstream() as up, client(up, key=True) as d:
        data, peer = up.request()
        up.send(peer, crypto_nak(reply(data, stratum=1)))
        # The signed reply to the same request is still taken: the NAK spent nothing.
        up.send(peer, reply(data, key=KEY))
        source = d.wait_source(received=2)
        assert counted(source["dropped"]) == {"authentication": 1}
        assert source["reach"] != 0


def test_cve_2016_1547_crypto_nak_does_not_demobilise() -> None:
    """Spoofed crypto-NAKs made ntpd drop a preemptable association. Here authentication is
    checked before a reply consumes the outstanding request: the NAKs change nothing, the
    genuine reply still counts, and polling goes on."""
    with Upstream() as up, client(up, key=True) as d:
        data, peer = up.request()
        up.send(peer, crypto_nak(data))  # our own request sent back with a NAK
        up.send(peer, crypto_nak(reply(data)))
        up.send(peer, reply(data, key=KEY))
        source = d.wait_source(received=3)
        assert counted(source["dropped"]) == {"not_server_mode": 1, "authentication": 1}
        assert source["reach"] != 0
        up.request(timeout=5.0)  # the next poll (2 s into the burst)


def test_cve_2015_7704_spoofed_kiss_with_a_wrong_origin_is_ignored() -> None:
    """An off-path attacker's RATE/DENY kiss (it cannot know our random origin) must not
    slow down or stop polling (CVE-2015-7704/7705, CVE-2020-11868)."""
    with Upstream() as up, client(up) as d:
        data, peer = up.request()
        for code in (b"DENY", b"RSTR", b"RATE"):
            up.send(peer, reply(data, stratum=0, refid=code, origin=0x1234_5678_9ABC_DEF0))
        up.send(peer, reply(data))
        source = d.wait_source(received=4)
        assert counted(source["dropped"]) == {"bogus_origin": 3}
        assert source["reach"] != 0
        up.request(timeout=5.0)  # not denied: the next poll comes


def test_cve_2016_1547_unauthenticated_kiss_on_a_keyed_association_is_ignored() -> None:
    """Even with the right origin (an on-path attacker), an unsigned DENY kiss does not stop
    an authenticated association."""
    with Upstream() as up, client(up, key=True) as d:
        data, peer = up.request()
        up.send(peer, reply(data, stratum=0, refid=b"DENY"))
        up.send(peer, reply(data, key=KEY))
        source = d.wait_source(received=2)
        assert counted(source["dropped"]) == {"authentication": 1}
        assert source["reach"] != 0
        up.request(timeout=5.0)  # not denied: the next poll comes


def test_cve_2015_8138_zero_origin_replies_are_refused() -> None:
    """ntpd accepted a reply whose origin timestamp was zero: any off-path packet matched.
    Refused with our request outstanding (the origin is not ours) and with none (a zero
    origin never stands for "nothing outstanding")."""
    with Upstream() as up, client(up) as d:
        data, peer = up.request()
        up.send(peer, reply(data, origin=0))
        up.send(peer, reply(data))  # the genuine reply consumes the request
        up.send(peer, reply(data, origin=0))
        source = d.wait_source(received=3)
        assert counted(source["dropped"]) == {"bogus_origin": 1, "no_request_outstanding": 1}
        assert source["reach"] != 0


def test_cve_2020_13817_transmit_timestamps_are_unpredictable() -> None:
    """ntpd's transmit timestamp was its clock: an off-path attacker who knew roughly the
    time could forge the origin. pyntpd sends random 64-bit values."""
    with Upstream() as up, client(up):
        transmits = [decode(up.request()[0]).header.transmit for _ in range(3)]
    now = unix_to_ntp(time.time())
    assert len(set(transmits)) == 3
    assert all(abs(t - now) > (86400 << 32) for t in transmits)


def test_a_replayed_reply_is_refused() -> None:
    """A genuine reply gives one sample: sent again it is a duplicate, a second answer to
    the same request finds it spent, and an old answer to the next request has the wrong
    origin."""
    with Upstream() as up, client(up) as d:
        first, peer = up.request()
        genuine = reply(first)
        up.send(peer, genuine)
        up.send(peer, genuine)
        up.send(peer, reply(first))  # another (fresh) answer to the answered request
        d.wait_source(received=3)
        up.request()
        up.send(peer, genuine)
        up.send(peer, reply(first))  # answers the first request, not this one
        source = d.wait_source(received=5)
        assert counted(source["dropped"]) == {
            "duplicate": 2, "no_request_outstanding": 1, "bogus_origin": 1}
