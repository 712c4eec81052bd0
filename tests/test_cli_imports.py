"""Imports that cost stay lazy: `import singledir` and `singledir --help` never load torch,
and every public name still resolves through the lazy table."""

from __future__ import annotations

import subprocess
import sys

import singledir

_HEAVY = ("torch", "torchvision", "numpy", "polars", "scipy", "matplotlib", "sklearn")


def _loaded_after(code: str) -> set[str]:
    heavy = f"[m for m in {_HEAVY!r} if m in sys.modules]"
    probe = f"{code}\nimport sys\nprint('LOADED=' + ','.join({heavy}))"
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    line = [t for t in run.stdout.splitlines() if t.startswith("LOADED=")][-1]
    return {m for m in line.removeprefix("LOADED=").split(",") if m}


def test_import_singledir_loads_no_torch() -> None:
    assert _loaded_after("import singledir") == set()


def test_every_public_name_resolves() -> None:
    for name in singledir.__all__:
        assert getattr(singledir, name) is not None, name
    assert sorted(singledir._EXPORTS) == sorted(
        n for n in singledir.__all__ if n in singledir._EXPORTS
    )
    # every lazily exported name is listed in __all__ (the two tables agree)
    assert set(singledir._EXPORTS) <= set(singledir.__all__)


def test_unknown_attribute_is_attribute_error() -> None:
    try:
        singledir.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def test_top_level_help_loads_no_torch() -> None:
    code = (
        "import sys\nsys.argv = ['singledir', '--help']\n"
        "from singledir.cli.app import main\ntry:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert _loaded_after(code) == set()


def test_python_dash_m_runs_the_cli() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "singledir", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "Usage: python -m singledir" in " ".join(run.stdout.split())


def test_one_command_imports_its_module_only() -> None:
    # A run of one command registers (and imports) that command alone; `--help` of the
    # program lists every command.
    from singledir.cli.app import COMMANDS

    modules = [f"singledir.cli.{module}" for module, _ in COMMANDS.values()]
    for name, (module, _) in COMMANDS.items():
        code = (
            f"import sys\nsys.argv = ['singledir', {name!r}, '--help']\n"
            "from singledir.cli.app import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print('MODULES=' + ','.join(m for m in {modules!r} if m in sys.modules))"
        )
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        )
        assert f"Usage: singledir {name}" in " ".join(run.stdout.split()), name
        line = [t for t in run.stdout.splitlines() if t.startswith("MODULES=")][-1]
        assert line.removeprefix("MODULES=").split(",") == [f"singledir.cli.{module}"], name
    listing = subprocess.run(
        [sys.executable, "-m", "singledir", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    for name in COMMANDS:
        assert name in listing, name
