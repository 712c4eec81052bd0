"""`singledir reproduce`: run one of the paper's experiments (or all) and write its report."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from singledir.cli.app import app

_out = Console()


def _lists(**values: str | None) -> dict[str, Any]:
    from singledir.experiments.settings import parse_list

    kinds = {
        "widths": int,
        "noise_scales": float,
        "fractions": float,
        "dropouts": float,
        "sweep_lrs": float,
        "sweep_batch_sizes": int,
        "sweep_widths": float,
    }
    out: dict[str, Any] = {}
    for key, text in values.items():
        if text is not None:
            out[key] = parse_list(text, kinds[key], "--" + key.replace("_", "-"))
    return out


@app.command()
def reproduce(
    experiment: str = typer.Argument(
        ...,
        help="corruption, ensemble, training, selection, dropout, batchnorm, selectivity or all",
    ),
    preset: str = typer.Option("quick", help="tiny (seconds), quick (minutes), paper (GPU)"),
    dataset: str | None = typer.Option(
        None, help="digits, mnist, fashion-mnist, cifar10, imagenet (default: the preset's)"
    ),
    data_dir: str | None = typer.Option(None, help="folder with the dataset files"),
    out: str | None = typer.Option(None, help="results folder (default results/EXPERIMENT)"),
    executor: str = typer.Option("process", help="process (local pool), serial or ray"),
    address: str | None = typer.Option(None, help="Ray cluster HOST:PORT or auto (with ray)"),
    workers: int | None = typer.Option(None, help="parallel runs (default: the cores)"),
    seed: int | None = typer.Option(None, help="first seed"),
    seeds: int | None = typer.Option(None, help="seeds (repeats) per condition"),
    model: str | None = typer.Option(None, help="mlp, convnet11, resnet18, resnet50"),
    widths: str | None = typer.Option(None, help="MLP hidden widths, e.g. 128,128"),
    width: float | None = typer.Option(None, help="ConvNet11 channel multiplier"),
    train_size: int | None = typer.Option(None, help="training samples (subset)"),
    epochs: int | None = typer.Option(None, help="training epochs"),
    batch_size: int | None = typer.Option(None, help="training batch size"),
    optimizer: str | None = typer.Option(None, help="sgd or adam"),
    lr: float | None = typer.Option(None, help="learning rate"),
    weight_decay: float | None = typer.Option(None, help="weight decay"),
    device: str | None = typer.Option(None, help="auto, cpu or cuda"),
    orderings: int | None = typer.Option(None, help="random ablation orderings"),
    levels: int | None = typer.Option(None, help="ablation levels per curve"),
    ablation_samples: int | None = typer.Option(None, help="training samples the ablation uses"),
    eval_samples: int | None = typer.Option(None, help="test samples (evaluation, statistics)"),
    noise_scales: str | None = typer.Option(None, help="noise std multiples, e.g. 0,0.5,1,2"),
    noise_repeats: int | None = typer.Option(None, help="noise draws per scale"),
    corrupt: float | None = typer.Option(None, help="label corruption of the training runs"),
    fractions: str | None = typer.Option(None, help="corruption fractions, e.g. 0,0.5,1"),
    ensemble_size: int | None = typer.Option(None, help="nets in the ensemble"),
    snapshot_every: int | None = typer.Option(None, help="epochs between snapshots"),
    dropouts: str | None = typer.Option(None, help="dropout rates, e.g. 0.1,0.2,0.3"),
    dropout_corrupt: float | None = typer.Option(None, help="corruption of the dropout nets"),
    sweep_lrs: str | None = typer.Option(None, help="learning rates of the sweep"),
    sweep_batch_sizes: str | None = typer.Option(None, help="batch sizes of the sweep"),
    sweep_widths: str | None = typer.Option(
        None, help="MLP widths (ConvNet11 multipliers) of the sweep"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Reproduce one analysis of the paper (or `all`): train the nets, ablate, measure, and
    write parquet results, PNG figures and a report (HTML and Markdown) whose verdicts are
    computed from the data. Finished runs in --out are reused.

    Example: singledir reproduce corruption
    """
    from singledir.experiments import run_experiment

    overrides: dict[str, Any] = {
        "dataset": dataset,
        "data_dir": data_dir,
        "seed": seed,
        "seeds": seeds,
        "model": model,
        "width": width,
        "train_size": train_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr,
        "weight_decay": weight_decay,
        "device": device,
        "orderings": orderings,
        "levels": levels,
        "ablation_samples": ablation_samples,
        "eval_samples": eval_samples,
        "noise_repeats": noise_repeats,
        "corrupt": corrupt,
        "ensemble_size": ensemble_size,
        "snapshot_every": snapshot_every,
        "dropout_corrupt": dropout_corrupt,
    }
    overrides.update(
        _lists(
            widths=widths,
            noise_scales=noise_scales,
            fractions=fractions,
            dropouts=dropouts,
            sweep_lrs=sweep_lrs,
            sweep_batch_sizes=sweep_batch_sizes,
            sweep_widths=sweep_widths,
        )
    )
    outcome = run_experiment(
        experiment,
        preset,
        overrides,
        out,
        executor=executor,
        workers=workers,
        address=address,
        progress=not quiet,
    )
    table = Table(title=f"{outcome.experiment}: the paper's claims, measured here")
    table.add_column("paper")
    table.add_column("claim", max_width=60)
    table.add_column("measured")
    table.add_column("verdict")
    colors = {"holds": "green", "does not hold": "red"}
    for c in outcome.claims:
        color = colors.get(c.verdict, "yellow")
        table.add_row(c.figure, c.claim, c.statistic, f"[{color}]{c.verdict}[/]")
    _out.print(table)
    reused = f", {outcome.runs_skipped} reused" if outcome.runs_skipped else ""
    _out.print(
        f"{outcome.runs_total} runs{reused} in {outcome.wall_s:.1f} s. "
        f"Report: [bold]{outcome.report_html}[/] (Markdown: {outcome.report_md})",
        highlight=False,
        soft_wrap=True,
    )
