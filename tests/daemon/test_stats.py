"""Statistics file sets: names, rotation by the line's time stamp, links, safe opening,
write errors counted and logged once."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from pyntpd.config import parse_text
from pyntpd.config.diagnostics import Location
from pyntpd.logonce import LogOnce
from pyntpd.stats import filegen as stats_module
from pyntpd.stats.filegen import (
    DEFAULT_STATSDIR,
    FileSet,
    Statistics,
    StatsDirError,
    StatsSettings,
    check_statsdir,
    generation,
)
from pyntpd.stats.statsformat import (
    LoopStats,
    SysCounts,
    parse_loopstats,
    parse_peerstats,
    parse_sysstats,
)
from pyntpd.sync.engine import PanicExit, SourceStatus, SyncResult
from pyntpd.types import SystemVars, Tally

DAY1 = 1795696496.0  # 2026-11-26 12:34:56 UTC
MIDNIGHT = 1795737600.0  # 2026-11-27 00:00:00 UTC
PID = 4242


def _loop(t: float, offset: float = 0.001) -> LoopStats:
    return LoopStats(t, offset, 1.0, 0.0001, 0.001, 6)


def _stats(directory: Path, *sets: FileSet, logger: str = "test-stats") -> Statistics:
    settings = StatsSettings(str(directory), Location("ntp.conf", 3, 1),
                             sets or (FileSet("loopstats", "loopstats"),))
    return Statistics(settings, pid=PID, started=DAY1,
                      log_once=LogOnce(logging.getLogger(logger)))


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "suffix"), [
    ("none", ""),
    ("pid", f".#{PID}"),
    ("day", ".20261126"),
    ("week", ".2026w48"),
    ("month", ".202611"),
    ("year", ".2026"),
    ("age", ".a00000000"),
])
def test_generation_suffixes_are_ntpds(kind, suffix):
    assert generation(kind, DAY1, PID, DAY1)[0] == suffix


def test_iso_week_of_new_years_day_belongs_to_the_previous_year():
    assert generation("week", 1798761600.0, PID, 0.0)[0] == ".2026w53"  # 2027-01-01, a Friday


def test_a_day_generation_spans_utc_midnight_to_midnight():
    _, first, end = generation("day", DAY1, PID, DAY1)
    assert (first, end) == (MIDNIGHT - 86400, MIDNIGHT)


def test_a_month_generation_ends_at_the_first_of_the_next_month():
    end = generation("month", 1796083200.0 - 1, PID, 0.0)[2]  # 2026-11-30 23:59:59
    assert end == 1796083200.0  # 2026-12-01


def test_age_generations_count_whole_days_of_uptime_in_seconds():
    assert generation("age", DAY1 + 2.5 * 86400, PID, DAY1)[0] == ".a00172800"


# --- writing and rotation -------------------------------------------------------------------


def test_lines_go_to_the_days_file_with_the_bare_name_linked_to_it(tmp_path):
    s = _stats(tmp_path)
    assert s.write("loopstats", _loop(DAY1))
    s.close()
    dated, bare = tmp_path / "loopstats.20261126", tmp_path / "loopstats"
    assert dated.read_text() == _loop(DAY1).line() + "\n"
    assert os.path.samefile(dated, bare)
    assert dated.stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_line_stamped_after_midnight_starts_the_next_days_file_and_moves_the_link(tmp_path):
    s = _stats(tmp_path)
    s.write("loopstats", _loop(MIDNIGHT - 1, 0.001))
    s.write("loopstats", _loop(MIDNIGHT, 0.002))
    s.close()
    first = (tmp_path / "loopstats.20261126").read_text().splitlines()
    second = (tmp_path / "loopstats.20261127").read_text().splitlines()
    assert [parse_loopstats(x).offset for x in first + second] == [0.001, 0.002]
    assert os.path.samefile(tmp_path / "loopstats", tmp_path / "loopstats.20261127")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "loopstats", "loopstats.20261126", "loopstats.20261127"]


def test_a_line_stamped_back_in_yesterday_goes_to_yesterdays_file(tmp_path):
    s = _stats(tmp_path)
    s.write("loopstats", _loop(MIDNIGHT + 10))
    s.write("loopstats", _loop(MIDNIGHT - 10))  # the clock was stepped back
    s.close()
    assert len((tmp_path / "loopstats.20261126").read_text().splitlines()) == 1


def test_type_none_writes_the_bare_name_and_links_nothing(tmp_path):
    s = _stats(tmp_path, FileSet("loopstats", "loops", "none", True))
    s.write("loopstats", _loop(DAY1))
    s.write("loopstats", _loop(MIDNIGHT))
    s.close()
    assert [p.name for p in tmp_path.iterdir()] == ["loops"]
    assert len((tmp_path / "loops").read_text().splitlines()) == 2


def test_nolink_leaves_no_bare_name(tmp_path):
    s = _stats(tmp_path, FileSet("loopstats", "loopstats", "day", False))
    s.write("loopstats", _loop(DAY1))
    s.close()
    assert [p.name for p in tmp_path.iterdir()] == ["loopstats.20261126"]


def test_lines_are_appended_to_an_existing_generation(tmp_path):
    (tmp_path / "loopstats.20261126").write_text("earlier\n")
    s = _stats(tmp_path)
    s.write("loopstats", _loop(DAY1))
    s.close()
    assert (tmp_path / "loopstats.20261126").read_text().splitlines()[0] == "earlier"


def test_an_unlinked_file_at_the_bare_name_is_kept_aside_as_ntpd_does(tmp_path):
    (tmp_path / "loopstats").write_text("somebody's data\n")
    s = _stats(tmp_path)
    s.write("loopstats", _loop(DAY1))
    s.close()
    assert (tmp_path / f"loopstats.{PID}C0").read_text() == "somebody's data\n"
    assert os.path.samefile(tmp_path / "loopstats", tmp_path / "loopstats.20261126")


def test_a_symlink_at_the_bare_name_is_left_alone_and_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "loopstats").symlink_to(victim)
    s = _stats(tmp_path)
    assert s.write("loopstats", _loop(DAY1))  # the data still goes to the day's file
    s.close()
    assert victim.read_text() == "keep\n"
    assert (tmp_path / "loopstats").is_symlink()


def test_a_symlink_planted_at_the_file_name_is_refused_and_counted(tmp_path, caplog):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "loopstats.20261126").symlink_to(victim)
    s = _stats(tmp_path)
    with caplog.at_level(logging.ERROR, "test-stats"):
        assert not s.write("loopstats", _loop(DAY1))
    assert victim.read_text() == "keep\n"
    assert s.counters()["loopstats"].errors == 1
    assert "cannot write loopstats statistics" in caplog.text


def test_a_fifo_at_the_file_name_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "loopstats.20261126")
    s = _stats(tmp_path)
    assert not s.write("loopstats", _loop(DAY1))
    assert s.counters()["loopstats"].errors == 1


def _failing_write(code: int):
    def write(fd: int, data: bytes) -> int:
        raise OSError(code, os.strerror(code))
    return write


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_write_error_is_counted_per_line_and_logged_once(tmp_path, monkeypatch, caplog, code):
    s = _stats(tmp_path)
    with caplog.at_level(logging.INFO):
        monkeypatch.setattr(stats_module.os, "write", _failing_write(code))
        results = [s.write("loopstats", _loop(DAY1 + i)) for i in range(5)]
        monkeypatch.undo()
        assert s.write("loopstats", _loop(DAY1 + 5))  # retried at the next line: it works
    s.close()
    assert results == [False] * 5
    assert s.counters()["loopstats"].errors == 5
    assert s.counters()["loopstats"].lines == 1
    assert caplog.text.count("cannot write loopstats statistics") == 1
    assert os.strerror(code) in caplog.text
    assert "loopstats statistics are written to" in caplog.text
    assert len((tmp_path / "loopstats.20261126").read_text().splitlines()) == 1


def test_a_failure_after_recovery_is_logged_again(tmp_path, monkeypatch, caplog):
    s = _stats(tmp_path)
    with caplog.at_level(logging.ERROR, "test-stats"):
        for _ in range(2):
            monkeypatch.setattr(stats_module.os, "write", _failing_write(errno.ENOSPC))
            s.write("loopstats", _loop(DAY1))
            monkeypatch.undo()
            s.write("loopstats", _loop(DAY1))
    assert caplog.text.count("cannot write loopstats statistics") == 2


def test_the_real_disk_full_device_reports_enospc_and_is_counted(tmp_path, monkeypatch):
    s = _stats(tmp_path)
    s.write("loopstats", _loop(DAY1))  # the generation is open
    fg = s.sets["loopstats"]
    full = os.open("/dev/full", os.O_WRONLY)
    os.close(fg._fd)
    fg._fd = full  # what a full file system does to the open file
    assert not s.write("loopstats", _loop(DAY1 + 1))
    assert fg.counters.errors == 1


def test_a_value_that_is_not_finite_is_a_counted_drop(tmp_path):
    s = _stats(tmp_path)
    assert not s.write("loopstats", _loop(DAY1, float("nan")))
    assert s.counters()["loopstats"].dropped == 1


def test_a_set_that_is_not_enabled_is_not_written(tmp_path):
    s = _stats(tmp_path)
    assert not s.write("peerstats", _loop(DAY1))
    assert list(tmp_path.iterdir()) == []


# --- sysstats --------------------------------------------------------------------------------


def test_sysstats_record_the_counts_since_the_last_record(tmp_path):
    uptime = iter([0.0, 3600.0, 7200.0])  # the monotonic clock, read at start and per record
    s = Statistics(StatsSettings(str(tmp_path), sets=(FileSet("sysstats", "sysstats"),)),
                   started=DAY1, monotonic=lambda: next(uptime))
    s.record_sys(DAY1 + 3600, SysCounts(received=100, processed=90))
    s.record_sys(DAY1 + 7200, SysCounts(received=150, processed=120))
    s.close()
    lines = [parse_sysstats(x) for x in
             (tmp_path / "sysstats.20261126").read_text().splitlines()]
    assert [(r.since_reset, r.counts.received, r.counts.processed) for r in lines] == [
        (3600, 100, 90), (3600, 50, 30)]


# --- the directory and the settings ---------------------------------------------------------


def test_a_missing_statsdir_is_an_error_naming_where_it_was_set(tmp_path):
    with pytest.raises(StatsDirError, match=r"ntp.conf:3:1: statsdir .*missing does not exist"):
        check_statsdir(str(tmp_path / "missing"), Location("ntp.conf", 3, 1))


def test_a_statsdir_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(StatsDirError, match="is not a directory"):
        check_statsdir(str(tmp_path / "f"), Location("ntp.conf", 3, 1))


def test_statistics_with_a_missing_statsdir_log_the_error_and_count_lost_lines(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        s = _stats(tmp_path / "missing")
        assert not s.write("loopstats", _loop(DAY1))
    assert "ntp.conf:3:1: statsdir" in caplog.text
    assert s.counters()["loopstats"].errors == 1
    assert not (tmp_path / "missing").exists()  # never created


def test_settings_follow_statistics_filegen_and_statsdir():
    config = parse_text("statsdir /var/log/ntpstats/\nstatistics loopstats peerstats\n"
                        "filegen peerstats file peers type week nolink\n"
                        "filegen sysstats enable\nfilegen loopstats disable\n").config
    settings = StatsSettings.from_config(config)
    assert settings.statsdir == "/var/log/ntpstats/"
    assert settings.location.line == 1
    assert settings.sets == (FileSet("peerstats", "peers", "week", False),
                             FileSet("sysstats", "sysstats", "day", True))


def test_a_later_filegen_line_changes_only_what_it_says():
    config = parse_text("filegen loopstats file loops type month nolink enable\n"
                        "filegen loopstats type week\n").config
    assert StatsSettings.from_config(config).sets == (
        FileSet("loopstats", "loops", "week", False),)


def test_the_command_line_statsdir_wins_and_ntpds_default_applies_otherwise():
    config = parse_text("statistics loopstats\nstatsdir /a/\n").config
    assert StatsSettings.from_config(config, "/b/").statsdir == "/b/"
    assert StatsSettings.from_config(parse_text("statistics loopstats").config).statsdir == \
        DEFAULT_STATSDIR


def test_disable_stats_writes_nothing():
    config = parse_text("statistics loopstats peerstats\ndisable stats\n").config
    assert StatsSettings.from_config(config).sets == ()


def test_a_reload_with_a_new_file_name_writes_the_new_file(tmp_path):
    s = _stats(tmp_path)
    s.write("loopstats", _loop(DAY1))
    s.reconfigure(StatsSettings(str(tmp_path), Location("x"),
                                (FileSet("loopstats", "loops", "day", False),)))
    s.write("loopstats", _loop(DAY1 + 1))
    s.close()
    assert (tmp_path / "loops.20261126").read_text().count("\n") == 1
    assert (tmp_path / "loopstats.20261126").read_text().count("\n") == 1


def test_a_reload_reopens_the_file_so_a_rotated_file_is_left_behind(tmp_path):
    s = _stats(tmp_path, FileSet("loopstats", "loopstats", "none"))
    s.write("loopstats", _loop(DAY1))
    (tmp_path / "loopstats").rename(tmp_path / "loopstats.1")  # what logrotate does
    s.reconfigure(StatsSettings(str(tmp_path), Location("y"),
                                (FileSet("loopstats", "loopstats", "none"),)))
    s.write("loopstats", _loop(DAY1 + 1))
    s.close()
    assert len((tmp_path / "loopstats").read_text().splitlines()) == 1
    assert len((tmp_path / "loopstats.1").read_text().splitlines()) == 1
    assert s.counters()["loopstats"].lines == 2  # the same set: its counters go on


def test_sets_pyntpd_does_not_write_are_named_in_the_log(tmp_path, caplog):
    config = parse_text(f"statsdir {tmp_path}\nstatistics loopstats clockstats rawstats\n").config
    settings = StatsSettings.from_config(config)
    assert settings.unwritten == ("rawstats",)  # clockstats: the reference clocks' lines
    with caplog.at_level(logging.INFO):
        Statistics(settings).close()
    assert "statistics rawstats: accepted, but pyntpd writes only" in caplog.text


def _update(system_peer: object, panic: bool = False) -> SyncResult:
    status = SourceStatus(Tally.SYSPEER if system_peer else Tally.REJECT, 0.001, 0.02,
                          0.0001, 0.0003, 0.1, 6, 8)
    return SyncResult(actions=(), system=SystemVars(), sources={"a": status}, polls={"a": 6},
                      wakeup=None, offset=0.001, frequency=3.0, jitter=0.0001,
                      system_peer=system_peer,
                      panic=PanicExit(2000.0, 1000.0) if panic else None)


def test_a_sample_gives_a_peerstats_line_and_a_clock_update_a_loopstats_line(tmp_path):
    s = _stats(tmp_path, FileSet("loopstats", "loopstats"), FileSet("peerstats", "peerstats"))
    s.record_sample(DAY1, "a", "192.0.2.1", 0o377, _update(system_peer="a"))
    s.record_sample(DAY1 + 1, "a", "192.0.2.1", 0o377, _update(system_peer=None))
    s.record_sample(DAY1 + 2, "a", "192.0.2.1", 0o377, _update(system_peer="a", panic=True))
    s.close()
    assert [c.lines for c in s.counters().values()] == [1, 2]
    peer = parse_peerstats((tmp_path / "peerstats").read_text().splitlines()[0])
    assert (peer.address, peer.status, peer.offset) == ("192.0.2.1", 0x9600, 0.001)
