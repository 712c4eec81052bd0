"""Fig. 4c: the ablation AUC, computed on the training set only, picks good hyper-parameters.

A grid of learning rates, batch sizes and widths, each trained ``seeds`` times (repeats). In
each repeat, the setting with the highest AUC is the AUC's pick; how often it is the best
setting by test accuracy (top-1), among the best 5 or 10, and the gap in test accuracy
between the pick and the best (the paper: 13%, 83%, 98%; 1 +/- 1.1%). Chance levels (a random
pick) are reported beside them.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from singledir.errors import ConfigError
from singledir.experiments import figures
from singledir.experiments.common import analysis_params, claim_seed_of, load_model, run_ablation
from singledir.experiments.runner import (
    PhaseTimer,
    RunRecord,
    final_metrics,
    make_spec,
    seeds_of,
    train_config,
    train_net,
    training_data,
)
from singledir.experiments.settings import Settings
from singledir.io import write_table
from singledir.report import Section, correlation_claim, fmt, mean_claim

NAME = "selection"
TITLE = "Selecting hyper-parameters by ablation AUC, without held-out data (Fig. 4c)"
FIGURE = "Fig. 4c"
TOP_K = (1, 5, 10)


def grid(s: Settings) -> list[dict[str, Any]]:
    """The hyper-parameter settings of the sweep (learning rate x batch size x width).

    A width is the hidden width of every layer for an MLP and the channel multiplier for
    ConvNet11; ResNets have no width to sweep (give a single value).
    """
    if s.model not in ("mlp", "convnet11") and len(s.sweep_widths) > 1:
        raise ConfigError(
            f"--sweep-widths applies to mlp and convnet11, not {s.model}: give one value"
        )
    depth = len(s.widths)
    settings = []
    for lr, bs, w in itertools.product(s.sweep_lrs, s.sweep_batch_sizes, s.sweep_widths):
        g: dict[str, Any] = {"lr": float(lr), "batch_size": int(bs)}
        if s.model == "mlp":
            g.update(width=int(w), train={"widths": [int(w)] * depth})
        elif s.model == "convnet11":
            g.update(width=float(w), train={"width": float(w)})
        else:
            g.update(width=float(w), train={})
        settings.append(g)
    return settings


def _setting_id(g: dict[str, Any]) -> str:
    return f"lr{g['lr']:g}-bs{g['batch_size']}-w{g['width']:g}"


def plan(s: Settings) -> list[dict[str, Any]]:
    """One run per setting and repeat (seed)."""
    specs = []
    for g in grid(s):
        for seed in seeds_of(s):
            train = train_config(s, seed=seed, lr=g["lr"], batch_size=g["batch_size"], **g["train"])
            cond = {
                "setting": _setting_id(g),
                "lr": g["lr"],
                "batch_size": g["batch_size"],
                "width": g["width"],
                "seed": seed,
            }
            specs.append(make_spec(f"{_setting_id(g)}-seed{seed}", cond, train, analysis_params(s)))
    return specs


def run(spec: dict[str, Any], run_dir: Path, timer: PhaseTimer) -> dict[str, Any]:
    """Train one setting; AUC of its ablation curves on the training set."""
    result = train_net(spec, run_dir, timer)
    a = spec["analysis"]
    model = load_model(result.checkpoint)
    data = training_data(spec["train"], a["ablation_samples"])
    _, auc = run_ablation(model, data, a, int(spec["condition"]["seed"]), timer, run_dir)
    return {"auc": auc, **final_metrics(result)}


def selection_stats(runs: pl.DataFrame, top_k: tuple[int, ...] = TOP_K) -> pl.DataFrame:
    """Per repeat (seed): the AUC's pick, its rank by test accuracy (1 = best; ties share the
    best rank), whether it is in each top k, and its test-accuracy gap to the best setting;
    plus what a random pick would give (chance of top k, expected gap)."""
    rows = []
    for seed in sorted(runs["seed"].unique()):
        part = runs.filter(pl.col("seed") == seed)
        acc = part["test_acc"].to_numpy()
        auc = part["auc"].to_numpy()
        n = acc.size
        pick = int(np.argmax(auc))
        rank = int((acc > acc[pick]).sum()) + 1
        best = float(acc.max())
        ranks_all = np.array([(acc > a).sum() + 1 for a in acc])
        row: dict[str, Any] = {
            "seed": int(seed),
            "settings": n,
            "pick": part["setting"][pick],
            "pick_rank": rank,
            "gap": best - float(acc[pick]),
            "random_gap": float(np.mean(best - acc)),
        }
        for k in top_k:
            row[f"top{k}"] = bool(rank <= k)
            row[f"chance_top{k}"] = float(np.mean(ranks_all <= k))
        rows.append(row)
    return pl.DataFrame(rows)


def summarize(s: Settings, records: list[RunRecord], out_dir: Path, timer: PhaseTimer) -> Section:
    """Top-k hit rates and gaps of the AUC's pick, against chance."""
    fig_dir = out_dir / "figures"
    with timer.phase("statistics"):
        runs = pl.DataFrame(
            [
                {
                    **{k: r.condition[k] for k in ("setting", "lr", "batch_size", "width")},
                    "seed": int(r.condition["seed"]),
                    "auc": float(r.result["auc"]),
                    "train_acc": float(r.result["train_acc"]),
                    "test_acc": float(r.result["test_acc"]),
                    "run_id": r.run_id,
                }
                for r in records
            ]
        )
        write_table(runs, out_dir / "runs.parquet")
        picks = selection_stats(runs)
        write_table(picks, out_dir / "selection.parquet")
        n_settings = int(picks["settings"][0])
        rates = {k: float(picks[f"top{k}"].to_numpy().mean()) for k in TOP_K}
        chance = {k: float(picks[f"chance_top{k}"].to_numpy().mean()) for k in TOP_K}
        gap = picks["gap"].to_numpy() * 100
        random_gap = float(picks["random_gap"].to_numpy().mean()) * 100
        main = mean_claim(
            FIGURE,
            "Choosing the hyper-parameters with the highest ablation AUC (training set "
            "only) finds nets that generalize nearly as well as the best (paper: top-1 13%, "
            "top-5 83%, top-10 98%; gap 1 +/- 1.1%): better than a random pick.",
            gap - picks["random_gap"].to_numpy() * 100,
            expect="less",
            what="gap to the best test accuracy, AUC pick minus random pick (pp)",
            units="repeats",
            seed=claim_seed_of(s, NAME, "pick"),
        )
        main.statistic = (
            ", ".join(
                f"top-{k} {fmt(rates[k] * 100, 0)}% (chance {fmt(chance[k] * 100, 0)}%)"
                for k in TOP_K
            )
            + f"; gap to best test accuracy {fmt(gap.mean(), 2)} +/- "
            f"{fmt(gap.std(), 2)} pp (random pick {fmt(random_gap, 2)} pp) over "
            f"{picks.height} repeat(s) of {n_settings} settings; " + main.statistic
        )
        setting_means = (
            runs.group_by("setting").agg(pl.col("auc").mean(), pl.col("test_acc").mean())
        ).sort("setting")
        corr_claim = correlation_claim(
            FIGURE,
            "Across hyper-parameter settings, higher AUC goes with higher test accuracy.",
            setting_means["auc"].to_numpy(),
            setting_means["test_acc"].to_numpy(),
            expect="positive",
            what="settings (means over repeats)",
            seed=claim_seed_of(s, NAME, "correlation"),
        )
    with timer.phase("report"):
        labels = [f"top-{k}" for k in TOP_K]
        figs = [
            (
                "How often the AUC's pick is among the k best settings by test accuracy "
                "(bars) against a random pick (black marks)",
                figures.bars_figure(
                    labels,
                    [rates[k] for k in TOP_K],
                    fig_dir / "selection_topk.png",
                    reference=[chance[k] for k in TOP_K],
                    title=f"AUC-based selection, {n_settings} settings",
                    ylabel="fraction of repeats",
                ),
            ),
            (
                "Test accuracy against ablation AUC, one point per net, coloured by repeat",
                figures.scatter_figure(
                    runs,
                    fig_dir / "selection_auc_vs_test_acc.png",
                    x="auc",
                    y="test_acc",
                    group="seed",
                    fit=False,
                    title="Sweep",
                    xlabel="area under ablation curve (training set)",
                    ylabel="test accuracy",
                ),
            ),
        ]
    return Section(
        name=NAME,
        title=TITLE,
        description=(
            f"{n_settings} settings (lr {list(s.sweep_lrs)} x batch {list(s.sweep_batch_sizes)} "
            f"x width {list(s.sweep_widths)}) x {s.seeds} repeats of {s.model} on {s.dataset}; "
            "AUC from cumulative ablation on the training set."
        ),
        claims=[main, corr_claim],
        figures=figs,
        tables=[("Per repeat: the AUC's pick", picks)],
        notes=(
            [f"With {n_settings} settings, top-k for k >= {n_settings} is trivially 100%."]
            if n_settings <= max(TOP_K)
            else []
        ),
    )
