"""The Python library as a notebook user meets it: lossctl.evaluate / lossctl.per_row.

Covers input kinds (numpy dtypes, lists, pandas), every loss family, weights,
reductions, gradients, intervals, batch invariance, parameter overrides, extra roles,
and the errors (always lossctl.errors exceptions with a one-line message naming the
role and the row). Values are checked against scikit-learn / scipy where they have
the loss, else against the LOSSES.md formula written out in numpy here.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import huber as scipy_huber
from scipy.special import log_softmax, rel_entr, softmax
from scipy.stats import wasserstein_distance
from sklearn import metrics

import lossctl
from lossctl.errors import InputError, LossctlError, UsageError
from lossctl.results import GRAD_KEYS, LossResult

N = 23
C = 4


def _data(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=N)
    d = {"y": y, "p": y + rng.normal(size=N)}
    yb = rng.integers(0, 2, N)
    yb[:2] = [0, 1]
    d.update(yb=yb, z=2 * rng.normal(size=N), pb=rng.uniform(0.02, 0.98, N))
    yc = rng.integers(0, C, N)
    yc[:C] = np.arange(C)
    zc = rng.normal(size=(N, C))
    d.update(yc=yc, zc=zc, pc=softmax(zc, axis=1))
    d.update(a=rng.normal(size=(N, 3)), pos=rng.normal(size=(N, 3)), neg=rng.normal(size=(N, 3)))
    d.update(P=rng.dirichlet(np.ones(C), N), Q=rng.dirichlet(np.ones(C), N))
    d.update(mu=rng.normal(size=(N, 3)), lv=rng.normal(size=(N, 3)), grp=rng.integers(0, 3, N))
    d.update(w=np.r_[0.0, rng.uniform(0.1, 2.0, N - 1)])
    return d


D = _data()

# (SPEC, inputs) for every registered loss, with non-default parameters where they exist
CASES = {
    "mse": dict(y=D["y"], yhat=D["p"]),
    "rmse": dict(y=D["y"], yhat=D["p"]),
    "mae": dict(y=D["y"], yhat=D["p"]),
    "huber:delta=0.7": dict(y=D["y"], yhat=D["p"]),
    "smooth_l1:beta=0.5": dict(y=D["y"], yhat=D["p"]),
    "quantile:tau=0.8": dict(y=D["y"], yhat=D["p"]),
    "log_cosh": dict(y=D["y"], yhat=D["p"]),
    "interval:lo=0.1,hi=0.9": dict(y=D["y"], lower=D["p"] - 1, upper=D["p"] + 1),
    "bce": dict(y=D["yb"], yhat=D["pb"]),
    "bce:logits=true,pos_weight=2": dict(y=D["yb"], yhat=D["z"]),
    "hinge": dict(y=D["yb"], yhat=D["z"]),
    "squared_hinge": dict(y=D["yb"], yhat=D["z"]),
    "exponential": dict(y=D["yb"], yhat=D["z"]),
    "focal:logits=true,gamma=0.5": dict(y=D["yb"], yhat=D["z"]),
    "cross_entropy": dict(y=D["yc"], yhat=D["pc"]),
    "cross_entropy:logits=true,weight=balanced,label_smoothing=0.1": dict(y=D["yc"], yhat=D["zc"]),
    "multi_hinge": dict(y=D["yc"], yhat=D["zc"]),
    "multi_hinge:variant=cs": dict(y=D["yc"], yhat=D["zc"]),
    "focal:logits=true,alpha=[0.1,0.2,0.3,0.4]": dict(y=D["yc"], yhat=D["zc"]),
    "contrastive": dict(y=D["yb"], x1=D["a"], x2=D["pos"]),
    "triplet": dict(anchor=D["a"], positive=D["pos"], negative=D["neg"]),
    "triplet:squared=false": dict(anchor=D["a"], positive=D["pos"], negative=D["neg"]),
    "triplet_mined": dict(y=D["yb"], embedding=D["a"]),
    "triplet_mined:mining=all": dict(y=D["yb"], embedding=D["a"]),
    "dice": dict(y=D["yb"], yhat=D["pb"]),
    "dice:logits=true": dict(y=D["yc"], yhat=D["zc"]),
    "generalized_dice": dict(y=D["yb"], yhat=D["pb"]),
    "dice_bce": dict(y=D["yb"], yhat=D["pb"], group=D["grp"]),
    "tversky:alpha=0.3,beta=0.7": dict(y=D["yb"], yhat=D["pb"]),
    "kl": dict(y=D["P"], yhat=D["Q"]),
    "kl:logits=true": dict(y=D["P"], yhat=D["zc"]),
    "js": dict(y=D["P"], yhat=D["Q"]),
    "tv": dict(y=D["P"], yhat=D["Q"]),
    "wasserstein": dict(y=D["y"], yhat=D["p"]),
    "vae_kl": dict(mu=D["mu"], logvar=D["lv"]),
    "distill": dict(y=D["yc"], teacher=D["zc"], student=3 * D["pc"]),
}


def _ev(spec: str, **kw):
    args = dict(CASES[spec])
    return lossctl.evaluate(args.pop("y", None), args.pop("yhat", None), spec, **args, **kw)


def test_cases_cover_every_registered_loss():
    names = {lossctl.get_loss(s.partition(":")[0]).name for s in CASES}
    assert names == {s.name for s in lossctl.list_losses()}


# ---------------------------------------------------------------- the package surface


@pytest.mark.parametrize("attr", ["api.per_row", "errors.InputError", "per_row", "LossResult", "InputError",
                                  "UsageError", "results.GRAD_KEYS", "losses.regression.huber", "get_loss"])
def test_bare_import_reaches_the_documented_names(attr):
    # a fresh interpreter: `import lossctl; lossctl.api.per_row` must not need `import lossctl.api`
    code = f"import lossctl, sys; x = lossctl.{attr}; assert x is not None"
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_import_stays_light_and_lists_its_names():
    code = "import sys, lossctl; dir(lossctl); lossctl.errors; assert 'numpy' not in sys.modules, 'numpy loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
    for name in ("evaluate", "per_row", "get_loss", "list_losses", "LossResult", "InputError", "api"):
        assert name in dir(lossctl)
    assert lossctl.per_row is lossctl.api.per_row
    assert issubclass(lossctl.InputError, ValueError) and issubclass(lossctl.UsageError, ValueError)


def test_get_loss_and_list_losses():
    assert lossctl.get_loss("L2").name == "mse"
    assert lossctl.get_loss("cce").name == "cross_entropy"
    with pytest.raises(UsageError, match="unknown loss 'msee'.*Did you mean mse"):
        lossctl.get_loss("msee")
    assert len({s.name for s in lossctl.list_losses()}) == len(lossctl.list_losses()) >= 20


# ---------------------------------------------------------------- input kinds

def test_input_kinds_give_the_same_value():
    y, p = D["y"], D["p"]
    want = metrics.mean_squared_error(y, p)
    df = pd.DataFrame({"y": y, "p": p}, index=np.arange(N)[::-1])  # the index is ignored: rows are positions
    for yy, pp in [(y, p), (list(y), list(p)), (pd.Series(y), pd.Series(p)), (df["y"], df["p"]),
                   (tuple(y), p), (y[:, None], p[:, None]), (df[["y"]], df[["p"]])]:
        assert lossctl.evaluate(yy, pp, "mse").value == pytest.approx(want, rel=1e-13)
    r32 = lossctl.evaluate(y.astype(np.float32), p.astype(np.float32), "mse")
    assert r32.value == pytest.approx(metrics.mean_squared_error(y.astype(np.float32), p.astype(np.float32)), rel=1e-6)
    assert lossctl.evaluate(np.arange(5), np.arange(5) + 1, "mse").value == 1.0


def test_label_kinds_int_bool_float_pm1_pandas():
    yb, pb, z = D["yb"], D["pb"], D["z"]
    want = metrics.log_loss(yb, pb)
    for yy in (yb, yb.astype(bool), yb.astype(float), yb.astype(np.int8), list(yb), pd.Series(yb.astype(bool)),
               pd.Series(yb, dtype="Int64")):
        assert lossctl.evaluate(yy, pb, "bce").value == pytest.approx(want, rel=1e-12)
    want_h = metrics.hinge_loss(2 * yb - 1, z)
    for yy in (yb, yb.astype(bool), 2 * yb - 1):
        assert lossctl.evaluate(yy, z, "hinge").value == pytest.approx(want_h, rel=1e-12)


def test_multiclass_target_forms_and_pandas_frames():
    yc, pc = D["yc"], D["pc"]
    want = metrics.log_loss(yc, pc, labels=range(C))
    frame = pd.DataFrame(pc, columns=[f"p_{j}" for j in range(C)])
    for yy, pp in [(yc, pc), (yc[:, None], pc), (np.eye(C)[yc], pc), (np.eye(C, dtype=bool)[yc], pc),
                   (yc.tolist(), pc.tolist()), (pd.Series(yc), frame), (pd.DataFrame({"y": yc})[["y"]], frame)]:
        assert lossctl.evaluate(yy, pp, "cross_entropy").value == pytest.approx(want, rel=1e-12)


def test_categorical_labels_for_mined_triplets_and_image_ids():
    e = D["a"]
    codes = np.arange(N) % 3
    names = np.array(["cat", "dog", "emu"])[codes]
    want = lossctl.evaluate(codes, embedding=e, loss="triplet_mined").value
    for lab in (names, list(names), pd.Series(names, dtype="category"), pd.Series(names)):
        assert lossctl.evaluate(lab, embedding=e, loss="triplet_mined").value == want
    yb, pb, grp = D["yb"], D["pb"], D["grp"]
    by_int = lossctl.evaluate(yb, pb, "dice", group=grp).value
    assert lossctl.evaluate(yb, pb, "dice", group=np.array(list("abc"))[grp]).value == by_int


# ---------------------------------------------------------------- values against oracles


def test_values_against_sklearn_and_scipy_with_weights():
    y, p, w = D["y"], D["p"], D["w"]
    r = y - p

    def ev(spec, yy=y, pp=p, **kw):
        return lossctl.evaluate(yy, pp, spec, weight=w, **kw).value

    assert ev("mse") == pytest.approx(metrics.mean_squared_error(y, p, sample_weight=w), rel=1e-12)
    assert ev("rmse") == pytest.approx(metrics.root_mean_squared_error(y, p, sample_weight=w), rel=1e-12)
    assert ev("mae") == pytest.approx(metrics.mean_absolute_error(y, p, sample_weight=w), rel=1e-12)
    assert ev("quantile:tau=0.8") == pytest.approx(metrics.mean_pinball_loss(y, p, alpha=0.8, sample_weight=w),
                                                   rel=1e-12)
    assert ev("huber:delta=0.7") == pytest.approx(np.average(scipy_huber(0.7, r), weights=w), rel=1e-12)
    assert ev("smooth_l1:beta=0.5") == pytest.approx(np.average(scipy_huber(0.5, r) / 0.5, weights=w), rel=1e-12)
    assert ev("log_cosh") == pytest.approx(np.average(np.log(np.cosh(r)), weights=w), rel=1e-12)
    assert ev("wasserstein") == pytest.approx(wasserstein_distance(y, p, w, w), rel=1e-12)
    yb, pb, z = D["yb"], D["pb"], D["z"]
    assert ev("bce", yb, pb) == pytest.approx(metrics.log_loss(yb, pb, sample_weight=w), rel=1e-12)
    assert ev("bce:logits=true", yb, z) == pytest.approx(
        metrics.log_loss(yb, 1 / (1 + np.exp(-z)), sample_weight=w), rel=1e-10)
    assert ev("hinge", yb, z) == pytest.approx(metrics.hinge_loss(2 * yb - 1, z, sample_weight=w), rel=1e-12)
    yc, pc, zc = D["yc"], D["pc"], D["zc"]
    assert ev("cross_entropy", yc, pc) == pytest.approx(
        metrics.log_loss(yc, pc, sample_weight=w, labels=range(C)), rel=1e-12)
    assert ev("multi_hinge:variant=cs", yc, zc) == pytest.approx(
        metrics.hinge_loss(yc, zc, labels=range(C), sample_weight=w), rel=1e-12)
    P, Q = D["P"], D["Q"]
    assert ev("kl", P, Q) == pytest.approx(np.average(rel_entr(P, Q).sum(1), weights=w), rel=1e-12)
    assert ev("js", P, Q) == pytest.approx(np.average(jensenshannon(P, Q, axis=1) ** 2, weights=w), rel=1e-10)
    assert ev("tv", P, Q) == pytest.approx(np.average(0.5 * np.abs(P - Q).sum(1), weights=w), rel=1e-12)


def test_values_against_the_formulas_for_the_other_families():
    a, pos, neg = D["a"], D["pos"], D["neg"]
    d2 = lambda u, v: ((u - v) ** 2).sum(1)  # noqa: E731
    r = lossctl.evaluate(anchor=a, positive=pos, negative=neg, loss="triplet:margin=0.3")
    assert r.value == pytest.approx(np.maximum(0, d2(a, pos) - d2(a, neg) + 0.3).mean(), rel=1e-12)
    yb = D["yb"]
    dist = np.sqrt(d2(a, pos))
    want = (0.5 * (yb * dist ** 2 + (1 - yb) * np.maximum(0, 1.5 - dist) ** 2)).mean()
    assert lossctl.evaluate(yb, x1=a, x2=pos, loss="contrastive:margin=1.5").value == pytest.approx(want, rel=1e-12)
    mu, lv = D["mu"], D["lv"]
    want = (0.5 * (np.exp(lv) + mu ** 2 - 1 - lv).sum(1)).mean()
    assert lossctl.evaluate(mu=mu, logvar=lv, loss="vae_kl").value == pytest.approx(want, rel=1e-12)
    t, s, yc, T = D["zc"], 3 * D["pc"], D["yc"], 2.0
    kd = (softmax(t / T, 1) * (log_softmax(t / T, 1) - log_softmax(s / T, 1))).sum(1)
    ce = -log_softmax(s, 1)[np.arange(N), yc]
    want = (0.5 * T * T * kd + 0.5 * ce).mean()
    assert lossctl.evaluate(yc, teacher=t, student=s, loss="distill").value == pytest.approx(want, rel=1e-12)
    # Dice of hard 0/1 predictions is 1 - F1 (up to the 1e-6 smoothing)
    hard = (D["pb"] > 0.5).astype(float)
    assert lossctl.evaluate(yb, hard, "dice").value == pytest.approx(1 - metrics.f1_score(yb, hard), abs=1e-6)


# ---------------------------------------------------------------- the result object and invariances


@pytest.mark.parametrize("spec", list(CASES))
def test_every_loss_is_batch_invariant_with_weights_grad_and_ci(spec):
    rs = [_ev(spec, weight=D["w"], grad=True, ci=0.95, seed=4, batch_rows=b) for b in (1, 7, None)]
    ref = rs[-1]
    assert isinstance(ref, LossResult) and ref.n == N and math.isfinite(ref.value)
    assert float(ref) == ref.value
    assert set(ref.grad) == set(GRAD_KEYS)
    for r in rs[:-1]:
        assert r.value == pytest.approx(ref.value, rel=1e-12, abs=1e-12)
        for k in GRAD_KEYS:
            assert r.grad[k] == pytest.approx(ref.grad[k], rel=1e-9, abs=1e-12), k
        if ref.ci is None:
            assert r.ci is None
        else:
            assert r.ci == pytest.approx(ref.ci, rel=1e-9)
    if ref.ci is None:  # an interval asked for and not given is explained
        assert any("no bootstrap interval" in note for note in ref.notes)
    else:
        lo, hi = ref.ci
        assert lo <= hi and ref.ci_method
    doc = json.loads(json.dumps(ref.to_json(), allow_nan=False))
    assert doc["loss"] == ref.loss and doc["n"] == N and doc["value"] == pytest.approx(ref.value)
    assert set(doc["grad"]) == set(GRAD_KEYS)
    assert repr(ref).startswith("LossResult(") and len(repr(ref)) < 5000


def test_ci_is_seeded_and_matches_a_row_bootstrap():
    y, p = D["y"], D["p"]
    a = lossctl.evaluate(y, p, "mae", ci=0.9, seed=7, bootstrap=400)
    b = lossctl.evaluate(y, p, "mae", ci=0.9, seed=7, bootstrap=400)
    c = lossctl.evaluate(y, p, "mae", ci=0.9, seed=8, bootstrap=400)
    assert a.ci == b.ci and a.ci != c.ci
    assert a.ci[0] < a.value < a.ci[1]
    assert a.ci_method == "percentile bootstrap over rows"


def test_ci_notes_when_there_is_no_interval():
    r = lossctl.evaluate(D["y"], D["p"], "wasserstein", ci=0.95)
    assert r.ci is None and r.notes == ["no bootstrap interval: this loss is not a function of row sums"]
    r = lossctl.evaluate([1.0], [2.0], "mse", ci=0.95)
    assert r.ci is None and r.notes == ["no bootstrap interval: it needs at least 2 rows"]


def test_list_of_losses_returns_a_list_in_order():
    rs = lossctl.evaluate(D["y"], D["p"], ["mse", "mae", "huber:delta=0.5"])
    assert isinstance(rs, list) and [r.loss for r in rs] == ["mse", "mae", "huber"]
    assert rs[2].spec == "huber:delta=0.5" and rs[2].params == {"delta": 0.5}
    assert isinstance(lossctl.evaluate(D["y"], D["p"], ("mse",)), list)
    assert lossctl.evaluate(D["y"], D["p"], []) == []
    rs = lossctl.evaluate(D["yb"], D["pb"], ["bce", "focal:gamma=2,alpha=0.25"], weight=D["w"], ci=0.95)
    assert all(r.ci is not None for r in rs)


def test_reduction_sum():
    y, p, w = D["y"], D["p"], D["w"]
    assert lossctl.evaluate(y, p, "mse", reduction="sum").value == pytest.approx(((y - p) ** 2).sum(), rel=1e-12)
    assert lossctl.evaluate(y, p, "mse", reduction="sum", weight=w).value == pytest.approx(
        (w * (y - p) ** 2).sum(), rel=1e-12)
    for spec in ("rmse", "dice", "wasserstein", "triplet_mined"):
        with pytest.raises(UsageError, match=f"{spec} is not a mean over rows"):
            _ev(spec, reduction="sum")


def test_zero_weights_drop_rows_exactly():
    w = D["w"].copy()
    w[5:9] = 0
    keep = w > 0
    for spec in ("mse", "huber:delta=0.7", "bce", "dice", "kl"):
        args = dict(CASES[spec])
        yy, pp = args.pop("y"), args.pop("yhat")
        full = lossctl.evaluate(yy, pp, spec, weight=w)
        sub = lossctl.evaluate(yy[keep], pp[keep], spec, weight=w[keep])
        assert full.value == pytest.approx(sub.value, rel=1e-12)


def test_gradient_summary_matches_per_row_gradients_and_finite_differences():
    """g = ∂(N·L)/∂ŷ with L = Σwℓ/Σw: per_row(weight=w) gives w·ℓ', the summary scales it by N/Σw."""
    y, p, w = D["y"], D["p"], D["w"]
    spec = "huber:delta=0.7"
    loss_rows, grads = lossctl.per_row(y, p, spec, weight=w)
    g = grads["pred"] * N / w.sum()
    res = lossctl.evaluate(y, p, spec, weight=w, grad=True)
    k = math.ceil(0.01 * N)
    want = {
        "mean": g.mean(), "std": g.std(), "min": g.min(), "max": g.max(), "abs_mean": np.abs(g).mean(),
        "l2": np.linalg.norm(g), "zero_frac": np.mean(g == 0),
        "top1_share": np.sort(np.abs(g))[-k:].sum() / np.abs(g).sum(),
    }
    for key, v in want.items():
        assert res.grad[key] == pytest.approx(v, rel=1e-10, abs=1e-14), key
    h = 1e-6
    for i in (1, 4, 10):
        up, dn = p.copy(), p.copy()
        up[i] += h
        dn[i] -= h
        hi, lo = (lossctl.evaluate(y, q, spec, weight=w).value for q in (up, dn))
        fd = N * (hi - lo) / (2 * h)
        assert g[i] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    assert loss_rows.sum() == pytest.approx(lossctl.evaluate(y, p, spec, weight=w, reduction="sum").value, rel=1e-12)


def test_vector_role_gradients_are_reported_by_role():
    r = lossctl.evaluate(anchor=D["a"], positive=D["pos"], negative=D["neg"], loss="triplet", grad=True)
    assert set(r.grad_by_role) == {"anchor", "positive", "negative"}
    _, g = lossctl.per_row(anchor=D["a"], positive=D["pos"], negative=D["neg"], loss="triplet")
    stacked = np.hstack([g["anchor"], g["positive"], g["negative"]])
    assert r.grad["l2"] == pytest.approx(np.linalg.norm(stacked), rel=1e-12)
    assert r.grad_by_role["negative"]["l2"] == pytest.approx(np.linalg.norm(g["negative"]), rel=1e-12)


# ---------------------------------------------------------------- parameters and roles by keyword


def test_parameters_by_keyword_override_defaults():
    y, p = D["y"], D["p"]
    assert lossctl.evaluate(y, p, "huber", delta=0.7).value == lossctl.evaluate(y, p, "huber:delta=0.7").value
    r = lossctl.evaluate(D["yb"], D["z"], "bce", logits=True)
    assert r.spec == "bce:logits=true" and r.params["logits"] is True
    rs = lossctl.evaluate(y, p, ["huber", "quantile", "mse"], delta=2, tau=0.9)
    assert [r.spec for r in rs] == ["huber:delta=2", "quantile:tau=0.9", "mse"]
    assert lossctl.per_row(y, p, "huber", delta=0.1)[0][0] == lossctl.per_row(y, p, "huber:delta=0.1")[0][0]
    with pytest.raises(UsageError, match="parameter 'delta' given twice"):
        lossctl.evaluate(y, p, "huber:delta=2", delta=3)
    with pytest.raises(UsageError, match=r"The 'tau' parameter of quantile must be in \(0, 1\)"):
        lossctl.evaluate(y, p, "quantile", tau=1.5)
    with pytest.raises(UsageError, match="unknown keyword 'tau'.*mse"):
        lossctl.evaluate(y, p, "mse", tau=0.9)


def test_roles_by_keyword_and_the_mined_variant():
    yb, e = D["yb"], D["a"]
    assert lossctl.evaluate(target=D["y"], pred=D["p"], loss="mse").value == lossctl.evaluate(D["y"], D["p"], "mse").value
    mined = lossctl.evaluate(yb, embedding=e, loss="triplet_mined:margin=0.3")
    for spec, kw in [("triplet:margin=0.3", {}), ("triplet:mining=hard,margin=0.3", {}), ("triplet", {"margin": 0.3})]:
        r = lossctl.evaluate(yb, embedding=e, loss=spec, **kw)
        assert r.loss == "triplet_mined" and r.value == mined.value
    assert lossctl.evaluate(yb, embedding=e, loss="triplet", mining="all").spec == "triplet_mined:mining=all"


def test_typos_in_role_names_are_errors_not_ignored():
    with pytest.raises(UsageError, match="unknown keyword 'groups'.*inputs: group, pred, target"):
        lossctl.evaluate(D["yb"], D["pb"], "dice", groups=D["grp"])
    with pytest.raises(UsageError, match="unknown keyword 'anchr'"):
        lossctl.evaluate(anchr=D["a"], positive=D["pos"], negative=D["neg"], loss="triplet")
    with pytest.raises(UsageError, match=r"y \(target\) is not an input of triplet"):
        lossctl.evaluate(D["yb"], anchor=D["a"], positive=D["pos"], negative=D["neg"], loss="triplet")
    with pytest.raises(UsageError, match="'target' given twice"):
        lossctl.evaluate(D["y"], target=D["y"], pred=D["p"])


def test_missing_roles_name_what_to_pass():
    with pytest.raises(UsageError, match=r"mse needs the input pred \(pass yhat or pred=\)"):
        lossctl.evaluate(D["y"], loss="mse")
    with pytest.raises(UsageError, match=r"triplet needs the input negative \(pass negative=\)"):
        lossctl.evaluate(anchor=D["a"], positive=D["pos"], loss="triplet")
    with pytest.raises(UsageError, match="triplet needs the inputs anchor, positive, negative"):
        lossctl.evaluate(D["a"], D["pos"], "triplet")
    with pytest.raises(UsageError, match="needs the inputs target, pred"):
        lossctl.evaluate(loss="mse")


# ---------------------------------------------------------------- errors


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert isinstance(e.value, LossctlError) and isinstance(e.value, ValueError)
    return msg


@pytest.mark.parametrize("kw, match", [
    (dict(y=[1.0, np.nan], yhat=[1.0, 2.0]), r"column 'target', row 2: missing or infinite value \(got nan\)"),
    (dict(y=[1.0, 2.0], yhat=[1.0, np.inf]), r"column 'pred', row 2: missing or infinite value \(got inf\)"),
    (dict(y=pd.Series([1.0, None]), yhat=[1.0, 2.0]), r"column 'target', row 2: missing"),
    (dict(y=pd.Series([1.0, pd.NA], dtype="Float64"), yhat=[1.0, 2.0]), r"column 'target', row 2: missing"),
    (dict(y=pd.Series([True, pd.NA], dtype="boolean"), yhat=[0.2, 0.3]), r"column 'target', row 2: missing"),
    (dict(y=np.array([1, None], dtype=object), yhat=[1.0, 2.0]), r"column 'target', row 2: missing"),
    (dict(y=["1", "x"], yhat=[1.0, 2.0]), r"column 'target', row 2: not a number \(got 'x'\)"),
    (dict(y=np.array([1 + 1j, 2]), yhat=[1.0, 2.0]), r"column 'target': complex"),
    (dict(y=[], yhat=[]), r"no rows to evaluate"),
    (dict(y=[1.0, 2.0, 3.0], yhat=[1.0, 2.0]), r"column 'pred': has 2 rows but 'target' has 3"),
    (dict(y=np.zeros((2, 2, 2)), yhat=np.zeros((2, 2, 2))),
     r"column 'target': expected a 1-D or 2-D array, got shape \(2, 2, 2\)"),
    (dict(y=1.0, yhat=2.0), r"column 'target': expected a 1-D or 2-D array, got shape \(\)"),
    (dict(y=np.zeros((4, 3)), yhat=np.zeros(4)), r"3 columns.*1"),
])
def test_bad_inputs_are_one_line_input_errors(kw, match):
    with pytest.raises(InputError, match=match) as e:
        lossctl.evaluate(kw["y"], kw["yhat"], "mse")
    _one_line(e)


@pytest.mark.parametrize("weight, match", [
    (-np.ones(N), r"column 'weight', row 1: negative weight \(got -1.0\)"),
    (np.zeros(N), r"column 'weight': every weight is 0"),
    (np.ones(3), r"column 'weight': has 3 rows but the inputs have 23"),
    (np.ones((N, 2)), r"column 'weight': expected one weight per row"),
    (np.r_[np.nan, np.ones(N - 1)], r"column 'weight', row 1: missing or infinite value"),
])
def test_bad_weights_are_input_errors(weight, match):
    for spec in ("mse", "wasserstein"):
        with pytest.raises(InputError, match=match) as e:
            lossctl.evaluate(D["y"], D["p"], spec, weight=weight)
        _one_line(e)


@pytest.mark.parametrize("kw, match", [
    (dict(loss="msee"), r"unknown loss 'msee'. Did you mean mse"),
    (dict(loss="huber:delt=2"), r"unknown parameter 'delt' for loss huber. Did you mean 'delta'"),
    (dict(loss="huber:delta=-2"), r"'delta' parameter of huber must be in \(0, inf\)"),
    (dict(loss=3), r"loss must be a SPEC string"),  # loss=None is the task's standard set
    (dict(loss=["mse", 3]), r"loss must be a SPEC string"),
    (dict(reduction="none"), r"lossctl.per_row"),
    (dict(reduction="avg"), r"reduction='mean' or 'sum'"),
    (dict(ci=1.5), r"ci must be a level in \(0, 1\)"),
    (dict(ci=0.9, bootstrap=0), r"bootstrap must be .* ≥ 1"),
    (dict(batch_rows=0), r"batch_rows must be a whole number ≥ 1"),
    (dict(batch_rows=-1), r"batch_rows must be a whole number ≥ 1"),
    (dict(batch_rows=2.5), r"batch_rows must be a whole number ≥ 1"),
    (dict(task="foo"), r"unknown task 'foo'"),
    (dict(foo=np.ones(N)), r"unknown keyword 'foo'"),
])
def test_bad_options_are_one_line_usage_errors(kw, match):
    with pytest.raises(UsageError, match=match) as e:
        lossctl.evaluate(D["y"], D["p"], **kw)
    _one_line(e)


def test_domain_errors_from_every_family_name_role_and_row():
    yb, pb = D["yb"], D["pb"]
    cases = [
        (lambda: lossctl.evaluate(yb + 1, pb, "bce"), r"column 'target', row \d+: bce needs labels"),
        (lambda: lossctl.evaluate(yb, pb + 1, "bce"), r"column 'pred', row 1: .*\[0, 1\]"),
        (lambda: lossctl.evaluate(np.r_[D["yc"][:-1], C], D["pc"], "cross_entropy"), r"column 'target', row 23"),
        (lambda: lossctl.evaluate(D["yc"], D["pc"] * 1.1, "cross_entropy"), r"column 'pred', row 1: .*sum to 1"),
        (lambda: lossctl.evaluate(yb + 1, x1=D["a"], x2=D["pos"], loss="contrastive"), r"column 'target', row \d+"),
        (lambda: lossctl.evaluate(np.zeros(N), embedding=D["a"], loss="triplet_mined"), r"column 'target'.*same class"),
        (lambda: lossctl.evaluate(np.array([*"ab" * 11, None], dtype=object), embedding=D["a"], loss="triplet_mined"),
         r"column 'target', row 23: missing"),
        (lambda: lossctl.evaluate(yb, pb, "dice", group=np.repeat(["a", "b"], 5)), r"column 'group': has 10 rows"),
        (lambda: lossctl.evaluate(yb, pb, "dice", group=np.zeros((N, 2))), r"column 'group': expected one label"),
        (lambda: lossctl.evaluate(D["P"] * 2, D["Q"], "kl"), r"column 'target\[\d\]', row \d+"),
        (lambda: lossctl.evaluate(anchor=D["a"], positive=D["pos"][:, :2], negative=D["neg"], loss="triplet"),
         r"column 'positive'.*same width"),
        (lambda: lossctl.evaluate(D["yc"], D["pc"], "cross_entropy:weight=[1,2,3]"), r"3 numbers.*4 columns"),
    ]
    for call, match in cases:
        with pytest.raises(LossctlError, match=match) as e:
            call()
        _one_line(e)


def test_non_finite_results_are_values_not_errors():
    P, Q = D["P"].copy(), D["Q"].copy()
    Q[0] = [0.0, 0.5, 0.25, 0.25]
    P[0] = [0.25, 0.25, 0.25, 0.25]
    r = lossctl.evaluate(P, Q, "kl", grad=True)
    assert r.value == math.inf
    doc = json.loads(json.dumps(r.to_json(), allow_nan=False))
    assert doc["value"] is None and doc["nonfinite"] == "inf"


# ---------------------------------------------------------------- per_row


@pytest.mark.parametrize("spec", [s for s in CASES if lossctl.get_loss(s.partition(":")[0]).row_mean])
def test_per_row_mean_is_the_value(spec):
    args = dict(CASES[spec])
    y, p = args.pop("y", None), args.pop("yhat", None)
    loss_rows, grads = lossctl.per_row(y, p, spec, **args)
    assert loss_rows.shape == (N,)
    assert grads and all(g.shape[0] == N for g in grads.values())
    want = lossctl.evaluate(y, p, spec, **args).value
    assert loss_rows.mean() == pytest.approx(want, rel=1e-12)  # unweighted (class weights sum to N when balanced)


@pytest.mark.parametrize("spec", ["rmse", "dice", "generalized_dice", "tversky", "dice_bce", "wasserstein",
                                  "triplet_mined"])
def test_per_row_refuses_losses_that_are_not_row_means(spec):
    args = dict(CASES[spec] if spec in CASES else CASES[next(s for s in CASES if s.startswith(spec))])
    with pytest.raises(UsageError, match="not a mean over rows") as e:
        lossctl.per_row(args.pop("y", None), args.pop("yhat", None), spec, **args)
    _one_line(e)


def test_per_row_checks_its_inputs():
    with pytest.raises(InputError, match="column 'pred': has 1 rows but 'target' has 2"):
        lossctl.per_row([1.0, 2.0], [1.0], "mse")
    with pytest.raises(InputError, match="no rows"):
        lossctl.per_row([], [], "mse")
    with pytest.raises(UsageError, match="needs the inputs target, pred"):
        lossctl.per_row(loss="mse")
    with pytest.raises(UsageError, match="one loss SPEC"):
        lossctl.per_row([1.0], [1.0], ["mse"])
    with pytest.raises(InputError, match=r"column 'target', row 1: .*\(got nan\)"):
        lossctl.per_row([np.nan], [1.0], "mse")


def test_float32_inputs_are_widened_before_the_kernels():
    # a float32 probability of exactly 1 (or 0) is clipped to 1 − eps in float64; clipping in
    # float32 rounds 1 − 2.2e-16 back to 1 and gave +inf (sklearn log_loss gives 24.148)
    sk = pytest.importorskip("sklearn.metrics")
    y = np.array([0.0, 1.0, 0.0])
    p32 = np.array([1.0, 0.0, 0.3], dtype=np.float32)
    want = sk.log_loss(y, p32.astype(np.float64), labels=[0, 1])
    for kw in ({}, {"batch_rows": 2}, {"weight": np.ones(3)}, {"grad": True}):
        assert lossctl.evaluate(y, p32, "bce", **kw).value == pytest.approx(want, rel=1e-15), kw
    rows, _ = lossctl.per_row(y, p32, "bce")
    assert np.isfinite(rows).all() and rows.dtype == np.float64


def test_dir_offers_the_api_and_not_the_packages_imports():
    """Tab completion in a notebook (``dir(lossctl)``) lists the public API and submodules,
    every one of which resolves, and not ``importlib`` or ``Any``."""
    import lossctl

    names = dir(lossctl)
    assert set(lossctl.__all__) <= set(names)
    assert "importlib" not in names and "Any" not in names and "annotations" not in names
    for n in names:
        assert getattr(lossctl, n) is not None, n


def test_several_losses_share_one_pass_and_one_resampling(monkeypatch):
    """evaluate with a list of losses on the same arrays: one plan, one pass, one bootstrap
    draw for all of them; every value, interval and gradient summary is the loss's own, bit
    for bit as evaluated alone (the draw depends on the rows, not on the other losses)."""
    import lossctl
    from lossctl import outcome

    rng = np.random.default_rng(11)
    y = rng.normal(size=20_000)
    p = y + rng.standard_t(3, size=y.size)
    specs = ["mse", "mae", "huber:delta=0.5", "quantile:tau=0.8", "rmse", "log_cosh"]
    drawn = []
    real = outcome.Resampling
    monkeypatch.setattr(outcome, "Resampling", lambda *a, **k: drawn.append(1) or real(*a, **k))
    together = lossctl.evaluate(y, p, specs, ci=0.9, bootstrap=200, seed=5, grad=True, batch_rows=3000)
    assert len(drawn) == 1
    for spec, r in zip(specs, together):
        alone = lossctl.evaluate(y, p, spec, ci=0.9, bootstrap=200, seed=5, grad=True, batch_rows=3000)
        assert (r.spec, r.value, r.ci, r.grad) == (alone.spec, alone.value, alone.ci, alone.grad)
    assert len(drawn) == 1 + len(specs)
    assert together[0].value == pytest.approx(np.mean((p - y) ** 2), rel=1e-13)
