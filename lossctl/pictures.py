"""Terminal pictures: residual histograms with loss curves, probability histograms.

Drawn with rich, only when the table goes to a terminal (or a test's fixed-width
console), from a deterministic sample of rows.
"""
from __future__ import annotations

from typing import Any

import numpy as np

BLOCKS = " ▁▂▃▄▅▆▇█"
MARKS = "●◆▲■✚✖★◼"
COLORS = ["cyan", "magenta", "yellow", "green", "red", "blue", "bright_white", "bright_cyan"]


def residual_chart(residuals: np.ndarray, curves: list[tuple[str, np.ndarray]], width: int = 60, height: int = 10) -> Any:
    """A histogram of residuals (shaded bars) with each loss's ℓ(r) drawn over it.

    ``curves`` are (label, ℓ evaluated at the centres of ``width`` bins spanning the
    residual range); each curve is scaled to the chart's height.
    """
    from rich.text import Text

    r = residuals[np.isfinite(residuals)]
    lo, hi = _range(r)
    counts, _ = np.histogram(r, bins=width, range=(lo, hi))
    bar = counts / counts.max() * height if counts.max() > 0 else counts.astype(float)
    grid = [[(" ", "")] * width for _ in range(height)]
    for x in range(width):
        full = bar[x]
        for yy in range(height):
            level = full - yy  # how much of cell row yy (0 = bottom) is filled
            if level >= 1:
                grid[height - 1 - yy][x] = ("█", "grey35")
            elif level > 0:
                grid[height - 1 - yy][x] = (BLOCKS[max(1, int(round(level * 8)))], "grey35")
    for i, (_, ys) in enumerate(curves):
        ys = np.asarray(ys, dtype=float)
        top = np.nanmax(ys) if np.isfinite(ys).any() else 0
        if top <= 0:
            continue
        for x in range(width):
            if not np.isfinite(ys[x]):
                continue
            yy = int(round(ys[x] / top * (height - 1)))
            grid[height - 1 - yy][x] = (MARKS[i % len(MARKS)], COLORS[i % len(COLORS)])
    text = Text()
    for row in grid:
        text.append("│")
        for ch, style in row:
            text.append(ch, style=style or None)
        text.append("\n")
    text.append("└" + "─" * width + "\n")
    left, right = f"{lo:.3g}", f"{hi:.3g}"
    text.append(" " + left + " " * max(1, width - len(left) - len(right) - 7) + "r = ŷ − y" + " " * 1 + right + "\n", style="dim")
    outside = int(np.sum((r < lo) | (r > hi)))
    note = f"; {outside:,} beyond the range shown" if outside else ""
    text.append(f" shaded: residual histogram (sample of {r.size:,} rows{note}); curves: ℓ(r) scaled to fit\n", style="dim")
    for i, (label, _) in enumerate(curves):
        text.append(f" {MARKS[i % len(MARKS)]} {label}", style=COLORS[i % len(COLORS)])
    text.append("\n")
    return text


def _range(r: np.ndarray) -> tuple[float, float]:
    """The 1st to 99th percentile, widened by 10%: a few gross outliers do not squash the picture."""
    if r.size == 0:
        return -1.0, 1.0
    lo, hi = (float(x) for x in np.percentile(r, [1, 99]))
    pad = 0.1 * (hi - lo)
    lo, hi = max(lo - pad, float(np.min(r))), min(hi + pad, float(np.max(r)))
    if lo == hi:
        return lo - 1, hi + 1
    return lo, hi


def bin_centres(residuals: np.ndarray, width: int = 60) -> np.ndarray:
    lo, hi = _range(residuals[np.isfinite(residuals)])
    edges = np.linspace(lo, hi, width + 1)
    return (edges[:-1] + edges[1:]) / 2


def probability_chart(target: np.ndarray, prob: np.ndarray, bins: int = 20) -> Any:
    """Per true class, a one-line histogram of the probability given to that class."""
    from rich.text import Text

    text = Text()
    if prob.ndim == 1:
        classes = [(0, prob[target == 0], "p(y=1) | y=0"), (1, prob[target == 1], "p(y=1) | y=1")]
    else:
        t = target if target.ndim == 1 else np.argmax(target, axis=1)
        t = t.astype(int)
        classes = [(c, prob[t == c, c], f"p(y={c}) | y={c}") for c in range(prob.shape[1])]
    width = max(len(c[2]) for c in classes)
    text.append(" " * (width + 2) + "0" + " " * (bins - 2) + "1\n", style="dim")
    for i, (c, p, label) in enumerate(classes):
        counts, _ = np.histogram(p, bins=bins, range=(0.0, 1.0))
        top = counts.max() if counts.size and counts.max() > 0 else 1
        line = "".join(BLOCKS[0 if k == 0 else max(1, int(round(k / top * 8)))] for k in counts)
        text.append(f"{label:>{width}}  ", style="bold")
        text.append(line, style=COLORS[i % len(COLORS)])
        text.append(f"  n={p.size:,}\n", style="dim")
    return text
