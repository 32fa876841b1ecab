"""Advisories against ntpd's server side, sent at a real pyntpd process.

Each test sends the attack's shape, asserts the safe outcome -- no answer and the drop counted
under its reason in the daemon's JSON status, or the specific mode 6 error -- and then checks
that the daemon still serves time: a refused attack that took the daemon down would still be a
denial of service. Each test fails when the check it names is removed (tests/mutation).
"""

from __future__ import annotations

import socket
import struct
import time
from collections import Counter

import pytest

from pyntpd.proto.control import (
    CERR_BADASSOC,
    CERR_BADVALUE,
    CERR_PERMISSION,
    HEADER_LEN,
    MORE,
    ControlHeader,
    Opcode,
    decode,
    encode,
)
from pyntpd.proto.packet import HEADER, MAX_PACKET_LEN, li_vn_mode
from tests.support import LOCAL_CONF, Pyntpd, client_request, config_file, exchange, query


def control(opcode: int, data: bytes = b"", associd: int = 0, sequence: int = 1) -> bytes:
    return encode(ControlHeader(version=2, opcode=opcode, sequence=sequence, associd=associd),
                  data)


def replies(port: int, datagram: bytes, wait: float = 0.5, mode: int | None = 6) -> list[bytes]:
    """What the daemon sends back within `wait` seconds (bounded): datagrams of `mode` (any
    mode if None), up to a mode 6 answer's last fragment. Other datagrams are ignored: on a
    shared machine a stray reply to someone else's spoofed flood can reach any loopback port."""
    got: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        s.sendto(datagram, ("127.0.0.1", port))
        for _ in range(1000):
            try:
                data, peer = s.recvfrom(4096)
            except TimeoutError:
                break
            if peer == ("127.0.0.1", port) and data and mode in (None, data[0] & 7):
                got.append(data)
                if data[0] & 7 == 6 and not (len(data) > 1 and data[1] & MORE):
                    break
    return got


def drops(d: Pyntpd) -> Counter[str]:
    """The daemon's drop counters: time requests' and mode 6 requests' reasons."""
    server = d.status()["server"]
    return Counter({**server["dropped"], **server["control_dropped"]})


def moved(d: Pyntpd, before: Counter[str], expected: dict[str, int],
          timeout: float = 2.0) -> Counter[str]:
    """The drop counters that moved since `before`, once as many drops as `expected` has
    are counted, whatever their reasons (the datagrams sent last may still be queued in
    the daemon; bounded by `timeout` s)."""
    deadline = time.monotonic() + timeout
    while (sum((now := drops(d) - before).values()) < sum(expected.values())
           and time.monotonic() < deadline):
        time.sleep(0.02)
    return now


def error_code(reply: bytes) -> int | None:
    """The mode 6 error code of an answer, None if it is no error."""
    header, _ = decode(reply)
    return header.status >> 8 if header.error else None


def associations(port: int) -> list[int]:
    (reply,) = replies(port, control(Opcode.READSTAT), wait=1.0)
    _, data = decode(reply)
    return [struct.unpack_from("!H", data, i)[0] for i in range(0, len(data), 4)]


@pytest.fixture(scope="module")
def daemon():
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf, status=True) as d:
        yield d


def still_serving(d: Pyntpd) -> None:
    assert d.proc is not None and d.proc.poll() is None, d.output()
    assert query(d.port).header.stratum == 11


def test_cve_2013_5211_monlist_is_never_answered(daemon: Pyntpd) -> None:
    """ntpd's mode 7 MON_GETLIST answered a 234-byte request with up to 100 packets of
    clients: the amplifier of the 2014 DDoS wave. pyntpd does not speak mode 7 at all."""
    monlist = bytes([0x17, 0x00, 0x03, 0x2A])
    before = drops(daemon)
    # The scanners' 8 bytes, a header's 48 and ntpdc's 192: mode 7 whatever its length.
    for padding in (4, 44, 188):
        assert replies(daemon.port, monlist + bytes(padding), mode=None) == []
    assert moved(daemon, before, {"mode7": 3}) == {"mode7": 3}
    still_serving(daemon)


def test_cve_2016_1549_symmetric_active_packets_create_no_association(daemon: Pyntpd) -> None:
    """Unauthenticated mode 1 packets made ntpd mobilise ephemeral peers (Sybil attack)."""
    before = associations(daemon.port)
    dropped = drops(daemon)
    for i in range(20):
        packet = HEADER.pack(li_vn_mode(0, 4, 1), 2, 6, -20, 0, 0, b"GPS\0", 0, 0, 0, i + 1)
        assert replies(daemon.port, packet, wait=0.1, mode=None) == []  # no mode 2, no 4
    assert moved(daemon, dropped, {"not_a_request": 20}) == {"not_a_request": 20}
    assert associations(daemon.port) == before
    still_serving(daemon)


# What each refusal looks like: dropped (a reason counted, nothing sent) or a mode 6 error.
BAD_NONCE = ("control_bad_nonce", None)
BAD_VALUE = (None, CERR_BADVALUE)


@pytest.mark.parametrize("data, refusal", [
    (b"nonce=", BAD_NONCE),  # CVE-2016-7434: ntpd dereferenced a missing nonce value
    (b"nonce", BAD_VALUE),
    (b"frags=99999999, nonce=00000000", BAD_NONCE),
    (b"limit=-1, mincount=-5, laddr=300.1.1.1, nonce=zz", BAD_NONCE),
    (b"addr.0=garbage, last.0=0x, nonce=" + b"f" * 400, BAD_NONCE),
    (bytes(range(256))[:400], BAD_VALUE),
], ids=["empty-nonce", "bare-nonce", "huge-frags", "bad-values", "bad-continuation", "binary"])
def test_cve_2016_7434_malformed_mrulist_requests_are_refused(
    daemon: Pyntpd, data: bytes, refusal: tuple[str | None, int | None]
) -> None:
    assert_refused(daemon, control(Opcode.READ_MRU, data), refusal)
    still_serving(daemon)


def assert_refused(d: Pyntpd, datagram: bytes, refusal: tuple[str | None, int | None]) -> None:
    """`datagram` is dropped under the reason named (and nothing comes back), or answered
    with exactly one error of the code named (and nothing is counted as dropped)."""
    reason, code = refusal
    before = drops(d)
    got = replies(d.port, datagram)
    if reason is not None:
        assert got == []
        assert moved(d, before, {reason: 1}) == {reason: 1}
    else:
        assert [error_code(reply) for reply in got] == [code]
        assert drops(d) - before == {}


@pytest.mark.parametrize("opcode", [Opcode.SETTRAP, Opcode.UNSETTRAP, Opcode.ASYNCMSG])
def test_cve_2016_9310_traps_cannot_be_set(daemon: Pyntpd, opcode: int) -> None:
    """ntpd let anyone register a trap (CVE-2016-9310) and crashed on trap handling
    (CVE-2016-9311): pyntpd refuses every trap opcode and never sends an asynchronous message."""
    got = replies(daemon.port, control(opcode, b"127.0.0.1"), wait=1.0)
    assert [(error_code(reply), decode(reply)[0].opcode) for reply in got] == [
        (CERR_PERMISSION, opcode)]
    still_serving(daemon)


@pytest.mark.parametrize("datagram, refusal", [
    (control(Opcode.READVAR)[:11], ("control_too_short", None)),  # truncated header
    (ControlHeader(version=2, opcode=Opcode.READVAR, sequence=1, count=468).pack(),
     ("control_bad_count", None)),  # count > data
    (ControlHeader(version=2, opcode=Opcode.READVAR, sequence=1, offset=65000).pack(),
     ("control_nonzero_offset", None)),
    (ControlHeader(version=2, opcode=Opcode.READVAR, sequence=1, count=0xFFFF).pack() + bytes(8),
     ("control_bad_count", None)),
    (ControlHeader(version=0, opcode=Opcode.READVAR, sequence=1).pack(),
     ("control_bad_version", None)),
    # Zero padding after the data is accepted, however long, as ntpd does (ntpstat pads a
    # READVAR to 576 bytes): what is refused is a datagram longer than any the daemon reads,
    # and anything but zeros after the data that is longer than a MAC.
    (control(Opcode.READVAR) + bytes(MAX_PACKET_LEN + 1 - HEADER_LEN),
     ("control_too_long", None)),
    (control(Opcode.READVAR) + bytes(1300), ("too_long", None)),  # beyond the receive buffer
    (control(Opcode.READVAR) + b"\1" * 100, ("control_bad_trailer", None)),  # not a MAC
    (control(Opcode.READVAR, associd=0xFFFF), (None, CERR_BADASSOC)),  # no such association
], ids=["truncated", "count-beyond-data", "offset", "count-65535", "version-0", "too-long",
        "truncated-by-the-kernel", "long-trailer", "bad-associd"])
def test_cve_2015_7855_mode_6_lengths_and_offsets_are_checked(
    daemon: Pyntpd, datagram: bytes, refusal: tuple[str | None, int | None]
) -> None:
    """ntpd asserted (and died) on a mode 6 request with an unusual data length (CVE-2015-7855);
    pyntpd drops malformed requests (counted by reason) or answers with an error, nothing more."""
    assert_refused(daemon, datagram, refusal)
    still_serving(daemon)


@pytest.mark.parametrize("opcode, data", [
    (Opcode.CONFIGURE, b"server 127.0.0.2 iburst"),
    (Opcode.CONFIGURE, b"driftfile /etc/passwd"),  # CVE-2015-7703
    (Opcode.SAVECONFIG, b"../../../../tmp/pyntpd-saveconfig-traversal"),  # CVE-2015-7851
    (Opcode.WRITEVAR, b"leap=3"),
], ids=["config-server", "config-driftfile", "saveconfig-traversal", "writevar"])
def test_cve_2015_7851_remote_configuration_is_refused(
    daemon: Pyntpd, opcode: int, data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """ntpd's `:config` and `saveconfig` over mode 6 led to a directory traversal
    (CVE-2015-7851), a crash on a bad config line (CVE-2015-7850) and a driftfile overwrite
    (CVE-2015-7703). pyntpd has no remote configuration: every write is refused."""
    before = associations(daemon.port)
    got = replies(daemon.port, control(opcode, data), wait=1.0)
    assert [error_code(reply) for reply in got] == [CERR_PERMISSION]
    assert associations(daemon.port) == before
    assert not any(p.name.startswith("pyntpd-saveconfig") for p in
                   tmp_path_factory.getbasetemp().parent.parent.iterdir())
    still_serving(daemon)


def test_unanswered_garbage_is_counted_not_fatal(daemon: Pyntpd) -> None:
    before = drops(daemon)
    for datagram in (
        b"", b"\x00", bytes(47),  # shorter than a header
        b"\xff" * 49,  # mode 7
        client_request()[:40] + b"\x00" * 30,  # 22 bytes after the header: no field, no MAC
    ):
        assert exchange(daemon.port, datagram, timeout=0.1) is None
    expected = {"too_short": 3, "mode7": 1, "bad_trailer": 1}
    assert moved(daemon, before, expected) == expected
    still_serving(daemon)
