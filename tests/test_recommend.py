"""`lossctl recommend`: evidence against independent oracles, every guide branch on
synthetic data of known character, real scikit-learn data with fitted models, and
the ranking's invariance under row order and batch size."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.stats as st

import lossctl
from lossctl import registry
from lossctl.errors import InputError, UsageError
from lossctl.recommend import evidence as E
from lossctl.recommend import rules as R

N = 20_000


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def ranking(a) -> list[str]:
    return [r.spec for r in a.recommendations]


def top(a):
    return a.recommendations[0]


def ruled(a) -> set[str]:
    return {o["loss"] for o in a.ruled_out}


# ------------------------------------------------------------------ the registry tags


@pytest.mark.parametrize("spec", registry.all_losses(), ids=lambda s: s.name)
def test_every_loss_carries_the_tags_recommend_reads(spec):
    p = spec.properties
    assert p.takes and p.minimiser and p.imbalance in ("no", "weights", "yes")
    assert p.robust in ("no", "bounded-influence", "yes")


def test_every_rule_names_registered_losses_and_explains_itself():
    for rule in R.RULES:
        for name, _ in rule.favours:
            registry.get(name)  # raises on an unknown name
        assert rule.explain and rule.guide
        assert bool(rule.rules_out) == bool(rule.trap)


# ------------------------------------------------------------------ regression: evidence vs oracles


def _residuals(seed=0, n=N):
    g = rng(seed)
    y = g.normal(size=n)
    e = g.standard_t(4, size=n)
    return y, y + e, e


def test_regression_evidence_matches_numpy_and_scipy():
    y, yh, r = _residuals(n=5000)  # below the sample size: every figure exact
    ev = lossctl.recommend(y, yh, check=False).evidence
    med = np.median(r)
    mad = np.median(np.abs(r - med))
    assert ev["residual_mean"] == pytest.approx(r.mean(), rel=1e-5)
    assert ev["residual_median"] == pytest.approx(med, rel=1e-5)
    assert ev["residual_mad"] == pytest.approx(st.median_abs_deviation(r), rel=1e-5)
    assert ev["robust_scale"] == pytest.approx(st.median_abs_deviation(r, scale="normal"), rel=1e-4)
    assert ev["residual_skewness"] == pytest.approx(st.skew(r), rel=1e-5)
    assert ev["residual_kurtosis"] == pytest.approx(st.kurtosis(r), rel=1e-5)
    assert ev["outlier_share"] == pytest.approx(np.mean(np.abs(r - med) > 3.5 * 1.482602218505602 * mad), abs=2e-4)
    k = int(np.ceil(0.01 * r.size))
    sq = np.sort(r * r)[::-1]
    assert ev["worst1pct_mse_share"] == pytest.approx(sq[:k].sum() / sq.sum(), rel=1e-5)
    assert ev["positive_share"] == pytest.approx(np.mean(r > 0), rel=1e-9)


def test_large_data_names_the_sampled_figures():
    y, yh, r = _residuals(n=100_000)
    a = lossctl.recommend(y, yh, check=False)
    assert "residual_median" in a.sampled and "residual_kurtosis" not in a.sampled
    assert a.sample_size == E.SAMPLE_ROWS
    # exact figures stay exact; sampled ones are close
    assert a.evidence["residual_kurtosis"] == pytest.approx(st.kurtosis(r), rel=1e-5)
    assert a.evidence["residual_median"] == pytest.approx(np.median(r), abs=0.02)
    d = a.to_dict()["evidence"]
    assert d["sampled"] and d["sample_size"] == E.SAMPLE_ROWS


def test_moments_merge_exactly():
    x = rng(3).lognormal(size=10_001)
    m1, m2 = E.Moments(), E.Moments()
    m1.update(x[:3000])
    m2.update(x[3000:7000])
    m2.update(x[7000:])
    m1.merge(m2)
    assert m1.skew == pytest.approx(st.skew(x), rel=1e-9)
    assert m1.kurtosis == pytest.approx(st.kurtosis(x), rel=1e-9)


def test_hash_sample_is_order_free():
    x = rng(4).normal(size=(20_000, 2))
    a, b = E.HashSample(1000), E.HashSample(1000)
    a.update(E.value_keys(x), {"x": x})
    perm = rng(5).permutation(len(x))
    for chunk in np.array_split(perm, 37):
        b.update(E.value_keys(x[chunk]), {"x": x[chunk]})
    assert np.array_equal(np.sort(a.keys), np.sort(b.keys))
    assert np.array_equal(np.sort(a.get("x")[:, 0]), np.sort(b.get("x")[:, 0]))


# ------------------------------------------------------------------ regression: guide branches


def test_clean_gaussian_residuals_recommend_mse():
    g = rng(1)
    y = g.normal(size=N)
    a = lossctl.recommend(y, y + g.normal(size=N))
    assert top(a).spec == "mse"
    assert "regression.clean" in a.rules_fired
    assert any("clean residuals" in s for s in top(a).reasons)


def test_gross_outliers_recommend_huber_with_delta_from_the_mad():
    g = rng(2)
    y = g.normal(size=N)
    e = g.normal(0, 2.0, size=N)
    bad = g.random(N) < 0.05
    e[bad] += g.normal(0, 100, size=bad.sum())
    a = lossctl.recommend(y, y + e)
    assert top(a).loss == "huber"
    r = e
    mad = st.median_abs_deviation(r)
    assert top(a).params["delta"] == pytest.approx(1.345 * mad / 0.6745, rel=1e-3)
    assert "MAD" in top(a).derivation["delta"]
    assert ranking(a)[1] == "mae" and ranking(a)[-1] == "mse"
    # the empirical check: Huber takes the gradient mass off the worst rows
    vs = top(a).versus_standard
    assert vs["standard"] == "mse" and vs["top1_share"] < 0.05 < vs["standard_top1_share"]
    assert top(a).value == pytest.approx(lossctl.evaluate(y, y + e, top(a).spec).value)
    assert "5.0% of residuals" in top(a).reasons[0] or "% of residuals lie beyond 10" in top(a).reasons[0]


def test_heavy_tails_without_outliers_recommend_huber():
    g = rng(3)
    y = g.normal(size=N)
    a = lossctl.recommend(y, y + g.laplace(size=N))
    assert top(a).loss == "huber"
    assert "regression.heavy_tails" in a.rules_fired and "regression.outliers" not in a.rules_fired
    assert a.evidence["gross_outlier_share"] < R.GROSS_SHARE < a.evidence["outlier_share"]


def test_skewed_residuals_recommend_mae():
    g = rng(4)
    y = g.normal(size=N)
    a = lossctl.recommend(y, y + g.exponential(size=N))
    assert top(a).spec == "mae"
    assert "regression.skewed" in a.rules_fired
    assert a.evidence["quartile_skewness"] == pytest.approx(np.log(4 / 3) / np.log(3) * 1.0, abs=0.05)  # Exp(1): 0.262


def test_goal_intervals_gives_the_tau_pair_of_the_coverage():
    g = rng(5)
    y = g.normal(size=N)
    a = lossctl.recommend(y, y + g.normal(size=N), coverage=0.8)
    assert a.goal == "intervals"
    assert ranking(a)[:2] == ["quantile:tau=0.1", "quantile:tau=0.9"]
    assert "(1 − C)/2" in a.recommendations[0].derivation["tau"]
    a = lossctl.recommend(y, y + g.normal(size=N), goal="intervals")
    assert ranking(a)[:2] == ["quantile:tau=0.05", "quantile:tau=0.95"]


def test_targets_alone_judge_the_target_distribution():
    g = rng(6)
    y = g.lognormal(size=N)
    a = lossctl.recommend(y)
    assert a.evidence["of"] == "targets" and top(a).loss == "mae"
    assert top(a).value is None  # nothing to evaluate without predictions


def test_regression_real_data_diabetes_with_a_fitted_model():
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    X, y = load_diabetes(return_X_y=True)
    yh = LinearRegression().fit(X, y).predict(X)
    a = lossctl.recommend(y, yh)
    r = yh - y
    assert a.evidence["residual_kurtosis"] == pytest.approx(st.kurtosis(r), rel=1e-5)
    assert a.evidence["residual_skewness"] == pytest.approx(st.skew(r), rel=1e-5)
    # near-Gaussian residuals of a linear model: the guide's "clean data → MSE"
    assert top(a).spec == "mse"
    assert top(a).value == pytest.approx(np.mean(r ** 2), rel=1e-12)


# ------------------------------------------------------------------ invariance


def _same_advice(a, b):
    assert ranking(a) == ranking(b)
    assert [o["loss"] for o in a.ruled_out] == [o["loss"] for o in b.ruled_out]
    for k, v in a.evidence.items():
        if isinstance(v, float):
            assert b.evidence[k] == pytest.approx(v, rel=1e-6, abs=1e-12), k


@pytest.mark.parametrize("batch_rows", [1000, 7777])
def test_regression_ranking_unchanged_under_permutation_and_batch_size(batch_rows):
    g = rng(7)
    y = g.normal(size=100_000)
    e = g.standard_t(3, size=y.size)
    a = lossctl.recommend(y, y + e, check=False)
    p = g.permutation(y.size)
    b = lossctl.recommend(y[p], (y + e)[p], batch_rows=batch_rows, check=False)
    _same_advice(a, b)
    assert a.sampled  # the sampled figures too
    assert top(a).params == top(b).params


# ------------------------------------------------------------------ the command line


def _parquet(tmp_path, name, **cols):
    path = tmp_path / name
    pq.write_table(pa.table({k: np.asarray(v) for k, v in cols.items()}), path)
    return str(path)


def test_cli_json_document(cli, tmp_path):
    g = rng(8)
    y = g.normal(size=5000)
    e = g.normal(size=5000)
    e[:200] += 80
    path = _parquet(tmp_path, "reg.parquet", y=y, yhat=y + e)
    r = cli("recommend", path, "-f", "json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["schema_version"] == 1 and d["task"] == "regression" and d["rows"] == 5000
    assert {"residual_kurtosis", "outlier_share", "robust_scale", "sampled"} <= set(d["evidence"])
    first = d["recommendations"][0]
    assert first["loss"] == "huber" and set(first["params"]) == {"delta"} and first["reasons"]
    assert "derivation" in first and "grad" in first and "versus_standard" in first and "value" in first
    lib = lossctl.recommend(y, y + e)
    assert [x["spec"] for x in d["recommendations"]] == ranking(lib)
    assert first["value"] == pytest.approx(top(lib).value, rel=1e-12)


def test_cli_table_fits_80_columns_and_markdown(cli, tmp_path):
    g = rng(9)
    y = g.normal(size=3000)
    path = _parquet(tmp_path, "reg.parquet", y=y, yhat=y + g.exponential(size=3000))
    r = cli("recommend", path, "-f", "table")
    assert r.code == 0 and "Ranking" in r.out and "mae" in r.out
    assert max(len(line) for line in r.out.splitlines()) <= 80
    m = cli("recommend", path, "-f", "markdown")
    assert m.code == 0 and m.out.startswith("## lossctl recommend: regression") and "| 1 | `mae`" in m.out


def test_cli_batch_rows_and_row_order_do_not_change_the_output(cli, tmp_path):
    g = rng(10)
    y = g.normal(size=20_000)
    e = g.standard_t(3, size=y.size)
    p = g.permutation(y.size)
    a = _parquet(tmp_path, "a.parquet", y=y, yhat=y + e)
    b = _parquet(tmp_path, "b.parquet", y=y[p], yhat=(y + e)[p])
    ja = cli("recommend", a, "-f", "json", "--no-check").json()
    jb = cli("recommend", b, "-f", "json", "--no-check", "--batch-rows", "999").json()
    assert [x["spec"] for x in ja["recommendations"]] == [x["spec"] for x in jb["recommendations"]]


def test_cli_bad_input_is_one_line_exit_2(cli, write_csv):
    path = write_csv("bad.csv", "y,yhat\n1,2\n2,nan\n3,4\n")
    r = cli("recommend", path)
    assert r.code == 2 and r.out == ""
    assert len(r.err.strip().splitlines()) == 1 and "row 2" in r.err and "yhat" in r.err
    r = cli("recommend", path, "--goal", "wings")
    assert r.code == 2 and "unknown goal" in r.err
    r = cli("recommend", path, "--coverage", "1.5")
    assert r.code == 2 and "--coverage" in r.err
    r = cli("recommend", path, "--goal", "vae", "--task", "regression")
    assert r.code == 2 and "goal 'vae'" in r.err


def test_cli_targets_only_file(cli, write_csv):
    g = rng(11)
    path = write_csv("t.csv", "y\n" + "".join(f"{v}\n" for v in g.normal(size=500)))
    r = cli("recommend", path, "-f", "json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["evidence"]["of"] == "targets" and d["recommendations"][0]["loss"] == "mse"
    assert "no prediction column" in r.err


def test_library_errors():
    with pytest.raises(UsageError):
        lossctl.recommend([1.0, 2.0], [1.0, 2.5], goal="nope")
    with pytest.raises(InputError):
        lossctl.recommend([1.0, np.nan], [1.0, 2.0])
