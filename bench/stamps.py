#!/usr/bin/env python3
"""How stale the batched path's transmit timestamps are, and what fresher ones cost.

In one process, on loopback: a client queues a burst of --burst identical-kind requests,
one `MmsgServer.drain` answers them, and the client reads every reply with its kernel
receive timestamp. t4 - t3 (client kernel receive time minus the reply's transmit stamp) is
how long after its stamp a reply really left: the half of RTT - (t3 - t2) that the server
controls. Also the server thread's CPU time per request (thread_time: user + system, the
loopback delivery to the client included). For each --config MODE:SEND_CHUNK:SEALED_CHUNK.

    PYTHONPATH=src .venv/bin/python bench/stamps.py plain:64:1 plain:4:1 md5:4:1 nts:4:1

Nothing here is pinned or compared with chronyd: it isolates the server's own batching;
bench/serve.py measures the daemons end to end.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import statistics
import sys
import time

from pyntpd.daemon.mmsg import MmsgServer
from pyntpd.daemon.serve import SO_TIMESTAMPNS, receive_timestamp_ns
from pyntpd.proto import nts
from pyntpd.proto.access import Access, RestrictTable
from pyntpd.proto.access_types import RestrictFlag, RestrictRule
from pyntpd.proto.auth import KeyRing, SymmetricKey, mac_trailer
from pyntpd.proto.packet import HEADER, li_vn_mode
from pyntpd.proto.server import Responder
from pyntpd.sync.localclock import LocalClockDriver

KEYS = {"md5": SymmetricKey(1, "MD5", bytes(16)), "sha1": SymmetricKey(2, "SHA1", bytes(20)),
        "aes128": SymmetricKey(3, "AES128CMAC", bytes(range(16)))}
MODES = ("plain", *KEYS, "nts")


def responder(cookie_keys: nts.CookieKeys) -> Responder:
    rules = [RestrictRule(ipaddress.ip_network("0.0.0.0/0"), RestrictFlag.NONE,
                          is_default=True)]
    r = Responder(Access(RestrictTable(rules)),
                  LocalClockDriver(stratum=10).system_vars(time.time()))
    r.keys = KeyRing.build(KEYS.values(), [k.key_id for k in KEYS.values()])
    r.nts_keys = cookie_keys
    return r


def requests(mode: str, count: int, cookie_keys: nts.CookieKeys) -> list[bytes]:
    out = []
    for k in range(count):
        head = HEADER.pack(li_vn_mode(0, 4, 3), 0, 6, -20, 0, 0, bytes(4), 0, 0, 0, k + 1)
        if mode in KEYS:
            head += mac_trailer(KEYS[mode], head)
        elif mode == "nts":
            c2s, s2c = bytes(range(32)), bytes(range(32, 64))
            session = nts.NtsSession(c2s, s2c, [cookie_keys.make_cookie(c2s, s2c)] * 8)
            head = session.build_request(head)[0]
        out.append(head)
    return out


def ntp_to_ns(stamp: int) -> int:
    return ((stamp >> 32) - 2_208_988_800) * 10**9 + ((stamp & 0xFFFFFFFF) * 10**9 >> 32)


def run(mode: str, send_chunk: int, sealed_chunk: int, burst: int, bursts: int
        ) -> tuple[list[float], float]:
    cookie_keys = nts.CookieKeys()
    cookie_keys.rotate(time.time())
    server_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server_sock.bind(("127.0.0.1", 0))
        server_sock.setblocking(False)
        server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        client.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        server = MmsgServer(responder(cookie_keys), send_chunk=send_chunk,
                            sealed_chunk=sealed_chunk)
        where = server_sock.getsockname()
        burst_data = requests(mode, burst, cookie_keys)
        lags: list[float] = []
        cpu_ns = 0
        for _ in range(bursts):
            for data in burst_data:
                client.sendto(data, where)
            start = time.thread_time_ns()
            server.drain(server_sock)
            cpu_ns += time.thread_time_ns() - start
            for _ in range(4 * burst):  # bounded: at most one reply per request is expected
                try:
                    reply, ancillary, _, _ = client.recvmsg(2048, 256)
                except BlockingIOError:
                    break
                t3 = ntp_to_ns(int.from_bytes(reply[40:48], "big"))
                lags.append((receive_timestamp_ns(ancillary) - t3) / 1000)
        return lags, cpu_ns / 1000 / (bursts * burst)
    finally:
        server_sock.close()
        client.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="+", help=f"MODE:SEND_CHUNK:SEALED_CHUNK, MODE in {MODES}")
    ap.add_argument("--burst", type=int, default=64)
    ap.add_argument("--bursts", type=int, default=100)
    args = ap.parse_args(argv)
    print(f"bursts of {args.burst}; t4 - t3 in us; CPU us per request (server thread)")
    for config in args.config:
        mode, send, sealed = config.split(":")
        if mode not in MODES:
            ap.error(f"unknown mode {mode!r}")
        lags, cpu = run(mode, int(send), int(sealed), args.burst, args.bursts)
        lags.sort()
        q = statistics.quantiles(lags, n=100)
        print(f"{mode:<7} send_chunk {send:>3} sealed_chunk {sealed:>3}: t4-t3 p50 {q[49]:6.1f}"
              f" p90 {q[89]:6.1f} p99 {q[98]:6.1f}  cpu {cpu:5.2f}  (n={len(lags)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
