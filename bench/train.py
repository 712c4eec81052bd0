"""Training throughput: singledir.train against a plain hand-written PyTorch loop.

Same model (MLP, seeded init), same data tensors, same batch order, same optimizer; both
evaluate on the test set after every epoch. singledir additionally writes resume.pt and
metrics.parquet every epoch and ckpt.pt at the end, and its time includes preparing the data
from the (cached) files. The two runs must end with bit-identical weights, which shows they did
the same work. Runs alternate and the best of ``--repeats`` is kept (the machine is shared).

With ``--monitoring``: the cost of the AUC monitor (``singledir.AUCMonitor`` at its defaults:
1000 training samples, 3 orderings, 21 levels, every site) as a share of one training epoch,
and the selectivity regularizer's overhead per training step, measured side by side in one
process (alternating, best of ``--repeats``).

Usage:
    python bench/train.py [--train-size 20000] [--epochs 2] [--threads 1] [--repeats 3]
    python bench/train.py --monitoring [--train-size 60000] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from singledir.checkpoint import load_checkpoint
from singledir.data import LabeledData, load_dataset
from singledir.models import build_model
from singledir.train import TrainConfig, train


def _data_root() -> str | None:
    for root in (
        os.environ.get("SINGLEDIR_DATA", ""),
        str(Path(__file__).parents[2] / "shared/data"),
    ):
        if root and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return root
    return None


def plain_loop(cfg: TrainConfig, train_data: LabeledData, test_data: LabeledData) -> dict:
    """What one would write by hand: seeded init, randperm batches, SGD, test eval per epoch."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model_config(train_data.in_shape, train_data.num_classes))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    gen = torch.Generator().manual_seed(cfg.seed)
    x, y = train_data.x, train_data.y
    n = x.shape[0]
    accs = []
    for _ in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = 0
            for s in range(0, len(test_data), cfg.eval_batch_size):
                out = model(test_data.x[s : s + cfg.eval_batch_size])
                correct += int((out.argmax(1) == test_data.y[s : s + cfg.eval_batch_size]).sum())
        accs.append(correct / len(test_data))
    return {"model": model, "test_acc": accs[-1]}


def _epoch(model, opt, x, y, batch_size: int, gen: torch.Generator, reg=None) -> int:
    """One epoch of plain SGD steps (with the regularizer's penalty when given)."""
    model.train()
    perm = torch.randperm(x.shape[0], generator=gen)
    steps = 0
    for start in range(0, x.shape[0], batch_size):
        idx = perm[start : start + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        if reg is not None:
            loss = loss + reg.penalty(y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    return steps


def monitoring(args: argparse.Namespace) -> None:
    """AUC monitor per epoch, and the regularizer per step, against plain training."""
    from singledir import AUCMonitor, SelectivityRegularizer

    root = _data_root()
    dataset = "mnist" if root else "digits"
    size = args.train_size if root else None
    data = load_dataset(dataset, "train", data_dir=root, train_size=size)
    assert isinstance(data, LabeledData)
    cfg = TrainConfig(dataset=dataset, widths=args.widths, device="cpu")
    torch.manual_seed(0)
    model = build_model(cfg.model_config(data.in_shape, data.num_classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    monitor = AUCMonitor(data, samples=1000)  # the defaults: 3 orderings, 21 levels, all sites
    reg = SelectivityRegularizer(model, 1.0, data.num_classes, sample_x=data.x[:2])
    gen = torch.Generator().manual_seed(0)
    _epoch(model, opt, data.x[:2048], data.y[:2048], args.batch_size, gen)  # warm-up
    monitor(model, 0)
    times: dict[str, list[float]] = {"epoch": [], "monitor": [], "step": [], "step_reg": []}
    steps = 0
    for r in range(args.repeats):
        t0 = time.perf_counter()
        steps = _epoch(model, opt, data.x, data.y, args.batch_size, gen)
        times["epoch"].append(time.perf_counter() - t0)
        for k in range(3):
            t0 = time.perf_counter()
            monitor(model, 3 * r + k + 1)
            times["monitor"].append(time.perf_counter() - t0)
    # The regularizer: blocks of 20 steps with and without it, alternating, so that both
    # sides see the same machine load; per-step medians.
    block = 20 * args.batch_size
    for b in range(20):
        start = (b * block) % max(1, data.x.shape[0] - block)
        xb, yb = data.x[start : start + block], data.y[start : start + block]
        t0 = time.perf_counter()
        n = _epoch(model, opt, xb, yb, args.batch_size, gen)
        times["step"].append((time.perf_counter() - t0) / n)
        with reg:
            t0 = time.perf_counter()
            n = _epoch(model, opt, xb, yb, args.batch_size, gen, reg)
            times["step_reg"].append((time.perf_counter() - t0) / n)
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"data {dataset}, {len(data)} training samples, MLP {cfg.widths}, batch "
        f"{args.batch_size} ({steps} steps/epoch), SGD, {args.threads} thread(s); epochs: "
        f"{args.repeats}, monitor calls: {3 * args.repeats}, interleaved; monitor: 1000 "
        f"samples, 3 orderings, 21 levels, {len(reg.sites)} sites; regularizer ALPHA=1 on the "
        "same sites, 20 alternating blocks of 20 steps"
    )
    print(f"{'measurement':<36}{'best':>10}{'median':>10}{'ratio (median)':>26}")
    print(f"{'training epoch (s)':<36}{best['epoch']:>10.3f}{med['epoch']:>10.3f}")
    print(
        f"{'AUC monitor, one call (s)':<36}{best['monitor']:>10.3f}{med['monitor']:>10.3f}"
        f"{med['monitor'] / med['epoch']:>14.1%} of an epoch"
    )
    print(f"{'training step (ms)':<36}{best['step'] * 1e3:>10.2f}{med['step'] * 1e3:>10.2f}")
    print(
        f"{'step with the regularizer (ms)':<36}{best['step_reg'] * 1e3:>10.2f}"
        f"{med['step_reg'] * 1e3:>10.2f}{med['step_reg'] / med['step'] - 1:>+14.1%} per step"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--widths", default="512,512")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--monitoring", action="store_true", help="AUC monitor and regularizer")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.monitoring:
        monitoring(args)
        return

    root = _data_root()
    dataset = "mnist" if root else "digits"
    size = args.train_size if root else None
    cfg = TrainConfig(
        dataset=dataset,
        data_dir=root,
        train_size=size,
        widths=args.widths,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        train_metrics="running",
        device="cpu",
        threads=args.threads,
    )
    train_data = load_dataset(dataset, "train", data_dir=root, train_size=size)
    test_data = load_dataset(dataset, "test", data_dir=root)
    assert isinstance(train_data, LabeledData) and isinstance(test_data, LabeledData)
    n_samples = len(train_data) * args.epochs
    eval_cfg = TrainConfig(**{**cfg.to_dict(), "train_metrics": "eval"})

    times: dict[str, list[float]] = {"plain": [], "singledir": [], "singledir-eval": []}
    identical = True
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up (lazy imports, allocator, first-call dispatch) outside the timings.
        warm = TrainConfig(
            **{**cfg.to_dict(), "epochs": 1, "train_size": None, "dataset": "digits"}
        )
        warm_data = load_dataset("digits", "train")
        assert isinstance(warm_data, LabeledData)
        plain_loop(warm, warm_data, warm_data)
        train(warm, Path(tmp) / "warm", resume=False, progress=False)
        for r in range(args.repeats):
            t0 = time.perf_counter()
            ref = plain_loop(cfg, train_data, test_data)
            times["plain"].append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            res = train(cfg, Path(tmp) / f"run{r}", resume=False, progress=False)
            times["singledir"].append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            train(eval_cfg, Path(tmp) / f"eval{r}", resume=False, progress=False)
            times["singledir-eval"].append(time.perf_counter() - t0)

            ours = load_checkpoint(res.checkpoint).model.state_dict()
            theirs = ref["model"].state_dict()
            identical &= all(torch.equal(ours[k], theirs[k]) for k in theirs)
            assert abs(res.final["test_acc"] - ref["test_acc"]) < 1e-12

    print(
        f"data {dataset}, {len(train_data)} training samples x {args.epochs} epochs, "
        f"MLP {cfg.widths}, batch {cfg.batch_size}, SGD, {args.threads} thread(s), "
        f"best of {args.repeats}; final weights identical: {identical}"
    )
    plain_best = min(times["plain"])
    print(f"{'loop':<42}{'best s':>8}{'median s':>10}{'samples/s':>12}{'overhead':>10}")
    labels = {
        "plain": "plain PyTorch loop",
        "singledir": "singledir.train (train_metrics=running)",
        "singledir-eval": "singledir.train (train_metrics=eval)",
    }
    for key, ts in times.items():
        best = min(ts)
        print(
            f"{labels[key]:<42}{best:>8.2f}{statistics.median(ts):>10.2f}"
            f"{n_samples / best:>12.0f}{(best / plain_best - 1):>+10.1%}"
        )


if __name__ == "__main__":
    main()
