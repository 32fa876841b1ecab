"""Two pyntpd processes peered with each other (`peer ... key N`), symmetric mode both ways."""

from __future__ import annotations

import re

import pytest

from tests.integration.test_auth import KEYS, keys_file
from tests.integration.test_pyntpq import pyntpq, pyntpq_json
from tests.support import Pyntpd, config_file, free_udp_port

SYNCED_TO_PEER = re.compile(r"synchronised to 127\.0\.0\.1 port (\d+) \(stratum (\d+)\)")


def peer_conf(keys: str, key_id: int, other_port: int, local_stratum: int | None = None) -> str:
    local = ("" if local_stratum is None else
             f"server 127.127.1.0\nfudge 127.127.1.0 stratum {local_stratum}\n")
    return (f"{local}keys {keys}\ntrustedkey {key_id}\nrestrict default\n"
            f"peer 127.0.0.1 port {other_port} key {key_id} iburst minpoll 3 maxpoll 3\n")


@pytest.mark.parametrize("key_id", [1, 3], ids=["MD5", "AES128CMAC"])  # SHA1: tests/proto
def test_two_peers_synchronise_one_to_the_others_local_clock(key_id: int) -> None:
    port_a, port_b = free_udp_port(), free_udp_port()
    with keys_file(KEYS) as keys, \
            config_file(peer_conf(keys, key_id, port_b, local_stratum=7)) as conf_a, \
            config_file(peer_conf(keys, key_id, port_a)) as conf_b, \
            Pyntpd("-c", conf_a, port=port_a) as a, Pyntpd("-c", conf_b, port=port_b) as b:
        match = b.search_log(SYNCED_TO_PEER, 30.0)
        assert match is not None, b.output()
        assert "symmetric association with 127.0.0.1 port" in a.output()
        peers = pyntpq_json(b.port, "-n", "-p")["peers"]
        assert isinstance(peers, list) and len(peers) == 1, peers
        rv = pyntpq(b.port, "-c", f"rv {peers[0]['associd']} hmode,pmode,srcport,keyid")
        logs = a.output() + b.output()
    # A serves its local clock at stratum 8; B, following A, is at stratum 9.
    assert (int(match.group(1)), match.group(2)) == (port_a, "9")
    assert "Traceback" not in logs and "WARNING" not in logs
    # ntpq's view of B: a symmetric peer ("s"), reached, both ends in symmetric active mode.
    assert peers[0]["type"] == "s" and peers[0]["reach"] != 0 and peers[0]["tally"] == "*"
    assert rv.returncode == 0, rv.stderr
    for variable in ("hmode=1", "pmode=1", f"srcport={port_a}", f"keyid={key_id}"):
        assert variable in rv.stdout


def test_peers_with_different_keys_never_synchronise() -> None:
    from pyntpd.config.keys import SymmetricKey

    wrong = {1: SymmetricKey(1, "MD5", b"not-the-same-key")}
    port_a, port_b = free_udp_port(), free_udp_port()
    with keys_file(KEYS) as keys, keys_file(wrong) as other_keys, \
            config_file(peer_conf(keys, 1, port_b, local_stratum=7)) as conf_a, \
            config_file(peer_conf(other_keys, 1, port_a)) as conf_b, \
            Pyntpd("-c", conf_a, port=port_a), Pyntpd("-c", conf_b, port=port_b) as b:
        assert b.search_log(SYNCED_TO_PEER, 7.0) is None  # B's burst: packets 2 s apart


def test_a_peer_line_with_an_untrusted_key_is_refused_with_a_log_error() -> None:
    with keys_file(KEYS) as keys:
        text = f"keys {keys}\ntrustedkey 1\npeer 127.0.0.1 port 9 key 2 iburst\n"
        with config_file(text) as conf, Pyntpd("-c", conf) as d:
            d.wait_for_log("key 2 is not listed in 'trustedkey'")
            assert "symmetric association" not in d.output()


def test_peer_with_several_workers_is_a_start_error() -> None:
    with keys_file(KEYS) as keys, config_file(peer_conf(keys, 1, 9)) as conf:
        d = Pyntpd("-c", conf, "--workers", "2")
        try:
            with pytest.raises(AssertionError, match="single serving process"):
                d.start()
        finally:
            d.cleanup()
