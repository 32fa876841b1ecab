"""Mode 6 control protocol: codec and responder (one behaviour per test)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyntpd.proto.access import NOMRULIST, NOQUERY, Access, RestrictTable
from pyntpd.proto.control import (
    CERR_BADASSOC,
    CERR_BADOP,
    CERR_PERMISSION,
    CERR_UNKNOWNVAR,
    HEADER_LEN,
    MAX_DATA_LEN,
    AccessMru,
    ControlDrop,
    ControlHeader,
    ControlResponder,
    ControlSnapshot,
    MruItem,
    Opcode,
    PeerInfo,
    decode,
    encode,
    filter_register,
    parse_text,
    reassemble,
)
from pyntpd.types import PHI, Sample, Tally

NOW = 1000.0
CLOCK = (3_900_000_000 << 32) | 0x80000000
CLIENT = ("192.0.2.7", 40000)
OTHER = ("198.51.100.9", 40000)


def request(opcode: int, data: bytes = b"", associd: int = 0, seq: int = 7, **kw: object) -> bytes:
    header = ControlHeader(version=2, opcode=opcode, sequence=seq, associd=associd)
    raw = encode(header, data)
    if kw:
        first, second, s, status, assoc, offset, count = struct.unpack_from("!BBHHHHH", raw)
        values = {"first": first, "second": second, "offset": offset, "count": count}
        values.update(kw)
        raw = (
            struct.pack(
                "!BBHHHHH",
                values["first"],
                values["second"],
                s,
                status,
                assoc,
                values["offset"],
                values["count"],
            )
            + raw[HEADER_LEN:]
        )
    return raw


def peer(associd: int, addr: str, tally: str, **kw: object) -> PeerInfo:
    base: dict[str, object] = dict(
        associd=associd,
        srcadr=addr,
        leap=0,
        stratum=2,
        refid=bytes([10, 0, 0, 1]),
        reach=0xFF,
        offset=0.0012,
        delay=0.0034,
        jitter=0.0001,
        filtdelay=(0.001, 0.002),
        filtoffset=(0.0001, -0.0002),
        filtdisp=(0.0, 0.001),
        tally=tally,
    )
    base.update(kw)
    return PeerInfo(**base)  # type: ignore[arg-type]


def snapshot(**kw: object) -> ControlSnapshot:
    base: dict[str, object] = dict(
        version="pyntpd 0.1",
        processor="x86_64",
        system="Linux/6.1",
        leap=0,
        stratum=3,
        precision=-23,
        rootdelay=0.0125,
        rootdisp=0.0301,
        refid=bytes([192, 0, 2, 1]),
        reftime=CLOCK - (10 << 32),
        clock=CLOCK,
        peer=101,
        offset=0.000123,
        frequency=-12.5,
        peers=(
            peer(101, "192.0.2.1", Tally.SYSPEER),
            peer(102, "192.0.2.2", Tally.FALSETICKER),
            peer(103, "192.0.2.3", Tally.CANDIDATE),
            peer(104, "192.0.2.4", Tally.OUTLIER, reach=0),
        ),
        mru=tuple(
            MruItem(f"203.0.113.{i}", 123, NOW - 100 + i, NOW - 50 + i, i + 1, 0x23, 0)
            for i in range(40)
        ),
    )
    base.update(kw)
    return ControlSnapshot(**base)  # type: ignore[arg-type]


def responder() -> ControlResponder:
    return ControlResponder(secret=b"test-secret")


def ask(data: bytes, flags: int = 0, address: object = CLIENT, now: float = NOW, **kw: object):
    return responder().handle(data, address, flags, now, snapshot(**kw))


def text_of(fragments: list[bytes]) -> dict[str, str | None]:
    _, data = reassemble(fragments)
    return dict(parse_text(data))


def error_code(fragment: bytes) -> int | None:
    header, _ = decode(fragment)
    return header.status >> 8 if header.error else None


# --- codec ---------------------------------------------------------------------------------


def test_header_round_trip() -> None:
    header = ControlHeader(
        version=4,
        opcode=2,
        sequence=513,
        status=0x0615,
        associd=77,
        offset=936,
        count=5,
        leap=1,
        response=True,
        error=False,
        more=True,
    )
    raw = encode(header, b"hello")
    assert len(raw) == HEADER_LEN + 8  # padded to 4 bytes
    decoded, data = decode(raw)
    assert decoded == header
    assert data == b"hello"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x16\x02\x00", ControlDrop.TOO_SHORT),
        (request(2)[:11], ControlDrop.TOO_SHORT),
        (request(2, first=0x13), ControlDrop.NOT_CONTROL),  # mode 3
        (request(2, first=0x06), ControlDrop.BAD_VERSION),  # version 0
        (request(2, first=0x3E), ControlDrop.BAD_VERSION),  # version 7
        (request(2, second=0x82), ControlDrop.RESPONSE_BIT),
        (request(2, second=0x42), ControlDrop.RESPONSE_BIT),  # error bit
        (request(2, second=0x22), ControlDrop.FRAGMENTED),
        (request(2, offset=4), ControlDrop.NONZERO_OFFSET),
        (request(2, b"stratum", count=0xFFFF), ControlDrop.BAD_COUNT),  # CVE-2015-7855
        (request(2, b"stratum", count=9), ControlDrop.BAD_COUNT),
        (request(2, b"x" * 472), ControlDrop.TOO_LONG),
        (request(2, b"x" * 400) + b"\1" * 100, ControlDrop.BAD_TRAILER),
        (request(2, b"stratu")[:-1], ControlDrop.BAD_TRAILER),
        (request(2) + b"\0" * 1300, ControlDrop.TOO_LONG),
    ],
)
def test_malformed_request_dropped_with_reason(raw: bytes, reason: ControlDrop) -> None:
    resp = responder()
    reply = resp.handle(raw, CLIENT, 0, NOW, snapshot())
    assert reply.fragments == []
    assert reply.drop == reason
    assert resp.drops == {reason: 1}


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_readvar_zero_padded_to_576_bytes_is_answered_like_ntpd(version: int) -> None:
    # ntpstat: READVAR, association 0, count 0, the datagram zero-filled to 576 bytes.
    raw = request(2, first=(version << 3) | 6) + b"\0" * (576 - HEADER_LEN)
    reply = ask(raw)
    assert reply.drop is None
    header, data = reassemble(reply.fragments)
    assert header.version == version and b"stratum=" in data


def test_a_mac_trailer_without_a_controlkey_gets_no_answer() -> None:
    raw = request(2, b"stratum") + b"\0" * 4 + struct.pack("!I", 5) + b"\xaa" * 20
    assert ask(raw).drop is ControlDrop.BAD_AUTH


@settings(max_examples=500)
@given(st.binary(max_size=700), st.integers(0, 0xFFFFFFFF))
def test_arbitrary_bytes_never_raise(data: bytes, flags: int) -> None:
    for raw in (data, b"\x16" + data[1:], b"\x16" + data[1:2] + b"\0" * 10 + data[12:]):
        reply = responder().handle(raw, CLIENT, flags & ~NOQUERY, NOW, snapshot())
        assert (reply.drop is None) != (reply.fragments == [])
        for fragment in reply.fragments:
            assert len(fragment) <= HEADER_LEN + MAX_DATA_LEN


@given(st.binary(max_size=500))
def test_arbitrary_readvar_and_mru_bodies_never_raise(body: bytes) -> None:
    for opcode in (Opcode.READVAR, Opcode.READ_MRU, Opcode.READSTAT):
        for assoc in (0, 101):
            responder().handle(
                request(opcode, body[:468], associd=assoc), CLIENT, 0, NOW, snapshot()
            )


# --- READSTAT / READVAR --------------------------------------------------------------------


def test_readstat_lists_peers_with_select_codes() -> None:
    [fragment] = ask(request(Opcode.READSTAT)).fragments
    header, data = decode(fragment)
    assert header.response and not header.more and header.sequence == 7
    assert header.status >> 14 == 0 and (header.status >> 8) & 0x3F == 6  # leap 0, source NTP
    pairs = [struct.unpack_from("!HH", data, i) for i in range(0, len(data), 4)]
    assert [a for a, _ in pairs] == [101, 102, 103, 104]
    selects = {a: (s >> 8) & 7 for a, s in pairs}
    assert selects == {101: 6, 102: 1, 103: 4, 104: 3}  # '*', 'x' (falseticker), '+', '-'
    reach = {a: bool(s & 0x1000) for a, s in pairs}
    assert reach == {101: True, 102: True, 103: True, 104: False}
    assert all(s & 0x8000 for _, s in pairs)  # configured


def test_readvar_system_variables_text() -> None:
    reply = ask(request(Opcode.READVAR))
    _, data = reassemble(reply.fragments)
    assert data.endswith(b"\r\n")
    assert b'version="pyntpd 0.1", processor="x86_64", system="Linux/6.1"' in data
    assert all(len(line) <= 72 for line in data.split(b"\r\n"))
    values = dict(parse_text(data))
    assert list(values) == [
        "version",
        "processor",
        "system",
        "leap",
        "stratum",
        "precision",
        "rootdelay",
        "rootdisp",
        "refid",
        "reftime",
        "clock",
        "peer",
        "tc",
        "mintc",
        "offset",
        "frequency",
        "sys_jitter",
        "clk_jitter",
        "clk_wander",
    ]
    expected = {
        "stratum": "3",
        "rootdelay": "12.500",
        "refid": "192.0.2.1",
        "clock": "0xe8754700.80000000",
        "offset": "0.123000",
        "frequency": "-12.500",
        "peer": "101",
    }
    assert {name: values[name] for name in expected} == expected


def test_readvar_peer_variables_text() -> None:
    reply = ask(request(Opcode.READVAR, associd=102))
    header, _ = decode(reply.fragments[0])
    assert header.associd == 102
    assert (header.status >> 8) & 7 == 1
    values = text_of(reply.fragments)
    expected = {
        "srcadr": "192.0.2.2",
        "srcport": "123",
        "reach": "0xff",
        "refid": "10.0.0.1",
        "offset": "1.200000",
        "delay": "3.400000",
        "filtdelay": "1.00 2.00 0.00 0.00 0.00 0.00 0.00 0.00",
        "filtoffset": "0.10 -0.20 0.00 0.00 0.00 0.00 0.00 0.00",
        "filtdisp": "0.00 1.00 16000.00 16000.00 16000.00 16000.00 16000.00 16000.00",
    }
    assert {name: values[name] for name in expected} == expected
    for name in (
        "hmode",
        "pmode",
        "hpoll",
        "ppoll",
        "headway",
        "flash",
        "keyid",
        "unreach",
        "rootdelay",
        "rootdisp",
        "reftime",
        "rec",
        "dispersion",
        "jitter",
        "filtdisp",
        "dstadr",
        "dstport",
        "leap",
        "stratum",
        "precision",
    ):
        assert name in values


def test_filter_register_ages_each_dispersion_to_the_newest_sample() -> None:
    def sample(offset: float, t: float) -> Sample:
        return Sample(offset=offset, delay=0.002, dispersion=0.001, local_time=t, stratum=2,
                      leap=0, precision=-20, root_delay=0.0, root_dispersion=0.0,
                      refid=b"GPS\0", reference_time=0)

    delays, offsets, disps = filter_register([sample(0.3, 1064.0), sample(0.1, 1000.0)])
    assert delays == (0.002, 0.002) and offsets == (0.3, 0.1)
    assert disps == pytest.approx((0.001, 0.001 + PHI * 64))


def test_named_only_variables_are_answered_when_asked_and_not_in_rv() -> None:
    snap = {"named": {"peeradr": "192.0.2.1:123", "ss_uptime": "42"}}
    everything = text_of(ask(request(Opcode.READVAR), **snap).fragments)
    assert "peeradr" not in everything and "ss_uptime" not in everything
    asked = text_of(ask(request(Opcode.READVAR, b"peeradr,ss_uptime,stratum"), **snap).fragments)
    assert asked == {"peeradr": "192.0.2.1:123", "ss_uptime": "42", "stratum": "3"}


def test_named_only_peer_variables_are_answered_when_asked() -> None:
    peers = (peer(101, "192.0.2.1", Tally.SYSPEER, named={"received": "17"}),)
    reply = ask(request(Opcode.READVAR, b"srcadr,received", associd=101), peers=peers)
    assert text_of(reply.fragments) == {"srcadr": "192.0.2.1", "received": "17"}


def test_refid_text_for_stratum_one() -> None:
    values = text_of(ask(request(Opcode.READVAR, b"refid"), stratum=1, refid=b"GPS\0").fragments)
    assert values == {"refid": "GPS"}


def test_variable_selection() -> None:
    values = text_of(ask(request(Opcode.READVAR, b"offset, stratum,leap")).fragments)
    assert list(values) == ["offset", "stratum", "leap"]


def test_unknown_variable_error() -> None:
    [fragment] = ask(request(Opcode.READVAR, b"stratum,nosuch")).fragments
    assert error_code(fragment) == CERR_UNKNOWNVAR


@pytest.mark.parametrize("opcode", [Opcode.READVAR, Opcode.READSTAT])
def test_bad_association_id_error(opcode: int) -> None:
    [fragment] = ask(request(opcode, associd=999, seq=42)).fragments
    header, _ = decode(fragment)
    assert header.response and header.error and header.sequence == 42
    assert error_code(fragment) == CERR_BADASSOC


def test_long_answer_fragments_and_reassembles() -> None:
    long_version = "v" * 1500
    reply = ask(request(Opcode.READVAR), version=long_version)
    assert len(reply.fragments) >= 4
    offsets = []
    for index, fragment in enumerate(reply.fragments):
        header, _ = decode(fragment)
        assert len(fragment) <= HEADER_LEN + MAX_DATA_LEN
        assert len(fragment) % 4 == 0
        assert header.more == (index < len(reply.fragments) - 1)
        assert header.sequence == 7
        offsets.append(header.offset)
        if header.more:
            assert header.count == MAX_DATA_LEN
    assert offsets == [i * MAX_DATA_LEN for i in range(len(reply.fragments))]
    assert text_of(reply.fragments)["version"] == long_version


# --- mrulist -------------------------------------------------------------------------------


def _nonce(resp: ControlResponder, address: object = CLIENT, now: float = NOW) -> str:
    [fragment] = resp.respond(request(Opcode.REQ_NONCE), address, 0, now, snapshot())
    nonce = text_of([fragment])["nonce"]
    assert nonce is not None and len(nonce) == 24
    return nonce


def test_mrulist_refused_without_nonce() -> None:
    [fragment] = ask(request(Opcode.READ_MRU, b"frags=4")).fragments
    assert error_code(fragment) is not None


def test_mrulist_refused_with_nonce_for_another_address() -> None:
    resp = responder()
    nonce = _nonce(resp, OTHER)
    body = f"nonce={nonce}, frags=4".encode()
    reply = resp.handle(request(Opcode.READ_MRU, body), CLIENT, 0, NOW, snapshot())
    assert reply.fragments == [] and reply.drop == ControlDrop.BAD_NONCE


def test_mrulist_refused_with_expired_nonce() -> None:
    resp = responder()
    nonce = _nonce(resp, now=NOW)
    body = f"nonce={nonce}, frags=4".encode()
    reply = resp.handle(request(Opcode.READ_MRU, body), CLIENT, 0, NOW + 60, snapshot())
    assert reply.fragments == [] and reply.drop == ControlDrop.BAD_NONCE


def test_mrulist_refused_with_forged_nonce() -> None:
    resp = responder()
    nonce = _nonce(resp)
    forged = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    body = f"nonce={forged}, frags=4".encode()
    assert resp.respond(request(Opcode.READ_MRU, body), CLIENT, 0, NOW, snapshot()) == []


def test_mrulist_answered_with_valid_nonce() -> None:
    resp = responder()
    nonce = _nonce(resp)
    body = f"nonce={nonce}, frags=32".encode()
    fragments = resp.respond(request(Opcode.READ_MRU, body), CLIENT, 0, NOW + 5, snapshot())
    values = text_of(fragments)
    assert values["nonce"] and values["nonce"] != nonce
    assert values["addr.0"] == "203.0.113.0:123"  # oldest first
    assert values["ct.0"] == "1"
    assert values["mv.0"] == str(0x23)
    assert values["rs.0"] == "0x0"
    assert values["addr.39"] == "203.0.113.39:123"
    assert values["last.39"] == values["last.newest"] == "0xe87546f0.80000000"  # 16 s before now
    assert values["now"] == "0xe8754700.80000000"
    assert values["first.0"] < values["last.0"]  # type: ignore[operator]


def test_mrulist_limit_and_continuation() -> None:
    resp = responder()
    nonce = _nonce(resp)
    first = text_of(
        resp.respond(
            request(Opcode.READ_MRU, f"nonce={nonce}, limit=10".encode()),
            CLIENT,
            0,
            NOW,
            snapshot(),
        )
    )
    assert "addr.9" in first and "addr.10" not in first and "now" not in first
    body = f"nonce={first['nonce']}, limit=100, addr.0={first['addr.9']}, last.0={first['last.9']}"
    rest = text_of(
        resp.respond(request(Opcode.READ_MRU, body.encode()), CLIENT, 0, NOW, snapshot())
    )
    assert rest["addr.0"] == "203.0.113.10:123"
    assert "addr.29" in rest and "now" in rest


def test_mrulist_mincount_and_recent() -> None:
    resp = responder()
    body = f"nonce={_nonce(resp)}, frags=32, mincount=35".encode()
    values = text_of(resp.respond(request(Opcode.READ_MRU, body), CLIENT, 0, NOW, snapshot()))
    assert sorted(k for k in values if k.startswith("addr.")) == [f"addr.{i}" for i in range(6)]
    body = f"nonce={_nonce(resp)}, frags=32, recent=3".encode()
    values = text_of(resp.respond(request(Opcode.READ_MRU, body), CLIENT, 0, NOW, snapshot()))
    assert values["addr.0"] == "203.0.113.37:123" and "addr.3" not in values


def test_the_daemons_mru_list_names_ipv4_and_ipv6_sources_as_ntpd_does() -> None:
    access = Access(RestrictTable())
    access.check(0xC0000201, False, 123, NOW)
    access.check(1, True, 40000, NOW + 1)
    view = AccessMru(access)
    oldest = view.oldest()
    assert oldest is not None
    newest = view.newer(oldest)
    assert newest is not None
    assert [view.address_text(oldest), view.address_text(newest)] == [
        "192.0.2.1:123", "[::1]:40000"]
    assert view.find("[::1]:40000") is newest and view.find("192.0.2.1:123") is oldest
    assert view.find("192.0.2.1:124") is None  # another port: not the entry named


# --- restrictions and writes ---------------------------------------------------------------


def test_noquery_gets_nothing() -> None:
    reply = ask(request(Opcode.READVAR), flags=NOQUERY)
    assert reply.fragments == [] and reply.drop == ControlDrop.NOQUERY


def test_nomrulist_refuses_mrulist_but_not_readvar() -> None:
    resp = responder()
    nonce = resp.make_nonce(CLIENT, NOW)
    body = f"nonce={nonce}, frags=4".encode()
    for opcode, data in ((Opcode.REQ_NONCE, b""), (Opcode.READ_MRU, body)):
        [fragment] = resp.respond(request(opcode, data), CLIENT, NOMRULIST, NOW, snapshot())
        assert error_code(fragment) == CERR_PERMISSION
    assert text_of(
        resp.respond(request(Opcode.READVAR, b"leap"), CLIENT, NOMRULIST, NOW, snapshot())
    ) == {"leap": "0"}


@pytest.mark.parametrize(
    "opcode",
    [
        Opcode.WRITEVAR,
        Opcode.WRITECLOCK,
        Opcode.SETTRAP,
        Opcode.CONFIGURE,
        Opcode.SAVECONFIG,
        Opcode.UNSETTRAP,
    ],
)
def test_write_opcodes_refused(opcode: int) -> None:
    [fragment] = ask(request(opcode, b"stratum=1")).fragments
    header, data = decode(fragment)
    assert header.error and header.opcode == opcode and data == b""
    assert error_code(fragment) == CERR_PERMISSION


def test_unknown_opcode_refused() -> None:
    [fragment] = ask(request(20)).fragments
    assert error_code(fragment) == CERR_BADOP


def test_mrulist_stale_continuation_asks_for_restart() -> None:
    resp = responder()
    body = f"nonce={_nonce(resp)}, frags=4, addr.0=192.0.2.99:123, last.0=0x00000001.00000000"
    [fragment] = resp.respond(request(Opcode.READ_MRU, body.encode()), CLIENT, 0, NOW, snapshot())
    assert error_code(fragment) == CERR_UNKNOWNVAR  # ntpq restarts from the beginning


def test_mrulist_restrict_flags_in_ntpd_bits() -> None:
    from pyntpd.proto.access import KOD, LIMITED

    mru = (MruItem("192.0.2.50", 123, NOW - 5, NOW - 1, 9, 0x23, KOD | LIMITED | NOQUERY),)
    resp = responder()
    body = f"nonce={_nonce(resp)}, frags=4, resany=0x400".encode()
    values = text_of(
        resp.respond(request(Opcode.READ_MRU, body), CLIENT, 0, NOW, snapshot(mru=mru))
    )
    assert values["rs.0"] == "0x460"  # RES_KOD | RES_NOQUERY | RES_LIMITED
