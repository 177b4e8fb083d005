"""`slam-bench sweep`: a tiny smoke sweep writes its summary CSV and plot, with one line per
(value, cell), the value applied to the swept method only and its fitted values logged."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from slam_bench.cli import main
from slam_bench.cli.sweep import SUMMARY_COLUMNS, parse_value, parse_values
from slam_bench.store import read_rows


def test_smoke_sweep_writes_summary_and_plot(tmp_path, capsys):
    argv = ["sweep", "known_noise", "--smoke", "--trials", "2", "--method", "forward",
            "--param", "smoothing", "--values", "0,4.5", "--out", str(tmp_path), "--device", "cpu"]
    assert main(argv) == 0
    folder = tmp_path / "sweeps"
    table = pd.read_csv(folder / "known_noise.forward.smoothing.csv")
    assert list(table.columns[:len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert table["value"].tolist() == [0, 4.5] and set(table["cell"]) == {"known_noise_100_model"}
    assert (table["n"] == 2).all() and table["mean"].between(0, 100).all()
    # The value reached the fit: the logged smoothing is the swept one, per value.
    assert table["transition_smoothing"].tolist() == [0.0, 4.5]
    assert table["transition_diag_mean"].between(0, 1).all()
    assert "k" not in table.columns  # nothing of another method
    png = (folder / "known_noise.forward.smoothing.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # Raw rows: one file per value, only the swept method, its column holding the value, and
    # the standard deviation of each line recomputed from them.
    for value in (0, 4.5):
        rows = read_rows(folder / "runs" / f"known_noise.forward.smoothing={value}.csv")
        assert set(rows["method"]) == {"forward"} and (rows["smoothing"] == value).all()
        line = table[table["value"] == value].iloc[0]
        assert line["std"] == pytest.approx(float((100 * rows["test_acc"]).std(ddof=1)), abs=1e-3)
    # A rerun resumes: every trial is already recorded.
    assert main(argv) == 0
    assert "already recorded" in capsys.readouterr().out


@pytest.mark.parametrize("argv,pattern", [
    (["--method", "forward", "--param", "nope", "--values", "1"], "no hyper-parameter 'nope'"),
    (["--method", "teacher", "--param", "k", "--values", "1"], "trains no student"),
    (["--method", "ups", "--param", "tau_p", "--values", "0.5"], "not among suite"),
    (["--method", "forward", "--param", "smoothing", "--values", "1,,2"], "no empty entry"),
    (["--method", "forward", "--param", "smoothing", "--values", "1,1"], "repeated"),
    (["--method", "forward", "--param", "smoothing", "--values", "a/b"], "letters, digits"),
    (["--method", "forward", "--param", "n_val", "--values", "50,0.5"], "must be ints >= 1"),
])
def test_bad_sweep_arguments_are_one_line_exit_2(tmp_path, capsys, argv, pattern):
    assert main(["sweep", "known_noise", "--smoke", "--out", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err
    assert pattern in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "sweeps").exists()


def test_sweep_over_the_size_of_v(tmp_path):
    """--param n_val varies |V| (a suite size, not a hyper-parameter): rows spend it."""
    assert main(["sweep", "known_noise", "--smoke", "--trials", "1", "--method", "slam",
                 "--param", "n_val", "--values", "40,120", "--out", str(tmp_path),
                 "--device", "cpu"]) == 0
    table = pd.read_csv(tmp_path / "sweeps" / "known_noise.slam.n_val.csv")
    assert table["value"].tolist() == [40, 120] and table["val_size"].tolist() == [40, 120]
    assert table["std"].isna().all()  # n = 1: no spread to report
    assert table["k"].between(2, 10).all()


def test_value_parsing():
    assert [parse_value(v) for v in parse_values("2,0.5,none,auto")] == [2, 0.5, None, "auto"]
    assert math.isinf(parse_value("inf"))
