"""The checkpoint-to-data contract (singledir.evaluation, CheckpointMeta) and the one home of
per-unit scores (singledir.unit_scores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from singledir.checkpoint import CheckpointMeta, load_checkpoint
from singledir.data import load_dataset
from singledir.errors import CheckpointError, ConfigError, DataError
from singledir.evaluation import load_for_evaluation, load_split, site_units_of
from singledir.train import TrainConfig, train
from singledir.unit_scores import join_unit_scores, scores_frame, scores_from_table

RUN = {
    "dataset": "digits",
    "widths": [16],
    "epochs": 1,
    "batch_size": 64,
    "lr": 0.01,
    "device": "cpu",
    "threads": 1,
    "train_size": 300,
    "data_seed": 5,
    "corrupt": 0.4,
    "corrupt_seed": 9,
    "seed": 2,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    return train(TrainConfig(**RUN), out, progress=False).checkpoint


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def test_train_writes_the_meta_every_reader_uses(trained: Path) -> None:
    ckpt = load_checkpoint(trained)
    meta = ckpt.data_meta
    assert meta == CheckpointMeta.from_dict(ckpt.meta)
    assert (meta.dataset, meta.data_seed, meta.train_size) == ("digits", 5, 300)
    assert (meta.corrupt, meta.corrupt_seed, meta.seed, meta.epoch) == (0.4, 9, 2, 1)
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta


def test_train_split_is_the_one_training_measured(trained: Path) -> None:
    model, data, info = load_for_evaluation(trained, "train")
    ref = load_dataset("digits", "train", train_size=300, seed=5, corrupt=0.4, corrupt_seed=9)
    assert torch.equal(data.y, ref.y) and torch.equal(data.x, ref.x)
    assert not torch.equal(data.y, data.true_y)  # the checkpoint's own corrupted labels
    metrics = load_checkpoint(trained).meta["metrics"]
    assert _accuracy(model, data.x, data.y) == pytest.approx(metrics["train_acc"], abs=1e-12)
    assert info.n_samples == 300 and info.corrupt == 0.4 and info.corrupt_seed == 9
    assert info.split == "train" and info.train_size == 300 and info.test_size is None


def test_train_split_leaves_out_the_validation_split(tmp_path: Path) -> None:
    run = train(TrainConfig(**{**RUN, "val_fraction": 0.25}), tmp_path / "r", progress=False)
    meta = load_checkpoint(run.checkpoint).meta
    model, data, info = load_for_evaluation(run.checkpoint, "train")
    assert len(data) == info.n_samples == meta["num_train"] == 300 - 75
    full = load_dataset("digits", "train", train_size=300, seed=5, corrupt=0.4, corrupt_seed=9)
    assert set(data.indices.tolist()) < set(full.indices.tolist())
    assert _accuracy(model, data.x, data.y) == pytest.approx(meta["metrics"]["train_acc"])


def test_test_split_is_never_corrupted(trained: Path) -> None:
    model, data, info = load_for_evaluation(trained, "test")
    assert torch.equal(data.y, data.true_y) and info.corrupt == 0.0
    metrics = load_checkpoint(trained).meta["metrics"]
    assert _accuracy(model, data.x, data.y) == pytest.approx(metrics["test_acc"], abs=1e-12)


def test_overrides(trained: Path, tmp_path: Path) -> None:
    _, data, info = load_for_evaluation(trained, "train", train_size=50)
    assert len(data) == 50 and info.train_size == 50
    with pytest.raises(DataError, match="--data-dir"):
        load_for_evaluation(trained, "train", data_dir=tmp_path / "missing")
    with pytest.raises(ConfigError, match="split"):
        load_split(CheckpointMeta(dataset="digits"), "validation")
    with pytest.raises(ConfigError, match="--dataset"):
        load_split(CheckpointMeta(), "test")


def test_another_dataset_drops_the_recorded_corruption() -> None:
    meta = CheckpointMeta(dataset="mnist", corrupt=0.5, corrupt_seed=1)
    data = load_split(meta, "train", dataset="digits")
    assert torch.equal(data.y, data.true_y)


def test_a_recorded_folder_that_is_gone_falls_back(tmp_path: Path) -> None:
    meta = CheckpointMeta(dataset="digits", data_dir=str(tmp_path / "other-machine"))
    assert len(load_split(meta, "test")) == len(load_dataset("digits", "test"))


def test_meta_reads_older_checkpoints_and_refuses_junk() -> None:
    legacy = CheckpointMeta.from_dict(
        {"dataset": "mnist", "seed": 3, "train_config": {"data_dir": "/data"}}
    )
    assert legacy.data_seed == 3 and legacy.data_dir == "/data" and legacy.corrupt == 0.0
    assert CheckpointMeta.from_dict(None) == CheckpointMeta()
    for bad in ({"train_size": "many"}, {"corrupt": "x"}, {"corrupt": float("nan")}):
        with pytest.raises(CheckpointError, match="metadata"):
            CheckpointMeta.from_dict(bad)


def test_site_units(trained: Path) -> None:
    model, data, _ = load_for_evaluation(trained, "test")
    sites, units = site_units_of(model, data, "all")
    assert sites == ["relu1"] and units == {"relu1": 16}


# --------------------------------------------------------------------------- unit scores


def _units(n: int = 4) -> pl.DataFrame:
    return pl.DataFrame(
        {"layer": ["a"] * n, "unit": list(range(n)), "score": [float(v) for v in range(n)]}
    )


def test_scores_from_table_by_unit_index_not_row_order() -> None:
    table = _units().reverse()
    got = scores_from_table(table, "score", ["a"], {"a": 4})
    np.testing.assert_array_equal(got["a"], [0.0, 1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "unit", [["0", "1", "2", "3"], [0.0, 1.0, 2.0, 3.0]], ids=["text", "float"]
)
def test_unit_column_must_hold_integers(unit: list[object], tmp_path: Path) -> None:
    table = _units().with_columns(pl.Series("unit", unit))
    with pytest.raises(DataError, match="'unit' column .* not integers"):
        scores_from_table(table, "score", ["a"], {"a": 4})
    path = tmp_path / "units.csv"
    table.write_csv(path)
    if table["unit"].dtype == pl.Float64:
        with pytest.raises(DataError, match="not integers"):
            scores_from_table(path, "score", ["a"], {"a": 4})


def test_layer_column_must_hold_names() -> None:
    table = _units().with_columns(pl.Series("layer", [1, 1, 1, 1]))
    with pytest.raises(DataError, match="'layer' column"):
        scores_from_table(table, "score", ["a"], {"a": 4})


def test_join_keeps_the_first_tables_columns() -> None:
    left = _units().with_columns(pl.lit(1.0).alias("shared"))
    right = _units().with_columns(pl.lit(2.0).alias("shared"), pl.lit(3.0).alias("extra"))
    joined = join_unit_scores(left, right)
    assert joined.columns == ["layer", "unit", "score", "shared", "extra"]
    assert joined["shared"].to_list() == [1.0] * 4 and joined["extra"].to_list() == [3.0] * 4
    with pytest.raises(DataError, match="lacks unit"):
        join_unit_scores(left, right.drop("unit"))


def test_scores_frame_round_trips() -> None:
    scores = {"a": np.array([0.5, 0.25]), "b": np.array([1.0])}
    frame = scores_frame(scores, "selectivity")
    assert frame["layer"].to_list() == ["a", "a", "b"] and frame["unit"].dtype == pl.Int64
    back = scores_from_table(frame, "selectivity", ["a", "b"], {"a": 2, "b": 1})
    np.testing.assert_array_equal(back["a"], scores["a"])
