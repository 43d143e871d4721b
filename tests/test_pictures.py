"""The terminal pictures on fixed-width rich consoles (60, 80, 120 columns) and on a real
pseudo-terminal: a sample is labelled as one, NO_COLOR keeps the picture, no curve is
listed that the chart hides, nothing wraps, and every model is drawn and labelled."""
from __future__ import annotations

import io
import re
import sys

import numpy as np
import pandas as pd
import pytest

from lossctl import pictures
from lossctl.plan import Request
from lossctl.driver import accumulate
from lossctl.assemble import build_report
from lossctl.planner import prepare
from lossctl.render import render_report

from conftest import SAMPLES

COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-9]|9[0-7]|4[0-9]|10[0-7])[0-9;]*m")  # SGR with a colour


def report(path, **kw):
    plan, inputs = prepare(Request(data=str(path), **kw))
    try:
        return build_report(plan, accumulate(plan, inputs, sample=True))
    finally:
        inputs.close()


def drawn(rep, width: int, color: bool = False) -> str:
    out = io.StringIO()
    render_report(rep, "table", out, width=width, color=color, pictures=True)
    return out.getvalue()


def chart_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("│") and "┃" not in line]


@pytest.fixture(scope="module")
def big_binary(tmp_path_factory):
    """10,000 rows: more than the pictures' 4,096-row sample."""
    rng = np.random.default_rng(1)
    n = 10_000
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)
    path = tmp_path_factory.mktemp("pic") / "b.csv"
    pd.DataFrame({"y": y, "prob": p, "prob_b": np.clip(p + rng.normal(0, 0.1, n), 0, 1)}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    rng = np.random.default_rng(2)
    n = 500
    y = rng.normal(size=n)
    path = tmp_path_factory.mktemp("pic") / "r.csv"
    pd.DataFrame({"y": y, "narrow": y + rng.normal(0, 0.1, n), "wide": y + rng.normal(3, 2, n)}).to_csv(path, index=False)
    return path


def test_class_counts_from_a_sample_say_so(big_binary):
    text = drawn(report(big_binary, losses=["bce"]), 80)
    assert "class counts n: a sample of 4,096 of 10,000 rows" in text
    counts = [int(m.replace(",", "")) for m in re.findall(r"n=([\d,]+)", text)]
    assert sum(counts) == 4096
    small = drawn(report(f"{SAMPLES}/binary.csv", losses=["bce"]), 80)
    assert "class counts n: all 4,000 rows" in small


def test_residual_histogram_from_a_sample_says_so(tmp_path):
    rng = np.random.default_rng(3)
    y = rng.normal(size=6000)
    pd.DataFrame({"y": y, "yhat": y + rng.normal(size=6000)}).to_csv(tmp_path / "r.csv", index=False)
    text = drawn(report(tmp_path / "r.csv", losses=["mse"]), 120)
    assert "a sample of 4,096 of 6,000 rows" in text


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_the_picture_never_wraps(width, two_models, big_binary):
    for rep in (report(f"{SAMPLES}/regression.csv", losses=["mse", "huber:delta=30", "mae", "quantile:tau=0.9"]),
                report(two_models, target="y", preds=["narrow", "wide"], losses=["mse", "mae"]),
                report(big_binary, target="y", preds=["prob", "prob_b"], losses=["bce"]),
                report(f"{SAMPLES}/multiclass.csv")):
        text = drawn(rep, width, color=True)
        plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
        assert max(len(line) for line in plain.splitlines()) <= width
        rows = chart_rows(plain)
        if rep.task == "regression":
            assert rows and len({len(r) for r in rows}) == 1  # every chart row whole, none broken in two
            assert len(rows[0]) == min(pictures.WIDTH, width - 2) + 1
        else:
            hist = [line for line in plain.splitlines() if re.match(r"\s*p\(y=\d\) \| y=\d  ", line)]
            assert hist and all(re.search(r"n=[\d,]+$", line) for line in hist)


def test_a_console_too_narrow_gets_a_note_instead():
    rep = report(f"{SAMPLES}/regression.csv", losses=["mse"])
    text = drawn(rep, 20)
    assert not chart_rows(text) and "(no residual" in text
    assert max(len(line) for line in text.splitlines()) <= 20


def test_no_curve_is_listed_that_the_chart_hides():
    # huber with a huge delta is mse to within the chart's resolution: drawn after it, it covers it
    rep = report(f"{SAMPLES}/regression.csv", losses=["mse", "mae", "huber:delta=100000"])
    for width in (60, 80, 120):
        text = drawn(rep, width)
        area = "\n".join(chart_rows(text))
        legend = [line for line in text.splitlines() if line.startswith(" ") and any(m in line for m in pictures.MARKS)]
        marks = {m: line for line in legend for m in pictures.MARKS if f"{m} " in line}
        assert marks
        for m in marks:
            assert m in area, (m, text)  # every mark in the legend is one the chart shows
        assert "● mse" not in text  # mse has no mark of its own: the chart does not show it
        assert "(also mse" in text  # but it is named beside the curve that covers it
        assert "◆ mae" in text


def test_hidden_curves_from_the_chart_itself():
    xs = np.linspace(-2, 2, pictures.GRID)
    r = np.random.default_rng(0).normal(size=500)
    same = xs ** 2
    text = pictures.residual_chart([("m", r)], [("a", same), ("b", 3 * same), ("c", np.abs(xs))], xs=xs, width=62)
    legend = " ".join(text.plain.splitlines()[-2:])
    assert "◆ b (also a: the same curve at this scale)" in legend and "● a" not in legend and "▲ c" in legend


@pytest.mark.parametrize("width", [60, 120])
def test_several_models_each_drawn_and_labelled(width, two_models, big_binary):
    text = drawn(report(two_models, target="y", preds=["narrow", "wide"], losses=["mse"]), width)
    assert "narrow: r = narrow − y" in text and "wide: r = wide − y" in text
    assert text.index("narrow: r") < text.index("wide: r")
    # one shared range: the wide model's residuals (centred near 3) sit right of the narrow one's
    charts = text.split("wide: r")
    def centre(block: str) -> float:
        rows = chart_rows(block)
        weights = np.array([sum(ch not in " ●" for ch in col) for col in zip(*[r[1:] for r in rows])], float)
        return float(np.average(np.arange(weights.size), weights=weights))
    assert centre(charts[1]) > centre(charts[0]) + 5
    text = drawn(report(big_binary, target="y", preds=["prob", "prob_b"], losses=["bce"]), width)
    lines = text.splitlines()
    assert "prob" in lines and "prob_b" in lines
    assert text.count("p(y=1) | y=0") == 2 and text.count("p(y=1) | y=1") == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminal")
def test_no_color_keeps_the_picture_without_colour():
    from test_output_formats import _pty_run

    args = ["eval", f"{SAMPLES}/regression.csv", "-l", "mse", "-l", "mae"]
    code, out, _ = _pty_run(args, {"COLUMNS": "60", "NO_COLOR": "1"})
    out = out.replace("\r", "")
    assert code == 0 and "r = ŷ − y" in out and "● mse" in out
    assert not COLOUR.search(out)
    assert max(len(line) for line in out.splitlines()) <= 60
    code, out, _ = _pty_run(args, {"COLUMNS": "60", "TERM": "xterm-256color"})
    assert code == 0 and "r = ŷ − y" in out and COLOUR.search(out)
