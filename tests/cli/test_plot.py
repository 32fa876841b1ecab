"""`pyntpctl plot`: pictures and a page from a recorded run; clear errors for bad input."""

from __future__ import annotations

import gzip
import itertools
import math
import os
import sys
from pathlib import Path

import pytest

from pyntpd.cli import plot as plot_module
from pyntpd.cli.pyntpctl import main
from pyntpd.stats.statsformat import LoopStats, PeerStats, parse_loopstats, parse_peerstats

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


# --- what the pictures and the summary show --------------------------------------------------

T0 = 1_800_000_000.0


def _loop(offsets: list[float], step: float = 64.0) -> list[LoopStats]:
    return [LoopStats(T0 + i * step, x, -100.0, 2e-5, 0.01, 6) for i, x in enumerate(offsets)]


def _noise(n: int, size: float = 2e-5) -> list[float]:
    return [size * math.sin(1.7 * i) for i in range(n)]


def test_the_warm_up_ends_when_the_offset_has_settled_into_its_steady_band():
    loop = _loop([0.1 * 0.5 ** i for i in range(20)] + _noise(200))
    start = plot_module.steady_start(loop)
    assert start is not None and T0 < start <= T0 + 20 * 64.0
    assert all(abs(r.offset) < 1e-3 for r in loop if r.time >= start)


def test_a_run_that_starts_settled_has_no_warm_up():
    loop = _loop(_noise(200))
    assert plot_module.steady_start(loop) == T0


def test_too_few_clock_updates_tell_no_warm_up_and_the_summary_says_so():
    loop = plot_module.SetData("loopstats", _loop([0.1, 0.05, 0.01]))
    rows = dict(plot_module.summary_rows(loop, plot_module.SetData("peerstats")))
    assert "cover the whole span" in rows["warm-up"] and "steady state" not in rows


def test_the_summary_figures_cover_the_steady_state_and_say_so():
    loop = plot_module.SetData("loopstats", _loop([0.1 * 0.5 ** i for i in range(20)]
                                                  + _noise(200)))
    rows = dict(plot_module.summary_rows(loop, plot_module.SetData("peerstats")))
    assert "left out of the figures below" in rows["warm-up"]
    assert rows["steady state"].startswith(plot_module._utc(plot_module.steady_start(
        loop.records)))
    assert rows["RMS offset"].endswith("µs")  # not the cold start's 100 ms
    assert rows["max |offset| in the warm-up"] == "100.000 ms"


def _falseticker_peers() -> plot_module.SetData:
    records = []
    for i in range(100):
        t = T0 + i * 64.0
        records.append(PeerStats(t, "192.0.2.1", 0x9614, _noise(100)[i], 0.002, 0.0, 1e-4))
        liar = 0.05 if i < 50 else 3600.0
        records.append(PeerStats(t, "192.0.2.66", 0x9114, liar, 0.002, 0.0, 1e-4))
    return plot_module.SetData("peerstats", records)


def test_a_falseticker_is_summarised_by_median_range_and_condition_not_an_rms():
    rows = dict(plot_module.summary_rows(plot_module.SetData("loopstats"),
                                         _falseticker_peers()))
    liar = rows["peer 192.0.2.66"]
    assert "median offset" in liar and "to 3600.000000 s" in liar
    assert "falsetick 100%" in liar and "RMS" not in liar
    assert "sys.peer 100%" in rows["peer 192.0.2.1"]


def _drawn(monkeypatch, tmp_path, loop: plot_module.SetData,
           peers: plot_module.SetData) -> dict[str, object]:
    figures: dict[str, object] = {}

    def keep(plt, fig, outdir, name):  # the figure as drawn, before it is saved and closed
        figures[name] = fig
        return name

    monkeypatch.setattr(plot_module, "_save", keep)
    plot_module.draw(plot_module._pyplot(), loop, peers, str(tmp_path))
    return figures


def test_every_source_has_its_own_panel_at_its_own_scale(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    figures = _drawn(monkeypatch, tmp_path, plot_module.SetData("loopstats"),
                     _falseticker_peers())
    honest, liar = figures["peer-offsets.png"].axes  # type: ignore[attr-defined]
    assert honest.get_title(loc="left").startswith("192.0.2.1: sys.peer")
    assert liar.get_title(loc="left").startswith("192.0.2.66: falsetick")
    assert "(µs)" in honest.get_ylabel() and "(s)" in liar.get_ylabel()
    low, high = liar.get_ylim()
    assert low < 0.05 and high > 3600  # both of its levels are on the plot


def test_what_lies_beyond_the_scale_is_marked_and_said(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    loop = plot_module.SetData("loopstats", _loop([0.1 * 0.5 ** i for i in range(20)]
                                                  + _noise(200)))
    figures = _drawn(monkeypatch, tmp_path, loop, plot_module.SetData("peerstats"))
    (ax,) = figures["offset.png"].axes  # type: ignore[attr-defined]
    _, high = ax.get_ylim()
    assert high < 1e2 and "(µs)" in ax.get_ylabel()  # the steady state's scale
    assert "points beyond the scale" in ax.get_title(loc="right")
    assert "100.000 ms" in ax.get_title(loc="right")
    assert "warm-up" in ax.get_legend_handles_labels()[1][0]


def test_the_frequency_panel_is_scaled_to_the_steady_state(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    records = [LoopStats(T0 + i * 64.0, 0.0, -100.0 + (8.0 * 0.7 ** i) + 0.01 * math.sin(i),
                         2e-5, 0.01, 6) for i in range(200)]
    figures = _drawn(monkeypatch, tmp_path, plot_module.SetData("loopstats", records),
                     plot_module.SetData("peerstats"))
    (ax,) = figures["frequency.png"].axes  # type: ignore[attr-defined]
    low, high = ax.get_ylim()
    assert high - low < 0.1 and low > -100.1  # not stretched to the start's +8 ppm
