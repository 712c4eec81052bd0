"""`singledir train`: train one of the paper's networks, with corrupted labels if asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from singledir.cli.options import any_int, bounded_float, bounded_int, fail, seed_int
from singledir.errors import ConfigError

_COUNT = bounded_int(1)


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", ",").split(",") if t.strip()]
    except ValueError:
        raise ConfigError(
            f"{what} {text!r} do not parse: give integers separated by commas, e.g. 0,5,10"
        ) from None


def train_command(
    dataset: str = typer.Option(
        "digits", "--dataset", "-d", help="digits, mnist, fashion-mnist, cifar10 or imagenet."
    ),
    model: str = typer.Option("mlp", "--model", "-m", help="mlp, convnet11, resnet18 or resnet50."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created)."),
    widths: str = typer.Option("512,512", help="MLP hidden widths, comma-separated."),
    width: float = typer.Option(1.0, help="ConvNet11 channel multiplier (1 = the paper's)."),
    dropout: float = typer.Option(0.0, help="Dropout after every ReLU, in [0, 1)."),
    batchnorm: bool = typer.Option(False, "--batchnorm/--no-batchnorm", help="Batch norm."),
    small_input: bool = typer.Option(False, help="ResNet stem for 32x32 images."),
    corrupt: float = typer.Option(
        0.0, help="Fraction of training labels replaced by random classes, in [0, 1]."
    ),
    corrupt_seed: int = typer.Option(0, parser=seed_int, help="Seed of the label corruption."),
    epochs: int = typer.Option(10, parser=any_int, help="Training epochs."),
    batch_size: int = typer.Option(128, parser=any_int, help="Training batch size."),
    optimizer: str = typer.Option("sgd", help="sgd (with momentum) or adam."),
    lr: float = typer.Option(0.01, help="Learning rate."),
    momentum: float = typer.Option(0.9, help="SGD momentum."),
    weight_decay: float = typer.Option(0.0, help="L2 weight decay."),
    schedule: str = typer.Option("constant", help="constant, cosine or step (x0.1 at 50%, 75%)."),
    snapshot_every: int = typer.Option(
        0, parser=any_int, help="Save a checkpoint every N epochs, and before training (0 = none)."
    ),
    snapshot_epochs: str = typer.Option("", help="Also save at these epochs, e.g. 0,1,2,5."),
    train_size: int | None = typer.Option(
        None, parser=any_int, help="Seeded random subset of the training set."
    ),
    test_size: int | None = typer.Option(
        None, parser=any_int, help="Seeded random subset of the test set."
    ),
    data_seed: int = typer.Option(0, parser=seed_int, help="Seed of the subsets."),
    data_dir: Path | None = typer.Option(
        None, help="Folder with the data files (else $SINGLEDIR_DATA)."
    ),
    download: bool = typer.Option(False, help="Download missing data through torchvision."),
    image_size: int | None = typer.Option(
        None, parser=any_int, help="ImageNet crop side (default 224)."
    ),
    num_workers: int = typer.Option(
        4, parser=any_int, help="ImageNet DataLoader worker processes."
    ),
    seed: int = typer.Option(
        0, parser=seed_int, help="Seed of initialization, batch order and dropout."
    ),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: int | None = typer.Option(
        None,
        parser=any_int,
        help="CPU threads for torch (1 is fastest for small nets on a busy machine).",
    ),
    train_metrics: str = typer.Option(
        "eval", help="eval (exact pass over the training set) or running (mean over batches)."
    ),
    val_fraction: float | None = typer.Option(
        None,
        parser=bounded_float(0.0, 1.0, high_open=True),
        metavar="FLOAT",
        help="Hold out this fraction of the training set as a validation split (val_loss, "
        "val_acc); default 0.1 with --early-stop val-loss, else none.",
    ),
    auc_every: int | None = typer.Option(
        None,
        parser=_COUNT,
        metavar="K",
        help="Measure the ablation AUC on training data every K epochs (auc column; omit "
        "to not monitor).",
    ),
    auc_samples: int = typer.Option(
        1000, parser=_COUNT, metavar="N", help="Training samples the AUC monitor ablates on."
    ),
    auc_orderings: int = typer.Option(
        3, parser=_COUNT, metavar="O", help="Random orderings of the AUC monitor."
    ),
    auc_levels: int = typer.Option(
        21, parser=bounded_int(2), metavar="L", help="Ablation levels of the AUC monitor."
    ),
    auc_layers: str = typer.Option(
        "all", help="Sites of the AUC monitor: all, lastN or comma-separated module names."
    ),
    auc_relative: bool = typer.Option(
        False, "--auc-relative", help="AUC of each curve divided by its unablated accuracy."
    ),
    early_stop: str | None = typer.Option(
        None,
        metavar="auc|val-loss",
        help="Stop when the AUC (training data only) or the validation loss stops improving; "
        "keeps best_auc.pt / best_val_loss.pt.",
    ),
    patience: int | None = typer.Option(
        None,
        parser=_COUNT,
        metavar="P",
        help="Monitored epochs without improvement before --early-stop stops (default 5).",
    ),
    selectivity_reg: float = typer.Option(
        0.0,
        parser=bounded_float(),
        metavar="ALPHA",
        help="Add -ALPHA * mean class selectivity to the loss (Leavitt & Morcos 2021): "
        "ALPHA > 0 raises selectivity, < 0 lowers it.",
    ),
    selectivity_layers: str = typer.Option(
        "all", help="Sites the selectivity regularizer acts on."
    ),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Resume an interrupted run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
) -> None:
    """Train a network and save per-epoch metrics, snapshots and a final ckpt.pt.

    Example: singledir train --dataset mnist --model mlp --widths 512,512 --corrupt 0.5 --dropout 0.2 --batchnorm --epochs 40 --snapshot-every 5 --seed 0 --out runs/mlp-p05
    With monitoring: singledir train --dataset mnist --corrupt 0.5 --epochs 60 --auc-every 1 --early-stop auc --patience 10 --out runs/mlp-auc
    """  # noqa: E501
    from singledir.progress import console
    from singledir.train import TrainConfig, train

    if patience is not None and early_stop is None:
        raise ConfigError(
            f"--patience {patience} needs a criterion: add --early-stop auc (or val-loss)"
        )
    criterion = None if early_stop is None else early_stop.strip().lower().replace("_", "-")
    if criterion == "auc" and auc_every is None:
        auc_every = 1  # early stopping on the AUC measures it every epoch unless told
    if val_fraction is None:
        val_fraction = 0.1 if criterion == "val-loss" else 0.0
    if criterion is not None and patience is None:
        patience = 5

    cfg = TrainConfig(
        dataset=dataset,
        data_dir=str(data_dir) if data_dir is not None else None,
        train_size=train_size,
        test_size=test_size,
        data_seed=data_seed,
        model=model,
        widths=widths,  # type: ignore[arg-type]  # parsed (and checked) by TrainConfig
        width=width,
        dropout=dropout,
        batchnorm=batchnorm,
        small_input=small_input,
        corrupt=corrupt,
        corrupt_seed=corrupt_seed,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule,
        snapshot_every=snapshot_every,
        snapshot_epochs=_int_list(snapshot_epochs, "snapshot epochs"),
        seed=seed,
        device=device,
        threads=threads,
        train_metrics=train_metrics,
        download=download,
        image_size=image_size,
        num_workers=num_workers,
        val_fraction=val_fraction,
        auc_every=auc_every or 0,
        auc_samples=auc_samples,
        auc_orderings=auc_orderings,
        auc_levels=auc_levels,
        auc_layers=auc_layers,
        auc_relative=auc_relative,
        early_stop=criterion,
        patience=patience,
        selectivity_reg=selectivity_reg,
        selectivity_layers=selectivity_layers,
    )

    def show_epoch(row: dict[str, Any]) -> None:
        if not quiet:
            extra = ""
            if row.get("val_loss") is not None:
                extra += f"  val loss {row['val_loss']:.4f}"
            if row.get("auc") is not None:
                extra += f"  AUC {row['auc']:.4f}"
            console.print(
                f"epoch {int(row['epoch']):>4}  train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.2%}  test loss {row['test_loss']:.4f} "
                f"acc {row['test_acc']:.2%}  lr {row['lr']:.3g}{extra}",
                highlight=False,
            )

    try:
        result = train(cfg, out, resume=resume, progress=not quiet, on_epoch=show_epoch)
    except KeyboardInterrupt:
        # Typer turns the interrupt into exit status 130 without a word: say how to go on.
        state = out / "resume.pt"
        where = (
            f"{state} holds the last finished epoch"
            if state.exists()
            else "no epoch had finished yet"
        )
        fail(f"{where}; run the same command again to resume", label="interrupted:")
        raise
    if quiet:
        typer.echo(str(result.checkpoint))
        return
    table = Table(title=f"{cfg.dataset} / {cfg.model}, corrupt {cfg.corrupt:g}, seed {cfg.seed}")
    cols = ["epoch", "train loss", "train acc", "true-label acc", "test loss", "test acc"]
    has_val, has_auc = cfg.val_fraction > 0, cfg.auc_every > 0
    cols += ["val loss"] * has_val + ["AUC"] * has_auc
    for col in cols:
        table.add_column(col, justify="right")
    rows = result.metrics.to_dicts()
    shown = rows if len(rows) <= 12 else rows[:3] + rows[-9:]
    for r in shown:
        cells = [
            str(r["epoch"]),
            f"{r['train_loss']:.4f}",
            f"{r['train_acc']:.2%}",
            f"{r['train_true_acc']:.2%}",
            f"{r['test_loss']:.4f}",
            f"{r['test_acc']:.2%}",
        ]
        if has_val:
            cells.append(f"{r['val_loss']:.4f}")
        if has_auc:
            cells.append("-" if r["auc"] is None else f"{r['auc']:.4f}")
        table.add_row(*cells)
    console.print(table)
    if result.resumed_from is not None:
        console.print(f"resumed after epoch {result.resumed_from}")
    if result.stopped_early:
        console.print(f"stopped early ({cfg.early_stop}) after epoch {rows[-1]['epoch']}")
    for name, path in result.best.items():
        column = "auc" if name == "auc" else "val_loss"
        scored = [r for r in rows if r[column] is not None]
        pick = max if name == "auc" else min
        if scored:
            b = pick(scored, key=lambda r: r[column])
            console.print(
                f"best {name}: epoch {b['epoch']} ({column} {b[column]:.4f}, test acc "
                f"{b['test_acc']:.2%}) -> {path}",
                highlight=False,
                markup=False,  # paths may hold brackets
            )
    console.print(
        f"checkpoint {result.checkpoint}  metrics {result.out_dir / 'metrics.parquet'}  "
        f"snapshots {len(result.snapshots)}  ({result.seconds:.1f} s)",
        highlight=False,
        markup=False,  # paths may hold brackets
    )
