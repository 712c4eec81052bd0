"""Every class of bad input of issue 11, across every command that takes that kind of input:
a one-line `error:` (no traceback, no usage block), exit code 2, and nothing written.

The classes: output paths (an existing folder or file, a path under a file, a missing
parent), numbers beyond the integer range, an IDX header claiming an impossible size, a
``--scores`` table whose ``unit`` column is not integer, brackets in messages (rich markup),
``--device`` checked before anything is written, and a named ``--data-dir`` that is missing
(never a silent fall back to ``$SINGLEDIR_DATA``).
"""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from singledir.activations import record_activations
from singledir.checkpoint import save_checkpoint
from singledir.data import load_dataset, read_idx
from singledir.errors import DataError
from singledir.models import build_model

CONFIG = {"arch": "mlp", "in_shape": [1, 8, 8], "num_classes": 10, "widths": [6]}
# The commands that evaluate a checkpoint (they share every checkpoint-side option).
EVALUATORS = ("ablate", "noise", "importance", "record")
FILE_OUTPUTS = (*EVALUATORS, "stats")
FOLDER_OUTPUTS = ("train", "reproduce")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    model = build_model(CONFIG)
    meta = {"dataset": "digits", "seed": 0, "data_seed": 0, "test_size": 40, "train_size": 40}
    ckpt = save_checkpoint(root / "mlp.pt", model, CONFIG, meta)
    torch.save(model.state_dict(), root / "plain.pt")  # a user's own state dict
    acts = root / "acts.parquet"
    data = load_dataset("digits", "test", test_size=40)
    record_activations(model, data, "all", progress=False).write_parquet(acts)
    return {"ckpt": ckpt, "acts": acts, "plain": root / "plain.pt"}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from singledir.cli.app import main

    old = sys.argv
    sys.argv = ["singledir", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


def _refused(
    argv: list[str], capsys: pytest.CaptureFixture[str], folder: Path, *needles: str
) -> str:
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    code, err = _run(argv, capsys)
    text = err.strip()
    assert code == 2, (argv, err)
    assert "Traceback" not in err and len(text.splitlines()) == 1, text
    assert text.startswith("error:"), text
    for needle in needles:
        assert needle in text, (needle, text)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before, "wrote files"
    return text


def _base(command: str, files: dict[str, Path], out: Path) -> list[str]:
    """A command line that would succeed, writing to ``out``."""
    if command in EVALUATORS:
        return [command, str(files["ckpt"]), "--out", str(out), "--quiet"]
    if command == "stats":
        return [command, str(files["acts"]), "--out", str(out)]
    if command == "train":
        return [command, "--widths", "4", "--epochs", "1", "--out", str(out), "-q"]
    return [command, "selectivity", "--preset", "tiny", "--out", str(out), "-q"]


# -------------------------------------------------------------------------- output paths


@pytest.mark.parametrize("command", FILE_OUTPUTS)
def test_file_outputs(
    command: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    (tmp_path / "a_folder.parquet").mkdir()
    folder_out = tmp_path / "a_folder.parquet"
    _refused(_base(command, files, folder_out), capsys, tmp_path, "is a folder")
    under = taken / "out.parquet"
    _refused(_base(command, files, under), capsys, tmp_path, "which is a file")
    missing = tmp_path / "no" / "out.parquet"
    _refused(_base(command, files, missing), capsys, tmp_path, "does not exist")
    assert taken.read_text() == "keep me"


@pytest.mark.parametrize("command", ["ablate", "noise", "importance"])
def test_plot_path_under_a_file(
    command: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("x")
    argv = [*_base(command, files, tmp_path / "o.parquet"), "--plot", str(taken / "p.png")]
    _refused(argv, capsys, tmp_path, "which is a file")


@pytest.mark.parametrize("command", FOLDER_OUTPUTS)
def test_folder_outputs(
    command: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    _refused(_base(command, files, taken), capsys, tmp_path, "is a file")
    _refused(_base(command, files, taken / "run"), capsys, tmp_path, "which is a file")
    assert taken.read_text() == "keep me"


# ------------------------------------------------------------------------------- numbers

INTEGER_OPTIONS = [
    ("ablate", "--orderings"),
    ("ablate", "--seed"),
    ("ablate", "--batch-size"),
    ("noise", "--repeats"),
    ("noise", "--memory-budget-mb"),
    ("importance", "--top"),
    ("importance", "--num-classes"),
    ("record", "--batch-size"),
    ("record", "--test-size"),
    ("stats", "--bins"),
    ("stats", "--shuffles"),
    ("stats", "--num-classes"),
    ("train", "--epochs"),
    ("train", "--batch-size"),
    ("train", "--seed"),
    ("reproduce", "--seeds"),
    ("reproduce", "--workers"),
    ("reproduce", "--epochs"),
]


@pytest.mark.parametrize("value", ["1e23", "99999999999999999999999", "-1e30"])
@pytest.mark.parametrize(("command", "option"), INTEGER_OPTIONS)
def test_integers_beyond_range(
    command: str,
    option: str,
    value: str,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [*_base(command, files, tmp_path / "out.parquet"), option, value]
    _refused(argv, capsys, tmp_path, option)


@pytest.mark.parametrize(
    ("command", "option"),
    [
        ("ablate", "--orderings"),
        ("noise", "--repeats"),
        ("reproduce", "--seeds"),
        ("reproduce", "--orderings"),
        ("reproduce", "--ensemble-size"),
    ],
)
def test_counts_that_would_plan_billions_of_passes(
    command: str, option: str, files: dict[str, Path], tmp_path: Path, capsys
) -> None:
    argv = [*_base(command, files, tmp_path / "out.parquet"), option, "2000000000"]
    _refused(argv, capsys, tmp_path, option, "out of range")


@pytest.mark.parametrize("command", [*EVALUATORS, "sites"])
def test_a_class_count_that_does_not_match_the_weights(
    command: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before the model is built: 10**9 classes would allocate gigabytes first.
    argv = [*_base(command, files, tmp_path / "o.parquet")]
    argv[1] = str(files["plain"])
    if command == "sites":
        argv = ["sites", str(files["plain"])]
    argv += ["--arch", "mlp", "--dataset", "digits", "--num-classes", "1000000000"]
    _refused(argv, capsys, tmp_path, "--num-classes 1000000000", "10 outputs")


# ---------------------------------------------------------------------------------- files


def _mnist_folder(root: Path, dims: tuple[int, ...]) -> Path:
    """An MNIST folder whose training images header claims ``dims`` (a few bytes of data)."""
    root.mkdir()
    for prefix, n in (("train", 4), ("t10k", 4)):
        header = struct.pack(">I", 0x00000800 | len(dims)) + struct.pack(f">{len(dims)}I", *dims)
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(header + bytes(64))
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 0x00000801, n) + bytes(n))
    return root


@pytest.mark.parametrize("dims", [(65536, 65536, 65536, 65536), (2**32 - 1, 2**32 - 1, 2)])
def test_idx_header_with_an_impossible_size(dims: tuple[int, ...], tmp_path: Path) -> None:
    folder = _mnist_folder(tmp_path / "mnist", dims)
    with pytest.raises(DataError, match="impossible"):
        read_idx(folder / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="impossible"):
        load_dataset("mnist", "train", data_dir=folder)


@pytest.mark.parametrize("command", [*EVALUATORS, "train"])
def test_impossible_idx_through_every_command(
    command: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _mnist_folder(tmp_path / "mnist", (65536, 65536, 65536, 65536))
    out = tmp_path / "out"
    out.mkdir()
    argv = [*_base(command, files, out / "o.parquet"), "--dataset", "mnist"]
    argv += ["--data-dir", str(folder), "--split", "train"] if command != "train" else []
    if command == "train":
        argv += ["--data-dir", str(folder)]
    _refused(argv, capsys, out, "impossible")


@pytest.mark.parametrize(
    "unit", [["0", "1", "2", "3", "4", "5"], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]], ids=["text", "float"]
)
def test_scores_table_with_a_non_integer_unit_column(
    unit: list[object], files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "units.parquet"
    pl.DataFrame({"layer": ["relu1"] * 6, "unit": unit, "s": [0.1] * 6}).write_parquet(table)
    out = tmp_path / "out"
    out.mkdir()
    argv = [*_base("ablate", files, out / "c.parquet"), "--order", "ascending", "--by", "s"]
    _refused([*argv, "--scores", str(table)], capsys, out, "'unit' column", "not integers")


# ------------------------------------------------------------------------------ messages


@pytest.mark.parametrize("command", [*FILE_OUTPUTS, "sites"])
def test_brackets_in_messages_are_printed_intact(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "run[1][bold]"
    target = tmp_path / f"{name}.pt"
    argv = [command, str(target)] + (["--out", str(tmp_path / "o.parquet")])
    if command == "sites":
        argv = argv[:2]
    _refused(argv, capsys, tmp_path, f"{name}.pt")


@pytest.mark.parametrize("command", EVALUATORS)
def test_bracketed_site_names_are_printed_intact(
    command: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*_base(command, files, tmp_path / "o.parquet"), "--layers", "relu[1]"]
    _refused(argv, capsys, tmp_path, "relu[1]")


@pytest.mark.parametrize("command", [*FILE_OUTPUTS, "train"])
def test_bracketed_paths_in_results_are_printed_intact(
    command: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from singledir.cli.app import main

    name = "run[ray][bold]" + ("" if command == "train" else ".parquet")
    argv = _base(command, files, tmp_path / name)
    argv = [a for a in argv if a not in ("-q", "--quiet")]
    if command in ("ablate", "noise"):
        argv += ["--no-plot", "--orderings", "1"] if command == "ablate" else ["--no-plot"]
    old = sys.argv
    sys.argv = ["singledir", *argv]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    finally:
        sys.argv = old
    captured = capsys.readouterr()  # train reports on stderr, beside its progress bar
    printed = "".join((captured.out + captured.err).split())  # rich may wrap long paths
    assert name in printed


def test_the_ray_hint_keeps_its_extra(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    argv = [*_base("reproduce", files, tmp_path / "r"), "--executor", "ray"]
    _refused(argv, capsys, tmp_path, "pip install 'singledir[ray]'")


# --------------------------------------------------------------------------- order of work


@pytest.mark.parametrize("device", ["tpu9", "cuda:7"])
@pytest.mark.parametrize("command", [*EVALUATORS, *FOLDER_OUTPUTS])
def test_device_is_checked_before_anything_is_written(
    command: str,
    device: str,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("o.parquet" if command in EVALUATORS else "results")
    _refused([*_base(command, files, target), "--device", device], capsys, out, device)


# ---------------------------------------------------------------------------------- data


@pytest.mark.parametrize("command", [*EVALUATORS, "sites", *FOLDER_OUTPUTS])
def test_a_missing_data_dir_never_falls_back(
    command: str,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SINGLEDIR_DATA", str(tmp_path))  # a folder that does exist
    out = tmp_path / "out"
    out.mkdir()
    missing = tmp_path / "no-such-folder"
    argv = _base(command, files, out / ("o.parquet" if command in EVALUATORS else "r"))
    if command == "sites":
        argv = ["sites", str(files["ckpt"])]
    _refused([*argv, "--data-dir", str(missing)], capsys, out, str(missing), "--data-dir")


# ------------------------------------------------------------------------------ imports


def _commands() -> list[str]:
    from singledir.cli.app import app

    return sorted(str(c.name) for c in app.registered_commands)


def test_the_command_list_is_the_one_tested() -> None:
    assert set(_commands()) >= {*FILE_OUTPUTS, *FOLDER_OUTPUTS, "sites"}


@pytest.mark.parametrize("command", _commands())
def test_help_of_every_command_imports_nothing_heavy(command: str) -> None:
    probe = (
        "import sys\n"
        f"sys.argv = ['singledir', {command!r}, '--help']\n"
        "from singledir.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = [m for m in ('torch', 'numpy', 'polars', 'scipy', 'matplotlib', 'sklearn')"
        " if m in sys.modules]\n"
        "print('CODE', code, 'HEAVY', ','.join(heavy))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    last = run.stdout.strip().splitlines()[-1]
    assert last == "CODE 0 HEAVY", last
    assert "Example: singledir " + command in " ".join(run.stdout.split())


def test_stats_runs_without_torch(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "units.parquet"
    probe = (
        "import sys\n"
        f"sys.argv = ['singledir', 'stats', {str(files['acts'])!r}, '--out', {str(out)!r}]\n"
        "from singledir.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print('CODE', code, 'TORCH', 'torch' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert run.stdout.strip().splitlines()[-1] == "CODE 0 TORCH False", run.stdout + run.stderr
    assert out.is_file()
