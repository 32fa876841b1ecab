"""atheris harness: mode 6 requests through the codec and the whole control responder.

    .venv/bin/python fuzz/fuzz_control.py fuzz/corpus/control -max_total_time=60

The first input byte picks how the rest is used: bit 0 set, the rest is a 12-byte header and
a body in which every `NONCE` becomes a valid mrulist nonce for this client, and the header's
count is set to the body's length (so the fuzzer reaches READ_MRU's parameters and
continuation past the HMAC); bit 0 clear, the rest is the datagram as received. Bit 1 sets
nomrulist, bits 2 and 5 together noquery; bits 3-4 how long after the nonce the request
comes. Checked: `parse_request` raises only ControlError; the responder never raises; every
answer is a well-formed run of response fragments to that request, of bounded size; noquery
gets nothing, write/configure opcodes and a refused mrulist only an error, and READ_MRU
without a valid nonce (the harness's, which only it can make) never the list.
"""

import sys

import atheris

with atheris.instrument_imports():
    from pyntpd.proto.access import NOMRULIST, NOQUERY
    from pyntpd.proto.control import (
        CERR_PERMISSION,
        HEADER_LEN,
        MAX_DATA_LEN,
        MRU_FRAGS_LIMIT,
        WRITE_OPCODES,
        ControlError,
        ControlResponder,
        ControlSnapshot,
        MruItem,
        Opcode,
        PeerInfo,
        decode,
        parse_request,
        parse_text,
    )

NOW = 1_800_000_000.0
CLOCK = (int(NOW) + 2_208_988_800) << 32  # NTP timestamp of NOW
CLIENT = 0x7F000001  # the address key of 127.0.0.1, as daemon.control passes it
MAX_RESPONSE = 0xFFFF  # fragment offsets are 16 bits
DELAYS = (0.0, 5.0, 17.0, -1.0)  # after the nonce: fresh, fresh, expired, before it


def _mru() -> tuple[MruItem, ...]:
    items = []
    for i in range(48):
        addr = f"192.0.2.{i}" if i % 3 else f"2001:db8:ffff:{i:x}::{i + 1:x}"
        items.append(MruItem(addr=addr, port=123 + i * 1000, first=NOW - 3600 + i,
                             last=NOW - 600 + i * 10, count=1 + i * i, mode_version=(4 << 3) | 3,
                             flags=(i * 37) & 0x7FF))
    return tuple(items)


SNAPSHOT = ControlSnapshot(
    version="pyntpd 1.0", processor="x86_64", system="Linux/6.1", leap=0, stratum=2,
    precision=-24, rootdelay=0.012, rootdisp=0.034, refid=b"\xc0\x00\x02\x01",
    reftime=CLOCK - (64 << 32), clock=CLOCK, peer=3, offset=1e-4, frequency=-12.5,
    sys_jitter=2e-5,
    peers=(
        PeerInfo(associd=1, srcadr="127.127.1.0", srcport=0, srchost="LOCAL(0)", leap=0,
                 stratum=10, refid=b"LOCL", refclock=True, reach=0o377, hmode=3, pmode=4),
        PeerInfo(associd=2, srcadr="2001:db8::123", leap=0, stratum=1, refid=b"GPS\0",
                 reach=0o17, tally="+", filtdelay=(0.01, 0.02), filtoffset=(1e-3, -2e-3),
                 filtdisp=(0.1, 0.2), srchost="ntp.example.org"),
        PeerInfo(associd=3, srcadr="192.0.2.1", leap=0, stratum=1, refid=b"PPS\0",
                 reach=0o377, tally="*", authenable=True, authentic=True, keyid=42),
    ),
    mru=_mru(),
)
RESPONDER = ControlResponder(b"fuzz secret, fixed so that runs reproduce")
NONCE = RESPONDER.make_nonce(CLIENT, NOW).encode()


def _datagram(data: bytes) -> bytes:
    """The header as given; the body with real nonces; count and padding to match."""
    header, body = data[:HEADER_LEN], data[HEADER_LEN:].replace(b"NONCE", NONCE)
    if len(header) < HEADER_LEN:
        return header
    body = body[:MAX_DATA_LEN + 64]  # a little over the limit, so that is tried too
    return header[:10] + len(body).to_bytes(2, "big") + body + bytes(-len(body) % 4)


def _check_reply(request: bytes, frags: list[bytes]) -> int:
    """The fragments answer `request` and join up; the error code if it is an error, else
    -1."""
    asked, _ = parse_request(request)
    assert len(frags) <= MRU_FRAGS_LIMIT + 1, f"{len(frags)} fragments"
    total = b""
    for index, frag in enumerate(frags):
        assert len(frag) <= HEADER_LEN + MAX_DATA_LEN, f"fragment of {len(frag)} bytes"
        header, data = decode(frag)
        assert header.response and header.version == asked.version
        assert header.opcode == asked.opcode and header.sequence == asked.sequence
        assert header.offset == len(total), "fragments out of order or with gaps"
        assert header.more == (index < len(frags) - 1), "M bit wrong"
        if header.error:
            assert len(frags) == 1 and not data, "an error carries nothing"
            return header.status >> 8
        total += data
    assert len(total) <= MAX_RESPONSE
    parse_text(total)
    return -1


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, data = data[0], data[1:]
    structured = bool(mode & 1)
    flags = (NOMRULIST if mode & 2 else 0) | (NOQUERY if mode & 0x24 == 0x24 else 0)
    now = NOW + DELAYS[(mode >> 3) & 3]
    datagram = _datagram(data) if structured else data
    try:
        parse_request(datagram)
        parsed = True
    except ControlError:
        parsed = False
    reply = RESPONDER.handle(datagram, CLIENT, flags, now, SNAPSHOT)
    assert (not reply.fragments) == (reply.drop is not None), "a drop must be counted"
    if not parsed or flags & NOQUERY:
        assert not reply.fragments, "answered a request that does not parse or noquery"
        return
    if not reply.fragments:
        return
    op = datagram[1] & 0x1F
    error = _check_reply(datagram, reply.fragments)
    if op in WRITE_OPCODES or op == Opcode.READ_ORDLIST_A:
        assert error == CERR_PERMISSION, f"opcode {op} answered with {error}"
    elif op in (Opcode.READ_MRU, Opcode.REQ_NONCE) and flags & NOMRULIST:
        assert error == CERR_PERMISSION, "mrulist despite nomrulist"
    elif op == Opcode.READ_MRU and error < 0:
        assert NONCE in datagram.lower(), "MRU list without a valid nonce"
        assert 0 <= now - NOW <= 16, "MRU list for an expired nonce"
    elif op not in (Opcode.READSTAT, Opcode.READVAR, Opcode.REQ_NONCE):
        assert error >= 0, f"opcode {op} answered"


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
