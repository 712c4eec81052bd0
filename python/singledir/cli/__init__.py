"""The `singledir` command line: one thin Typer command per stage, no logic of its own."""
