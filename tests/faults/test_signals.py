"""SIGHUP storms and SIGTERM in the middle of a file write (issue 6, item 4).

pyntpd handles signals in its event loop (asyncio's signal handlers only set a flag and wake
the loop), so a reload or an exit never interrupts a write in progress: these tests hold it
to that with real processes, and check the atomic drift file and append-only statistics
against the harshest interruption there is, SIGKILL at a random point of a write loop.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from pyntpd.daemon.driftfile import DriftFile, parse_drift
from pyntpd.stats.filegen import FileSet, Statistics, StatsSettings
from pyntpd.stats.statsformat import SysCounts, parse_sysstats
from tests.faults.harness import no_traceback, poll_until, program, wrapper
from tests.support import LOCAL_CONF, Pyntpd, client_request, exchange, query

STORM = 200


class Querier(threading.Thread):
    """Queries the daemon back to back until stopped; counts what went unanswered."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.sent = self.lost = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.sent += 1
            if exchange(self.port, client_request(), timeout=1.0) is None:
                self.lost += 1

    def __enter__(self) -> Querier:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join(5)


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_suffix(".new")
    temporary.write_text(text)
    os.replace(temporary, path)


def _local(stratum: int, extra: str = "") -> str:
    return f"server 127.127.1.0\nfudge 127.127.1.0 stratum {stratum}\nrestrict default\n{extra}"


def test_a_sighup_storm_without_changes_never_interrupts_the_serving(tmp_path: Path) -> None:
    conf = tmp_path / "ntp.conf"
    conf.write_text(LOCAL_CONF)
    with Pyntpd("-c", str(conf)) as daemon, Querier(daemon.port) as querier:
        for _ in range(STORM):
            daemon.signal(signal.SIGHUP)
        poll_until(lambda: querier.sent > 20, 10, "queries during the storm")
        daemon.wait_for_log("configuration reloaded", 10)
        assert query(daemon.port).header.stratum == 11
        assert querier.lost == 0
        assert daemon.stop() == 0
        no_traceback(daemon.output())


def test_a_sighup_storm_with_changes_ends_on_the_last_good_configuration(
        tmp_path: Path) -> None:
    """Good and broken configurations in turn, a signal after each: every good one that is
    read replaces the running engine (the sources changed), every broken one is refused;
    the daemon answers all the while and ends with the last good one."""
    conf = tmp_path / "ntp.conf"
    conf.write_text(_local(7))
    versions = [_local(7), "server 127.127.1.0\nfudge 127.127.1.0 stratum\n", _local(9)]
    with Pyntpd("-c", str(conf)) as daemon, Querier(daemon.port) as querier:
        for i in range(STORM):
            _atomic_write(conf, versions[i % 3])
            daemon.signal(signal.SIGHUP)
        _atomic_write(conf, _local(4))
        daemon.signal(signal.SIGHUP)
        poll_until(lambda: query(daemon.port).header.stratum == 5, 15,
                   f"the last configuration:\n{daemon.output()}")
        assert querier.lost == 0 and querier.sent > 0
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
        output = daemon.output()
    no_traceback(output)
    assert "reload rejected" in output


@pytest.mark.needs_sys_time
def test_sigterm_during_a_storm_of_drift_and_stats_writes_leaves_them_whole(
        tmp_path: Path) -> None:
    """Every reload that changes the discipline closes the engine, which writes the drift
    file and a sysstats line: a SIGHUP storm is a storm of file writes, and SIGTERM lands
    in its middle. The daemon disciplines a simulated clock, so it keeps a drift file."""
    stats = tmp_path / "stats"
    stats.mkdir()
    drift = tmp_path / "ntp.drift"
    conf = tmp_path / "ntp.conf"
    extra = f"statsdir {stats}/\nstatistics sysstats\n"
    versions = [_local(10, f"{extra}tinker freq {f}\n") for f in (1.5, 2.5)]
    conf.write_text(versions[0])
    prog = program(tmp_path, simclock=True)
    with Pyntpd("-c", str(conf), "-f", str(drift), observe=False,
                wrap=wrapper(prog)) as daemon:
        proc = daemon.proc
        assert proc is not None
        for i in range(STORM):
            _atomic_write(conf, versions[i % 2])
            daemon.signal(signal.SIGHUP)
            if i == STORM // 2:
                daemon.signal(signal.SIGTERM)
        # SIGHUPs go on arriving while it exits, up to the very end: none may kill it.
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                daemon.signal(signal.SIGHUP)
        assert proc.wait(1) == 0, f"exit status {proc.returncode}:\n{daemon.output()}"
        output = daemon.output()
    no_traceback(output)
    assert parse_drift(drift.read_bytes()) in (1.5, 2.5)
    lines = [line for p in stats.glob("sysstats.*") for line in p.read_text().splitlines()]
    assert lines and all(parse_sysstats(x) for x in lines)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --- killed at any point of a write --------------------------------------------------------


def _writer(kind: str, path: Path) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: write for ever, until killed
        if kind == "drift":
            drift = DriftFile(path / "ntp.drift")
            value = 0
            while True:
                drift.write(100.0 + value % 7 * 11.111)
                value += 1
        stats = Statistics(StatsSettings(str(path), sets=(FileSet("sysstats", "sysstats"),)))
        while True:
            stats.record_sys(time.time(), SysCounts(received=12345678, processed=1234567))
    finally:
        os._exit(0)


def _kill_at_random(kind: str, path: Path, rounds: int = 25) -> None:
    rng = random.Random(6)
    for _ in range(rounds):
        pid = _writer(kind, path)
        # A reader meanwhile, as pyntpq or a monitoring script would be.
        until = time.monotonic() + rng.uniform(0.002, 0.03)
        while time.monotonic() < until:
            _check(kind, path)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _check(kind, path)


WRITTEN = {round(v % 7 * 11.111, 3) for v in range(7)}


def _check(kind: str, path: Path) -> None:
    if kind == "drift":
        with contextlib.suppress(FileNotFoundError):  # before the first write
            assert round(parse_drift((path / "ntp.drift").read_bytes()) - 100.0, 3) in WRITTEN


def test_a_drift_file_killed_mid_write_is_old_or_new_never_partial(tmp_path: Path) -> None:
    _kill_at_random("drift", tmp_path)
    assert (tmp_path / "ntp.drift").exists()
    # What a kill leaves behind is a temporary file, never the drift file itself; the next
    # start clears it away.
    DriftFile(tmp_path / "ntp.drift").read()
    assert [p.name for p in tmp_path.iterdir()] == ["ntp.drift"]


def test_statistics_killed_mid_write_hold_only_whole_lines(tmp_path: Path) -> None:
    _kill_at_random("stats", tmp_path)
    lines = [line for p in tmp_path.glob("sysstats.*") for line in p.read_bytes().split(b"\n")]
    assert lines[-1] == b""  # the files end with a newline
    assert len(lines) > 100
    for line in lines[:-1]:
        parse_sysstats(line.decode())
