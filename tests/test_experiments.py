"""Every experiment end to end on the tiny preset (serial executor): the files, figures,
manifest and report it writes, and each reported statistic recomputed independently from
the raw parquet files (NumPy loops, SciPy). Also resume, refusal of foreign folders,
settings and the report helpers."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from html import escape as html_escape
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from singledir.errors import ConfigError
from singledir.experiments import EXPERIMENTS, resolve_settings, run_experiment
from singledir.experiments.runner import DONE_MARKER, MANIFEST
from singledir.experiments.settings import Settings, parse_list
from singledir.inference import MIN_UNITS, verdict_from_interval
from singledir.report import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Claim,
    Section,
    compare_claim,
    correlation_claim,
    fmt,
    write_report,
)

VERDICTS = {HOLDS, FAILS, INCONCLUSIVE}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLAIM_FIELDS = {
    "statistic",
    "rule",
    "verdict",
    "estimate",
    "ci",
    "ci_level",
    "p_value",
    "n",
    "null",
    "expected",
    "test",
    "seed",
    "detectable",
}


class _LazyRuns(dict):
    """Runs an experiment on the tiny preset the first time a test asks for it."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str):
        out = run_experiment(
            name, "tiny", None, self.root / name, executor="serial", progress=False
        )
        self[name] = out
        return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each experiment run once on the tiny preset (shared by the tests of this module)."""
    return _LazyRuns(tmp_path_factory.mktemp("tiny"))


def _trapezoid_auc(curves: pl.DataFrame, relative: bool = False) -> float:
    """Mean over orderings of the trapezoid area under accuracy vs fraction (plain loops);
    ``relative`` divides each ordering's area by its unablated accuracy."""
    areas = []
    for o in sorted(set(curves["ordering"].to_list())):
        part = curves.filter(pl.col("ordering") == o).sort("fraction_ablated")
        x = part["fraction_ablated"].to_list()
        y = part["accuracy"].to_list()
        area = sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(x) - 1))
        area /= x[-1] - x[0]
        areas.append(area / y[0] if relative else area)
    return float(np.mean(areas))


# ------------------------------------------------------------------------- files and report


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_writes_results_figures_manifest_report(tiny: dict, name: str) -> None:
    out = tiny[name]
    d = out.out_dir
    manifest = json.loads((d / MANIFEST).read_text())
    assert manifest["experiment"] == name and manifest["preset"] == "tiny"
    assert manifest["status"] == "complete"
    assert manifest["settings"]["dataset"] == "digits"
    assert manifest["seeds"] and all(isinstance(s, int) for s in manifest["seeds"])
    assert {"train", "ablation", "statistics", "report", "wall"} <= set(manifest["timings"]) | {
        "ablation"
    }
    assert len(manifest["runs"]) == out.runs_total > 0
    for run in manifest["runs"]:
        rdir = d / "runs" / run["run_id"]
        assert (rdir / DONE_MARKER).exists() and (rdir / "result.json").exists()
        assert (rdir / "train" / "ckpt.pt").exists()
    assert list(d.glob("*.parquet")), "no aggregated parquet table"
    for table in d.glob("*.parquet"):
        assert pl.read_parquet(table).height > 0
    pngs = sorted((d / "figures").glob("*.png"))
    assert pngs
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC
    html = out.report_html.read_text()
    assert html.count("data:image/png;base64,") == len(pngs)
    md = out.report_md.read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (d / link).exists()
    assert out.claims and {c.verdict for c in out.claims} <= VERDICTS
    assert "detectable" in md and "scikit-learn digits" in md  # power and data notes
    for c in out.claims:
        assert html_escape(c.statistic) in html
        assert c.verdict in md
    assert [c["verdict"] for c in manifest["claims"]] == [c.verdict for c in out.claims]
    for stored, c in zip(manifest["claims"], out.claims, strict=True):
        assert CLAIM_FIELDS <= set(stored), sorted(CLAIM_FIELDS - set(stored))
        assert stored["expected"] in ("greater", "less") and stored["test"] and stored["rule"]
        assert isinstance(stored["seed"], int) and stored["n"] >= 0
        if stored["ci"] is not None and None not in stored["ci"]:
            assert stored["ci"][0] <= stored["ci"][1] and stored["ci_level"] == 0.95
        if "Holm" not in c.test:  # combined claims: every part must hold (checked below)
            assert c.verdict == verdict_from_interval(c.ci, c.null, c.expected, c.p_value)
        elif c.verdict == HOLDS:
            assert c.p_value is not None and c.p_value < 0.05


def test_corruption_statistics_recomputed(tiny: dict) -> None:
    d = tiny["corruption"].out_dir
    runs = pl.read_parquet(d / "runs.parquet")
    curves = pl.read_parquet(d / "curves.parquet")
    curves_random = pl.read_parquet(d / "curves_random.parquet")
    for row in runs.iter_rows(named=True):
        part = curves.filter(pl.col("run_id") == row["run_id"])
        assert row["auc"] == pytest.approx(_trapezoid_auc(part), abs=1e-9)
        part = curves_random.filter(pl.col("run_id") == row["run_id"])
        assert row["auc_random"] == pytest.approx(_trapezoid_auc(part), abs=1e-9)
        # final accuracies come from the training's own metrics
        metrics = pl.read_parquet(d / "runs" / row["run_id"] / "train" / "metrics.parquet")
        assert row["train_acc"] == pytest.approx(metrics.sort("epoch")["train_acc"][-1])
    # one point per net: Spearman rho of (corruption, AUC), p from SciPy's exact test
    rho = sps.spearmanr(runs["corrupt"], runs["auc"]).statistic
    claim = tiny["corruption"].claims[0]
    assert claim.value == claim.estimate == pytest.approx(rho)
    assert claim.n == runs.height and claim.expected == "less" and claim.null == 0.0
    x, y = runs["corrupt"].to_numpy(), runs["auc"].to_numpy()
    ref = sps.permutation_test(
        (y,),
        lambda b: sps.spearmanr(x, b).statistic,
        permutation_type="pairings",
        alternative="less",
    ).pvalue
    assert claim.p_value == pytest.approx(ref)
    assert claim.verdict == verdict_from_interval(claim.ci, 0.0, "less", claim.p_value)
    assert f"over {runs.height} nets" in claim.statistic
    table = pl.read_parquet(d / "runs.parquet").group_by("corrupt").agg(pl.col("auc").mean())
    md = tiny["corruption"].report_md.read_text()
    for v in table["auc"].to_list():
        assert fmt(v) in md  # the per-fraction means in the report's table
    noise = pl.read_parquet(d / "noise.parquet")
    assert set(noise["corrupt"].unique()) == set(runs["corrupt"].unique())


def test_ensemble_statistics_recomputed(tiny: dict) -> None:
    d = tiny["ensemble"].out_dir
    runs = pl.read_parquet(d / "runs.parquet")
    for row in runs.iter_rows(named=True):
        m = pl.read_parquet(d / "runs" / row["run_id"] / "train" / "metrics.parquet")
        last = m.sort("epoch").row(-1, named=True)
        assert row["gen_error"] == pytest.approx(last["train_acc"] - last["test_acc"])
    rho = sps.spearmanr(runs["gen_error"], runs["auc"]).statistic
    claim = tiny["ensemble"].claims[0]
    if runs.height >= 4:
        assert claim.value == pytest.approx(rho)
    else:
        assert claim.verdict == INCONCLUSIVE  # too few nets for a verdict


def test_training_statistics_recomputed(tiny: dict) -> None:
    d = tiny["training"].out_dir
    epochs = pl.read_parquet(d / "epochs.parquet")
    for (seed,), part in epochs.group_by(["seed"]):
        part = part.sort("epoch")
        i = int(np.argmin(part["test_loss"].to_numpy()))
        after = part.slice(i)
        m = pl.read_parquet(next((d / "runs").glob(f"seed{seed}-*")) / "train" / "metrics.parquet")
        for row in part.iter_rows(named=True):
            mrow = m.filter(pl.col("epoch") == row["epoch"]).row(0, named=True)
            assert row["test_loss"] == pytest.approx(mrow["test_loss"])
        curves = pl.read_parquet(d / "curves.parquet")
        for row in part.iter_rows(named=True):
            sub = curves.filter((pl.col("epoch") == row["epoch"]) & (pl.col("seed") == seed))
            assert row["auc"] == pytest.approx(_trapezoid_auc(sub, relative=True), abs=1e-9)
            assert row["auc_absolute"] == pytest.approx(_trapezoid_auc(sub), abs=1e-9)
        claim = tiny["training"].claims[0]
        if after.height >= 3:
            rho = sps.spearmanr(after["test_loss"], after["auc"]).statistic
            assert fmt(rho, 2) in claim.statistic
            if epochs["seed"].n_unique() == 1 and after.height <= 7:  # one seed: SciPy exact
                x, y = after["test_loss"].to_numpy(), after["auc"].to_numpy()
                ref = sps.permutation_test(
                    (y,),
                    lambda b, x=x: sps.spearmanr(x, b).statistic,
                    permutation_type="pairings",
                    alternative="less",
                ).pvalue
                assert claim.estimate == pytest.approx(rho)
                assert claim.p_value == pytest.approx(ref)
                assert claim.verdict == verdict_from_interval(claim.ci, 0.0, "less", ref)
        else:
            assert claim.verdict == INCONCLUSIVE


def test_selection_statistics_recomputed(tiny: dict) -> None:
    d = tiny["selection"].out_dir
    runs = pl.read_parquet(d / "runs.parquet")
    picks = pl.read_parquet(d / "selection.parquet")
    gaps, random_gaps = [], []
    for row in picks.iter_rows(named=True):
        part = runs.filter(pl.col("seed") == row["seed"]).to_dicts()
        best_auc = max(part, key=lambda r: r["auc"])
        assert row["pick"] == best_auc["setting"]
        rank = 1 + sum(1 for r in part if r["test_acc"] > best_auc["test_acc"])
        assert row["pick_rank"] == rank
        assert row["top1"] == (rank <= 1) and row["top5"] == (rank <= 5)
        best = max(r["test_acc"] for r in part)
        gaps.append(best - best_auc["test_acc"])
        random_gaps.append(np.mean([best - r["test_acc"] for r in part]))
    claim = tiny["selection"].claims[0]
    diffs = (np.array(gaps) - np.array(random_gaps)) * 100  # paired per repeat, in pp
    assert claim.value == claim.estimate == pytest.approx(diffs.mean())
    assert claim.n == len(gaps) and claim.expected == "less"
    if len(diffs) >= 2:
        ref = sps.permutation_test(
            (diffs,), np.mean, permutation_type="samples", alternative="less"
        ).pvalue
        assert claim.p_value == pytest.approx(ref)
    assert claim.verdict == verdict_from_interval(claim.ci, 0.0, "less", claim.p_value)


def test_dropout_slopes_recomputed(tiny: dict) -> None:
    d = tiny["dropout"].out_dir
    curves = pl.read_parquet(d / "curves.parquet")
    slopes = pl.read_parquet(d / "slopes.parquet")
    for row in slopes.iter_rows(named=True):
        part = curves.filter(
            (pl.col("dropout") == row["dropout"]) & (pl.col("corrupt") == row["corrupt"])
        )
        mean = part.group_by("fraction_ablated").agg(pl.col("accuracy").mean())
        pts = sorted(zip(mean["fraction_ablated"], mean["accuracy"], strict=True))

        def at(x: float, pts: list = pts) -> float:
            for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
                if x0 <= x <= x1:
                    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            raise AssertionError(x)

        p = row["dropout"]
        hi = min(1.0, 3 * p)
        assert row["loss_per_fraction_within"] == pytest.approx((at(0.0) - at(p)) / p)
        assert row["loss_per_fraction_beyond"] == pytest.approx((at(p) - at(hi)) / (hi - p))


def test_dropout_claims_recomputed(tiny: dict) -> None:
    d = tiny["dropout"].out_dir
    curves = pl.read_parquet(d / "curves.parquet")
    per = pl.read_parquet(d / "ordering_slopes.parquet")
    assert per.height == curves.select("run_id", "ordering").unique().height
    for row in per.iter_rows(named=True):
        part = curves.filter(
            (pl.col("run_id") == row["run_id"]) & (pl.col("ordering") == row["ordering"])
        ).sort("fraction_ablated")
        x, y, p = part["fraction_ablated"].to_numpy(), part["accuracy"].to_numpy(), row["dropout"]
        hi = min(1.0, 3 * p)
        within = (np.interp(0.0, x, y) - np.interp(p, x, y)) / p
        beyond = (np.interp(p, x, y) - np.interp(hi, x, y)) / (hi - p)
        assert row["faster"] == pytest.approx(beyond - within)
    claim = tiny["dropout"].claims[0]
    noisy = per.filter(pl.col("corrupt") == 1.0)
    rates = sorted(noisy["dropout"].unique().to_list())
    assert "Holm" in claim.rule and all(f"p={fmt(r, 1)}" in claim.statistic for r in rates)
    if len(rates) == 1:  # one comparison: Holm changes nothing; units are orderings here
        diffs = noisy["faster"].to_numpy()
        assert claim.estimate == pytest.approx(diffs.mean())
        ref = sps.permutation_test(
            (diffs,), np.mean, permutation_type="samples", alternative="greater"
        ).pvalue
        assert claim.p_value == pytest.approx(ref, abs=0.03)
        assert claim.verdict == verdict_from_interval(claim.ci, 0.0, "greater", claim.p_value)


def test_batchnorm_statistics_recomputed(tiny: dict) -> None:
    d = tiny["batchnorm"].out_dir
    units = pl.read_parquet(d / "units.parquet")
    # the units of the test are nets: each net's mean selectivity over its units
    per_net = units.group_by(["batchnorm", "run_id"]).agg(pl.col("selectivity").mean())
    off = per_net.filter(pl.col("batchnorm") == "no batch norm")["selectivity"].to_list()
    on = per_net.filter(pl.col("batchnorm") == "batch norm")["selectivity"].to_list()
    wins = sum((a > b) + 0.5 * (a == b) for a in off for b in on) / (len(off) * len(on))
    claim = tiny["batchnorm"].claims[1]
    assert f"= {fmt(wins, 2)}" in claim.statistic
    assert claim.value == pytest.approx(np.mean(off) - np.mean(on))
    assert claim.n == len(off) + len(on)
    assert claim.verdict == verdict_from_interval(claim.ci, 0.0, "greater", claim.p_value)


def test_selectivity_correlations_recomputed(tiny: dict) -> None:
    d = tiny["selectivity"].out_dir
    units = pl.read_parquet(d / "units.parquet")
    table = pl.read_parquet(d / "correlations.parquet")
    rs = []
    for row in table.iter_rows(named=True):
        part = units.filter(pl.col("layer") == row["layer"])
        r = sps.pearsonr(part["selectivity"], part["accuracy_drop"]).statistic
        rho = sps.spearmanr(part["mutual_info"], part["accuracy_drop"]).statistic
        assert row["r_selectivity"] == pytest.approx(r, abs=1e-9)
        assert row["rho_mutual_info"] == pytest.approx(rho, abs=1e-9)
        rs.append(abs(r))
    claim = tiny["selectivity"].claims[0]
    assert claim.null == 0.3 and claim.expected == "less" and "Holm" in claim.rule
    assert any(claim.estimate == pytest.approx(r, abs=1e-9) for r in rs)
    if claim.verdict == HOLDS:
        assert max(rs) < 0.3 and claim.p_value < 0.05
    if claim.verdict == FAILS:
        assert max(rs) > 0.3
    # importance recomputed by hand for one unit: zero it with a hook and re-evaluate
    import torch
    from singledir.checkpoint import load_checkpoint
    from singledir.experiments.runner import eval_data

    rdir = next((d / "runs").glob("seed*"))
    spec = json.loads((rdir / "spec.json").read_text())
    model = load_checkpoint(rdir / "train" / "ckpt.pt").model.eval()
    data = eval_data(spec["train"], spec["analysis"]["eval_samples"])
    row = units.filter(pl.col("layer") == "relu2").sort("accuracy_drop").row(-1, named=True)
    unit = int(row["unit"])

    def zero(_m: object, _i: object, o: torch.Tensor) -> torch.Tensor:
        o = o.clone()
        o[:, unit] = 0
        return o

    handle = dict(model.named_modules())["relu2"].register_forward_hook(zero)
    try:
        with torch.no_grad():
            acc = (model(data.x).argmax(1) == data.y).double().mean().item()
    finally:
        handle.remove()
    with torch.no_grad():
        base = (model(data.x).argmax(1) == data.y).double().mean().item()
    assert row["accuracy_drop"] == pytest.approx(base - acc, abs=1e-9)


# ------------------------------------------------------------------------ resume and refusal


def test_rerun_skips_finished_runs_and_redoes_a_lost_one(tiny: dict, tmp_path: Path) -> None:
    src = tiny["ensemble"].out_dir
    d = tmp_path / "ens"
    shutil.copytree(src, d)
    before = pl.read_parquet(d / "runs.parquet").sort("seed")
    again = run_experiment("ensemble", "tiny", None, d, executor="serial", progress=False)
    assert again.runs_skipped == again.runs_total
    # an interrupted run: its folder without the done marker (e.g. killed while ablating)
    victim = sorted((d / "runs").iterdir())[0]
    (victim / DONE_MARKER).unlink()
    (victim / "curves.parquet").unlink()
    third = run_experiment("ensemble", "tiny", None, d, executor="serial", progress=False)
    assert third.runs_skipped == third.runs_total - 1
    assert (victim / DONE_MARKER).exists()
    after = pl.read_parquet(d / "runs.parquet").sort("seed")
    assert after["auc"].to_list() == before["auc"].to_list()  # same seeds, same numbers
    # same folder, same verdicts, intervals and p-values (resampling seeds recorded)
    assert [c.to_dict() for c in third.claims] == [c.to_dict() for c in again.claims]
    assert [c.to_dict() for c in again.claims] == [c.to_dict() for c in tiny["ensemble"].claims]
    # changed settings make new runs, never reusing results of other settings
    fourth = run_experiment("ensemble", "tiny", {"epochs": 2}, d, executor="serial", progress=False)
    assert fourth.runs_skipped == 0
    manifest = json.loads((d / MANIFEST).read_text())
    assert manifest["settings"]["epochs"] == 2


def test_refuses_folder_of_another_experiment(tiny: dict) -> None:
    d = tiny["ensemble"].out_dir
    with pytest.raises(ConfigError, match="holds results of experiment 'ensemble'") as info:
        run_experiment("corruption", "tiny", None, d, executor="serial", progress=False)
    assert "\n" not in str(info.value) and "--out" in str(info.value)


def test_refuses_foreign_nonempty_folder_and_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        run_experiment("corruption", "tiny", None, tmp_path, executor="serial")
    with pytest.raises(ConfigError, match="is a file"):
        run_experiment("corruption", "tiny", None, tmp_path / "notes.txt", executor="serial")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_unknown_experiment_and_preset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown experiment 'fig9'"):
        run_experiment("fig9", "tiny", None, tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        run_experiment("corruption", "huge", None, tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------- settings


def test_presets_resolve_and_overrides_win() -> None:
    for name in EXPERIMENTS:
        for preset in ("tiny", "quick"):
            s = resolve_settings(name, preset)
            assert s.dataset == "digits" and s.model == "mlp" and s.preset == preset
        assert resolve_settings(name, "paper").model == "convnet11"
    q = resolve_settings("corruption", "quick")
    assert q.widths == (128, 128) and q.orderings == 10 and q.levels == 21
    s = resolve_settings("corruption", "quick", {"epochs": 3, "fractions": (0.0, 1.0)})
    assert s.epochs == 3 and s.fractions == (0.0, 1.0)
    m = resolve_settings("corruption", "quick", {"dataset": "mnist"})
    assert m.model == "mlp" and m.train_size == 2000
    assert resolve_settings("corruption", "paper", {"dataset": "mnist"}).widths == (512, 512)
    assert resolve_settings("corruption", "paper", {"dataset": "imagenet"}).model == "resnet50"
    assert Settings.from_dict(s.to_dict()) == s


def test_preset_dataset_and_value_errors() -> None:
    with pytest.raises(ConfigError, match="quick preset cannot use dataset 'imagenet'"):
        resolve_settings("corruption", "quick", {"dataset": "imagenet"})
    with pytest.raises(ConfigError, match="paper preset cannot use dataset 'digits'"):
        resolve_settings("corruption", "paper", {"dataset": "digits"})
    with pytest.raises(ConfigError, match="--fractions"):
        resolve_settings("corruption", "quick", {"fractions": (0.0, 1.5)})
    with pytest.raises(ConfigError, match="--epochs"):
        resolve_settings("corruption", "quick", {"epochs": 0})
    with pytest.raises(ConfigError, match="--dropouts"):
        resolve_settings("dropout", "quick", {"dropouts": (0.0,)})
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_list("1,x", int, "--widths")
    assert parse_list(" 0, 0.5 ,1", float, "--fractions") == (0.0, 0.5, 1.0)


def test_every_size_is_a_cli_flag() -> None:
    import inspect

    from singledir.cli.reproduce_cmd import reproduce

    params = set(inspect.signature(reproduce).parameters)
    fields = set(Settings.__dataclass_fields__) - {
        "preset",
        "extra",
        "momentum",
        "schedule",
        "small_input",
    }
    assert fields <= params, sorted(fields - params)


# ---------------------------------------------------------------------------- report helpers


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(0, 10_000), st.booleans())
def test_compare_claim_matches_pairwise_loop_and_scipy(
    na: int, nb: int, seed: int, ties: bool
) -> None:
    rng = np.random.default_rng(seed)
    draw = (lambda k: rng.integers(0, 3, k) / 2.0) if ties else (lambda k: rng.normal(0, 1, k))
    a, b = list(draw(na) + 0.3), list(draw(nb))
    c = compare_claim(
        "F", "c", a, b, larger_name="A", smaller_name="B", what="x", seed=3, n_resamples=400
    )
    wins = sum((x > y) + 0.5 * (x == y) for x in a for y in b) / (len(a) * len(b))
    assert f"P(A > B) = {fmt(wins, 2)}" in c.statistic
    assert c.value == c.estimate == pytest.approx(np.mean(a) - np.mean(b))
    assert c.n == len(a) + len(b) and c.null == 0.0 and c.expected == "greater"
    # p by a plain loop over every split (ties within 1e-9 count as at least as extreme)
    pooled = a + b
    obs = np.mean(a) - np.mean(b)
    splits = list(itertools.combinations(range(len(pooled)), len(a)))
    extreme = 0
    for idx in splits:
        mean_in = np.mean([pooled[i] for i in idx])
        mean_out = np.mean([pooled[i] for i in range(len(pooled)) if i not in idx])
        extreme += mean_in - mean_out >= obs - 1e-9
    if len(splits) <= 9999:
        assert c.p_value == pytest.approx(extreme / len(splits), abs=1e-12)
    else:  # random splits: Monte Carlo error
        assert c.p_value == pytest.approx(extreme / len(splits), abs=0.03)
    if len(a) >= 2 and len(b) >= 2 and not ties:  # SciPy wants two values per group
        ref = sps.permutation_test(
            (a, b),
            lambda u, v: np.mean(u) - np.mean(v),
            permutation_type="independent",
            alternative="greater",
            n_resamples=9999,
        ).pvalue
        assert c.p_value == pytest.approx(ref, abs=1e-12 if len(splits) <= 9999 else 0.03)
    assert c.ci is not None
    if min(len(a), len(b)) < MIN_UNITS:
        # too few nets in a group: no interval, inconclusive
        assert np.isnan(c.ci).all() and c.verdict == "inconclusive", c.statistic
    elif np.ptp(a) == 0 and np.ptp(b) == 0:
        # enough nets, no spread: every resample gives the observed difference
        assert c.ci[0] == c.ci[1] == pytest.approx(np.mean(a) - np.mean(b)), c.statistic
        assert "every bootstrap resample" in c.statistic
    else:
        assert c.ci[0] <= c.ci[1]
    assert c.verdict == verdict_from_interval(c.ci, 0.0, "greater", c.p_value)
    again = compare_claim(
        "F", "c", a, b, larger_name="A", smaller_name="B", what="x", seed=3, n_resamples=400
    )
    assert again.to_dict() == c.to_dict()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(-9, 9), st.floats(-9, 9)), min_size=0, max_size=9))
def test_correlation_claim_matches_scipy(points: list[tuple[float, float]]) -> None:
    x = [p[0] for p in points]
    y = [p[1] for p in points]
    c = correlation_claim("F", "c", x, y, expect="negative", what="points", n_resamples=400)
    if len(points) < 3 or np.ptp(x or [0]) == 0 or np.ptp(y or [0]) == 0:
        assert c.verdict == INCONCLUSIVE and c.ci is None
        return
    rho = sps.spearmanr(x, y).statistic
    assert c.value == c.estimate == pytest.approx(rho, abs=1e-9)
    assert c.expected == "less" and c.n == len(points)
    ref = sps.permutation_test(
        (y,),
        lambda b: sps.spearmanr(x, b).statistic,
        permutation_type="pairings",
        alternative="less",
        n_resamples=9999,
    ).pvalue
    if len(points) <= 7:  # exact: identical
        assert c.p_value == pytest.approx(ref, abs=1e-9)
    else:  # random permutations: Monte Carlo error
        assert c.p_value == pytest.approx(ref, abs=0.03)
    assert c.verdict == verdict_from_interval(c.ci, 0.0, "less", c.p_value)
    pos = correlation_claim("F", "c", x, y, expect="positive", what="points", n_resamples=400)
    assert pos.expected == "greater"
    assert pos.verdict == verdict_from_interval(pos.ci, 0.0, "greater", pos.p_value)


def test_write_report_inlines_figures_and_escapes(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_path = tmp_path / "figures" / "f.png"
    fig_path.parent.mkdir()
    plt.plot([0, 1], [1, 0])
    plt.savefig(fig_path)
    plt.close("all")
    claim = Claim("Fig. 1", "a <b> & c", "rho = -1", HOLDS, -1.0, "rule")
    section = Section(
        "x", "Title", "desc", [claim], [("cap", fig_path)], [("t", pl.DataFrame({"a": [1.5]}))]
    )
    html_path, md_path = write_report(tmp_path, "R", [section], {"k": "v"})
    html = html_path.read_text()
    assert (
        "a &lt;b&gt; &amp; c" in html
        and "<b>" not in html.split("<body>")[1].split("a &lt;")[0][-3:]
    )
    assert html.count("data:image/png;base64,") == 1
    md = md_path.read_text()
    assert "![cap](figures/f.png)" in md and "**holds**" in md and "| 1.500 |" in md


def test_progress_file_reports_phase_and_epoch(tmp_path: Path) -> None:
    from singledir.experiments.runner import PROGRESS_FILE, PhaseTimer, _progress_of

    assert _progress_of(tmp_path) == (0.0, "starting")
    timer = PhaseTimer(tmp_path / PROGRESS_FILE)
    timer.note(phase="train", epoch=5, epochs=20)
    frac, state = _progress_of(tmp_path)
    assert frac == pytest.approx(0.8 * 5 / 20) and state == "epoch 5/20"
    with timer.phase("ablation"):
        assert _progress_of(tmp_path) == (0.85, "ablation")
    assert timer.seconds["ablation"] >= 0.0


def test_all_gathers_every_experiment_into_one_report(tiny: dict, tmp_path: Path) -> None:
    # Reuse the tiny runs (copied into the layout of `all`): only the reports are redone.
    root = tmp_path / "all"
    root.mkdir()
    for name in EXPERIMENTS:
        shutil.copytree(tiny[name].out_dir, root / name)
    out = run_experiment("all", "tiny", None, root, executor="serial", progress=False)
    assert out.runs_skipped == out.runs_total == sum(tiny[n].runs_total for n in EXPERIMENTS)
    assert [c.statistic for c in out.claims] == [
        c.statistic for n in EXPERIMENTS for c in tiny[n].claims
    ]
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["experiment"] == "all" and manifest["status"] == "complete"
    html = out.report_html.read_text()
    assert "All claims" in html
    for name in EXPERIMENTS:
        assert f"id='{name}'" in html
    n_png = sum(len(list((root / n / "figures").glob("*.png"))) for n in EXPERIMENTS)
    assert html.count("data:image/png;base64,") == n_png
    md = out.report_md.read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (root / link).exists()
    # a single experiment may not write into the folder of `all`
    with pytest.raises(ConfigError, match="holds results of experiment 'all'"):
        run_experiment("corruption", "tiny", None, root, executor="serial")


def test_selectivity_loss_rise_correlation_recomputed(tiny: dict) -> None:
    d = tiny["selectivity"].out_dir
    units = pl.read_parquet(d / "units.parquet")
    table = pl.read_parquet(d / "correlations.parquet")
    for row in table.iter_rows(named=True):
        part = units.filter(pl.col("layer") == row["layer"])
        r = sps.pearsonr(part["selectivity"], part["loss_rise"]).statistic
        assert row["r_selectivity_loss_rise"] == pytest.approx(r, abs=1e-9)


@pytest.mark.parametrize("dataset", ["cifar10", "mnist", "imagenet"])
def test_paper_preset_plans_valid_training_configs(dataset: str) -> None:
    from singledir.experiments import experiment_module
    from singledir.train import TrainConfig

    for name in EXPERIMENTS:
        s = resolve_settings(name, "paper", {"dataset": dataset})
        specs = experiment_module(name).plan(s)
        assert specs and len({sp["run_id"] for sp in specs}) == len(specs)
        for sp in specs:
            cfg = TrainConfig.from_dict(sp["train"])
            cfg.validate()
            assert cfg.dataset == dataset and cfg.device == "auto"
    assert resolve_settings("ensemble", "paper").ensemble_size == 50


def test_refused_plan_leaves_nothing(tmp_path: Path) -> None:
    over = {"dataset": "imagenet", "sweep_widths": (1.0, 2.0)}
    with pytest.raises(ConfigError, match="--sweep-widths applies to mlp and convnet11"):
        run_experiment("selection", "paper", over, tmp_path / "x", executor="serial")
    assert not (tmp_path / "x").exists()


def test_paper_cost_counts_the_plan_and_help_states_it() -> None:
    from singledir.cli.app import app
    from singledir.experiments import experiment_module
    from singledir.experiments.settings import paper_cost
    from typer.testing import CliRunner

    for name in ("corruption", "ensemble", "training", "selection", "dropout", "batchnorm"):
        s = resolve_settings(name, "paper")
        cost = paper_cost(name)
        assert cost["nets"] == len(experiment_module(name).plan(s))
        assert cost["train_images"] == cost["nets"] * s.epochs * 50_000  # CIFAR-10 train set
        assert 0 < cost["gpu_hours"] < cost["cpu_hours"]
    text = CliRunner().invoke(app, ["reproduce", "--help"], env={"COLUMNS": "200"}).output
    for name in ("corruption", "ensemble", "selection", "selectivity"):
        c = paper_cost(name)
        assert f"{name}: {c['nets']} convnet11 nets x {c['epochs']} epochs" in text
        assert f"~{c['gpu_hours']:.3g} GPU h" in text


def test_paper_preset_says_its_cost_before_starting(tmp_path: Path, monkeypatch) -> None:
    from singledir.cli.app import app
    from singledir.experiments.settings import paper_cost
    from typer.testing import CliRunner

    monkeypatch.delenv("SINGLEDIR_DATA", raising=False)
    out = tmp_path / "paper"
    result = CliRunner().invoke(
        app, ["reproduce", "corruption", "--preset", "paper", "--out", str(out)]
    )
    cost = paper_cost("corruption")
    text = " ".join(result.output.split())
    assert f"paper preset: {cost['nets']} nets for corruption on cifar10" in text
    assert "GPU hours" in text or f"~{cost['cpu_hours']:.3g} CPU hours" in text
    assert result.exit_code != 0 and "cifar10" in text  # no CIFAR-10 here: refused
    assert not out.exists() or not any(out.iterdir())  # nothing started
