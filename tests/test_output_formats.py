"""Every output format of eval / merge / list / explain as a script reads it.

Machine formats (json, jsonl, csv, tsv) are parsed with the standard library only
and must hold exactly the numbers of the json document (shortest round-trip floats,
never rounded); column and key names are the documented ones; the rich table must
stay readable on narrow and colourful terminals (rich Console(force_terminal=True)
in-process, a real pseudo-terminal for NO_COLOR) and never read data as markup;
results go to stdout, notes to stderr; two runs give the same bytes.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lossctl.results import GRAD_KEYS, Comparison, Group, LossResult, Report
from lossctl.render import fmt_num, markdown, render_report

from conftest import ROOT, SAMPLES

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A regression file with three prediction sets, two slice columns and an id."""
    rng = np.random.default_rng(7)
    n = 240
    y = rng.normal(size=n)
    df = pd.DataFrame({
        "id": [f"r{i}" for i in range(n)],
        "g": rng.choice(["a", "b", "c"], n),
        "h": rng.choice(["x", "y"], n),
        "y": y,
        "m1": y + rng.normal(0, 0.5, n),
        "m2": y + rng.normal(0, 0.3, n),
        "m3": y + rng.normal(0, 1.0, n),
    })
    path = tmp_path_factory.mktemp("fmt") / "models.csv"
    df.to_csv(path, index=False)
    return str(path)


def parse(fmt: str, text: str):
    if fmt == "json":
        return json.loads(text)
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines()]
    delim = "\t" if fmt == "tsv" else ","
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delim))


def num(cell: str) -> float | None:
    return None if cell == "" else float(cell)  # float() reads "inf", "-inf", "nan"


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a != a and b != b) or a == b  # exact, NaN equal to NaN


def json_number(d: dict, key: str) -> float | None:
    """A number of the json document, with its non-finite marker read back."""
    marker = d.get("nonfinite" if key == "value" else f"{key}_nonfinite")
    return float(marker) if marker is not None else d.get(key)


def report_of(**kw) -> Report:
    return Report(task="regression", task_inferred=False, rows=10, dropped_rows=0, **kw)


def res(spec="mse", pred="yhat", value=1.0, **kw) -> LossResult:
    return LossResult(loss=spec.split(":")[0], spec=spec, params={}, pred=pred, value=value, n=10, **kw)


def table(rep: Report, width: int, color: bool = True) -> str:
    out = io.StringIO()
    render_report(rep, "table", out, color=color, width=width, pictures=False)
    return out.getvalue()


def plain(text: str) -> str:
    return ANSI.sub("", text)


# ---------------------------------------------------------------- csv / tsv / jsonl hold the json numbers


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_flat_formats_hold_exactly_the_json_numbers(cli, models, fmt):
    args = ("eval", models, "-t", "y", "-p", "m1", "-p", "m2", "-l", "mse", "-l", "huber:delta=0.5",
            "-l", "quantile:tau=0.9", "--grad", "--ci", "0.9", "--bootstrap", "40")
    doc = cli(*args, "-f", "json").json()
    rows = parse(fmt, cli(*args, "-f", fmt).out)
    if fmt == "jsonl":
        assert [r for r in rows if not r.get("comparison")] == [
            {"task": "regression", "rows": 240, **r} for r in doc["results"]]
        assert [r for r in rows if r.get("comparison")] == [
            {"task": "regression", "rows": 240, "comparison": True, **c} for c in doc["comparisons"]]
        return
    assert len(rows) == len(doc["results"])
    for row, r in zip(rows, doc["results"]):
        assert (row["loss"], row["spec"], row["pred"], int(row["n"])) == (r["loss"], r["spec"], r["pred"], r["n"])
        assert float(row["value"]) == r["value"]  # full precision, not a few digits
        assert [float(row["ci_lo"]), float(row["ci_hi"])] == r["ci"]
        for k in GRAD_KEYS:
            assert float(row[f"grad_{k}"]) == r["grad"][k], k
    # the comparisons: the delta of each later set to the first, and its paired interval
    cmp = {(c["spec"], c["pred"]): c for c in doc["comparisons"]}
    for row in rows:
        c = cmp.get((row["spec"], row["pred"]))
        if c is None:
            assert row["baseline"] == row["delta"] == row["delta_ci_lo"] == row["delta_ci_hi"] == ""
        else:
            assert row["baseline"] == "m1"
            assert float(row["delta"]) == c["delta"]
            assert [float(row["delta_ci_lo"]), float(row["delta_ci_hi"])] == c["ci"]


def test_csv_columns_are_the_documented_ones(cli, models):
    head = cli("eval", models, "-t", "y", "-p", "m1", "-l", "mse", "-f", "csv").out.splitlines()[0]
    assert head == "loss,spec,pred,value,n"
    head = cli("eval", models, "-t", "y", "-p", "m1", "-p", "m2", "-l", "mse", "--grad", "--ci", "0.9",
               "--bootstrap", "20", "--by", "g", "-f", "tsv").out.splitlines()[0]
    assert head.split("\t") == (["by", "group", "group_rows", "loss", "spec", "pred", "value", "n", "ci_lo", "ci_hi",
                                 "baseline", "delta", "delta_ci_lo", "delta_ci_hi"]
                                + [f"grad_{k}" for k in GRAD_KEYS] + ["worst"])


def test_slices_in_csv_and_jsonl_carry_the_worst_mark_and_the_cross(cli, models):
    args = ("eval", models, "-t", "y", "-p", "m1", "-p", "m2", "-l", "mse", "-l", "mae", "--by", "g", "--by", "h",
            "--min-rows", "30")
    doc = cli(*args, "-f", "json").json()
    rows = parse("csv", cli(*args, "-f", "csv").out)
    lines = parse("jsonl", cli(*args, "-f", "jsonl").out)
    overall = [r for r in rows if r["group"] == "(all)"]
    assert [(r["spec"], r["pred"]) for r in overall] == [(r["spec"], r["pred"]) for r in doc["results"]]
    assert all(r["by"] == "" and r["worst"] == "" and int(r["group_rows"]) == 240 for r in overall)
    sliced = [r for r in rows if r["group"] != "(all)"]
    expected = [(g, r) for g in doc["groups"] for r in g["results"]]
    per_slice_cmp = sum(len(g["comparisons"]) for g in doc["groups"])
    assert per_slice_cmp == 2 * len(doc["groups"])  # each slice compares m2 with m1 for mse and mae
    assert len(sliced) == len(expected) and len(lines) == len(doc["results"]) + 2 + len(expected) + per_slice_cmp
    lines = [line for line in lines if not ("group" in line and line.get("comparison"))]
    for row, (g, r) in zip(sliced, expected):
        assert row["by"] == g["by"] == "g,h"
        assert json.loads(row["group"]) == g["value"]  # a cross is a JSON list in one cell
        assert int(row["group_rows"]) == g["rows"]
        assert float(row["value"]) == r["value"]
        assert row["worst"] == ("true" if r.get("worst") else "false")
    for line, (g, r) in zip(lines[-len(expected):], expected):
        assert line["group"] == g["value"] and line["group_rows"] == g["rows"] and line.get("worst") == r.get("worst")
    # one worst slice per (loss, prediction set), and it is the largest value
    for spec in ("mse", "mae"):
        for pred in ("m1", "m2"):
            vals = {tuple(json.loads(r["group"])): float(r["value"]) for r in sliced
                    if r["spec"] == spec and r["pred"] == pred}
            worst = [tuple(json.loads(r["group"])) for r in sliced
                     if r["spec"] == spec and r["pred"] == pred and r["worst"] == "true"]
            assert worst == [max(vals, key=vals.get)]


def test_vector_gradients_by_role_reach_csv(cli):
    path = f"{SAMPLES}/triplets.csv"
    doc = cli("eval", path, "--grad", "-f", "json").json()
    (row,) = parse("csv", cli("eval", path, "--grad", "-f", "csv").out)
    by_role = doc["results"][0]["grad_by_role"]
    assert set(by_role) == {"anchor", "positive", "negative"}
    for role, g in by_role.items():
        for k in GRAD_KEYS:
            assert float(row[f"grad_{role}_{k}"]) == g[k], (role, k)


# ---------------------------------------------------------------- non-finite values


@pytest.fixture
def kl_file(write_csv):
    # row 1: the target puts mass where the prediction has none, so KL is +inf
    return write_csv("kl.csv", "p_0,p_1,q_0,q_1\n0.5,0.5,1,0\n0.2,0.8,0.3,0.7\n")


def test_nonfinite_values_in_every_machine_format(cli, kl_file):
    args = ("eval", kl_file, "-l", "kl", "-l", "tv", "--grad")
    doc = cli(*args, "-f", "json").json()
    kl = doc["results"][0]
    assert kl["value"] is None and kl["nonfinite"] == "inf"
    for fmt in ("csv", "tsv"):
        rows = parse(fmt, cli(*args, "-f", fmt).out)
        for row, r in zip(rows, doc["results"]):
            assert same(num(row["value"]), json_number(r, "value"))
            for k in GRAD_KEYS:
                assert same(num(row[f"grad_{k}"]), json_number(r["grad"], k)), (fmt, k)
    text = cli(*args, "-f", "jsonl").out
    assert "Infinity" not in text and "NaN" not in text
    assert [json.loads(x) for x in text.splitlines()] == [{"task": "distribution", "rows": 2, **r} for r in doc["results"]]


def test_per_row_jsonl_marks_nonfinite_values_like_the_json_document(cli, kl_file):
    out = cli("eval", kl_file, "-l", "kl", "-l", "tv", "--reduction", "none", "-f", "jsonl").out
    rows = [json.loads(x) for x in out.splitlines()]
    assert rows[0] == {"kl": None, "kl_nonfinite": "inf", "tv": 0.5}
    assert set(rows[1]) == {"kl", "tv"} and rows[1]["kl"] > 0
    rows = parse("csv", cli("eval", kl_file, "-l", "kl", "--reduction", "none", "-f", "csv").out)
    assert [r["kl"] for r in rows][0] == "inf"


# ---------------------------------------------------------------- --reduction none


def test_per_row_columns_are_named_by_spec_and_hold_full_precision(cli, tmp_path):
    import lossctl

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"id": [f"k{i}" for i in range(50)], "y": rng.random(50), "prob": rng.random(50)})
    df["y"] = (df["y"] > 0.5).astype(int)
    path = tmp_path / "b.csv"
    df.to_csv(path, index=False)
    specs = ["focal:gamma=1,alpha=0.5", "bce"]
    args = ["eval", str(path), "-t", "y", "-p", "prob", "--grad", "--reduction", "none", "--id", "id"]
    for s in specs:
        args += ["-l", s]
    for fmt in ("csv", "tsv", "jsonl"):
        rows = parse(fmt, cli(*args, "-f", fmt).out)
        assert list(rows[0]) == ["id", "focal:gamma=1,alpha=0.5", "focal:gamma=1,alpha=0.5.grad", "bce", "bce.grad"]
        assert [r["id"] for r in rows] == df["id"].tolist()
        for s in specs:
            loss, grad = lossctl.per_row(df["y"].to_numpy(), df["prob"].to_numpy(), s)
            got = [float(r[s]) for r in rows]
            np.testing.assert_allclose(got, loss, rtol=1e-15, atol=0)
            np.testing.assert_allclose([float(r[f"{s}.grad"]) for r in rows], grad["pred"], rtol=1e-15, atol=0)


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_per_row_ids_survive_any_character(cli, tmp_path, fmt):
    ids = ["a,b", 'q"t', "line\nbreak", "cr\rx", "tab\tx", "ünï", "", " sp"]
    path = tmp_path / "ids.parquet"
    pd.DataFrame({"id": ids, "y": np.arange(8.0), "yhat": np.arange(8.0) + 0.25}).to_parquet(path)
    out = cli("eval", str(path), "-l", "mae", "--reduction", "none", "--id", "id", "-f", fmt).out
    rows = parse(fmt, out)
    assert [r["id"] for r in rows] == ids
    assert [float(r["mae"]) for r in rows] == [0.25] * 8


# ---------------------------------------------------------------- markdown


def test_markdown_slices_mark_the_worst_and_escape_pipes():
    rep = report_of(
        results=[res("mse", "a|b", 1.0), res("mse", "c", 0.5)],
        comparisons=[Comparison(loss="mse", spec="mse", params={}, pred="c", baseline="a|b", value=0.5,
                                baseline_value=1.0)],
        groups=[Group(by="g,h", value=("x|y", 1), rows=4, results=[res("mse", "a|b", 2.0, worst=True)]),
                Group(by="g,h", value=("z", 2), rows=6, results=[res("mse", "a|b", 0.5)])],
    )
    md = markdown(rep)
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    cells = [re.split(r"(?<!\\)\|", line)[1:-1] for line in table_lines]
    assert len({len(c) for c in cells[:3]}) == 1  # the header, the rule and the row agree on the columns
    assert cells[0][1].strip() == r"a\|b"
    after = md.split("Slices by", 1)[1]
    slices = [re.split(r"(?<!\\)\|", line)[1:-1] for line in after.splitlines() if line.startswith("| ")][1:]
    # a row per slice and prediction set; the slice's value and rows on its first row
    assert [c[0].strip() for c in slices] == [r"x\|y · 1", "", "z · 2", ""]
    assert [c[1].strip() for c in slices] == [r"a\|b", "c"] * 2  # which prediction set each row shows
    assert slices[0][3].strip() == "▲ 2" and slices[2][3].strip() == "0.5"


# ---------------------------------------------------------------- the rich table


def test_table_keeps_loss_and_value_on_a_narrow_terminal():
    spec = "focal:gamma=2,alpha=0.25,logits=true,eps=1e-12"
    grad = dict(zip(GRAD_KEYS, [0.5, 1.25, -3.0, 4.0, 0.75, 123456.0, 0.0, 0.01]))
    rep = report_of(results=[res(spec, "p", 1.5e300, grad=grad, grad_sample=np.linspace(-1, 1, 50))])
    for width in (100, 80, 60, 40):
        text = plain(table(rep, width))
        assert max(map(len, text.splitlines())) <= width
        flat = re.sub(r"[\s│┃]", "", text)
        assert spec.replace(" ", "") in flat, width  # the loss is never cut to nothing
        assert "1.5000e+300" in text, width  # nor its value
        assert "1.235e+05" in text, width  # nor a gradient statistic


@pytest.mark.parametrize("ci", [False, True])
def test_slices_keep_every_number_whole_on_a_narrow_terminal(ci):
    """Slices of two models: a row per slice where that fits, narrower a row per loss, narrower
    still a line per loss; at no width is a value, a delta or an interval end folded or cut."""
    preds, specs = ["ridge", "gbr"], ["mse", "mae", "huber", "quantile"]
    groups, tokens = [], set()
    for gi, key in enumerate(["F", "M"]):
        results, comps = [], []
        for k, s in enumerate(specs):
            base = 3171.41 / (k + 1) + gi
            for i, p in enumerate(preds):
                v = base / (1 + 1.5 * i)
                iv = (v * 0.877, v * 1.136) if ci else None
                results.append(res(s, p, v, ci=iv, worst=gi == 0))
                tokens.add(fmt_num(v))
                if i:
                    d = v - base
                    dci = (d * 1.17, d * 0.84) if ci else None
                    comps.append(Comparison(loss=s, spec=s, params={}, pred=p, baseline=preds[0], value=v,
                                            baseline_value=base, ci=dci))
                    tokens.add(fmt_num(d, 3, signed=True, scale=max(abs(v), abs(base))))
        groups.append(Group(by="sex", value=key, rows=235 - 28 * gi, results=results, comparisons=comps))
    rep = report_of(results=[res(s, p, 1.0) for s in specs for p in preds], groups=groups)
    layouts = []
    for width in (160, 100, 60, 52, 40):
        text = plain(table(rep, width))
        assert max(map(len, text.splitlines())) <= width
        part = text.split("slices by sex", 1)[1]
        words = set(re.split(r"[\s│┃()\[\],]+", part))
        missing = [t for t in tokens if t not in words]
        assert not missing, (width, missing)
        layouts.append("wide" if re.search(r"┃\s*mse\s*┃", part) else "long" if re.search(r"┃\s*loss\s*┃", part)
                       else "lines")
    assert layouts == (["wide", "long", "lines", "lines", "lines"] if ci else ["wide", "wide", "long", "lines", "lines"])


def test_table_comparison_headers_stay_distinguishable():
    preds = [f"módèl_{i}_名前" for i in range(8)]
    rep = report_of(results=[res("mse", p, 1.0 + i) for i, p in enumerate(preds)],
                    comparisons=[Comparison(loss="mse", spec="mse", params={}, pred=p, baseline=preds[0],
                                            value=1.0 + i, baseline_value=1.0, ci=(-1e-300, 1e300))
                                 for i, p in enumerate(preds) if i])
    text = plain(table(rep, 160))
    assert max(map(len, text.splitlines())) <= 160
    assert "…" not in text  # folded, never truncated
    head = [line.split("┃") for line in text.splitlines() if "┃" in line]
    columns = ["".join(part[i].strip() for part in head) for i in range(len(head[0]))]
    assert columns == ["loss"] + preds
    # too narrow for a column per model without cutting a word: a row per model, each name whole
    text = plain(table(rep, 80))
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    head = [line.split("┃") for line in text.splitlines() if "┃" in line]
    assert [c.strip() for c in head[0]] == ["loss", "model", "value"]
    rows = [line.split("│")[1].strip() for line in text.splitlines() if line.count("│") >= 2]
    assert rows == preds


@pytest.mark.parametrize("width", [120, 80, 52, 40])
def test_comparison_keeps_every_number_whole_on_a_narrow_terminal(width):
    """Six models with intervals and deltas: a column per model where every word fits, else a
    row per model, else a line each; a value, a delta or an interval end is never cut across
    lines (at 52 columns the table printed '3039.' over '06')."""
    preds = ["ridge", "gbr", "m0", "m1", "m2", "m3"]
    results, comps, tokens = [], [], set()
    for k, spec in enumerate(["mse", "mae"]):
        base = 3039.0615 / (k * 60 + 1)
        for i, p in enumerate(preds):
            v = base * (0.4 + 0.1 * i) if i else base
            results.append(res(spec, p, v, ci=(v * 0.9, v * 1.1) if not i else None))
            if i:
                d = v - base
                comps.append(Comparison(loss=spec, spec=spec, params={}, pred=p, baseline="ridge", value=v,
                                        baseline_value=base, ci=(d * 1.1, d * 0.9)))
    rep = report_of(results=results, comparisons=comps)
    for r in results:
        tokens.add(fmt_num(r.value))
    text = plain(table(rep, width))
    assert max(map(len, text.splitlines())) <= width
    words = set(re.split(r"[\s│┃()\[\],★]+", text))
    assert not [t for t in tokens if t not in words], width


def test_table_does_not_read_data_as_markup():
    rep = report_of(results=[res("mse", "p[/b]", 1.0, ci=(float("nan"), 2.0)), ],
                    sources=["/data/x[/y].csv"], bindings={"pred": "[red]p"}, warnings=["see [/i] here"])
    for color in (True, False):
        text = plain(table(rep, 100, color=color))
        assert "/data/x[/y].csv" in text and "pred=[red]p" in text
        assert "see [/i] here" not in text  # warnings go to stderr (lossctl.cli._show), never stdout
        assert "[nan, 2]" in text  # an interval that starts with a letter is not a style tag
    rep = report_of(results=[res("mse", "a", 1.0), res("mse", "b[/x]", 2.0)],
                    groups=[Group(by="[bold]g", value="[/v]", rows=3, results=[res("mse", "a", 1.0, worst=True)])])
    text = plain(table(rep, 100))
    assert "b[/x]" in text and "[bold]g" in text and "[/v]" in text


def test_table_with_a_bracketed_path_through_the_cli(tmp_path, cli):
    d = tmp_path / "x["
    d.mkdir()
    (d / "y].csv").write_text("y,yhat\n1,1.5\n2,2.5\n")
    r = cli("eval", str(d / "y].csv"), "-l", "mse", "-f", "table")
    assert r.code == 0, r.err
    assert "y].csv" in r.out and "0.25" in r.out


def test_table_slices_show_cross_values_readably():
    rep = report_of(results=[res("mse", "p", 1.0)],
                    groups=[Group(by="g,h", value=("east", 3), rows=5, results=[res("mse", "p", 2.0, worst=True)])],
                    hidden_groups=1)
    text = plain(table(rep, 80, color=False))
    assert "east · 3" in text and "('east'" not in text
    assert "▲ 2" in text and "1 slice with fewer" in text


def test_plain_table_width_follows_columns(monkeypatch):
    rep = report_of(results=[res("a_rather_long_loss_specification:with=params,and=more,params=here", "p", 1.0,
                                 grad=dict(zip(GRAD_KEYS, [1.0] * 8)))])
    monkeypatch.setenv("COLUMNS", "60")
    out = io.StringIO()
    render_report(rep, "table", out, color=False)  # NO_COLOR on a 60-column terminal
    assert max(map(len, out.getvalue().splitlines())) <= 60


def _pty_run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    import pty

    master, slave = pty.openpty()
    e = dict(os.environ)
    e.pop("NO_COLOR", None)
    e.update(env)
    p = subprocess.Popen([sys.executable, "-m", "lossctl", *args], stdout=slave, stderr=subprocess.PIPE, env=e,
                         cwd=ROOT)
    os.close(slave)
    buf = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        buf += chunk
    os.close(master)
    p.wait()
    return p.returncode, buf.decode(), p.stderr.read().decode()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminal")
def test_real_terminal_colours_unless_no_color():
    args = ["eval", f"{SAMPLES}/regression.csv", "-l", "mse", "-l", "huber:delta=30", "--grad"]
    code, out, err = _pty_run(args, {"COLUMNS": "80", "TERM": "xterm-256color"})
    assert code == 0 and "\x1b[" in out and err == ""
    code, out, err = _pty_run(args, {"COLUMNS": "72", "NO_COLOR": "1"})
    assert code == 0 and "\x1b[" not in out
    assert max(map(len, out.replace("\r", "").splitlines())) <= 72
    assert "huber:delta=30" in out and "636.499" in out


# ---------------------------------------------------------------- streams, files, determinism


def test_stdout_holds_only_results_and_notes_go_to_stderr(write_csv):
    from conftest import run_subprocess

    path = write_csv("pm.csv", "y,score\n-1,0.3\n1,2\n1,-0.5\n-1,-1\n")
    for fmt in ("csv", "json", "markdown"):
        r = run_subprocess("eval", path, "-f", fmt)
        assert r.code == 0
        assert "labels are −1/+1" in r.err and "\x1b[" not in r.out
        if fmt == "json":
            assert parse(fmt, r.out)["warnings"] == [r.err.removeprefix("lossctl: note: ").strip()]
        else:
            assert "labels are" not in r.out
    rows = parse("csv", run_subprocess("eval", path, "-f", "csv").out)
    assert [r["loss"] for r in rows] == ["hinge", "exponential"]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "tsv", "markdown", "table"])
def test_two_runs_give_the_same_bytes(cli, models, fmt):
    args = ("eval", models, "-t", "y", "-p", "m1", "-p", "m2", "-l", "mse", "-l", "huber", "--grad", "--ci", "0.9",
            "--bootstrap", "30", "--by", "g", "-f", fmt)
    first = cli(*args).out
    assert first and cli(*args).out == first


@pytest.mark.parametrize("ext, fmt", [("csv", "csv"), ("tsv", "tsv"), ("jsonl", "jsonl"), ("ndjson", "jsonl"),
                                      ("md", "markdown"), ("json", "json"), ("txt", "json")])
def test_output_file_format_follows_its_extension(cli, models, tmp_path, ext, fmt):
    target = tmp_path / f"out.{ext}"
    args = ("eval", models, "-t", "y", "-p", "m1", "-l", "mse", "--grad")
    r = cli(*args, "-o", str(target))
    assert r.code == 0 and r.out == ""
    assert target.read_text() == cli(*args, "-f", fmt).out
    assert "\x1b[" not in cli(*args, "-f", "table", "-o", str(tmp_path / "t.txt")).out


def test_merge_writes_the_same_columns_and_numbers_as_eval(cli, models, tmp_path):
    df = pd.read_csv(models)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    df.iloc[:100].to_csv(a, index=False)
    df.iloc[100:].to_csv(b, index=False)
    opts = ("-t", "y", "-p", "m1", "-p", "m2", "-l", "mse", "-l", "huber", "--grad", "--by", "g", "-q")
    assert cli("eval", a, *opts, "--emit-state", tmp_path / "s0.json", "-f", "json").code == 0
    assert cli("eval", b, *opts, "--emit-state", tmp_path / "s1.json", "--row-offset", 100, "-f", "json").code == 0
    for fmt in ("csv", "tsv", "jsonl"):
        merged = parse(fmt, cli("merge", tmp_path / "s0.json", tmp_path / "s1.json", "-f", fmt).out)
        single = parse(fmt, cli("eval", models, *opts, "-f", fmt).out)
        assert len(merged) == len(single)
        for m, s in zip(merged, single):
            assert list(m) == list(s)
            for k in s:
                if k in ("task", "rows", "loss", "spec", "pred", "by", "group", "baseline", "worst", "comparison"):
                    assert m[k] == s[k], k
                elif fmt != "jsonl":
                    assert (m[k] == s[k] == "") or float(m[k]) == pytest.approx(float(s[k]), rel=1e-12, abs=1e-15), k


# ---------------------------------------------------------------- list / explain


SPEC_KEYS = {"name", "aliases", "task", "tasks", "summary", "roles", "params", "default_for", "row_mean",
             "gradient_wrt", "properties", "example"}
PROPERTY_KEYS = {"formula", "gradient", "convex", "differentiable", "robust_to_outliers", "outliers", "estimates",
                 "output", "cost", "use_when", "avoid_when", "conventions", "references"}


def test_list_and_explain_json_shapes(cli):
    text = cli("list", "-f", "json").out

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    d = json.loads(text, parse_constant=no_constants)
    assert set(d) == {"schema_version", "losses"} and d["schema_version"] == 1
    for spec in d["losses"]:
        assert set(spec) == SPEC_KEYS, spec["name"]
        assert set(spec["properties"]) == PROPERTY_KEYS, spec["name"]
        for role in spec["roles"]:
            assert set(role) == {"name", "shape", "required", "names", "help"}
        for q in spec["params"]:
            assert set(q) == {"name", "type", "default", "range", "help"}
    one = cli("explain", "huber", "-f", "json").json()
    assert one == next(s for s in d["losses"] if s["name"] == "huber")
    assert cli("list", "-f", "json").out == text  # the same bytes every time


def test_list_table_shows_bracketed_formulas_and_none_defaults(cli):
    text = cli("list", "-f", "table").out
    flat = re.sub(r"[\s│]", "", text)
    assert "clippedto[eps,1−eps]" in flat  # bce's formula, not read as a style tag
    assert "ℓ=−[w₊·y·logp" in flat
    md = cli("list", "-f", "markdown").out
    assert "weight=None" not in md and "weight=none" in md


def test_table_notes_and_warnings_go_to_stderr(tmp_path):
    # CLI.md: warnings go to standard error, never standard output, whatever the format
    f = tmp_path / "one.csv"
    f.write_text("y,yhat\n1,2\n")
    for form in ("table", "csv", "markdown", "json"):
        p = subprocess.run([sys.executable, "-m", "lossctl", "eval", str(f), "-l", "mse", "--ci", "0.9", "-f", form],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert "no bootstrap interval" in p.stderr, form
        assert "no bootstrap interval" not in p.stdout or form == "json", form  # json keeps notes as data
        assert p.stderr.count("no bootstrap interval") == 1, form
