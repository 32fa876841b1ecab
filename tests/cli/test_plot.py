"""`pyntpctl plot`: pictures and a page from a recorded run; clear errors for bad input."""

from __future__ import annotations

import gzip
import itertools
import os
import sys
from pathlib import Path

import pytest

from pyntpd.cli import plot as plot_module
from pyntpd.cli.pyntpctl import main
from pyntpd.stats.statsformat import parse_loopstats, parse_peerstats

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = ("offset.png", "frequency.png", "jitter.png", "peer-offsets.png")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A simulated run of lan4 recorded as ntpd-format statistics files."""
    directory = tmp_path_factory.mktemp("stats")
    assert main(["simulate", "lan4", "--days", "0.2", "--stats", str(directory)]) == 0
    return directory


def test_simulate_records_loopstats_and_peerstats_in_ntpds_format(recorded):
    names = sorted(p.name for p in recorded.iterdir())
    assert names == ["loopstats", "loopstats.20270115", "peerstats", "peerstats.20270115"]
    loop = [parse_loopstats(x) for x in (recorded / "loopstats").read_text().splitlines()]
    peers = [parse_peerstats(x) for x in (recorded / "peerstats").read_text().splitlines()]
    assert len(loop) > 20
    assert {p.address for p in peers} == {f"192.0.2.{i}" for i in range(1, 5)}
    assert abs(loop[-1].offset) < 1e-3  # it converged from the 100 ms it started with
    assert all(a.time <= b.time for a, b in itertools.pairwise(loop))


def test_plot_writes_png_pictures_and_a_page_embedding_them(recorded, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["plot", str(recorded), "-o", str(out)]) == 0
    for name in PICTURES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    page = (out / "index.html").read_text()
    for name in PICTURES:
        assert f'<img src="{name}"' in page
    assert "RMS offset" in page and "192.0.2.4" in page
    printed = capsys.readouterr().out
    assert "time span" in printed and "wrote offset.png" in printed


def test_plot_reads_each_file_once_even_under_two_names(recorded, tmp_path, capsys):
    assert main(["plot", str(recorded), "-o", str(tmp_path)]) == 0
    lines = len((recorded / "loopstats").read_text().splitlines())
    assert f"clock updates (loopstats lines)  {lines}\n" in capsys.readouterr().out


def test_plot_reads_rotated_and_compressed_generations_in_time_order(recorded, tmp_path, capsys):
    statsdir = tmp_path / "stats"
    statsdir.mkdir()
    lines = (recorded / "loopstats.20270115").read_text().splitlines(keepends=True)
    half = len(lines) // 2
    with gzip.open(statsdir / "loopstats.20270114.gz", "wt") as f:
        f.writelines(lines[half:])  # out of order on purpose: sorted by time when read
    (statsdir / "loopstats.20270115").write_text("".join(lines[:half]))
    assert main(["plot", str(statsdir), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"clock updates (loopstats lines)  {len(lines)}\n" in out
    assert "loopstats files read             2" in out


def test_lines_not_in_ntpds_format_are_skipped_and_counted(tmp_path, recorded, capsys):
    statsdir = tmp_path / "stats"
    statsdir.mkdir()
    good = (recorded / "loopstats").read_text()
    (statsdir / "loopstats.1").write_text(good + "garbage line\n61420 1.0 x\n\x00\xff\n")
    assert main(["plot", str(statsdir), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "loopstats lines skipped (not in ntpd's format)  3" in out
    assert "loopstats.1:" in out  # an example names the file and line
    assert "lines skipped" in (tmp_path / "out" / "index.html").read_text()


def test_since_and_until_select_a_time_span(recorded, tmp_path, capsys):
    lines = (recorded / "loopstats").read_text().splitlines()
    middle = parse_loopstats(lines[len(lines) // 2]).time
    assert main(["plot", str(recorded), "-o", str(tmp_path), "--since", str(middle)]) == 0
    assert "lines outside --since/--until" in capsys.readouterr().out
    assert main(["plot", str(recorded), "-o", str(tmp_path), "--since", "2027-01-15T00:00",
                 "--until", "2027-01-16"]) == 0


def test_an_unparseable_since_is_a_usage_error(recorded, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plot", str(recorded), "--since", "yesterday"])
    assert exc.value.code == 2
    assert "'yesterday' is not a time" in capsys.readouterr().err


def test_prefix_selects_renamed_file_sets(recorded, tmp_path):
    statsdir = tmp_path / "stats"
    statsdir.mkdir()
    (statsdir / "hostaloopstats.20270115").write_bytes((recorded / "loopstats").read_bytes())
    assert main(["plot", str(statsdir), "-o", str(tmp_path / "o"), "--prefix", "hosta"]) == 0
    assert (tmp_path / "o" / "offset.png").exists()
    assert not (tmp_path / "o" / "peer-offsets.png").exists()  # no peerstats: no picture


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 1
    return capsys.readouterr().err


def test_a_missing_stats_dir_is_a_clear_error(tmp_path, capsys):
    err = _error(["plot", str(tmp_path / "nope"), "-o", str(tmp_path)], capsys)
    assert "nope: no such directory" in err


def test_a_stats_dir_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert "f: not a directory" in _error(["plot", str(tmp_path / "f")], capsys)


def test_a_stats_dir_without_statistics_files_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "stats").mkdir()
    err = _error(["plot", str(tmp_path / "stats"), "-o", str(tmp_path / "o")], capsys)
    assert "no readable loopstats or peerstats files (the directory holds none)" in err
    assert not (tmp_path / "o").exists()


def test_statistics_files_that_cannot_be_read_are_named(tmp_path, capsys):
    (tmp_path / "stats").mkdir()
    os.mkfifo(tmp_path / "stats" / "loopstats.20270115")
    err = _error(["plot", str(tmp_path / "stats")], capsys)
    assert "loopstats.20270115: not a regular file" in err


def test_files_with_no_valid_line_are_a_clear_error(tmp_path, capsys):
    (tmp_path / "stats").mkdir()
    (tmp_path / "stats" / "peerstats.1").write_text("not statistics\n")
    err = _error(["plot", str(tmp_path / "stats")], capsys)
    assert "no statistics lines to plot (1 not in ntpd's format" in err


def test_an_unreadable_stats_dir_is_a_clear_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "stats").mkdir(mode=0)

    def listdir(path: str) -> list[str]:  # what a non-root user gets (tests run as root)
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(plot_module.os, "listdir", listdir)
    assert "permission denied" in _error(["plot", str(tmp_path / "stats")], capsys)


def test_without_matplotlib_the_error_says_how_to_install_it(recorded, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    err = _error(["plot", str(recorded)], capsys)
    assert "pip install 'pyntpd[plot]'" in err


def test_simulate_refuses_a_missing_stats_dir(tmp_path, capsys):
    err = _error(["simulate", "lan1", "--days", "0.01", "--stats", str(tmp_path / "x")],
                 capsys)
    assert "--stats: statsdir" in err and "does not exist" in err
