"""Metric-learning losses against independent oracles.

- PyTorch fixtures (tests/fixtures/make_torch_metric.py): torch triplet_margin_loss,
  the contrastive and squared-triplet formulas in autograd, pytorch-metric-learning's
  BatchHardMiner / AvgNonZeroReducer and a torch port of TF-Addons triplet_semihard_loss
  for mined triplets — values and per-row gradients of (N·L).
- Brute-force loops below (written independently of lossctl's vectorised mining) for
  hard, semihard and all mining, also on integer embeddings where distances tie exactly.
- Central finite differences for every gradient, away from kinks.
- Read-batch invariance, the documented dependence on batch_size, shard merges, notes,
  and bad inputs; CLI smoke tests on the sample files.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossctl.accumulate import GradSummary
from lossctl.api import evaluate, per_row
from lossctl.engine import Batch, Context
from lossctl.errors import InputError, UsageError
from lossctl.losses import metric_learning as M
from lossctl.registry import parse_spec

HERE = os.path.dirname(__file__)
SAMPLES = os.path.join(os.path.dirname(HERE), "sample_data")
with open(os.path.join(HERE, "fixtures", "torch_metric.json")) as f:
    TORCH = json.load(f)


def spec(name: str, **params) -> str:
    def fmt(v):
        return str(v).lower() if isinstance(v, bool) else str(v)

    return name + (":" + ",".join(f"{k}={fmt(v)}" for k, v in params.items()) if params else "")


# ---------------------------------------------------------------- brute-force references


def ref_distance(x: np.ndarray, y: np.ndarray, squared: bool) -> float:
    s = 0.0
    for a, b in zip(x, y):
        s += (a - b) ** 2
    return s if squared else s ** 0.5


def ref_mine(E, y, mining, margin, squared, normalize=False, w=None):
    """(Σ w·ℓ, Σ w) over the mined terms of one batch, by loops over anchors."""
    E = np.asarray(E, dtype=float)
    if normalize:
        E = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    n = len(E)
    w = np.ones(n) if w is None else w
    d = [[ref_distance(E[i], E[j], squared) for j in range(n)] for i in range(n)]
    total = count = 0.0
    for a in range(n):
        pos = [p for p in range(n) if p != a and y[p] == y[a]]
        neg = [k for k in range(n) if y[k] != y[a]]
        if not pos or not neg:
            continue
        if mining == "hard":
            far_p = max(d[a][p] for p in pos)
            near_n = min(d[a][k] for k in neg)
            total += w[a] * max(0.0, far_p - near_n + margin)
            count += w[a]
        elif mining == "semihard":
            for p in pos:
                farther = [d[a][k] for k in neg if d[a][k] > d[a][p]]
                dn = min(farther) if farther else max(d[a][k] for k in neg)
                total += w[a] * max(0.0, d[a][p] - dn + margin)
                count += w[a]
        else:
            for p in pos:
                for k in neg:
                    loss = d[a][p] - d[a][k] + margin
                    if loss > 0:
                        total += w[a] * loss
                        count += w[a]
    return total, count


def ref_value(E, y, mining, margin, squared, normalize=False, batch_size=None, w=None):
    n = len(E)
    bs = batch_size or n
    total = count = 0.0
    for s in range(0, n, bs):
        t, c = ref_mine(E[s:s + bs], y[s:s + bs], mining, margin, squared, normalize,
                        None if w is None else w[s:s + bs])
        total += t
        count += c
    return total / count if count else 0.0


def labelled(n=36, d=4, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.normal(0, 1.0, (k, d))
    return centres[y] + 0.7 * rng.normal(size=(n, d)), y


def fd_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


def grad_stats(g: np.ndarray) -> dict[str, float]:
    gs = GradSummary()
    gs.update(g)
    return gs.result()


MININGS = ("hard", "semihard", "all")

# ---------------------------------------------------------------- torch fixtures

TRIP = TORCH["triplet"][0]
PAIRS = TORCH["contrastive"][0]
MINED = TORCH["mined"][0]


@pytest.mark.parametrize("case", TRIP["cases"], ids=lambda c: f"m{c['margin']}-sq{c['squared']}-norm{c['normalize']}")
def test_triplet_matches_torch(case):
    a, p, n = (np.array(TRIP[k]) for k in ("anchor", "positive", "negative"))
    s = spec("triplet", margin=case["margin"], squared=case["squared"], normalize=case["normalize"])
    r = evaluate(loss=s, anchor=a, positive=p, negative=n, grad=True)
    assert r.value == pytest.approx(case["value"], rel=1e-12)
    loss, grads = per_row(loss=s, anchor=a, positive=p, negative=n)
    np.testing.assert_allclose(loss, case["per_row"], rtol=1e-12, atol=1e-15)
    for role in ("anchor", "positive", "negative"):
        np.testing.assert_allclose(grads[role], case["grad"][role], rtol=1e-10, atol=1e-13)
        ref = grad_stats(np.array(case["grad"][role]))
        assert r.grad_by_role[role]["l2"] == pytest.approx(ref["l2"], rel=1e-10)
        assert r.grad_by_role[role]["zero_frac"] == ref["zero_frac"]
    allg = np.hstack([np.array(case["grad"][k]) for k in ("anchor", "positive", "negative")])
    assert r.grad["l2"] == pytest.approx(np.linalg.norm(allg), rel=1e-10)
    assert r.grad["max"] == pytest.approx(allg.max(), rel=1e-10)
    # the fixture has active and inactive rows, so both branches are checked
    assert 0 < np.count_nonzero(np.array(case["per_row"])) < len(case["per_row"])


@pytest.mark.parametrize("case", PAIRS["cases"], ids=lambda c: f"m{c['margin']}")
def test_contrastive_matches_torch(case):
    x1, x2, y = np.array(PAIRS["x1"]), np.array(PAIRS["x2"]), np.array(PAIRS["target"])
    s = spec("contrastive", margin=case["margin"])
    r = evaluate(y, loss=s, x1=x1, x2=x2, grad=True)
    assert r.value == pytest.approx(case["value"], rel=1e-12)
    loss, grads = per_row(y, loss=s, x1=x1, x2=x2)
    np.testing.assert_allclose(loss, case["per_row"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grads["x1"], case["grad"]["x1"], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grads["x2"], case["grad"]["x2"], rtol=1e-10, atol=1e-13)
    assert set(r.grad_by_role) == {"x1", "x2"}


def _mined_id(c):
    return f"{c['mining']}-m{c['margin']}-sq{c['squared']}-norm{c['normalize']}-B{c['batch_size']}"


@pytest.mark.parametrize("case", MINED["cases"], ids=_mined_id)
def test_mined_matches_libraries(case):
    E, y = np.array(MINED["embedding"]), np.array(MINED["label"])
    kw = {k: case[k] for k in ("mining", "margin", "squared", "normalize", "batch_size")}
    r = evaluate(y, loss=spec("triplet_mined", **kw), embedding=E, grad=True)
    assert r.value == pytest.approx(case["value"], rel=1e-11)
    if "library_value" in case:  # straight from pytorch-metric-learning's reducers
        assert r.value == pytest.approx(case["library_value"], rel=1e-11)
    assert r.extra["terms"] == case["terms"]
    g = np.array(case["grad"])
    ref = grad_stats(g)
    for key in ("l2", "abs_mean", "min", "max"):
        assert r.grad[key] == pytest.approx(ref[key], rel=1e-9), key
    assert r.grad["mean"] == pytest.approx(ref["mean"], abs=1e-12)
    assert r.grad["zero_frac"] == ref["zero_frac"]
    # the per-row vectors, from the pure function the state uses
    n, bs, rows, den = len(E), case["batch_size"], [], 0.0
    for s in range(0, n, bs):
        m = M.mine_batch(E[s:s + bs], y[s:s + bs], mining=case["mining"], margin=case["margin"],
                         squared=case["squared"], normalize=case["normalize"], grad=True)
        rows.append(m.grad)
        den += m.denom
    np.testing.assert_allclose(np.vstack(rows) * n / den, g, rtol=1e-9, atol=1e-12)


def test_mined_fixture_has_an_anchor_without_positive():
    y = np.array(MINED["label"])
    assert np.sum(y == 9) == 1  # hard mining skips it: 39 anchors of 40
    hard = next(c for c in MINED["cases"] if c["mining"] == "hard" and c["batch_size"] == len(y))
    assert hard["terms"] == len(y) - 1


# ---------------------------------------------------------------- brute force


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("squared,normalize", [(True, False), (False, False), (True, True), (False, True)])
def test_mining_matches_brute_force(mining, squared, normalize):
    E, y = labelled(n=30, seed=1)
    for margin in (0.0, 0.2, 1.5):
        want = ref_value(E, y, mining, margin, squared, normalize)
        got = evaluate(y, loss=spec("triplet_mined", mining=mining, margin=margin, squared=squared,
                                            normalize=normalize), embedding=E).value
        assert got == pytest.approx(want, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("mining", MININGS)
def test_mining_in_several_row_blocks(monkeypatch, mining):
    # the distance matrix is built in blocks of anchor rows; force many small blocks
    E, y = labelled(n=40, seed=2)
    whole = M.mine_batch(E, y, mining=mining, grad=True)
    monkeypatch.setattr(M, "BLOCK_ELEMS", 3 * 40)
    blocked = M.mine_batch(E, y, mining=mining, grad=True)
    assert blocked.loss_sum == pytest.approx(whole.loss_sum, rel=1e-12)
    assert blocked.denom == whole.denom
    np.testing.assert_allclose(blocked.grad, whole.grad, rtol=1e-10, atol=1e-12)
    assert blocked.loss_sum == pytest.approx(ref_mine(E, y, mining, 0.2, True)[0], rel=1e-10)


@settings(max_examples=50, deadline=None)
@given(
    data=st.data(),
    n=st.integers(2, 12),
    d=st.integers(1, 3),
    mining=st.sampled_from(MININGS),
    squared=st.booleans(),
    margin=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
)
def test_mining_with_exact_ties_matches_brute_force(data, n, d, mining, squared, margin):
    # small integer embeddings: every distance is exact in both computations, and ties
    # (equal distances, duplicate rows) are frequent, testing the strict d(a,n) > d(a,p)
    E = np.array(data.draw(st.lists(st.lists(st.integers(-2, 2), min_size=d, max_size=d), min_size=n, max_size=n)),
                 dtype=float)
    y = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    m = M.mine_batch(E, y, mining=mining, margin=margin, squared=squared)
    total, count = ref_mine(E, y, mining, margin, squared)
    assert m.loss_sum == pytest.approx(total, rel=1e-12, abs=1e-12)
    assert m.denom == count


def test_weights_weight_each_term_by_its_anchor():
    E, y = labelled(n=24, seed=3)
    w = np.random.default_rng(3).uniform(0, 2, len(y))
    for mining in MININGS:
        t, c = ref_mine(E, y, mining, 0.2, False, w=w)
        r = evaluate(y, loss=spec("triplet_mined", mining=mining, squared=False), embedding=E, weight=w)
        assert r.value == pytest.approx(t / c, rel=1e-10)
        # constant weights change nothing
        r2 = evaluate(y, loss=spec("triplet_mined", mining=mining, squared=False), embedding=E,
                              weight=np.full(len(y), 3.0))
        assert r2.value == pytest.approx(ref_value(E, y, mining, 0.2, False), rel=1e-10)


# ---------------------------------------------------------------- finite differences


def _away_from_kinks_pairs(seed, n=12, d=4, margin=1.0):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(n, d))
    x2 = x1 + rng.normal(0, 0.4, (n, d))
    y = (np.arange(n) % 2).astype(float)
    dist = np.linalg.norm(x1 - x2, axis=1)
    assert np.all(np.abs(dist - margin) > 1e-3) and np.all(dist > 1e-3)
    return x1, x2, y


def test_contrastive_gradient_finite_differences():
    x1, x2, y = _away_from_kinks_pairs(5)
    for margin in (1.0, 2.0):
        g1, g2 = M.contrastive_grad(x1, x2, y, margin=margin)
        f1 = fd_grad(lambda z: M.contrastive(z, x2, y, margin=margin).sum(), x1)
        f2 = fd_grad(lambda z: M.contrastive(x1, z, y, margin=margin).sum(), x2)
        np.testing.assert_allclose(g1, f1, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(g2, f2, rtol=1e-6, atol=1e-8)
        assert np.any(g1[y == 0] != 0)  # some dissimilar pairs inside the margin


def test_contrastive_at_zero_distance_is_a_kink_with_zero_gradient():
    x = np.ones((2, 3))
    g1, g2 = M.contrastive_grad(x, x.copy(), np.array([0.0, 1.0]), margin=1.0)
    assert np.all(g1 == 0) and np.all(g2 == 0)
    assert M.contrastive(x, x, np.array([0.0, 1.0]), margin=1.0).tolist() == [0.5, 0.0]


@pytest.mark.parametrize("squared,normalize", [(True, False), (False, False), (True, True), (False, True)])
def test_triplet_gradient_finite_differences(squared, normalize):
    rng = np.random.default_rng(7)
    a = rng.normal(size=(15, 5))
    p, n = a + rng.normal(0, 0.6, a.shape), a + rng.normal(0, 0.8, a.shape)
    kw = dict(margin=0.5 if normalize else 1.0, squared=squared, normalize=normalize, eps=1e-6)
    loss = M.triplet(a, p, n, **kw)
    assert np.all(np.abs(loss) > 1e-4) or np.all(np.abs(loss[loss > 0]) > 1e-4)
    ga, gp, gn = M.triplet_grad(a, p, n, **kw)
    for g, which in ((ga, 0), (gp, 1), (gn, 2)):
        def f(z, which=which):
            args = [a, p, n]
            args[which] = z
            return M.triplet(*args, **kw).sum()

        np.testing.assert_allclose(g, fd_grad(f, [a, p, n][which]), rtol=1e-6, atol=1e-8)
    assert 0 < np.count_nonzero(loss) < len(loss)


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("squared,normalize", [(True, False), (False, True)])
def test_mined_gradient_finite_differences(mining, squared, normalize):
    # g = ∂(N·L)/∂e with L the file-level value over batches of 10 rows
    E, y = labelled(n=25, d=3, seed=11)
    kw = dict(mining=mining, margin=0.3, squared=squared, normalize=normalize, batch_size=10)
    n = len(y)
    fd = fd_grad(lambda z: n * M.mined_triplet(z, y, **kw), E)
    rows, den = [], 0.0
    for s in range(0, n, 10):
        m = M.mine_batch(E[s:s + 10], y[s:s + 10], grad=True, **{k: kw[k] for k in ("mining", "margin", "squared", "normalize")})
        rows.append(m.grad)
        den += m.denom
    g = np.vstack(rows) * n / den
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
    r = evaluate(y, loss=spec("triplet_mined", **kw), embedding=E, grad=True)
    assert r.grad["l2"] == pytest.approx(np.linalg.norm(fd), rel=1e-6)


# ---------------------------------------------------------------- streaming


def _same_result(a, b, rel=1e-12):
    assert a.value == pytest.approx(b.value, rel=rel)
    assert a.n == b.n
    for k, v in a.grad.items():
        assert b.grad[k] == pytest.approx(v, rel=1e-10, abs=1e-13), k
    assert a.extra == b.extra


def test_read_batch_invariance_pairs_and_triplets():
    rng = np.random.default_rng(4)
    x1, x2 = rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    y = rng.integers(0, 2, 50).astype(float)
    w = rng.uniform(0.1, 2, 50)
    runs = [evaluate(y, loss="contrastive", x1=x1, x2=x2, weight=w, grad=True, batch_rows=b) for b in (1, 7, None)]
    for r in runs[1:]:
        _same_result(runs[0], r)
        assert r.grad_by_role["x2"]["l2"] == pytest.approx(runs[0].grad_by_role["x2"]["l2"], rel=1e-12)
    a, p, n = rng.normal(size=(50, 6)), rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    runs = [evaluate(loss="triplet:squared=false", anchor=a, positive=p, negative=n, grad=True, batch_rows=b)
            for b in (1, 7, None)]
    for r in runs[1:]:
        _same_result(runs[0], r)


@pytest.mark.parametrize("mining", MININGS)
def test_read_batch_invariance_mined(mining):
    # mining batches are cut by row position (rows 1..B, B+1..2B, …), not by read batches
    E, y = labelled(n=45, seed=6)
    w = np.random.default_rng(6).uniform(0.5, 2, len(y))
    s = spec("triplet_mined", mining=mining, batch_size=16)
    runs = [evaluate(y, loss=s, embedding=E, weight=w, grad=True, batch_rows=b) for b in (1, 7, 16, 100, None)]
    for r in runs[1:]:
        _same_result(runs[0], r)
    assert runs[0].extra["batches"] == 3


@pytest.mark.parametrize("mining", MININGS)
def test_batch_size_dependence_is_the_documented_one(mining):
    E, y = labelled(n=40, seed=8)
    n = len(y)
    full = ref_value(E, y, mining, 0.2, True)
    for bs in (n, n + 5, 4096):  # one batch: the whole file mined at once
        v = evaluate(y, loss=spec("triplet_mined", mining=mining, batch_size=bs), embedding=E).value
        assert v == pytest.approx(full, rel=1e-10)
    unequal = 0
    for bs in (7, 13, 20):
        v = evaluate(y, loss=spec("triplet_mined", mining=mining, batch_size=bs), embedding=E).value
        parts = [ref_mine(E[s:s + bs], y[s:s + bs], mining, 0.2, True) for s in range(0, n, bs)]
        pooled = sum(t for t, _ in parts) / sum(c for _, c in parts)
        assert v == pytest.approx(pooled, rel=1e-10)  # Σ terms over all batches / number of terms
        assert v == pytest.approx(ref_value(E, y, mining, 0.2, True, batch_size=bs), rel=1e-10)
        assert v != pytest.approx(full, rel=1e-3)  # smaller batches mine other triplets
        if len({c for _, c in parts if c}) > 1:  # batches with different numbers of terms
            unequal += 1
            plain = np.mean([t / c for t, c in parts if c])
            assert v != pytest.approx(plain, rel=1e-6)  # not the plain mean of per-batch means
    assert unequal >= 1


def _state(params: dict, grad: bool = False):
    call = parse_spec(spec("triplet_mined", **params))
    return call.spec.factory(call.params, Context(task="metric", grad=grad))


def _feed(state, E, y, step, offset=0):
    for s in range(0, len(y), step):
        b = Batch({"embedding": E[s:s + step], "target": y[s:s + step]}, len(y[s:s + step]), None, offset + s, "x.csv",
                  {"target": "label", "embedding": "emb_*"})
        state.validate(b)
        state.update(b)


@pytest.mark.parametrize("mining", MININGS)
def test_merge_of_shards_keeps_each_shards_batches(mining):
    E, y = labelled(n=50, seed=9)
    params = {"mining": mining, "batch_size": 16}
    left, right = _state(params, grad=True), _state(params, grad=True)
    _feed(left, E[:30], y[:30], 7)
    _feed(right, E[30:], y[30:], 5, offset=30)
    left.merge(right)
    r = left.result()
    parts = [ref_mine(E[s:min(s + 16, 30)], y[s:min(s + 16, 30)], mining, 0.2, True) for s in range(0, 30, 16)]
    parts += [ref_mine(E[s:s + 16], y[s:s + 16], mining, 0.2, True) for s in range(30, 50, 16)]
    assert r["value"] == pytest.approx(sum(t for t, _ in parts) / sum(c for _, c in parts), rel=1e-10)
    assert r["n"] == 50 and r["extra"]["batches"] == 4
    # the gradient summary merges too: compare with the per-shard per-row gradients
    rows, den = [], 0.0
    for lo, hi in ((0, 16), (16, 30), (30, 46), (46, 50)):
        m = M.mine_batch(E[lo:hi], y[lo:hi], mining=mining, grad=True)
        rows.append(m.grad)
        den += m.denom
    ref = grad_stats(np.vstack(rows) * 50 / den)
    assert r["grad"]["l2"] == pytest.approx(ref["l2"], rel=1e-10)


def test_merge_detects_two_classes_across_shards():
    E = np.random.default_rng(0).normal(size=(8, 2))
    left, right = _state({}), _state({})
    _feed(left, E[:4], np.zeros(4), 4)
    _feed(right, E[4:], np.ones(4), 4)
    left.merge(right)
    with pytest.raises(InputError, match="no batch"):  # two classes, but never in one batch
        left.result()


# ---------------------------------------------------------------- notes and errors


def test_batch_without_valid_triplet_is_reported():
    E, _ = labelled(n=30, seed=10)
    y = np.array([0, 1] * 5 + [2] * 10 + [3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    r = evaluate(y, loss="triplet_mined:batch_size=10", embedding=E)
    assert r.notes == [
        "batch 2 (rows 11–20) has no valid triplet (a single class)",
        "batch 3 (rows 21–30) has no valid triplet (no class with two rows)",
    ]
    assert r.value == pytest.approx(ref_value(E[:10], y[:10], "hard", 0.2, True), rel=1e-12)
    assert r.extra["batches"] == 3 and r.extra["valid_anchors"] == 10


def test_many_empty_batches_are_counted_not_listed():
    E = np.random.default_rng(1).normal(size=(60, 2))
    y = np.repeat(np.arange(20), 3)  # sorted: batches of 3 hold one class each, but the last
    y[-1] = 0
    r = evaluate(y, loss="triplet_mined:batch_size=3", embedding=E)
    assert len(r.notes) == M.MAX_NOTES + 1
    assert r.notes[0] == "batch 1 (rows 1–3) has no valid triplet (a single class)"
    assert "19 of 20" in r.notes[-1]
    assert r.value == pytest.approx(ref_value(E[-3:], y[-3:], "hard", 0.2, True), rel=1e-12)


def test_single_class_is_an_input_error(cli, tmp_path):
    E = np.random.default_rng(2).normal(size=(20, 3))
    with pytest.raises(InputError, match="same class"):
        evaluate(np.full(20, 4), loss="triplet_mined", embedding=E)
    path = tmp_path / "one.parquet"
    pq.write_table(pa.table({"embedding": pa.array(E.tolist()), "label": pa.array([7] * 20)}), path)
    r = cli("eval", str(path), "-f", "json")
    assert r.code == 2
    assert "same class" in r.err and "label" in r.err and "Traceback" not in r.err


def test_no_valid_triplet_anywhere_is_an_input_error():
    E = np.random.default_rng(2).normal(size=(10, 3))
    with pytest.raises(InputError, match="shuffle the rows or raise batch_size"):
        evaluate(np.arange(10), loss="triplet_mined", embedding=E)


def test_batch_all_without_positive_loss_is_zero():
    # two far-apart tight clusters: every triplet satisfies the margin
    E = np.array([[0.0, 0], [0, 0.1], [10, 10], [10, 10.1]])
    r = evaluate(np.array([0, 0, 1, 1]), loss="triplet_mined:mining=all", embedding=E, grad=True)
    assert r.value == 0.0 and r.extra["terms"] == 0 and r.extra["valid_triplets"] == 8
    assert r.grad["l2"] == 0.0


def test_mismatched_widths_name_both_roles():
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match=r"x1 has 8 columns but x2 has 7"):
        evaluate(np.ones(5), loss="contrastive", x1=rng.normal(size=(5, 8)), x2=rng.normal(size=(5, 7)))
    with pytest.raises(InputError, match=r"anchor has 4 columns but negative has 3"):
        evaluate(loss="triplet", anchor=rng.normal(size=(5, 4)), positive=rng.normal(size=(5, 4)),
                         negative=rng.normal(size=(5, 3)))


def test_mismatched_widths_on_the_command_line(cli, write_csv):
    head = ",".join([f"x1_{j}" for j in range(8)] + [f"x2_{j}" for j in range(7)] + ["similar"])
    rows = "\n".join(",".join(["0.5"] * 15 + ["1"]) for _ in range(3))
    r = cli("eval", write_csv("bad.csv", head + "\n" + rows + "\n"), "-f", "json")
    assert r.code == 2
    assert "x1 ('x1_*') has 8 columns but x2 ('x2_*') has 7" in r.err


def test_list_columns_of_different_lengths(cli, tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"x1": pa.array([[0.0, 1.0, 2.0]] * 4), "x2": pa.array([[0.0, 1.0]] * 4),
                             "similar": pa.array([0, 1, 0, 1])}), path)
    r = cli("eval", str(path), "-f", "json")
    assert r.code == 2 and "x1 has 3 columns but x2 has 2" in r.err
    ok = tmp_path / "ok.parquet"
    pq.write_table(pa.table({"x1": pa.array([[0.0, 1.0]] * 4), "x2": pa.array([[0.0, 2.0]] * 4),
                             "similar": pa.array([0, 1, 0, 1])}), ok)
    d = cli("eval", str(ok), "-f", "json").json()
    # d = 1 for every pair: similar ½·1, dissimilar ½·max(0, 1 − 1)² = 0
    assert d["results"][0]["loss"] == "contrastive" and d["results"][0]["value"] == pytest.approx(0.25)


def test_contrastive_target_must_be_zero_or_one(cli, write_csv):
    x = np.zeros((3, 2))
    with pytest.raises(InputError, match=r"row 2.*1 \(similar\) or 0 \(dissimilar\).*got 2"):
        evaluate(np.array([1.0, 2.0, 0.0]), loss="contrastive", x1=x, x2=x)
    path = write_csv("p.csv", "x1_0,x1_1,x2_0,x2_1,similar\n0,0,1,1,1\n0,0,1,1,-1\n")
    r = cli("eval", path, "-f", "json")
    assert r.code == 2 and "similar" in r.err and "row 2" in r.err


@pytest.mark.parametrize("bad,msg", [
    ("triplet:margin=-1", "margin"),
    ("contrastive:margin=-0.5", "margin"),
    ("triplet_mined:batch_size=1", "batch_size"),
    ("triplet_mined:batch_size=2.5", "whole number"),
    ("triplet_mined:mining=easy", "hard, semihard, all"),
    ("triplet:eps=-1", "eps"),
])
def test_parameter_ranges(bad, msg):
    with pytest.raises(UsageError, match=msg):
        parse_spec(bad)


def test_mined_refuses_per_row_reduction(cli):
    r = cli("eval", os.path.join(SAMPLES, "embeddings.parquet"), "--reduction", "none", "-f", "csv")
    assert r.code == 2 and "not a mean over rows" in r.err


# ---------------------------------------------------------------- CLI on the sample files


@pytest.mark.parametrize("name,loss,roles", [
    ("pairs.csv", "contrastive", {"x1", "x2"}),
    ("triplets.csv", "triplet", {"anchor", "positive", "negative"}),
    ("embeddings.parquet", "triplet_mined", None),
])
def test_sample_files_bind_with_no_options(cli, name, loss, roles):
    path = os.path.join(SAMPLES, name)
    r = cli("eval", path, "-f", "json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["task"] == "metric"
    assert [x["loss"] for x in d["results"]] == [loss]
    assert np.isfinite(d["results"][0]["value"]) and d["results"][0]["value"] > 0
    g = cli("eval", path, "-f", "json", "--grad").json()["results"][0]
    assert set(g["grad"]) >= {"mean", "l2", "zero_frac", "top1_share"}
    if roles:
        assert set(g["grad_by_role"]) == roles


def test_sample_embeddings_match_brute_force_on_a_slice():
    t = pq.read_table(os.path.join(SAMPLES, "embeddings.parquet"))
    E = np.array(t.column("embedding").to_pylist(), dtype=float)
    y = t.column("label").to_numpy()
    assert E.shape == (3000, 16) and len(np.unique(y)) == 10
    for mining in MININGS:
        v = evaluate(y[:60], loss=spec("triplet_mined", mining=mining, squared=False), embedding=E[:60]).value
        assert v == pytest.approx(ref_value(E[:60], y[:60], mining, 0.2, False), rel=1e-9)


def test_sample_files_via_cli_match_the_library(cli):
    import pandas as pd

    df = pd.read_csv(os.path.join(SAMPLES, "pairs.csv"))
    x1 = df[[f"x1_{j}" for j in range(8)]].to_numpy()
    x2 = df[[f"x2_{j}" for j in range(8)]].to_numpy()
    want = M.contrastive(x1, x2, df["similar"].to_numpy(float), margin=1.5).mean()
    d = cli("eval", os.path.join(SAMPLES, "pairs.csv"), "-l", "contrastive:margin=1.5", "--batch-rows", "333",
            "-f", "json").json()
    assert d["results"][0]["value"] == pytest.approx(want, rel=1e-12)
    # explicit selectors: a comma list and a glob
    d = cli("eval", os.path.join(SAMPLES, "pairs.csv"), "-l", "contrastive:margin=1.5",
            "--col", "x1=" + ",".join(f"x1_{j}" for j in range(8)), "--col", "x2=x2_*", "-t", "similar",
            "-f", "json").json()
    assert d["results"][0]["value"] == pytest.approx(want, rel=1e-12)
    a = cli("eval", os.path.join(SAMPLES, "embeddings.parquet"), "-l", "mined_triplet:batch_size=500",
            "--batch-rows", "123", "-f", "json").json()["results"][0]
    b = cli("eval", os.path.join(SAMPLES, "embeddings.parquet"), "-l", "triplet_mined:batch_size=500",
            "-f", "json").json()["results"][0]
    assert a["value"] == b["value"] and a["batches"] == 6


def test_explain_states_the_memory_and_batch_size_dependence(cli):
    r = cli("explain", "triplet_mined")
    assert r.code == 0
    assert "O(B²)" in r.out and "batch_size" in r.out
    r = cli("explain", "triplet")
    assert "triplet_mined" in r.out and "triplet_margin_loss" in r.out


def test_string_labels_and_groups(cli, write_csv):
    # class labels may be strings; --by gives each group its own batches of its own rows
    rng = np.random.default_rng(12)
    E = rng.normal(size=(40, 3))
    y = rng.choice(["cat", "dog", "eel"], 40)
    split = np.where(np.arange(40) % 3 == 0, "a", "b")
    lines = ["emb_0,emb_1,emb_2,label,split"] + [
        f"{E[i, 0]:.17g},{E[i, 1]:.17g},{E[i, 2]:.17g},{y[i]},{split[i]}" for i in range(40)
    ]
    path = write_csv("str.csv", "\n".join(lines) + "\n")
    d = cli("eval", path, "-l", "triplet_mined:mining=semihard,batch_size=9", "--by", "split", "-f", "json").json()
    assert d["results"][0]["value"] == pytest.approx(ref_value(E, y, "semihard", 0.2, True, batch_size=9), rel=1e-10)
    for g in d["groups"]:
        m = split == g["value"]
        want = ref_value(E[m], y[m], "semihard", 0.2, True, batch_size=9)
        assert g["results"][0]["value"] == pytest.approx(want, rel=1e-10)
    bad = write_csv("miss.csv", "emb_0,emb_1,label\n1,2,a\n2,3,\n3,4,b\n")
    r = cli("eval", bad, "-f", "json")
    assert r.code == 2 and "row 2" in r.err and "label" in r.err


# ---------------------------------------------------------------- audit: fixes with their tests


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("squared", [True, False])
def test_mining_far_from_the_origin_is_translation_invariant(mining, squared):
    # the Gram trick ‖x‖² + ‖y‖² − 2x·y lost every digit for embeddings 1e7 from the origin
    # (semihard was 25 % off); the brute force below takes differences directly
    E, y = labelled(n=30, d=4, k=3, seed=11)
    whole = M.mine_batch(E, y, mining=mining, squared=squared, grad=True)
    far = M.mine_batch(E + 1e7, y, mining=mining, squared=squared, grad=True)
    total, count = ref_mine(E + 1e7, y, mining, 0.2, squared)
    assert far.denom == count
    assert far.loss_sum == pytest.approx(total, rel=1e-7)
    assert far.loss_sum == pytest.approx(whole.loss_sum, rel=1e-7)
    np.testing.assert_allclose(far.grad, whole.grad, rtol=1e-6, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(data=st.data(), n=st.integers(2, 10), mining=st.sampled_from(MININGS), squared=st.booleans(),
       offset=st.sampled_from([0.0, 3.0, 1e6, -1e9]))
def test_mining_far_from_the_origin_keeps_exact_ties(data, n, mining, squared, offset):
    # integer embeddings at a large integer offset: the centring shift must keep every distance exact
    E = np.array(data.draw(st.lists(st.lists(st.integers(-2, 2), min_size=2, max_size=2), min_size=n, max_size=n)),
                 dtype=float) + offset
    y = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    m = M.mine_batch(E, y, mining=mining, margin=0.0, squared=squared)
    total, count = ref_mine(E, y, mining, 0.0, squared)
    assert m.denom == count
    assert m.loss_sum == pytest.approx(total, rel=1e-12, abs=1e-12)


def test_contrastive_gradient_has_no_negative_zero(cli, write_csv):
    # ∂ℓ/∂x2 = −∂ℓ/∂x1 wrote −0.0 where the gradient is 0 ("min": -0.0 in the JSON summary)
    g1, g2 = M.contrastive_grad(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[3.0, 0.0], [1.0, 2.0]]),
                                np.array([0.0, 1.0]))
    assert not np.signbit(g2[g2 == 0]).any() and not np.signbit(g1[g1 == 0]).any()
    path = write_csv("pairs.csv", "x1_0,x1_1,x2_0,x2_1,similar\n0,0,3,0,0\n0,0,0,0,0\n")
    r = cli("eval", path, "-l", "contrastive", "--grad", "-f", "json")
    assert r.code == 0
    assert '-0.0' not in r.out


@pytest.mark.parametrize("text,loss,column", [
    ("x1_0,x1_1,x2_0,x2_1,x2_2,similar\n1,2,1,1,1,1\n0,0,1,0,1,0\n", "contrastive", "x2_*"),
    ("anchor_0,anchor_1,positive_0,positive_1,negative_0,negative_1,negative_2\n1,2,1,3,1,1,1\n", "triplet",
     "negative_*"),
])
def test_width_mismatch_names_file_column_and_row(cli, write_csv, text, loss, column):
    path = write_csv("w.csv", text)
    r = cli("eval", path, "-l", loss, "-f", "json")
    assert r.code == 2 and r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.err
    assert path in lines[0] and f"column '{column}', row 1" in lines[0] and "same width" in lines[0]


def test_triplet_with_mining_or_on_labelled_embeddings_is_the_mined_form(capsys):
    # LOSSES.md names the mined form `triplet` too (roles embedding, target; parameter mining)
    import json

    from lossctl import cli as lcli, registry

    assert registry.parse_spec("triplet:mining=semihard,margin=0.3").spec.name == "triplet_mined"
    assert registry.parse_spec("triplet:margin=0.3").spec.name == "triplet"
    with pytest.raises(UsageError, match="unknown parameter 'bogus'"):
        registry.parse_spec("triplet:bogus=1")
    path = os.path.join(SAMPLES, "embeddings.parquet")
    outs = []
    for spec in ("triplet", "triplet:mining=hard", "triplet_mined"):
        assert lcli.main(["eval", path, "-l", spec, "-f", "json"]) == 0
        outs.append(json.loads(capsys.readouterr().out)["results"][0])
    assert {o["loss"] for o in outs} == {"triplet_mined"}
    assert outs[0]["value"] == outs[1]["value"] == outs[2]["value"]
    # explicit triplets still bind the plain triplet
    assert lcli.main(["eval", os.path.join(SAMPLES, "triplets.csv"), "-l", "triplet", "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["loss"] == "triplet"


def test_triplet_with_an_explicit_embedding_column_is_the_mined_form(capsys):
    from lossctl import cli as lcli

    path = os.path.join(SAMPLES, "embeddings.parquet")
    assert lcli.main(["eval", path, "-t", "label", "--col", "embedding=embedding", "-l", "triplet", "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["loss"] == "triplet_mined"
