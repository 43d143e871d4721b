"""The streaming engine: exact sums, gradient summaries, bootstrap, slices, state files."""
from __future__ import annotations

import io
import os
import json
import math

import numpy as np
import pandas as pd
import pytest

import lossctl
from lossctl.accumulate import GradSummary, Sum
from lossctl.engine import ROW_UNITS_LIMIT, percentile_interval
from lossctl.progress import wanted

from conftest import SAMPLES


def test_compensated_sum_keeps_small_terms():
    s = Sum(1)
    s.add(np.array([1e16]))
    for _ in range(1000):
        s.add(np.array([1.0]))
    s.add(np.array([-1e16]))
    assert s.value[0] == 1000.0  # a plain float sum gives 0


def reference_summary(g: np.ndarray) -> dict:
    """An independent numpy computation of CLI.md's gradient summary."""
    rows = g.reshape(len(g), -1)
    l1 = np.abs(rows).sum(axis=1)
    k = max(1, math.ceil(0.01 * len(g)))
    return {
        "mean": rows.mean(), "std": rows.std(), "min": rows.min(), "max": rows.max(),
        "abs_mean": np.abs(rows).mean(), "l2": np.sqrt((rows ** 2).sum()),
        "zero_frac": np.mean(l1 == 0), "top1_share": np.sort(l1)[-k:].sum() / l1.sum(),
    }


@pytest.mark.parametrize("shape", [(1000,), (537, 3)])
def test_grad_summary_matches_numpy_and_is_batch_invariant(shape):
    rng = np.random.default_rng(1)
    g = rng.standard_t(2, shape)
    g[rng.random(shape[0]) < 0.1] = 0
    ref = reference_summary(g)
    for step in (1, 7, 100, shape[0]):
        s = GradSummary(rows_bound=shape[0])
        for i in range(0, shape[0], step):
            s.update(g[i:i + step], i)
        got = s.result()
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, rel=1e-10, abs=1e-12), (step, k)


@pytest.mark.parametrize("order", ["random", "ascending"])
@pytest.mark.parametrize("bound", [True, False])
def test_top1_share_stays_exact_when_the_candidate_buffer_is_pruned(order, bound):
    # 300,000 rows keep 3,000 candidates in a buffer of 4,024: every batch prunes it (in place
    # when the survivors fit); ascending rows make every row a candidate for a while
    rng = np.random.default_rng(8)
    g = rng.standard_t(3, 300_000)
    if order == "ascending":
        g = np.sort(np.abs(g))
    ref = reference_summary(g)["top1_share"]
    for step in (1000, 7777, 65_536):
        s = GradSummary(rows_bound=g.size if bound else None)
        for i in range(0, g.size, step):
            s.update(g[i:i + step], i)
        assert s.top1_exact(), step
        assert s.result()["top1_share"] == pytest.approx(ref, rel=1e-12), step


def test_grad_summary_merge_and_scale():
    rng = np.random.default_rng(2)
    g = rng.normal(size=3000)
    a, b = GradSummary(1500, keep_factor=2), GradSummary(1500, keep_factor=2)  # as --emit-state keeps
    a.update(g[:1500], 0)
    b.update(g[1500:], 1500)
    a.merge(b)
    ref = reference_summary(g * 2.5)
    got = a.result(2.5)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-10)
    assert a.top1_exact()


def test_top1_share_flags_a_lower_bound_after_an_unlucky_merge():
    # shard a holds all the large gradients; each shard pruned to its own top 1%
    big = np.linspace(100, 200, 400)
    small = np.full(20000, 0.001)
    a, b = GradSummary(400), GradSummary(20000)
    a.update(big, 0)
    b.update(small, 400)
    a.merge(b)
    assert not a.top1_exact()


def test_weighted_mean_gradient_is_scaled_by_n_over_sum_of_weights():
    y = np.array([0.0, 0.0, 0.0])
    p = np.array([1.0, 2.0, 3.0])
    w = np.array([1.0, 0.0, 2.0])
    r = lossctl.evaluate(y, p, "mse", weight=w, grad=True)
    g = 3 * w * 2 * p / w.sum()  # ∂(N·L)/∂ŷ with L = Σwℓ/Σw
    assert r.grad["mean"] == pytest.approx(g.mean())
    assert r.grad["zero_frac"] == pytest.approx(1 / 3)


def test_bootstrap_is_reproducible_and_paired():
    rng = np.random.default_rng(3)
    y = rng.normal(size=400)
    p = y + rng.normal(size=400)
    a = lossctl.evaluate(y, p, "mae", ci=0.9, seed=7)
    assert a.ci_method == "percentile bootstrap over rows"
    assert a.ci[0] < a.value < a.ci[1]
    assert lossctl.evaluate(y, p, "mae", ci=0.9, seed=7).ci == a.ci  # reproducible with a seed
    assert lossctl.evaluate(y, p, "mae", ci=0.9, seed=8).ci != a.ci  # and the seed matters


def test_bootstrap_interval_agrees_with_a_reference_row_bootstrap():
    rng = np.random.default_rng(4)
    y = rng.normal(size=300)
    p = y + rng.standard_t(3, 300)
    r = lossctl.evaluate(y, p, "mse", ci=0.95, bootstrap=4000, seed=1)
    # reference: resample rows with replacement, 4000 times, percentile interval
    ref_rng = np.random.default_rng(123)
    l = (p - y) ** 2
    boots = np.array([l[ref_rng.integers(0, 300, 300)].mean() for _ in range(4000)])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    assert r.ci[0] == pytest.approx(lo, rel=0.05)
    assert r.ci[1] == pytest.approx(hi, rel=0.05)


def test_bootstrap_on_large_data_uses_hashed_blocks_and_stays_sensible():
    rng = np.random.default_rng(5)
    n = ROW_UNITS_LIMIT * 2
    y = rng.normal(size=n)
    p = y + rng.normal(size=n)
    r = lossctl.evaluate(y, p, "mae", ci=0.95, bootstrap=300, batch_rows=10000)
    assert "hashed row blocks" in r.ci_method
    se = np.abs(p - y).std() / math.sqrt(n)
    assert r.ci[1] - r.ci[0] == pytest.approx(2 * 1.96 * se, rel=0.2)
    r2 = lossctl.evaluate(y, p, "mae", ci=0.95, bootstrap=300, batch_rows=7777)
    assert r2.ci == pytest.approx(r.ci, rel=1e-12)  # units do not depend on batches


def test_percentile_interval_ignores_nonfinite():
    assert percentile_interval(np.array([1.0, 2.0, np.inf, 3.0]), 0.5) == pytest.approx((1.5, 2.5))


def test_slices_match_pandas_groupby(cli, tmp_path):
    rng = np.random.default_rng(6)
    n = 500
    df = pd.DataFrame({"g": rng.choice(["a", "b", "c"], n), "h": rng.integers(0, 2, n),
                       "y": rng.normal(size=n), "yhat": rng.normal(size=n)})
    path = tmp_path / "s.parquet"
    df.to_parquet(path)
    d = cli("eval", str(path), "-l", "mae", "--by", "g", "--by", "h", "-f", "json").json()
    ref = df.assign(ae=(df.yhat - df.y).abs()).groupby(["g", "h"]).ae.agg(["mean", "size"])
    assert len(d["groups"]) == len(ref)
    for g in d["groups"]:
        row = ref.loc[tuple(g["value"])]
        assert g["rows"] == row["size"]
        assert g["results"][0]["value"] == pytest.approx(row["mean"], rel=1e-12)
    small = cli("eval", str(path), "-l", "mae", "--by", "g", "--min-rows", "170", "-f", "json").json()
    assert all(g["rows"] >= 170 for g in small["groups"])


def test_merged_state_files_equal_one_run(cli, tmp_path):
    rng = np.random.default_rng(7)
    n = 3000
    df = pd.DataFrame({"g": rng.choice(["a", "b"], n), "y": rng.normal(size=n), "yhat": rng.normal(size=n) * 2})
    whole = tmp_path / "all.csv"
    df.to_csv(whole, index=False)
    parts = [df.iloc[:1000], df.iloc[1000:2200], df.iloc[2200:]]
    states, offset = [], 0
    args = ["-l", "mse", "-l", "huber:delta=0.5", "-l", "rmse", "--grad", "--ci", "0.9", "--by", "g"]
    for i, part in enumerate(parts):
        p = tmp_path / f"p{i}.csv"
        part.to_csv(p, index=False)
        s = tmp_path / f"p{i}.state"
        assert cli("eval", str(p), *args, "--emit-state", str(s), "--row-offset", str(offset), "-q").code == 0
        offset += len(part)
        states.append(str(s))
        json.loads(s.read_text())  # plain JSON, no NaN/Infinity tokens
    one = cli("eval", str(whole), *args, "-f", "json").json()
    merged = cli("merge", *states, "-f", "json").json()
    assert merged["rows"] == one["rows"] == n
    for a, b in zip(one["results"] + [r for g in one["groups"] for r in g["results"]],
                    merged["results"] + [r for g in merged["groups"] for r in g["results"]]):
        assert a["value"] == pytest.approx(b["value"], rel=1e-13)
        assert a["ci"] == pytest.approx(b["ci"], rel=1e-12)
        for k in a["grad"]:
            assert a["grad"][k] == pytest.approx(b["grad"][k], rel=1e-10, abs=1e-15), k


def test_merge_rejects_different_evaluations(cli, tmp_path, write_csv):
    f = write_csv("a.csv", "y,yhat\n1,2\n3,4\n")
    cli("eval", f, "-l", "mse", "--emit-state", str(tmp_path / "a.state"))
    cli("eval", f, "-l", "mae", "--emit-state", str(tmp_path / "b.state"))
    r = cli("merge", str(tmp_path / "a.state"), str(tmp_path / "b.state"))
    assert r.code == 2 and "differ" in r.err
    (tmp_path / "c.state").write_text("not json")
    assert cli("merge", str(tmp_path / "c.state")).code == 2


def test_progress_bar_only_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert wanted(False, Tty())
    assert not wanted(True, Tty())  # -q
    assert not wanted(False, io.StringIO())  # a pipe
    monkeypatch.setenv("CI", "true")
    assert not wanted(False, Tty())


def test_no_progress_output_in_pipes(tmp_path):
    from conftest import run_subprocess

    n = 300_000
    rng = np.random.default_rng(0)
    path = tmp_path / "big.csv"
    pd.DataFrame({"y": rng.normal(size=n), "yhat": rng.normal(size=n)}).to_csv(path, index=False)
    r = run_subprocess("eval", str(path), "-l", "mse", "-f", "json")
    assert r.code == 0 and r.err == ""


def test_float32_columns_are_computed_in_float64(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    y = rng.normal(size=5000).astype(np.float32)
    p = (y + rng.normal(size=5000)).astype(np.float32)
    path = tmp_path / "f32.parquet"
    pq.write_table(pa.table({"y": y, "yhat": p}), path)
    d = cli("eval", str(path), "-l", "mse", "-f", "json").json()
    exact = np.mean((p.astype(np.float64) - y.astype(np.float64)) ** 2)
    assert d["results"][0]["value"] == pytest.approx(exact, rel=1e-14)


def test_library_evaluate_is_not_shadowed_by_a_submodule():
    import lossctl.assemble  # noqa: F401

    assert callable(lossctl.evaluate)
    assert lossctl.evaluate([1.0], [2.0], "mse").value == 1.0


def test_top1_share_without_a_row_bound_is_exact_or_says_so():
    rng = np.random.default_rng(8)
    g = rng.standard_t(1.5, 400_000)
    ref = reference_summary(g)["top1_share"]
    s = GradSummary(None)
    for i in range(0, g.size, 4096):
        s.update(g[i:i + 4096], i)
    assert s.top1_exact() and s.result()["top1_share"] == pytest.approx(ref, rel=1e-12)
    desc = np.sort(np.abs(g))[::-1]  # the largest rows first: pruning early loses rows the answer needs
    s = GradSummary(None)
    for i in range(0, desc.size, 4096):
        s.update(desc[i:i + 4096], i)
    ref = reference_summary(desc)["top1_share"]
    if s.top1_exact():
        assert s.result()["top1_share"] == pytest.approx(ref, rel=1e-12)
    else:  # flagged: a lower bound
        assert s.result()["top1_share"] <= ref * (1 + 1e-12)


SAMPLE_FILES = sorted(f for f in os.listdir(SAMPLES) if f.endswith((".csv", ".parquet")))


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_every_sample_file_gives_the_same_numbers_whatever_the_batch_size(cli, name):
    path = os.path.join(SAMPLES, name)
    one = cli("eval", path, "-f", "json", "--grad")
    assert one.code == 0, one.err
    small = cli("eval", path, "-f", "json", "--grad", "--batch-rows", "997")
    assert small.code == 0, small.err
    for a, b in zip(one.json()["results"], small.json()["results"]):
        assert a["spec"] == b["spec"]
        assert a["value"] == pytest.approx(b["value"], rel=1e-10, abs=1e-12), name
        for k in ("mean", "l2", "abs_mean", "zero_frac", "top1_share"):
            assert a["grad"][k] == pytest.approx(b["grad"][k], rel=1e-9, abs=1e-12), (name, a["spec"], k)


def test_state_files_for_segmentation_and_the_states_that_cannot_be_saved(cli, tmp_path, write_csv):
    f = write_csv("seg.csv", "mask,prob\n0,0.1\n1,0.8\n1,0.7\n0,0.2\n1,0.4\n")
    one = cli("eval", f, "-l", "dice", "-l", "tversky", "-f", "json").json()
    s = tmp_path / "s.state"
    assert cli("eval", f, "-l", "dice", "-l", "tversky", "--emit-state", str(s), "-q").code == 0
    merged = cli("merge", str(s), "-f", "json").json()
    assert [r["value"] for r in merged["results"]] == pytest.approx([r["value"] for r in one["results"]], rel=1e-15)
    for path, args in ((os.path.join(SAMPLES, "segmentation.parquet"), []),
                       (os.path.join(SAMPLES, "wasserstein.csv"), []),
                       (os.path.join(SAMPLES, "embeddings.parquet"), [])):
        r = cli("eval", path, *args, "--emit-state", str(tmp_path / "x.state"), "-q")
        assert r.code == 2 and "cannot be saved" in r.err, r.err
        assert not (tmp_path / "x.state").exists()


def test_a_slice_where_a_loss_is_undefined_reports_nan_with_a_note(cli):
    d = cli("eval", os.path.join(SAMPLES, "embeddings.parquet"), "--by", "label", "-f", "json").json()
    assert d["results"][0]["value"] > 0  # the whole file has many classes
    g = d["groups"][0]["results"][0]
    assert g["value"] is None and g["nonfinite"] == "nan" and "undefined in this slice" in g["notes"][0]
