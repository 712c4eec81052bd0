"""The native MLP walk (singledir.engine.native_walk) against a plain NumPy float64 reference:
one dense forward pass per (ordering, level) mask, and per single-unit ablation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from singledir.engine.native_walk import mlp_curves, mlp_importance
from singledir.errors import InputError

MARGIN = 1e-4  # top-1 vs top-2 logit gap below which a float32 prediction may flip


def random_chain(rng: np.random.Generator, n_layers: int, mean_fill: bool, n_samples: int):
    widths = [int(rng.integers(1, 14)) for _ in range(n_layers)]
    n_classes = int(rng.integers(2, 15))
    dims = [*widths, n_classes]
    h0 = np.maximum(rng.normal(size=(n_samples, dims[0])) - 0.2, 0).astype(np.float32)
    layers = [
        (
            rng.normal(size=(dims[m + 1], dims[m])).astype(np.float32),
            (0.5 * rng.normal(size=dims[m + 1])).astype(np.float32),
        )
        for m in range(n_layers)
    ]
    site_layers = [0] + [m for m in range(1, n_layers) if rng.random() < 0.7]
    fills = [
        (rng.random(dims[s]) if mean_fill else np.zeros(dims[s])).astype(np.float32)
        for s in site_layers
    ]
    labels = rng.integers(0, n_classes, n_samples)
    return h0, layers, site_layers, fills, labels


def reference_logits(h0, layers, site_layers, fills, ablated: np.ndarray) -> np.ndarray:
    """Dense float64 forward pass with the pooled units in ``ablated`` at their fill."""
    sizes = [h0.shape[1]] + [w.shape[0] for w, _ in layers[:-1]]
    a = h0.astype(np.float64)
    off = 0
    site_off = {}
    for s in site_layers:
        site_off[s] = off
        off += sizes[s]
    for m, (w, b) in enumerate(layers):
        if m in site_off:
            k = site_layers.index(m)
            sel = ablated[site_off[m] : site_off[m] + sizes[m]]
            a = a.copy()
            a[:, sel] = fills[k][sel].astype(np.float64)
        z = a @ w.astype(np.float64).T + b.astype(np.float64)
        a = np.maximum(z, 0) if m + 1 < len(layers) else z
    return a


def reference_score(logits: np.ndarray, labels: np.ndarray) -> tuple[int, float, int, np.ndarray]:
    """(correct, summed cross-entropy, borderline count, correct mask) of float64 logits."""
    pred = logits.argmax(1)
    top2 = np.sort(logits, axis=1)[:, -2:] if logits.shape[1] > 1 else None
    border = (top2[:, 1] - top2[:, 0]) < MARGIN if top2 is not None else np.zeros(len(pred), bool)
    mx = logits.max(1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(logits - mx).sum(1))
    loss = lse - logits[np.arange(len(labels)), labels]
    hit = pred == labels
    return int(hit.sum()), float(loss.sum()), int(border.sum()), hit


def assert_matches(correct: int, loss: float, ref: tuple[int, float, int, np.ndarray], what: str):
    c_ref, l_ref, border, _ = ref
    assert abs(correct - c_ref) <= border, f"{what}: {correct} vs {c_ref} ({border} borderline)"
    assert loss == pytest.approx(l_ref, rel=1e-5, abs=1e-6 * max(1, len(ref[3]))), what


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_layers=st.integers(1, 3),
    mean_fill=st.booleans(),
    n_samples=st.integers(1, 80),
    n_orders=st.integers(1, 3),
)
def test_curves_match_dense_reference(seed, n_layers, mean_fill, n_samples, n_orders):
    rng = np.random.default_rng(seed)
    h0, layers, site_layers, fills, labels = random_chain(rng, n_layers, mean_fill, n_samples)
    n = sum(f.shape[0] for f in fills)
    orders = np.stack([rng.permutation(n) for _ in range(n_orders)])
    levels = np.flatnonzero(rng.random(n + 1) < 0.6)
    correct, loss = mlp_curves(h0, layers, site_layers, fills, orders, levels, labels)
    assert correct.shape == loss.shape == (n_orders, len(levels))
    assert correct.dtype == np.int64 and loss.dtype == np.float64
    for o in range(n_orders):
        for k, level in enumerate(levels):
            ablated = np.zeros(n, bool)
            ablated[orders[o, :level]] = True
            ref = reference_score(reference_logits(h0, layers, site_layers, fills, ablated), labels)
            assert_matches(correct[o, k], loss[o, k], ref, f"ordering {o} level {level}")


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_layers=st.integers(1, 3),
    mean_fill=st.booleans(),
    n_samples=st.integers(1, 60),
)
def test_importance_matches_dense_reference(seed, n_layers, mean_fill, n_samples):
    rng = np.random.default_rng(seed)
    h0, layers, site_layers, fills, labels = random_chain(rng, n_layers, mean_fill, n_samples)
    n = sum(f.shape[0] for f in fills)
    n_classes = layers[-1][0].shape[0]
    correct, loss, per_class = mlp_importance(h0, layers, site_layers, fills, labels, n_classes)
    assert correct.shape == loss.shape == (n,) and per_class.shape == (n, n_classes)
    for u in range(n):
        ablated = np.zeros(n, bool)
        ablated[u] = True
        ref = reference_score(reference_logits(h0, layers, site_layers, fills, ablated), labels)
        assert_matches(correct[u], loss[u], ref, f"unit {u}")
        if ref[2] == 0:  # no borderline sample: per-class counts are exact
            want = np.bincount(labels[ref[3]], minlength=n_classes)
            np.testing.assert_array_equal(per_class[u], want)
        assert per_class[u].sum() == correct[u]


def test_sparse_site0_units_are_noops():
    """A site-0 unit that is zero on every sample (value="zero") leaves the curve flat."""
    rng = np.random.default_rng(3)
    h0, layers, _, _, labels = random_chain(rng, 2, False, 50)
    h0[:, 0] = 0.0
    n0, n1 = h0.shape[1], layers[0][0].shape[0]
    fills = [np.zeros(n0, np.float32), np.zeros(n1, np.float32)]
    orders = np.arange(n0 + n1)[None]
    correct, loss = mlp_curves(h0, layers, [0, 1], fills, orders, [0, 1], labels)
    assert correct[0, 0] == correct[0, 1] and loss[0, 0] == loss[0, 1]
    c_imp, l_imp, _ = mlp_importance(h0, layers, [0, 1], fills, labels, 20)
    assert c_imp[0] == correct[0, 0] and l_imp[0] == loss[0, 0]


def test_torch_tensors_and_lists_are_accepted():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    h0, layers, site_layers, fills, labels = random_chain(rng, 2, True, 20)
    n = sum(f.shape[0] for f in fills)
    want = mlp_curves(h0, layers, site_layers, fills, [list(range(n))], [0, n], labels)
    got = mlp_curves(
        torch.from_numpy(h0),
        [(torch.from_numpy(w), torch.from_numpy(b)) for w, b in layers],
        tuple(site_layers),
        [torch.from_numpy(f) for f in fills],
        torch.arange(n)[None],
        torch.tensor([0, n]),
        torch.from_numpy(labels),
    )
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_same_result_for_any_thread_count():
    script = textwrap.dedent(
        """
        import numpy as np, sys
        from singledir.engine.native_walk import mlp_curves, mlp_importance
        rng = np.random.default_rng(5)
        n0, n1, b = 40, 30, 3000
        h0 = np.maximum(rng.normal(size=(b, n0)), 0).astype(np.float32)
        layers = [(rng.normal(size=(n1, n0)).astype(np.float32), np.zeros(n1, np.float32)),
                  (rng.normal(size=(10, n1)).astype(np.float32), np.zeros(10, np.float32))]
        fills = [rng.random(n0).astype(np.float32), rng.random(n1).astype(np.float32)]
        y = rng.integers(0, 10, b)
        orders = np.stack([rng.permutation(n0 + n1) for _ in range(3)])
        c, l = mlp_curves(h0, layers, [0, 1], fills, orders, np.arange(n0 + n1 + 1), y)
        ci, li, pc = mlp_importance(h0, layers, [0, 1], fills, y, 10)
        sys.stdout.write(",".join(map(repr, [*c.ravel(), *l.ravel(), *ci, *li, *pc.ravel()])))
        """
    )

    def run(threads: int) -> str:
        env = {**os.environ, "RAYON_NUM_THREADS": str(threads)}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        return out.stdout

    one = run(1)
    assert one and one == run(2)


def _valid():
    rng = np.random.default_rng(2)
    h0 = np.maximum(rng.normal(size=(10, 6)), 0).astype(np.float32)
    layers = [
        (rng.normal(size=(5, 6)).astype(np.float32), np.zeros(5, np.float32)),
        (rng.normal(size=(3, 5)).astype(np.float32), np.zeros(3, np.float32)),
    ]
    fills = [np.zeros(6, np.float32), np.zeros(5, np.float32)]
    labels = rng.integers(0, 3, 10)
    return h0, layers, [0, 1], fills, np.arange(11)[None], np.array([0, 11]), labels


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda a: {**a, "h0": a["h0"].astype(np.float64)}, "h0 must be float32"),
        (lambda a: {**a, "h0": a["h0"][0]}, "h0 must be 2-D"),
        (lambda a: {**a, "layers": []}, "layers is empty"),
        (lambda a: {**a, "layers": [a["layers"][0]]}, "site_layers"),
        (lambda a: {**a, "layers": a["layers"][::-1]}, "inputs"),
        (lambda a: {**a, "site_layers": [1]}, "site_layers"),
        (lambda a: {**a, "site_layers": [0, 0]}, "site_layers"),
        (lambda a: {**a, "fills": a["fills"][:1]}, "fills"),
        (lambda a: {**a, "orders": a["orders"][:, :-1]}, "orders"),
        (lambda a: {**a, "orders": np.zeros_like(a["orders"])}, "permutation"),
        (lambda a: {**a, "orders": a["orders"].astype(float)}, "orders must hold integers"),
        (lambda a: {**a, "levels": a["levels"][::-1]}, "levels must be sorted"),
        (lambda a: {**a, "levels": a["levels"] + 1}, "levels"),
        (lambda a: {**a, "labels": a["labels"][:-1]}, "labels for"),
        (lambda a: {**a, "labels": a["labels"] + 100}, "label"),
        (lambda a: {**a, "h0": np.full_like(a["h0"], np.nan)}, "non-finite"),
    ],
)
def test_bad_input_is_a_one_line_input_error(edit, match):
    names = ["h0", "layers", "site_layers", "fills", "orders", "levels", "labels"]
    args = edit(dict(zip(names, _valid(), strict=True)))
    with pytest.raises(InputError, match=match) as err:
        mlp_curves(**args)
    assert "\n" not in str(err.value)


def test_importance_bad_n_classes():
    h0, layers, site_layers, fills, _, _, labels = _valid()
    with pytest.raises(InputError, match="n_classes"):
        mlp_importance(h0, layers, site_layers, fills, labels, 0)
    with pytest.raises(InputError, match="n_classes must exceed"):
        mlp_importance(h0, layers, site_layers, fills, labels, int(labels.max()))
