"""`pyntpctl simulate`: the report, the CSV, and no plot without matplotlib."""

import csv
import importlib.util

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


def test_simulate_plot_needs_matplotlib(tmp_path, capsys):
    png = tmp_path / "o.png"
    main(["simulate", "lan1", "--days", "0.01", "--plot", str(png)])
    captured = capsys.readouterr()
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in captured.err and not png.exists()
    else:
        assert png.exists()


def test_panic_scenario_exits_non_zero(capsys):
    assert main(["simulate", "cold-start-2000", "--days", "0.01"]) == 1
    assert "PANIC" in capsys.readouterr().out
