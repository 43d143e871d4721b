"""Task inference, default sets and column finding, as a user meets them: models fitted on
scikit-learn's bundled datasets, their predict_proba / decision_function written to CSV and
Parquet, and every number checked against scikit-learn or scipy on the same arrays
(issue 9, items 2, 6, 12 and 18; CLI.md, Input and Choosing losses).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from conftest import SAMPLES

sklearn = pytest.importorskip("sklearn")
from sklearn import datasets  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import hinge_loss, log_loss  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def close(a, b, rel=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


def _fit(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


@pytest.fixture(scope="module")
def models():
    """Fitted models and their outputs: iris and digits (LogisticRegression), wine
    (RandomForest), breast_cancer (LogisticRegression and RandomForest)."""
    out = {}
    for name, loader in (("iris", datasets.load_iris), ("digits", datasets.load_digits), ("bc", datasets.load_breast_cancer)):
        X, y = loader(return_X_y=True)
        X = StandardScaler().fit_transform(X)
        lr = _fit(LogisticRegression(max_iter=300), X, y)
        out[name] = dict(y=y, proba=lr.predict_proba(X), decision=lr.decision_function(X), classes=lr.classes_)
    X, y = datasets.load_wine(return_X_y=True)
    rf = RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y)
    out["wine"] = dict(y=y, proba=rf.predict_proba(X), classes=rf.classes_)
    Xb, yb = datasets.load_breast_cancer(return_X_y=True)
    out["bc"]["rf"] = RandomForestClassifier(n_estimators=30, random_state=0).fit(Xb, yb).predict_proba(Xb)[:, 1]
    return out


def _frame(target_name, y, cols: dict) -> pd.DataFrame:
    d = pd.DataFrame({target_name: y})
    for k, v in cols.items():
        d[k] = v
    return d


def _results(doc):
    return {(r["loss"], r["pred"]): r["value"] for r in doc["results"]}


# ------------------------------------------------------------------ item 2: multiclass, never metric learning


@pytest.mark.parametrize("target", ["y", "label"])
def test_predict_proba_glob_with_y_or_label_is_multiclass(cli, tmp_path, models, target):
    m = models["iris"]
    path = tmp_path / "iris.csv"
    _frame(target, m["y"], {f"p_{k}": m["proba"][:, k] for k in range(3)}).to_csv(path, index=False)
    ref = log_loss(m["y"], m["proba"])
    for extra in ([], ["-l", "all"]):
        r = cli("eval", path, "-p", "p_*", *extra, "-f", "json")
        assert r.code == 0, r.err
        doc = r.json()
        assert doc["task"] == "multiclass"
        losses = [x["loss"] for x in doc["results"]]
        assert "triplet_mined" not in losses and "cross_entropy" in losses and "focal" in losses
        assert close(_results(doc)[("cross_entropy", "p_*")], ref, rel=1e-10)
    # -l focal works; with gamma=0 and alpha=-1 it is the cross-entropy
    r = cli("eval", path, "-p", "p_*", "-l", "focal:gamma=0,alpha=-1", "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["task"] == "multiclass" and close(r.json()["results"][0]["value"], ref, rel=1e-10)


def test_random_forest_parquet_with_lr_prefix_is_multiclass(cli, tmp_path, models):
    m = models["wine"]  # a forest's probabilities hold exact zeros: clipped to eps, as log_loss does
    path = tmp_path / "wine.parquet"
    _frame("label", m["y"], {f"lr_{k}": m["proba"][:, k] for k in range(3)}).to_parquet(path)
    ref = log_loss(m["y"], m["proba"])
    r = cli("eval", path, "-p", "lr_*", "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "multiclass"
    assert close(_results(doc)[("cross_entropy", "lr_*")], ref, rel=1e-10)
    r = cli("eval", path, "-p", "lr_*", "-l", "focal:gamma=0,alpha=-1", "-f", "json")
    assert r.code == 0, r.err
    assert close(r.json()["results"][0]["value"], ref, rel=1e-10)


def test_sklearn_layout_probabilities_and_decision_function(cli, tmp_path, models):
    m = models["digits"]  # 10 classes; columns named by classes_, as pd.DataFrame(proba, columns=classes_)
    cols = [str(c) for c in m["classes"]]
    path = tmp_path / "digits.csv"
    pd.concat([pd.DataFrame({"y": m["y"]}), pd.DataFrame(m["proba"], columns=cols)], axis=1).to_csv(path, index=False)
    r = cli("eval", path, "-p", ",".join(cols), "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["task"] == "multiclass"
    assert close(_results(r.json())[("cross_entropy", ",".join(cols))], log_loss(m["y"], m["proba"]), rel=1e-10)
    # the same with decision_function and --logits
    zpath = tmp_path / "digits_z.csv"
    _frame("y", m["y"], {f"p_{k}": m["decision"][:, k] for k in range(10)}).to_csv(zpath, index=False)
    r = cli("eval", zpath, "-p", "p_*", "--logits", "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "multiclass" and "triplet_mined" not in [x["loss"] for x in doc["results"]]
    ref = log_loss(m["y"], softmax(m["decision"], axis=1))
    assert close(_results(doc)[("cross_entropy", "p_*")], ref, rel=1e-9)


def test_binary_predict_proba_two_columns_is_binary_on_the_positive_class(cli, tmp_path, models):
    m = models["bc"]
    path = tmp_path / "bc2.csv"
    _frame("y", m["y"], {"p_0": m["proba"][:, 0], "p_1": m["proba"][:, 1]}).to_csv(path, index=False)
    for args in ([], ["-p", "p_*"], ["-p", "p_0,p_1", "-l", "bce"]):
        r = cli("eval", path, *args, "-f", "json")
        assert r.code == 0, r.err
        doc = r.json()
        assert doc["task"] == "binary", args
        assert close(_results(doc)[("bce", "p_1")], log_loss(m["y"], m["proba"][:, 1]), rel=1e-10)
        assert "scored on 'p_1'" in r.err


def test_two_regression_models_in_one_pred_are_not_a_triplet_task(cli, write_csv):
    rng = np.random.default_rng(3)
    y = rng.normal(size=50)
    path = write_csv("reg.csv", "y,m1,m2\n" + "".join(f"{a},{a + b},{a - b}\n" for a, b in zip(y, rng.normal(size=50))))
    r = cli("eval", path, "-p", "m1,m2", "-f", "json")
    assert r.code == 2 and r.out == ""
    assert "triplet" not in r.err and "-p m1 -p m2" in r.err and "reg.csv" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_plain_pred_never_binds_an_embedding(cli):
    path = f"{SAMPLES}/embeddings.parquet"
    assert cli("eval", path, "-f", "json").json()["task"] == "metric"  # found by its name
    r = cli("eval", path, "-p", "embedding", "-l", "triplet", "-f", "json")
    assert r.code == 2 and "--col embedding=embedding" in r.err
    r = cli("eval", path, "--col", "embedding=embedding", "-l", "triplet", "-f", "json")
    assert r.code == 0 and r.json()["results"][0]["loss"] == "triplet_mined"


def test_names_still_decide_between_families(cli):
    assert cli("eval", f"{SAMPLES}/segmentation.csv", "-f", "json").json()["task"] == "segmentation"
    assert cli("eval", f"{SAMPLES}/segmentation.csv", "-t", "mask", "-p", "prob", "-f", "json").json()["task"] == "segmentation"
    assert cli("eval", f"{SAMPLES}/distributions.csv", "-f", "json").json()["task"] == "distribution"


# ------------------------------------------------------------------ item 6: the default binary set


def test_default_binary_set_follows_what_the_prediction_holds(cli, tmp_path, models):
    m = models["bc"]
    y, p, z = m["y"], m["proba"][:, 1], m["decision"]
    path = tmp_path / "bc.csv"
    _frame("y", y, {"prob": p, "logit": z, "f": z}).to_csv(path, index=False)
    # probabilities: the probability losses only
    r = cli("eval", path, "-p", "prob", "-f", "json")
    assert [x["loss"] for x in r.json()["results"]] == ["bce", "focal"]
    # logits (by name, or --logits): every loss
    r = cli("eval", path, "-p", "logit", "-f", "json")
    assert [x["loss"] for x in r.json()["results"]] == ["bce", "hinge", "exponential", "focal"]
    r = cli("eval", path, "-p", "f", "--logits", "-f", "json")
    assert [x["loss"] for x in r.json()["results"]] == ["bce", "hinge", "exponential", "focal"]
    assert close(_results(r.json())[("hinge", "f")], hinge_loss(y, z))
    # scores that are neither: the margin losses, with a note saying how to read them as logits
    r = cli("eval", path, "-p", "f", "-f", "json")
    assert r.code == 0, r.err
    assert [x["loss"] for x in r.json()["results"]] == ["hinge", "exponential"]
    assert "--logits" in r.err


def test_margin_loss_by_name_on_probabilities_says_what_it_computed_on(cli, tmp_path, models):
    m = models["bc"]
    path = tmp_path / "bc.csv"
    _frame("y", m["y"], {"prob": m["proba"][:, 1], "logit": m["decision"]}).to_csv(path, index=False)
    r = cli("eval", path, "-p", "prob", "-l", "hinge", "-l", "exponential", "-f", "json")
    assert r.code == 0, r.err
    assert close(r.json()["results"][0]["value"], hinge_loss(m["y"], m["proba"][:, 1]))
    assert "hinge, exponential computed on 'prob' as margin scores" in r.err
    assert r.json()["warnings"]
    r = cli("eval", path, "-p", "logit", "-l", "hinge", "-f", "json")
    assert r.code == 0 and "margin scores" not in r.err


def test_default_multiclass_set_follows_what_the_prediction_holds(cli, tmp_path, models):
    """predict_proba: the losses that read probabilities (multi_hinge would read them as class
    scores); decision_function read as logits: every loss. By name, multi_hinge on probabilities
    is computed as asked, with a note; the library's default set is the command line's."""
    import lossctl

    m = models["iris"]
    y, proba, dec = m["y"], m["proba"], m["decision"]
    cols = {f"p_{k}": proba[:, k] for k in range(3)} | {f"logit_{k}": dec[:, k] for k in range(3)}
    path = tmp_path / "iris.csv"
    _frame("y", y, cols).to_csv(path, index=False)
    r = cli("eval", path, "-p", "p_*", "-f", "json")
    assert r.code == 0, r.err
    assert [x["loss"] for x in r.json()["results"]] == ["focal", "cross_entropy"]
    assert close(_results(r.json())[("cross_entropy", "p_*")], log_loss(y, proba), rel=1e-10)
    r = cli("eval", path, "-p", "logit_*", "-f", "json")
    assert [x["loss"] for x in r.json()["results"]] == ["focal", "cross_entropy", "multi_hinge"]
    assert close(_results(r.json())[("cross_entropy", "logit_*")], log_loss(y, softmax(dec, axis=1)), rel=1e-10)
    r = cli("eval", path, "-p", "logit_*", "-l", "multi_hinge:variant=cs", "-f", "json")
    assert close(r.json()["results"][0]["value"], hinge_loss(y, dec)) and "class scores" not in r.err
    r = cli("eval", path, "-p", "p_*", "-l", "multi_hinge:variant=cs", "-f", "json")
    assert r.code == 0, r.err
    assert close(r.json()["results"][0]["value"], hinge_loss(y, proba))
    assert "multi_hinge computed on 'p_*' as class scores as given" in r.err and r.json()["warnings"]
    assert [x.loss for x in lossctl.evaluate(y, proba)] == ["focal", "cross_entropy"]
    assert [x.loss for x in lossctl.evaluate(y, dec, logits=True)] == ["focal", "cross_entropy", "multi_hinge"]
    # no -p: two prediction sets by their names, neither chosen (p_* alone beside a y is no divergence's P)
    r = cli("eval", path, "-f", "json")
    assert r.code == 2 and r.out == "" and "ambiguous pred column: 'logit_*' or 'p_*'" in r.err, r.err


def test_segmentation_logits_named_by_p_stay_segmentation(cli, tmp_path):
    """A mask, an image id and logits given with -p: segmentation, the logits read as logits
    (the values are not probabilities, and need not be: the segmentation losses take logits;
    only a divergence's Q must hold distributions for p_*/q_* names to decide)."""
    rng = np.random.default_rng(4)
    n = 600
    mask = (rng.random(n) < 0.3).astype(int)
    z = rng.normal(0, 2, n) + 2.5 * mask
    path = tmp_path / "seg.csv"
    pd.DataFrame({"image_id": np.repeat(["a", "b", "c"], n // 3), "mask": mask, "logit": z}).to_csv(path, index=False)
    r = cli("eval", path, "-p", "logit", "-f", "json")  # no -l: the task is told by the names and values
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "segmentation" and doc["results"][0]["spec"] == "dice:logits=true"
    p = 1 / (1 + np.exp(-z))
    per, eps = [], 1e-6  # LOSSES.md: one probability column is the foreground's Dice, ε = 1e-6, per image
    for k in range(3):
        m, q = mask[k * 200:(k + 1) * 200], p[k * 200:(k + 1) * 200]
        per.append(1 - (2 * np.sum(m * q) + eps) / (np.sum(m) + np.sum(q) + eps))
    assert close(doc["results"][0]["value"], float(np.mean(per)), rel=1e-9)


# ------------------------------------------------------------------ item 18: column finding


def test_p_model_is_found_as_the_prediction(cli, tmp_path, models):
    m = models["bc"]
    path = tmp_path / "pm.csv"
    _frame("y", m["y"], {"p_model": m["proba"][:, 1]}).to_csv(path, index=False)
    r = cli("eval", path, "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "binary" and doc["bindings"]["pred"] == "p_model"
    assert close(_results(doc)[("bce", "p_model")], log_loss(m["y"], m["proba"][:, 1]), rel=1e-10)


def test_one_glob_column_does_not_make_a_name_ambiguous(cli, write_csv):
    # an exact name wins over a single column under a prediction glob
    path = write_csv("two.csv", "y,yhat,pred_lower\n1,1.5,0.5\n2,2.5,1.5\n3,2.0,1.0\n")
    r = cli("eval", path, "-l", "mse", "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["bindings"]["pred"] == "yhat"


@pytest.mark.parametrize("pred", [["-p", "p_lr,p_rf"], ["-p", "p_*"], []])
def test_two_binary_models_in_one_pred_say_they_look_like_two_sets(cli, tmp_path, models, pred):
    m = models["bc"]
    path = tmp_path / "two.csv"
    _frame("y", m["y"], {"p_lr": m["proba"][:, 1], "p_rf": m["rf"]}).to_csv(path, index=False)
    r = cli("eval", path, *pred, "-f", "json")
    assert r.code == 2 and r.out == ""
    assert "two prediction sets" in r.err or "2 prediction sets" in r.err
    assert "-p p_lr -p p_rf" in r.err and "row 1" in r.err and "does not sum" not in r.err
    ok = cli("eval", path, "-p", "p_lr", "-p", "p_rf", "-f", "json")
    assert ok.code == 0 and close(_results(ok.json())[("bce", "p_rf")], log_loss(m["y"], m["rf"]), rel=1e-10)


def test_two_logit_columns_against_01_labels_say_how_they_were_read(cli, tmp_path, models):
    m = models["bc"]
    z = m["decision"]
    path = tmp_path / "z.csv"
    _frame("y", m["y"], {"z_0": -z / 2, "z_1": z / 2}).to_csv(path, index=False)
    r = cli("eval", path, "-p", "z_0,z_1", "--logits", "-l", "cross_entropy", "-f", "json")
    assert r.code == 0, r.err
    # softmax of (−z/2, z/2) is sigmoid(z): the binary log loss of the model
    assert close(r.json()["results"][0]["value"], log_loss(m["y"], 1 / (1 + np.exp(-z))), rel=1e-9)
    assert "logits of 2 classes" in r.err and "-p z_0 -p z_1" in r.err


def test_predict_proba_in_a_list_column_is_two_classes(cli, tmp_path, models):
    import pyarrow as pa
    import pyarrow.parquet as pq

    m = models["bc"]
    path = tmp_path / "list.parquet"
    pq.write_table(pa.table({"y": m["y"], "proba": pa.array([list(r) for r in m["proba"]])}), path)
    r = cli("eval", path, "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "multiclass"  # a list column is not cut: 2-class cross-entropy, the same number
    assert close(_results(doc)[("cross_entropy", "proba")], log_loss(m["y"], m["proba"][:, 1]), rel=1e-10)


def test_misspelt_column_gets_did_you_mean(cli, write_csv):
    path = write_csv("pm.csv", "y,p_model,region\n1,0.8,a\n0,0.3,b\n")
    r = cli("eval", path, "-p", "p_mdoel", "-f", "json")
    assert r.code == 2 and "did you mean 'p_model'?" in r.err and "p_mdoel" in r.err
    r = cli("eval", path, "-p", "p_model", "--by", "regoin", "-f", "json")
    assert r.code == 2 and "did you mean 'region'?" in r.err
    r = cli("eval", path, "-p", "zzz", "-f", "json")
    assert r.code == 2 and "did you mean" not in r.err and "Columns: y, p_model, region" in r.err


# ------------------------------------------------------------------ item 12: the library infers as the CLI does


def test_library_takes_a_one_column_frame_as_the_prediction():
    import lossctl
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    d = pd.read_csv(f"{SAMPLES}/regression.csv")
    r = lossctl.evaluate(d.y, d[["yhat"]], "mse")
    assert close(r.value, mean_squared_error(d.y, d.yhat))
    assert close(lossctl.evaluate(d[["y"]], d.yhat, "mae").value, mean_absolute_error(d.y, d.yhat))
    rows, _ = lossctl.per_row(d.y, d[["yhat"]], "mae")
    assert rows.shape == (len(d),) and close(float(rows.mean()), mean_absolute_error(d.y, d.yhat))


def test_library_without_a_loss_returns_the_standard_set_the_cli_uses(cli, tmp_path, models):
    import lossctl
    from sklearn.metrics import mean_pinball_loss, mean_squared_error

    d = pd.read_csv(f"{SAMPLES}/regression.csv")
    res = lossctl.evaluate(d.y, d.yhat)
    assert isinstance(res, list) and [r.loss for r in res] == ["mse", "mae", "huber", "quantile"]
    assert close(res[0].value, mean_squared_error(d.y, d.yhat))
    assert close(res[3].value, mean_pinball_loss(d.y, d.yhat, alpha=0.5))
    assert not isinstance(lossctl.evaluate(d.y, d.yhat, "mse"), list)  # one named loss: one result
    # multiclass predict_proba: the CLI's set and numbers on the same data
    m = models["iris"]
    res = lossctl.evaluate(m["y"], m["proba"])
    path = tmp_path / "iris.csv"
    _frame("label", m["y"], {f"p_{k}": m["proba"][:, k] for k in range(3)}).to_csv(path, index=False)
    doc = cli("eval", path, "-f", "json").json()
    assert [r.loss for r in res] == [x["loss"] for x in doc["results"]]
    assert [r.value for r in res] == pytest.approx([x["value"] for x in doc["results"]], rel=1e-12)
    assert close({r.loss: r.value for r in res}["cross_entropy"], log_loss(m["y"], m["proba"]), rel=1e-10)


def test_library_binary_sets_follow_the_prediction(models):
    import lossctl

    m = models["bc"]
    y, P, z = m["y"], m["proba"], m["decision"]
    res = lossctl.evaluate(y, P)  # predict_proba's two columns: binary, on the positive class
    assert [r.loss for r in res] == ["bce", "focal"] and close(res[0].value, log_loss(y, P[:, 1]), rel=1e-10)
    assert [r.loss for r in lossctl.evaluate(y, P[:, 1])] == ["bce", "focal"]
    res = lossctl.evaluate(y, z, logits=True)
    assert [r.loss for r in res] == ["bce", "hinge", "exponential", "focal"]
    assert close(res[1].value, hinge_loss(y, z))
    assert [r.loss for r in lossctl.evaluate(2 * y - 1, z)] == ["hinge", "exponential"]  # −1/+1 labels


def test_library_inference_by_keyword_roles_and_task(models):
    import lossctl
    from lossctl.errors import InputError, UsageError

    e = pd.read_parquet(f"{SAMPLES}/embeddings.parquet")
    (r,) = lossctl.evaluate(e.label, embedding=np.stack(e.embedding))
    assert r.loss == "triplet_mined"
    dd = pd.read_csv(f"{SAMPLES}/distributions.csv")
    res = lossctl.evaluate(dd.filter(like="p_"), dd.filter(like="q_"), task="distribution")
    assert [r.loss for r in res] == ["kl", "js", "tv"]
    rng = np.random.default_rng(5)
    y = rng.normal(size=40)
    with pytest.raises(InputError, match="look like 2 prediction sets"):
        lossctl.evaluate(y, np.c_[y + 1, y - 1])
    with pytest.raises(UsageError, match="cannot tell the task"):
        lossctl.evaluate(group=np.arange(4))


def test_misspelt_column_with_two_files_is_looked_up_where_the_role_lives(cli, write_csv):
    t = write_csv("t.csv", "id,y\n1,0\n2,1\n")
    p = write_csv("p.csv", "id,prob\n1,0.2\n2,0.7\n")
    r = cli("eval", t, p, "-t", "yy", "-f", "json")
    assert r.code == 2 and "t.csv" in r.err and "did you mean 'y'?" in r.err
    r = cli("eval", t, p, "-p", "porb", "-f", "json")
    assert r.code == 2 and "p.csv" in r.err and "did you mean 'prob'?" in r.err


# ------------------------------------------------------------------ the value rules, generatively

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(k=st.integers(2, 8), n=st.integers(5, 60), seed=st.integers(0, 2**32 - 1))
def test_value_rules_tell_one_prediction_set_from_several(k, n, seed):
    from lossctl.binding import task_from_values

    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n).astype(float)
    proba = rng.dirichlet(np.ones(k), size=n)  # one classifier's probabilities: rows sum to 1
    v = task_from_values(y, proba, k, logits=False)
    assert not v.several_sets and v.task == ("binary" if k == 2 else "multiclass")
    assert v.positive_column == (k == 2)
    # k binary models' probabilities against 0/1 labels: rows do not sum to 1
    yb = rng.integers(0, 2, n).astype(float)
    models = rng.uniform(0.05, 0.95, size=(n, k))
    v = task_from_values(yb, models, k, logits=False)
    assert v.several_sets and v.row is not None and abs(models[v.row].sum() - 1) > 1e-6
    # k regression models against a real-valued target
    yr = rng.normal(size=n) + 0.5
    assert task_from_values(yr, yr[:, None] + rng.normal(size=(n, k)), k, logits=False).several_sets
    # class logits are multiclass whatever their rows sum to
    assert task_from_values(y, rng.normal(size=(n, k)), k, logits=True).task == "multiclass"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_numbered_probability_columns_without_a_separator_are_found(cli, tmp_path, models, fmt):
    """p0, p1, p2 (predict_proba written column by column, no underscore) are one prediction
    set found by name, as p_0, p_1, p_2 are: multiclass, scored as scikit-learn's log_loss."""
    m = models["iris"]
    path = tmp_path / f"iris.{fmt}"
    frame = _frame("y", m["y"], {f"p{k}": m["proba"][:, k] for k in range(3)})
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    r = cli("eval", path, "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["task"] == "multiclass" and doc["bindings"]["pred"] == ["p0", "p1", "p2"]
    ce = next(x for x in doc["results"] if x["loss"] == "cross_entropy")
    assert close(ce["value"], log_loss(m["y"], m["proba"]), rel=1e-10)
