"""The daemon's mode 6 service (daemon/mode6.py) against a live MRU list: a request costs what
it asks for, never the list's length, and mrulist pages through the list across requests.

The MRU list here counts every entry read from it; requests go through ControlService.answer
as the serving path hands them over, on a fake clock and a fake socket.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyntpd.daemon.mode6 import ControlService
from pyntpd.proto.access import Access, MonEntry, MruLimits, RestrictTable
from pyntpd.proto.control import (
    MRU_ROW_LIMIT,
    ControlHeader,
    ControlResponder,
    Opcode,
    encode,
    parse_text,
    reassemble,
)
from pyntpd.proto.server import Responder

T0 = 1_800_000_000  # Unix seconds: the daemon's `now` is Unix time
CLIENT = 0x7F000002  # 127.0.0.2, the querying client
BIG = 60_000


class CountingAccess(Access):
    """An Access whose MRU list counts the entries read from it, however they are read."""

    read = 0

    def entries(self) -> Iterator[tuple[int, MonEntry]]:
        for item in super().entries():
            self.read += 1
            yield item

    def _count(self, entry: MonEntry | None) -> MonEntry | None:
        self.read += entry is not None
        return entry

    def oldest(self) -> MonEntry | None:
        return self._count(super().oldest())

    def newest(self) -> MonEntry | None:
        return self._count(super().newest())

    def newer(self, entry: MonEntry) -> MonEntry | None:
        return self._count(super().newer(entry))

    def older(self, entry: MonEntry) -> MonEntry | None:
        return self._count(super().older(entry))


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, address: object) -> int:
        self.sent.append(data)
        return len(data)


class Daemon:
    """A ControlService over an MRU list of `sources` sources (10.x.y.z, one a millisecond
    apart at Unix times, as the kernel stamps them), without a synchroniser."""

    def __init__(self, sources: int) -> None:
        self.access = CountingAccess(RestrictTable(), mru=MruLimits(max_entries=sources + 10))
        for i in range(sources):
            self.access.check((10 << 24) + i, False, 123, T0 - 100 + i * 0.001 + 1e-7, 0x23)
        self.responder = Responder(self.access)
        self.now_ns = T0 * 10**9
        self.service = ControlService(self.responder, lambda: None, lambda: self.now_ns)
        self.service.control = ControlResponder(b"test secret")
        self.access.read = 0

    def ask(self, data: bytes) -> list[bytes]:
        """One request from CLIENT, answered as the serving path does after a batch; the
        clock moves on by a little over a millisecond, as between two real requests."""
        self.now_ns += 1_234_567
        self.responder.control_queue.append((data, CLIENT, False, 40000, 0))
        sock = FakeSocket()
        self.service.answer(sock)  # type: ignore[arg-type]
        return sock.sent

    def nonce(self) -> str:
        return self.service.control.make_nonce(CLIENT, self.now_ns / 1e9)


def request(opcode: int, data: bytes = b"", associd: int = 0) -> bytes:
    return encode(ControlHeader(version=2, opcode=opcode, sequence=1, associd=associd), data)


def values(fragments: list[bytes]) -> dict[str, str | None]:
    return dict(parse_text(reassemble(fragments)[1]))


def page_rows(page: dict[str, str | None]) -> list[str]:
    out, index = [], 0
    while f"addr.{index}" in page:
        out.append(str(page[f"addr.{index}"]))
        index += 1
    return out


@pytest.fixture(scope="module")
def big() -> Daemon:
    return Daemon(BIG)


REQUESTS = {
    "garbage": bytes(12),
    "truncated": b"\x16\x02\x00\x01\x00\x00\x00\x00\x00\x00\x01\x00",
    "readstat": request(Opcode.READSTAT),
    "readvar": request(Opcode.READVAR),
    "readvar-unknown-association": request(Opcode.READVAR, associd=7),
    "nonce": request(Opcode.REQ_NONCE),
    "sysstats-iostats-authinfo-sysinfo": request(
        Opcode.READVAR, b"ss_uptime,ss_received,io_received,authkeys,peeradr,rootdist"),
    "write": request(Opcode.WRITEVAR, b"leap=1"),
}


@pytest.mark.parametrize("data", REQUESTS.values(), ids=REQUESTS.keys())
def test_a_request_other_than_mrulist_reads_no_mru_entry(big: Daemon, data: bytes) -> None:
    big.access.read = 0
    big.ask(data)
    assert big.access.read == 0


def test_monstats_reads_only_the_oldest_entry_of_the_mru_list(big: Daemon) -> None:
    big.access.read = 0
    got = values(big.ask(request(Opcode.READVAR, b"mru_depth,mru_oldest_age")))
    assert got["mru_depth"] == str(BIG) and got["mru_oldest_age"] == "100"
    assert big.access.read == 1


def test_an_mrulist_page_reads_at_most_its_row_limit(big: Daemon) -> None:
    big.access.read = 0
    body = f"nonce={big.nonce()}, frags=128, limit={MRU_ROW_LIMIT}"
    page = values(big.ask(request(Opcode.READ_MRU, body.encode())))
    assert len(page_rows(page)) == MRU_ROW_LIMIT
    assert big.access.read <= MRU_ROW_LIMIT + 2


def test_mrulist_pages_through_the_whole_list_across_requests() -> None:
    # Each request comes at another time: an entry's `last` must read the same in every
    # answer, or the entry a client names to resume from is never found again.
    daemon = Daemon(3000)
    got: list[str] = []
    named = ""
    for _ in range(200):
        body = f"nonce={daemon.nonce()}, frags=16{named}"
        page = values(daemon.ask(request(Opcode.READ_MRU, body.encode())))
        rows = page_rows(page)
        assert rows, f"an error or an empty page: {page}"
        got += rows
        if "now" in page:
            break
        n = len(rows) - 1
        named = f", addr.0={page[f'addr.{n}']}, last.0={page[f'last.{n}']}"
    assert got == [f"10.0.{i >> 8}.{i & 255}:123" for i in range(3000)]


SMALL = Daemon(50)  # one list for every example: each asks for a fresh nonce


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["addr.0=", "last.0=", "addr.1=", "last.1=", "mincount=",
                                 "resany=", "resall=", "maxlstint=", "recent=", "limit=",
                                 "frags=", "10.0.0.5:123", "[::1]:1", "0x", "ffffffff.",
                                 "00000000", ",", " ", "1", "-", "[", "]", ":", "\xff"]),
                max_size=40))
def test_any_mrulist_body_gets_an_answer_or_an_error_never_an_exception(parts: list[str]) -> None:
    daemon = SMALL
    body = f"nonce={daemon.nonce()}, " + "".join(parts)
    fragments = daemon.ask(request(Opcode.READ_MRU, body.encode("latin-1")[:400]))
    assert fragments  # the nonce is good: a page or an error, always an answer
    reassemble(fragments)

