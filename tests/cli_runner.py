"""Run the `singledir` entry point in-process, as the shell would, for CLI tests."""

from __future__ import annotations

import sys

from singledir.cli.app import main


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``singledir ARGS``."""
    monkeypatch.setattr(sys, "argv", ["singledir", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
