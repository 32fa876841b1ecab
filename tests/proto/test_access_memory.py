"""`mru maxmem` is memory: MRU_ENTRY_BYTES must cover what a monitored source really costs.

The flood benchmark (bench/flood.py) found the earlier 232 bytes per entry too low by half:
it was measured on entries that had seen one packet each, whose `last` was still `first`,
and without the churn of recycling, which keeps the OrderedDict's table larger.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from pyntpd.proto.access import MRU_ENTRY_BYTES, Access, MruLimits, RestrictTable

FLOOD_BASE = (127 << 24) | (64 << 16)  # 127.64.0.0, where bench/flood.py starts


def traced_bytes(entries: int, sources: int) -> tuple[int, int]:
    """(most bytes held at a sample point, peak) while `sources` new sources, two requests
    each and each from its own port, pass through an Access bounded at `entries`."""
    access = Access(RestrictTable(()), mru=MruLimits(max_entries=entries, max_age=1e9))
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        held = 0
        now = 1000.0
        step = max(1, sources // 200)
        for i in range(sources):
            now += 2e-5
            port = 1024 + i % 60000
            access.check(FLOOD_BASE + i, False, port, now, 0x23)
            access.check(FLOOD_BASE + i, False, port, now + 1e-5, 0x23)
            if i % step == 0:
                held = max(held, tracemalloc.get_traced_memory()[0] - base)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return max(held, current - base), peak - base


@pytest.mark.parametrize("entries", [3000, 20000])
def test_an_mru_entry_costs_no_more_than_mru_entry_bytes(entries: int) -> None:
    # The restrict lookup cache is bounded apart from the MRU list; a run through a
    # one-entry list measures it, and what the full list adds is the list's own memory.
    cache_held, cache_peak = traced_bytes(1, 3 * entries)
    held, peak = traced_bytes(entries, 3 * entries)
    assert (held - cache_held) / entries <= MRU_ENTRY_BYTES
    assert (peak - cache_peak) / entries <= MRU_ENTRY_BYTES


def test_maxmem_bounds_the_list_to_maxmem_worth_of_entries() -> None:
    assert MruLimits.from_maxmem(1024).max_entries * MRU_ENTRY_BYTES <= 1024 * 1024
