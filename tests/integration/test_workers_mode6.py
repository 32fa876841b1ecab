"""Mode 6 with --workers: every ntpq request is answered, whichever process the kernel hands
it to (a worker forwards it to the main process, which answers from the same address and
port), seen from many source ports as many ntpq runs would be; the counters it reports are
every process's."""

from __future__ import annotations

import socket
import time

from pyntpd.cli.pyntpq import QueryError, Server
from pyntpd.daemon.workers import POLL_INTERVAL
from pyntpd.proto.control import Opcode
from pyntpd.proto.control_client import parse_vars
from tests.support import Pyntpd, config_file, query

LOCAL_CONF = "server 127.127.1.0\nfudge 127.127.1.0 stratum 10\n"
QUERIES = 24
CLIENT_QUERIES = 40


def readvar_from_a_new_port(port: int, names: bytes = b"stratum,ss_numctlreq",
                            ) -> dict[str, str] | None:
    """One READVAR from a fresh socket (a new source port, so SO_REUSEPORT may pick any
    process); None if nothing came back."""
    try:
        server = Server("127.0.0.1", port, socket.AF_INET, timeout=0.5)
    except QueryError:
        return None
    try:
        return parse_vars(server.query(Opcode.READVAR, 0, names).data)
    except QueryError:
        return None
    finally:
        server.close()


def test_with_two_workers_every_mode6_request_is_answered_by_the_main_process() -> None:
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf, "--workers", "2") as d:
        answers = [readvar_from_a_new_port(d.port) for _ in range(QUERIES)]
    assert None not in answers
    assert {a["stratum"] for a in answers if a} == {"11"}
    # One process answered them all: its request count grows with every query.
    counts = [int(a["ss_numctlreq"]) for a in answers if a]
    assert counts == sorted(counts) and len(set(counts)) == QUERIES


def test_with_two_workers_sysstats_counts_what_every_process_received() -> None:
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf, "--workers", "2") as d:
        for _ in range(CLIENT_QUERIES):
            query(d.port)  # a fresh socket each: spread over the processes
        # Workers send their counters every POLL_INTERVAL; wait (bounded) until they did.
        processed = 0
        deadline = time.monotonic() + 10.0
        while processed < CLIENT_QUERIES and time.monotonic() < deadline:
            answer = readvar_from_a_new_port(d.port, b"ss_processed")
            processed = int(answer["ss_processed"]) if answer else 0
            time.sleep(POLL_INTERVAL)
    assert processed == CLIENT_QUERIES
