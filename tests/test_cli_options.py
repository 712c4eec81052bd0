"""The shared CLI helpers of singledir.cli.options: bounded numbers, output paths, messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from singledir.cli.options import (
    INT_MAX,
    bounded_float,
    bounded_int,
    check_output_path,
    fail,
    say,
)
from singledir.errors import DataError


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_bounded_int_accepts_exactly_the_range(n: int) -> None:
    parse = bounded_int(1, 1000)
    if 1 <= n <= 1000:
        assert parse(str(n)) == n
        assert parse(n) == n
    else:
        with pytest.raises(typer.BadParameter, match="out of range"):
            parse(str(n))


@pytest.mark.parametrize("text", ["1e23", "1E30", str(INT_MAX + 1), "99999999999999999999"])
def test_bounded_int_refuses_values_beyond_the_integer_range(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="out of range"):
        bounded_int()(text)


@pytest.mark.parametrize("text", ["1.5", "x", "", "nan", "inf"])
def test_bounded_int_refuses_non_integers(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="not"):
        bounded_int()(text)


def test_bounded_int_reads_whole_floats_and_underscores() -> None:
    assert bounded_int()("1e3") == 1000
    assert bounded_int()("1_000") == 1000
    assert bounded_int()(" 7 ") == 7


def test_bounded_float() -> None:
    parse = bounded_float(0.0, 1.0, high_open=True)
    assert parse("0") == 0.0 and parse("0.5") == 0.5
    for bad in ("1", "-0.1", "nan", "inf", "1e400"):
        with pytest.raises(typer.BadParameter, match="out of range"):
            parse(bad)
    with pytest.raises(typer.BadParameter, match="not a number"):
        parse("abc")


def test_check_output_path_refuses_each_bad_kind(tmp_path: Path) -> None:
    a_file = tmp_path / "taken.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="is a folder"):
        check_output_path(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.parquet")
    with pytest.raises(DataError, match="which is a file"):
        check_output_path(a_file / "x.parquet")
    with pytest.raises(DataError, match="which is a file"):
        check_output_path(a_file / "deeper" / "x.parquet")
    with pytest.raises(DataError, match="is a file"):
        check_output_path(a_file, folder=True)
    with pytest.raises(DataError, match="which is a file"):
        check_output_path(a_file / "run", folder=True)
    assert check_output_path(tmp_path / "new" / "deeper", folder=True) == tmp_path / "new/deeper"
    assert check_output_path(tmp_path / "ok.parquet") == tmp_path / "ok.parquet"


def test_messages_keep_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    fail("install it with pip install 'singledir[ray]' and [bold]retry[/]")
    say("extras [ray] and [test]")
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "error: install it with pip install 'singledir[ray]' and [bold]retry[/]"
    )
    assert captured.out.strip() == "extras [ray] and [test]"


def test_progress_bars_keep_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console
    from singledir import progress

    sink = Console(file=io.StringIO(), force_terminal=False, width=200)
    monkeypatch.setattr(progress, "console", sink)
    with progress.make_progress(quiet=False) as bar:
        task = bar.add_task("curves of run[ray][bold]", total=2, status="site relu[1][red]")
        bar.update(task, completed=2)
    shown = sink.file.getvalue()  # type: ignore[attr-defined]
    assert "curves of run[ray][bold]" in shown and "site relu[1][red]" in shown
