"""Imports every command module so that each registers its command(s) on `app`."""

from singledir.cli import (  # noqa: F401
    ablate_cmd,
    reproduce_cmd,
    stats_cmd,
    train_cmd,
)
