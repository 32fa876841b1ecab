"""The mutation check (tests/mutation/mutate.py) kept true: its table matches the code, and
every security guard it removes is caught by the tests named for it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.mutation.mutate import GUARDS, REPO, Guard, TableError, check_table, verdict_of


def test_every_guard_snippet_is_found_exactly_once_and_its_mutation_compiles() -> None:
    check_table(GUARDS)


def test_a_guard_that_moved_is_an_error_not_a_silent_pass() -> None:
    moved = Guard("moved", "-", "proto/source.py", "if this_check_was_renamed:\n", "", ("t",))
    with pytest.raises(TableError, match="the guard moved: update the table"):
        check_table([moved])


def test_a_guard_is_killed_only_when_every_named_test_fails() -> None:
    tests = ("tests/a.py::test_x", "tests/a.py::test_y")
    assert verdict_of(tests, {tests[0]: "failed", tests[1] + "[p1]": "passed",
                              tests[1] + "[p2]": "failed"}) == ("KILLED", "")
    assert verdict_of(tests, {tests[0]: "failed", tests[1]: "passed"}) == (
        "SURVIVED", "still passing: a::test_y")
    assert verdict_of(tests, {tests[0]: "failed"})[0] == "ERROR"  # not collected
    assert verdict_of(tests, {tests[0]: "failed", tests[1]: "error"})[0] == "ERROR"


@pytest.mark.slow
def test_every_security_guard_is_caught_by_its_tests() -> None:
    """Runs the whole table (about 3 minutes on 2 cores)."""
    result = subprocess.run([sys.executable, "-m", "tests.mutation.mutate"], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert f"{len(GUARDS)} guards: {len(GUARDS)} killed" in result.stdout
