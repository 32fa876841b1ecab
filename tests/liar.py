"""A lying NTP server for tests: answers through the real Responder, with its clock shifted.

    python -m tests.liar PORT OFFSET_SECONDS
Runs until SIGTERM; the test that starts it stops it.
"""

from __future__ import annotations

import signal
import socket
import sys
import time

from pyntpd.proto.access import Access, RestrictTable
from pyntpd.proto.server import Responder
from pyntpd.proto.timestamp import unix_ns_to_ntp
from pyntpd.sync.localclock import LocalClockDriver


def main() -> None:
    port, offset = int(sys.argv[1]), float(sys.argv[2])
    shift = int(offset * 1e9)
    responder = Responder(Access(RestrictTable()))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.5)
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    while running[0]:
        now_ns = time.time_ns() + shift
        responder.set_system(LocalClockDriver(stratum=1, refid=b"LIAR").system_vars(now_ns / 1e9))
        try:
            data, peer = sock.recvfrom(2048)
        except TimeoutError:
            continue
        rx = time.time_ns() + shift
        reply = responder.respond(data, 0, False, peer[1], unix_ns_to_ntp(rx), rx / 1e9)
        if reply is not None:
            sock.sendto(reply + unix_ns_to_ntp(time.time_ns() + shift).to_bytes(8, "big"), peer)


if __name__ == "__main__":
    main()
