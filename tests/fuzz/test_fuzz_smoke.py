"""Short atheris runs of every fuzz harness (fuzz/*.py); long runs are done by hand."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import REPO

HARNESSES = sorted(p.stem for p in (REPO / "fuzz").glob("fuzz_*.py"))
RUNS = os.environ.get("PYNTPD_FUZZ_RUNS", "30000")


def _require_atheris() -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("atheris is missing: run scripts/install-test-deps")
        pytest.skip("atheris is not installed")


@pytest.mark.parametrize("harness", HARNESSES)
def test_fuzz_harness_finds_nothing_in_a_short_run(harness, tmp_path):
    _require_atheris()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed in (REPO / "fuzz" / "corpus" / harness.removeprefix("fuzz_")).iterdir():
        (corpus / seed.name).write_bytes(seed.read_bytes())
    result = subprocess.run(
        [sys.executable, str(REPO / "fuzz" / f"{harness}.py"), str(corpus),
         f"-runs={RUNS}", "-max_total_time=15", "-timeout=10", "-rss_limit_mb=1024",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-4000:]
