"""Segmentation losses (dice, generalized_dice, dice_bce, tversky) against independent oracles.

Oracles:
 - tests/fixtures/torch_segmentation.json: MONAI 1.3's DiceLoss / GeneralizedDiceLoss /
   TverskyLoss forward code transcribed into torch, values and autograd gradients of N·L
   (tests/fixtures/make_torch_segmentation.py says how they were made);
 - the numpy reference implementations below, written from MONAI's documented code on
   (B, C, S) arrays (B images, C channels, S pixels), independently of lossctl, and
   central finite differences of them for every gradient;
 - hand-derived numbers (worked in the comments), erratum 7 of LOSSES.md.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossctl import registry
from lossctl.api import evaluate  # not lossctl.evaluate: the CLI's import of lossctl/evaluate.py shadows it
from lossctl.engine import Context
from lossctl.errors import InputError, UsageError
from lossctl.losses import segmentation as S

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(os.path.dirname(HERE), "sample_data")
with open(os.path.join(HERE, "fixtures", "torch_segmentation.json")) as f:
    TORCH = json.load(f)
B, H, W = TORCH["shape"]

FUNCS = {
    "dice": (S.dice, S.dice_grad),
    "generalized_dice": (S.generalized_dice, S.generalized_dice_grad),
    "tversky": (S.tversky, S.tversky_grad),
    "dice_bce": (S.dice_bce, S.dice_bce_grad),
}


# ---------------------------------------------------------------- numpy references (MONAI's code)

def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z, axis=1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _prepare(inp, tgt, *, include_background, sigmoid, softmax):
    """MONAI's preamble: activation, to_onehot_y, drop channel 0 unless one channel."""
    n_pred_ch = inp.shape[1]
    if sigmoid:
        inp = _sigmoid(inp)
    if softmax:
        inp = _softmax(inp, 1)
    if n_pred_ch > 1:
        tgt = np.eye(n_pred_ch)[tgt[:, 0].astype(int)].transpose(0, 2, 1)
    if not include_background and n_pred_ch > 1:
        tgt, inp = tgt[:, 1:], inp[:, 1:]
    return inp, tgt


def ref_dice(inp, tgt, *, include_background=True, sigmoid=False, softmax=False, squared_pred=False,
             smooth=1e-6, batch=True, average="macro", weight=None, sw=1.0):
    """MONAI DiceLoss.forward (smooth_nr = smooth_dr = smooth); inp (B, C, S), tgt (B, 1, S)."""
    c = inp.shape[1]
    inp, tgt = _prepare(inp, tgt, include_background=include_background, sigmoid=sigmoid, softmax=softmax)
    axis = (0, 2) if batch else (2,)
    inter = np.sum(sw * tgt * inp, axis=axis)
    ground = np.sum(sw * tgt ** 2 if squared_pred else sw * tgt, axis=axis)
    pred = np.sum(sw * inp ** 2 if squared_pred else sw * inp, axis=axis)
    f = 1.0 - (2.0 * inter + smooth) / (ground + pred + smooth)
    if average == "weighted":
        # lossctl: a weighted mean over classes with a ∝ weight (MONAI multiplies, then means)
        a = np.asarray(weight, float) if weight is not None else ground
        if weight is not None and a.size == c and not include_background and c > 1:
            a = a[1:]
        a = a / a.sum(axis=-1, keepdims=True)
        return float(np.mean(np.sum(a * f, axis=-1)))
    if weight is not None:
        # LOSSES.md: "the macro mean (or the weighted sum with `weight`)": Σ_c w_c D_c (MONAI: / C)
        a = np.asarray(weight, float)
        if a.size == c and not include_background and c > 1:
            a = a[1:]
        return float(np.mean(np.sum(a * f, axis=-1)))
    return float(np.mean(f))


def ref_generalized_dice(inp, tgt, *, include_background=True, sigmoid=False, softmax=False, smooth=1e-6,
                         batch=True, sw=1.0):
    """MONAI GeneralizedDiceLoss.forward, w_type='square'."""
    inp, tgt = _prepare(inp, tgt, include_background=include_background, sigmoid=sigmoid, softmax=softmax)
    axis = (0, 2) if batch else (2,)
    inter = np.sum(sw * tgt * inp, axis=axis)
    ground = np.sum(sw * tgt, axis=axis)
    denominator = ground + np.sum(sw * inp, axis=axis)
    with np.errstate(divide="ignore"):
        w = 1.0 / (ground * ground)
    infs = np.isinf(w)
    w[infs] = 0.0
    w = w + infs * (np.max(w) if batch else np.max(w, axis=1, keepdims=True))
    numer = 2.0 * np.sum(inter * w, axis=-1) + smooth
    denom = np.sum(denominator * w, axis=-1) + smooth
    return float(np.mean(1.0 - numer / denom))


def ref_tversky(inp, tgt, *, include_background=True, sigmoid=False, softmax=False, alpha=0.5, beta=0.5,
                smooth=1e-6, batch=True, sw=1.0):
    """MONAI TverskyLoss.forward."""
    inp, tgt = _prepare(inp, tgt, include_background=include_background, sigmoid=sigmoid, softmax=softmax)
    axis = (0, 2) if batch else (2,)
    tp = np.sum(sw * inp * tgt, axis=axis)
    fp = alpha * np.sum(sw * inp * (1 - tgt), axis=axis)
    fn = beta * np.sum(sw * (1 - inp) * tgt, axis=axis)
    return float(np.mean(1.0 - (tp + smooth) / (tp + fp + fn + smooth)))


def ref_dice_bce(inp, tgt, *, alpha=0.5, logits=False, pos_weight=1.0, batch=True, sw=None, **dice_kw):
    """α·Dice + (1 − α)·(weighted pixel mean of BCE, or cross-entropy for C channels)."""
    c = inp.shape[1]
    if c == 1:
        y, x = tgt[:, 0], inp[:, 0]
        if logits:
            ce = pos_weight * y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x)
        else:
            ce = -(pos_weight * y * np.log(x) + (1 - y) * np.log(1 - x))
    else:
        p = _softmax(inp, 1) if logits else inp
        oh = np.eye(c)[tgt[:, 0].astype(int)].transpose(0, 2, 1)
        ce = -np.sum(oh * np.log(p), axis=1)
    w = np.ones_like(ce) if sw is None else sw[:, 0]
    kw = dict(dice_kw, sigmoid=logits and c == 1, softmax=logits and c > 1, sw=1.0 if sw is None else sw)
    if batch:
        return alpha * ref_dice(inp, tgt, batch=True, **kw) + (1 - alpha) * float(np.sum(w * ce) / np.sum(w))
    out = []
    for b in range(inp.shape[0]):
        kb = dict(kw, sw=1.0 if sw is None else sw[b:b + 1])
        out.append(alpha * ref_dice(inp[b:b + 1], tgt[b:b + 1], batch=True, **kb)
                   + (1 - alpha) * float(np.sum(w[b] * ce[b]) / np.sum(w[b])))
    return float(np.mean(out))


REFS = {"dice": ref_dice, "generalized_dice": ref_generalized_dice, "tversky": ref_tversky, "dice_bce": ref_dice_bce}


def to_bcs(rows, b):
    """Pixel rows (N,) or (N, C), image-major → (B, C, S)."""
    a = np.asarray(rows, float)
    a = a[:, None] if a.ndim == 1 else a
    return a.reshape(b, -1, a.shape[1]).transpose(0, 2, 1)


def reference(loss, target, pred, *, group=False, sample_weight=None, n_images=B, **params):
    """The numpy reference on lossctl's rows and parameters."""
    inp, tgt = to_bcs(pred, n_images), to_bcs(target, n_images)
    logits = params.pop("logits", False)
    multi = inp.shape[1] > 1
    kw = {"batch": not group}
    sw = None if sample_weight is None else to_bcs(sample_weight, n_images)
    if loss == "dice_bce":
        kw.update(logits=logits, sw=sw)
    else:
        kw.update(sigmoid=logits and not multi, softmax=logits and multi, sw=1.0 if sw is None else sw)
    for k, v in params.items():
        kw[{"eps": "smooth", "squared": "squared_pred"}.get(k, k)] = v
    return REFS[loss](inp, tgt, **kw)


def fd_grad(loss, target, pred, h=1e-6, **kw):
    """Central differences of N · reference, element by element."""
    pred = np.array(pred, float)
    n = pred.shape[0]
    g = np.zeros_like(pred)
    flat, gf = pred.reshape(-1), g.reshape(-1)
    for j in range(flat.size):
        old = flat[j]
        flat[j] = old + h
        up = reference(loss, target, pred, **dict(kw))
        flat[j] = old - h
        dn = reference(loss, target, pred, **dict(kw))
        flat[j] = old
        gf[j] = n * (up - dn) / (2 * h)
    return g


def case_inputs(case):
    d = TORCH["data"][case["data"]]
    params = dict(case["params"])
    pred = np.array(d["logit"] if params.get("logits") else d["prob"])
    kw = dict(params)
    if case["group"]:
        kw["group"] = np.array(d["group"])
    if case["sample_weight"]:
        kw["sample_weight"] = np.array(d["sample_weight"])
    return np.array(d["target"]), pred, kw


def spec_of(loss, params):
    if not params:
        return loss
    return loss + ":" + ",".join(f"{k}={registry.format_value(tuple(v) if isinstance(v, list) else v)}"
                                 for k, v in params.items())


def case_id(c):
    return f"{spec_of(c['loss'], c['params'])}@{c['data']}" + ("+group" if c["group"] else "") + (
        "+w" if c["sample_weight"] else "")


# ---------------------------------------------------------------- against torch (MONAI's code)

@pytest.mark.parametrize("case", TORCH["cases"], ids=case_id)
def test_value_and_gradient_match_torch(case):
    target, pred, kw = case_inputs(case)
    fn, gfn = FUNCS[case["loss"]]
    g_torch = np.array(case["grad"])
    assert fn(target, pred, **kw) == pytest.approx(case["value"], rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(gfn(target, pred, **kw), g_torch, rtol=1e-10, atol=1e-12)
    # the streaming engine, in batches of 7 rows, gives the same value and gradient summary
    roles = {"group": kw["group"]} if "group" in kw else {}
    r = evaluate(target, pred, spec_of(case["loss"], case["params"]), grad=True, batch_rows=7,
                         weight=kw.get("sample_weight"), **roles)
    assert r.value == pytest.approx(case["value"], rel=1e-12, abs=1e-14)
    assert r.grad["mean"] == pytest.approx(g_torch.mean(), rel=1e-9, abs=1e-12)
    assert r.grad["l2"] == pytest.approx(np.linalg.norm(g_torch), rel=1e-10)
    assert r.grad["min"] == pytest.approx(g_torch.min(), rel=1e-10, abs=1e-12)
    assert r.grad["max"] == pytest.approx(g_torch.max(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("case", TORCH["cases"], ids=case_id)
def test_numpy_reference_matches_torch(case):
    # two independent transcriptions of MONAI's code agree: neither is lossctl
    target, pred, kw = case_inputs(case)
    grp = "group" in kw
    kw.pop("group", None)
    assert reference(case["loss"], target, pred, group=grp, **kw) == pytest.approx(case["value"], rel=1e-12)


# ---------------------------------------------------------------- finite differences

FD_CASES = [
    ("dice", "binary", {}, False),
    ("dice", "binary", {"squared": True, "logits": True}, True),
    ("dice", "multi", {"logits": True, "include_background": False}, False),
    ("dice", "multi", {"squared": True, "average": "weighted"}, True),
    ("dice", "multi", {"average": "weighted", "weight": [3.0, 1.0, 2.0]}, False),
    ("generalized_dice", "multi_absent", {}, False),
    ("generalized_dice", "multi", {"logits": True}, True),
    ("tversky", "multi", {"alpha": 0.3, "beta": 0.7}, True),
    ("tversky", "binary", {"alpha": 0.8, "beta": 0.2, "logits": True}, False),
    ("dice_bce", "binary", {"alpha": 0.6, "logits": True, "pos_weight": 3.0}, False),
    ("dice_bce", "multi", {"alpha": 0.4}, True),
    ("dice_bce", "multi", {"logits": True}, False),
]


@pytest.mark.parametrize("loss,data,params,group", FD_CASES, ids=lambda x: str(x))
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weighted"])
def test_gradient_matches_finite_differences_of_reference(loss, data, params, group, weighted):
    d = TORCH["data"][data]
    target = np.array(d["target"])
    pred = np.array(d["logit"] if params.get("logits") else d["prob"])
    sw = np.array(d["sample_weight"]) if weighted else None
    kw = dict(params)
    g = FUNCS[loss][1](target, pred, group=np.array(d["group"]) if group else None, sample_weight=sw, **kw)
    fd = fd_grad(loss, target, pred, group=group, sample_weight=sw, **kw)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6 * np.max(np.abs(fd)))


# ---------------------------------------------------------------- hand-derived numbers

def test_dice_hand_values_and_erratum_7():
    # g = [1, 1, 0, 0], p = [1, .5, .5, 0]: I = Σpg = 1.5, P = 2, G = 2.
    g = np.array([1.0, 1.0, 0.0, 0.0])
    p = np.array([1.0, 0.5, 0.5, 0.0])
    # ε = 0: D = 1 − 3/4 = 0.25; N·∂D/∂pⱼ = −4[2gⱼ·4 − 3]/16 = −1.25 (g = 1), 0.75 (g = 0)
    assert S.dice(g, p, eps=0.0) == pytest.approx(0.25, rel=1e-15)
    np.testing.assert_allclose(S.dice_grad(g, p, eps=0.0), [-1.25, -1.25, 0.75, 0.75], rtol=1e-15)
    # ε = 1: D = 1 − (3 + 1)/(4 + 1) = 0.2; erratum 7: −4[2gⱼ(4 + 1) − (3 + 1)]/25 = −0.96, 0.64
    assert S.dice(g, p, eps=1.0) == pytest.approx(0.2, rel=1e-15)
    got = S.dice_grad(g, p, eps=1.0)
    np.testing.assert_allclose(got, [-0.96, -0.96, 0.64, 0.64], rtol=1e-14)
    # the seed's form drops ε: −4[2gⱼ·4 − 3]/16, the ε = 0 numbers, which are wrong at ε = 1
    assert not np.allclose(got, [-1.25, -1.25, 0.75, 0.75], rtol=1e-3)
    # squared (V-Net): Σp² = 1.5, Σg² = 2: D = 1 − 3/3.5 = 1/7; N·∂D/∂pⱼ = −4[2gⱼ·3.5 − 3·2pⱼ]/3.5²
    assert S.dice(g, p, eps=0.0, squared=True) == pytest.approx(1 / 7, rel=1e-14)
    np.testing.assert_allclose(S.dice_grad(g, p, eps=0.0, squared=True),
                               -4 * (2 * g * 3.5 - 3 * 2 * p) / 3.5 ** 2, rtol=1e-14)


def test_tversky_special_cases():
    rng = np.random.default_rng(1)
    g = (rng.uniform(size=200) < 0.2).astype(float)
    p = rng.uniform(size=200)
    # α = β = ½ is Dice: (I + ε)/(I + ½(P − I) + ½(G − I) + ε) = (2I + 2ε)/(P + G + 2ε)
    assert S.tversky(g, p, eps=0.0) == pytest.approx(S.dice(g, p, eps=0.0), rel=1e-13)
    # with ε: (I + ε)/(I + ½FP + ½FN + ε) = (2I + 2ε)/(P + G + 2ε), Dice with 2ε
    assert S.tversky(g, p, eps=0.5) == pytest.approx(S.dice(g, p, eps=1.0), rel=1e-13)
    np.testing.assert_allclose(S.tversky_grad(g, p, eps=0.5), S.dice_grad(g, p, eps=1.0), rtol=1e-12)
    # α = β = 1 is Jaccard: 1 − I/(P + G − I)
    i, ps, gs = np.sum(p * g), p.sum(), g.sum()
    assert S.tversky(g, p, alpha=1.0, beta=1.0, eps=0.0) == pytest.approx(1 - i / (ps + gs - i), rel=1e-13)


def test_generalized_dice_absent_class_takes_largest_finite_weight():
    # classes 0, 1 present (G = 3, 1: weights 1/9, 1), class 2 absent → weight max(1/9, 1) = 1
    y = np.array([0, 0, 0, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.6, 0.2, 0.2], [0.5, 0.3, 0.2], [0.2, 0.5, 0.3]])
    w = np.array([1 / 9, 1.0, 1.0])
    inter = np.array([0.7 + 0.6 + 0.5, 0.5, 0.0])
    den = np.array([3 + p[:, 0].sum(), 1 + p[:, 1].sum(), 0 + p[:, 2].sum()])
    want = 1 - (2 * np.dot(w, inter) + 1e-6) / (np.dot(w, den) + 1e-6)
    assert S.generalized_dice(y, p) == pytest.approx(want, rel=1e-14)
    # every class absent from the target cannot happen with a one-hot mask; a binary empty mask:
    # w = inf → 0 (no finite weight), so numerator and denominator are ε: loss 0, as MONAI
    assert S.generalized_dice(np.zeros(5), np.full(5, 0.3)) == 0.0
    np.testing.assert_array_equal(S.generalized_dice_grad(np.zeros(5), np.full(5, 0.3)), 0.0)


def test_generalized_dice_single_class_with_eps_zero_is_dice():
    rng = np.random.default_rng(2)
    g = (rng.uniform(size=50) < 0.3).astype(float)
    p = rng.uniform(size=50)
    assert S.generalized_dice(g, p, eps=0.0) == pytest.approx(S.dice(g, p, eps=0.0), rel=1e-13)


def test_dice_bce_multiclass_uses_cross_entropy():
    d = TORCH["data"]["multi"]
    y, p = np.array(d["target"]), np.array(d["prob"])
    ce = -np.mean(np.log(p[np.arange(y.size), y.astype(int)]))
    r = evaluate(y, p, "dice_bce")
    assert r.extra["ce"] == pytest.approx(ce, rel=1e-13)
    assert r.value == pytest.approx(0.5 * S.dice(y, p) + 0.5 * ce, rel=1e-14)


def test_dice_bce_parts():
    d = TORCH["data"]["binary"]
    y, p = np.array(d["target"]), np.array(d["prob"])
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    r = evaluate(y, p, "dice_bce:alpha=0.25")
    assert r.extra["bce"] == pytest.approx(bce, rel=1e-13)
    assert r.extra["dice"] == pytest.approx(S.dice(y, p), rel=1e-14)
    assert r.value == pytest.approx(0.25 * S.dice(y, p) + 0.75 * bce, rel=1e-14)
    assert S.dice_bce(y, p, alpha=1.0) == pytest.approx(S.dice(y, p), rel=1e-15)


def test_saturated_logits_stay_finite():
    y = np.array([1.0, 0.0, 1.0, 0.0])
    z = np.array([1000.0, -1000.0, -1000.0, 1000.0])
    for loss in ("dice", "dice_bce", "tversky", "generalized_dice"):
        r = evaluate(y, z, f"{loss}:logits=true", grad=True)
        assert math.isfinite(r.value) and all(math.isfinite(v) for v in r.grad.values())
    # two pixels wrong by a logit of 1000: BCE = (1000 + 1000)/4
    assert evaluate(y, z, "dice_bce:logits=true").extra["bce"] == pytest.approx(500.0)
    g = S.dice_bce_grad(y, z, logits=True)
    np.testing.assert_allclose(g, [0, 0, -0.5, 0.5], atol=1e-12)  # (1 − α)(σ − y) on the BCE side


# ---------------------------------------------------------------- parameters

def test_include_background_false():
    d = TORCH["data"]["multi"]
    y, p = np.array(d["target"]), np.array(d["prob"])
    # dropping class 0 = the mean of the per-class Dice of classes 1..C−1
    per = evaluate(y, p, "dice").extra["per_class"]
    assert S.dice(y, p, include_background=False) == pytest.approx(np.mean(per[1:]), rel=1e-14)
    # the gradient w.r.t. class-0 probabilities is then 0 (not with softmax logits: p₀ feeds the others)
    assert np.all(S.dice_grad(y, p, include_background=False)[:, 0] == 0)


def test_include_background_is_ignored_for_one_channel():
    d = TORCH["data"]["binary"]
    y, p = np.array(d["target"]), np.array(d["prob"])
    r0 = evaluate(y, p, "dice")
    r1 = evaluate(y, p, "dice:include_background=false")
    assert r1.value == r0.value
    assert any("ignored" in n for n in r1.notes)


def test_weighted_average_normalises_weights_and_support_default():
    d = TORCH["data"]["multi"]
    y, p = np.array(d["target"]), np.array(d["prob"])
    per = np.array(evaluate(y, p, "dice").extra["per_class"])
    w = np.array([1.0, 2.0, 5.0])
    assert S.dice(y, p, average="weighted", weight=w) == pytest.approx(np.dot(w, per) / w.sum(), rel=1e-14)
    assert S.dice(y, p, average="weighted", weight=10 * w) == pytest.approx(np.dot(w, per) / w.sum(), rel=1e-14)
    support = np.bincount(y.astype(int), minlength=3)
    assert S.dice(y, p, average="weighted") == pytest.approx(np.dot(support, per) / support.sum(), rel=1e-14)
    # C − 1 weights when the background is left out
    assert S.dice(y, p, average="weighted", weight=[2.0, 5.0], include_background=False) == pytest.approx(
        (2 * per[1] + 5 * per[2]) / 7, rel=1e-14)


@pytest.mark.parametrize("spec,msg", [
    ("dice:average=weighted,weight=[1,2]", "one number per class"),
    ("dice:average=weighted,weight=[0,0,0]", "all zero"),
    ("dice:weight=[0,0,0]", "all zero"),
    ("dice:weight=[1,2]", "one number per class"),
    ("dice_bce:pos_weight=2", "binary"),
])
def test_parameter_errors(spec, msg):
    d = TORCH["data"]["multi"]
    with pytest.raises(UsageError, match=msg):
        evaluate(np.array(d["target"]), np.array(d["prob"]), spec)


# ---------------------------------------------------------------- groups and batches

def _image_data(seed=5, images=6, size=40, c=1):
    rng = np.random.default_rng(seed)
    n = images * size
    gid = np.repeat([f"case{k}" for k in range(images)], size)
    if c == 1:
        y = (rng.uniform(size=n) < 0.1).astype(float)
        p = np.clip(0.7 * y + rng.uniform(0, 0.4, n), 0, 1)
    else:
        y = rng.choice(c, n, p=[0.85] + [0.15 / (c - 1)] * (c - 1)).astype(float)
        p = _softmax(rng.normal(0, 1, (n, c)) + 2 * np.eye(c)[y.astype(int)], axis=1)
    return y, p, gid


@pytest.mark.parametrize("spec", ["dice", "dice:squared=true", "generalized_dice", "tversky:alpha=0.3,beta=0.7",
                                  "dice_bce", "dice:average=weighted"])
@pytest.mark.parametrize("c", [1, 4])
@pytest.mark.parametrize("grouped", [False, True])
def test_batch_size_invariance(spec, c, grouped):
    y, p, gid = _image_data(c=c)
    w = np.random.default_rng(9).uniform(0.5, 2, y.size)
    kw = {"group": gid} if grouped else {}
    runs = [evaluate(y, p, spec, grad=True, weight=w, batch_rows=br, **kw) for br in (1, 7, None)]
    for r in runs[1:]:
        assert r.value == pytest.approx(runs[0].value, rel=1e-13, abs=1e-15)
        for k in ("mean", "l2", "min", "max", "abs_mean", "std"):
            assert r.grad[k] == pytest.approx(runs[0].grad[k], rel=1e-11, abs=1e-13)
        assert r.grad["zero_frac"] == runs[0].grad["zero_frac"]


def test_grouped_value_is_mean_of_per_image_values_even_with_unequal_images():
    rng = np.random.default_rng(3)
    sizes = [10, 50, 25]
    gid = np.concatenate([np.full(s, k) for k, s in enumerate(sizes)])
    y = (rng.uniform(size=gid.size) < 0.3).astype(float)
    p = rng.uniform(size=gid.size)
    order = rng.permutation(gid.size)  # images interleaved: rows need not be contiguous
    y, p, gid = y[order], p[order], gid[order]
    for spec in ("dice", "generalized_dice", "tversky", "dice_bce"):
        fn = FUNCS[spec.split(":")[0]][0]
        each = [fn(y[gid == k], p[gid == k]) for k in range(3)]
        r = evaluate(y, p, spec, group=gid, batch_rows=11)
        assert r.value == pytest.approx(np.mean(each), rel=1e-13)
        assert r.extra["images"] == 3
        assert [e["image"] for e in r.extra["per_image"]] == list(dict.fromkeys(gid.tolist()))
        got = {e["image"]: e["value"] for e in r.extra["per_image"]}
        for k in range(3):
            assert got[k] == pytest.approx(each[k], rel=1e-13)


def test_grouped_gradient_is_per_image_gradient_scaled():
    # L = mean over G images: ∂(N·L)/∂p = (N/G)·∂L_img/∂p = (N/(G·n_img))·(n_img ∂L_img/∂p)
    rng = np.random.default_rng(4)
    gid = np.repeat([0, 1], [30, 10])
    y = (rng.uniform(size=40) < 0.3).astype(float)
    p = rng.uniform(size=40)
    g = S.dice_grad(y, p, group=gid)
    for k, n_img in ((0, 30), (1, 10)):
        m = gid == k
        np.testing.assert_allclose(g[m], 40 / (2 * n_img) * S.dice_grad(y[m], p[m]), rtol=1e-13)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    c=st.sampled_from([1, 2, 4]),
    grouped=st.booleans(),
    squared=st.booleans(),
    logits=st.booleans(),
    include_background=st.booleans(),
    eps=st.sampled_from([0.0, 1e-6, 1e-5, 1.0]),
)
def test_dice_matches_reference_on_random_inputs(seed, c, grouped, squared, logits, include_background, eps):
    rng = np.random.default_rng(seed)
    n_img, size = 3, 12
    n = n_img * size
    if c == 1:
        y = (rng.uniform(size=n) < 0.3).astype(float)
        y[0] = 1.0  # a foreground pixel in the first image keeps ε = 0 finite
        z = rng.normal(0, 2, n)
        p = z if logits else _sigmoid(z)
    else:
        y = rng.integers(0, c, n).astype(float)
        y[:c] = np.arange(c)
        z = rng.normal(0, 2, (n, c))
        p = z if logits else _softmax(z, 1)
    gid = np.repeat(np.arange(n_img), size)
    params = dict(eps=eps, squared=squared, logits=logits, include_background=include_background)
    got = S.dice(y, p, group=gid if grouped else None, **params)
    want = reference("dice", y, p, group=grouped, n_images=n_img, **params)
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    for loss in ("generalized_dice", "tversky"):
        kw = dict(logits=logits, include_background=include_background, eps=max(eps, 1e-6))
        assert FUNCS[loss][0](y, p, group=gid if grouped else None, **kw) == pytest.approx(
            reference(loss, y, p, group=grouped, n_images=n_img, **kw), rel=1e-12, abs=1e-15)


def test_merge_of_shards_equals_one_pass():
    for c, grouped in ((1, False), (4, False), (1, True), (4, True)):
        y, p, gid = _image_data(c=c, seed=11)
        cols = {"target": y, "pred": p}
        if grouped:
            cols["group"] = gid
        from lossctl.engine import Batch

        def state():
            spec = registry.get("dice")
            return spec.factory(spec.defaults(), Context(task="segmentation"))

        whole, a, b = state(), state(), state()
        whole.update(Batch(dict(cols), y.size))
        cut = 97
        a.update(Batch({k: v[:cut] for k, v in cols.items()}, cut))
        b.update(Batch({k: v[cut:] for k, v in cols.items()}, y.size - cut, offset=cut))
        a.merge(b)
        assert a.result()["value"] == pytest.approx(whole.result()["value"], rel=1e-14)


def test_bootstrap_ci_resamples_rows_or_images():
    y, p, gid = _image_data(c=1, images=12)
    r = evaluate(y, p, "dice", ci=0.9, bootstrap=300, seed=1)
    assert r.ci_method == "percentile bootstrap over rows"
    assert r.ci[0] < r.value < r.ci[1]
    rg = evaluate(y, p, "dice", ci=0.9, bootstrap=300, seed=1, group=gid)
    assert "images" in rg.ci_method
    vals = [e["value"] for e in rg.extra["per_image"]]
    assert min(vals) <= rg.ci[0] < rg.value < rg.ci[1] <= max(vals)


# ---------------------------------------------------------------- bad inputs

def test_mask_value_3_is_an_input_error_naming_the_row():
    y = np.array([0, 1, 0, 3, 1, 3.0])
    p = np.full(6, 0.5)
    with pytest.raises(InputError, match=r"row 4.*0 or 1.*got 3\.0.*2 rows"):
        evaluate(y, p, "dice")
    # multi-class: classes 0..C−1
    with pytest.raises(InputError, match=r"row 2.*0\.\.2"):
        evaluate(np.array([0, 3.0]), np.full((2, 3), 1 / 3), "tversky")
    with pytest.raises(InputError, match=r"row 1.*class indices"):
        evaluate(np.array([0.5, 1.0]), np.full((2, 3), 1 / 3), "dice")


@pytest.mark.parametrize("loss", ["dice", "generalized_dice", "dice_bce", "tversky"])
def test_probability_outside_unit_interval_is_an_input_error(loss):
    with pytest.raises(InputError, match=r"row 2.*\[0, 1\].*got 1\.7"):
        evaluate(np.array([0.0, 1.0, 0.0]), np.array([0.2, 1.7, 0.1]), loss)
    # the same numbers are fine as logits
    assert math.isfinite(evaluate(np.array([0.0, 1.0, 0.0]), np.array([0.2, 1.7, 0.1]),
                                          f"{loss}:logits=true").value)


def test_class_probabilities_must_sum_to_one_and_one_hot_masks_checked():
    p = np.array([[0.5, 0.5], [0.7, 0.4]])
    with pytest.raises(InputError, match=r"row 2.*sum to 1.*got 1\.1"):
        evaluate(np.array([0.0, 1.0]), p, "dice")
    ok = np.array([[0.5, 0.5], [0.6, 0.4]])
    with pytest.raises(InputError, match=r"row 2.*exactly one 1"):
        evaluate(np.array([[1.0, 0.0], [1.0, 1.0]]), ok, "dice")
    with pytest.raises(InputError, match=r"3 one-hot columns.*2"):
        evaluate(np.eye(3)[[0, 1]], ok, "dice")
    # one-hot columns and class indices give the same loss
    assert evaluate(np.eye(2)[[0, 1]], ok, "dice").value == evaluate(np.array([0, 1.0]), ok, "dice").value


def test_null_image_id_from_the_api_is_an_input_error():
    with pytest.raises(InputError, match=r"row 2.*missing image id"):
        evaluate(np.array([0.0, 1.0]), np.array([0.2, 0.8]), "dice", group=np.array(["a", None], dtype=object))


# ---------------------------------------------------------------- command line

def test_cli_sample_files_with_no_options(cli):
    for name, width in (("segmentation.parquet", 1), ("segmentation.csv", 1), ("segmentation_multiclass.parquet", 4)):
        r = cli("eval", os.path.join(SAMPLES, name), "-f", "json")
        assert r.code == 0, r.err
        doc = r.json()
        assert doc["task"] == "segmentation"
        assert [x["loss"] for x in doc["results"]] == ["dice", "generalized_dice", "dice_bce"]
        assert doc["bindings"]["target"] == "mask" and doc["bindings"]["group"] == "image_id"
        assert (1 if isinstance(doc["bindings"]["pred"], str) else len(doc["bindings"]["pred"])) == width
        for res in doc["results"]:
            assert res["images"] == 8 and 0 < res["value"] < 1


def test_cli_value_equals_library_on_sample(cli):
    import pandas as pd

    df = pd.read_parquet(os.path.join(SAMPLES, "segmentation_multiclass.parquet"))
    p = df[[f"prob_{c}" for c in range(4)]].to_numpy()
    r = cli("eval", os.path.join(SAMPLES, "segmentation_multiclass.parquet"), "-l", "dice:include_background=false",
            "--grad", "-f", "json")
    assert r.code == 0, r.err
    res = r.json()["results"][0]
    assert res["value"] == pytest.approx(S.dice(df["mask"].to_numpy(), p, include_background=False,
                                                group=df["image_id"].to_numpy()), rel=1e-13)
    g = S.dice_grad(df["mask"].to_numpy(), p, include_background=False, group=df["image_id"].to_numpy())
    assert res["grad"]["l2"] == pytest.approx(np.linalg.norm(g), rel=1e-10)


def test_cli_by_image_equals_per_image_values(cli):
    path = os.path.join(SAMPLES, "segmentation.parquet")
    r = cli("eval", path, "-l", "dice", "--by", "image_id", "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    per = {e["image"]: e["value"] for e in doc["results"][0]["per_image"]}
    for g in doc["groups"]:
        assert g["results"][0]["value"] == pytest.approx(per[g["value"]], rel=1e-13)


def test_cli_mask_value_3(cli, write_csv):
    path = write_csv("m.csv", "mask,prob\n0,0.1\n1,0.9\n3,0.5\n")
    r = cli("eval", path, "-l", "dice")
    assert r.code == 2
    assert "column 'mask'" in r.err and "row 3" in r.err and "got 3" in r.err
    assert "Traceback" not in r.err


def test_cli_probability_1_7(cli, write_csv):
    path = write_csv("p.csv", "mask,prob\n0,0.1\n1,1.7\n")
    r = cli("eval", path)
    assert r.code == 2
    assert "column 'prob'" in r.err and "row 2" in r.err and "1.7" in r.err


def test_cli_null_image_id(cli, tmp_path):
    path = tmp_path / "seg.parquet"
    pq.write_table(pa.table({"image_id": ["a", "a", None, "b"], "mask": [0, 1, 1, 0], "prob": [0.1, 0.8, 0.7, 0.2]}), path)
    r = cli("eval", str(path))
    assert r.code == 2
    assert "image_id" in r.err and "row 3" in r.err and "missing" in r.err


def test_cli_mask_column_means_segmentation(cli, write_csv):
    r = cli("eval", write_csv("s.csv", "mask,prob\n0,0.1\n1,0.8\n"), "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["task"] == "segmentation" and "group" not in r.json()["bindings"]


def test_cli_image_classification_file_is_not_segmentation(cli, write_csv):
    r = cli("eval", write_csv("c.csv", "image_id,y,prob\na,0,0.2\nb,1,0.7\nc,1,0.4\n"), "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["task"] == "binary"


def test_cli_reduction_none_is_refused(cli):
    r = cli("eval", os.path.join(SAMPLES, "segmentation.parquet"), "-l", "dice", "--reduction", "none", "-f", "csv")
    assert r.code == 2
    assert "dice" in r.err


def test_cli_ci_without_group(cli, write_csv):
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=300) < 0.2).astype(int)
    p = np.clip(0.6 * y + rng.uniform(0, 0.4, 300), 0, 1)
    path = write_csv("g.csv", "mask,prob\n" + "".join(f"{a},{float(b)!r}\n" for a, b in zip(y, p)))
    r = cli("eval", path, "-l", "dice", "-l", "tversky", "--ci", "0.9", "--bootstrap", "200", "-f", "json")
    assert r.code == 0, r.err
    for res in r.json()["results"]:
        assert res["ci"][0] < res["value"] < res["ci"][1]
        assert "rows" in res["ci_method"]
        assert "images" not in res


def test_cli_logit_columns_are_read_as_logits(cli, write_csv):
    path = write_csv("l.csv", "mask,logit\n0,-2.0\n1,3.0\n1,-0.5\n")
    r = cli("eval", path, "-l", "dice", "-f", "json")
    assert r.code == 0, r.err
    z = np.array([-2.0, 3.0, -0.5])
    assert r.json()["results"][0]["value"] == pytest.approx(S.dice(np.array([0, 1, 1.0]), z, logits=True), rel=1e-13)


# ---------------------------------------------------------------- registry metadata

@pytest.mark.parametrize("name", ["dice", "generalized_dice", "dice_bce", "tversky"])
def test_registry_entries(name):
    spec = registry.get(name)
    assert spec.task == "segmentation" and not spec.row_mean
    assert [r.name for r in spec.roles] == ["target", "pred", "group"]
    group = spec.roles[2]
    assert group.categorical and not group.required
    conv = spec.properties.conventions
    assert "MONAI" in conv and "O(images × classes)" in conv and "1e-5" in conv and "batch=True" in conv
    assert spec.example.startswith("lossctl eval - ") and "image_id,mask,prob" in spec.example
    assert "eps" in {p.name for p in spec.params}
    assert registry.get("dice").properties.conventions.count("keeps the ε terms") == 1


# ---------------------------------------------------------------- audit: fixes with their tests


def test_weight_without_average_is_the_weighted_sum_of_the_spec(cli, write_csv):
    # LOSSES.md: "the macro mean (or the weighted sum with `weight`)"; dice:weight=[...] used to be refused
    d = TORCH["data"]["multi"]
    y, p = np.array(d["target"]), np.array(d["prob"])
    per = np.array(evaluate(y, p, "dice").extra["per_class"])
    w = np.array([1.0, 2.0, 5.0])
    assert evaluate(y, p, "dice:weight=[1,2,5]").value == pytest.approx(np.dot(w, per), rel=1e-14)
    assert S.dice(y, p, weight=[2.0, 5.0], include_background=False) == pytest.approx(2 * per[1] + 5 * per[2],
                                                                                       rel=1e-14)
    # the gradient is the same weighted sum of the per-class gradients
    g = S.dice_grad(y, p, weight=w)
    np.testing.assert_allclose(g, fd_grad("dice", y, p, weight=w), rtol=1e-6, atol=1e-8)
    path = write_csv("seg.csv", "mask,prob_0,prob_1,prob_2\n0,0.7,0.2,0.1\n2,0.1,0.3,0.6\n1,0.2,0.5,0.3\n")
    r = cli("eval", path, "-l", "dice:weight=[1,2,5]", "-f", "json")
    assert r.code == 0, r.err
    res = r.json()["results"][0]
    assert res["value"] == pytest.approx(np.dot(w, res["per_class"]), rel=1e-14)


def test_one_hot_mask_width_mismatch_names_file_column_and_row(cli, write_csv):
    path = write_csv("seg.csv", "mask_0,mask_1,mask_2,prob_0,prob_1\n1,0,0,0.5,0.5\n0,1,0,0.4,0.6\n")
    r = cli("eval", path, "-l", "dice", "--col", "pred=prob_*", "-f", "json")
    assert r.code == 2 and r.out == ""
    line, = r.err.strip().splitlines()
    assert path in line and "column 'mask_*', row 1" in line and "3 one-hot columns" in line
