"""Vectorised slices (lossctl.slices): the same numbers as one state per group.

Reference: the per-group path (``slices.VECTORISE = False``: one state per group and loss,
fed the group's rows with ``Batch.take``, what ``--by`` ran before), which the existing
agreement tests tie to numpy, scikit-learn and torch. Independent oracles: pandas groupby
with ``math.fsum`` per group (exact sums rounded once) for the values, and ``math.fsum`` for
the accuracy of the scatter-added sums.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossctl import slices
from lossctl.plan import Request
from lossctl.planner import prepare
from lossctl.assemble import run


def _run(monkeypatch, vectorise: bool, **kw):
    monkeypatch.setattr(slices, "VECTORISE", vectorise)
    plan, inputs = prepare(Request(**kw))
    try:
        return run(plan, inputs)
    finally:
        inputs.close()


def both(monkeypatch, **kw):
    return _run(monkeypatch, True, **kw), _run(monkeypatch, False, **kw)


def close(a, b, rtol: float = 1e-12, what: str = "") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), what
        for k in a:
            close(a[k], b[k], rtol, f"{what}.{k}")
        return
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, rtol, f"{what}[{i}]")
        return
    if isinstance(a, (float, np.floating)) or isinstance(b, (float, np.floating)):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), f"{what}: {a} vs {b}"
        else:
            assert a == pytest.approx(b, rel=rtol, abs=1e-300), what
        return
    assert a == b, f"{what}: {a!r} vs {b!r}"


def same_report(a, b, rtol: float = 1e-12) -> None:
    assert a.hidden_groups == b.hidden_groups
    assert [g.value for g in a.groups] == [g.value for g in b.groups]
    assert [g.rows for g in a.groups] == [g.rows for g in b.groups]
    for ga, gb in zip(a.groups, b.groups):
        for ra, rb in zip(ga.results, gb.results):
            w = f"{ga.value}/{ra.spec}@{ra.pred}"
            assert (ra.spec, ra.pred, ra.n, ra.worst) == (rb.spec, rb.pred, rb.n, rb.worst), w
            close(ra.value, rb.value, rtol, w)
            close(ra.extra, rb.extra, rtol, w + " extra")
            close(ra.grad, rb.grad, rtol, w + " grad")
            close(ra.grad_by_role, rb.grad_by_role, rtol, w + " grad_by_role")
            close(ra.ci, rb.ci, rtol, w + " ci")
            assert ra.notes == rb.notes, w
            if ra.grad_sample is not None:
                np.testing.assert_allclose(np.sort(ra.grad_sample), np.sort(rb.grad_sample), rtol=rtol)
        assert len(ga.comparisons) == len(gb.comparisons)
        for ca, cb in zip(ga.comparisons, gb.comparisons):
            close(ca.delta, cb.delta, 1e-9, "delta")
            close(ca.ci, cb.ci, rtol, "delta ci")


def regression_file(path, rows: int, groups: int, seed: int = 0, skew: bool = False) -> str:
    rng = np.random.default_rng(seed)
    y = rng.normal(3, 2, rows)
    if skew:  # one group of most rows beside many small ones: the mixed heavy/light path
        g = np.where(rng.random(rows) < 0.8, 0, rng.integers(1, groups, rows))
    else:
        g = rng.integers(0, groups, rows)
    t = pa.table({
        "y": y, "yhat": y + rng.normal(0, 0.8, rows), "yhat2": y + rng.normal(0.1, 1.1, rows),
        "w": rng.random(rows) * 3, "g": g, "s": pa.array([f"k{v % 13}" for v in g]),
        "lo": y - rng.random(rows) * 2, "hi": y + rng.random(rows) * 2,
    })
    pq.write_table(t, path)
    return str(path)


REG = ["mse", "rmse", "mae", "huber:delta=0.7", "quantile:tau=0.3", "log_cosh"]


@pytest.mark.parametrize("rows,groups,batch,skew", [
    (5000, 1, 1000, False), (6000, 7, 1000, False), (8000, 900, 1500, False),
    (40000, 3, 20000, False),  # groups of more than CHUNK rows in a batch: chunked partials
    (40000, 200, 20000, True),  # one heavy group beside light ones
])
@pytest.mark.parametrize("weight", [False, True])
def test_regression_values_match_the_per_group_path(monkeypatch, tmp_path, rows, groups, batch, skew, weight):
    path = regression_file(tmp_path / "r.parquet", rows, groups, skew=skew)
    kw = dict(data=path, target="y", preds=["yhat"], losses=REG, by=["g"], batch_rows=batch,
              weight="w" if weight else None)
    a, b = both(monkeypatch, **kw)
    assert len(a.groups) == min(groups, len(set(pq.read_table(path)["g"].to_pylist())))
    same_report(a, b)


@pytest.mark.parametrize("opt", ["grad", "ci", "preds", "sum", "grad-weight-preds"])
def test_options_match_the_per_group_path(monkeypatch, tmp_path, opt):
    path = regression_file(tmp_path / "r.parquet", 9000, 5, seed=1)
    kw = dict(data=path, target="y", preds=["yhat"], losses=["mse", "mae", "rmse", "huber"], by=["g"],
              batch_rows=2000)
    if "grad" in opt:
        kw["grad"] = True
    if opt == "ci":
        kw.update(ci=0.9, bootstrap=60, seed=4)
    if "preds" in opt:
        kw["preds"] = ["yhat", "yhat2"]
    if "weight" in opt:
        kw["weight"] = "w"
    if opt == "sum":
        kw.update(reduction="sum", losses=["mse", "mae", "huber"])
    a, b = both(monkeypatch, **kw)
    same_report(a, b)
    if opt == "ci":
        assert all(r.ci is not None for g in a.groups for r in g.results)
    if "grad" in opt:
        assert all(r.grad is not None for g in a.groups for r in g.results)


def test_interval_extras_and_ci_with_several_models(monkeypatch, tmp_path):
    path = regression_file(tmp_path / "r.parquet", 6000, 4, seed=2)
    a, b = both(monkeypatch, data=path, target="y", preds=["yhat", "yhat2"], losses=["mse"], by=["s"],
                batch_rows=1500, ci=0.95, bootstrap=40)
    same_report(a, b)
    a, b = both(monkeypatch, data=path, target="y", losses=["interval"], cols={"lower": "lo", "upper": "hi"},
                by=["g"], batch_rows=1000)
    same_report(a, b)
    assert "coverage" in a.groups[0].results[0].extra


def classification_file(path, rows: int, groups: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    p = np.clip(rng.beta(2, 2, rows) * 0.6 + 0.4 * y, 1e-6, 1 - 1e-6)
    z = rng.normal(size=(rows, 3))
    t = pa.table({"y": y, "p": p, "p2": np.clip(p + rng.normal(0, 0.1, rows), 0.01, 0.99), "w": rng.random(rows),
                  "g": rng.integers(0, groups, rows).astype(np.int32),
                  "c": rng.integers(0, 3, rows), "z0": z[:, 0], "z1": z[:, 1], "z2": z[:, 2]})
    pq.write_table(t, path)
    return str(path)


@pytest.mark.parametrize("grad", [False, True])
def test_classification_families_match(monkeypatch, tmp_path, grad):
    path = classification_file(tmp_path / "c.parquet", 7000, 30)
    a, b = both(monkeypatch, data=path, target="y", preds=["p", "p2"], losses=["bce", "focal:gamma=2", "hinge"],
                by=["g"], batch_rows=1200, grad=grad, weight="w")
    same_report(a, b)
    a, b = both(monkeypatch, data=path, target="c", preds=["z0,z1,z2"], losses=["cross_entropy:logits=true",
                                                                                "multi_hinge"],
                by=["g"], batch_rows=1200, grad=grad)
    same_report(a, b)


def test_values_match_pandas_groupby_with_exact_sums(monkeypatch, tmp_path):
    path = regression_file(tmp_path / "r.parquet", 30000, 500, seed=5, skew=True)
    a = _run(monkeypatch, True, data=path, target="y", preds=["yhat"], losses=["mse", "mae"], by=["g"],
             batch_rows=8192, weight="w")
    df = pq.read_table(path).to_pandas()
    r = df.yhat - df.y
    df["wse"], df["wae"] = df.w * r * r, df.w * r.abs()
    exact = df.groupby("g").agg(wse=("wse", math.fsum), wae=("wae", math.fsum), w=("w", math.fsum), n=("w", "size"))
    for g in a.groups:
        e = exact.loc[g.value]
        assert g.rows == e.n
        assert g.results[0].value == pytest.approx(e.wse / e.w, rel=1e-14)
        assert g.results[1].value == pytest.approx(e.wae / e.w, rel=1e-14)


def test_scatter_added_sums_are_as_accurate_as_the_ungrouped_sums():
    """Relative error against math.fsum per group, for groups of many rows in one batch:
    chunked partials keep it at the ungrouped path's level (a plain bincount adds 2^17 terms
    sequentially)."""
    rng = np.random.default_rng(7)
    n = 1 << 17
    x = rng.lognormal(0, 2, n)
    codes = rng.integers(0, 3, n).astype(np.intp)
    counts = np.bincount(codes, minlength=3)
    bg = slices.BatchGroups(codes, np.arange(3, dtype=np.intp), counts, n)
    got = bg.sums(x)
    exact = np.array([math.fsum(x[codes == k]) for k in range(3)])
    err = np.abs(got - exact) / exact
    plain = np.abs(np.bincount(codes, x, minlength=3) - exact) / exact
    assert err.max() <= 4e-16, err
    assert plain.max() > err.max()  # (the sequential sum is measurably worse on the same data)
    # and across batches: the table adds each batch's sums with compensation
    table = slices.GroupSums(1)
    for _ in range(50):
        table.add(np.arange(3, dtype=np.intp), got[:, None])
    tot, _ = table.values(3)
    np.testing.assert_allclose(tot[:, 0], 50 * got, rtol=2e-16)


def test_group_sums_beyond_the_double_range_match(monkeypatch, tmp_path):
    rng = np.random.default_rng(3)
    n = 3000
    y = rng.normal(size=n) * 1e153
    t = pa.table({"y": y, "yhat": -y, "g": rng.integers(0, 4, n)})
    path = tmp_path / "big.parquet"
    pq.write_table(t, path)
    a, b = both(monkeypatch, data=str(path), target="y", preds=["yhat"], losses=["mse", "mae"], by=["g"],
                batch_rows=700)
    same_report(a, b)
    assert all(math.isfinite(g.results[0].value) and g.results[0].value > 1e306 for g in a.groups)


def test_keys_crosses_missing_values_and_types(monkeypatch, tmp_path):
    """Crosses of several columns, nulls and NaN as one missing group, string, float, bool,
    dictionary and sparse integer keys: the same groups and numbers as the per-group path."""
    rng = np.random.default_rng(11)
    n = 5000
    y = rng.normal(size=n)
    f = rng.choice([0.5, -0.0, 0.0, 2.0, np.nan], n)
    s = pa.array(rng.choice(["a", "b", None, "c"], n).tolist())
    t = pa.table({
        "y": y, "yhat": y + rng.normal(0, 0.5, n), "f": f, "s": s, "d": s.dictionary_encode(),
        "b": pa.array(rng.random(n) < 0.3), "big": rng.choice([-(1 << 60), 5, 1 << 61], n),
        "i": pa.array(rng.choice([1, 2, None], n).tolist(), pa.int64()),
    })
    path = tmp_path / "k.parquet"
    pq.write_table(t, path, row_group_size=2000)
    for by in (["f"], ["s"], ["d"], ["b"], ["big"], ["i"], ["s", "f"], ["d", "b", "i"], ["s,b"]):
        a, b = both(monkeypatch, data=str(path), target="y", preds=["yhat"], losses=["mse", "mae"], by=by,
                    batch_rows=700)
        same_report(a, b)
    a = _run(monkeypatch, True, data=str(path), target="y", preds=["yhat"], losses=["mse"], by=["f"], batch_rows=700)
    assert [g.value for g in a.groups] == [-0.0, 0.5, 2.0, None] or [g.value for g in a.groups] == [0.0, 0.5, 2.0, None]
    assert sum(g.rows for g in a.groups) == n


def test_text_keys_read_as_numbers_are_written_as_the_file_writes_them(monkeypatch, tmp_path):
    """A CSV --by column that is also read as numbers (the target): 0 and 1, not 0.0 and 1.0;
    a batch whose values are integral beside one whose are not: 1 and 1.0 are one group."""
    lines = ["y,yhat"] + [f"{i % 3},{(i % 3) + 0.5}" for i in range(40)] + \
            [f"{[1.0, 2.5][i % 2]},{i % 3}" for i in range(40)]
    path = tmp_path / "k.csv"
    path.write_text("\n".join(lines) + "\n")
    a, b = both(monkeypatch, data=str(path), target="y", preds=["yhat"], losses=["mse"], by=["y"], batch_rows=40)
    same_report(a, b)
    assert [g.value for g in a.groups] == [0, 1, 2, 2.5]
    assert [type(g.value) for g in a.groups] == [int, int, int, float]
    assert [g.rows for g in a.groups] == [14, 33, 13, 20]


def test_states_that_are_not_sums_keep_a_state_per_group(monkeypatch, tmp_path):
    rng = np.random.default_rng(2)
    n = 3000
    t = pa.table({"p0": rng.random(n), "p1": rng.random(n), "q0": rng.random(n), "q1": rng.random(n),
                  "g": rng.integers(0, 5, n)})
    path = tmp_path / "d.parquet"
    pq.write_table(t, path)
    kw = dict(data=str(path), by=["g"], batch_rows=500, task="distribution")
    a, b = both(monkeypatch, losses=["kl:normalize=true", "js:normalize=true"], cols={"target": "p0,p1", "pred": "q0,q1"}, **kw)
    same_report(a, b)
    a, b = both(monkeypatch, losses=["wasserstein"], target="p0", preds=["q0", "q1"], **kw)
    same_report(a, b)
    assert a.groups[0].results[0].value > 0


@pytest.mark.parametrize("opt", [{}, {"grad": True}, {"ci": 0.9, "bootstrap": 40}, {"reduction": "sum"}])
def test_slices_take_the_per_row_statistics_of_the_overall_pass(monkeypatch, tmp_path, opt):
    """A regression loss's per-row statistics are computed once a batch: the fused pass that sums
    them for the whole data writes them for the slices too (no second ``stats`` call), and
    the values stay the per-group path's; the overall states pickle without them."""
    import pickle

    from lossctl.driver import accumulate
    from lossctl.losses.regression import Elementwise

    path = regression_file(tmp_path / "r.parquet", 9000, 4, seed=3)
    kw = dict(data=path, target="y", preds=["yhat"], losses=["mse", "mae"], by=["g"], batch_rows=2000, **opt)
    calls = []
    real = Elementwise.stats
    monkeypatch.setattr(Elementwise, "stats", lambda self, b, grad: calls.append(b.n) or real(self, b, grad))
    a, b = both(monkeypatch, **kw)
    same_report(a, b)
    calls.clear()
    monkeypatch.setattr(slices, "VECTORISE", True)
    plan, inputs = prepare(Request(**kw))
    acc = accumulate(plan, inputs)
    inputs.close()
    # 5 batches × 2 losses: per-row statistics only where the overall pass has no fused form
    assert len(calls) == (10 if opt.get("reduction") == "sum" else 0)
    for st in acc.states:
        assert "last_rows" not in pickle.loads(pickle.dumps(st)).__dict__


def test_group_states_view_serves_state_files_and_checks(monkeypatch, tmp_path):
    """The Mapping of states per group (state files, check's projections) holds the table's sums."""
    from lossctl.driver import accumulate

    path = regression_file(tmp_path / "r.parquet", 4000, 6, seed=9)
    monkeypatch.setattr(slices, "VECTORISE", True)
    plan, inputs = prepare(Request(data=path, target="y", preds=["yhat"], losses=["mse", "mae"], by=["g", "s"],
                           batch_rows=900))
    acc = accumulate(plan, inputs)
    inputs.close()
    monkeypatch.setattr(slices, "VECTORISE", False)
    plan2, inputs2 = prepare(Request(data=path, target="y", preds=["yhat"], losses=["mse", "mae"], by=["g", "s"],
                            batch_rows=900))
    ref = accumulate(plan2, inputs2)
    inputs2.close()
    assert set(acc.group_states) == set(ref.group_states)
    assert acc.group_rows == dict(ref.group_rows)
    for k in ref.group_states:
        for sa, sb in zip(acc.group_states[k], ref.group_states[k]):
            assert sa.n == sb.n
            np.testing.assert_allclose(sa.final_totals(), sb.final_totals(), rtol=1e-13)
            assert sa.to_dict()["n"] == sb.to_dict()["n"]


def test_per_image_segmentation_goes_through_the_slices_table(tmp_path):
    """Per-image Dice (an image_id column) in 20,000-row batches, images larger than CHUNK
    pixels and spanning batches: each image's value equals Dice on that image's pixels alone
    (the ungrouped path), the images listed in the order first seen."""
    from lossctl.losses import segmentation as S

    rng = np.random.default_rng(4)
    sizes = [9000, 300, 25000, 7000, 1, 12000]
    ids = np.concatenate([[f"img{k}"] * m for k, m in zip([5, 2, 9, 1, 7, 3], sizes)])
    n = ids.size
    mask = (rng.random(n) < 0.3).astype(np.int64)
    prob = np.clip(0.6 * mask + 0.4 * rng.random(n), 0, 1)
    path = tmp_path / "seg.parquet"
    pq.write_table(pa.table({"image_id": ids, "mask": mask, "prob": prob}), path)
    plan, inputs = prepare(Request(data=str(path), losses=["dice", "tversky:alpha=0.3,beta=0.7"], batch_rows=20000))
    try:
        rep = run(plan, inputs)
    finally:
        inputs.close()
    order = list(dict.fromkeys(ids.tolist()))
    for res, fn in zip(rep.results, (S.dice, lambda y, p: S.tversky(y, p, alpha=0.3, beta=0.7))):
        per = res.extra["per_image"]
        assert [e["image"] for e in per] == order
        for e in per:
            sel = ids == e["image"]
            assert e["value"] == pytest.approx(fn(mask[sel], prob[sel]), rel=1e-12)
        assert res.value == pytest.approx(np.mean([e["value"] for e in per]), rel=1e-13)


def test_nan_drop_and_min_rows_match_the_per_group_path(monkeypatch, tmp_path):
    """Rows dropped by --nan drop leave their slices (the codes are filtered with the rows);
    slices under --min-rows are hidden and counted, as before."""
    rng = np.random.default_rng(8)
    n = 4000
    y = rng.normal(size=n)
    yhat = y + rng.normal(0, 0.3, n)
    yhat[rng.random(n) < 0.05] = np.nan
    g = rng.choice(["a", "b", "c", "d"], n, p=[0.6, 0.3, 0.095, 0.005])
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"y": y, "yhat": yhat, "g": pa.array(g).dictionary_encode()}), path)
    a, b = both(monkeypatch, data=str(path), target="y", preds=["yhat"], losses=["mse", "mae"], by=["g"],
                batch_rows=900, nan="drop", min_rows=50)
    same_report(a, b)
    keep = ~np.isnan(yhat)
    assert [g_.rows for g_ in a.groups] == [int(np.sum(keep & (g == k))) for k in ("a", "b", "c")]
    assert a.hidden_groups == 1


def test_csv_lines_of_many_slices_are_what_csv_writer_writes():
    """The direct CSV lines of value-only slices: quoting, missing values, non-finite values,
    booleans and numbers exactly as the generic csv.writer rows (parsed back by csv)."""
    import csv
    import io

    from lossctl.render import _cell, render_report
    from lossctl.results import Group, LossResult, Report

    def res(v, worst=False):
        r = LossResult("mse", "mse", {}, "p", v, 7)
        r.worst = worst
        return r

    values = ["a,b", 'q"uote', "line\nbreak", None, 3, -7, 2.5, True, ""]
    xs = [1.25, math.inf, math.nan, -0.0, 1e-300, 3.0, 0.1, 2.0, 5.0]
    groups = [Group("k", v, 10 + i, [res(x, worst=i == 0), res(-x)]) for i, (v, x) in enumerate(zip(values, xs))]
    rep = Report(task="regression", task_inferred=False, rows=100, dropped_rows=0, results=[res(1.0)], groups=groups)
    out = io.StringIO()
    render_report(rep, "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    body = [r for r in rows if r["group"] != "(all)"]
    assert len(body) == 2 * len(groups)
    for row, (g, r) in zip(body, [(g, r) for g in groups for r in g.results]):
        assert row["by"] == "k" and row["group_rows"] == str(g.rows)
        assert row["group"] == ("" if g.value is None else "true" if g.value is True else str(g.value))
        assert row["missing"] == ("true" if g.value is None else "false")
        assert row["value"] == _cell(r.value) and row["n"] == "7" and row["spec"] == "mse"
        assert row["worst"] == ("true" if r.worst else "false")
    # integer slices without a missing one: their cells joined directly
    groups = [Group("k", v, 5, [res(x)]) for v, x in zip([-3, 0, 12], [0.5, 1.5, math.inf])]
    rep = Report(task="regression", task_inferred=False, rows=15, dropped_rows=0, results=[res(1.0)], groups=groups)
    out = io.StringIO()
    render_report(rep, "csv", out)
    assert out.getvalue().splitlines()[2:] == ["k,-3,5,mse,mse,p,0.5,7,false", "k,0,5,mse,mse,p,1.5,7,false",
                                               "k,12,5,mse,mse,p,inf,7,false"]


def test_integer_keys_with_a_missing_value_sort_numerically_then_missing(cli, tmp_path):
    # the integer fast path of the slice order also serves a column with nulls: numbers in
    # numeric order (not the order first seen, not as text), the missing group last
    import pyarrow as pa
    import pyarrow.parquet as pq

    g = pa.array([10, None, 2, 33, 2, None, -5, 10], type=pa.int64())
    y = np.arange(8, dtype=float)
    path = tmp_path / "g.parquet"
    pq.write_table(pa.table({"y": y, "yhat": y + 0.5, "g": g}), path)
    r = cli("eval", path, "-l", "mse", "--by", "g", "-f", "json", "--batch-rows", "3")
    assert r.code == 0, r.err
    groups = r.json()["groups"]
    assert [x["value"] for x in groups] == [-5, 2, 10, 33, None]
    assert groups[-1]["missing"] is True and groups[-1]["rows"] == 2
