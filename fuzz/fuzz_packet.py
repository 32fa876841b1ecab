"""atheris harness: the packet codec and the responder never fail on arbitrary datagrams.

    .venv/bin/python fuzz/fuzz_packet.py fuzz/corpus/packet -max_total_time=60
"""

import ipaddress
import sys

import atheris

with atheris.instrument_imports():
    from pyntpd.proto.access import Access, RestrictTable
    from pyntpd.proto.access_types import RestrictFlag, RestrictRule
    from pyntpd.proto.packet import PacketError, decode, encode
    from pyntpd.proto.server import Responder
    from pyntpd.sync.localclock import LocalClockDriver

NOW = 1_800_000_000.0
RESPONDER = Responder(
    Access(RestrictTable([RestrictRule(ipaddress.ip_network("0.0.0.0/0"),
                                       RestrictFlag.LIMITED | RestrictFlag.KOD, True)])),
    LocalClockDriver(stratum=10).system_vars(NOW),
)


def test_one_input(data: bytes) -> None:
    try:
        packet = decode(data)
    except PacketError:
        pass
    else:
        # Whatever decodes re-encodes to the same bytes: nothing is silently skipped.
        assert encode(packet) == bytes(data), "codec round trip changed the datagram"
    reply = RESPONDER.respond(data, len(data), False, 123, 1, NOW + len(data) % 7)
    assert reply is None or len(reply) + 8 <= len(data), "reply larger than request"


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
