"""lossctl end to end on real data: scikit-learn's bundled datasets, simple models,
files written the way pandas writes them, and every number checked against
scikit-learn / scipy computed on the same file read back by pandas.

Datasets: load_diabetes (LinearRegression, Ridge, QuantileRegressor), load_breast_cancer
(binary LogisticRegression), load_iris, load_wine, load_digits (multiclass
LogisticRegression). No network: only the datasets shipped inside scikit-learn.
"""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, huber, softmax

from conftest import run_subprocess

sklearn = pytest.importorskip("sklearn")
from sklearn import datasets  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression, QuantileRegressor, Ridge  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    hinge_loss,
    log_loss,
    mean_absolute_error,
    mean_pinball_loss,
    mean_squared_error,
    root_mean_squared_error,
)
from sklearn.preprocessing import StandardScaler  # noqa: E402

REL = 1e-12


def close(a, b, rel=REL):
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


# ------------------------------------------------------------------ data sets, written once per module


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("real")
    out: dict[str, str] = {}

    def path(name: str) -> str:
        out[name] = str(d / name)
        return out[name]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)

        # diabetes: regression, two models, a categorical column
        diab = datasets.load_diabetes(as_frame=True)
        X, y = diab.data, diab.target
        df = X.copy()
        df["target"] = y
        df["prediction"] = LinearRegression().fit(X, y).predict(X)
        df["ridge"] = Ridge(alpha=1.0).fit(X, y).predict(X)
        df["sex_cat"] = np.where(df["sex"] > 0, "M", "F")
        df["w"] = np.arange(len(df)) % 5 + 0.5
        df.to_csv(path("diab_index.csv"))  # pandas' default: an unnamed index column first
        df.to_csv(path("diab.csv"), index=False)
        df.to_csv(path("diab.tsv"), sep="\t", index=False)
        df.to_csv(path("diab.csv.gz"), index=False)
        df.to_json(path("diab.jsonl"), orient="records", lines=True)
        cat = df.copy()
        cat["sex_cat"] = cat["sex_cat"].astype("category")
        cat.index.name = "pid"
        cat.to_parquet(path("diab.parquet"))
        f32 = df.copy()
        f32[["target", "prediction"]] = f32[["target", "prediction"]].astype("float32")
        f32.to_csv(path("diab32.csv"), index=False)
        f32.to_parquet(path("diab32.parquet"))

        # quantile regressors: tau 0.9 (y_true/y_pred) and a 90% interval (q_lo/q_hi)
        qr = {q: QuantileRegressor(quantile=q, alpha=0.0, solver="highs").fit(X, y).predict(X) for q in (0.05, 0.9, 0.95)}
        pd.DataFrame({"y_true": y, "y_pred": qr[0.9]}).to_csv(path("diab_q.csv"), index=False)
        pd.DataFrame({"y": y, "q_lo": qr[0.05], "q_hi": qr[0.95]}).to_csv(path("diab_interval.csv"), index=False)

        # two outputs (multi-output regression) named y_0, y_1 / y_pred_0, y_pred_1
        Y = np.c_[y, X["bmi"] * 100]
        P = Ridge(alpha=0.1).fit(X, Y).predict(X)
        pd.DataFrame({"y_0": Y[:, 0], "y_1": Y[:, 1], "y_pred_0": P[:, 0], "y_pred_1": P[:, 1]}).to_csv(
            path("multi_output.csv"), index=False)

        # breast cancer: binary, probabilities and logits
        bc = datasets.load_breast_cancer(as_frame=True)
        Xs = StandardScaler().fit_transform(bc.data)
        clf = LogisticRegression(max_iter=200).fit(Xs, bc.target)
        b = pd.DataFrame({"label": bc.target.astype("int64"), "prob": clf.predict_proba(Xs)[:, 1],
                          "logit": clf.decision_function(Xs)})
        b["radius"] = pd.cut(bc.data["mean radius"], 3, labels=["small", "mid", "large"]).astype(str)
        b.to_csv(path("bc.csv"), index=False)
        b8 = b.copy()
        b8["label"] = b8["label"].astype("int8")
        b8["radius"] = b8["radius"].astype("category")
        b8.to_parquet(path("bc.parquet"))
        bnan = b.copy()
        bnan.loc[[3, 10], "prob"] = np.nan
        bnan.to_csv(path("bc_nan.csv"), index=False)
        bnan.to_json(path("bc_nan.jsonl"), orient="records", lines=True)
        bad = b.copy()
        bad.loc[5, "label"] = 2
        bad.to_csv(path("bc_label2.csv"), index=False)
        names = b[["prob", "label"]].copy()  # string class names, the label not the first column
        names["label"] = np.array(bc.target_names)[b["label"]]
        names.to_csv(path("bc_names.csv"), index=False)

        # iris: class + prob_0..prob_2 and the species name
        ir = datasets.load_iris(as_frame=True)
        pi = LogisticRegression(max_iter=200).fit(ir.data, ir.target).predict_proba(ir.data)
        i = pd.DataFrame(pi, columns=[f"prob_{k}" for k in range(3)])
        i.insert(0, "class", ir.target.values)
        i["species"] = np.array(ir.target_names)[ir.target.values]
        i.to_csv(path("iris.csv"), index=False)
        i.to_parquet(path("iris.parquet"))

        # wine: class names mapped to integers, decision_function scores score_0..2
        wi = datasets.load_wine(as_frame=True)
        Xw = StandardScaler().fit_transform(wi.data)
        zw = LogisticRegression(max_iter=200).fit(Xw, wi.target).decision_function(Xw)
        w = pd.DataFrame({"cultivar": np.array(wi.target_names)[wi.target]})
        w["y"] = w["cultivar"].map({n: k for k, n in enumerate(wi.target_names)})
        for k in range(3):
            w[f"score_{k}"] = zw[:, k]
        w.to_csv(path("wine_scores.csv"), index=False)

        # digits: label + logit_0..logit_9
        dg = datasets.load_digits()
        zd = LogisticRegression(max_iter=100).fit(dg.data / 16, dg.target).decision_function(dg.data / 16)
        g = pd.DataFrame(zd, columns=[f"logit_{k}" for k in range(10)])
        g.insert(0, "label", dg.target)
        g.to_csv(path("digits_logits.csv"), index=False)
    return out


def read_back(path: str) -> pd.DataFrame:
    """The file as pandas reads it (pandas' JSON keeps 10 digits, float32 stays float32)."""
    if path.endswith(".jsonl"):
        return pd.read_json(path, orient="records", lines=True)
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.endswith(".tsv"):
        return pd.read_csv(path, sep="\t")
    return pd.read_csv(path)


def results(doc: dict) -> dict[tuple[str, str], dict]:
    return {(r["spec"], r["pred"]): r for r in doc["results"]}


# ------------------------------------------------------------------ regression


@pytest.mark.parametrize("name", ["diab.csv", "diab_index.csv", "diab.tsv", "diab.csv.gz", "diab.jsonl",
                                  "diab.parquet", "diab32.csv", "diab32.parquet"])
def test_regression_defaults_match_sklearn_in_every_format(cli, files, name):
    r = cli("eval", files[name], "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "regression" and doc["task_inferred"] is True
    assert doc["bindings"] == {"target": "target", "pred": "prediction"}
    assert doc["rows"] == 442
    df = read_back(files[name])
    y, p = df["target"].to_numpy("f8"), df["prediction"].to_numpy("f8")
    got = {res["loss"]: res["value"] for res in doc["results"]}
    assert list(got) == ["mse", "mae", "huber", "quantile"]
    assert close(got["mse"], mean_squared_error(y, p))
    assert close(got["mae"], mean_absolute_error(y, p))
    assert close(got["huber"], float(np.mean(huber(1.0, p - y))))
    assert close(got["quantile"], mean_pinball_loss(y, p, alpha=0.5))


def test_weights_and_explicit_columns(cli, files):
    r = cli("eval", files["diab.csv"], "-t", "target", "-p", "ridge", "-w", "w",
            "-l", "mse", "-l", "mae", "-l", "quantile:tau=0.9", "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["bindings"] == {"target": "target", "pred": "ridge", "weight": "w"}
    df = read_back(files["diab.csv"])
    y, p, w = df["target"], df["ridge"], df["w"]
    got = {res["spec"]: res["value"] for res in doc["results"]}
    assert close(got["mse"], mean_squared_error(y, p, sample_weight=w))
    assert close(got["mae"], mean_absolute_error(y, p, sample_weight=w))
    assert close(got["quantile:tau=0.9"], mean_pinball_loss(y, p, alpha=0.9, sample_weight=w))


def test_quantile_regressor_losses_and_gradients(cli, files):
    r = cli("eval", files["diab_q.csv"], "-l", "quantile:tau=0.9", "-l", "rmse", "-l", "log_cosh",
            "-l", "huber:delta=20", "--grad", "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["bindings"] == {"target": "y_true", "pred": "y_pred"}
    df = read_back(files["diab_q.csv"])
    y, p = df["y_true"].to_numpy(), df["y_pred"].to_numpy()
    res = {x["spec"]: x for x in doc["results"]}
    assert close(res["quantile:tau=0.9"]["value"], mean_pinball_loss(y, p, alpha=0.9))
    assert close(res["rmse"]["value"], root_mean_squared_error(y, p))
    rr = p - y
    assert close(res["log_cosh"]["value"], float(np.mean(np.log(np.cosh(rr)))), rel=1e-10)
    assert close(res["huber:delta=20"]["value"], float(np.mean(huber(20.0, rr))))
    # gradients w.r.t. the prediction: pinball τ-1 / τ, huber clip(r, ±δ), log-cosh tanh(r)
    g_q = np.where(y - p > 0, -0.9, np.where(y - p < 0, 0.1, 0.0))
    assert close(res["quantile:tau=0.9"]["grad"]["mean"], float(g_q.mean()), rel=1e-9)
    assert close(res["quantile:tau=0.9"]["grad"]["l2"], float(np.linalg.norm(g_q)), rel=1e-12)
    g_h = np.clip(rr, -20, 20)
    assert close(res["huber:delta=20"]["grad"]["abs_mean"], float(np.abs(g_h).mean()))
    assert close(res["log_cosh"]["grad"]["std"], float(np.tanh(rr).std()), rel=1e-10)


def test_mse_gradient_summary(cli, files):
    r = cli("eval", files["diab.parquet"], "-l", "mse", "--grad", "-f", "json")
    g = r.json()["results"][0]["grad"]
    df = read_back(files["diab.parquet"])
    gi = 2 * (df["prediction"] - df["target"]).to_numpy()
    assert math.isclose(g["mean"], gi.mean(), abs_tol=1e-9)
    assert close(g["std"], gi.std(), rel=1e-12)
    assert close(g["min"], gi.min()) and close(g["max"], gi.max())
    assert close(g["abs_mean"], np.abs(gi).mean())
    assert close(g["l2"], float(np.linalg.norm(gi)))
    assert g["zero_frac"] == 0.0
    top = np.sort(np.abs(gi))[::-1][: math.ceil(0.01 * gi.size)]
    assert close(g["top1_share"], top.sum() / np.abs(gi).sum())


def test_interval_from_two_quantile_regressors(cli, files):
    r = cli("eval", files["diab_interval.csv"], "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "regression"
    assert doc["bindings"] == {"target": "y", "lower": "q_lo", "upper": "q_hi"}
    (res,) = doc["results"]
    df = read_back(files["diab_interval.csv"])
    y, lo, hi = df["y"], df["q_lo"], df["q_hi"]
    want = 0.5 * (mean_pinball_loss(y, lo, alpha=0.05) + mean_pinball_loss(y, hi, alpha=0.95))
    assert res["loss"] == "interval" and close(res["value"], want)
    assert close(res["coverage"], float(np.mean((y >= lo) & (y <= hi))))


def test_multi_output_columns_bind_by_name(cli, files):
    """y_pred_0 and y_pred_1 are predictions (y_pred_*), not more targets (y_*)."""
    r = cli("eval", files["multi_output.csv"], "-l", "mse", "-l", "rmse", "-l", "mae", "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "regression"
    assert doc["bindings"] == {"target": ["y_0", "y_1"], "pred": ["y_pred_0", "y_pred_1"]}
    df = read_back(files["multi_output.csv"])
    Y, P = df[["y_0", "y_1"]].to_numpy(), df[["y_pred_0", "y_pred_1"]].to_numpy()
    got = {x["spec"]: x["value"] for x in doc["results"]}
    assert close(got["mse"], mean_squared_error(Y, P))
    assert close(got["rmse"], root_mean_squared_error(Y, P))
    assert close(got["mae"], mean_absolute_error(Y, P))


def test_model_comparison_with_ci(cli, files):
    args = ["eval", files["diab.parquet"], "-p", "prediction", "-p", "ridge", "-l", "mse", "-l", "mae",
            "--ci", "0.95", "--bootstrap", "300", "--seed", "7", "-f", "json"]
    doc = cli(*args).json()
    df = read_back(files["diab.parquet"])
    y = df["target"]
    res = results(doc)
    for spec, fn in (("mse", mean_squared_error), ("mae", mean_absolute_error)):
        a, b = res[(spec, "prediction")], res[(spec, "ridge")]
        assert close(a["value"], fn(y, df["prediction"])) and close(b["value"], fn(y, df["ridge"]))
        for x in (a, b):
            assert x["ci"][0] < x["value"] < x["ci"][1]
        (c,) = [c for c in doc["comparisons"] if c["spec"] == spec]
        assert c["baseline"] == "prediction" and c["pred"] == "ridge"
        assert close(c["delta"], b["value"] - a["value"], rel=1e-9)
        assert c["ci"][0] < c["delta"] < c["ci"][1]
    assert cli(*args).json() == doc  # --seed makes it reproducible


def test_by_a_categorical_parquet_column(cli, files):
    doc = cli("eval", files["diab.parquet"], "-l", "mse", "--by", "sex_cat", "-f", "json").json()
    df = read_back(files["diab.parquet"])
    groups = {g["value"]: g for g in doc["groups"]}
    assert set(groups) == {"F", "M"}
    for v, sub in df.groupby("sex_cat", observed=True):
        assert groups[v]["rows"] == len(sub)
        assert close(groups[v]["results"][0]["value"], mean_squared_error(sub["target"], sub["prediction"]))


def test_reduction_none_with_id_and_grad(cli, files):
    r = cli("eval", files["diab.csv"], "-l", "mse", "-l", "huber:delta=10", "--reduction", "none",
            "--id", "sex_cat", "--grad", "-f", "csv")
    assert r.code == 0, r.err
    out = pd.read_csv(__import__("io").StringIO(r.out))
    assert list(out.columns) == ["sex_cat", "mse", "mse.grad", "huber:delta=10", "huber:delta=10.grad"]
    df = read_back(files["diab.csv"])
    rr = (df["prediction"] - df["target"]).to_numpy()
    assert (out["sex_cat"] == df["sex_cat"]).all()
    np.testing.assert_allclose(out["mse"], rr ** 2, rtol=1e-15)
    np.testing.assert_allclose(out["mse.grad"], 2 * rr, rtol=1e-15)
    np.testing.assert_allclose(out["huber:delta=10"], huber(10.0, rr), rtol=1e-15)
    np.testing.assert_allclose(out["huber:delta=10.grad"], np.clip(rr, -10, 10), rtol=1e-15)


def test_output_formats_carry_the_same_numbers(cli, files):
    f = files["diab.csv"]
    want = {x["spec"]: x["value"] for x in cli("eval", f, "-f", "json").json()["results"]}
    import io

    for fmt, sep in (("csv", ","), ("tsv", "\t")):
        t = pd.read_csv(io.StringIO(cli("eval", f, "-f", fmt).out), sep=sep)
        assert dict(zip(t["spec"], t["value"])) == want
    lines = [json.loads(x) for x in cli("eval", f, "-f", "jsonl").out.splitlines()]
    assert {x["spec"]: x["value"] for x in lines} == want
    md = cli("eval", f, "-f", "markdown", "-p", "prediction", "-p", "ridge", "-l", "mse")
    assert md.code == 0 and "| `mse` |" in md.out and "ridge" in md.out


def test_stdin_gzip_csv_and_jsonl(files):
    with open(files["diab.csv.gz"], "rb") as fh:
        r = run_subprocess("eval", "-", "-l", "mse", "-f", "json", stdin=fh.read())
    assert r.code == 0, r.err
    df = read_back(files["diab.csv"])
    assert close(r.json()["results"][0]["value"], mean_squared_error(df["target"], df["prediction"]))
    with open(files["bc_nan.jsonl"], "rb") as fh:
        r = run_subprocess("eval", "-", "-p", "prob", "-l", "bce", "--nan", "drop", "-f", "json", stdin=fh.read())
    assert r.code == 0, r.err
    doc = r.json()
    e = read_back(files["bc_nan.jsonl"]).dropna()
    assert doc["dropped_rows"] == 2 and doc["rows"] == len(e)
    assert close(doc["results"][0]["value"], log_loss(e["label"], e["prob"]), rel=1e-9)


# ------------------------------------------------------------------ binary


@pytest.mark.parametrize("name", ["bc.csv", "bc.parquet"])
def test_binary_probabilities(cli, files, name):
    r = cli("eval", files[name], "-p", "prob", "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "binary" and doc["bindings"] == {"target": "label", "pred": "prob"}
    df = read_back(files[name])
    y, p = df["label"].to_numpy("f8"), df["prob"].to_numpy()
    got = {x["loss"]: x["value"] for x in doc["results"]}
    assert list(got) == ["bce", "focal"]  # on probabilities, the probability losses (CLI.md)
    assert close(got["bce"], log_loss(y, p))
    # the margin losses by name: the probability read as a raw score, and a note says so
    r = cli("eval", files[name], "-p", "prob", "-l", "hinge", "-l", "exponential", "-f", "json")
    assert r.code == 0 and "computed on 'prob' as margin scores" in r.err
    got.update({x["loss"]: x["value"] for x in r.json()["results"]})
    assert close(got["hinge"], hinge_loss(y, p))
    assert close(got["exponential"], float(np.mean(np.exp(-(2 * y - 1) * p))))
    pt = np.where(y == 1, p, 1 - p)
    at = np.where(y == 1, 0.25, 0.75)
    assert close(got["focal"], float(np.mean(-at * (1 - pt) ** 2 * np.log(pt))), rel=1e-10)


def test_binary_logits_by_name_and_gradient(cli, files):
    r = cli("eval", files["bc.csv"], "-p", "logit", "-l", "bce", "-l", "hinge", "--grad", "-f", "json")
    assert r.code == 0, r.err
    assert "read 'logit' as logits" in r.err
    df = read_back(files["bc.csv"])
    y, z = df["label"].to_numpy("f8"), df["logit"].to_numpy()
    res = {x["loss"]: x for x in r.json()["results"]}
    assert res["bce"]["params"]["logits"] is True
    assert close(res["bce"]["value"], log_loss(y, expit(z)), rel=1e-10)
    g = expit(z) - y
    assert close(res["bce"]["grad"]["mean"], float(g.mean()), rel=1e-9)
    assert close(res["bce"]["grad"]["l2"], float(np.linalg.norm(g)), rel=1e-12)
    assert close(res["hinge"]["value"], hinge_loss(y, z))
    s = 2 * y - 1
    assert res["hinge"]["grad"]["zero_frac"] == pytest.approx(float(np.mean(s * z >= 1)))


def test_binary_by_categorical_and_by_the_label(cli, files):
    df = read_back(files["bc.csv"])
    doc = cli("eval", files["bc.parquet"], "-p", "prob", "-l", "bce", "--by", "radius", "-f", "json").json()
    groups = {g["value"]: g["results"][0]["value"] for g in doc["groups"]}
    assert set(groups) == {"small", "mid", "large"}
    for v, sub in df.groupby("radius"):
        assert close(groups[v], log_loss(sub["label"], sub["prob"], labels=[0, 1]), rel=1e-10)
    # --by the label column itself: groups 0 and 1 whatever the format (CSV read it as numbers)
    for name in ("bc.csv", "bc.parquet"):
        r = cli("eval", files[name], "-p", "prob", "-l", "bce", "--by", "label", "-f", "json")
        vals = [g["value"] for g in r.json()["groups"]]
        assert vals == [0, 1] and all(type(v) is int for v in vals), (name, vals)
    import io

    t = pd.read_csv(io.StringIO(cli("eval", files["bc.csv"], "-p", "prob", "-l", "bce", "--by", "label",
                                    "-f", "csv").out), dtype=str)
    assert t["group"].tolist() == ["(all)", "0", "1"]


def test_nan_rows(cli, files):
    r = cli("eval", files["bc_nan.csv"], "-p", "prob", "-f", "json")
    assert r.code == 2 and r.out == ""
    assert r.err.count("\n") == 1 and "column 'prob', row 4: missing value" in r.err
    r = cli("eval", files["bc_nan.csv"], "-p", "prob", "-l", "bce", "--nan", "drop", "-f", "json")
    e = read_back(files["bc_nan.csv"]).dropna()
    doc = r.json()
    assert doc["rows"] == len(e) == 567 and doc["dropped_rows"] == 2
    assert close(doc["results"][0]["value"], log_loss(e["label"], e["prob"]))


# ------------------------------------------------------------------ multiclass


@pytest.mark.parametrize("name", ["iris.csv", "iris.parquet"])
def test_multiclass_probabilities(cli, files, name):
    r = cli("eval", files[name], "-l", "cross_entropy", "-l", "multi_hinge:variant=cs", "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "multiclass"
    assert doc["bindings"] == {"target": "class", "pred": ["prob_0", "prob_1", "prob_2"]}
    df = read_back(files[name])
    P = df[["prob_0", "prob_1", "prob_2"]].to_numpy()
    got = {x["spec"]: x["value"] for x in doc["results"]}
    assert close(got["cross_entropy"], log_loss(df["class"], P))
    assert close(got["multi_hinge:variant=cs"], hinge_loss(df["class"], P, labels=[0, 1, 2]))
    # per species, a string column
    doc = cli("eval", files[name], "-l", "cross_entropy", "--by", "species", "-f", "json").json()
    for g in doc["groups"]:
        sub = df[df["species"] == g["value"]]
        assert close(g["results"][0]["value"],
                     log_loss(sub["class"], sub[["prob_0", "prob_1", "prob_2"]], labels=[0, 1, 2]), rel=1e-10)


def test_multiclass_logits(cli, files):
    r = cli("eval", files["digits_logits.csv"], "-l", "cross_entropy", "-l", "multi_hinge:variant=cs",
            "--grad", "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "multiclass" and doc["rows"] == 1797
    df = read_back(files["digits_logits.csv"])
    Z = df[[f"logit_{k}" for k in range(10)]].to_numpy()
    y = df["label"].to_numpy()
    res = {x["spec"]: x for x in doc["results"]}
    assert close(res["cross_entropy:logits=true"]["value"], log_loss(y, softmax(Z, axis=1)), rel=1e-10)
    g = softmax(Z, axis=1) - np.eye(10)[y]
    assert close(res["cross_entropy:logits=true"]["grad"]["l2"], float(np.linalg.norm(g)), rel=1e-10)
    assert close(res["multi_hinge:variant=cs"]["value"], hinge_loss(y, Z))


def test_decision_function_scores_are_read_as_logits(cli, files):
    """README: columns named score* are read as logits unless --no-logits."""
    r = cli("eval", files["wine_scores.csv"], "-l", "cross_entropy", "-f", "json")
    assert r.code == 0, r.err
    assert "read 'score_*' as logits" in r.err
    doc = r.json()
    assert doc["bindings"] == {"target": "y", "pred": ["score_0", "score_1", "score_2"]}
    df = read_back(files["wine_scores.csv"])
    Z = df[["score_0", "score_1", "score_2"]].to_numpy()
    assert close(doc["results"][0]["value"], log_loss(df["y"], softmax(Z, axis=1)), rel=1e-10)
    r = cli("eval", files["wine_scores.csv"], "-l", "cross_entropy", "--no-logits", "-f", "json")
    assert r.code == 2 and "must lie in [0, 1]" in r.err


# ------------------------------------------------------------------ errors: one line on stderr, exit 2


def one_error(r, *needles):
    assert r.code == 2, (r.code, r.err)
    assert r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossctl: error: "), r.err
    assert "Traceback" not in r.err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_label_2_in_a_binary_file(cli, files):
    for loss in ("bce", "hinge"):
        one_error(cli("eval", files["bc_label2.csv"], "-p", "prob", "-l", loss),
                  "bc_label2.csv", "column 'label'", "row 6", "2")
    one_error(cli("eval", files["bc_label2.csv"], "-p", "prob"), "column 'label'", "row 6")


def test_string_labels_name_the_column_and_row(cli, files):
    # class names in a CSV column that is not the file's first: the message still names it
    one_error(cli("eval", files["bc_names.csv"], "-t", "label", "-p", "prob"),
              "bc_names.csv", "column 'label'", "row 1", "not a number", "malignant")
    one_error(cli("eval", files["iris.csv"], "-t", "species"),
              "column 'species'", "row 1", "not a number", "setosa")
    one_error(cli("eval", files["iris.parquet"], "-t", "species"), "column 'species'", "row 1", "setosa")


def test_empty_id_selector_is_an_error_not_ignored(cli, files):
    one_error(cli("eval", files["diab_index.csv"], "-l", "mse", "--reduction", "none", "--id", "", "-f", "csv"),
              "--id")


def test_ambiguous_and_missing_columns(cli, files):
    one_error(cli("eval", files["bc.csv"]), "ambiguous pred column", "'logit'", "'prob'")
    one_error(cli("eval", files["diab.csv"], "-p", "nope"), "no column 'nope'", "prediction")


# ------------------------------------------------------------------ pandas bool columns in CSV


def test_bool_labels_and_get_dummies_one_hot_in_csv(cli, files, tmp_path):
    """pandas writes bool columns as True/False: a bool label, or pd.get_dummies' one-hot
    target (bool since pandas 2), reads as 1/0 in CSV as it does in Parquet."""
    b = read_back(files["bc.csv"])
    b["label"] = b["label"].astype(bool)
    b.to_csv(tmp_path / "bool.csv", index=False)
    doc = cli("eval", tmp_path / "bool.csv", "-p", "prob", "-l", "bce", "-f", "json").json()
    assert doc["task"] == "binary"
    assert close(doc["results"][0]["value"], log_loss(b["label"], b["prob"]))

    ir = read_back(files["iris.csv"])
    oh = pd.concat([pd.get_dummies(ir["class"], prefix="onehot"), ir[["prob_0", "prob_1", "prob_2"]]], axis=1)
    assert oh["onehot_0"].dtype == bool
    oh.to_csv(tmp_path / "onehot.csv", index=False)
    r = cli("eval", tmp_path / "onehot.csv", "-l", "cross_entropy", "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "multiclass" and doc["bindings"]["target"] == ["onehot_0", "onehot_1", "onehot_2"]
    assert close(doc["results"][0]["value"], log_loss(ir["class"], ir[["prob_0", "prob_1", "prob_2"]]))

    # a value that is not True/False past the sniffed head: named with its row
    n = 20000
    big = pd.DataFrame({"label": (np.arange(n) % 2 == 0).astype(object), "prob": np.full(n, 0.5)})
    big.loc[15000, "label"] = "2"
    big.to_csv(tmp_path / "big.csv", index=False)
    one_error(cli("eval", tmp_path / "big.csv", "-l", "bce"), "column 'label'", "row 15001", "'2'")
