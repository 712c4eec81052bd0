"""The Typer application and the entry point that turns errors into one-line messages."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

import typer

from singledir.cli.options import fail
from singledir.errors import SingledirError, SlowPathWarning

#: Each command: its module under ``singledir.cli`` and the function in it. Each module does
#: not import this one (no cycle) and imports only typer and cli.options at the top.
COMMANDS = {
    "train": ("train_cmd", "train_command"),
    "record": ("record_cmd", "record"),
    "stats": ("stats_cmd", "stats"),
    "ablate": ("ablate_cmd", "ablate"),
    "noise": ("noise_cmd", "noise"),
    "importance": ("importance_cmd", "importance"),
    "sites": ("sites_cmd", "sites"),
    "reproduce": ("reproduce_cmd", "reproduce"),
}

HELP = (
    "How much does a network rely on single directions? Train the paper's networks, "
    "ablate units, perturb them with noise, measure selectivity and mutual information, "
    "and reproduce Morcos et al. (ICLR 2018).\n\n"
    "Example: singledir reproduce corruption"
)


def build_app(only: str | None = None) -> typer.Typer:
    """The Typer application with every command, or with command ``only`` alone (a run of
    one command then imports one command module, and typer inspects one signature instead of
    all: about 0.1 s of every run)."""
    app = typer.Typer(
        name="singledir",
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    # A callback keeps the application a group with one command too (else typer would make
    # the lone command the whole program, without its name).
    app.callback()(_group)
    for name, (module, function) in COMMANDS.items():
        if only is None or name == only:
            command = getattr(importlib.import_module(f"singledir.cli.{module}"), function)
            app.command(name)(command)
    return app


def _group() -> None:
    pass


def __getattr__(name: str) -> Any:
    # `app`, the whole application (for tests and embedding), built on first use.
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point of the `singledir` script: every outcome ends in ``sys.exit``.

    Click runs outside its standalone mode so that errors, Ctrl-C included, reach the handlers
    below and each becomes one line on stderr with a non-zero exit, never a traceback.
    """
    # commands print their own one-line note of the slower path (ablate: "note: ...")
    warnings.simplefilter("ignore", SlowPathWarning)
    named = sys.argv[1] if len(sys.argv) > 1 else None
    app = build_app(named if named in COMMANDS else None)
    try:
        result = app(standalone_mode=False)
    except typer.Exit as exc:  # --help and friends
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: one line that points at --help
        code = getattr(exc, "exit_code", 2)
        fmt = getattr(exc, "format_message", None)
        text = fmt() if callable(fmt) else str(exc)
        ctx = getattr(exc, "ctx", None)
        where = getattr(ctx, "command_path", None) or "singledir"
        fail(f"{' '.join(str(text).split())} (see '{where} --help')")
        sys.exit(code if isinstance(code, int) and code else 2)
    except (KeyboardInterrupt, typer.Abort):
        fail(
            "nothing half-written was kept; run the same command again to resume",
            label="interrupted:",
        )
        sys.exit(130)
    except SingledirError as exc:
        fail(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:  # last resort: still one line, no traceback
        if os.environ.get("SINGLEDIR_DEBUG"):
            raise
        fail(
            f"{type(exc).__name__}: {exc} (set SINGLEDIR_DEBUG=1 for a traceback and report it)",
            label="internal error:",
        )
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
