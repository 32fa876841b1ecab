"""A real pyntpd (observing the clock) writes ntpd-format statistics files while it
synchronises from another pyntpd serving its local clock driver."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyntpd.stats.statsformat import PARSERS
from tests.support import LOCAL_CONF, Pyntpd, config_file

WAIT = 40.0


def stats_conf(server_port: int, statsdir: Path) -> str:
    return (f"server 127.0.0.1 port {server_port} iburst minpoll 4 maxpoll 4\n"
            "restrict default\n"
            f"statsdir {statsdir}/\n"
            "statistics loopstats peerstats sysstats\n"
            "filegen loopstats file loopstats type day enable\n"
            "filegen peerstats file peerstats type day link enable\n"
            "filegen sysstats file sysstats type day enable\n")


def lines(statsdir: Path, name: str) -> list[str]:
    path = statsdir / name  # the link to the current generation
    return path.read_text().splitlines() if path.exists() else []


def wait_for_lines(statsdir: Path, name: str, count: int, d: Pyntpd) -> list[str]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = lines(statsdir, name)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} {name} lines in {WAIT}s:\n{d.output()}")


@pytest.fixture
def server() -> Iterator[Pyntpd]:
    with config_file(LOCAL_CONF) as conf, Pyntpd("-c", conf) as d:
        yield d


def test_statistics_files_appear_and_every_line_is_in_ntpds_format(server, tmp_path):
    with config_file(stats_conf(server.port, tmp_path)) as conf:
        d = Pyntpd("-c", conf)
        with d:
            wait_for_lines(tmp_path, "loopstats", 2, d)
            wait_for_lines(tmp_path, "peerstats", 3, d)
        # sysstats: the counts since the last hourly record are written at exit
    names = {p.name for p in tmp_path.iterdir()}
    for name in ("loopstats", "peerstats", "sysstats"):
        dated = sorted(n for n in names if n.startswith(f"{name}.2"))
        assert dated and (tmp_path / name).samefile(tmp_path / dated[-1]), names
        written = lines(tmp_path, name)
        assert written, name
        records = [PARSERS[name](line) for line in written]
        assert all(abs(r.time - time.time()) < 600 for r in records)
    peers = [PARSERS["peerstats"](x) for x in lines(tmp_path, "peerstats")]
    assert {p.address for p in peers} == {"127.0.0.1"}
    assert peers[-1].status & 0x0700 == 0x0600  # the system peer, by then
    loop = [PARSERS["loopstats"](x) for x in lines(tmp_path, "loopstats")]
    assert abs(loop[-1].offset) < 1e-3 and loop[-1].poll == 4  # same host, same clock


def test_a_missing_statsdir_is_reported_with_its_place_and_the_daemon_still_serves(server,
                                                                                  tmp_path):
    missing = tmp_path / "missing"
    with config_file(stats_conf(server.port, missing)) as conf, Pyntpd("-c", conf) as d:
        error = f"{conf}:3:1: statsdir {missing}/ does not exist"
        d.wait_for_log(error)
        d.wait_for_log("synchronised to 127.0.0.1")
        d.signal(signal.SIGHUP)  # and again at a reload
        deadline = time.monotonic() + WAIT
        while d.output().count(error) < 2:
            assert time.monotonic() < deadline, d.output()
            time.sleep(0.05)
    assert not missing.exists()


def test_a_reload_takes_new_statistics_settings(server, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    with config_file(stats_conf(server.port, first)) as conf, Pyntpd("-c", conf) as d:
        wait_for_lines(first, "peerstats", 1, d)
        Path(conf).write_text(stats_conf(server.port, second))
        d.signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded")
        wait_for_lines(second, "peerstats", 1, d)
