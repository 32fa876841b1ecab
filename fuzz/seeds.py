"""Writes the seed corpora of the harnesses added with the runner (fuzz/corpus/<name>/).

    .venv/bin/python -m fuzz.seeds [NAME ...]

The seeds are real exchanges, made with the project's own codecs: ntpq's requests (mode 6
version 2, as ntpq 4.2.8 sends them) and whole mrulist sessions between pyntpd's client and
responder, signed client requests, NTS-KE messages as RFC 8915 lays them out, keys files as
ntp-keygen writes them, statistics lines as ntpd's documentation shows them. The corpora are
committed; this script says where they came from and rebuilds them. The NTS seeds need the
NTS modules (the nts branch): without them they are left as they are.
"""

from __future__ import annotations

import importlib.util
import os
import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the harnesses are scripts: their constants are imported so

Seeds = dict[str, bytes]


def _frame(*datagrams: bytes) -> bytes:
    return b"".join(len(d).to_bytes(2, "big") + d for d in datagrams)


def control() -> Seeds:
    import fuzz_control as h

    from pyntpd.proto.control import ControlHeader, Opcode, encode
    from pyntpd.proto.control_client import MruSession, request

    def raw(opcode: int, data: bytes = b"", associd: int = 0, version: int = 2) -> bytes:
        return b"\0" + request(opcode, 1, associd, data, version)

    seeds = {
        "readstat": raw(Opcode.READSTAT),
        "readstat_assoc": raw(Opcode.READSTAT, associd=2),
        "readvar": raw(Opcode.READVAR),
        "readvar_v4": raw(Opcode.READVAR, version=4),
        "readvar_peer": raw(Opcode.READVAR, associd=3),
        "readlist": raw(Opcode.READVAR, b"offset,frequency,sys_jitter,rootdisp"),
        "readvar_unknown": raw(Opcode.READVAR, b"nosuchvar", 2),
        "readclock": raw(Opcode.READCLOCK, associd=1),
        "writevar": raw(Opcode.WRITEVAR, b"leap=1"),
        "configure": raw(Opcode.CONFIGURE, b"server 192.0.2.9 iburst"),
        "saveconfig": raw(Opcode.SAVECONFIG, b"/etc/ntp.conf"),
        "settrap": raw(Opcode.SETTRAP),
        "unsettrap": raw(Opcode.UNSETTRAP),
        "ordlist": raw(Opcode.READ_ORDLIST_A, b"ifstats"),
        "unknown_opcode": raw(20),
        "req_nonce": raw(Opcode.REQ_NONCE),
        "req_nonce_nomrulist": b"\x02" + request(Opcode.REQ_NONCE, 1),
        "readvar_md5_trailer": raw(Opcode.READVAR) + (1).to_bytes(4, "big") + bytes(16),
        "mru_stale_nonce": b"\x11" + _mru_request(b"nonce=NONCE, frags=32"),
        "mru_first": b"\x01" + _mru_request(b"nonce=NONCE, frags=32"),
        "mru_limit": b"\x01" + _mru_request(b"nonce=NONCE, limit=10"),
        "mru_filters": b"\x01" + _mru_request(
            b"nonce=NONCE, frags=4, mincount=2, resall=0x20, resany=0x400, maxlstint=300"),
        "mru_recent": b"\x01" + _mru_request(b"nonce=NONCE, recent=5, frags=16"),
        "mru_no_nonce": raw(Opcode.READ_MRU, b"frags=32"),
    }
    # A whole mrulist session, pyntpq's client against the responder: every request it sends.
    session = MruSession(frags=2)
    nonce = h.RESPONDER.respond(request(Opcode.REQ_NONCE, 1), h.CLIENT, 0, h.NOW, h.SNAPSHOT)
    session.take_nonce(_payload(nonce))
    for round_ in range(32):
        asked = request(Opcode.READ_MRU, 1, 0, session.next_request())
        seeds[f"mru_session_{round_}"] = b"\0" + asked
        answer = h.RESPONDER.respond(asked, h.CLIENT, 0, h.NOW, h.SNAPSHOT)
        if session.feed(_payload(answer)):
            break
    bad_header = ControlHeader(version=2, opcode=Opcode.READVAR, sequence=1, more=True)
    seeds["fragmented_request"] = b"\0" + encode(bad_header, b"offset")
    return seeds


def _mru_request(body: bytes) -> bytes:
    from pyntpd.proto.control import Opcode
    from pyntpd.proto.control_client import request

    return request(Opcode.READ_MRU, 1, 0, body)[:12] + body


def _payload(fragments: list[bytes]) -> bytes:
    from pyntpd.proto.control import reassemble

    return reassemble(fragments)[1]


def control_client() -> Seeds:
    import fuzz_control as h

    from pyntpd.proto.control import Opcode
    from pyntpd.proto.control_client import MruSession, request

    def answer(opcode: int, data: bytes = b"", associd: int = 0) -> list[bytes]:
        return h.RESPONDER.respond(request(opcode, 1, associd, data), h.CLIENT, 0, h.NOW,
                                   h.SNAPSHOT)

    pick = {Opcode.READVAR: 0, Opcode.READSTAT: 1, Opcode.REQ_NONCE: 2, Opcode.READ_MRU: 3}
    system, peer = answer(Opcode.READVAR), answer(Opcode.READVAR, associd=2)
    seeds = {
        "readvar_system": bytes([pick[Opcode.READVAR]]) + _frame(*system),
        "readvar_peer": bytes([pick[Opcode.READVAR]]) + _frame(*peer),
        "readvar_peer_reversed": bytes([pick[Opcode.READVAR]]) + _frame(*peer[::-1]),
        "readvar_error": bytes([pick[Opcode.READVAR]]) + _frame(
            *answer(Opcode.READVAR, b"nosuchvar")),
        "readstat": bytes([pick[Opcode.READSTAT]]) + _frame(*answer(Opcode.READSTAT)),
        "req_nonce": bytes([pick[Opcode.REQ_NONCE]]) + _frame(*answer(Opcode.REQ_NONCE)),
    }
    # An mrulist session: the READ_MRU answers, round after round, in the order they came,
    # with a stray and a duplicate fragment in the first round.
    session = MruSession(frags=3)
    session.take_nonce(_payload(answer(Opcode.REQ_NONCE)))
    rounds: list[bytes] = []
    for _ in range(32):
        frags = answer(Opcode.READ_MRU, session.next_request())
        rounds += frags
        if session.feed(_payload(frags)):
            break
    seeds["mru_session"] = bytes([pick[Opcode.READ_MRU]]) + _frame(*rounds)
    seeds["mru_session_noise"] = bytes([pick[Opcode.READ_MRU]]) + _frame(
        system[0], rounds[0], rounds[0], *rounds[1:])
    whole = answer(Opcode.READ_MRU, b"nonce=" + h.NONCE + b", frags=64")
    seeds["mru_whole"] = bytes([pick[Opcode.READ_MRU]]) + _frame(*whole)
    return seeds


def keys() -> Seeds:
    return {
        "ntp_keygen": (
            b"# ntpkey_MD5key_host.3916046398\n# Sat Jan  3 12:00:00 2026\n"
            b"1 MD5 L\";Nw<`.I<f4U0)247\"i  # MD5 key\n"
            b"2 MD5 &>l0%XXK9O'51VwV<xq~  # MD5 key\n"
            b"11 SHA1 a27872d3030a9025b8446c751b4551a7629af65c  # SHA1 key\n"
            b"12 SHA1 21bc3b4865dbb9e920902abdccb3e04ff97a5e74  # SHA1 key\n"),
        "aes_cmac": b"5 AES128CMAC 000102030405060708090a0b0c0d0e0f\n6 AES 0123456789abcdef\n",
        "crlf": b"1 M secret\r\n2 SHA-1 0123456789abcdef0123456789abcdef01234567\r\n",
        "mixed_bad": (b"0 MD5 zero\n65536 MD5 big\n7 SHA abc\n8 MD5\n9 MD5 pass#word\n"
                      b"10 MD5 abc 192.0.2.1\n10 MD5 again\n13 AES short\n"
                      b"14 MD5 0123456789abcdef0123\n15 SHA1 " + b"ab" * 65 + b"\n"),
        "group_readable": b"\xff\n1 MD5 secret\n",
        "latin1": "1 MD5 caf\u00e9\n".encode("latin-1"),
        "nul": b"1 MD5 sec\0ret\n2 MD5 fine\n",
    }


def statsformat() -> Seeds:
    return {
        # The lines ntpd's monitoring documentation (monopt.html) gives as examples.
        "loopstats_doc": b"50935 75440.031 0.000006019 13.778190 0.000351733 0.013380 6\n",
        "peerstats_doc": b"48773 10847.650 127.127.4.1 9714 -0.001605376 0.000000000 "
                         b"0.001424877 0.000958674\n",
        "sysstats_doc": b"50928 2132.543 36000 81965 0 9546 56 71793 512 540 10 147\n",
        "pyntpd_set": (
            b"61035 0.000 -0.000012345 -12.345 0.000001234 0.001234 6\n"
            b"61035 64.000 0.000002001 -12.346 0.000001100 0.001100 6\n"
            b"61035 86400.500 0.1 1 0.1 0.1 10\n"
            b"61035 128.000 2001:db8::1 9614 0.000123456 0.012345678 0.000456789 "
            b"0.000012345\n"
            b"61035 192.000 192.0.2.1 1a 0.0 0.0 0.0 0.0\n"
            b"61035 3600.000 3600 100 90 0 0 2 3 1 4 0\n"),
        "bad_lines": (b"61035 -1.0 0 0 0 0 6\n61035 1.0 nan 0 0 0 6\n"
                      b"61035 1.0 1e999 0 0 0 6\n61035 1 0 0 0 0 6 7\n"
                      b"-5 1.0 0 0 0 0 6\n61035 1.0 x 0 0 0 0 0\n\xff\xfe\n"),
        "gzip_magic": b"\x1f\x8b\x08\x00\x00\x00\x00\x00",
    }


def auth() -> Seeds:
    import fuzz_auth as h

    from pyntpd.proto.auth import mac_trailer

    request = bytes([0x23]) + bytes(39) + bytes.fromhex("e5a1b2c3d4e5f607")
    v3 = bytes([0x1B]) + request[1:]
    ef = struct.pack("!HH", 0x2005, 32) + bytes(28)
    seeds = {
        f"signed_key{k.key_id}": b"\0" + request + mac_trailer(k, request) for k in h.KEYS
    }
    seeds |= {
        "signed_v3_md5": b"\0" + v3 + mac_trailer(h.KEYS[0], v3),
        "unknown_key": b"\0" + request + (99).to_bytes(4, "big") + bytes(16),
        "crypto_nak": b"\0" + request + bytes(4),
        "short_digest": b"\0" + request + (1).to_bytes(4, "big") + bytes(12),
        "ef_then_mac": b"\0" + request + ef + mac_trailer(h.KEYS[2], request + ef),
        "sign_md5": b"\x01" + request,
        "sign_sha1": b"\x03" + request,
        "sign_aes": b"\x05" + request + ef,
        "sign_untrusted": b"\x07" + request,
        "sign_flipped": b"\x09" + request,
        "notrust_plain": b"\x10" + request,
        "notrust_signed": b"\x11" + request,
        "symmetric_signed": b"\x01" + bytes([0x21]) + request[1:],
    }
    return seeds


def ntske() -> Seeds:
    def record(kind: int, body: bytes = b"", critical: bool = True) -> bytes:
        return struct.pack("!HH", kind | (0x8000 if critical else 0), len(body)) + body

    eom = record(0)
    request = record(1, b"\0\0") + record(4, b"\0\x0f") + eom
    cookies = b"".join(record(5, bytes([i]) * 100, False) for i in range(8))
    response = (record(1, b"\0\0") + record(4, b"\0\x0f") + cookies
                + record(6, b"ntp.example.org") + record(7, b"\x00\x7b") + eom)
    return {
        "request": b"\x00" + request,
        "request_bytewise": b"\x00" + request,  # step 1: one byte a read
        "request_chunks": b"\x0e" + request,
        "request_aeads": b"\x00" + record(1, b"\0\0") + record(4, b"\0\x1e\0\x0f\0\x10")
                         + eom,
        "request_unknown": b"\x00" + record(1, b"\0\0") + record(4, b"\0\x0f")
                           + record(0x4000, b"x", False) + record(7, b"\x10\x00") + eom,
        "request_critical_unknown": b"\x00" + request[:-4] + record(0x1234) + eom,
        "request_no_aead": b"\x00" + record(1, b"\0\0") + eom,
        "request_after_eom": b"\x00" + request + b"\0",
        "response": b"\x01" + response,
        "response_chunks": b"\x21" + response,
        "response_error": b"\x01" + record(2, b"\0\1") + eom,
        "response_refused": b"\x01" + record(1) + eom,
        "response_warning": b"\x01" + record(3, b"\0\0") + response,
    }


def nts() -> Seeds:
    """Recipes (FuzzedDataProvider input) that reach each outcome, found by random search
    with a fixed seed: a served request, a NAK, a client accepting a reply."""
    import atheris
    import fuzz_nts as h

    from pyntpd.proto import nts as n
    from pyntpd.proto.packet import decode

    rng = random.Random(8915)

    def outcome(data: bytes) -> str | None:
        fdp = atheris.FuzzedDataProvider(data)
        kind = fdp.ConsumeIntInRange(0, 3)
        if kind == 3:
            uid = bytes(range(n.UID_LENGTH))
            if not fdp.ConsumeBool():
                return None
            reply = h._reply(fdp, uid)
            try:
                packet = decode(reply)
            except ValueError:
                return None
            verdict = n.NtsSession(h.C2S, h.S2C, []).check_reply(reply, packet, uid)
            return None if verdict is n.ReplyCheck.BAD else f"client_{verdict.value}"
        if kind != 1:
            return None
        h.RESPONDER.respond(h._skeleton(fdp), 1, False, 123, 0, h.NOW)
        queued = h.RESPONDER.take_signed()
        return f"server_{type(queued[0]).__name__}" if queued else None

    seeds: Seeds = {}
    for _ in range(200_000):
        data = rng.randbytes(rng.choice((64, 256, 700)))
        got = outcome(data)
        if got is not None and sum(name.startswith(got) for name in seeds) < 3:
            seeds[f"{got}_{sum(name.startswith(got) for name in seeds)}"] = data
        if len(seeds) >= 12:
            break
    return seeds


BUILDERS: dict[str, Callable[[], Seeds]] = {
    "control": control, "control_client": control_client, "keys": keys,
    "statsformat": statsformat, "auth": auth, "ntske": ntske, "nts": nts,
}
NEEDS = {"nts": "pyntpd.proto.nts"}


def main(argv: list[str]) -> int:
    for name in argv or list(BUILDERS):
        module = NEEDS.get(name)
        if module and importlib.util.find_spec(module) is None:
            print(f"{name}: {module} is missing, seeds left as they are")
            continue
        seeds = BUILDERS[name]()
        directory = HERE / "corpus" / name
        directory.mkdir(parents=True, exist_ok=True)
        for seed_name, data in seeds.items():
            (directory / seed_name).write_bytes(data)
        print(f"{name}: {len(seeds)} seeds in {directory.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main(sys.argv[1:]))
