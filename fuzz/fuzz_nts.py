"""atheris harness: NTS-KE messages and NTS requests never fail the parsers or the responder.

    .venv/bin/python fuzz/fuzz_nts.py fuzz/corpus/nts -max_total_time=60

The first byte chooses the target: even, the NTS-KE codec (server and client side); odd, an
NTS request to a responder that holds cookie keys.
"""

import contextlib
import ipaddress
import sys

import atheris

with atheris.instrument_imports():
    from pyntpd.proto import nts, ntske
    from pyntpd.proto.access import Access, RestrictTable
    from pyntpd.proto.access_types import RestrictFlag, RestrictRule
    from pyntpd.proto.localclock import LocalClockDriver
    from pyntpd.proto.server import Responder

NOW = 1_800_000_000.0
KEYS = nts.CookieKeys([nts.CookieKey(1, bytes(range(32)), NOW)])
RESPONDER = Responder(
    Access(RestrictTable([RestrictRule(ipaddress.ip_network("0.0.0.0/0"),
                                       RestrictFlag.NONE, True)])),
    LocalClockDriver(stratum=10).system_vars(NOW),
)
RESPONDER.nts_keys = KEYS


def test_one_input(data: bytes) -> None:
    if not data:
        return
    body = data[1:]
    if data[0] % 2 == 0:
        for limits in (ntske.REQUEST_LIMITS, ntske.RESPONSE_LIMITS):
            try:
                records = ntske.parse_message(body, limits)
            except ntske.NtsKeError:
                continue
            for decide in (ntske.negotiate, ntske.parse_response):
                with contextlib.suppress(ntske.NtsKeError):
                    decide(records)
        return
    RESPONDER.respond(body, 1, False, 123, 1, NOW)
    for queued in RESPONDER.take_signed():
        reply = queued.finish(2)
        assert len(reply) <= len(body), "NTS reply larger than the request"


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
