"""atheris harness: what pyntpq does with the datagrams a server (or anyone) sends it.

    .venv/bin/python fuzz/fuzz_control_client.py fuzz/corpus/control_client -max_total_time=60

The input is a byte that picks the request being answered (opcode READVAR, READSTAT,
REQ_NONCE or READ_MRU; sequence 1) and then datagrams, each preceded by its 2-byte length.
They go to a `Collector` as pyntpq's receive loop feeds it; every response it completes goes
where pyntpq sends it: the variables and their typed values, the association list and the
peers billboard rows, or an mrulist session (REQ_NONCE answers give the nonce, READ_MRU
answers are fed to the session, which then builds its next request).

Checked: only ControlResponseError (an error answer) and ControlProtocolError (a runaway
answer) come out; a completed response is no longer than 64 KiB and made of at most
MAX_FRAGMENTS fragments; the next mrulist request is ASCII and fits one request datagram.
"""

import sys

import atheris

with atheris.instrument_imports():
    from pyntpd.proto.control import MAX_DATA_LEN, Opcode
    from pyntpd.proto.control_client import (
        MAX_FRAGMENTS,
        MAX_RESPONSE,
        Association,
        Collector,
        ControlProtocolError,
        ControlResponseError,
        MruSession,
        parse_assocs,
        parse_vars,
        peer_row,
        request,
        typed,
    )

OPCODES = (Opcode.READVAR, Opcode.READSTAT, Opcode.REQ_NONCE, Opcode.READ_MRU)
SEQUENCE = 1
NOW_NTP = 0xEC00_0000 << 32
PIVOT_UNIX = 1_800_000_000.0
MAX_DATAGRAMS = 512  # pyntpq's receive loop stops there too


def datagrams(data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos + 2 <= len(data) and len(out) < MAX_DATAGRAMS:
        length = int.from_bytes(data[pos : pos + 2], "big")
        out.append(data[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return out


def _use(opcode: int, payload: bytes, session: MruSession) -> None:
    if opcode == Opcode.READSTAT:
        for assoc in parse_assocs(payload):
            assert 0 <= assoc.select <= 7 and assoc.condition
        return
    if opcode == Opcode.REQ_NONCE:
        session.take_nonce(payload)
    elif opcode == Opcode.READ_MRU:
        if session.nonce is None:
            session.nonce = "0" * 24
        session.feed(payload)
    else:
        variables = parse_vars(payload)
        for name, value in variables.items():
            typed(name, value, PIVOT_UNIX)
        row = peer_row(Association(2, 0x9614), variables, NOW_NTP)
        assert 0 <= row.reach <= 0xFF and row.poll > 0
        return
    following = session.next_request()
    assert len(request(Opcode.READ_MRU, SEQUENCE, 0, following)) <= 12 + MAX_DATA_LEN, \
        "mrulist request longer than one datagram"


def test_one_input(data: bytes) -> None:
    if not data:
        return
    opcode = OPCODES[data[0] & 3]
    collector = Collector(opcode, SEQUENCE)
    session = MruSession()
    try:
        for datagram in datagrams(data[1:]):
            response = collector.add(datagram)
            if response is None:
                continue
            assert len(response.data) <= MAX_RESPONSE
            assert len(collector.pieces) <= MAX_FRAGMENTS
            _use(opcode, response.data, session)
            collector = Collector(opcode, SEQUENCE)  # the next round of the exchange
    except (ControlResponseError, ControlProtocolError):
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
