"""What a mode 6 request costs, counted in work done rather than time taken (issue 12 item 1).

A request reads only what it asks about: nothing at all when it is refused, the system
variables for readvar, one association for its id, and for mrulist one page of the MRU list,
read from where the client's last page ended. The state and the MRU list here count every
part asked for and every entry read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import pytest

from pyntpd.proto.access import NOQUERY
from pyntpd.proto.control import (
    MRU_PRIORS_LIMIT,
    MRU_ROW_LIMIT,
    MRU_SCAN_LIMIT,
    ControlResponder,
    ControlSnapshot,
    MruItem,
    MruRecord,
    Opcode,
    PeerInfo,
    SequenceMru,
    parse_text,
    reassemble,
)
from tests.proto.test_control import CLIENT, NOW, request, snapshot

BIG = 60_000  # the MRU list of `mru maxmem 32768`


def big_mru(n: int = BIG) -> tuple[MruItem, ...]:
    """n sources, oldest first; every tenth has sent 10 packets, the others 1."""
    return tuple(
        MruItem(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 123, NOW - 2 * n + i,
                NOW - n + i, 10 if i % 10 == 0 else 1, 0x23, 0)
        for i in range(n)
    )


class CountingMru:
    """An MruView that counts the entries it hands out."""

    def __init__(self, inner: SequenceMru) -> None:
        self.inner = inner
        self.read = 0
        self.lookups = 0

    def _count(self, record: MruRecord | None) -> MruRecord | None:
        self.read += record is not None
        return record

    def __len__(self) -> int:
        return len(self.inner)

    def oldest(self) -> MruRecord | None:
        return self._count(self.inner.oldest())

    def newest(self) -> MruRecord | None:
        return self._count(self.inner.newest())

    def newer(self, record: MruRecord) -> MruRecord | None:
        return self._count(self.inner.newer(record))

    def older(self, record: MruRecord) -> MruRecord | None:
        return self._count(self.inner.older(record))

    def find(self, address_text: str) -> MruRecord | None:
        self.lookups += 1
        return self.inner.find(address_text)

    def address_text(self, record: MruRecord) -> str:
        return self.inner.address_text(record)

    def stamp(self, seconds: float) -> int:
        return self.inner.stamp(seconds)


class CountingState:
    """A ControlState over a snapshot that counts what the responder asks for."""

    def __init__(self, snap: ControlSnapshot) -> None:
        self.snap = snap
        self.asked: Counter[str] = Counter()
        self.view: CountingMru | None = None

    @property
    def leap(self) -> int:
        return self.snap.leap

    def system_snapshot(self) -> ControlSnapshot:
        self.asked["system"] += 1
        return self.snap

    def associations(self) -> Sequence[PeerInfo]:
        self.asked["associations"] += 1
        return self.snap.peers

    def association(self, associd: int) -> PeerInfo | None:
        self.asked["association"] += 1
        return self.snap.association(associd)

    def mru_view(self, now: float) -> CountingMru:
        self.asked["mru"] += 1
        if self.view is None:
            self.view = CountingMru(self.snap.mru_view(now))
        return self.view

    def named_variables(self, names: Sequence[str]) -> Mapping[str, str]:
        self.asked["named"] += 1
        self.named_asked = list(names)
        return self.snap.named_variables(names)


@pytest.fixture(scope="module")
def big_snapshot() -> ControlSnapshot:
    return snapshot(mru=big_mru())


def state_for(snap: ControlSnapshot) -> CountingState:
    return CountingState(snap)


def ask(state: CountingState, data: bytes, flags: int = 0,
        resp: ControlResponder | None = None) -> list[bytes]:
    return (resp or ControlResponder(b"cost")).respond(data, CLIENT, flags, NOW, state)


def values(fragments: list[bytes]) -> dict[str, str | None]:
    return dict(parse_text(reassemble(fragments)[1]))


def rows(page: dict[str, str | None]) -> list[str]:
    out, index = [], 0
    while f"addr.{index}" in page:
        out.append(str(page[f"addr.{index}"]))
        index += 1
    return out


# --- refused requests build nothing ----------------------------------------------------------


@pytest.mark.parametrize("garbage", [
    b"\x16\x02\x00\x01" + bytes(8) + b"\xff" * 40,
    bytes(12),
    b"\x16\x82" + bytes(10),
    b"\x16",
], ids=["count-beyond-the-datagram", "mode-0", "response-bit", "too-short"])
def test_a_malformed_request_asks_the_state_for_nothing(big_snapshot: ControlSnapshot,
                                                        garbage: bytes) -> None:
    state = state_for(big_snapshot)
    assert ask(state, garbage) == []
    assert state.asked == Counter()


def test_a_noquery_source_asks_the_state_for_nothing(big_snapshot: ControlSnapshot) -> None:
    state = state_for(big_snapshot)
    assert ask(state, request(Opcode.READVAR), flags=NOQUERY) == []
    assert state.asked == Counter()


def test_a_bad_mac_asks_the_state_for_nothing(big_snapshot: ControlSnapshot) -> None:
    state = state_for(big_snapshot)
    signed = request(Opcode.READVAR, b"stratum") + bytes(4) + (5).to_bytes(4, "big") + bytes(20)
    assert ask(state, signed) == []
    assert state.asked == Counter()


def test_a_write_is_refused_without_asking_for_the_system_variables(
        big_snapshot: ControlSnapshot) -> None:
    state = state_for(big_snapshot)
    assert ask(state, request(Opcode.WRITEVAR, b"leap=1"))
    assert state.asked == Counter()


# --- each request reads what it asks about ---------------------------------------------------


def test_readvar_reads_the_system_variables_alone(big_snapshot: ControlSnapshot) -> None:
    state = state_for(big_snapshot)
    assert values(ask(state, request(Opcode.READVAR)))["stratum"] == "3"
    assert state.asked == Counter(system=1)


def test_readvar_of_an_association_reads_that_association_alone(
        big_snapshot: ControlSnapshot) -> None:
    state = state_for(big_snapshot)
    assert values(ask(state, request(Opcode.READVAR, associd=103)))["srcadr"] == "192.0.2.3"
    assert state.asked == Counter(association=1)


def test_readvar_of_listed_names_computes_no_variable_given_only_by_name() -> None:
    state = state_for(snapshot(named={"ss_uptime": "42"}))
    assert values(ask(state, request(Opcode.READVAR, b"stratum,offset")))["stratum"] == "3"
    assert values(ask(state, request(Opcode.READVAR)))["stratum"] == "3"
    assert state.asked["named"] == 0


def test_readvar_asks_for_the_variables_given_only_by_name_that_it_names() -> None:
    # ntpq's sysstats: the daemon computes those groups, and only for these names.
    state = state_for(snapshot(named={"ss_uptime": "42", "mru_depth": "7"}))
    got = values(ask(state, request(Opcode.READVAR, b"stratum,ss_uptime")))
    assert got == {"stratum": "3", "ss_uptime": "42"}
    assert state.asked == Counter(system=1, named=1) and state.named_asked == ["ss_uptime"]


def test_readstat_reads_the_associations_and_not_the_mru_list(
        big_snapshot: ControlSnapshot) -> None:
    state = state_for(big_snapshot)
    assert ask(state, request(Opcode.READSTAT))
    assert state.asked == Counter(associations=1, system=1)


def test_a_nonce_request_does_not_read_the_mru_list(big_snapshot: ControlSnapshot) -> None:
    state = state_for(big_snapshot)
    assert "nonce" in values(ask(state, request(Opcode.REQ_NONCE)))
    assert state.asked["mru"] == 0


# --- mrulist: one page of reading per reply ---------------------------------------------------


def mru_request(resp: ControlResponder, body: str) -> bytes:
    nonce = resp.make_nonce(CLIENT, NOW)
    return request(Opcode.READ_MRU, f"nonce={nonce}, {body}".encode())


def test_the_first_mrulist_page_reads_only_the_entries_it_sends(
        big_snapshot: ControlSnapshot) -> None:
    resp, state = ControlResponder(b"cost"), state_for(big_snapshot)
    page = values(ask(state, mru_request(resp, "frags=4"), resp=resp))
    sent = rows(page)
    assert sent[0] == "10.0.0.0:123" and "now" not in page
    assert state.view is not None
    # The entries sent, the one that did not fit, and the one after it.
    assert state.view.read <= len(sent) + 2


def test_a_continuation_page_starts_after_the_named_entry_without_reading_up_to_it(
        big_snapshot: ControlSnapshot) -> None:
    resp, state = ControlResponder(b"cost"), state_for(big_snapshot)
    named = big_snapshot.mru[BIG // 2]
    last = big_snapshot.mru_view(NOW).stamp(named.last)
    stamp = f"0x{last >> 32:08x}.{last & 0xFFFFFFFF:08x}"
    body = f"frags=4, addr.0={named.address_text}, last.0={stamp}"
    sent = rows(values(ask(state, mru_request(resp, body), resp=resp)))
    assert sent[0] == big_snapshot.mru[BIG // 2 + 1].address_text
    assert state.view is not None
    assert state.view.lookups == 1 and state.view.read <= len(sent) + 2


def test_a_page_reads_at_most_its_row_limit_whatever_frags_asks_for(
        big_snapshot: ControlSnapshot) -> None:
    resp, state = ControlResponder(b"cost"), state_for(big_snapshot)
    sent = rows(values(ask(state, mru_request(resp, "frags=128, limit=100000"), resp=resp)))
    assert len(sent) == MRU_ROW_LIMIT
    assert state.view is not None and state.view.read <= MRU_ROW_LIMIT + 2


def test_a_filter_that_matches_nothing_reads_at_most_the_scan_limit(
        big_snapshot: ControlSnapshot) -> None:
    resp, state = ControlResponder(b"cost"), state_for(big_snapshot)
    page = values(ask(state, mru_request(resp, "frags=4, mincount=1000"), resp=resp))
    assert state.view is not None and state.view.read <= MRU_SCAN_LIMIT + 2
    # Not complete (no now=): the page ends with the last entry read, to resume after.
    assert "now" not in page and rows(page) == [big_snapshot.mru[MRU_SCAN_LIMIT - 1].address_text]


def test_recent_counts_back_at_most_the_scan_limit(big_snapshot: ControlSnapshot) -> None:
    resp, state = ControlResponder(b"cost"), state_for(big_snapshot)
    sent = rows(values(ask(state, mru_request(resp, "frags=4, recent=50000"), resp=resp)))
    assert sent[0] == big_snapshot.mru[BIG - MRU_SCAN_LIMIT].address_text
    assert state.view is not None and state.view.read <= MRU_SCAN_LIMIT + len(sent) + 2


def test_a_continuation_looks_up_at_most_the_priors_limit(big_snapshot: ControlSnapshot) -> None:
    resp, state = ControlResponder(b"cost"), state_for(big_snapshot)
    names = ",".join(f"addr.{i}=x" for i in range(30))  # none of them an entry
    [error] = ask(state, mru_request(resp, f"frags=4, {names}"), resp=resp)
    assert state.view is not None and state.view.lookups == MRU_PRIORS_LIMIT
    assert error[1] & 0x40  # unknown: ntpq starts over


# --- paging through the whole list -----------------------------------------------------------


def fetch_all(snap: ControlSnapshot, body: str, max_pages: int = 10_000) -> tuple[list[str], int]:
    """What a client assembles paging to the end (each page resuming after the newest entry
    it has): every entry's address in order, and the pages it took."""
    resp, state = ControlResponder(b"cost"), state_for(snap)  # one view: the list stays put
    got: list[str] = []
    named = ""
    for page_count in range(1, max_pages + 1):
        page = values(ask(state, mru_request(resp, body + named), resp=resp))
        sent = rows(page)
        got += sent
        if "now" in page:
            return got, page_count
        newest = len(sent) - 1
        named = f", addr.0={page[f'addr.{newest}']}, last.0={page[f'last.{newest}']}"
    raise AssertionError("the list never completed")


def test_paging_reads_every_entry_once_in_order() -> None:
    snap = snapshot(mru=big_mru(5000))
    got, pages = fetch_all(snap, "frags=16")
    assert got == [item.address_text for item in snap.mru]
    assert pages <= 5000 // 50


def test_paging_with_a_sparse_filter_completes_with_every_match() -> None:
    snap = snapshot(mru=big_mru(5 * MRU_SCAN_LIMIT))
    got, _ = fetch_all(snap, "frags=16, mincount=10")
    matches = [item.address_text for item in snap.mru if item.count >= 10]
    # Every match, in order; a page that read its limit without a match ends with the last
    # entry read instead (here: none, as every tenth entry matches).
    assert got == matches


def test_paging_with_a_filter_that_matches_nothing_still_completes() -> None:
    snap = snapshot(mru=big_mru(3 * MRU_SCAN_LIMIT + 5))
    got, pages = fetch_all(snap, "frags=4, mincount=1000")
    assert pages == 4 and len(got) == 3  # one resume point per page read to its limit
