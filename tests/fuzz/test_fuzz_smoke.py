"""Short atheris runs of every fuzz harness, through the runner that long runs use too."""

from __future__ import annotations

import os

import pytest
from fuzz.run import harnesses, run_harness

RUNS = int(os.environ.get("PYNTPD_FUZZ_RUNS", "30000"))
SECONDS = 12  # of fuzzing; with the start-up, each run stays under 15 s


def _require_atheris() -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("atheris is missing: run scripts/install-test-deps")
        pytest.skip("atheris is not installed")


@pytest.mark.parametrize("harness", harnesses())
def test_fuzz_harness_finds_nothing_in_a_short_run(harness, tmp_path):
    _require_atheris()
    outcome = run_harness(harness, seconds=SECONDS, runs=RUNS, workdir=tmp_path / "corpus",
                          artifacts=tmp_path / "artifacts")
    if outcome.status == "skipped":
        pytest.skip(outcome.message)
    assert outcome.status == "ok", outcome.message
    assert outcome.executions > 0, outcome.message
