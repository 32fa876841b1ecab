"""The restrict engine: ntpd's access table, and rate limiting on a bounded MRU list.

Semantics follow ntp_acc(5) of ntpd 4.2.8:
- the most specific matching rule wins (longest prefix; `ntpport` rules rank above others of
  the same prefix and match only packets from source port 123); a source that matches no
  rule is unrestricted;
- every packet is accounted in the MRU ("monitor") list, ntpd's leaky bucket per source:
  a packet arriving sooner than `discard minimum` after the previous one, or while the
  bucket is over 8 average headways, is over the limit; `limited` turns that into a drop,
  `kod` additionally into a RATE kiss — itself rate-limited, so a flood cannot be reflected.

The MRU list never holds more than `max_entries` sources: when full, the least recently seen
source is recycled, so a flood from millions of spoofed addresses costs constant memory
(ntpd's `mru maxdepth`/`maxmem`). Like ntpd's, it is a doubly linked list through the entries
(plus a dict by address): mrulist reads it page by page, resuming after the entry a client
named, which needs the neighbours of an entry rather than a walk from either end.

Flags are plain ints on the hot path (enum.Flag arithmetic costs microseconds per packet).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pyntpd.proto.access_types import RestrictFlag, RestrictRule

IGNORE = RestrictFlag.IGNORE.value
KOD = RestrictFlag.KOD.value
LIMITED = RestrictFlag.LIMITED.value
NOPEER = RestrictFlag.NOPEER.value
NOQUERY = RestrictFlag.NOQUERY.value
NOSERVE = RestrictFlag.NOSERVE.value
NOTRUST = RestrictFlag.NOTRUST.value
NTPPORT = RestrictFlag.NTPPORT.value
VERSION = RestrictFlag.VERSION.value
NOMRULIST = RestrictFlag.NOMRULIST.value
MSSNTP = RestrictFlag.MSSNTP.value

# Set on the result of `Access.check`, never in a rule: the source is over its rate.
OVER_RATE = 1 << 30
# Set alongside OVER_RATE when a KoD may be sent: the first excess packet of a burst gets a
# kiss, the following ones (while the bucket stays over the limit) get nothing, so KoDs
# themselves are rate-limited.
KOD_ALLOWED = 1 << 31

NTP_PORT = 123
_V6_TAG = 1 << 128  # keeps IPv6 keys apart from IPv4 ones in one dict
_CACHE_LIMIT = 4096

# Bytes one monitored source costs us, used to turn ntpd's `mru maxmem` (KiB) into an entry
# bound: the entry object with its own floats and ints (first, last, leak, port: ~225 bytes)
# plus its key and its share of the dict, whose table is sized for the churn of
# recycling (2 to 4 slots per live entry, and both tables alive while it resizes).
# tracemalloc on CPython 3.11, sources sending two requests each, 600 to 180k entries
# (tests/proto/test_access_memory.py): 310-425 bytes held, up to 457 while resizing
# (measured with an OrderedDict; the dict plus the entries' own links cost no more).
# (The restrict lookup cache is apart from this: at most _CACHE_LIMIT sources, ~300 KiB.)
MRU_ENTRY_BYTES = 464


def address_key(address: int, is_v6: bool) -> int:
    return address | _V6_TAG if is_v6 else address


@dataclass(frozen=True, slots=True)
class RateLimits:
    """ntpd's `discard` settings."""

    average: int = 3  # log2 seconds: the long-run mean headway a client may use
    minimum: float = 2.0  # seconds: the shortest headway between two packets


@dataclass(frozen=True, slots=True)
class MruLimits:
    """ntpd's `mru` settings, reduced to what bounds memory and recycling."""

    max_entries: int = 1024 * 1024 // MRU_ENTRY_BYTES  # ntpd's default maxmem, 1 MiB
    min_depth: int = 600
    max_age: float = 64.0

    @classmethod
    def from_maxmem(cls, maxmem_kib: int, **kwargs: float) -> MruLimits:
        return cls(max_entries=max(1, maxmem_kib * 1024 // MRU_ENTRY_BYTES), **kwargs)


class MonEntry:
    """One source in the MRU list (also what `mrulist` reports). `older`/`newer` link it into
    the list, whose ends meet at a sentinel entry (Access._head)."""

    __slots__ = ("count", "first", "flags", "key", "last", "leak", "mode_version", "newer",
                 "older", "port")

    def __init__(self, now: float, port: int, key: int = -1) -> None:
        self.first = now
        self.last = now
        self.count = 0
        self.leak = 0.0
        self.port = port
        self.mode_version = 0
        self.flags = 0
        self.key = key
        self.older: MonEntry = self
        self.newer: MonEntry = self


class _Table:
    """Rules of one address family, grouped by prefix length for longest-match lookup.

    ntpd also takes masks that are not prefixes. Its own order (restrict entries sorted by
    address, then mask, then ntpport, descending; the first match wins) is the longest match
    for prefix masks; once the table holds a non-prefix mask, lookups walk that order."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        # prefix length -> {network int: (flags, ntpport flags or None)}
        self.by_prefix: dict[int, dict[int, list[int | None]]] = {}
        self.prefixes: list[int] = []
        # non-prefix masks: (address & mask, mask) -> slot
        self.masked: dict[tuple[int, int], list[int | None]] = {}
        self._ordered: list[tuple[int, int, list[int | None]]] | None = None

    @staticmethod
    def _merge(slot: list[int | None], flags: int) -> None:
        # Repeated lines for the same network add their flags together, as ntpd's do.
        index = 1 if flags & NTPPORT else 0
        slot[index] = (slot[index] or 0) | flags

    def add(self, network: int, prefix: int, flags: int) -> None:
        self._merge(self.by_prefix.setdefault(prefix, {}).setdefault(network, [None, None]),
                    flags)
        self.prefixes = sorted(self.by_prefix, reverse=True)
        self._ordered = None

    def add_masked(self, network: int, mask: int, flags: int) -> None:
        self._merge(self.masked.setdefault((network & mask, mask), [None, None]), flags)
        self._ordered = None

    def lookup(self, address: int, port: int) -> int:
        if self.masked:
            return self._lookup_ordered(address, port)
        bits = self.bits
        for prefix in self.prefixes:
            shift = bits - prefix
            slot = self.by_prefix[prefix].get((address >> shift) << shift)
            if slot is None:
                continue
            if port == NTP_PORT and slot[1] is not None:
                return slot[1]
            if slot[0] is not None:
                return slot[0]
        return 0

    def _lookup_ordered(self, address: int, port: int) -> int:
        if self._ordered is None:
            full = (1 << self.bits) - 1
            entries = [(net, full ^ ((1 << (self.bits - prefix)) - 1), slot)
                       for prefix, nets in self.by_prefix.items() for net, slot in nets.items()]
            entries += [(net, mask, slot) for (net, mask), slot in self.masked.items()]
            self._ordered = sorted(entries, key=lambda e: (e[0], e[1]), reverse=True)
        for net, mask, slot in self._ordered:
            if address & mask != net:
                continue
            if port == NTP_PORT and slot[1] is not None:
                return slot[1]
            if slot[0] is not None:
                return slot[0]
        return 0


class RestrictTable:
    """Immutable once built: a reload builds a new table and swaps it in."""

    def __init__(self, rules: Iterable[RestrictRule] = ()) -> None:
        self._v4 = _Table(32)
        self._v6 = _Table(128)
        self.rules = tuple(rules)
        for rule in self.rules:
            if rule.network is None:
                continue  # `restrict source` is a template, applied per association
            table = self._v6 if rule.network.version == 6 else self._v4
            if rule.mask is not None:
                table.add_masked(int(rule.network.network_address), rule.mask, rule.flags.value)
            else:
                table.add(int(rule.network.network_address), rule.network.prefixlen,
                          rule.flags.value)
        self.source_template: int | None = next(
            (r.flags.value for r in self.rules if r.network is None), None
        )

    def lookup(self, address: int, is_v6: bool, port: int) -> int:
        return (self._v6 if is_v6 else self._v4).lookup(address, port)

    def with_hosts(self, hosts: Iterable[tuple[int, bool]], flags: int) -> RestrictTable:
        """A copy with host rules added (`restrict source` applied to servers' addresses)."""
        table = RestrictTable(self.rules)
        for address, is_v6 in hosts:
            (table._v6 if is_v6 else table._v4).add(address, 128 if is_v6 else 32, flags)
        return table


class Access:
    """Restrict lookup plus per-source rate accounting, as the responder needs it."""

    def __init__(
        self,
        table: RestrictTable,
        rate: RateLimits | None = None,
        mru: MruLimits | None = None,
    ) -> None:
        self.table = table
        self.rate = rate or RateLimits()
        self.mru_limits = mru or MruLimits()
        self.mru: dict[int, MonEntry] = {}
        # The sentinel: _head.newer is the oldest entry, _head.older the newest.
        self._head = MonEntry(0.0, 0)
        self._cache: dict[int, int] = {}
        self._has_ntpport = any(r.flags & RestrictFlag.NTPPORT for r in table.rules)
        self.recycled = 0

    def replace_table(self, table: RestrictTable) -> None:
        self.table = table
        self._cache.clear()
        self._has_ntpport = any(r.flags & RestrictFlag.NTPPORT for r in table.rules)

    def flags_for(self, address: int, is_v6: bool, port: int) -> int:
        """The restrict flags of the most specific rule; memoised per source."""
        key = address | _V6_TAG if is_v6 else address
        if self._has_ntpport:
            key = (key << 1) | (port == NTP_PORT)
        flags = self._cache.get(key)
        if flags is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            flags = self._cache[key] = self.table.lookup(address, is_v6, port)
        return flags

    @property
    def rate(self) -> RateLimits:
        return self._rate

    @rate.setter
    def rate(self, rate: RateLimits) -> None:
        self._rate = rate
        # The leaky bucket's constants, in seconds: one average headway, and the limit.
        self._headway = float(1 << rate.average)
        self._bucket_limit = 8.0 * self._headway

    def check(
        self, address: int, is_v6: bool, port: int, now: float, mode_version: int = 0
    ) -> int:
        """Flags for this packet: the rule's, plus OVER_RATE if the source is over its rate.

        Also accounts the packet in the MRU list (ntpd's ntp_monitor()). Every served
        packet comes through here, so the common case (a cached rule, a known source) is
        written out in one function.
        """
        key = address | _V6_TAG if is_v6 else address
        flags = self._cache.get((key << 1) | (port == NTP_PORT) if self._has_ntpport else key)
        if flags is None:
            flags = self.flags_for(address, is_v6, port)
        if flags & IGNORE:
            return flags
        mru = self.mru
        entry = mru.get(key)
        if entry is None:
            entry = self._new_entry(key, now, port)
            entry.count = 1
            entry.mode_version = mode_version
            entry.flags = flags
            return flags
        interval = now - entry.last
        if interval < 0.0:
            interval = 0.0  # the caller's clock went backwards; never credit the source
        entry.last = now
        entry.port = port
        entry.count += 1
        entry.mode_version = mode_version
        entry.flags = flags
        # Move to the newest end (inline: this is the hot path).
        head = self._head
        newer = entry.newer
        if newer is not head:
            older = entry.older
            older.newer = newer
            newer.older = older
            newest = head.older
            newest.newer = entry
            entry.older = newest
            entry.newer = head
            head.older = entry
        # ntpd's leaky bucket (ntp_monitor.c), with its 1 s and 2 s graces.
        leak = entry.leak - interval
        if leak < 0.0:
            leak = 0.0
        head = self._headway
        limit = self._bucket_limit
        if interval + 1.0 >= self._rate.minimum and leak + head < limit:
            entry.leak = leak + head - 2.0
            return flags
        if leak < limit:
            entry.leak = limit + head
            return flags | OVER_RATE | KOD_ALLOWED
        entry.leak = leak
        return flags | OVER_RATE

    def _new_entry(self, key: int, now: float, port: int) -> MonEntry:
        mru = self.mru
        limits = self.mru_limits
        head = self._head
        if len(mru) >= limits.max_entries or (
            len(mru) >= limits.min_depth and now - head.newer.last > limits.max_age
        ):
            oldest = head.newer
            head.newer = oldest.newer
            oldest.newer.older = head
            del mru[oldest.key]
            self.recycled += 1
        entry = MonEntry(now, port, key)
        newest = head.older
        newest.newer = entry
        entry.older = newest
        entry.newer = head
        head.older = entry
        mru[key] = entry
        return entry

    # --- reading the list (mrulist), from either end or from an entry ------------------

    def oldest(self) -> MonEntry | None:
        entry = self._head.newer
        return None if entry is self._head else entry

    def newest(self) -> MonEntry | None:
        entry = self._head.older
        return None if entry is self._head else entry

    def newer(self, entry: MonEntry) -> MonEntry | None:
        """The entry seen next after `entry` (None: `entry` is the newest)."""
        following = entry.newer
        return None if following is self._head else following

    def older(self, entry: MonEntry) -> MonEntry | None:
        preceding = entry.older
        return None if preceding is self._head else preceding

    def entries(self) -> Iterator[tuple[int, MonEntry]]:
        """Most recent first, as mrulist shows them (the whole list: tests and tools)."""
        entry = self._head.older
        while entry is not self._head:
            yield entry.key, entry
            entry = entry.older
