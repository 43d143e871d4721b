"""Renderers on a fixed-width console, and the docs the registry must carry."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from lossctl import registry
from lossctl.plan import Request
from lossctl.driver import accumulate
from lossctl.assemble import build_report
from lossctl.planner import prepare
from lossctl.render import markdown, render_report, sparkline

from conftest import SAMPLES


def report(path, **kw):
    plan, inputs = prepare(Request(data=path, **kw))
    try:
        return build_report(plan, accumulate(plan, inputs, sample=True))
    finally:
        inputs.close()


def table(rep, width=100, pictures=True):
    out = io.StringIO()
    render_report(rep, "table", out, width=width, pictures=pictures)
    return out.getvalue()


def test_regression_table_with_gradients_and_picture():
    rep = report(f"{SAMPLES}/regression.csv", losses=["mse", "huber:delta=30", "mae"], grad=True)
    text = table(rep)
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines)
    assert "task: regression (inferred)" in text
    for spec in ("mse", "huber:delta=30", "mae"):
        assert spec in text
    assert "r = ŷ − y" in text and "● mse" in text and "▲ mae" in text
    assert "beyond the range shown" in text  # the sample's gross outliers are counted, not drawn
    assert "\x1b[" not in text


def test_no_picture_unless_asked():
    rep = report(f"{SAMPLES}/regression.csv", losses=["mse"])
    assert "r = ŷ − y" not in table(rep, pictures=False)


def test_comparison_table_marks_the_best_and_markdown_has_deltas(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    df = pd.DataFrame({"y": y, "good": y + rng.normal(0, 0.1, 200), "bad": y + rng.normal(0, 1, 200)})
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    rep = report(str(path), target="y", preds=["bad", "good"], losses=["mse", "mae"], ci=0.9, bootstrap=200)
    text = table(rep, pictures=False)
    assert text.count("★ ") == 3  # the legend and one best per row
    md = markdown(rep)
    assert "| loss | bad | good |" in md
    assert "**" in md and "Δ" in md
    d = rep.to_json()
    c = d["comparisons"][0]
    assert c["baseline"] == "bad" and c["pred"] == "good" and c["delta"] < 0
    assert c["ci"][0] <= c["delta"] <= c["ci"][1] and c["ci"][1] < 0  # clearly better


def test_worst_slice_is_marked(cli):
    d = cli("eval", f"{SAMPLES}/regression.csv", "-l", "mae", "--by", "region", "-f", "json").json()
    worst = [g["value"] for g in d["groups"] if g["results"][0].get("worst")]
    vals = {g["value"]: g["results"][0]["value"] for g in d["groups"]}
    assert worst == [max(vals, key=vals.get)]
    text = cli("eval", f"{SAMPLES}/regression.csv", "-l", "mae", "--by", "region", "-f", "table").out
    assert "▲" in text


def test_per_row_output_with_id(cli, tmp_path):
    df = pd.DataFrame({"id": ["a", "b", "c"], "y": [1.0, 2.0, 3.0], "yhat": [1.5, 2.0, 1.0]})
    path = tmp_path / "r.csv"
    df.to_csv(path, index=False)
    r = cli("eval", str(path), "-l", "mae", "--reduction", "none", "--id", "id", "-f", "jsonl", "--grad")
    rows = [json.loads(x) for x in r.out.splitlines()]
    assert rows == [{"id": "a", "mae": 0.5, "mae.grad": 1.0}, {"id": "b", "mae": 0.0, "mae.grad": 0.0},
                    {"id": "c", "mae": 2.0, "mae.grad": -1.0}]


def test_sparkline():
    assert sparkline(np.array([])) == ""
    assert sparkline(np.array([1.0, 1.0])) == "█"
    s = sparkline(np.array([0.0] * 10 + [1.0]), bins=4)
    assert len(s) == 4 and s[0] == "█"


@pytest.mark.parametrize("spec", registry.all_losses(), ids=lambda s: s.name)
def test_every_loss_is_documented(spec):
    p = spec.properties
    assert p.formula and p.gradient and p.use_when and p.avoid_when and p.references, spec.name
    assert spec.summary and spec.example.startswith("lossctl eval - "), spec.name
    assert p.robust in ("no", "bounded-influence", "yes")
    for q in spec.params:
        assert q.help, (spec.name, q.name)
    for r in spec.roles:
        assert r.help, (spec.name, r.name)


def test_list_and_explain(cli):
    d = cli("list", "-f", "json").json()
    names = [x["name"] for x in d["losses"]]
    assert names == [s.name for s in registry.all_losses()]
    reg = cli("list", "--task", "regression", "-f", "json").json()
    assert {x["name"] for x in reg["losses"]} == {s.name for s in registry.losses_for_task("regression")}
    md = cli("list", "-f", "markdown").out
    assert md.count("\n") == len(names) + 2
    text = cli("explain", "huber").out
    assert "clip(r, −δ, δ)" in text and "## Use when" in text and "lossctl eval - " in text
    r = cli("explain", "hubr")
    assert r.code == 2 and "Did you mean huber" in r.err
    assert cli("explain", "quantile", "-f", "json").json()["properties"]["estimates"] == "conditional τ-quantile"


def test_explain_examples_run(run_example):
    for spec in registry.all_losses():
        r = run_example(spec.example, "-f", "json")
        assert r.code == 0, (spec.name, r.err)


@pytest.mark.parametrize("width", [40, 60, 100])
def test_explain_wraps_its_prose_at_words_on_a_terminal(width):
    """On a terminal explain's text is wrapped at spaces to the terminal's width (a terminal
    folds mid-word: 'colu' / 'mns'); the words are the same, and the example, a shell command
    to paste, is left as it stands."""
    from lossctl import catalog

    for spec in registry.all_losses():
        plain, wrapped = io.StringIO(), io.StringIO()
        catalog.render_explain(spec.name, "table", plain)
        catalog.render_explain(spec.name, "table", wrapped, width=width)
        example = f"{spec.example}\n" if spec.example else ""
        a, b = plain.getvalue(), wrapped.getvalue()
        assert a.endswith(example) and b.endswith(example)
        prose_a, prose_b = a[: len(a) - len(example)], b[: len(b) - len(example)]
        assert prose_a.split() == prose_b.split(), spec.name
        for line in prose_b.splitlines():
            assert len(line) <= width or " " not in line.strip(), (spec.name, line)


def test_explain_on_a_terminal_takes_its_width(monkeypatch, capsys):
    from lossctl import cli

    monkeypatch.setattr(cli, "_is_tty", lambda stream: True)
    monkeypatch.setenv("COLUMNS", "44")
    assert cli.main(["explain", "huber"]) == 0
    out = capsys.readouterr().out.split("## Example")[0]  # (the example is a command to paste, as it stands)
    assert max(len(line) for line in out.splitlines()) <= 44
    monkeypatch.setattr(cli, "_is_tty", lambda stream: False)  # a pipe: whole lines
    assert cli.main(["explain", "huber"]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) > 44
