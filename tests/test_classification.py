"""Classification losses against independent oracles.

- PyTorch fixtures (tests/fixtures/torch_classification.json, made by
  tests/fixtures/make_torch_classification.py): values, per-row values and autograd
  gradients of (N·L) for every loss; mpmath values for focal at saturated logits.
- scikit-learn: log_loss, hinge_loss (binary and multiclass), compute_class_weight.
- hand-derived numbers, each with where it comes from;
- central finite differences of N·L for every gradient, away from kinks;
- the identities LOSSES.md names (focal with γ = 0, α = −1 is BCE) as hypothesis properties;
- input checks, batch-size invariance and the CLI on sample_data.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import expit, softmax
from sklearn.metrics import hinge_loss, log_loss
from sklearn.utils.class_weight import compute_class_weight

import lossctl
from lossctl import registry
from lossctl.api import per_row
from lossctl.engine import Batch, Context, _sum_stats
from lossctl.errors import InputError, UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "sample_data")
with open(os.path.join(os.path.dirname(__file__), "fixtures", "torch_classification.json")) as fh:
    CASES = json.load(fh)["cases"]

MY_LOSSES = ("bce", "hinge", "squared_hinge", "exponential", "focal", "cross_entropy", "multi_hinge")
LOG2 = math.log(2.0)


# ------------------------------------------------------------------ helpers


def kernel_batch(spec: str, y, pred, weight=None, validate: bool = True):
    """The loss's kernel bound to one batch, pre-pass done, as the engine drives it."""
    call = registry.parse_spec(spec)
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    ctx = Context(task=call.spec.task, grad=True, n_classes=pred.shape[1] if pred.ndim == 2 else None,
                  target_kind="vector" if y.ndim == 2 else "scalar")
    k = call.spec.factory(call.params, ctx)
    b = Batch({"target": y, "pred": pred}, y.shape[0], None if weight is None else np.asarray(weight, float))
    if validate:
        k.validate(b)
    if k.needs_prepass:
        k.prepass(b)
        k.end_prepass()
    return k, b


def nl_and_grad(spec: str, y, pred, weight=None, validate: bool = True):
    """N·L and the reported gradient ∂(N·L)/∂pred, computed as the engine does."""
    k, b = kernel_batch(spec, y, pred, weight, validate)
    stats, grads = k.stats(b, True)
    totals = _sum_stats(stats, b.n)
    return b.n * float(k.value(totals)), grads["pred"] * k.grad_scale(totals, b.n)


def fd_grad(spec: str, y, pred, weight=None, h: float = 1e-6) -> np.ndarray:
    """Central differences of N·L; no validation, so probability rows may step off the simplex."""
    pred = np.asarray(pred, dtype=np.float64)
    g = np.zeros_like(pred)
    for idx in np.ndindex(*pred.shape):
        up, dn = pred.copy(), pred.copy()
        up[idx] += h
        dn[idx] -= h
        g[idx] = (nl_and_grad(spec, y, up, weight, False)[0] - nl_and_grad(spec, y, dn, weight, False)[0]) / (2 * h)
    return g


def grad_stats(g: np.ndarray) -> dict[str, float]:
    flat = g.reshape(-1)
    return {"mean": flat.mean(), "min": flat.min(), "max": flat.max(), "l2": np.linalg.norm(flat),
            "abs_mean": np.abs(flat).mean()}


def onehot(idx, c):
    out = np.zeros((len(idx), c))
    out[np.arange(len(idx)), np.asarray(idx, dtype=int)] = 1.0
    return out


# ------------------------------------------------------------------ torch / mpmath fixtures


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_value_rows_and_gradient_match_fixture(case):
    y, pred = np.array(case["target"], float), np.array(case["pred"], float)
    exact = case.get("oracle") == "mpmath"
    rtol, atol = (1e-13, 1e-300) if exact else (1e-11, 1e-14)
    r = lossctl.evaluate(y, pred, case["spec"], grad=True)
    assert r.value == pytest.approx(case["value"], rel=1e-12, abs=1e-15)
    rows, _ = per_row(y, pred, case["spec"])
    np.testing.assert_allclose(rows, case["rows"], rtol=1e-12, atol=1e-300 if exact else 1e-15)
    expected = np.array(case["grad"])
    _, g = nl_and_grad(case["spec"], y, pred)
    np.testing.assert_allclose(g, expected, rtol=rtol, atol=atol)
    # the engine's streaming summary of the same gradient
    for key, v in grad_stats(expected).items():
        assert r.grad[key] == pytest.approx(v, rel=1e-9, abs=1e-13), key
    if "sum" in case:
        assert lossctl.evaluate(y, pred, case["spec"], reduction="sum").value == pytest.approx(case["sum"], rel=1e-12)
    if "class_weights" in case:
        np.testing.assert_allclose(r.extra["class_weights"], case["class_weights"], rtol=1e-14)


def test_fixture_covers_every_classification_loss():
    names = {registry.parse_spec(c["spec"]).spec.name for c in CASES}
    assert names == set(MY_LOSSES)


# ------------------------------------------------------------------ scikit-learn


RNG = np.random.default_rng(7)


def test_bce_matches_sklearn_log_loss_with_weights_and_clipping():
    y = (RNG.random(200) < 0.3).astype(float)
    p = RNG.random(200)
    p[:4] = [0.0, 1.0, 1.0, 0.0]  # clipped to [eps, 1 − eps], as scikit-learn ≥ 1.5
    y[:4] = [1.0, 0.0, 1.0, 0.0]
    w = RNG.random(200) * 3
    assert lossctl.evaluate(y, p, "bce").value == pytest.approx(log_loss(y, p), rel=1e-13)
    assert lossctl.evaluate(y, p, "bce", weight=w).value == pytest.approx(log_loss(y, p, sample_weight=w), rel=1e-13)
    assert lossctl.evaluate(y, p, "bce").value == pytest.approx(
        lossctl.evaluate(y, p, "focal:gamma=0,alpha=-1").value, rel=1e-14)


def test_bce_logits_matches_log_loss_of_the_sigmoid():
    y = (RNG.random(100) < 0.5).astype(float)
    z = RNG.normal(scale=3, size=100)
    assert lossctl.evaluate(y, z, "bce:logits=true").value == pytest.approx(log_loss(y, expit(z)), rel=1e-12)


def test_cross_entropy_matches_sklearn_log_loss():
    c = 4
    y = RNG.integers(0, c, 150).astype(float)
    z = RNG.normal(scale=2, size=(150, c))
    p = softmax(z, axis=1)
    p[0] = [0.0, 0.0, 0.0, 1.0]  # a zero on the true class is clipped to eps
    y[0] = 0
    w = RNG.random(150)
    labels = list(range(c))
    assert lossctl.evaluate(y, p, "cross_entropy").value == pytest.approx(log_loss(y, p, labels=labels), rel=1e-13)
    assert lossctl.evaluate(y, p, "cce", weight=w).value == pytest.approx(
        log_loss(y, p, labels=labels, sample_weight=w), rel=1e-13)
    assert lossctl.evaluate(y, z, "cce:logits=true").value == pytest.approx(
        log_loss(y[1:], softmax(z, axis=1)[1:], labels=labels) * 149 / 150 + float(-np.log(softmax(z[0])[0])) / 150,
        rel=1e-12)
    # one-hot targets give the same value as class indices when there are no class weights
    assert lossctl.evaluate(onehot(y, c), p, "cce").value == pytest.approx(lossctl.evaluate(y, p, "cce").value, rel=1e-14)


@pytest.mark.parametrize("labels", [(-1.0, 1.0), (0.0, 1.0)])
def test_hinge_matches_sklearn(labels):
    y = np.where(RNG.random(120) < 0.4, labels[0], labels[1])
    f = RNG.normal(scale=1.5, size=120)
    w = RNG.random(120)
    assert lossctl.evaluate(y, f, "hinge").value == pytest.approx(hinge_loss(y, f), rel=1e-13)
    assert lossctl.evaluate(y, f, "hinge", weight=w).value == pytest.approx(hinge_loss(y, f, sample_weight=w), rel=1e-13)


def test_multi_hinge_cs_matches_sklearn_multiclass_hinge():
    c = 4
    y = RNG.integers(0, c, 90).astype(float)
    f = RNG.normal(size=(90, c))
    assert lossctl.evaluate(y, f, "multi_hinge:variant=cs").value == pytest.approx(
        hinge_loss(y, f, labels=list(range(c))), rel=1e-13)


def test_balanced_weights_match_compute_class_weight():
    c = 5
    y = RNG.choice(c, size=400, p=[0.6, 0.2, 0.1, 0.07, 0.03]).astype(float)
    z = RNG.normal(size=(400, c))
    expected = compute_class_weight("balanced", classes=np.arange(c), y=y.astype(int))
    r = lossctl.evaluate(y, z, "cross_entropy:logits=true,weight=balanced", batch_rows=37)
    np.testing.assert_allclose(r.extra["class_weights"], expected, rtol=1e-14)
    # same as passing the weights by hand
    spec = "cross_entropy:logits=true,weight=[" + ",".join(repr(float(w)) for w in expected) + "]"
    assert r.value == pytest.approx(lossctl.evaluate(y, z, spec).value, rel=1e-13)


# ------------------------------------------------------------------ hand-derived values


def test_bce_hand_values():
    # −log 0.8 = 0.2231435513142097 (Python math.log); ∂/∂p = −1/p = −1.25
    loss, g = per_row([1.0], [0.8], "bce")
    assert loss[0] == pytest.approx(0.22314355131420976, rel=1e-15)
    assert g["pred"][0] == pytest.approx(-1.25, rel=1e-15)
    # logit 0: −log σ(0) = log 2, ∂/∂z = σ(0) − 1 = −½; pos_weight 3 triples both
    loss, g = per_row([1.0, 0.0], [0.0, 0.0], "bce:logits=true,pos_weight=3")
    np.testing.assert_allclose(loss, [3 * LOG2, LOG2], rtol=1e-15)
    np.testing.assert_allclose(g["pred"], [-1.5, 0.5], rtol=1e-15)
    # soft label y = ¼ at p = ¼: the gradient (p − y)/(p(1 − p)) is 0
    assert per_row([0.25], [0.25], "bce")[1]["pred"][0] == pytest.approx(0.0, abs=1e-15)


def test_margin_losses_hand_values():
    y = np.array([1.0, -1.0, 1.0, 1.0])
    f = np.array([0.3, 0.3, 2.0, 1.0])  # row 4 sits on the kink y·f = 1
    loss, g = per_row(y, f, "hinge")
    np.testing.assert_array_equal(loss, [0.7, 1.3, 0.0, 0.0])
    np.testing.assert_array_equal(g["pred"], [-1.0, 1.0, 0.0, 0.0])
    loss, g = per_row(y, f, "squared_hinge")
    np.testing.assert_allclose(loss, [0.49, 1.69, 0.0, 0.0], rtol=1e-15)
    np.testing.assert_allclose(g["pred"], [-1.4, 2.6, 0.0, 0.0], rtol=1e-15)
    # {0, 1} labels: 0 is read as −1
    for spec in ("hinge", "squared_hinge", "exponential"):
        a, b = per_row([1.0, 0.0], [0.3, 0.3], spec), per_row([1.0, -1.0], [0.3, 0.3], spec)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1]["pred"], b[1]["pred"])
    # exp(−y·f): e^{−0} = 1 with slope −1; y = −1, f = log 2: 2, slope +2
    loss, g = per_row([1.0, -1.0], [0.0, LOG2], "exponential")
    np.testing.assert_allclose(loss, [1.0, 2.0], rtol=1e-15)
    np.testing.assert_allclose(g["pred"], [-1.0, 2.0], rtol=1e-15)
    # margin 0 is the perceptron loss
    assert per_row([1.0], [-0.5], "hinge:margin=0")[0][0] == 0.5


def test_focal_hand_values_and_erratum_4():
    # y = 1, p = 0.9, γ = 2, α = 0.25: 0.25 · 0.1² · (−log 0.9) = 0.25 · 0.01 · 0.10536051565782628
    loss, _ = per_row([1.0], [0.9], "focal")
    assert loss[0] == pytest.approx(0.25 * 0.01 * 0.10536051565782628, rel=1e-14)
    # at z = 0 (p = ½), γ = 2, α = ¼, erratum 4:
    # y = 1: α(1−p)^γ[γ p log p + p − 1] = ¼·¼·(−log 2 − ½) = −0.07457169878499659
    # y = 0: (1−α)p^γ[p − γ(1−p) log(1−p)] = ¾·¼·(½ + log 2) = 0.22371509635498975
    _, g = per_row([1.0, 0.0], [0.0, 0.0], "focal:logits=true")
    np.testing.assert_allclose(g["pred"], [-0.0625 * (LOG2 + 0.5), 0.1875 * (0.5 + LOG2)], rtol=1e-15)
    # the seed's forms: the opposite overall sign for y = 1, and p + γ(1−p)log(1−p) for y = 0
    seed = [+0.0625 * (LOG2 + 0.5), 0.1875 * (0.5 - LOG2)]
    assert not np.allclose(g["pred"], seed)
    # γ = 0: the BCE-with-logits gradients α(p − 1) and (1 − α)p
    _, g = per_row([1.0, 0.0], [0.0, 0.0], "focal:logits=true,gamma=0")
    np.testing.assert_allclose(g["pred"], [0.25 * -0.5, 0.75 * 0.5], rtol=1e-15)


def test_cross_entropy_hand_values():
    # equal logits over 3 classes: ℓ = log 3, ∂ℓ/∂z = ⅓ − y
    loss, g = per_row([0.0], np.zeros((1, 3)), "cce:logits=true")
    assert loss[0] == pytest.approx(math.log(3), rel=1e-15)
    np.testing.assert_allclose(g["pred"], [[1 / 3 - 1, 1 / 3, 1 / 3]], rtol=1e-15)
    # label smoothing 0.3 on 3 classes: y ← [0.8, 0.1, 0.1] (torch); still Σq = 1 so ℓ = log 3
    loss, g = per_row([0.0], np.zeros((1, 3)), "cce:logits=true,label_smoothing=0.3")
    assert loss[0] == pytest.approx(math.log(3), rel=1e-15)
    np.testing.assert_allclose(g["pred"], [[1 / 3 - 0.8, 1 / 3 - 0.1, 1 / 3 - 0.1]], rtol=1e-14)
    # probabilities: ∂ℓ/∂p_y = −1/p_y
    loss, g = per_row([1.0], [[0.2, 0.5, 0.3]], "cce")
    assert loss[0] == pytest.approx(LOG2, rel=1e-15)
    np.testing.assert_allclose(g["pred"], [[0.0, -2.0, 0.0]])


def test_class_weight_trap_index_vs_onehot():
    # two rows, uniform predictions (ℓ = log 2 each), class weights [1, 3]:
    # class-index targets: (1·log 2 + 3·log 2)/(1 + 3) = log 2; one-hot targets: (1 + 3)·log 2 / 2 = 2 log 2
    z = np.zeros((2, 2))
    spec = "cross_entropy:logits=true,weight=[1,3]"
    assert lossctl.evaluate([0.0, 1.0], z, spec).value == pytest.approx(LOG2, rel=1e-15)
    assert lossctl.evaluate(np.eye(2), z, spec).value == pytest.approx(2 * LOG2, rel=1e-15)
    assert "trap" in registry.get("cross_entropy").properties.conventions


def test_multi_hinge_hand_values_and_erratum_3():
    # f = [1, 0.5, 2], y = 0, m = 1: ww = max(0, 1 − 1 + 0.5) + max(0, 1 − 1 + 2) = 2.5, cs = max(0.5, 2) = 2
    f = np.array([[1.0, 0.5, 2.0]])
    loss, g = per_row([0.0], f, "multi_hinge")
    assert loss[0] == 2.5
    np.testing.assert_array_equal(g["pred"], [[-2.0, 1.0, 1.0]])
    loss, g = per_row([0.0], f, "multi_hinge:variant=cs")
    assert loss[0] == 2.0
    np.testing.assert_array_equal(g["pred"], [[-1.0, 0.0, 1.0]])
    # the seed's formula Σ_{j≠y} max(0, 1 − f_y + f_j) is the default (Weston–Watkins)
    assert registry.parse_spec("multi_hinge").params["variant"] == "ww"
    assert "Weston–Watkins" in registry.get("multi_hinge").properties.conventions
    # kinks: a term exactly at its hinge gives gradient 0; tied runner-ups share the +1 in cs
    loss, g = per_row([0.0], [[1.0, 0.0, 0.0]], "multi_hinge")
    assert loss[0] == 0.0 and not g["pred"].any()
    _, g = per_row([0.0], [[0.0, 0.5, 0.5]], "multi_hinge:variant=cs")
    np.testing.assert_array_equal(g["pred"], [[-1.0, 0.5, 0.5]])


# ------------------------------------------------------------------ finite differences


def _binary_inputs(n=6, soft=False):
    y = (np.arange(n) % 2).astype(float)
    if soft:
        y[::3] = [0.3, 0.8][: len(y[::3])]
    return y, RNG.uniform(0.08, 0.92, n), RNG.normal(scale=2.0, size=n)


def _margin_inputs(n=6, m=1.0):
    s = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    f = RNG.normal(scale=1.5, size=n)
    f = np.where(np.abs(m - s * f) < 0.05, f + 0.2, f)  # away from the kink
    return s, f


def _mc_inputs(n=6, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n).astype(float)
    y[:c] = np.arange(c)
    z = rng.normal(scale=1.5, size=(n, c))
    return y, z, softmax(z, axis=1), rng.dirichlet(np.ones(c), size=n)


W6 = np.array([0.5, 2.0, 1.0, 0.2, 1.5, 1.0])
BIN_FD = [
    ("bce", "p", True, None), ("bce:pos_weight=2", "p", True, W6), ("bce:logits=true,pos_weight=0.7", "z", True, W6),
    ("focal", "p", False, None), ("focal:gamma=0.5,alpha=-1", "p", False, W6),
    ("focal:logits=true", "z", False, None), ("focal:logits=true,gamma=0.5,alpha=0.7", "z", False, W6),
]


@pytest.mark.parametrize("spec,kind,soft,w", BIN_FD, ids=[c[0] + ("+w" if c[3] is not None else "") for c in BIN_FD])
def test_binary_gradient_finite_differences(spec, kind, soft, w):
    y, p, z = _binary_inputs(soft=soft)
    pred = p if kind == "p" else z
    _, g = nl_and_grad(spec, y, pred, w)
    np.testing.assert_allclose(g, fd_grad(spec, y, pred, w), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("spec", ["hinge", "hinge:margin=0.5", "squared_hinge", "squared_hinge:margin=2", "exponential"])
def test_margin_gradient_finite_differences(spec):
    m = registry.parse_spec(spec).params.get("margin", 1.0)
    s, f = _margin_inputs(m=m)
    for w in (None, W6):
        _, g = nl_and_grad(spec, s, f, w)
        np.testing.assert_allclose(g, fd_grad(spec, s, f, w), rtol=1e-6, atol=1e-8)


MC_FD = [
    "cross_entropy", "cross_entropy:logits=true", "cross_entropy:logits=true,weight=[0.5,1,2,1.5]",
    "cross_entropy:weight=[0.5,1,2,1.5],label_smoothing=0.1", "cross_entropy:logits=true,weight=balanced,label_smoothing=0.2",
    "cross_entropy:weight=balanced",
    "focal:logits=true", "focal:logits=true,gamma=0.5,alpha=[0.1,0.4,0.3,0.2]", "focal:gamma=0.5,alpha=-1",
    "focal:gamma=2,alpha=[0.1,0.4,0.3,0.2]",
    "multi_hinge", "multi_hinge:variant=cs,margin=0.5",
]


@pytest.mark.parametrize("spec", MC_FD)
@pytest.mark.parametrize("target", ["index", "vector"])
def test_multiclass_gradient_finite_differences(spec, target):
    y, z, p, soft = _mc_inputs(seed=3)
    logits = "logits=true" in spec or spec.startswith("multi_hinge")
    pred = z if logits else p
    if target == "vector":
        y = onehot(y, 4) if spec.startswith("multi_hinge") else soft
    if spec.startswith("multi_hinge"):
        # keep every hinge term and the runner-up away from kinks and ties
        pred = np.round(pred, 1) + 0.013 * np.arange(4)
    for w in (None, W6):
        _, g = nl_and_grad(spec, y, pred, w)
        np.testing.assert_allclose(g, fd_grad(spec, y, pred, w), rtol=1e-6, atol=1e-8)


def test_focal_gradient_finite_differences_near_saturation():
    # γ < 1 and large |z|: the closed forms stay accurate where (1 − p_t)^{γ−1} would blow up
    # one row at a time, so the difference quotient is not swamped by another row's round-off
    spec = "focal:logits=true,gamma=0.3,alpha=0.25"
    for y, z in ((1.0, 25.0), (1.0, -25.0), (0.0, 25.0), (0.0, -25.0)):
        _, g = nl_and_grad(spec, [y], [z])
        np.testing.assert_allclose(g, fd_grad(spec, [y], [z], h=1e-4), rtol=1e-5, atol=1e-14)
    spec = "focal:logits=true,gamma=0.3,alpha=-1"
    for zc in ([[12.0, -3.0, 0.0]], [[-12.0, 12.0, 1.0]]):
        _, g = nl_and_grad(spec, [0.0], zc)
        np.testing.assert_allclose(g, fd_grad(spec, [0.0], zc, h=1e-4), rtol=1e-5, atol=1e-14)


# ------------------------------------------------------------------ saturated logits


def test_logits_pm1000_are_finite_and_exact():
    y = np.array([1.0, 1.0, 0.0, 0.0])
    z = np.array([1000.0, -1000.0, 1000.0, -1000.0])
    # softplus(∓1000): 0 or 1000 exactly; σ(z) − y: 0, −1, 1, 0
    loss, g = per_row(y, z, "bce:logits=true")
    np.testing.assert_array_equal(loss, [0.0, 1000.0, 1000.0, 0.0])
    np.testing.assert_array_equal(g["pred"], [0.0, -1.0, 1.0, 0.0])
    # focal, γ = ½, α = ¼: y = 1, z = −1000 costs ¼·1000 with slope −¼; y = 0, z = 1000 costs ¾·1000, slope ¾
    loss, g = per_row(y, z, "focal:logits=true,gamma=0.5")
    np.testing.assert_array_equal(loss, [0.0, 250.0, 750.0, 0.0])
    np.testing.assert_array_equal(g["pred"], [0.0, -0.25, 0.75, 0.0])
    # softmax: [1000, −1000, 0] with y = 1 costs 2000; softmax − y = [1, −1, 0]
    zc = np.array([[1000.0, -1000.0, 0.0], [1000.0, -1000.0, 0.0]])
    loss, g = per_row([1.0, 0.0], zc, "cce:logits=true")
    np.testing.assert_array_equal(loss, [2000.0, 0.0])
    np.testing.assert_array_equal(g["pred"], [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    # a saturated true class keeps its tiny gradient −(1 − p_y) instead of rounding p_y − 1 to 0
    _, g = per_row([0.0], [[40.0, 0.0, -40.0]], "cce:logits=true")
    one_minus = (math.exp(-40) + math.exp(-80)) / (1 + math.exp(-40) + math.exp(-80))
    assert g["pred"][0, 0] == pytest.approx(-one_minus, rel=1e-14)
    assert g["pred"][0].sum() == pytest.approx(0.0, abs=1e-30)


finite_z = st.floats(-1000, 1000, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(
    z=arrays(np.float64, st.integers(1, 12), elements=st.one_of(st.sampled_from([-1000.0, 1000.0, -40.0, 40.0]), finite_z)),
    gamma=st.floats(0.0, 0.999),
    alpha=st.one_of(st.just(-1.0), st.floats(0.0, 1.0)),
)
def test_focal_gamma_below_one_stays_finite(z, gamma, alpha):
    y = (np.arange(z.size) % 2).astype(float)
    loss, g = per_row(y, z, f"focal:logits=true,gamma={gamma!r},alpha={alpha!r}")
    assert np.isfinite(loss).all() and np.isfinite(g["pred"]).all()
    assert (loss >= 0).all()
    zc = np.stack([z, -z, np.zeros_like(z)], axis=1)
    loss, g = per_row(np.zeros(z.size), zc, f"focal:logits=true,gamma={gamma!r},alpha=-1")
    assert np.isfinite(loss).all() and np.isfinite(g["pred"]).all()


# ------------------------------------------------------------------ identities (hypothesis)


labels01 = st.integers(1, 15).flatmap(lambda n: arrays(np.float64, n, elements=st.sampled_from([0.0, 1.0])))


@settings(max_examples=50, deadline=None)
@given(y=labels01, data=st.data())
def test_focal_gamma0_alpha_none_equals_bce(y, data):
    n = y.size
    p = data.draw(arrays(np.float64, n, elements=st.floats(0.0, 1.0)))
    z = data.draw(arrays(np.float64, n, elements=finite_z))
    for pred, opt in ((p, ""), (z, ",logits=true")):
        lb, gb = per_row(y, pred, "bce" + (":" + opt[1:] if opt else ""))
        lf, gf = per_row(y, pred, "focal:gamma=0,alpha=-1" + opt)
        np.testing.assert_allclose(lf, lb, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(gf["pred"], gb["pred"], rtol=1e-12, atol=1e-300)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 10), c=st.integers(2, 5), seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.1, 3.0, 300.0]))
def test_multiclass_focal_gamma0_equals_cross_entropy(n, c, seed, scale):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n).astype(float)
    z = rng.normal(scale=scale, size=(n, c))
    for pred, opt in ((z, "logits=true"), (softmax(z, axis=1), "")):
        spec_ce = "cross_entropy" + (":" + opt if opt else "")
        spec_f = "focal:gamma=0,alpha=-1" + ("," + opt if opt else "")
        lc, gc = per_row(y, pred, spec_ce)
        lf, gf = per_row(y, pred, spec_f)
        np.testing.assert_allclose(lf, lc, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(gf["pred"], gc["pred"], rtol=1e-10, atol=1e-14)


@settings(max_examples=50, deadline=None)
@given(y=labels01, data=st.data(), gamma=st.floats(0, 4), alpha=st.floats(0, 1))
def test_binary_focal_is_two_class_softmax_focal(y, data, gamma, alpha):
    # σ(z) = softmax([0, z])₁, so binary focal with α equals softmax focal with α = [1 − α, α]
    z = data.draw(arrays(np.float64, y.size, elements=st.floats(-60, 60)))
    lb, gb = per_row(y, z, f"focal:logits=true,gamma={gamma!r},alpha={alpha!r}")
    zc = np.stack([np.zeros_like(z), z], axis=1)
    lm, gm = per_row(y, zc, f"focal:logits=true,gamma={gamma!r},alpha=[{1 - alpha!r},{alpha!r}]")
    np.testing.assert_allclose(lm, lb, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(gm["pred"][:, 1], gb["pred"], rtol=1e-9, atol=1e-300)


NONNEG = ["bce", "bce:logits=true,pos_weight=2", "hinge", "squared_hinge", "exponential", "focal",
          "focal:logits=true,gamma=0.5", "cross_entropy", "cross_entropy:logits=true,label_smoothing=0.1",
          "cross_entropy:logits=true,weight=balanced", "multi_hinge", "multi_hinge:variant=cs",
          "focal:logits=true,alpha=[0.2,0.3,0.5]"]


@settings(max_examples=50, deadline=None)
@given(spec=st.sampled_from(NONNEG), n=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_losses_are_non_negative(spec, n, seed):
    rng = np.random.default_rng(seed)
    name = registry.parse_spec(spec).spec.name
    if name in ("cross_entropy", "multi_hinge") or "[" in spec:
        z = rng.normal(scale=5, size=(n, 3))
        pred = z if ("logits=true" in spec or name == "multi_hinge") else softmax(z, axis=1)
        y = rng.integers(0, 3, n).astype(float)
    else:
        y = rng.integers(0, 2, n).astype(float)
        pred = rng.random(n) if "logits" not in spec else rng.normal(scale=30, size=n)
        if name in ("hinge", "squared_hinge", "exponential"):
            pred = rng.normal(scale=3, size=n)
    loss, _ = per_row(y, pred, spec)
    assert (loss >= 0).all() and np.isfinite(loss).all()
    assert lossctl.evaluate(y, pred, spec).value >= 0


# ------------------------------------------------------------------ batch-size invariance


def _invariance_cases():
    rng = np.random.default_rng(11)
    n, c = 53, 4
    yb = (rng.random(n) < 0.3).astype(float)
    ysoft = yb.copy()
    ysoft[::4] = 0.4
    p, z = rng.random(n), rng.normal(scale=3, size=n)
    s = np.where(yb == 1, 1.0, -1.0)
    yc = rng.choice(c, size=n, p=[0.55, 0.25, 0.15, 0.05]).astype(float)
    zc = rng.normal(scale=2, size=(n, c))
    pc = softmax(zc, axis=1)
    w = rng.random(n) * 2
    return [
        ("bce", ysoft, p, w), ("bce:logits=true,pos_weight=3", ysoft, z, None), ("hinge", s, z, w),
        ("squared_hinge", yb, z, None), ("exponential", s, z, w), ("focal", yb, p, w),
        ("focal:logits=true,gamma=0.5", yb, z, None),
        ("cross_entropy:weight=[1,2,3,4],label_smoothing=0.1", yc, pc, w),
        ("cross_entropy:logits=true,weight=balanced", yc, zc, w),
        ("cross_entropy:logits=true,weight=balanced,label_smoothing=0.2", onehot(yc, c), zc, None),
        ("multi_hinge", yc, zc, w), ("multi_hinge:variant=cs", yc, zc, None),
        ("focal:logits=true,alpha=[0.1,0.2,0.3,0.4]", yc, zc, w),
    ]


@pytest.mark.parametrize("spec,y,pred,w", _invariance_cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_batch_size_invariance(spec, y, pred, w):
    results = [lossctl.evaluate(y, pred, spec, weight=w, grad=True, batch_rows=br) for br in (1, 7, None)]
    ref = results[-1]
    for r in results[:-1]:
        assert r.value == pytest.approx(ref.value, rel=1e-12)
        for k in ("mean", "std", "min", "max", "abs_mean", "l2", "zero_frac", "top1_share"):
            assert r.grad[k] == pytest.approx(ref.grad[k], rel=1e-10, abs=1e-15), k
        assert r.extra.keys() == ref.extra.keys()
        for k, v in ref.extra.items():  # approx takes no nested containers (pytest >= 9)
            assert np.asarray(r.extra[k], dtype=float) == pytest.approx(np.asarray(v, dtype=float)), k
    # and it is the loss evaluated in one piece
    nl, g = nl_and_grad(spec, y, pred, w)
    assert ref.value == pytest.approx(nl / len(y), rel=1e-12)


def test_balanced_weights_need_the_prepass_beyond_one_batch():
    y, z, _, _ = _mc_inputs(n=8, seed=5)
    # lossctl.api.per_row runs no pre-pass: one batch is the whole data, so it is exact
    loss, _ = per_row(y, z, "cross_entropy:logits=true,weight=balanced")
    w = compute_class_weight("balanced", classes=np.arange(4), y=y.astype(int))
    np.testing.assert_allclose(loss, -w[y.astype(int)] * np.log(softmax(z, axis=1)[np.arange(8), y.astype(int)]), rtol=1e-13)
    # a second batch without a pre-pass is refused rather than weighted by batch counts
    call = registry.parse_spec("cross_entropy:logits=true,weight=balanced")
    k = call.spec.factory(call.params, Context(task="multiclass"))
    b = Batch({"target": y, "pred": z}, 8)
    k.stats(b, False)
    with pytest.raises(UsageError, match="pre-pass"):
        k.stats(b, False)


def test_absent_class_gets_balanced_weight_zero():
    y = np.array([0.0, 0.0, 1.0, 0.0])
    z = np.zeros((4, 3))
    r = lossctl.evaluate(y, z, "cross_entropy:logits=true,weight=balanced")
    np.testing.assert_allclose(r.extra["class_weights"], [4 / 9, 4 / 3, 0.0])
    assert r.value == pytest.approx(math.log(3))


# ------------------------------------------------------------------ input errors

MC_P = softmax(np.arange(20, dtype=float).reshape(4, 5) / 7, axis=1)
BAD = [
    ("bce", [0, 1, 2, 0], [0.1, 0.2, 0.3, 0.4], "labels in [0, 1]", "got 2.0"),
    ("bce", [0, 1, 1, 0], [0.1, 0.2, 1.5, 0.4], "probabilities", "got 1.5"),
    ("bce:logits=true", [0, 1, -1, 0], [0.1, 0.2, 3.0, 0.4], "labels in [0, 1]", "got -1.0"),
    ("hinge", [1, -1, 2, 1], [0.1, 0.2, 0.3, 0.4], "labels −1/+1", "got 2.0"),
    ("hinge", [1, -1, 0, 1], [0.1, 0.2, 0.3, 0.4], "mix 0 and −1", "got 0.0"),
    ("squared_hinge", [1, 0, -1, 1], [0.1, 0.2, 0.3, 0.4], "mix 0 and −1", "got -1.0"),
    ("exponential", [1, 1, 0.5, 1], [0.1, 0.2, 0.3, 0.4], "labels −1/+1", "got 0.5"),
    ("focal", [0, 1, 0.5, 1], [0.1, 0.2, 0.3, 0.4], "labels 0 or 1", "got 0.5"),
    ("focal", [0, 1, 1, 1], [0.1, 0.2, -0.1, 0.4], "probabilities", "got -0.1"),
    ("cross_entropy", [0, 1, 5, 2], MC_P, "class index ≥ number of prediction columns (5)", "got 5.0"),
    ("cross_entropy", [0, 1, 1.5, 2], MC_P, "whole number in 0..4", "got 1.5"),
    ("cross_entropy:logits=true", [0, 1, -1, 2], MC_P, "whole number in 0..4", "got -1.0"),
    ("cross_entropy", [0, 1, 2, 3], MC_P * np.array([[1], [1], [0.9], [1]]), "does not sum to 1", "got 0.9"),
    ("cross_entropy", [0, 1, 2, 3], MC_P + np.array([[0] * 5, [0] * 5, [-0.5, 0.5, 0, 0, 0], [0] * 5]), "[0, 1]", "got -"),
    ("cross_entropy", np.eye(5)[[0, 1, 2, 3]] * np.array([[1], [1], [0.8], [1]]), MC_P, "does not sum to 1", "got 0.8"),
    ("cross_entropy:logits=true", np.eye(5)[[0, 1, 2, 3]] * np.array([[1], [1], [1.5], [1]]), MC_P, "[0, 1]", "got 1.5"),
    ("focal", [0, 1, 2, 3], MC_P * np.array([[1], [1], [1.1], [1]]), "does not sum to 1", "got 1.1"),
    ("multi_hinge", np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0.5, 0.5, 0, 0], [1, 0, 0, 0, 0]]), MC_P,
     "not soft labels", "got 0.5"),
    ("multi_hinge", [0, 1, 7, 2], MC_P, "class index ≥ number of prediction columns", "got 7.0"),
]


@pytest.mark.parametrize("spec,y,pred,phrase,got", BAD, ids=[f"{b[0]}-{b[3][:20]}" for b in BAD])
@pytest.mark.parametrize("batch_rows", [None, 2])
def test_bad_inputs_name_the_row(spec, y, pred, phrase, got, batch_rows):
    with pytest.raises(InputError) as e:
        lossctl.evaluate(np.asarray(y, float), np.asarray(pred, float), spec, batch_rows=batch_rows)
    msg = str(e.value)
    assert "row 3" in msg and phrase in msg and got in msg, msg


def test_mixed_margin_labels_are_caught_across_batches():
    with pytest.raises(InputError, match="row 3.*mix 0 and −1"):
        lossctl.evaluate([1.0, -1.0, 0.0, 1.0], [0.1, 0.2, 0.3, 0.4], "hinge", batch_rows=2)


@pytest.mark.parametrize("spec,y,pred,phrase", [
    ("cross_entropy", [0.0, 1.0], [[1.0], [1.0]], "C ≥ 2"),
    ("cross_entropy", np.eye(3)[[0, 1]], np.full((2, 4), 0.25), "target has 3 columns"),
    ("bce", [0.0, 1.0], np.full((2, 3), 0.3), "one score column"),
    ("multi_hinge", [0.0, 1.0], [0.3, 0.2], "C ≥ 2"),
])
def test_shape_errors(spec, y, pred, phrase):
    with pytest.raises(InputError, match=phrase):
        lossctl.evaluate(np.asarray(y, float), np.asarray(pred, float), spec)


@pytest.mark.parametrize("spec", [
    "focal:gamma=-1", "focal:alpha=1.5", "focal:alpha=-0.5", "focal:alpha=[0.2,1.5,0.3]",
    "cross_entropy:label_smoothing=1.5", "cross_entropy:weight=[1,-2]", "cross_entropy:weight=heavy",
    "multi_hinge:margin=-0.5", "multi_hinge:variant=xx", "bce:pos_weight=0", "bce:eps=0.6", "hinge:margin=-1",
])
def test_bad_parameters_are_usage_errors(spec):
    with pytest.raises(UsageError):
        call = registry.parse_spec(spec)
        call.spec.factory(call.params, Context(task=call.spec.task))


@pytest.mark.parametrize("spec,y,pred", [
    ("focal:alpha=[0.2,0.3]", [0.0, 1.0, 2.0], MC_P[:3, :3] / MC_P[:3, :3].sum(1, keepdims=True)),
    ("focal:alpha=[0.2,0.8]", [0.0, 1.0], [0.3, 0.6]),
    ("cross_entropy:weight=[1,2]", [0.0, 1.0], MC_P[:2]),
])
def test_class_vector_length_must_match(spec, y, pred):
    with pytest.raises(UsageError, match="alpha|weight"):
        lossctl.evaluate(np.asarray(y, float), np.asarray(pred, float), spec)


# ------------------------------------------------------------------ registry and properties


@pytest.mark.parametrize("name", MY_LOSSES)
def test_properties_are_complete(name):
    spec = registry.get(name)
    p = spec.properties
    for field in ("formula", "gradient", "differentiable", "estimates", "output", "use_when", "avoid_when",
                  "conventions", "outlier_note"):
        assert getattr(p, field).strip(), field
    assert p.references and spec.summary and spec.example.startswith("lossctl eval - ")
    assert all(q.help for q in spec.params) and all(r.help for r in spec.roles)


def test_registry_tasks_defaults_and_aliases():
    assert registry.get("cce").name == "cross_entropy"
    assert set(registry.get("focal").all_tasks) == {"binary", "multiclass"}
    assert {"bce", "hinge", "exponential", "focal"} <= {s.name for s in registry.default_losses("binary")}
    assert "cross_entropy" in {s.name for s in registry.default_losses("multiclass")}
    assert registry.get("bce").param("eps").default == np.finfo(np.float64).eps
    assert "½" in registry.get("cross_entropy").properties.conventions  # Keras smooths binary labels toward ½
    assert "γ·p·log p + p − 1" in registry.get("focal").properties.conventions  # the gradient, derived


# ------------------------------------------------------------------ CLI on the sample files


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_cli_binary_sample(cli, ext):
    import pandas as pd

    path = os.path.join(SAMPLES, f"binary.{ext}")
    r = cli("eval", path, "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "binary" and doc["task_inferred"] is True
    vals = {x["loss"]: x["value"] for x in doc["results"]}
    assert list(vals) == ["bce", "focal"]  # probabilities: hinge and exponential only by name (CLI.md)
    df = pd.read_csv(os.path.join(SAMPLES, "binary.csv"))
    assert 0.05 < df["y"].mean() < 0.11 and 2000 <= len(df) <= 5000
    assert vals["bce"] == pytest.approx(log_loss(df["y"], df["prob"]), rel=1e-12)
    r = cli("eval", path, "-l", "hinge", "-f", "json")
    assert r.json()["results"][0]["value"] == pytest.approx(hinge_loss(df["y"], df["prob"]), rel=1e-12)


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_cli_multiclass_sample_reads_logits_by_name(cli, ext):
    import pandas as pd

    path = os.path.join(SAMPLES, f"multiclass.{ext}")
    r = cli("eval", path, "-f", "json", "--grad")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "multiclass"
    (res,) = [x for x in doc["results"] if x["loss"] == "cross_entropy"]
    assert res["params"]["logits"] is True
    df = pd.read_csv(os.path.join(SAMPLES, "multiclass.csv"))
    p = softmax(df[[f"logit_{c}" for c in range(5)]].to_numpy(), axis=1)
    assert res["value"] == pytest.approx(log_loss(df["label"], p), rel=1e-12)
    assert abs(res["grad"]["mean"]) < 1e-15  # softmax − y sums to 0 in each row


def test_cli_focal_and_balanced_on_multiclass_sample(cli):
    path = os.path.join(SAMPLES, "multiclass.csv")
    r = cli("eval", path, "-l", "focal", "-l", "cross_entropy:weight=balanced", "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "multiclass"
    r7 = cli("eval", path, "-l", "cross_entropy:weight=balanced", "-f", "json", "--batch-rows", "7")
    (a,) = [x for x in doc["results"] if x["loss"] == "cross_entropy"]
    (b,) = r7.json()["results"]
    assert a["value"] == pytest.approx(b["value"], rel=1e-12)
    assert a["class_weights"] == pytest.approx(b["class_weights"], rel=1e-14)


def test_cli_bad_label_names_file_column_and_row(cli, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("y,prob\n0,0.1\n1,0.8\n0,0.3\n3,0.2\n")
    r = cli("eval", str(path), "-l", "bce", "-f", "json")
    assert r.code == 2
    assert "bad.csv" in r.err and "column 'y'" in r.err and "row 4" in r.err and "got 3" in r.err


@pytest.mark.parametrize("name", MY_LOSSES)
def test_registry_examples_run(run_example, name):
    r = run_example(registry.get(name).example, "-f", "json")
    assert r.code == 0, r.err
    assert all(math.isfinite(x["value"]) for x in r.json()["results"])


def test_plain_cross_entropy_fast_path_matches_the_general_form():
    from lossctl.losses.classification import softmax_cross_entropy, softmax_nll

    rng = np.random.default_rng(11)
    z = rng.normal(0, 3, (500, 7))
    z[:20] *= 300  # saturated rows: −log p_y down to e^{−1000}-ish and up to 1000s
    y = rng.integers(0, 7, 500)
    y[:10] = np.argmax(z[:10], axis=1)
    q = np.zeros_like(z)
    q[np.arange(500), y] = 1.0
    np.testing.assert_allclose(softmax_nll(y, z), softmax_cross_entropy(q, z), rtol=1e-13, atol=0)
    from lossctl.losses.classification import softmax_cross_entropy_grad, softmax_nll_and_grad

    nll, g = softmax_nll_and_grad(y, z)
    np.testing.assert_allclose(nll, softmax_cross_entropy(q, z), rtol=1e-13, atol=0)
    np.testing.assert_allclose(g, softmax_cross_entropy_grad(q, z), rtol=1e-12, atol=1e-300)
    # and the engine takes it for value-only runs: same number as with gradients
    a = lossctl.api.evaluate(y, z, "cross_entropy:logits=true")
    b = lossctl.api.evaluate(y, z, "cross_entropy:logits=true", grad=True)
    assert a.value == pytest.approx(b.value, rel=1e-14)


def test_fused_bce_logits_value_and_gradient_match_the_separate_functions():
    from lossctl.losses.classification import bce_logits, bce_logits_and_grad, bce_logits_grad

    rng = np.random.default_rng(12)
    z = np.concatenate([rng.normal(0, 5, 400), [-1000.0, -40.0, 0.0, 40.0, 1000.0]])
    y = np.concatenate([rng.random(400), [0.0, 1.0, 0.5, 0.0, 1.0]])
    for w in (1.0, 3.5):
        loss, grad = bce_logits_and_grad(y, z, pos_weight=w)
        np.testing.assert_array_equal(loss, bce_logits(y, z, pos_weight=w))
        np.testing.assert_array_equal(grad, bce_logits_grad(y, z, pos_weight=w))


def test_described_ranges_say_what_coerce_accepts():
    from lossctl import registry

    weight = next(p for p in registry.get("cross_entropy").params if p.name == "weight")
    assert weight.describe_range() == "list of numbers or balanced"  # one number is refused
    alpha = next(p for p in registry.get("focal").params if p.name == "alpha")
    assert "a number in [0, 1]" in alpha.describe_range() and "-1" in alpha.describe_range()


def test_signed_labels_meeting_a_01_loss_point_to_the_margin_losses(tmp_path):
    from lossctl import cli

    f = tmp_path / "pm.csv"
    f.write_text("label,prob\n1,0.9\n-1,0.2\n")
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "lossctl", "eval", str(f), "-l", "bce"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    assert "row 2" in p.stderr and "-l hinge" in p.stderr and "(got -1.0)" in p.stderr
    assert cli.main(["eval", str(f), "-l", "bce", "-t", "label", "-p", "prob", "-f", "json"]) == 2


def test_default_binary_set_with_signed_labels_keeps_the_margin_losses(tmp_path):
    import json
    import subprocess
    import sys

    from sklearn.metrics import hinge_loss

    f = tmp_path / "svm.csv"
    y = np.array([1, -1, 1, -1, 1])
    s = np.array([0.9, -0.2, 2.0, 0.4, -1.0])
    f.write_text("label,score\n" + "".join(f"{a},{b}\n" for a, b in zip(y, s)))
    p = subprocess.run([sys.executable, "-m", "lossctl", "eval", str(f), "-f", "json"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [r["loss"] for r in out["results"]] == ["hinge", "exponential"]
    assert out["results"][0]["value"] == pytest.approx(hinge_loss(y, s))
    assert out["results"][1]["value"] == pytest.approx(np.mean(np.exp(-y * s)))
    assert "bce, focal need 0/1 labels" in p.stderr
    # 0/1 labels with probabilities: the probability losses
    g = tmp_path / "01.csv"
    g.write_text("label,prob\n1,0.9\n0,0.2\n")
    p = subprocess.run([sys.executable, "-m", "lossctl", "eval", str(g), "-f", "json"], capture_output=True, text=True)
    assert [r["loss"] for r in json.loads(p.stdout)["results"]] == ["bce", "focal"]  # probabilities (CLI.md)
