"""Suite-wide: the slow suites are marked by where they live.

Everything under these directories starts real daemons, reference peers, namespaces or long
runs; `pytest -m "not slow"` leaves them out and runs the unit, property and simulator tests
in about a minute. CI runs everything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SLOW_SUITES = frozenset({"integration", "interop", "faults", "security", "fuzz", "bench",
                         "mutation"})
_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(item.fspath).relative_to(_TESTS).parts
        if parts and parts[0] in SLOW_SUITES:
            item.add_marker(pytest.mark.slow)
