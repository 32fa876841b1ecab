"""Who may hold an NTS-KE session: the server's slots, shared fairly between networks.

A session costs the server a socket and memory while the client takes its time, and a TLS
handshake in CPU. The limits, each enforced at accept, before any TLS:

- at most `sessions` open at once (chrony: 100 per NTS-KE process), at most `per_network`
  from one /24 (IPv4) or /64 (IPv6: what one site is usually given), at most `per_address`
  from one address;
- at most `accepts_per_address` new sessions a second from one address, refused beyond that:
  a flood of handshakes from a few hosts costs them a TCP connection each and the server
  nothing. (Not per network: an attacker re-connecting as fast as it can would use up its
  network's allowance and so lock out every other host of its /24.)
- when a limit is reached, the new session does not wait for a slot: it takes the slot of the
  session in the same scope (address, then network, then all) that has kept the server
  waiting longest — the one whose client was heard from least recently (its handshake or
  request incomplete) — and that session is closed. A legitimate client answers each of the
  server's flights within a round trip, so it is never the longest silent for long; idle
  connections, and handshakes begun and abandoned by a flood, are. An attacker who re-opens
  dropped connections only ever displaces its own. Sessions already answered (their response
  being flushed) are never displaced; if a scope holds nothing else, the new one is refused.
- across networks (the `sessions` limit) a session is only displaced once its client has
  been silent for `min_silence`; until then newcomers are refused. Without this, a handshake
  flood from many networks turned every slot over in cap/rate (160 ms at 1,600 a second),
  and a legitimate client slower than that to answer a flight (a loaded machine, a long
  path) lost its slot mid-handshake: measured, 11 of 20 served. Within a network or an
  address the newcomer always wins: there a flood only hurts its own.

Pure: `now` (seconds, monotonic) is passed in; sessions are opaque hashable handles.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

S = TypeVar("S")

IPV4_NETWORK_BITS = 24
IPV6_NETWORK_BITS = 64
# One second's accept counts are kept; a second with more distinct sources than this starts
# over, so a spoofed-source SYN flood cannot grow the table (the TCP handshake makes that
# hard anyway, and a fresh count only errs towards admitting).
MAX_COUNTED_SOURCES = 65536


@dataclass(frozen=True, slots=True)
class SlotLimits:
    sessions: int = 256
    per_network: int = 32
    per_address: int = 8
    accepts_per_address: int = 16  # a second
    min_silence: float = 0.5  # s before another network's newcomer may displace a session


class Refusal(enum.StrEnum):
    """Why a connection got no session; each names a counter."""

    RATE = "refused_rate"  # its address is over the accept rate
    BUSY = "refused_busy"  # no session in its scope could be displaced


@dataclass(frozen=True, slots=True)
class Admission(Generic[S]):
    refused: Refusal | None = None
    evicted: S | None = None  # the session whose slot the new one took: close it

    @property
    def admitted(self) -> bool:
        return self.refused is None


Key = tuple[int, int]  # (IP version, address or network as an int)


def keys_of(address: str) -> tuple[Key, Key]:
    """(address key, network key) of an address string; ValueError if it is not one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    value = int(ip)
    bits = IPV6_NETWORK_BITS if ip.version == 6 else IPV4_NETWORK_BITS
    return (ip.version, value), (ip.version, value >> (ip.max_prefixlen - bits))


@dataclass(slots=True)
class _Slot:
    address: Key
    network: Key
    heard_at: float
    answered: bool = False


class KeSlots(Generic[S]):
    """The sessions held, by address and network; in every scope the one heard from least
    recently comes first."""

    def __init__(self, limits: SlotLimits | None = None) -> None:
        self.limits = limits or SlotLimits()
        self._slots: OrderedDict[S, _Slot] = OrderedDict()
        self._by_address: dict[Key, OrderedDict[S, None]] = {}
        self._by_network: dict[Key, OrderedDict[S, None]] = {}
        self._second = -1
        self._accepts: dict[Key, int] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, session: object) -> bool:
        return session in self._slots

    def held_by_network(self, address: str) -> int:
        return len(self._by_network.get(keys_of(address)[1], ()))

    def held_by_address(self, address: str) -> int:
        return len(self._by_address.get(keys_of(address)[0], ()))

    def admit(self, session: S, address: str, now: float) -> Admission[S]:
        """Give `session` (from `address`) a slot, or say why not. ValueError if `address`
        is not an IP address."""
        address_key, network_key = keys_of(address)
        if not self._accept_counted(address_key, now):
            return Admission(Refusal.RATE)
        limits = self.limits
        scope: Iterable[S] | None = None
        patience = 0.0
        if len(self._by_address.get(address_key, ())) >= limits.per_address:
            scope = self._by_address[address_key]
        elif len(self._by_network.get(network_key, ())) >= limits.per_network:
            scope = self._by_network[network_key]
        elif len(self._slots) >= limits.sessions:
            scope, patience = self._slots, limits.min_silence
        evicted = None
        if scope is not None:
            evicted = next((s for s in scope if not self._slots[s].answered), None)
            if evicted is None or now - self._slots[evicted].heard_at < patience:
                return Admission(Refusal.BUSY)
            self.release(evicted)
        self._slots[session] = _Slot(address_key, network_key, now)
        self._by_address.setdefault(address_key, OrderedDict())[session] = None
        self._by_network.setdefault(network_key, OrderedDict())[session] = None
        return Admission(evicted=evicted)

    def heard(self, session: S, now: float) -> None:
        """The client sent something: its session is the last to displace now."""
        slot = self._slots.get(session)
        if slot is not None and not slot.answered:
            slot.heard_at = now
            self._slots.move_to_end(session)
            self._by_address[slot.address].move_to_end(session)
            self._by_network[slot.network].move_to_end(session)

    def answered(self, session: S) -> None:
        """The session has its response: it keeps its slot until closed, but is no longer
        one to displace."""
        slot = self._slots.get(session)
        if slot is not None:
            slot.answered = True

    def release(self, session: S) -> None:
        """The session is closed (or displaced); unknown sessions are ignored."""
        slot = self._slots.pop(session, None)
        if slot is None:
            return
        for table, key in ((self._by_address, slot.address), (self._by_network, slot.network)):
            held = table[key]
            del held[session]
            if not held:
                del table[key]

    def _accept_counted(self, address: Key, now: float) -> bool:
        second = int(now)
        if second != self._second or len(self._accepts) >= MAX_COUNTED_SOURCES:
            self._second = second
            self._accepts.clear()
        count = self._accepts[address] = self._accepts.get(address, 0) + 1
        return count <= self.limits.accepts_per_address
