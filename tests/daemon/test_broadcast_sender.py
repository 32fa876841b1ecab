"""BroadcastSender on real sockets (loopback): what leaves, from where, and the socket left
as it was (daemon/broadcast)."""

from __future__ import annotations

import asyncio
import socket
import time

from pyntpd.config.keys import SymmetricKey
from pyntpd.config.model import BroadcastConfig
from pyntpd.daemon.broadcast import BroadcastSender
from pyntpd.proto.auth import AuthResult, KeyRing, signed_part, verify_with
from pyntpd.proto.packet import Mode, decode
from pyntpd.proto.timestamp import ntp_diff, unix_ns_to_ntp
from pyntpd.sync.localclock import LocalClockDriver
from pyntpd.types import SystemVars

KEY = SymmetricKey(4, "SHA1", b"broadcastsecret")


def serving_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


def send_once(sock: socket.socket, system: SystemVars, key: int | None = 4) -> BroadcastSender:
    """One broadcast time of a `broadcast 127.0.0.1 key 4` line (sent to our own port)."""
    async def main() -> BroadcastSender:
        sender = BroadcastSender([BroadcastConfig("127.0.0.1", key=key)], (0,),
                                 KeyRing.build([KEY], [4]), [sock], time.time_ns,
                                 lambda: system, interfaces=list)
        sender.start()
        await asyncio.sleep(0.05)  # the first broadcast is due at once
        sender.close()
        return sender
    return asyncio.run(main())


def test_signed_broadcast_leaves_the_serving_socket_with_its_port() -> None:
    with serving_socket() as sock:
        sender = send_once(sock, LocalClockDriver(stratum=2).system_vars(time.time()))
        data, source = sock.recvfrom(512)
        assert source == sock.getsockname()
    packet = decode(data)
    assert packet.header.mode == Mode.BROADCAST and packet.header.stratum == 3
    assert packet.mac is not None
    assert verify_with(KEY, packet.mac, signed_part(data, packet.mac)) is AuthResult.OK
    assert abs(ntp_diff(packet.header.transmit, unix_ns_to_ntp(time.time_ns()))) < 1.0
    assert (sender.sent, sender.unsynchronised, sender.send_errors) == (0, 0, 0)  # closed


def test_so_broadcast_is_off_again_after_the_send() -> None:
    """A request forged from a broadcast address must never be answered to the segment."""
    with serving_socket() as sock:
        send_once(sock, LocalClockDriver(stratum=2).system_vars(time.time()))
        assert sock.recv(512)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 0


def test_nothing_leaves_while_unsynchronised() -> None:
    with serving_socket() as sock:
        send_once(sock, SystemVars())
        sock.settimeout(0.2)
        try:
            sock.recv(512)
        except TimeoutError:
            return
    raise AssertionError("an unsynchronised broadcaster sent a packet")


def test_untrusted_broadcast_key_sends_nothing() -> None:
    with serving_socket() as sock:
        sender = BroadcastSender([BroadcastConfig("127.0.0.1", key=9)], (0,),
                                 KeyRing.build([KEY], [4]), [sock], time.time_ns,
                                 SystemVars, interfaces=list)
        assert sender.targets == []
