"""`singledir stats`: output equals the library's, and every bad input gives one line, exit 2,
no traceback and no output file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import singledir as sd
from singledir.cli.app import main


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["singledir", "stats", *args])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else int(code)), out, err


def activations(n: int = 60, units: int = 5, k: int = 3, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    frames = []
    for layer, width in (("relu1", units), ("relu2", units + 2)):
        a = np.maximum(rng.normal(size=(n, width)) + (y[:, None] == 1), 0).astype(np.float32)
        s, u = np.meshgrid(np.arange(n), np.arange(width), indexing="ij")
        frames.append(
            pl.DataFrame(
                {
                    "layer": layer,
                    "unit": u.ravel(),
                    "sample": s.ravel(),
                    "label": y[s.ravel()],
                    "activation": pl.Series(a.ravel(), dtype=pl.Float32),
                }
            )
        )
    return pl.concat(frames)


@pytest.fixture
def acts_file(tmp_path: Path) -> Path:
    path = tmp_path / "acts.parquet"
    activations().write_parquet(path)
    return path


def test_writes_parquet_and_csv_equal_to_library(monkeypatch, capsys, acts_file, tmp_path):
    out = tmp_path / "units.parquet"
    code, stdout, err = run_cli(monkeypatch, capsys, str(acts_file), "--out", str(out))
    assert code == 0, err
    table = pl.read_parquet(out)
    assert table.equals(sd.stats_from_activations(acts_file))
    assert table.height == 5 + 7
    assert "relu1" in stdout and "relu2" in stdout and "mean SI" in stdout
    # The printed per-layer figures are those of the table.
    relu2 = table.filter(pl.col("layer") == "relu2")
    assert f"{relu2['selectivity'].median():.3f}" in stdout
    assert f"{relu2['mutual_info'].mean():.4f}" in stdout

    csv = tmp_path / "units.csv"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        str(acts_file),
        "--out",
        str(csv),
        "--bins",
        "4",
        "--binning",
        "equal-frequency",
        "--shuffles",
        "2",
        "--seed",
        "5",
        "--bias-correction",
        "--normalize",
    )
    assert code == 0, err
    expect = sd.stats_from_activations(
        acts_file,
        bins=4,
        binning="equal_frequency",
        shuffle_baseline=2,
        seed=5,
        bias_correction=True,
        normalize=True,
    )
    got = pl.read_csv(csv)
    assert got.columns == expect.columns
    np.testing.assert_allclose(got["mutual_info"].to_numpy(), expect["mutual_info"].to_numpy())
    assert got["shuffle_seed"].to_list() == [5] * expect.height
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "acts.parquet",
        "units.csv",
        "units.parquet",
    ]


def write(tmp_path: Path, frame: pl.DataFrame) -> Path:
    path = tmp_path / "bad.parquet"
    frame.write_parquet(path)
    return path


GOOD = activations(n=12, units=2)

BAD_TABLES = {
    "missing column": (GOOD.drop("sample"), "lacks column(s) sample"),
    "misnamed column": (GOOD.rename({"label": "class"}), "lacks column(s) label"),
    "float labels": (GOOD.with_columns(pl.col("label").cast(pl.Float64)), "'label' has dtype"),
    "string activation": (
        GOOD.with_columns(pl.col("activation").cast(pl.String)),
        "'activation' has dtype",
    ),
    "integer layer": (GOOD.with_columns(layer=pl.lit(1)), "'layer' has dtype"),
    "nan activity": (
        GOOD.with_columns(
            activation=pl.when(pl.col("sample") == 3)
            .then(float("nan"))
            .otherwise(pl.col("activation"))
        ),
        "NaN or inf",
    ),
    "inf activity": (
        GOOD.with_columns(
            activation=pl.when(pl.col("sample") == 3)
            .then(float("inf"))
            .otherwise(pl.col("activation"))
        ),
        "NaN or inf",
    ),
    "negative label": (
        GOOD.with_columns(label=pl.when(pl.col("sample") == 0).then(-2).otherwise("label")),
        "label -2",
    ),
    "class with no samples": (
        GOOD.with_columns(label=pl.col("label") * 2),
        "no samples of class 1",
    ),
    "negative activity": (
        GOOD.with_columns(activation=pl.col("activation") - 5),
        "negative activity",
    ),
    "no rows": (GOOD.clear(), "has no rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_tables(monkeypatch, capsys, tmp_path, case):
    frame, message = BAD_TABLES[case]
    out = tmp_path / "units.parquet"
    path = write(tmp_path, frame)
    code, _, err = run_cli(monkeypatch, capsys, str(path), "--out", str(out))
    assert_one_line_failure(code, err, message, tmp_path, ["bad.parquet"])


def assert_one_line_failure(code, err, message, folder, expected_files):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected_files)


def test_bad_paths_and_options(monkeypatch, capsys, acts_file, tmp_path):
    (tmp_path / "text.parquet").write_text("this is not parquet\n")
    (tmp_path / "zero.parquet").write_bytes(b"")
    present = ["acts.parquet", "text.parquet", "zero.parquet"]
    out = str(tmp_path / "units.parquet")
    cases = [
        ([str(tmp_path / "nope.parquet"), "--out", out], "does not exist"),
        ([str(tmp_path / "text.parquet"), "--out", out], "not a readable parquet file"),
        ([str(tmp_path / "zero.parquet"), "--out", out], "is empty"),
        ([str(tmp_path), "--out", out], "is a folder"),
        ([str(acts_file), "--out", str(tmp_path / "no" / "units.parquet")], "does not exist"),
        ([str(acts_file), "--out", str(tmp_path / "units.txt")], "must end in .parquet or .csv"),
        ([str(acts_file), "--out", out, "--bins", "1"], "give an integer from 2 to"),
        ([str(acts_file), "--out", out, "--binning", "log"], "unknown binning"),
        ([str(acts_file), "--out", out, "--negative", "abs"], "unknown negative policy"),
        ([str(acts_file), "--out", out, "--num-classes", "2"], "out of range for num_classes"),
        ([str(acts_file), "--out", out, "--shuffles", "-1"], "give an integer from 0 to 100000"),
        ([str(acts_file), "--out", out, "--shuffles", "2000000000"], "from 0 to 100000"),
        ([str(acts_file), "--out", out, "--bins", "1e23"], "from 2 to 2147483647"),
        ([str(acts_file), "--out", out, "--num-classes", "0"], "from 1 to 2147483647"),
    ]
    for args, message in cases:
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert_one_line_failure(code, err, message, tmp_path, present)


def test_negative_policy_option(monkeypatch, capsys, tmp_path):
    frame, _ = BAD_TABLES["negative activity"]
    path = write(tmp_path, frame)
    out = tmp_path / "units.parquet"
    code, _, err = run_cli(monkeypatch, capsys, str(path), "--out", str(out), "--negative", "shift")
    assert code == 0, err
    assert pl.read_parquet(out).equals(sd.stats_from_activations(path, negative="shift"))


def test_real_entry_point_has_no_traceback(tmp_path, acts_file):
    # The installed console script path, end to end, in a fresh interpreter.
    code = "from singledir.cli.app import main; main()"
    bad = subprocess.run(
        [sys.executable, "-c", code, "stats", str(tmp_path / "missing.parquet")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    good = subprocess.run(
        [sys.executable, "-c", code, "stats", str(acts_file)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "units.parquet").is_file()  # the default --out
    helptext = subprocess.run(
        [sys.executable, "-c", code, "stats", "--help"], capture_output=True, text=True
    )
    assert "Example: singledir stats" in helptext.stdout
