"""The fused block paths (`Kernel.sums` / `sums_and_grads`) that `lossctl eval` takes when
no weights or bootstrap need per-row losses: they must give the per-row path's numbers,
and those of the independent oracles, to round-off.

The per-row path is forced with unit weights (`weight=np.ones`), which gives the same
mean by definition.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import lossctl
from lossctl import registry
from lossctl.api import per_row
from lossctl.engine import Batch, Context
from lossctl.losses._numerics import DOT_ROW, dot


# ------------------------------------------------------------------ dot


@pytest.mark.parametrize("n", [0, 1, 7, DOT_ROW - 1, DOT_ROW, DOT_ROW + 1, 3 * DOT_ROW + 5])
def test_dot_covers_every_element(n):
    # integers: every partial sum is exact, so any element dropped or counted twice shows
    rng = np.random.default_rng(n)
    a = rng.integers(-1000, 1000, n).astype(float)
    b = rng.integers(-1000, 1000, n).astype(float)
    assert dot(a, b) == float(np.sum(a.astype(np.int64) * b.astype(np.int64)))


def test_dot_is_as_accurate_as_a_pairwise_sum():
    # against the exact sum of exact products (fractions); log-normal terms spread over
    # 10 decades, where one BLAS dot over the whole block errs by several ulp
    rng = np.random.default_rng(3)
    n = (1 << 15) + 777
    a, b = rng.lognormal(0, 3, n), rng.lognormal(0, 3, n)
    exact = float(sum(Fraction(x) * Fraction(y) for x, y in zip(a.tolist(), b.tolist())))
    assert abs(dot(a, b) - exact) <= 2 * math.ulp(exact)


def test_dot_of_strided_views():
    rng = np.random.default_rng(4)
    m = rng.normal(size=(3 * DOT_ROW + 3, 2))
    assert dot(m[:, 0], m[:, 1]) == pytest.approx(math.fsum((m[:, 0] * m[:, 1]).tolist()), rel=1e-14)


# ------------------------------------------------------------------ regression


def _fused_and_rows(y, yhat, spec, **kw):
    fused = lossctl.evaluate(y, yhat, spec, grad=True, **kw)
    rows = lossctl.evaluate(y, yhat, spec, grad=True, weight=np.ones(len(y)), **kw)
    return fused, rows


@pytest.mark.parametrize("spec", ["mse", "mae", "huber:delta=0.7", "smooth_l1:beta=0.3", "quantile:tau=0.5",
                                  "quantile:tau=0.03", "quantile:tau=0.999", "log_cosh"])
def test_regression_fused_path_equals_per_row_path(spec):
    rng = np.random.default_rng(11)
    n = 300_000  # more than one fused block per batch at the default batch size
    y = rng.normal(3, 2, n)
    yhat = y + rng.standard_t(3, n)
    yhat[::97] = y[::97]  # kinks: r = 0
    fused, rows = _fused_and_rows(y, yhat, spec)
    assert fused.value == pytest.approx(rows.value, rel=1e-13)
    for k in ("mean", "std", "min", "max", "abs_mean", "l2", "zero_frac", "top1_share"):
        assert fused.grad[k] == pytest.approx(rows.grad[k], rel=1e-12, abs=1e-300), k


def test_smooth_l1_fused_matches_torch_formula():
    # torch smooth_l1_loss: 0.5 r²/β for |r| < β, |r| − 0.5β otherwise (hand-evaluated here)
    y = np.zeros(6)
    r = np.array([-2.0, -0.2, 0.0, 0.1, 0.3, 5.0])
    beta = 0.3
    want = np.where(np.abs(r) < beta, 0.5 * r * r / beta, np.abs(r) - 0.5 * beta).mean()
    got = lossctl.evaluate(y, r, f"smooth_l1:beta={beta}", grad=True)
    assert got.value == pytest.approx(want, rel=1e-15)
    g = np.where(np.abs(r) < beta, r / beta, np.sign(r))
    assert got.grad["mean"] == pytest.approx(g.mean(), rel=1e-15)
    assert got.grad["max"] == 1.0 and got.grad["min"] == -1.0


def test_log_cosh_is_exact_for_tiny_and_huge_residuals():
    # log cosh r = r²/2 − r⁴/12 + O(r⁶) for small r (series, hand-derived), and |r| − log 2 to the
    # last digit once e^{−2|r|} < 2⁻⁵³ (|r| > 19); past |r| ≈ 710 sinh² overflows: the fallback
    r = np.array([1e-8, -3e-5, 1e-3, 800.0, -1e4, 1e300])
    want = np.array([0.5e-16, 0.5 * 9e-10 - (3e-5) ** 4 / 12, 0.5e-6 - 1e-12 / 12 + 1e-18 / 45,
                     800.0 - math.log(2), 1e4 - math.log(2), 1e300])
    one_by_one = np.array([lossctl.evaluate(np.zeros(1), r[i:i + 1], "log_cosh").value for i in range(r.size)])
    np.testing.assert_allclose(one_by_one, want, rtol=4.5e-16)  # 2 ulp
    rows = per_row(np.zeros(r.size), r, "log_cosh")[0]
    np.testing.assert_allclose(rows, want, rtol=4.5e-16)  # 2 ulp
    together = lossctl.evaluate(np.zeros(r.size), r, "log_cosh", grad=True)
    assert together.value == pytest.approx(math.fsum(want.tolist()) / r.size, rel=1e-15)
    assert together.grad["max"] == 1.0 and together.grad["min"] == -1.0


# ------------------------------------------------------------------ binary cross-entropy


def _kernel_grads(spec, y, p):
    """The per-row gradients from the kernel's fused path, as `eval` hands them on."""
    call = registry.parse_spec(spec)
    k = call.spec.factory(call.params, Context(task="binary", grad=True))
    b = Batch({"target": y, "pred": p}, y.size)
    k.validate(b)
    sums, grads = k.sums_and_grads(b)
    return float(sums[0]) / y.size, grads["pred"].copy()


def test_bce_logits_fused_gradient_is_exact_at_saturation():
    # σ(z) − y, hand-derived: for y = 1 it is −σ(−z) = −e^{−z}/(1 + e^{−z}), which a form
    # computing σ(z) first rounds to 0 once z > 37; for y = 0 it is σ(z) = e^{z}/(1 + e^{z}), z < 0
    z = np.array([50.0, 700.0, 1000.0, -50.0, -700.0, -1000.0, 0.0, -0.0, 1e-3])
    y = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    value, g = _kernel_grads("bce:logits=true", y, z)
    e = np.exp(-np.abs(z))
    want = np.array([-e[0] / (1 + e[0]), -e[1] / (1 + e[1]), 0.0, e[3] / (1 + e[3]), e[4] / (1 + e[4]), 0.0,
                     -0.5, 0.5, 1 / (1 + math.exp(-1e-3))])
    np.testing.assert_allclose(g, want, rtol=1e-15, atol=0)
    assert g[0] < 0 and g[1] < 0  # not rounded to 0
    # ℓ = softplus(−z) for y = 1, softplus(z) for y = 0: log1p(e^{−|z|}) where the label agrees
    want_rows = np.array([math.log1p(e[0]), math.log1p(e[1]), 0.0, math.log1p(e[3]), math.log1p(e[4]), 0.0,
                          math.log(2), math.log(2), math.log1p(math.exp(1e-3))])
    assert value == pytest.approx(want_rows.mean(), rel=1e-15)


def test_bce_logits_fused_with_soft_labels_and_extreme_logits_matches_per_row():
    rng = np.random.default_rng(5)
    n = 200_000
    y = rng.random(n)
    y[::3] = np.round(y[::3])
    z = rng.normal(0, 30, n)
    z[::101] = 1000.0
    for spec in ("bce:logits=true", "bce"):
        p = z if "logits" in spec else 1 / (1 + np.exp(-z / 10))
        fused, rows = _fused_and_rows(y, p, spec)
        assert fused.value == pytest.approx(rows.value, rel=1e-13), spec
        for k in ("mean", "std", "min", "max", "abs_mean", "l2", "zero_frac", "top1_share"):
            assert fused.grad[k] == pytest.approx(rows.grad[k], rel=1e-12, abs=1e-300), (spec, k)


def test_bce_probabilities_fused_matches_sklearn_log_loss():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(6)
    n = 150_000
    y = (rng.random(n) < 0.3).astype(float)
    p = rng.random(n)
    p[:10] = [0.0, 1.0, 1e-300, 1 - 1e-17, 0.5, 0.0, 1.0, 0.25, 0.75, 1e-20]
    got = lossctl.evaluate(y, p, "bce", grad=True)
    assert got.value == pytest.approx(sklearn_metrics.log_loss(y, p, labels=[0, 1]), rel=1e-13)
    _, g = _kernel_grads("bce", y, p)
    q = np.clip(p, np.finfo(float).eps, 1 - np.finfo(float).eps)
    np.testing.assert_allclose(g, -y / q + (1 - y) / (1 - q), rtol=1e-14)


def test_cross_entropy_in_row_blocks_matches_scipy():
    # the class-index fast path runs in blocks of 65,536 // C rows: several blocks here, with
    # saturated rows (a class leading by 800) where the true class is and is not the leader
    special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(9)
    n, c = 20_000, 10
    z = rng.normal(0, 3, (n, c))
    y = rng.integers(0, c, n)
    z[::500, 0] += 800.0
    y[::1000] = 0
    nll = special.logsumexp(z, axis=1) - z[np.arange(n), y]
    g = special.softmax(z, axis=1)
    g[np.arange(n), y] -= 1.0
    got = lossctl.evaluate(y, z, "cross_entropy:logits=true", grad=True)
    assert got.value == pytest.approx(nll.mean(), rel=1e-13)
    assert got.grad["l2"] == pytest.approx(np.sqrt((g * g).sum()), rel=1e-12)
    assert got.grad["min"] == pytest.approx(g.min(), rel=1e-12)
    assert got.grad["max"] == pytest.approx(g.max(), rel=1e-12)
    rows, grads = per_row(y, z, "cross_entropy:logits=true")
    np.testing.assert_allclose(rows, nll, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(grads["pred"], g, rtol=1e-12, atol=1e-15)
