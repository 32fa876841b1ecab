"""The forking parent's reading of the child's words (cli/pyntpd.wait_for_child): "OK" once
serving, "SYNC" once synchronised (-w), anything else the reason it failed."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator

import pytest

from pyntpd.cli.pyntpd import EXIT_FAILURE, EXIT_OK, wait_for_child


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):  # closed by the test
            os.close(fd)


def test_ready_without_dash_w_is_success(pipe):
    os.write(pipe[1], b"OK\n")
    assert wait_for_child(pipe[0], None) == EXIT_OK


def test_ready_and_synchronised_in_one_read_is_success(pipe):
    os.write(pipe[1], b"OK\nSYNC\n")  # a daemon on the local clock alone is that quick
    assert wait_for_child(pipe[0], 5.0) == EXIT_OK


def test_ready_but_never_synchronised_times_out_with_etimedout(pipe, capsys):
    os.write(pipe[1], b"OK\n")
    started = time.monotonic()
    assert wait_for_child(pipe[0], 0.3) == errno.ETIMEDOUT
    assert 0.3 <= time.monotonic() - started < 2.0
    assert capsys.readouterr().err == "pyntpd: -w/--wait-sync 0.3 timed out\n"


def test_a_daemon_that_dies_before_synchronising_is_a_failure(pipe, capsys):
    os.write(pipe[1], b"OK\n")
    os.close(pipe[1])
    assert wait_for_child(pipe[0], 5.0) == EXIT_FAILURE
    assert "exited before it was synchronised" in capsys.readouterr().err


def test_a_start_up_failure_passes_the_reason_on(pipe, capsys):
    os.write(pipe[1], b"pyntpd: cannot bind 0.0.0.0 port 123: Address already in use\n")
    os.close(pipe[1])
    assert wait_for_child(pipe[0], 5.0) == EXIT_FAILURE
    assert capsys.readouterr().err == (
        "pyntpd: cannot bind 0.0.0.0 port 123: Address already in use\n")


def test_a_child_that_says_nothing_at_all_is_a_failure(pipe, capsys):
    os.close(pipe[1])
    assert wait_for_child(pipe[0], None) == EXIT_FAILURE
    assert "exited during start-up" in capsys.readouterr().err
