"""Interleaved mode between two pyntpd processes, and the marks every reply carries."""

from __future__ import annotations

from tests.support import LOCAL_CONF, Pyntpd, config_file, query


def test_a_pyntpd_client_with_xleave_gets_interleaved_samples_from_a_pyntpd_server():
    with config_file(LOCAL_CONF) as served, Pyntpd("-c", served, status=True) as server:
        conf = (f"restrict default\nserver 127.0.0.1 port {server.port} iburst minpoll 3 "
                "maxpoll 3 xleave\n")
        with config_file(conf) as path, Pyntpd("-c", path, status=True) as client:
            # iburst: 2 s apart; replies 1-2 basic, 3 completes an exchange already used,
            # 4 and 5 complete exchanges 3 and 4 with the server's kernel stamps.
            source = client.wait_source(received=5, timeout=20.0)
        interleaved = server.status()["server"]["interleaved"]
    assert source["interleaved"] >= 2
    assert source["transmit_stamps"] == {"kernel": source["received"] - 1, "daemon": 0}
    assert {k: n for k, n in source["dropped"].items() if n} == {
        "interleaved_exchange_spent": 1}
    assert interleaved["served"] >= 3 and interleaved["daemon_stamp"] == 0
    assert interleaved["missed"] == 1 and interleaved["kept"] == 1


def test_replies_mark_their_receive_timestamp_odd_and_their_transmit_timestamp_even():
    """chrony's marks, which let a server tell a request naming one of its receive
    timestamps (interleaved mode) from one naming its transmit timestamp (ntpd's clients)."""
    with config_file(LOCAL_CONF) as path, Pyntpd("-c", path) as d:
        marks = set()
        for _ in range(8):
            h = query(d.port).header
            marks.add((h.receive & 1, h.transmit & 1))
    assert marks == {(1, 0)}
