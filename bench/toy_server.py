"""cpython-minimal: the simplest honest NTP server loop in CPython, as a benchmark baseline.

A blocking ``recvmsg`` loop on one UDP socket with kernel receive timestamps (SO_TIMESTAMPNS) for
t2, the transmit timestamp t3 read just before ``sendto``.  It answers mode-3 requests with a
mode-4 reply, stratum 10, refid LOCL; everything else is dropped.  Not a real server: no restrict,
no rate limiting, no clock discipline.  Stops on SIGTERM/SIGINT.

    python bench/toy_server.py --port N [--host 127.0.0.1] [--stratum 10]
"""

from __future__ import annotations

import argparse
import signal
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
NTP_UNIX_OFFSET = 2_208_988_800


def serve(host: str, port: int, stratum: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((host, port))

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    now = time.time()
    ref = (int(now) + NTP_UNIX_OFFSET) << 32 | int((now % 1) * 2**32)
    # header after the first byte: stratum, poll (filled per request), precision -20,
    # root delay 0, root dispersion ~1 ms, refid, reference time
    hdr_rest = struct.pack("!bII4sQ", -20, 0, 66, b"LOCL", ref)
    pack_reply = struct.Struct("!BBB").pack
    pack_ts = struct.Struct("!QQQ").pack
    unpack_ts = struct.Struct("=qq").unpack
    to_ntp = NTP_UNIX_OFFSET << 32
    recvmsg = sock.recvmsg
    sendto = sock.sendto
    time_ns = time.time_ns
    print(f"cpython-minimal serving on {host}:{port}", file=sys.stderr, flush=True)
    while True:
        data, anc, _flags, addr = recvmsg(512, 64)
        if len(data) < 48 or (data[0] & 7) != 3:
            continue
        t2_ns = -1
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                sec, nsec = unpack_ts(cdata[:16])
                t2_ns = sec * 1_000_000_000 + nsec
        if t2_ns < 0:
            t2_ns = time_ns()
        vn = data[0] & 0x38
        t2 = to_ntp + (t2_ns // 1_000_000_000 << 32) + ((t2_ns % 1_000_000_000) << 32) // 10**9
        t3_ns = time_ns()
        t3 = to_ntp + (t3_ns // 1_000_000_000 << 32) + ((t3_ns % 1_000_000_000) << 32) // 10**9
        reply = (
            pack_reply(vn | 4, stratum, data[2]) + hdr_rest + data[40:48] + pack_ts(t2, t3, 0)[:16]
        )
        sendto(reply, addr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--stratum", type=int, default=10)
    args = ap.parse_args()
    serve(args.host, args.port, args.stratum)


if __name__ == "__main__":
    main()
