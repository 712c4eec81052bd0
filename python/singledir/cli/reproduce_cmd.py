"""`singledir reproduce`: run one of the paper's experiments (or all) and write its report."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

from singledir.cli.options import INT_MAX, MAX_REPEATS, bounded_float, bounded_int, plain, say

__all__ = ["reproduce"]

_LIST_KINDS: dict[str, type] = {
    "widths": int,
    "noise_scales": float,
    "fractions": float,
    "dropouts": float,
    "sweep_lrs": float,
    "sweep_batch_sizes": int,
    "sweep_widths": float,
    "selectivity_alphas": float,
}


def _lists(**values: str | None) -> dict[str, Any]:
    from singledir.experiments.settings import parse_list

    out: dict[str, Any] = {}
    for key, text in values.items():
        if text is not None:
            out[key] = parse_list(text, _LIST_KINDS[key], "--" + key.replace("_", "-"))
    return out


def _count(option: str, help_text: str, low: int = 1, high: int = INT_MAX) -> Any:
    return typer.Option(option, parser=bounded_int(low, high), metavar="INT", help=help_text)


def _number(option: str, help_text: str) -> Any:
    return typer.Option(option, parser=bounded_float(), metavar="FLOAT", help=help_text)


def reproduce(
    experiment: Annotated[
        str,
        typer.Argument(
            help="corruption, ensemble, training, selection, dropout, batchnorm, selectivity, "
            "earlystop, selectivity-reg or all",
            show_default=False,
        ),
    ],
    preset: Annotated[
        str, typer.Option(help="tiny (seconds), quick (minutes), paper (GPU)")
    ] = "quick",
    dataset: Annotated[
        str | None,
        typer.Option(
            help="digits, mnist, fashion-mnist, cifar10, imagenet (default: the preset's)"
        ),
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="folder with the dataset files (else $SINGLEDIR_DATA)")
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="results folder (default results/EXPERIMENT)")
    ] = None,
    executor: Annotated[str, typer.Option(help="process (local pool), serial or ray")] = "process",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster HOST:PORT or auto (with ray)")
    ] = None,
    workers: Annotated[
        int | None, _count("--workers", "parallel runs (default: the cores)", high=4096)
    ] = None,
    seed: Annotated[int | None, _count("--seed", "first seed", low=0)] = None,
    seeds: Annotated[
        int | None, _count("--seeds", "seeds (repeats) per condition", high=MAX_REPEATS)
    ] = None,
    model: Annotated[str | None, typer.Option(help="mlp, convnet11, resnet18, resnet50")] = None,
    widths: Annotated[str | None, typer.Option(help="MLP hidden widths, e.g. 128,128")] = None,
    width: Annotated[float | None, _number("--width", "ConvNet11 channel multiplier")] = None,
    train_size: Annotated[int | None, _count("--train-size", "training samples (subset)")] = None,
    epochs: Annotated[int | None, _count("--epochs", "training epochs", low=0)] = None,
    batch_size: Annotated[int | None, _count("--batch-size", "training batch size")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd or adam")] = None,
    lr: Annotated[float | None, _number("--lr", "learning rate")] = None,
    weight_decay: Annotated[float | None, _number("--weight-decay", "weight decay")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N")] = None,
    orderings: Annotated[
        int | None, _count("--orderings", "random ablation orderings", high=MAX_REPEATS)
    ] = None,
    levels: Annotated[int | None, _count("--levels", "ablation levels per curve", low=2)] = None,
    ablation_samples: Annotated[
        int | None, _count("--ablation-samples", "training samples the ablation uses")
    ] = None,
    eval_samples: Annotated[
        int | None, _count("--eval-samples", "test samples (evaluation, statistics)")
    ] = None,
    noise_scales: Annotated[
        str | None, typer.Option(help="noise std multiples, e.g. 0,0.5,1,2")
    ] = None,
    noise_repeats: Annotated[
        int | None, _count("--noise-repeats", "noise draws per scale", high=MAX_REPEATS)
    ] = None,
    corrupt: Annotated[
        float | None, _number("--corrupt", "label corruption of the training runs")
    ] = None,
    fractions: Annotated[
        str | None, typer.Option(help="corruption fractions, e.g. 0,0.5,1")
    ] = None,
    ensemble_size: Annotated[
        int | None, _count("--ensemble-size", "nets in the ensemble", high=MAX_REPEATS)
    ] = None,
    snapshot_every: Annotated[
        int | None, _count("--snapshot-every", "epochs between snapshots")
    ] = None,
    dropouts: Annotated[str | None, typer.Option(help="dropout rates, e.g. 0.1,0.2,0.3")] = None,
    dropout_corrupt: Annotated[
        float | None, _number("--dropout-corrupt", "corruption of the dropout nets")
    ] = None,
    sweep_lrs: Annotated[str | None, typer.Option(help="learning rates of the sweep")] = None,
    sweep_batch_sizes: Annotated[str | None, typer.Option(help="batch sizes of the sweep")] = None,
    sweep_widths: Annotated[
        str | None, typer.Option(help="MLP widths (ConvNet11 multipliers) of the sweep")
    ] = None,
    val_fraction: Annotated[
        float | None, _number("--val-fraction", "earlystop: validation split of the training set")
    ] = None,
    selectivity_alphas: Annotated[
        str | None, typer.Option(help="selectivity-reg: ALPHA values, e.g. -1,0,1")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Reproduce one analysis of the paper (or `all`): train the nets, ablate, measure, and
    write parquet results, PNG figures and a report (HTML and Markdown) whose verdicts are
    computed from the data. Finished runs in --out are reused.

    Example: singledir reproduce corruption
    """
    from rich.table import Table
    from rich.text import Text

    from singledir.experiments import run_experiment

    if preset.lower() == "paper":
        say(plain(_paper_notice(experiment, dataset)))

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
        "val_fraction": val_fraction,
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
            selectivity_alphas=selectivity_alphas,
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
    table = Table(title=plain(f"{outcome.experiment}: the paper's claims, measured here"))
    table.add_column("paper")
    table.add_column("claim", max_width=60)
    table.add_column("measured")
    table.add_column("verdict")
    colors = {"holds": "green", "does not hold": "red"}
    for claim in outcome.claims:
        color = colors.get(claim.verdict, "yellow")
        table.add_row(
            plain(claim.figure),
            plain(claim.claim),
            plain(claim.statistic),
            Text(str(claim.verdict), style=color),
        )
    say(table)
    reused = f", {outcome.runs_skipped} reused" if outcome.runs_skipped else ""
    say(
        plain(f"{outcome.runs_total} runs{reused} in {outcome.wall_s:.1f} s. Report:"),
        Text(str(outcome.report_html), style="bold"),
        plain(f"(Markdown: {outcome.report_md})"),
    )


_PAPER_EXPERIMENTS = (
    "corruption",
    "ensemble",
    "training",
    "selection",
    "dropout",
    "batchnorm",
    "selectivity",
)


def _paper_notice(experiment: str, dataset: str | None) -> str:
    """What the paper preset is about to start, and what it costs, said before it starts."""
    import torch

    from singledir.experiments.settings import paper_cost

    names = _PAPER_EXPERIMENTS if experiment == "all" else (experiment,)
    try:
        costs = [paper_cost(n, dataset or "cifar10") for n in names]
    except Exception:  # an unknown name or dataset: run_experiment reports it
        return "paper preset"
    gpu = sum(c["gpu_hours"] for c in costs)
    cpu = sum(c["cpu_hours"] for c in costs)
    nets = sum(c["nets"] for c in costs)
    where = (
        f"expect ~{gpu:.3g} GPU hours"
        if torch.cuda.is_available()
        else f"no CUDA GPU found: on this machine's CPU expect ~{cpu:.3g} CPU hours "
        f"(~{gpu:.3g} on one GPU); stop with Ctrl-C and use --preset quick or a GPU"
    )
    return (
        f"paper preset: {nets} nets for {experiment} on {costs[0]['dataset']}; {where}. "
        "Finished runs in --out are kept, so an interrupted run resumes."
    )


def _paper_help() -> str:
    from singledir.experiments.settings import paper_help

    return (
        "\n\nPaper preset (cifar10; ablation: 10 orderings x 51 levels on 10,000 training "
        "samples per net; hours count training and ablation/noise curves at an assumed GPU "
        "rate and a CPU rate measured on 2 cores):\n\n"
        + "\n\n".join(paper_help(_PAPER_EXPERIMENTS).splitlines())
    )


reproduce.__doc__ = inspect.cleandoc(reproduce.__doc__ or "") + _paper_help()
