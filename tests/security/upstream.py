"""A scripted upstream server: the test plays the server (or the attacker) to a pyntpd client.

pyntpd polls it over loopback; the test reads each request and decides what comes back, so
every forgery in the advisories can be sent with the exact origin timestamp that a real
attacker would have to guess or sniff.
"""

from __future__ import annotations

import socket
import time

from pyntpd.config.keys import SymmetricKey
from pyntpd.proto.auth import mac_trailer
from pyntpd.proto.packet import HEADER, NtpHeader, decode, li_vn_mode
from pyntpd.proto.timestamp import seconds_to_short, unix_to_ntp


class Upstream:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, timeout: float = 10.0) -> tuple[bytes, tuple[str, int]]:
        """The next request pyntpd sends us (bounded wait)."""
        self.sock.settimeout(timeout)
        data, peer = self.sock.recvfrom(2048)
        return data, peer

    def requests_within(self, seconds: float) -> int:
        """How many requests arrive in `seconds` (left unanswered)."""
        deadline = time.monotonic() + seconds
        count = 0
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                self.sock.recvfrom(2048)
            except TimeoutError:
                break
            count += 1
        return count

    def send(self, peer: tuple[str, int], data: bytes) -> None:
        self.sock.sendto(data, peer)


def reply(
    request: bytes,
    *,
    stratum: int = 2,
    leap: int = 0,
    refid: bytes = b"GPS\0",
    origin: int | None = None,
    key: SymmetricKey | None = None,
    trailer: bytes = b"",
) -> bytes:
    """A server reply to `request`: timestamps from this machine's clock (the same clock
    the observed pyntpd reads, so the offset is ~0), `origin` overridable for forgeries."""
    h: NtpHeader = decode(request).header
    now = time.time()
    data = HEADER.pack(
        li_vn_mode(leap, 4, 4), stratum, h.poll, -20, seconds_to_short(0.001),
        seconds_to_short(0.001), refid, unix_to_ntp(now - 16),
        h.transmit if origin is None else origin, unix_to_ntp(now), unix_to_ntp(now + 1e-5),
    )
    if key is not None:
        data += mac_trailer(key, data)
    return data + trailer
