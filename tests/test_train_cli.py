"""`singledir train`: a run end to end, its help, and one-line errors on bad input."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from cli_runner import run_cli
from singledir.checkpoint import load_checkpoint

BASE = ["train", "--dataset", "digits", "--widths", "16,16", "--threads", "1", "--device", "cpu"]


def test_train_command_end_to_end(tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs" / "mlp"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        *BASE,
        "--epochs",
        "3",
        "--corrupt",
        "0.5",
        "--dropout",
        "0.2",
        "--batchnorm",
        "--snapshot-every",
        "2",
        "--optimizer",
        "adam",
        "--lr",
        "0.003",
        "--schedule",
        "cosine",
        "--train-size",
        "600",
        "--seed",
        "3",
        "--out",
        str(out),
    )
    assert code == 0, err
    metrics = pl.read_parquet(out / "metrics.parquet")
    assert metrics["epoch"].to_list() == [1, 2, 3]
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [
        "epoch_0000.pt",
        "epoch_0002.pt",
    ]
    ck = load_checkpoint(out / "ckpt.pt")
    assert ck.config["widths"] == [16, 16] and ck.config["batchnorm"] is True
    assert ck.config["dropout"] == 0.2
    assert ck.meta["corrupt"] == 0.5 and ck.meta["seed"] == 3 and ck.meta["num_train"] == 600
    assert ck.meta["train_config"]["schedule"] == "cosine"
    # The table shows the last epoch's test accuracy as stored in the metrics file.
    assert f"{metrics['test_acc'][-1]:.2%}" in err
    assert "checkpoint" in err and "Traceback" not in err

    # A different run into the same folder is refused rather than mixed in.
    code, _, err = run_cli(
        monkeypatch, capsys, *BASE, "--epochs", "1", "--quiet", "--out", str(out)
    )
    assert code == 2 and "different batchnorm, corrupt" in err and "--no-resume" in err


def test_quiet_prints_the_checkpoint_path(tmp_path, monkeypatch, capsys):
    out = tmp_path / "q"
    code, stdout, err = run_cli(
        monkeypatch, capsys, *BASE, "--epochs", "1", "-q", "--out", str(out)
    )
    assert code == 0, err
    assert stdout.strip() == str(out / "ckpt.pt")
    assert err == ""


def test_help_has_an_example(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "train", "--help")
    assert code == 0
    assert "Example:" in out and "--corrupt" in out and "--snapshot-every" in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "svhn"], "unknown dataset 'svhn'"),
        (["--model", "vgg"], "unknown model 'vgg'"),
        (["--corrupt", "1.5"], "outside [0, 1]"),
        (["--widths", "512,abc"], "do not parse"),
        (["--dropout", "1"], "dropout"),
        (["--optimizer", "lbfgs"], "unknown optimizer"),
        (["--snapshot-epochs", "1,x"], "do not parse"),
        (["--snapshot-epochs", "99", "--epochs", "2"], "fall outside"),
        (["--train-size", "100000"], "train_size"),
    ],
)
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, args, message):
    code, out, err = run_cli(monkeypatch, capsys, *BASE, *args, "--out", str(tmp_path / "r"))
    assert code == 2
    assert err.startswith("error:") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_data_names_files_and_places(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SINGLEDIR_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        *BASE,
        "--dataset",
        "mnist",
        "--data-dir",
        str(empty),
        "--out",
        str(tmp_path / "r"),
    )
    assert code == 2 and err.count("\n") == 1
    assert "train-images-idx3-ubyte" in err and str(empty) in err and "--data-dir" in err


def test_interrupted_command_resumes(tmp_path, monkeypatch, capsys):
    import singledir.train as train_mod

    out = tmp_path / "r"
    original = train_mod.train

    def interrupt_after_first_epoch(*a, **kw):
        def stop(row):
            if row["epoch"] == 1:
                raise KeyboardInterrupt

        kw["on_epoch"] = stop
        return original(*a, **kw)

    monkeypatch.setattr(train_mod, "train", interrupt_after_first_epoch)
    code, _, err = run_cli(monkeypatch, capsys, *BASE, "--epochs", "2", "--out", str(out))
    assert code == 130 and "run the same command again to resume" in err
    assert (out / "resume.pt").is_file() and not (out / "ckpt.pt").exists()
    monkeypatch.setattr(train_mod, "train", original)
    code, _, err = run_cli(monkeypatch, capsys, *BASE, "--epochs", "2", "--out", str(out))
    assert code == 0 and "resumed after epoch 1" in err
    ref = original(
        {"dataset": "digits", "widths": [16, 16], "epochs": 2, "device": "cpu", "threads": 1},
        tmp_path / "ref",
        progress=False,
    )
    a = load_checkpoint(out / "ckpt.pt").model.state_dict()
    b = load_checkpoint(ref.checkpoint).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
