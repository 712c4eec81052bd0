"""`singledir reproduce`: a tiny run through the default process pool (progress, claims
table, where the report is), and every bad input as a one-line error with exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from singledir.cli.app import main


def _run(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "argv", ["singledir", *argv])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_reproduce_tiny_through_process_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "res"
    argv = ["reproduce", "selectivity", "--preset", "tiny", "--out", str(out), "--workers", "2"]
    code = _run([*argv, "--seeds", "2", "--epochs", "3"], monkeypatch)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = " ".join(captured.out.split())
    assert "Report:" in text and str(out / "report.html") in text.replace(" ", "")
    assert "Fig. 7" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["experiment"] == "selectivity"
    assert manifest["settings"]["epochs"] == 3 and manifest["seeds"] == [0, 1]
    assert "process pool (2 workers" in manifest["executor"]
    assert (out / "report.html").exists() and (out / "report.md").exists()
    # the same command again reuses both runs
    code = _run([*argv, "--seeds", "2", "--epochs", "3", "--quiet"], monkeypatch)
    assert code == 0
    assert "2 reused" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["reproduce", "fig9"], "unknown experiment 'fig9'"),
        (["reproduce", "corruption", "--preset", "huge"], "unknown preset 'huge'"),
        (
            ["reproduce", "corruption", "--dataset", "imagenet"],
            "quick preset cannot use dataset 'imagenet'",
        ),
        (["reproduce", "corruption", "--fractions", "0,x"], "comma-separated"),
        (["reproduce", "corruption", "--executor", "dask"], "unknown executor"),
        (
            ["reproduce", "corruption", "--address", "127.0.0.1:1"],
            "only used by --executor ray",
        ),
    ],
)
def test_bad_input_is_one_line_error(
    argv: list[str],
    pattern: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "never"
    code = _run([*argv, "--out", str(out), "--preset", "tiny"][: len(argv) + 2], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2
    assert pattern in " ".join(err.split())
    assert "Traceback" not in err
    assert err.strip().startswith("error:")
    assert not out.exists()


def test_out_dir_of_another_experiment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"experiment": "ensemble"}))
    code = _run(["reproduce", "corruption", "--out", str(tmp_path)], monkeypatch)
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "holds results of experiment 'ensemble'" in err and "--out" in err


def test_unreachable_ray_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["reproduce", "corruption", "--preset", "tiny", "--out", str(tmp_path / "r")]
    code = _run([*argv, "--executor", "ray", "--address", f"127.0.0.1:{port}"], monkeypatch)
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "unreachable" in err and "ray start --head" in err


def test_help_has_example(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    code = _run(["reproduce", "--help"], monkeypatch)
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0 and "Example: singledir reproduce corruption" in out


def test_missing_dataset_fails_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SINGLEDIR_DATA", raising=False)
    out = tmp_path / "r"
    argv = ["reproduce", "corruption", "--dataset", "mnist", "--data-dir", str(tmp_path / "no")]
    code = _run([*argv, "--out", str(out)], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and err.strip().startswith("error:") and "Traceback" not in err
    assert "mnist" in err.lower()
    assert not out.exists()
