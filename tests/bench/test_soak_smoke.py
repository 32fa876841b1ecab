"""bench/soak.py and bench/flood.py: the targets' logic, and a few seconds of each for real.

The short runs need root (the flood's raw socket), gcc (the C generators), taskset and
setpriv, which CI has (scripts/install-test-deps); without them the tests skip, except
under CI=true, where they fail.  Together they take about 20 s.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import flood  # noqa: E402
import soak  # noqa: E402

HOSTILE_KINDS = {
    "random", "truncated", "empty", "oversized", "bad_extension", "bad_mac_key1",
    "bad_mac_unknown_key", "mode6_junk", "mode7", "kod_lookalike", "bad_version",
    "other_mode", "over_rate",
}


def require_bench_tools() -> None:
    missing = [tool for tool in ("gcc", "taskset", "setpriv") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    if missing:
        message = f"benchmark smoke tests need {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI installs them: scripts/install-test-deps)")
        pytest.skip(message)


def soak_figures(**changes: Any) -> dict[str, Any]:
    figures = {"legit_sent": 1000, "legit_answered": 1000, "rss_growth_after_warmup": 0.01,
               "unhandled_exceptions": 0}
    return figures | changes


def verdicts(targets: list[Any]) -> dict[str, bool]:
    return {t.name: t.ok for t in targets}


def test_soak_passes_when_every_legit_request_is_answered_and_memory_is_flat() -> None:
    assert all(verdicts(soak.targets(soak_figures())).values())


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({"legit_answered": 999}, "legit answered"),
        ({"legit_sent": 0, "legit_answered": 0}, "legit answered"),
        ({"rss_growth_after_warmup": 0.05}, "RSS growth after warm-up"),
        ({"rss_growth_after_warmup": None}, "RSS growth after warm-up"),
        ({"unhandled_exceptions": 1}, "unhandled exceptions"),
    ],
)
def test_soak_fails_exactly_the_missed_target(changes: dict[str, Any], failing: str) -> None:
    got = verdicts(soak.targets(soak_figures(**changes)))
    assert [name for name, ok in got.items() if not ok] == [failing]


def flood_figures(**changes: Any) -> dict[str, Any]:
    figures = {"mru_entries_max": 2259, "mru_bound_entries": 2259, "rss_peak_kib": 40_000,
               "legit_sent": 100, "legit_answered": 100, "sources": 10, "sources_sent": 10}
    return figures | changes


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({}, None),
        ({"mru_entries_max": 2260}, "MRU entries <= bound"),
        ({"rss_peak_kib": 64 * 1024 + 1}, "peak RSS"),
        ({"legit_answered": 99}, "legit answered"),
        ({"sources_sent": 9}, "all sources sent"),
    ],
)
def test_flood_fails_exactly_the_missed_target(
    changes: dict[str, Any], failing: str | None
) -> None:
    got = verdicts(flood.targets(flood_figures(**changes)))
    assert [name for name, ok in got.items() if not ok] == ([failing] if failing else [])


@pytest.mark.parametrize(
    ("first", "count"),
    [
        ("127.255.255.0", 257),  # runs past 127.255.255.255
        ("126.255.255.255", 1),  # not loopback
        ("10.0.0.1", 1),
        ("127.0.255.0", 512),  # overlaps the legitimate clients' 127.1.0.0/16
        ("127.0.0.0", 4),  # includes 127.0.0.1, the readiness probe's address
    ],
)
def test_flood_sources_stay_in_loopback_and_apart_from_the_measured_clients(
    first: str, count: int
) -> None:
    with pytest.raises(ValueError):
        flood.flood_sources(first, count)


def test_million_sources_fit_in_loopback_from_the_default_first() -> None:
    lo, hi = flood.flood_sources("127.64.0.0", 1_000_000)
    assert (str(lo), str(hi)) == ("127.64.0.0", "127.79.66.63")


def test_flood_config_keeps_restrict_default_limited_kod() -> None:
    assert "restrict default limited kod\n" in flood.flood_config(None)
    assert "mru maxmem 512\n" in flood.flood_config(512)
    assert flood.mru_bound(512) * flood.MRU_ENTRY_BYTES <= 512 * 1024


def test_soak_runs_a_few_seconds_and_reports_every_figure(tmp_path: Path) -> None:
    require_bench_tools()
    out = tmp_path / "soak.json"
    status = soak.main(["--minutes", "0.1", "--rate", "5000", "--json", str(out)])
    doc = json.loads(out.read_text())
    fig = doc["figures"]
    assert status == (0 if doc["passed"] else 1)
    assert [t["name"] for t in doc["targets"]] == [
        "legit answered", "RSS growth after warm-up", "unhandled exceptions"]
    assert fig["daemon_alive_at_end"] and fig["unhandled_exceptions"] == 0
    assert fig["legit_sent"] > 10_000 and fig["legit_answered"] > 0.99 * fig["legit_sent"]
    assert set(fig["hostile"]["by_kind"]) == HOSTILE_KINDS
    assert all(n > 0 for n in fig["hostile"]["by_kind"].values())
    assert set(fig["rss_kib"]) == {"start", "after_warmup", "end"}
    assert all(v > 0 for v in fig["rss_kib"].values())
    assert fig["cpu_us_per_datagram"] > 0
    dropped = fig["daemon"]["dropped"]
    # each kind of hostile datagram shows up under the reason the daemon gives it
    for reason in ("too_short", "too_long", "bad_extension", "bad_auth", "mode7",
                   "control_denied", "bad_version", "not_a_request", "rate_limited"):
        assert dropped[reason] > 0, reason


def test_flood_of_20k_sources_keeps_the_mru_list_bounded(tmp_path: Path) -> None:
    require_bench_tools()
    out = tmp_path / "flood.json"
    status = flood.main(["--sources", "20000", "--rate", "20000", "--maxmem", "256",
                         "--json", str(out)])
    doc = json.loads(out.read_text())
    fig = doc["figures"]
    assert status == (0 if doc["passed"] else 1)
    assert fig["sources_sent"] == 20_000
    assert fig["mru_bound_entries"] == flood.mru_bound(256)
    assert 0 < fig["mru_entries_max"] <= fig["mru_bound_entries"]
    assert fig["rss_peak_kib"] <= 64 * 1024
    assert fig["daemon"]["kod_sent"]["RATE"] > 0
    assert fig["daemon"]["dropped"]["rate_limited"] > 0
    assert fig["unhandled_exceptions"] == 0
    assert fig["legit_answered"] > 0.99 * fig["legit_sent"] > 0
