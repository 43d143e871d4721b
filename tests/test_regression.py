"""Regression losses against independent oracles: PyTorch fixtures, scikit-learn,
hand-derived values and finite differences; plus the identities LOSSES.md names."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn import metrics

import lossctl
from lossctl.api import per_row
from lossctl.losses import regression as R

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "torch_regression.json")
with open(FIX) as f:
    TORCH = json.load(f)
Y = np.array(TORCH["y"])
YHAT = np.array(TORCH["yhat"])


def spec_of(case):
    if not case["params"]:
        return case["loss"]
    return case["loss"] + ":" + ",".join(f"{k}={v}" for k, v in case["params"].items())


@pytest.mark.parametrize("case", TORCH["cases"], ids=lambda c: spec_of(c))
def test_value_and_gradient_match_torch(case):
    r = lossctl.evaluate(Y, YHAT, spec_of(case), grad=True)
    assert r.value == pytest.approx(case["value"], rel=1e-12, abs=1e-15)
    g = np.array(case["grad"])
    assert r.grad["mean"] == pytest.approx(g.mean(), rel=1e-10, abs=1e-14)
    assert r.grad["l2"] == pytest.approx(np.linalg.norm(g), rel=1e-10)
    assert r.grad["min"] == pytest.approx(g.min(), rel=1e-12)
    assert r.grad["max"] == pytest.approx(g.max(), rel=1e-12)
    if case["loss"] != "rmse":
        _, grads = per_row(Y, YHAT, spec_of(case))
        np.testing.assert_allclose(grads["pred"], g, rtol=1e-12, atol=1e-15)


def test_sklearn_oracles_with_weights():
    rng = np.random.default_rng(3)
    y, yhat, w = rng.normal(size=500), rng.normal(size=500), rng.uniform(0.1, 3, 500)
    assert lossctl.evaluate(y, yhat, "mse", weight=w).value == pytest.approx(
        metrics.mean_squared_error(y, yhat, sample_weight=w), rel=1e-12)
    assert lossctl.evaluate(y, yhat, "mae", weight=w).value == pytest.approx(
        metrics.mean_absolute_error(y, yhat, sample_weight=w), rel=1e-12)
    assert lossctl.evaluate(y, yhat, "rmse", weight=w).value == pytest.approx(
        metrics.root_mean_squared_error(y, yhat, sample_weight=w), rel=1e-12)
    for tau in (0.05, 0.5, 0.93):
        assert lossctl.evaluate(y, yhat, f"quantile:tau={tau}", weight=w).value == pytest.approx(
            metrics.mean_pinball_loss(y, yhat, alpha=tau, sample_weight=w), rel=1e-12)


def test_multi_output_is_mean_over_elements_like_sklearn():
    rng = np.random.default_rng(4)
    y, yhat = rng.normal(size=(300, 3)), rng.normal(size=(300, 3))
    assert lossctl.evaluate(y, yhat, "mse").value == pytest.approx(metrics.mean_squared_error(y, yhat), rel=1e-12)
    assert lossctl.evaluate(y, yhat, "mae").value == pytest.approx(metrics.mean_absolute_error(y, yhat), rel=1e-12)
    # per-row gradient of the row mean: 2r/K
    _, g = per_row(y, yhat, "mse")
    np.testing.assert_allclose(g["pred"], 2 * (yhat - y) / 3, rtol=1e-13)


def test_hand_derived_values():
    # r = ŷ − y = [−3, −0.5, 0, 2]; worked by hand:
    y = np.array([3.0, 1.0, 2.0, -1.0])
    yhat = np.array([0.0, 0.5, 2.0, 1.0])
    assert lossctl.evaluate(y, yhat, "mse").value == pytest.approx((9 + 0.25 + 0 + 4) / 4)
    assert lossctl.evaluate(y, yhat, "mae").value == pytest.approx((3 + 0.5 + 0 + 2) / 4)
    # huber δ=1: 1(3−½)=2.5, ½·0.25=0.125, 0, 1(2−½)=1.5
    assert lossctl.evaluate(y, yhat, "huber").value == pytest.approx((2.5 + 0.125 + 1.5) / 4)
    # pinball τ=0.9: y−ŷ = [3, 0.5, 0, −2] → 0.9·3, 0.9·0.5, 0, 0.1·2 (erratum 2: an over-estimate costs 0.1)
    assert lossctl.evaluate(y, yhat, "quantile:tau=0.9").value == pytest.approx((2.7 + 0.45 + 0 + 0.2) / 4)
    # log cosh 3 = log((e³+e⁻³)/2) = 2.3093477…
    assert R.log_cosh(np.array([0.0]), np.array([3.0]))[0] == pytest.approx(np.log(np.cosh(3.0)), rel=1e-15)
    # pinball gradient at the kink is 0; sign(0) = 0 for MAE
    assert R.pinball_grad(np.array([1.0]), np.array([1.0]), tau=0.3)[0] == 0.0
    assert R.mae_grad(np.array([1.0]), np.array([1.0]))[0] == 0.0


def test_log_cosh_is_finite_for_huge_residuals():
    v = R.log_cosh(np.array([0.0, 0.0]), np.array([1000.0, -1e300]))
    assert np.isfinite(v).all()
    assert v[0] == pytest.approx(1000 - np.log(2), rel=1e-15)


GRAD_FNS = [
    ("mse", R.mse, R.mse_grad, {}),
    ("mae", R.mae, R.mae_grad, {}),
    ("huber", R.huber, R.huber_grad, {"delta": 0.7}),
    ("smooth_l1", R.smooth_l1, R.smooth_l1_grad, {"beta": 0.4}),
    ("quantile", R.pinball, R.pinball_grad, {"tau": 0.8}),
    ("log_cosh", R.log_cosh, R.log_cosh_grad, {}),
]


@pytest.mark.parametrize("name,fn,grad,kw", GRAD_FNS, ids=[g[0] for g in GRAD_FNS])
def test_gradient_matches_central_difference(name, fn, grad, kw):
    rng = np.random.default_rng(11)
    y = rng.normal(size=200)
    yhat = y + rng.normal(0, 1.5, 200)
    r = yhat - y
    kinks = [0.0] + [kw.get("delta", kw.get("beta", 0.0))] * 2
    away = np.min(np.abs(np.abs(r)[:, None] - np.array(kinks)[None, :]), axis=1) > 1e-3
    h = 1e-6
    fd = (fn(y, yhat + h, **kw) - fn(y, yhat - h, **kw)) / (2 * h)
    np.testing.assert_allclose(grad(y, yhat, **kw)[away], fd[away], rtol=1e-6, atol=1e-8)


def test_rmse_gradient_by_central_difference_of_n_times_value():
    rng = np.random.default_rng(12)
    y, yhat = rng.normal(size=30), rng.normal(size=30)
    n = y.size
    g = np.empty(n)
    for i in range(n):
        e = np.zeros(n)
        e[i] = 1e-6
        g[i] = n * (lossctl.evaluate(y, yhat + e, "rmse").value - lossctl.evaluate(y, yhat - e, "rmse").value) / 2e-6
    r = lossctl.evaluate(y, yhat, "rmse", grad=True)
    assert r.grad["l2"] == pytest.approx(np.linalg.norm(g), rel=1e-6)
    assert r.grad["mean"] == pytest.approx(g.mean(), rel=1e-5, abs=1e-9)


def test_interval_reports_coverage_and_pinballs():
    y = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    lo = np.array([-1.0, 0.0, 2.5, 2.0, 1.0])
    hi = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    r = lossctl.evaluate(target=y, lower=lo, upper=hi, loss="interval:lo=0.1,hi=0.9")
    assert r.extra["coverage"] == pytest.approx(3 / 5)
    assert r.extra["nominal_coverage"] == pytest.approx(0.8)
    assert r.extra["width"] == pytest.approx(np.mean(hi - lo))
    pl = metrics.mean_pinball_loss(y, lo, alpha=0.1)
    ph = metrics.mean_pinball_loss(y, hi, alpha=0.9)
    assert r.extra["pinball_lower"] == pytest.approx(pl)
    assert r.extra["pinball_upper"] == pytest.approx(ph)
    assert r.value == pytest.approx((pl + ph) / 2)


def test_interval_rejects_lo_above_hi():
    with pytest.raises(lossctl.errors.UsageError, match="below 'hi'"):
        lossctl.evaluate(target=[1.0], lower=[0.0], upper=[2.0], loss="interval:lo=0.9,hi=0.1")


# ------------------------------------------------------------------ properties

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
ALL = ["mse", "rmse", "mae", "huber:delta=0.8", "smooth_l1:beta=1.3", "quantile:tau=0.3", "log_cosh"]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(1, 60))
def test_batch_size_and_permutation_invariance(data, n):
    y = data.draw(arrays(np.float64, n, elements=finite))
    yhat = data.draw(arrays(np.float64, n, elements=finite))
    w = data.draw(arrays(np.float64, n, elements=st.floats(0.01, 10)))
    perm = np.random.default_rng(n).permutation(n)
    for spec in ALL:
        ref = lossctl.evaluate(y, yhat, spec, weight=w, grad=True)
        for rows in (1, 7):
            r = lossctl.evaluate(y, yhat, spec, weight=w, grad=True, batch_rows=rows)
            assert r.value == pytest.approx(ref.value, rel=1e-12, abs=1e-12)
            for k in ("mean", "std", "l2", "abs_mean", "zero_frac", "top1_share"):
                assert r.grad[k] == pytest.approx(ref.grad[k], rel=1e-9, abs=1e-9), (spec, k)
        p = lossctl.evaluate(y[perm], yhat[perm], spec, weight=w[perm])
        assert p.value == pytest.approx(ref.value, rel=1e-12, abs=1e-12)
        assert ref.value >= 0


@settings(max_examples=40, deadline=None)
@given(y=arrays(np.float64, 20, elements=finite), yhat=arrays(np.float64, 20, elements=finite))
def test_identities(y, yhat):
    mae = lossctl.evaluate(y, yhat, "mae").value
    mse = lossctl.evaluate(y, yhat, "mse").value
    assert lossctl.evaluate(y, yhat, "quantile:tau=0.5").value == pytest.approx(mae / 2, rel=1e-12, abs=1e-300)
    assert lossctl.evaluate(y, yhat, "huber:delta=1e9").value == pytest.approx(mse / 2, rel=1e-12, abs=1e-300)
    for beta in (0.3, 1.0, 4.0):
        assert lossctl.evaluate(y, yhat, f"smooth_l1:beta={beta}").value == pytest.approx(
            lossctl.evaluate(y, yhat, f"huber:delta={beta}").value / beta, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("spec", ALL)
def test_gradient_is_zero_at_the_optimum(spec):
    y = np.linspace(-3, 3, 50)
    r = lossctl.evaluate(y, y.copy(), spec, grad=True)
    assert r.value == 0
    assert r.grad["l2"] == 0 and r.grad["zero_frac"] == 1


def test_large_sums_keep_their_digits():
    # 10⁶ batches of one row each: compensated sums lose nothing against one pairwise sum
    rng = np.random.default_rng(5)
    y = rng.normal(1e4, 1, 200_000)
    yhat = y + rng.normal(0, 1e-3, y.size)
    a = lossctl.evaluate(y, yhat, "mse", batch_rows=1000).value
    b = lossctl.evaluate(y, yhat, "mse").value
    exact = float(np.mean(np.square(np.float128(yhat) - np.float128(y)))) if hasattr(np, "float128") else b
    assert a == pytest.approx(b, rel=1e-13)
    assert a == pytest.approx(exact, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(y=arrays(np.float64, st.integers(1, 200), elements=finite), data=st.data())
def test_value_only_fast_path_equals_the_per_row_path(y, data):
    yhat = data.draw(arrays(np.float64, y.size, elements=finite))
    for spec in ("mse", "mae", "huber:delta=0.7", "quantile:tau=0.2", "log_cosh"):
        fast = lossctl.evaluate(y, yhat, spec, batch_rows=64).value  # fused block sums
        rows = lossctl.evaluate(y, yhat, spec, grad=True, batch_rows=64).value  # per-row losses
        assert fast == pytest.approx(rows, rel=1e-13, abs=1e-300), spec


@settings(max_examples=30, deadline=None)
@given(y=arrays(np.float64, st.integers(1, 150), elements=finite), data=st.data())
def test_fused_gradient_path_equals_the_per_row_path(y, data):
    yhat = data.draw(arrays(np.float64, y.size, elements=finite))
    w = np.ones_like(y)
    for spec in ("mse", "mae", "huber:delta=0.7", "quantile:tau=0.2", "log_cosh"):
        fused = lossctl.evaluate(y, yhat, spec, grad=True, batch_rows=64)  # sums_and_grads
        rows = lossctl.evaluate(y, yhat, spec, grad=True, batch_rows=64, weight=w)  # per-row path (weights)
        assert fused.value == pytest.approx(rows.value, rel=1e-13, abs=1e-300), spec
        for k in ("mean", "std", "min", "max", "l2", "zero_frac", "top1_share"):
            assert fused.grad[k] == pytest.approx(rows.grad[k], rel=1e-12, abs=1e-300), (spec, k)


def test_rmse_multioutput_gradient_matches_finite_differences_of_sklearn():
    # L = mean_k √(Σwᵢr²ᵢₖ/Σw) (sklearn root_mean_squared_error, uniform_average); the reported
    # gradient is ∂(N·L)/∂ŷᵢₖ, checked element-wise by central differences of sklearn's value
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(21)
    n, k = 40, 3
    y = rng.normal(size=(n, k))
    yhat = y + rng.normal(size=(n, k)) * np.array([0.1, 1.0, 5.0])
    w = rng.random(n) + 0.2

    def value(p):
        return sk.root_mean_squared_error(y, p, sample_weight=w)

    g = np.empty_like(yhat)
    h = 1e-6
    for i in range(n):
        for j in range(k):
            up, dn = yhat.copy(), yhat.copy()
            up[i, j] += h
            dn[i, j] -= h
            g[i, j] = n * (value(up) - value(dn)) / (2 * h)
    res = lossctl.evaluate(y, yhat, "rmse", weight=w, grad=True)
    assert res.value == pytest.approx(value(yhat), rel=1e-14)
    assert res.grad["mean"] == pytest.approx(g.mean(), rel=1e-6)
    assert res.grad["max"] == pytest.approx(g.max(), rel=1e-6)
    assert res.grad["min"] == pytest.approx(g.min(), rel=1e-6)
    assert res.grad["l2"] == pytest.approx(np.sqrt((g * g).sum()), rel=1e-6)
    # batch sizes do not matter, with the second pass
    assert lossctl.evaluate(y, yhat, "rmse", weight=w, grad=True, batch_rows=7).grad["l2"] == pytest.approx(
        res.grad["l2"], rel=1e-13)
