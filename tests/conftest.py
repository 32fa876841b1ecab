"""Suite-wide: the slow suites are marked by where they live, and the tests that need
CAP_SYS_TIME are skipped without it (outside CI).

Everything under these directories starts real daemons, reference peers, namespaces or long
runs; `pytest -m "not slow"` leaves them out and runs the unit, property and simulator tests
in about a minute. CI runs everything.

`@pytest.mark.needs_sys_time` marks the tests whose daemon believes it disciplines a clock
(a simulated one: this machine's clock is never touched, but pyntpd checks at start that it
may adjust the clock, as it must on a real host) or that drop privileges keeping
CAP_SYS_TIME. In a container or a shell without the capability they cannot pass; there they
are skipped with that reason, except under CI=true, where they run (and fail) because CI
must show them passing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyntpd.daemon.privileges import CAP_SYS_TIME, current_capabilities

SLOW_SUITES = frozenset({"integration", "interop", "faults", "security", "fuzz", "bench",
                         "mutation"})
_TESTS = Path(__file__).parent


NO_SYS_TIME = ("needs CAP_SYS_TIME, which this process does not have: its daemon disciplines "
               "a simulated clock and pyntpd checks the capability at start, or it drops "
               "privileges keeping it (run as root with the capability; CI=true runs it)")


def has_sys_time() -> bool:
    return bool(current_capabilities().get("CapEff", 0) >> CAP_SYS_TIME & 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip_sys_time = os.environ.get("CI") != "true" and not has_sys_time()
    for item in items:
        parts = Path(item.fspath).relative_to(_TESTS).parts
        if parts and parts[0] in SLOW_SUITES:
            item.add_marker(pytest.mark.slow)
        if skip_sys_time and item.get_closest_marker("needs_sys_time") is not None:
            item.add_marker(pytest.mark.skip(reason=NO_SYS_TIME))
