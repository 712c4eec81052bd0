"""The Typer application and the entry point that turns errors into one-line messages."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from singledir.errors import SingledirError

app = typer.Typer(
    name="singledir",
    help=(
        "How much does a network rely on single directions? Train the paper's networks, "
        "ablate units, perturb them with noise, measure selectivity and mutual information, "
        "and reproduce Morcos et al. (ICLR 2018).\n\n"
        "Example: singledir reproduce corruption"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_err = Console(stderr=True)


def _register() -> None:
    # Each stage's module adds its own command(s) to `app`.
    from singledir.cli import commands  # noqa: F401


def main() -> None:
    """Entry point of the `singledir` script: every outcome ends in ``sys.exit``.

    Click runs outside its standalone mode so that errors, Ctrl-C included, reach the handlers
    below and each becomes one line on stderr with a non-zero exit, never a traceback.
    """
    _register()
    try:
        result = app(standalone_mode=False)
    except typer.Exit as exc:  # --help and friends
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: Typer's own message and usage line
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            _err.print(f"[bold red]error:[/] {exc.format_message()}", highlight=False)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        _err.print(
            "[bold red]interrupted:[/] nothing half-written was kept; "
            "run the same command again to resume"
        )
        sys.exit(130)
    except SingledirError as exc:
        _err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # last resort: still one line, no traceback
        if os.environ.get("SINGLEDIR_DEBUG"):
            raise
        _err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
            "(set SINGLEDIR_DEBUG=1 for a traceback and report it)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
