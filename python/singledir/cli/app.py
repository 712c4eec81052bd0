"""The Typer application and the entry point that turns errors into one-line messages."""

from __future__ import annotations

import os
import sys
import warnings

import typer

from singledir.cli import (
    ablate_cmd,
    importance_cmd,
    noise_cmd,
    record_cmd,
    reproduce_cmd,
    sites_cmd,
    stats_cmd,
    train_cmd,
)
from singledir.cli.options import fail
from singledir.errors import SingledirError, SlowPathWarning

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


# Each command lives in its own module, which does not import this one (no cycle); the
# modules import only typer and cli.options at the top, so `singledir --help` stays fast.
app.command("train")(train_cmd.train_command)
app.command("record")(record_cmd.record)
app.command("stats")(stats_cmd.stats)
app.command("ablate")(ablate_cmd.ablate)
app.command("noise")(noise_cmd.noise)
app.command("importance")(importance_cmd.importance)
app.command("sites")(sites_cmd.sites)
app.command("reproduce")(reproduce_cmd.reproduce)


def main() -> None:
    """Entry point of the `singledir` script: every outcome ends in ``sys.exit``.

    Click runs outside its standalone mode so that errors, Ctrl-C included, reach the handlers
    below and each becomes one line on stderr with a non-zero exit, never a traceback.
    """
    # commands print their own one-line note of the slower path (ablate: "note: ...")
    warnings.simplefilter("ignore", SlowPathWarning)
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
