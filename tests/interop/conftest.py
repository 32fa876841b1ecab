"""Fixtures for interop tests against reference daemons (chrony, ntpsec).

Every test in this directory is marked ``interop``.  ``require("chronyd", ...)`` skips a test whose
reference binaries are missing, but fails it under CI=true (CI runs scripts/install-test-deps).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import refdaemons  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.interop)


@pytest.fixture
def require() -> Callable[..., dict[str, str]]:
    """``require("chronyd", "chronyc")`` -> {tool: path}; skips (fails under CI=true) if missing."""
    return refdaemons.require


@pytest.fixture
def netns() -> Iterator[refdaemons.NetNamespace]:
    """A private network namespace with lo up (for ntpdig/ntpq, which only use port 123)."""
    refdaemons.require("netns")
    with refdaemons.NetNamespace() as ns:
        yield ns
