"""`pyntpctl simulate`: the report, the CSV, and no plot without matplotlib."""

import csv
import importlib.util

import pytest

from pyntpd.cli.pyntpctl import main


def test_simulate_prints_the_report_and_writes_csv(tmp_path, capsys):
    out = tmp_path / "offsets.csv"
    assert main(["simulate", "lan1", "--minpoll", "4", "--maxpoll", "4", "--days", "0.05",
                 "--seed", "2", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "RMS offset" in text and "first sync (1 ms)" in text and "seed 2" in text
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["time_s", "offset_s", "rate_error_ppm"]
    assert len(rows) == 1 + int(0.05 * 86400)


def test_simulate_plot_without_matplotlib_fails_with_the_install_hint(tmp_path, capsys,
                                                                      monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    png = tmp_path / "o.png"
    assert main(["simulate", "lan1", "--days", "0.01", "--plot", str(png)]) == 1
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and "pip install 'pyntpd[plot]'" in err
    assert not png.exists()


def test_simulate_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "o.png"
    assert main(["simulate", "lan1", "--days", "0.05", "--plot", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "plot written to" in capsys.readouterr().out


def test_panic_scenario_exits_non_zero(capsys):
    assert main(["simulate", "cold-start-2000", "--days", "0.01"]) == 1
    assert "PANIC" in capsys.readouterr().out
