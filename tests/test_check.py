"""lossctl check, the CI gate: assertions, verdicts, baselines, slices, config, reports, exit codes.

Oracles: values are numpy means of the squared / absolute residuals; intervals are
checked against lossctl eval's own paired bootstrap (the same resamples) and against an
independent numpy paired bootstrap; verdicts against the intervals' definitions.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossctl import check
from lossctl.errors import UsageError

from conftest import ROOT, SAMPLES, run_subprocess

REG = os.path.join(SAMPLES, "regression.csv")
REG_BASE = os.path.join(SAMPLES, "regression_baseline.csv")


def _csv(path, cols: dict[str, np.ndarray]) -> str:
    names = list(cols)
    rows = zip(*[cols[n] for n in names])
    with open(path, "w") as f:
        f.write(",".join(names) + "\n")
        for r in rows:
            f.write(",".join(repr(float(v)) if isinstance(v, (float, np.floating)) else str(v) for v in r) + "\n")
    return str(path)


@pytest.fixture
def pair(tmp_path):
    """A candidate and a baseline file (same rows, same column names): the candidate is better."""
    rng = np.random.default_rng(7)
    n = 400
    y = rng.normal(0, 1, n)
    cand = y + rng.normal(0, 0.5, n)
    base = y + rng.normal(0, 1.0, n)
    seg = np.array(["a", "b", "c", "tiny"])[np.r_[np.zeros(190, int), np.ones(150, int), 2 * np.ones(55, int), 3 * np.ones(5, int)]]
    d = _csv(tmp_path / "cand.csv", {"id": np.arange(n), "seg": seg, "y": y, "yhat": cand})
    b = _csv(tmp_path / "base.csv", {"id": np.arange(n), "y": y, "yhat": base})
    return d, b, y, cand, base, seg


# ------------------------------------------------------------------ the grammar


@pytest.mark.parametrize("text, op, number, factor, offset", [
    ("mse <= 0.25", "<=", 0.25, 1.0, 0.0),
    ("mse<0.25", "<", 0.25, 1.0, 0.0),
    ("huber:delta=1.5 >= 1e-3", ">=", 1e-3, 1.0, 0.0),
    ("mae > -2", ">", -2.0, 1.0, 0.0),
    ("mse <= baseline", "<=", None, 1.0, 0.0),
    ("mse <= baseline * 1.05", "<=", None, 1.05, 0.0),
    ("mse <= BASELINE*1.05", "<=", None, 1.05, 0.0),
    ("mae < baseline + 0.01", "<", None, 1.0, 0.01),
    ("mae < baseline + -0.5", "<", None, 1.0, -0.5),
    ("cross_entropy:weight=[0.5,1,2] <= 2", "<=", 2.0, 1.0, 0.0),
])
def test_assertions_parse(text, op, number, factor, offset):
    a = check.parse_assertion(text)
    assert (a.op, a.number, a.factor, a.offset) == (op, number, factor, offset)
    assert a.text == text
    assert a.vs_baseline == (number is None)
    assert a.bound(2.0) == (number if number is not None else factor * 2.0 + offset)


@pytest.mark.parametrize("text, what", [
    ("mse 0.25", "no comparison operator"),
    ("mse <= 1 < 2", "2 comparison operators"),
    ("mse =< 1", "'=<' is not an operator"),
    ("mse <== 1", "'<==' is not an operator"),
    ("<= 1", "no loss before"),
    ("mse <=", "no bound after"),
    ("mse <= baseline * 0", "must be > 0"),
    ("mse <= baseline / 2", "cannot read the bound 'baseline / 2'"),
    ("mse <= one", "cannot read the bound 'one'"),
    ("msx <= 1", "unknown loss 'msx'"),
    ("huber:delta=-1 <= 1", "The 'delta' parameter of huber"),
])
def test_malformed_assertions_say_what_and_show_the_grammar(cli, text, what):
    with pytest.raises(UsageError) as e:
        check.parse_assertion(text)
    assert what in str(e.value) and "SPEC OP BOUND" in str(e.value)
    r = cli("check", REG, "--assert", text, "-f", "json")
    assert r.code == 2 and r.out == "" and what in r.err and "SPEC OP BOUND" in r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err


def test_unknown_loss_lists_the_valid_ones(cli):
    r = cli("check", REG, "--assert", "mse_loss <= 1")
    assert r.code == 2 and "Valid losses:" in r.err and "huber" in r.err and "quantile" in r.err


# ------------------------------------------------------------------ verdicts


@pytest.mark.parametrize("op, value, bound, ci, expected", [
    ("<=", 1.0, 2.0, None, "pass"), ("<=", 2.0, 2.0, None, "pass"), ("<=", 2.1, 2.0, None, "fail"),
    ("<", 2.0, 2.0, None, "fail"), (">=", 2.0, 2.0, None, "pass"), (">", 2.0, 2.0, None, "fail"),
    # with an interval of value − bound: wholly beyond → fail, wholly inside → pass, else inconclusive
    ("<=", 1.0, 2.0, (-1.5, -0.5), "pass"), ("<=", 1.9, 2.0, (-0.3, 0.2), "inconclusive"),
    ("<=", 2.2, 2.0, (0.1, 0.3), "fail"), ("<=", 2.0, 2.0, (0.0, 0.0), "pass"), ("<", 2.0, 2.0, (0.0, 0.0), "fail"),
    ("<=", 2.1, 2.0, (-0.1, 0.3), "inconclusive"), (">=", 3.0, 2.0, (0.5, 1.5), "pass"),
    (">=", 1.0, 2.0, (-1.5, -0.5), "fail"), (">", 2.1, 2.0, (-0.1, 0.3), "inconclusive"),
    ("<=", float("nan"), 2.0, None, "fail"), ("<=", 1.0, float("nan"), None, "fail"),
])
def test_verdict_rules(op, value, bound, ci, expected):
    assert check.verdict(op, value, bound, ci) == expected


def test_absolute_bounds_pass_and_fail_with_the_numpy_value(cli, pair):
    d, _, y, cand, _, _ = pair
    mse = float(np.mean((cand - y) ** 2))
    r = cli("check", d, "--assert", f"mse <= {mse * 1.01}", "--assert", f"mse > {mse * 0.99}", "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["passed"] is True and [c["verdict"] for c in doc["checks"]] == ["pass", "pass"]
    assert doc["checks"][0]["value"] == pytest.approx(mse, rel=1e-12)
    r = cli("check", d, "--assert", f"mse <= {mse * 0.99}", "-f", "json")
    assert r.code == 1 and r.json()["passed"] is False and r.json()["checks"][0]["verdict"] == "fail"
    assert "FAILED" in r.err
    assert r.json()["checks"][0]["margin"] == pytest.approx(-0.01 * mse, rel=1e-9)
    md = cli("check", d, "--assert", f"mse <= {mse * 0.99}", "-f", "markdown").out  # which, and by how much
    assert f"✗ mse <= {mse * 0.99}: fail: value" in md and f"beyond the bound by {0.01 * mse:.5g}"[:-1] in md


def test_absolute_bound_with_ci_fails_only_beyond_the_whole_interval(cli, pair):
    d, *_ = pair
    doc = cli("check", d, "--assert", "mse <= 1", "--ci", "0.95", "-f", "json").json()
    lo, hi = doc["checks"][0]["ci"]
    value = doc["checks"][0]["value"]
    assert lo < value < hi
    between = (value + hi) / 2  # the value is beyond it, the interval is not wholly
    r = cli("check", d, "--assert", f"mse < {value * 0.5 + lo * 0.5}", "--ci", "0.95", "-f", "json")
    assert r.code == 0 and r.json()["checks"][0]["verdict"] == "inconclusive"
    r = cli("check", d, "--assert", f"mse < {lo * 0.99}", "--ci", "0.95", "-f", "json")
    assert r.code == 1 and r.json()["checks"][0]["verdict"] == "fail"
    r = cli("check", d, "--assert", f"mse < {hi * 1.01}", "--ci", "0.95", "-f", "json")
    assert r.code == 0 and r.json()["checks"][0]["verdict"] == "pass"
    r = cli("check", d, "--assert", f"mse <= {between}", "--ci", "0.95", "-f", "json")
    assert r.json()["checks"][0]["verdict"] == "inconclusive"


def test_baseline_pass_fail_inconclusive_and_strict(cli, tmp_path, pair):
    d, b, y, cand, base, _ = pair
    # the candidate is clearly better than the baseline
    r = cli("check", d, "--baseline", b, "--assert", "mse <= baseline", "--ci", "0.95", "-f", "json")
    assert r.code == 0, r.err
    c = r.json()["checks"][0]
    assert c["verdict"] == "pass"
    assert c["value"] == pytest.approx(np.mean((cand - y) ** 2), rel=1e-12)
    assert c["baseline"] == pytest.approx(np.mean((base - y) ** 2), rel=1e-12)
    assert c["delta"] == pytest.approx(c["value"] - c["baseline"], rel=1e-12)
    assert c["delta_ci"][1] < 0 and c["mdd"] == pytest.approx((c["delta_ci"][1] - c["delta_ci"][0]) / 2)
    # the other way round (the baseline file as the candidate): significantly worse
    r = cli("check", b, "--baseline", d, "--assert", "mse <= baseline", "--ci", "0.95", "-f", "json")
    assert r.code == 1 and r.json()["checks"][0]["verdict"] == "fail"
    # a candidate a hair different from its baseline: the interval straddles 0
    rng = np.random.default_rng(3)
    near = _csv(tmp_path / "near.csv", {"y": y, "yhat": base + rng.normal(0, 0.01, y.size)})
    r = cli("check", near, "--baseline", b, "--assert", "mse <= baseline", "--ci", "0.95", "-f", "json")
    c = r.json()["checks"][0]
    assert r.code == 0 and c["verdict"] == "inconclusive" and c["delta_ci"][0] < 0 < c["delta_ci"][1], c
    assert "inconclusive" in r.err and "unless --strict" in r.err
    junit = tmp_path / "j.xml"
    r = cli("check", near, "--baseline", b, "--assert", "mse <= baseline", "--ci", "0.95", "--junit", str(junit),
            "-f", "json")
    case = ET.parse(junit).getroot().find(".//testcase")
    assert case.find("failure") is None and "inconclusive" in case.find("system-out").text
    r = cli("check", near, "--baseline", b, "--assert", "mse <= baseline", "--ci", "0.95", "--strict", "-f", "json",
            "--junit", str(junit))
    assert r.code == 1 and r.json()["passed"] is False and r.json()["checks"][0]["verdict"] == "inconclusive"
    assert ET.parse(junit).getroot().find(".//failure").get("type") == "inconclusive"
    # without --ci the point estimates decide: no inconclusive, no mdd
    r = cli("check", near, "--baseline", b, "--assert", "mse <= baseline", "-f", "json")
    c = r.json()["checks"][0]
    assert c["verdict"] == ("pass" if c["value"] <= c["baseline"] else "fail") and c["mdd"] is None


def test_factor_and_offset_bounds(cli, pair):
    d, b, y, cand, base, _ = pair
    m_c, m_b = np.mean((cand - y) ** 2), np.mean((base - y) ** 2)
    k = m_c / m_b  # the candidate sits exactly at baseline * k
    doc = cli("check", d, "--baseline", b, "--assert", f"mse <= baseline * {k * 1.2}",
              "--assert", f"mse <= baseline * {k * 0.5}", "--assert", f"mse <= baseline + {m_c - m_b + 0.01}",
              "-f", "json").json()
    assert [c["verdict"] for c in doc["checks"]] == ["pass", "fail", "pass"]
    assert doc["checks"][0]["bound"] == pytest.approx(m_b * k * 1.2, rel=1e-12)
    assert doc["checks"][2]["bound"] == pytest.approx(m_c + 0.01, rel=1e-12)


def test_delta_interval_is_eval_paired_bootstrap_and_agrees_with_numpy(cli, tmp_path, pair):
    d, b, y, cand, base, _ = pair
    both = _csv(tmp_path / "both.csv", {"y": y, "base": base, "cand": cand})
    c = cli("check", both, "-p", "cand", "--baseline-pred", "base", "--assert", "mae <= baseline", "--ci", "0.9",
            "--seed", "5", "-f", "json").json()["checks"][0]
    ev = cli("eval", both, "-l", "mae", "-p", "base", "-p", "cand", "--ci", "0.9", "--seed", "5", "-f", "json").json()
    assert c["delta_ci"] == pytest.approx(ev["comparisons"][0]["ci"], rel=1e-12)
    assert c["ci"] == pytest.approx(ev["results"][1]["ci"], rel=1e-12)
    # an independent paired bootstrap of the per-row differences (another generator): same interval ± noise
    diff = np.abs(cand - y) - np.abs(base - y)
    rng = np.random.default_rng(99)
    reps = np.array([diff[rng.integers(0, diff.size, diff.size)].mean() for _ in range(4000)])
    lo, hi = np.percentile(reps, [5, 95])
    width = hi - lo
    assert abs(c["delta_ci"][0] - lo) < 0.1 * width and abs(c["delta_ci"][1] - hi) < 0.1 * width
    assert c["mdd"] == pytest.approx(width / 2, rel=0.1)


# ------------------------------------------------------------------ the baseline's source


def test_baseline_file_by_key_in_another_order(cli, tmp_path, pair):
    d, b, y, cand, base, _ = pair
    perm = np.random.default_rng(1).permutation(y.size)
    shuffled = _csv(tmp_path / "shuffled.csv", {"id": np.arange(y.size)[perm], "y": y[perm], "yhat": base[perm]})
    r = cli("check", d, "--baseline", shuffled, "--key", "id", "--assert", "mse <= baseline", "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["checks"][0]["baseline"] == pytest.approx(np.mean((base - y) ** 2), rel=1e-12)
    # by position the rows are mixed up: its targets differ from DATA's, an input error naming the row
    r = cli("check", d, "--baseline", shuffled, "--assert", "mse <= baseline", "-f", "json")
    assert r.code == 2 and r.out == ""
    assert re.search(r"shuffled\.csv, column 'y', row 1: the baseline's target differs", r.err), r.err


def test_baseline_file_problems_are_input_errors(cli, tmp_path, pair):
    d, b, y, cand, base, _ = pair
    other = _csv(tmp_path / "other.csv", {"y": y, "score": base})
    r = cli("check", d, "--baseline", other, "--assert", "mse <= baseline")
    assert r.code == 2 and "no column 'yhat'" in r.err and "other.csv" in r.err and "score" in r.err
    r = cli("check", d, "--baseline", other, "--baseline-pred", "score", "--assert", "mse <= baseline", "-f", "json")
    assert r.code == 0 and r.json()["checks"][0]["baseline"] == pytest.approx(np.mean((base - y) ** 2), rel=1e-12)
    short = _csv(tmp_path / "short.csv", {"y": y[:-3], "yhat": base[:-3]})
    r = cli("check", d, "--baseline", short, "--assert", "mse <= baseline")
    assert r.code == 2 and "different numbers of rows" in r.err and "397 in" in r.err
    r = cli("check", d, "--baseline", str(tmp_path / "missing.csv"), "--assert", "mse <= baseline")
    assert r.code == 2 and "missing.csv" in r.err
    # a baseline file without the target column is fine: nothing to compare
    no_y = _csv(tmp_path / "no_y.csv", {"yhat": base})
    r = cli("check", d, "--baseline", no_y, "--assert", "mse <= baseline", "-f", "json")
    assert r.code == 0 and r.json()["checks"][0]["baseline"] == pytest.approx(np.mean((base - y) ** 2), rel=1e-12)


def test_two_predictions_or_a_candidate_as_baseline_are_usage_errors(cli, tmp_path, pair):
    d, b, y, cand, base, _ = pair
    both = _csv(tmp_path / "both.csv", {"y": y, "base": base, "cand": cand})
    r = cli("check", both, "-p", "cand", "-p", "base", "--assert", "mse <= 1")
    assert r.code == 2 and "one -p" in r.err
    r = cli("check", both, "-p", "cand", "--baseline-pred", "cand", "--assert", "mse <= baseline")
    assert r.code == 2 and "candidate's own" in r.err


def test_each_file_is_read_once(monkeypatch, pair):
    from lossctl import io

    d, b, y, *_ = pair
    counts: dict[str, list[int]] = {}
    original = io.iter_batches

    def counting(src, *a, **k):
        rows = counts.setdefault(src.name, [])
        rows.append(0)
        for rb in original(src, *a, **k):
            rows[-1] += rb.num_rows
            yield rb

    monkeypatch.setattr(io, "iter_batches", counting)
    s = check.settings(None, {"data": d, "baseline": b, "ci": 0.95, "by": ["seg"]},
                       ["mse <= baseline", "mae <= baseline * 1.1", "mae < 1"])
    gate = check.run(s)
    assert gate.passed and len(gate.checks) == 3 * 5
    # one full pass per file; at most a peek at the first rows of the target for the task
    assert sorted(counts) == sorted([d, b])
    assert [n for n in counts[b]] == [y.size]
    assert [n for n in counts[d] if n == y.size] == [y.size] and sum(counts[d]) <= 2 * y.size


def test_data2_and_a_baseline_file_joined_on_a_key(cli, tmp_path, pair):
    d, b, y, cand, base, _ = pair
    n = y.size
    perm = np.random.default_rng(4).permutation(n)
    t = _csv(tmp_path / "t.csv", {"id": np.arange(n), "y": y})
    p = _csv(tmp_path / "p.csv", {"id": np.arange(n)[perm], "yhat": cand[perm]})
    bb = _csv(tmp_path / "bb.csv", {"id": np.arange(n)[perm[::-1]][:-2], "yhat": base[perm[::-1]][:-2]})
    r = cli("check", t, p, "--baseline", bb, "--key", "id", "--assert", "mse <= baseline", "-f", "json")
    assert r.code == 0, r.err
    c = r.json()["checks"][0]
    keep = np.isin(np.arange(n), np.arange(n)[perm[::-1]][:-2])
    assert c["rows"] == n - 2
    assert c["value"] == pytest.approx(np.mean((cand[keep] - y[keep]) ** 2), rel=1e-12)
    assert c["baseline"] == pytest.approx(np.mean((base[keep] - y[keep]) ** 2), rel=1e-12)
    assert "2 keys of" in r.err and "lack a match" in r.err
    # by position: DATA, DATA2 and the baseline as three aligned files
    p2 = _csv(tmp_path / "p2.csv", {"yhat": cand})
    b2 = _csv(tmp_path / "b2.csv", {"yhat": base})
    c = cli("check", t, p2, "--baseline", b2, "--assert", "mse <= baseline", "-f", "json").json()["checks"][0]
    assert c["baseline"] == pytest.approx(np.mean((base - y) ** 2), rel=1e-12)


# ------------------------------------------------------------------ slices


def test_per_slice_checks_name_the_worst_and_the_slices_too_small(cli, pair):
    d, b, y, cand, base, seg = pair
    r = cli("check", d, "--baseline", b, "--assert", "mae <= 0.45", "--by", "seg", "--min-rows", "20", "-f", "json")
    doc = r.json()
    rows = [c for c in doc["checks"] if c["by"] == "seg"]
    assert [c["group"] for c in rows] == ["a", "b", "c"]
    for c in rows:
        m = seg == c["group"]
        assert c["value"] == pytest.approx(np.mean(np.abs(cand[m] - y[m])), rel=1e-12)
        assert c["rows"] == int(m.sum())
    worst = min(rows, key=lambda c: 0.45 - c["value"])
    assert [c["group"] for c in rows if c.get("worst")] == [worst["group"]]
    assert doc["skipped_slices"] == [{"check": "mae <= 0.45", "by": "seg", "group": "tiny", "rows": 5, "min_rows": 20,
                                      "reason": "too small"}]
    assert doc["slices"][0]["tested"] == 3 and doc["slices"][0]["multiple_testing_correction"] is None
    assert r.code == (1 if any(c["verdict"] == "fail" for c in doc["checks"]) else 0)
    md = cli("check", d, "--assert", "mae <= 0.45", "--by", "seg", "--min-rows", "20", "-f", "markdown").out
    assert "3 slices tested" in md and f"worst seg={worst['group']}" in md
    assert "no multiple-testing correction" in md and "too small to judge (< 20 rows): seg=tiny (5 rows)" in md


def test_a_slice_that_fails_fails_the_gate(cli, tmp_path):
    rng = np.random.default_rng(11)
    n = 600
    y = rng.normal(0, 1, n)
    g = np.repeat(["x", "y", "z"], n // 3)
    base = y + rng.normal(0, 0.3, n)
    cand = base.copy()
    cand[g == "z"] += 2.0  # worse in one slice only, and only a little overall? no: clearly, in z
    d = _csv(tmp_path / "d.csv", {"g": g, "y": y, "cand": cand, "base": base})
    r = cli("check", d, "-p", "cand", "--baseline-pred", "base", "--assert", "mae <= baseline * 2.5", "--by", "g",
            "--ci", "0.95", "-f", "json")
    doc = r.json()
    by_group = {c["group"]: c for c in doc["checks"] if c["by"]}
    assert by_group["z"]["verdict"] == "fail" and by_group["z"].get("worst")
    assert by_group["x"]["verdict"] == "pass" and doc["checks"][0]["by"] is None
    assert r.code == 1


def test_slices_where_the_loss_is_undefined_are_listed_not_failed(cli, tmp_path):
    emb = os.path.join(SAMPLES, "embeddings.parquet")
    out = tmp_path / "j.xml"
    r = cli("check", emb, "--assert", "triplet <= 10", "--by", "label", "--junit", str(out), "-f", "json")
    doc = r.json()
    assert r.code == 0 and [c["by"] for c in doc["checks"]] == [None]  # one class per slice: no mined triplet
    assert len(doc["skipped_slices"]) == 10 and all("two classes" in s["reason"] for s in doc["skipped_slices"])
    assert doc["slices"][0]["tested"] == 0
    root = ET.parse(out).getroot()
    assert root.get("tests") == "11" and root.get("failures") == "0" and len(root.findall(".//skipped")) == 10


def test_checks_with_different_slices_in_one_pass(cli, tmp_path, pair):
    d, b, y, cand, base, seg = pair
    parity = np.where(np.arange(y.size) % 2 == 0, "even", "odd")
    d2 = _csv(tmp_path / "d2.csv", {"seg": seg, "parity": parity, "y": y, "yhat": cand})
    cfg = tmp_path / "gate.toml"
    cfg.write_text(f'''
ci = 0.9
[data]
path = "{d2}"
[[check]]
loss = "mse"
max = 10
by = "seg"
[[check]]
loss = "mae"
max = 10
by = ["parity"]
''')
    doc = cli("check", "--config", str(cfg), "-f", "json").json()
    got = {(c["loss"], c["by"], c["group"]): c for c in doc["checks"] if c["by"]}
    assert set(got) == {("mse", "seg", s) for s in ("a", "b", "c", "tiny")} | {("mae", "parity", p) for p in ("even", "odd")}
    # the merged finer slices give the numbers of a run sliced by that column alone
    alone = cli("check", d2, "--assert", "mae <= 10", "--by", "parity", "--ci", "0.9", "-f", "json").json()
    for c in alone["checks"][1:]:
        mine = got[("mae", "parity", c["group"])]
        assert mine["value"] == pytest.approx(c["value"], rel=1e-12)
        assert mine["ci"] == pytest.approx(c["ci"], rel=1e-9)


def test_verdicts_do_not_depend_on_batch_rows(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    n = 80_000  # slices beyond 32,768 rows: the bootstrap resamples hashed blocks of row indices
    y = rng.normal(0, 1, n)
    g = rng.choice(["p", "q"], n)
    cand = y + rng.normal(0, 0.9, n)
    base = y + rng.normal(0, 1.0, n)
    d, b = str(tmp_path / "d.parquet"), str(tmp_path / "b.parquet")
    pq.write_table(pa.table({"g": g, "y": y, "yhat": cand}), d)
    pq.write_table(pa.table({"y": y, "yhat": base}), b)
    docs = []
    for rows in (None, "777", "5000"):
        args = ["check", d, "--baseline", b, "--assert", "mse <= baseline * 0.81", "--assert", "mae < 0.72",
                "--by", "g", "--ci", "0.95", "--bootstrap", "200", "-f", "json"] + (["--batch-rows", rows] if rows else [])
        docs.append(cli(*args).json())
    assert len(docs[0]["checks"]) == 6
    for doc in docs[1:]:
        for a, c in zip(docs[0]["checks"], doc["checks"]):
            assert a["verdict"] == c["verdict"]
            for k in ("value", "baseline", "delta", "mdd"):
                assert a[k] == pytest.approx(c[k], rel=1e-9, abs=1e-12)
            for k in ("ci", "delta_ci"):
                assert a[k] == pytest.approx(c[k], rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------ config


def _toml(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_config_discovery_and_precedence(cli, tmp_path, monkeypatch, pair):
    d, b, y, cand, base, _ = pair
    mse = float(np.mean((cand - y) ** 2))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = cli("check", "-f", "json")  # nothing anywhere
    assert r.code == 2 and "nothing to check" in r.err
    # pyproject.toml without [tool.lossctl] is not a config; with it, it is
    _toml(work / "pyproject.toml", '[project]\nname = "x"\n')
    assert cli("check", "-f", "json").code == 2
    _toml(work / "pyproject.toml", f'[project]\nname = "x"\n[tool.lossctl.data]\npath = "{d}"\n'
                                    f'[[tool.lossctl.check]]\nloss = "mse"\nmax = {mse * 2}\n')
    r = cli("check", "-f", "json")
    assert r.code == 0 and r.json()["checks"][0]["check"] == f"mse <= {mse * 2:g}"
    # lossctl.toml comes before pyproject.toml
    _toml(work / "lossctl.toml", f'[data]\npath = "{d}"\n[[check]]\nloss = "mae"\nmax = 0.01\n')
    r = cli("check", "-f", "json")
    assert r.code == 1 and r.json()["checks"][0]["loss"] == "mae"
    # --config comes before both; flags override the file; --assert replaces its checks
    cfg = _toml(tmp_path / "other.toml", f'ci = 0.9\nseed = 3\n[data]\npath = "{b}"\n[[check]]\nloss = "mse"\nmax = 100\n')
    doc = cli("check", "--config", cfg, "-f", "json").json()
    assert doc["sources"] == [b] and doc["ci"] == 0.9 and doc["checks"][0]["ci"] is not None
    doc = cli("check", d, "--config", cfg, "--ci", "0.5", "-f", "json").json()
    assert doc["sources"] == [d] and doc["ci"] == 0.5
    doc = cli("check", "--config", cfg, "--assert", "mae <= 100", "-f", "json").json()
    assert [c["check"] for c in doc["checks"]] == ["mae <= 100"]


def test_config_with_a_baseline_paths_relative_to_it_and_percentages(cli, tmp_path, monkeypatch, pair):
    d, b, y, cand, base, _ = pair
    monkeypatch.chdir(ROOT)
    cfg = _toml(tmp_path / "gate.toml", '''
ci = 0.95
strict = true
min_rows = 20
[data]
path = "cand.csv"
baseline = "base.csv"
target = "y"
pred = "yhat"
key = "id"
[[check]]
loss = "mse"
max_vs_baseline = "5%"
by = "seg"
[[check]]
loss = "mae"
max_vs_baseline = 1.05
max = 5
min_rows = 100
by = "seg"
''')
    r = cli("check", "--config", cfg, "-f", "json")
    doc = r.json()
    assert r.code == 0, r.err
    top = [c for c in doc["checks"] if c["by"] is None]
    assert [c["check"] for c in top] == ["mse <= baseline * 1.05", "mae <= baseline * 1.05", "mae <= 5"]
    assert top[0]["bound"] == pytest.approx(1.05 * np.mean((base - y) ** 2), rel=1e-12)
    assert doc["strict"] is True
    skipped = {(s["check"], s["group"]) for s in doc["skipped_slices"]}
    assert skipped == {("mse <= baseline * 1.05", "tiny"), ("mae <= baseline * 1.05", "c"),
                       ("mae <= baseline * 1.05", "tiny"), ("mae <= 5", "c"), ("mae <= 5", "tiny")}
    # --min-rows overrides every check's min_rows; --no-strict the file's strict
    doc = cli("check", "--config", cfg, "--min-rows", "1", "--no-strict", "-f", "json").json()
    assert doc["skipped_slices"] == [] and doc["strict"] is False
    # -p overrides the file's pred (here: the target itself, a perfect model)
    doc = cli("check", "--config", cfg, "-p", "y", "--baseline-pred", "yhat", "-f", "json").json()
    assert doc["checks"][0]["value"] == 0 and doc["checks"][0]["baseline"] == pytest.approx(np.mean((base - y) ** 2))


def test_config_checks_in_the_assert_grammar(cli, tmp_path, monkeypatch, pair):
    """A [[check]] may be written as --assert is ("SPEC OP BOUND", with by and min_rows): the
    same checks and verdicts as the loss/max_vs_baseline form and as the flags."""
    d, b, y, cand, base, _ = pair
    monkeypatch.chdir(ROOT)
    head = '[data]\npath = "cand.csv"\nbaseline = "base.csv"\ntarget = "y"\npred = "yhat"\nkey = "id"\n'
    as_assert = _toml(tmp_path / "a.toml", head + '[[check]]\nassert = "mse <= baseline * 1.05"\nby = "seg"\n'
                      'min_rows = 100\n[[check]]\nassert = "huber:delta=0.5 <= 3"\n')
    as_keys = _toml(tmp_path / "k.toml", head + '[[check]]\nloss = "mse"\nmax_vs_baseline = "5%"\nby = "seg"\n'
                    'min_rows = 100\n[[check]]\nloss = "huber:delta=0.5"\nmax = 3\n')
    a = cli("check", "--config", as_assert, "-f", "json")
    k = cli("check", "--config", as_keys, "-f", "json")
    assert a.code == k.code == 0, (a.err, k.err)
    strip = lambda doc: [{x: c[x] for x in ("loss", "spec", "op", "bound", "value", "verdict", "group")}  # noqa: E731
                         for c in doc["checks"]]
    assert strip(a.json()) == strip(k.json())
    assert [c["check"] for c in a.json()["checks"] if c["by"] is None] == ["mse <= baseline * 1.05",
                                                                          "huber:delta=0.5 <= 3"]
    assert a.json()["checks"][0]["bound"] == pytest.approx(1.05 * np.mean((base - y) ** 2), rel=1e-12)
    flags = cli("check", d, "--baseline", b, "-t", "y", "-p", "yhat",
                "--key", "id", "--assert", "huber:delta=0.5 <= 3", "-f", "json")
    assert flags.json()["checks"][0]["value"] == a.json()["checks"][-1]["value"]


@pytest.mark.parametrize("text, what", [
    ('[[check]]\nassert = "mae << 3"\n', "check[1].assert: --assert 'mae << 3': 2 comparison operators"),
    ('[[check]]\nassert = "mae < 3"\nmax = 4\n', "check[1] gives both assert and max"),
    ('[[check]]\nassert = 3\n', "check[1].assert must be a string"),
    ('[data]\npath = "x.csv"\nfoo = 1\n', "unknown key 'data.foo'"),
    ('colour = "red"\n', "unknown key 'colour'"),
    ('[[check]]\nloss = "mse"\nmax = 1\nmaximum = 2\n', "unknown key 'check[1].maximum'"),
    ('[[check]]\nloss = "mse"\n', "has no bound"),
    ('[[check]]\nmax = 1\n', "has no 'loss'"),
    ('[[check]]\nloss = "mse"\nmax = "a lot"\n', "check[1].max must be a number"),
    ('[[check]]\nloss = "mse"\nmax_vs_baseline = "five%"\n', "a percentage"),
    ('[[check]]\nloss = "msx"\nmax = 1\n', "unknown loss 'msx'"),
    ('ci = true\n', "ci must be a number"),
    ('[data\n', "not valid TOML"),
])
def test_config_errors_name_the_key(cli, tmp_path, text, what):
    cfg = _toml(tmp_path / "bad.toml", text)
    r = cli("check", REG, "--config", cfg, "--assert", "mse <= 1e9")
    assert r.code == 2 and what in r.err and "bad.toml" in r.err and r.out == "", r.err


def test_pyproject_unknown_key_names_the_tool_table(cli, tmp_path, monkeypatch):
    _toml(tmp_path / "pyproject.toml", '[tool.lossctl]\nthreshold = 1\n')
    monkeypatch.chdir(tmp_path)
    r = cli("check", REG, "--assert", "mse <= 1e9")
    assert r.code == 2 and "unknown key 'tool.lossctl.threshold'" in r.err


# ------------------------------------------------------------------ reports


def test_junit_report(cli, tmp_path, pair):
    d, b, *_ = pair
    out = tmp_path / "junit.xml"
    r = cli("check", d, "--baseline", b, "--assert", "mse <= baseline", "--assert", "mae < 0.01", "--by", "seg",
            "--min-rows", "20", "--ci", "0.95", "--junit", str(out), "-f", "json")
    assert r.code == 1
    doc = r.json()
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    # one per check and judged slice (2 × (1 + 3)), plus a skipped one per slice too small (2 × 1)
    assert len(cases) == len(doc["checks"]) + len(doc["skipped_slices"]) == 10
    failed = [c for c in doc["checks"] if c["verdict"] == "fail"]
    assert int(suite.get("tests")) == int(root.get("tests")) == 10
    assert int(suite.get("failures")) == int(root.get("failures")) == len(failed) == 4
    assert int(suite.get("skipped")) == 2 and suite.get("errors") == "0"
    for el in (root, suite):
        assert el.get("name") == "lossctl check" and float(el.get("time")) >= 0
    for case in cases:
        assert case.get("name") and case.get("classname").startswith("lossctl.check.") and case.get("time") is not None
    fails = [c for c in cases if c.find("failure") is not None]
    assert {c.get("name") for c in fails} == {"mae < 0.01"} | {f"mae < 0.01 [seg={g}]" for g in "abc"}
    text = fails[0].find("failure").text
    for key in ("observed:", "bound:", "baseline:", "delta:", "ci:", "delta_ci:", "mdd:"):
        assert key in text
    assert "value" in fails[0].find("failure").get("message")
    assert [c.get("name") for c in cases if c.find("skipped") is not None] == ["mse <= baseline [seg=tiny]",
                                                                              "mae < 0.01 [seg=tiny]"]


def test_junit_passes_write_no_failure_and_unwritable_is_exit_2(cli, tmp_path, pair):
    d, *_ = pair
    out = tmp_path / "j.xml"
    assert cli("check", d, "--assert", "mse <= 100", "--junit", str(out), "-f", "json").code == 0
    root = ET.parse(out).getroot()
    assert root.get("failures") == "0" and root.find(".//failure") is None
    r = cli("check", d, "--assert", "mse <= 100", "--junit", str(tmp_path / "no" / "such" / "j.xml"), "-f", "json")
    assert r.code == 2 and r.out == "" and "cannot write" in r.err


def test_github_annotations_and_step_summary(cli, tmp_path, monkeypatch, pair):
    d, b, *_ = pair
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    r = cli("check", d, "--baseline", b, "--assert", "mae < 0.01", "--assert", "mse <= baseline", "-f", "json")
    assert r.code == 1
    errors = [l for l in r.err.splitlines() if l.startswith("::error")]
    assert len(errors) == 1 and errors[0].startswith("::error title=lossctl check%3A mae < 0.01::mae < 0.01: fail")
    assert "::error" not in r.out and json.loads(r.out)["passed"] is False
    text = summary.read_text()
    assert text.startswith("earlier step\n## lossctl check")
    assert "| `mae < 0.01` |" in text and "**FAIL**" in text and "FAILED: 2 checks" in text
    # no annotations nor summary outside GitHub Actions
    monkeypatch.setenv("GITHUB_ACTIONS", "false")
    r = cli("check", d, "--assert", "mae < 0.01", "-f", "json")
    assert "::error" not in r.err and summary.read_text() == text


def test_annotations_beyond_ten_are_aggregated(cli, tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    n = 240
    g = np.repeat([f"g{i:02d}" for i in range(12)], n // 12)
    y = rng.normal(0, 1, n)
    d = _csv(tmp_path / "d.csv", {"g": g, "y": y, "yhat": y + 1})
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    r = cli("check", d, "--assert", "mae < 0.5", "--by", "g", "-f", "json")
    assert r.code == 1 and len(r.json()["checks"]) == 13
    errors = [l for l in r.err.splitlines() if l.startswith("::error")]
    assert len(errors) == 10
    assert "4 more checks failed" in errors[-1] and "mae < 0.5 [g=g11]" in errors[-1]


def test_table_and_markdown_show_every_column(cli, pair):
    d, b, *_ = pair
    md = cli("check", d, "--baseline", b, "--assert", "mse <= baseline", "--ci", "0.95", "-f", "markdown").out
    head = md.splitlines()[2]
    for col in ("check", "value", "bound", "baseline", "delta", "CI", "mdd", "verdict"):
        assert col in head
    from lossctl.check_report import render

    import io

    gate = check.run(check.settings(None, {"data": d, "baseline": b, "ci": 0.95}, ["mse <= baseline"]))
    buf = io.StringIO()
    render(gate, "table", buf, width=160)
    text = buf.getvalue()
    assert "mse <= baseline" in text and "pass" in text and "PASSED: 1 check" in text
    assert "minimum detectable difference" in text
    assert cli("check", d, "--assert", "mse <= 1", "-f", "csv").code == 2


@pytest.mark.parametrize("width", [160, 60, 44])
def test_table_keeps_every_verdict_and_number_on_a_narrow_terminal(pair, width):
    """A table too wide for the terminal is a line per check, its verdict first: rich dropped
    the value, delta and verdict columns at 50 columns, keeping check, bound, baseline and mdd."""
    import io

    from lossctl.check_report import cells, render

    d, b, *_ = pair
    gate = check.run(check.settings(None, {"data": d, "baseline": b, "ci": 0.9, "bootstrap": 200, "by": ["seg"]},
                                    ["mse <= baseline", "mae < 0.6"]))
    buf = io.StringIO()
    render(gate, "table", buf, width=width)
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    words = " ".join(text.split())  # (lines wrapped at spaces)
    for c in gate.checks:
        row = cells(c, gate.strict, digits=4)
        for k in ("value", "delta", "mdd"):
            for token in row[k].replace("[", " ").replace("]", " ").replace(",", " ").split():
                assert token in words, (width, k, token)
    verdicts = [w for w in words.split() if w.rstrip(":·") in ("pass", "fail", "inconclusive", "FAIL")]
    assert len(verdicts) >= len(gate.checks), (width, words)
    table = any(re.match(r"check\s+value", line) for line in text.splitlines())
    assert table == (width == 160)  # the table where it fits, lines where it does not


# ------------------------------------------------------------------ exit codes


def test_exit_codes(cli, tmp_path, monkeypatch, pair):
    d, *_ = pair
    assert cli("check", d, "--assert", "mse <= 100", "-f", "json").code == 0
    assert cli("check", d, "--assert", "mse <= 0.0001", "-f", "json").code == 1
    assert cli("check", d, "--assert", "mse <== 1").code == 2
    assert cli("check", str(tmp_path / "nope.csv"), "--assert", "mse <= 1").code == 2
    assert cli("check", d, "--assert", "mse <= 1", "--min-rows", "0").code == 2
    bad = _csv(tmp_path / "bad.csv", {"y": np.array([1.0, np.nan]), "yhat": np.array([1.0, 2.0])})
    r = cli("check", bad, "--assert", "mse <= 1")
    assert r.code == 2 and "row 2" in r.err and r.out == ""

    def boom(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(check, "judge", boom)
    r = cli("check", d, "--assert", "mse <= 100", "-f", "json")
    assert r.code == 3 and "internal error" in r.err and r.out == ""


def test_exit_codes_of_a_real_process(tmp_path, pair):
    d, b, *_ = pair
    assert run_subprocess("check", d, "--assert", "mse <= 100", "-q").code == 0
    r = run_subprocess("check", d, "--baseline", b, "--assert", "mse >= baseline", "--ci", "0.95")
    assert r.code == 1 and r.out.strip().startswith("{") and "FAILED" in r.err
    assert run_subprocess("check", d, "--assert", "mse <= x").code == 2


# ------------------------------------------------------------------ properties


def _gate(cols: dict[str, np.ndarray], assertion: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = _csv(os.path.join(tmp, "d.csv"), cols)
        s = check.settings(None, {"data": path, "pred": "cand", "baseline_pred": "base", "ci": 0.95, "bootstrap": 200},
                           [assertion])
        return check.run(s).checks[0].verdict


rows = st.integers(min_value=3, max_value=200)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=rows, seed=st.integers(0, 2**32 - 1), loss=st.sampled_from(["mse", "mae", "huber", "log_cosh"]))
def test_an_identical_baseline_never_fails(n, seed, loss):
    rng = np.random.default_rng(seed)
    y = rng.normal(0, rng.uniform(0.1, 100), n)
    p = y + rng.standard_t(2, n)
    assert _gate({"y": y, "cand": p, "base": p.copy()}, f"{loss} <= baseline") == "pass"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=rows, seed=st.integers(0, 2**32 - 1), loss=st.sampled_from(["mse", "mae", "huber", "log_cosh"]))
def test_a_clearly_worse_candidate_always_fails(n, seed, loss):
    rng = np.random.default_rng(seed)
    y = rng.normal(0, rng.uniform(0.1, 100), n)
    base = y + rng.normal(0, 1, n)
    r = base - y
    # shifted beyond twice the largest residual: every row's loss grows, so every resample's delta is > 0
    cand = base + 2 * np.max(np.abs(r)) + 1
    assert _gate({"y": y, "cand": cand, "base": base}, f"{loss} <= baseline") == "fail"


# ------------------------------------------------------------------ docs


def test_check_has_help_and_every_option_is_in_the_readme(cli):
    r = cli("check", "--help")
    assert r.code == 0 and len(r.out) > 500
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    options = set(re.findall(r"(--[a-z][a-z-]+)", r.out)) - {"--help", "--no-logits", "--no-strict"}
    section = readme[readme.index("## CI gate: `lossctl check`"):]
    section = section[:section.index("\n## ", 3)]
    missing = {o for o in options if o not in section}
    assert not missing, missing


def _readme_section() -> str:
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme[readme.index("## CI gate: `lossctl check`"):]
    return section[:section.index("\n## ", 3)]


def test_the_readme_shell_line_gates_on_sample_data(tmp_path):
    block = re.search(r"```sh\n(.*?)```", _readme_section(), re.S).group(1)
    lines = [l for l in block.strip().splitlines() if l.startswith("lossctl check")]
    assert lines
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               PYTHONPATH=ROOT)
    env.pop("GITHUB_ACTIONS", None)
    for line in lines:
        cmd = line.replace("lossctl ", f"{sys.executable} -m lossctl ", 1)
        p = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, env=env)
        assert p.returncode == 0, (line, p.stderr)
        assert "PASSED" in p.stdout + p.stderr


def test_the_readme_github_job_runs_the_same_check():
    yml = re.search(r"```yaml\n(.*?)```", _readme_section(), re.S).group(1)
    assert "lossctl check" in yml and "--junit" in yml
    block = re.search(r"```sh\n(.*?)```", _readme_section(), re.S).group(1)
    line = next(l for l in block.strip().splitlines() if l.startswith("lossctl check"))
    assert line in yml


def test_help_does_not_import_pandas_or_pyarrow():
    code = ("import sys\nfrom lossctl.cli import main\ntry:\n    main(['check', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.stdout.strip().splitlines()[-1] == "[]"


def test_the_readme_config_works(cli, tmp_path):
    text = re.search(r"```toml\n(.*?)```", _readme_section(), re.S).group(1)
    cfg = _toml(tmp_path / "lossctl.toml", text.replace('"sample_data/', f'"{SAMPLES}/'))
    r = cli("check", "--config", cfg, "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert [c["check"] for c in doc["checks"] if c["by"] is None] == ["mae <= baseline * 1.02", "huber:delta=10 <= 400",
                                                                      "mse <= baseline + 5"]
    assert doc["ci"] == 0.95 and {s["group"] for s in doc["skipped_slices"]} == {"west"}


@pytest.mark.parametrize("bound, code", [("100", 0), ("0.0001", 1)])
def test_a_closed_pipe_keeps_the_verdict_as_exit_code(pair, bound, code):
    d, *_ = pair
    r, w = os.pipe()
    os.close(r)  # the reader is gone before lossctl writes
    try:
        p = subprocess.run([sys.executable, "-m", "lossctl", "check", d, "--assert", f"mse <= {bound}", "-f", "json"],
                           stdout=w, stderr=subprocess.PIPE, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    finally:
        os.close(w)
    assert p.returncode == code and b"Traceback" not in p.stderr


def test_nan_drop_is_noted(cli, tmp_path):
    y = np.array([1.0, 2.0, 3.0, 4.0])
    d = _csv(tmp_path / "d.csv", {"y": y, "yhat": np.array([1.5, np.nan, 2.5, 4.0])})
    r = cli("check", d, "--assert", "mae <= 1", "--nan", "drop", "-f", "json")
    assert r.code == 0 and r.json()["checks"][0]["rows"] == 3
    assert r.json()["checks"][0]["value"] == pytest.approx(1 / 3, rel=1e-12)
    assert "dropped 1 rows" in r.err and "dropped 1 rows" in r.json()["warnings"][0]


def test_notes_go_to_stderr_and_the_step_summary_not_stdout(cli, tmp_path, monkeypatch):
    mc = os.path.join(SAMPLES, "multiclass.csv")
    summary = tmp_path / "s.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    r = cli("check", mc, "--assert", "cross_entropy <= 5", "-f", "markdown")
    assert r.code == 0
    assert "as logits" in r.err and "as logits" not in r.out and "as logits" in summary.read_text()
