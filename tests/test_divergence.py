"""Divergences and distributions against independent oracles: scipy (rel_entr,
jensenshannon², wasserstein_distance), PyTorch fixtures (kl_div batchmean, autograd of
the LOSSES.md formulas), hand-derived values and finite differences; plus the
out-of-core path of W₁, +inf reporting, bad inputs and the CLI on the sample files."""
from __future__ import annotations

import gc
import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats
from scipy.spatial.distance import jensenshannon


from lossctl.accumulate import GradSummary
from lossctl.api import evaluate, per_row  # not lossctl.evaluate: the submodule shadows it once imported
from lossctl.engine import Batch, Context
from lossctl.errors import InputError, UsageError
from lossctl.losses import divergence as D

HERE = os.path.dirname(__file__)
SAMPLES = os.path.join(os.path.dirname(HERE), "sample_data")
with open(os.path.join(HERE, "fixtures", "torch_divergence.json")) as f:
    TORCH = json.load(f)
ARR = {k: np.array(v) for k, v in TORCH["arrays"].items()}
N_FIX = ARR["P"].shape[0]


def rows_of(case):
    return {role: ARR[name] for role, name in case["inputs"].items()}


def kwargs_of(arrays):
    """lossctl.evaluate/per_row keywords: target/pred as y/yhat, other roles by name."""
    kw = dict(arrays)
    return kw.pop("target", None), kw.pop("pred", None), kw


# ---------------------------------------------------------------- torch fixtures


@pytest.mark.parametrize("case", TORCH["cases"], ids=lambda c: c["spec"])
def test_value_and_gradient_match_torch(case):
    y, yhat, kw = kwargs_of(rows_of(case))
    r = evaluate(y, yhat, case["spec"], grad=True, **kw)
    assert r.value == pytest.approx(case["value"], rel=1e-11, abs=1e-14)
    grads = {role: np.array(g) for role, g in case["grad"].items()}
    flat = np.concatenate([g.reshape(N_FIX, -1) for g in grads.values()], axis=1)
    assert r.grad["mean"] == pytest.approx(flat.mean(), rel=1e-9, abs=1e-13)
    assert r.grad["l2"] == pytest.approx(np.linalg.norm(flat), rel=1e-10)
    assert r.grad["min"] == pytest.approx(flat.min(), rel=1e-10, abs=1e-14)
    assert r.grad["max"] == pytest.approx(flat.max(), rel=1e-10, abs=1e-14)
    if case["spec"] == "wasserstein":
        np.testing.assert_array_equal(D.wasserstein_1d_grad(y, yhat), grads["pred"])
        return
    _, mine = per_row(y, yhat, case["spec"], **kw)
    assert set(mine) == set(grads)
    for role, g in grads.items():
        np.testing.assert_allclose(mine[role], g, rtol=1e-10, atol=1e-13)
    if len(grads) > 1:  # vae_kl: a summary per role as well
        for role, g in grads.items():
            assert r.grad_by_role[role]["l2"] == pytest.approx(np.linalg.norm(g), rel=1e-10)


# ---------------------------------------------------------------- scipy oracles


def test_kl_matches_scipy_rel_entr_with_zeros_and_base():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(4), 300)
    p[::7, 1] = 0.0
    p /= p.sum(axis=1, keepdims=True)
    q = rng.dirichlet(np.ones(4), 300)
    ref = special.rel_entr(p, q).sum(axis=1)
    assert evaluate(p, q, "kl").value == pytest.approx(ref.mean(), rel=1e-13)
    assert evaluate(p, q, "kl:base=2").value == pytest.approx(ref.mean() / math.log(2), rel=1e-13)
    loss, _ = per_row(p, q, "kl")
    np.testing.assert_allclose(loss, ref, rtol=1e-14)
    w = rng.uniform(0.1, 3, 300)
    assert evaluate(p, q, "kl", weight=w).value == pytest.approx(np.average(ref, weights=w), rel=1e-13)


def test_kl_logits_equals_kl_of_softmax():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(5), 100)
    z = rng.normal(0, 3, (100, 5))
    q = special.softmax(z, axis=1)
    ref = special.rel_entr(p, q).sum(axis=1).mean()
    assert evaluate(p, z, "kl:logits=true").value == pytest.approx(ref, rel=1e-12)


def test_kl_logits_stable_for_extreme_logits():
    p = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]])
    r = evaluate(p, z, "kl:logits=true", grad=True)
    # log_softmax(row 1) = [0, −2000, −1000] to float precision: KL = ½(log ½ − 0) + ½(log ½ + 2000)
    row1 = 0.5 * math.log(0.5) + 0.5 * (math.log(0.5) + 2000.0)
    # row 2: −log_softmax(z)_2 = log(e^{1000} + e^{999}) − 999 = log(1 + e)
    row2 = math.log1p(math.e)
    assert r.value == pytest.approx((row1 + row2) / 2, rel=1e-13)
    assert all(math.isfinite(v) for v in r.grad.values())


def test_js_matches_scipy_jensenshannon_squared():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(6), 400)
    q = rng.dirichlet(np.ones(6) * 0.5, 400)
    q[::9, 2] = 0.0  # different supports: JS stays finite
    q /= q.sum(axis=1, keepdims=True)
    for base in (None, 2.0, 10.0):
        ref = jensenshannon(p, q, base=base, axis=1) ** 2
        spec = "js" if base is None else f"js:base={base:g}"
        loss, _ = per_row(p, q, spec)
        np.testing.assert_allclose(loss, ref, rtol=1e-12, atol=1e-15)
        assert evaluate(p, q, spec).value == pytest.approx(ref.mean(), rel=1e-12)


def test_wasserstein_matches_scipy_with_weights_and_ties():
    rng = np.random.default_rng(4)
    y = rng.normal(0, 1, 700)
    yhat = 0.8 * rng.standard_t(3, 700) + 0.2
    w = rng.uniform(0, 3, 700)
    assert evaluate(y, yhat, "wasserstein").value == pytest.approx(stats.wasserstein_distance(y, yhat), rel=1e-12)
    assert evaluate(y, yhat, "wasserstein", weight=w).value == pytest.approx(
        stats.wasserstein_distance(y, yhat, w, w), rel=1e-12)
    # discrete data with many ties on both sides
    yi, pi = rng.integers(0, 6, 500).astype(float), rng.integers(1, 8, 500).astype(float)
    assert evaluate(yi, pi, "wasserstein", weight=w[:500]).value == pytest.approx(
        stats.wasserstein_distance(yi, pi, w[:500], w[:500]), rel=1e-12)
    assert D.wasserstein_1d(yi, pi) == pytest.approx(stats.wasserstein_distance(yi, pi), rel=1e-13)


def test_wasserstein_gradient_weighted_by_finite_differences():
    rng = np.random.default_rng(5)
    n = 60
    y, yhat, w = rng.normal(0, 1, n), rng.normal(0.1, 1, n), rng.uniform(0.2, 2.0, n)
    g = D.wasserstein_1d_grad(y, yhat, w)
    h = 1e-7  # far below the smallest gap between sample values, so no crossing
    assert np.min(np.diff(np.sort(np.concatenate([y, yhat])))) > 10 * h
    for i in range(n):
        up, dn = yhat.copy(), yhat.copy()
        up[i] += h
        dn[i] -= h
        fd = n * (stats.wasserstein_distance(y, up, w, w) - stats.wasserstein_distance(y, dn, w, w)) / (2 * h)
        assert g[i] == pytest.approx(fd, rel=1e-6, abs=1e-6)
    # and the engine's gradient summary is the summary of these
    r = evaluate(y, yhat, "wasserstein", weight=w, grad=True, batch_rows=7)
    assert r.grad["l2"] == pytest.approx(np.linalg.norm(g), rel=1e-12)
    assert r.grad["mean"] == pytest.approx(g.mean(), rel=1e-12)


def test_wasserstein_gradient_at_a_tie_is_zero():
    # ŷ equals its rank-matched y: a kink of |ŷ − y| whose left/right derivatives are ∓1
    g = D.wasserstein_1d_grad(np.array([0.0, 1.0, 5.0]), np.array([0.0, 2.0, 4.0]))
    np.testing.assert_array_equal(g, [0.0, 1.0, -1.0])


# ---------------------------------------------------------------- hand-derived values


def test_hand_derived_values():
    p, q = np.array([[0.5, 0.5]]), np.array([[0.25, 0.75]])
    # KL = ½ log 2 + ½ log(2/3) = ½ log(4/3)
    assert evaluate(p, q, "kl").value == pytest.approx(0.5 * math.log(4 / 3), rel=1e-15)
    assert evaluate(p, q, "tv").value == pytest.approx(0.25, rel=1e-15)
    # disjoint supports: JS = log 2 (1 bit), TV = 1
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert evaluate(a, b, "js").value == pytest.approx(math.log(2), rel=1e-15)
    assert evaluate(a, b, "js:base=2").value == pytest.approx(1.0, rel=1e-15)
    assert evaluate(a, b, "tv").value == pytest.approx(1.0)
    # vae_kl: μ = 1, log σ² = 0 → ½(1 + 1 − 1 − 0) = ½ per dimension
    assert evaluate(loss="vae_kl", mu=np.ones((3, 2)), logvar=np.zeros((3, 2))).value == pytest.approx(1.0)
    # W₁ of {0, 1} and {2, 3}: every unit of mass moves 2
    assert evaluate(np.array([0.0, 1.0]), np.array([3.0, 2.0]), "wasserstein").value == pytest.approx(2.0)
    # distill with teacher = student: KL term 0, so the value is (1 − α)·CE
    s = np.array([[2.0, 0.0, -1.0]])
    ce = -special.log_softmax(s[0])[0]
    r = evaluate(np.array([0.0]), loss="distill:alpha=0.25", teacher=s, student=s)
    assert r.value == pytest.approx(0.75 * ce, rel=1e-14)


# ---------------------------------------------------------------- finite differences


def _fd_columns(fn, x, h=1e-6):
    """∂fn(x)_i/∂x_ic for every row i and column c, by central differences column-wise."""
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        up, dn = x.copy(), x.copy()
        up[:, c] += h
        dn[:, c] -= h
        out[:, c] = (fn(up) - fn(dn)) / (2 * h)
    return out


@pytest.fixture
def pq():
    rng = np.random.default_rng(6)
    return rng.dirichlet(np.ones(5) * 2, 50), rng.dirichlet(np.ones(5) * 2, 50)


@pytest.mark.parametrize("spec,fn", [
    ("kl", lambda p, q: D.kl_div(p, q)),
    ("kl:base=2", lambda p, q: D.kl_div(p, q, base=2)),
    ("js", lambda p, q: D.js_div(p, q)),
    ("js:base=3", lambda p, q: D.js_div(p, q, base=3)),
    ("tv", lambda p, q: D.tv_dist(p, q)),
])
def test_gradients_by_finite_differences(pq, spec, fn):
    p, q = pq
    assert np.min(np.abs(p - q)) > 1e-4  # away from TV's kinks
    _, g = per_row(p, q, spec)
    np.testing.assert_allclose(g["pred"], _fd_columns(lambda x: fn(p, x), q), rtol=1e-6, atol=1e-8)


def test_kl_logits_gradient_by_finite_differences(pq):
    p, _ = pq
    z = np.random.default_rng(7).normal(0, 2, p.shape)
    _, g = per_row(p, z, "kl:logits=true,base=2")
    np.testing.assert_allclose(g["pred"], _fd_columns(lambda x: D.kl_div_logits(p, x, base=2), z), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("spec", ["kl:normalize=true", "js:normalize=true,base=2", "tv:normalize=true"])
def test_normalize_gradients_are_wrt_the_raw_columns(spec):
    rng = np.random.default_rng(8)
    p, q = rng.uniform(0.1, 2, (30, 4)), rng.uniform(0.1, 2, (30, 4))
    _, g = per_row(p, q, spec)
    fd = _fd_columns(lambda x: per_row(p, x, spec)[0], q)
    np.testing.assert_allclose(g["pred"], fd, rtol=1e-6, atol=1e-8)
    # and the value is that of the normalised rows
    pn, qn = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    assert evaluate(p, q, spec).value == pytest.approx(evaluate(pn, qn, spec.split(":")[0] + (
        ":base=2" if "base=2" in spec else "")).value, rel=1e-12)


def test_js_gradient_at_shared_zero_is_half_log2():
    p, q = np.array([[0.0, 0.4, 0.6]]), np.array([[0.0, 0.5, 0.5]])
    _, g = per_row(p, q, "js")
    # one-sided difference at Q_0 = 0 (the term there is ½ Q_0 log 2 + O(Q_0²))
    h = 1e-7
    up = q.copy()
    up[0, 0] = h
    fd = (D.js_div(p, up) - D.js_div(p, q)) / h
    assert g["pred"][0, 0] == pytest.approx(0.5 * math.log(2))
    assert g["pred"][0, 0] == pytest.approx(fd[0], rel=1e-5)


def test_vae_kl_gradients_by_finite_differences():
    rng = np.random.default_rng(9)
    mu, lv = rng.normal(0, 1, (40, 3)), rng.normal(-0.3, 0.7, (40, 3))
    _, g = per_row(loss="vae_kl", mu=mu, logvar=lv)
    np.testing.assert_allclose(g["mu"], _fd_columns(lambda x: D.vae_kl(x, lv), mu), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g["logvar"], _fd_columns(lambda x: D.vae_kl(mu, x), lv), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("with_label", [True, False])
def test_distill_gradient_by_finite_differences(with_label):
    rng = np.random.default_rng(10)
    t, s = rng.normal(0, 2, (40, 6)), rng.normal(0, 2, (40, 6))
    y = rng.integers(0, 6, 40).astype(float) if with_label else None
    spec = "distill:temperature=3,alpha=0.7"
    _, g = per_row(y, None, spec, teacher=t, student=s)
    fd = _fd_columns(lambda x: D.distill(t, x, y, temperature=3.0, alpha=0.7), s)
    np.testing.assert_allclose(g["student"], fd, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- +inf is a value


def test_kl_infinite_where_q_is_zero_below_p():
    p = np.array([[0.5, 0.5], [0.2, 0.8], [1.0, 0.0]])
    q = np.array([[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]])
    r = evaluate(p, q, "kl", grad=True)
    assert r.value == math.inf
    assert r.extra["inf_rows"] == 1
    loss, g = per_row(p, q, "kl")
    assert loss[0] == math.inf and math.isfinite(loss[1]) and loss[2] == 0.0
    assert g["pred"][0, 1] == -math.inf and g["pred"][2, 1] == 0.0  # 0 where P = 0, even at Q = 0
    # a weight of 0 removes the infinite row
    r = evaluate(p, q, "kl", weight=np.array([0.0, 1.0, 1.0]))
    assert r.value == pytest.approx(special.rel_entr(p[1:], q[1:]).sum(axis=1).mean())


def test_kl_infinite_in_cli_json_is_null_with_marker(cli, write_csv):
    path = write_csv("inf.csv", "p_0,p_1,q_0,q_1\n0.5,0.5,1.0,0.0\n0.2,0.8,0.5,0.5\n")
    run = cli("eval", path, "-l", "kl", "-l", "js", "-f", "json")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["task"] == "distribution"
    kl, js = doc["results"]
    assert kl["value"] is None and kl["nonfinite"] == "inf"
    assert kl["inf_rows"] == 1
    assert js["value"] == pytest.approx(np.mean(jensenshannon([[0.5, 0.5], [0.2, 0.8]], [[1, 0], [0.5, 0.5]], axis=1) ** 2))


# ---------------------------------------------------------------- W₁ out of core


@pytest.fixture
def tiny_memory(monkeypatch, tmp_path):
    """Spill after 64 values, read the runs back 8 values at a time, into tmp_path."""
    monkeypatch.setattr(D, "SPILL_VALUES", 64)
    monkeypatch.setattr(D, "MERGE_MIN_CHUNK", 8)
    monkeypatch.setattr(D, "SPILL_DIR", str(tmp_path))
    return tmp_path


def _brute_w1_grad(y, yhat, w):
    """∂(N·W₁)/∂ŷᵢ by O(n²) broadcasting: the mean of the one-sided derivatives of ∫|G − F|
    (moving ŷᵢ right turns G − F at ŷᵢ into D − wᵢ, moving it left turns D⁻ into D⁻ + wᵢ)."""
    w = np.ones(y.size) if w is None else w
    below_y = (y[None, :] < yhat[:, None]) @ w
    upto_y = (y[None, :] <= yhat[:, None]) @ w
    below_p = (yhat[None, :] < yhat[:, None]) @ w
    upto_p = (yhat[None, :] <= yhat[:, None]) @ w
    dm, dp = below_p - below_y, upto_p - upto_y
    right = np.abs(dp - w) - np.abs(dp)
    left = np.abs(dm) - np.abs(dm + w)
    return y.size / w.sum() * 0.5 * (right + left)


def test_wasserstein_gradient_matches_brute_force_and_torch_rule():
    rng = np.random.default_rng(17)
    y, yhat = rng.normal(size=300), rng.normal(0.05, 1, 300)
    g = D.wasserstein_1d_grad(y, yhat)
    np.testing.assert_array_equal(g, _brute_w1_grad(y, yhat, None))
    # equal unweighted samples: sign(ŷ₍ₖ₎ − y₍ₖ₎) matched by rank (what autograd through sort gives)
    k = np.argsort(yhat)
    want = np.empty(300)
    want[k] = np.sign(yhat[k] - np.sort(y))
    np.testing.assert_array_equal(g, want)
    w = rng.uniform(0, 2, 300)
    np.testing.assert_allclose(D.wasserstein_1d_grad(y, yhat, w), _brute_w1_grad(y, yhat, w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("discrete", [False, True])
def test_wasserstein_external_merge_is_exact(tiny_memory, weighted, discrete):
    rng = np.random.default_rng(12)
    n = 1500
    if discrete:  # ties within and across runs and chunk boundaries
        y, yhat = rng.integers(0, 9, n).astype(float), rng.integers(2, 12, n).astype(float)
    else:
        y, yhat = rng.normal(0, 1, n), rng.normal(0.02, 1, n)  # F − G crosses 0 often
    w = rng.uniform(0, 2, n) if weighted else None
    ref = stats.wasserstein_distance(y, yhat, w, w)
    r = evaluate(y, yhat, "wasserstein", weight=w, grad=True, batch_rows=50)
    assert r.value == pytest.approx(ref, rel=1e-12)
    assert any("runs on disk" in note for note in r.notes)
    g = _brute_w1_grad(y, yhat, w)
    gs = GradSummary()
    gs.update(g)
    want = gs.result()
    for key in ("mean", "l2", "min", "max", "abs_mean", "zero_frac"):
        assert r.grad[key] == pytest.approx(want[key], rel=1e-12, abs=1e-15), key
    del r
    gc.collect()
    assert os.listdir(tiny_memory) == []  # spilled runs are removed


def test_wasserstein_merge_of_states_equals_one_pass(tiny_memory):
    rng = np.random.default_rng(13)
    y, yhat = rng.normal(0, 1, 400), rng.normal(1, 2, 400)
    ctx = Context(task="distribution")

    def state(lo, hi, step=40):
        s = D.WassersteinState({}, ctx)
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            s.update(Batch({"target": y[a:b], "pred": yhat[a:b]}, b - a, None, a))
        return s

    left, right = state(0, 250), state(250, 400, step=7)
    left.merge(right)
    out = left.result()
    assert out["n"] == 400
    assert out["value"] == pytest.approx(stats.wasserstein_distance(y, yhat), rel=1e-12)


def test_wasserstein_merge_handles_ties_across_chunks():
    rng = np.random.default_rng(14)
    y, yhat = rng.integers(0, 4, 3000).astype(float), rng.integers(0, 5, 3000).astype(float)
    runs_y = [D._Run.build(y[i:i + 500], None) for i in range(0, 3000, 500)]
    runs_p = [D._Run.build(yhat[i:i + 300], None) for i in range(0, 3000, 300)]
    for chunk in (1, 3, 64, 10_000):
        assert D._w1(runs_y, runs_p, 3000.0, 3000.0, chunk=chunk) == pytest.approx(
            stats.wasserstein_distance(y, yhat), rel=1e-13)


def test_wasserstein_refuses_per_row_reduction(cli):
    run = cli("eval", os.path.join(SAMPLES, "wasserstein.csv"), "--reduction", "sum", "-f", "json")
    assert run.code == 2
    assert "wasserstein" in run.err


def test_wasserstein_cli_weighted_matches_scipy(cli):
    import pyarrow.csv as pacsv

    t = pacsv.read_csv(os.path.join(SAMPLES, "wasserstein.csv"))
    y, yhat, w = (t.column(c).to_numpy() for c in ("target_sample", "pred_sample", "weight"))
    run = cli("eval", os.path.join(SAMPLES, "wasserstein.csv"), "-w", "weight", "-f", "json", "--batch-rows", "333")
    assert run.code == 0, run.err
    assert run.json()["results"][0]["value"] == pytest.approx(stats.wasserstein_distance(y, yhat, w, w), rel=1e-12)


# ---------------------------------------------------------------- batch invariance


@pytest.mark.parametrize("spec,roles", [
    ("kl", ("target", "pred")),
    ("kl:logits=true", ("target", "logits")),
    ("js:base=2", ("target", "pred")),
    ("tv", ("target", "pred")),
    ("vae_kl", ("mu", "logvar")),
    ("distill", ("label", "teacher", "student")),
    ("wasserstein", ("y", "yhat")),
])
def test_batch_size_invariance(spec, roles):
    rng = np.random.default_rng(15)
    n = 97
    pool = {
        "target": rng.dirichlet(np.ones(4), n), "pred": rng.dirichlet(np.ones(4), n),
        "logits": rng.normal(0, 2, (n, 4)), "mu": rng.normal(size=(n, 3)), "logvar": rng.normal(size=(n, 3)),
        "teacher": rng.normal(size=(n, 4)), "student": rng.normal(size=(n, 4)),
        "label": rng.integers(0, 4, n).astype(float), "y": rng.normal(size=n), "yhat": rng.normal(size=n),
    }
    w = rng.uniform(0.1, 2, n)
    a, b = pool[roles[0]], pool[roles[1]]
    kw = {} if len(roles) == 2 else {"teacher": pool["teacher"], "student": pool["student"]}
    if spec == "vae_kl":
        a, b, kw = None, None, {"mu": pool["mu"], "logvar": pool["logvar"]}
    if spec == "distill":
        b = None
    ref = evaluate(a, b, spec, weight=w, grad=True, **kw)
    for rows in (1, 7):
        r = evaluate(a, b, spec, weight=w, grad=True, batch_rows=rows, **kw)
        assert r.value == pytest.approx(ref.value, rel=1e-13)
        for key in ("mean", "l2", "min", "max"):
            assert r.grad[key] == pytest.approx(ref.grad[key], rel=1e-11, abs=1e-15)


# ---------------------------------------------------------------- distill parameters


def test_distill_reports_effective_alpha_and_terms():
    rng = np.random.default_rng(16)
    t, s, y = rng.normal(size=(50, 4)), rng.normal(size=(50, 4)), rng.integers(0, 4, 50).astype(float)
    r = evaluate(y, None, "distill:alpha=0.3", teacher=t, student=s)
    assert r.extra["alpha_effective"] == 0.3
    assert r.value == pytest.approx(0.3 * r.extra["distill_term"] + 0.7 * r.extra["ce_term"], rel=1e-13)
    r = evaluate(None, None, "distill:alpha=0.3", teacher=t, student=s)
    assert r.extra["alpha_effective"] == 1.0
    assert "ce_term" not in r.extra
    assert r.value == pytest.approx(r.extra["distill_term"], rel=1e-15)


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("spec", ["kl", "js", "tv"])
def test_rows_not_summing_to_one_name_the_row(spec):
    p = np.full((5, 2), 0.5)
    q = np.full((5, 2), 0.5)
    q[2] = [0.5, 0.4]
    with pytest.raises(InputError, match=r"row 3: .*does not sum to 1.*normalize=true.*got 0\.9"):
        evaluate(p, q, spec)
    p[3] = [0.6, 0.6]
    with pytest.raises(InputError, match=r"column 'target', row 4: target distribution P does not sum to 1"):
        evaluate(p, np.full((5, 2), 0.5), spec)
    # within 1e-6 is fine; normalize=true divides by the sum
    q[2] = [0.5, 0.5 + 5e-7]
    evaluate(np.full((5, 2), 0.5), q, spec)
    q[2] = [0.5, 0.4]
    assert math.isfinite(evaluate(np.full((5, 2), 0.5), q, spec + ":normalize=true").value)


@pytest.mark.parametrize("spec", ["kl", "js", "tv", "kl:normalize=true"])
def test_negative_probabilities_name_the_row(spec):
    p = np.full((4, 3), 1 / 3)
    q = np.full((4, 3), 1 / 3)
    q[1] = [-0.1, 0.6, 0.5]
    with pytest.raises(InputError, match=r"row 2: negative probability.*got -0\.1"):
        evaluate(p, q, spec)


def test_bad_inputs_in_the_cli_name_file_column_and_row(cli, write_csv):
    path = write_csv("bad.csv", "p_0,p_1,q_0,q_1\n0.5,0.5,0.5,0.5\n0.5,0.5,0.7,0.7\n")
    run = cli("eval", path, "-f", "json")
    assert run.code == 2
    assert "bad.csv" in run.err and "row 2" in run.err and "q_*" in run.err and "Traceback" not in run.err
    path = write_csv("neg.csv", "p_0,p_1,q_0,q_1\n0.5,0.5,0.5,0.5\n0.5,0.5,0.5,0.5\n1.5,-0.5,0.5,0.5\n")
    run = cli("eval", path, "-l", "tv", "-f", "json")
    assert run.code == 2 and "row 3" in run.err and "negative" in run.err


def test_other_input_errors():
    with pytest.raises(InputError, match="P has 2 columns but the prediction Q has 3"):
        evaluate(np.full((2, 2), 0.5), np.full((2, 3), 1 / 3), "kl")
    with pytest.raises(InputError, match=r"row 2: class label outside 0\.\.2"):
        evaluate(np.array([0.0, 3.0]), None, "distill", teacher=np.zeros((2, 3)), student=np.zeros((2, 3)))
    with pytest.raises(InputError, match="class label"):
        evaluate(np.array([0.5, 1.0]), None, "distill", teacher=np.zeros((2, 3)), student=np.zeros((2, 3)))
    with pytest.raises(UsageError, match=r"'base' parameter of kl must be in \(0, inf\) and not 1"):
        evaluate(np.full((2, 2), 0.5), np.full((2, 2), 0.5), "kl:base=1")
    with pytest.raises(UsageError, match="'base' parameter of js"):
        evaluate(np.full((2, 2), 0.5), np.full((2, 2), 0.5), "js:base=-2")
    with pytest.raises(UsageError, match="'temperature' parameter of distill"):
        evaluate(None, None, "distill:temperature=0", teacher=np.zeros((2, 3)), student=np.zeros((2, 3)))
    with pytest.raises(UsageError, match="'alpha' parameter of distill"):
        evaluate(None, None, "distill:alpha=1.5", teacher=np.zeros((2, 3)), student=np.zeros((2, 3)))


# ---------------------------------------------------------------- properties (hypothesis)


def _dist(c):
    return st.lists(st.floats(0.0, 1.0), min_size=c, max_size=c).filter(lambda v: sum(v) > 1e-3).map(
        lambda v: np.array(v) / sum(v))


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 5).flatmap(lambda c: st.tuples(_dist(c), _dist(c), _dist(c))))
def test_divergence_properties(pqr):
    p, q, r = (x[None, :] for x in pqr)
    assert D.kl_div(p, q)[0] >= -1e-12
    js = D.js_div(p, q)[0]
    assert -1e-12 <= js <= math.log(2) + 1e-12
    assert js == pytest.approx(D.js_div(q, p)[0], abs=1e-12)  # symmetric
    # TV: symmetric, in [0, 1], the triangle inequality (erratum 6)
    tv = D.tv_dist
    assert tv(p, q)[0] == pytest.approx(tv(q, p)[0], abs=1e-15)
    assert 0 <= tv(p, q)[0] <= 1 + 1e-12
    assert tv(p, r)[0] <= tv(p, q)[0] + tv(q, r)[0] + 1e-12
    # sup_A |P(A) − Q(A)| over every subset A equals ½ Σ|P − Q|
    c = p.shape[1]
    sup = max(abs(sum(p[0, j] - q[0, j] for j in range(c) if m >> j & 1)) for m in range(1 << c))
    assert tv(p, q)[0] == pytest.approx(sup, abs=1e-12)


# ---------------------------------------------------------------- CLI on the sample files


@pytest.mark.parametrize("name,losses", [
    ("distributions.csv", ["kl", "js", "tv"]),
    ("vae.parquet", ["vae_kl"]),
    ("distill.parquet", ["distill"]),
    ("wasserstein.csv", ["wasserstein"]),
])
def test_cli_smoke_on_sample_files(cli, name, losses):
    run = cli("eval", os.path.join(SAMPLES, name), "-f", "json")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["task"] == "distribution"
    assert [r["loss"] for r in doc["results"]] == losses
    assert all(r["value"] is not None and r["value"] >= 0 for r in doc["results"])
    run = cli("eval", os.path.join(SAMPLES, name), "--grad", "-f", "json")
    assert run.code == 0, run.err
    assert all("grad" in r for r in run.json()["results"])


def test_sample_distributions_have_zeros_in_p_and_agree_with_scipy(cli):
    import pyarrow.csv as pacsv

    t = pacsv.read_csv(os.path.join(SAMPLES, "distributions.csv"))
    p = np.column_stack([t.column(f"p_{j}").to_numpy() for j in range(6)])
    q = np.column_stack([t.column(f"q_{j}").to_numpy() for j in range(6)])
    assert (p == 0).any(axis=1).sum() >= 10
    run = cli("eval", os.path.join(SAMPLES, "distributions.csv"), "-l", "kl", "-l", "js:base=2", "-f", "json")
    kl, js = run.json()["results"]
    assert kl["value"] == pytest.approx(special.rel_entr(p, q).sum(axis=1).mean(), rel=1e-12)
    assert js["value"] == pytest.approx(np.mean(jensenshannon(p, q, base=2, axis=1) ** 2), rel=1e-12)


def test_logit_columns_bind_kl_with_logits_only(cli, write_csv):
    path = write_csv("lg.csv", "p_0,p_1,logit_0,logit_1\n0.3,0.7,-1,2\n0.5,0.5,0.2,0.1\n")
    run = cli("eval", path, "-f", "json")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["task"] == "distribution"
    assert [(r["loss"], r["params"]["logits"]) for r in doc["results"]] == [("kl", True)]
    p = np.array([[0.3, 0.7], [0.5, 0.5]])
    z = np.array([[-1.0, 2.0], [0.2, 0.1]])
    assert doc["results"][0]["value"] == pytest.approx(special.rel_entr(p, special.softmax(z, axis=1)).sum(1).mean())


def test_generic_multi_output_names_are_not_taken_for_distributions(cli, write_csv):
    path = write_csv("multi.csv", "target_0,target_1,pred_0,pred_1\n1.5,2.0,1.0,2.5\n0.1,0.4,0.3,0.2\n")
    run = cli("eval", path, "-f", "json")
    assert run.code == 0, run.err
    assert run.json()["task"] != "distribution"
    # but they bind when the user says so
    run = cli("eval", path, "-l", "wasserstein", "-t", "target_0", "-p", "pred_0", "-f", "json")
    assert run.code == 0, run.err
    assert run.json()["results"][0]["value"] == pytest.approx(stats.wasserstein_distance([1.5, 0.1], [1.0, 0.3]))


def test_explain_says_how_wasserstein_is_computed(cli):
    run = cli("explain", "wasserstein", "-f", "json")
    conv = run.json()["properties"]["conventions"]
    assert "Exact" in conv and "merge" in conv and "Memory" in conv and "disk" in conv
    for name in ("kl", "js", "tv", "wasserstein", "vae_kl", "distill"):
        assert cli("explain", name).code == 0


# ---------------------------------------------------------------- audit: fixes with their tests


def test_vae_kl_overflow_is_an_inf_value_not_a_warning(cli, write_csv):
    import warnings

    mu = np.array([[0.5, 0.5], [1.0, 2.0]])
    lv = np.array([[0.1, -3.0], [800.0, 0.0]])  # e^800 overflows float64: the KL is +inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = D.vae_kl(mu, lv)
        gm, gl = D.vae_kl_grad(mu, lv)
    assert v[0] == pytest.approx(0.5 * (math.exp(0.1) + math.exp(-3.0) + 0.5 - 2.0 - 0.1 + 3.0), rel=1e-15)
    assert math.isinf(v[1]) and v[1] > 0 and math.isinf(gl[1, 0])
    path = write_csv("vae.csv", "mu_0,mu_1,logvar_0,logvar_1\n0.5,0.5,0.1,-3\n1,2,800,0\n")
    r = cli("eval", path, "-l", "vae_kl", "--grad", "-f", "json")
    assert r.code == 0 and r.err == ""
    res = r.json()["results"][0]
    assert res["value"] is None and res["nonfinite"] == "inf" and res["inf_rows"] == 1


@pytest.mark.parametrize("spec", ["kl", "js", "tv"])
def test_probability_above_one_names_its_column(spec, cli, write_csv):
    p = np.full((3, 2), 0.5)
    q = np.full((3, 2), 0.5)
    q[1] = [1.5, 0.5]  # the row sum (2.0) was reported under the glob; the entry is the error
    with pytest.raises(InputError, match=r"column 'pred\[0\]', row 2: probability above 1 .*got 1\.5"):
        evaluate(p, q, spec)
    q[1] = [1.0 + 5e-7, 0.0]  # within the 1e-6 tolerance of the row sum: accepted (KL is +inf here)
    assert evaluate(p, q, spec).n == 3
    path = write_csv("big.csv", "p_0,p_1,q_0,q_1\n0.5,0.5,0.5,0.5\n1.2,0.3,0.5,0.5\n")
    r = cli("eval", path, "-l", spec, "-f", "json")
    assert r.code == 2 and r.out == ""
    line, = r.err.strip().splitlines()
    assert path in line and "column 'p_0', row 2" in line and "got 1.2" in line


@pytest.mark.parametrize("text,spec,column", [
    ("p_0,p_1,q_0,q_1,q_2\n0.5,0.5,0.5,0.25,0.25\n", "kl", "q_*"),
    ("mu_0,mu_1,logvar_0,logvar_1,logvar_2\n0.5,0.5,0.1,0.1,0.1\n", "vae_kl", "logvar_*"),
    ("teacher_0,teacher_1,student_0,student_1,student_2\n1,2,0.5,0.3,0.1\n", "distill", "student_*"),
])
def test_width_mismatch_names_file_column_and_row(cli, write_csv, text, spec, column):
    path = write_csv("w.csv", text)
    r = cli("eval", path, "-l", spec, "-f", "json")
    assert r.code == 2 and r.out == "" and "Traceback" not in r.err
    line, = r.err.strip().splitlines()
    assert path in line and f"column '{column}', row 1" in line and "columns" in line
