"""Terminal pictures: residual histograms with loss curves, probability histograms.

Drawn with rich, only when the table goes to a terminal (or a test's fixed-width
console), from a deterministic sample of rows. Every line fits the console's width:
the charts narrow to fit, and a console too narrow for them gets a note instead. The
shapes (block heights, one mark per curve) carry the picture without colour.
"""
from __future__ import annotations

from typing import Any

import numpy as np

BLOCKS = " ▁▂▃▄▅▆▇█"
MARKS = "●◆▲■✚✖★◼"
COLORS = ["cyan", "magenta", "yellow", "green", "red", "blue", "bright_white", "bright_cyan"]

WIDTH = 60  # histogram bins at most
MIN_WIDTH = 20  # fewer bins say nothing
GRID = 481  # points at which the loss curves are evaluated; charts interpolate


def draw(console: Any, pic: dict[str, Any], rows: int | None = None) -> None:
    """Print the picture of ``pic`` (built by the pipeline) on a rich console."""
    from rich.text import Text

    if pic["kind"] == "regression":
        text = residual_chart(pic["models"], pic["curves"], xs=pic["xs"], width=console.width, rows=rows)
    else:
        text = probability_chart(pic["target"], pic["models"], width=console.width, rows=rows)
    if isinstance(text, str):
        console.print(Text(text, style="dim"))
    else:
        console.print(text, no_wrap=True, overflow="crop")  # its lines are laid out to fit


def sample_text(n: int, rows: int | None) -> str:
    """How many rows a picture shows: all of them, or a sample (and of how many)."""
    if rows is None or n >= rows:
        return f"all {n:,} rows"
    return f"a sample of {n:,} of {rows:,} rows"


def _wrap(words: list[tuple[str, str | None]], width: int) -> list[list[tuple[str, str | None]]]:
    """Pieces (text, style) laid out in lines of at most ``width`` cells, never split."""
    lines: list[list[tuple[str, str | None]]] = [[]]
    used = 0
    for text, style in words:
        if used and used + len(text) > width:
            lines.append([])
            used = 0
        lines[-1].append((text, style))
        used += len(text)
    return lines


def _note(text: str, width: int) -> list[str]:
    """A dim note broken at spaces into lines of at most ``width`` cells."""
    words = text.split(" ")
    return ["".join(t for t, _ in line).rstrip() for line in _wrap([(w + " ", None) for w in words], width + 1)]


def residual_chart(
    models: list[tuple[str, np.ndarray]],
    curves: list[tuple[str, np.ndarray]],
    *,
    xs: np.ndarray | None = None,
    width: int = WIDTH + 2,
    height: int | None = None,
    rows: int | None = None,
) -> Any:
    """A histogram of residuals (shaded bars) per model with each loss's ℓ(r) drawn over it.

    ``models`` are (label, sampled residuals); ``curves`` are (label, ℓ at ``xs``), each
    scaled to the chart's height; all charts share one residual range. ``width`` is the
    console's: the chart takes at most WIDTH bins and never more than fit. A curve that
    another covers everywhere is named beside the one that covers it, never given a mark
    of its own that the chart does not show. Returns a rich Text, or a str note when the
    console is too narrow.
    """
    from rich.text import Text

    bins = min(WIDTH, width - 2)
    if bins < MIN_WIDTH:
        return f"(no residual picture: it needs {MIN_WIDTH + 2} columns, the terminal has {width})"
    height = height or (10 if len(models) == 1 else 7)
    finite = [r[np.isfinite(r)] for _, r in models]
    los, his = zip(*(_range(r) for r in finite))
    lo, hi = min(los), max(his)
    edges = np.linspace(lo, hi, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    # curves: evaluated on a fine grid by the pipeline, read here at this chart's bins
    rows_of = []
    for _, ys in curves:
        ys = np.asarray(ys, dtype=float)
        grid_x = np.asarray(xs, dtype=float) if xs is not None else centres
        ok = np.isfinite(ys)
        y = np.interp(centres, grid_x[ok], ys[ok]) if ok.sum() >= 2 else np.full(bins, np.nan)
        top = np.nanmax(y) if np.isfinite(y).any() else 0
        rows_of.append(None if top <= 0 else np.round(np.clip(y, 0, None) / top * (height - 1)).astype(int))
    owner: dict[tuple[int, int], int] = {}
    for i, yy in enumerate(rows_of):
        if yy is not None:
            for x in range(bins):
                owner[(x, int(yy[x]))] = i
    shown = {i: sum(1 for o in owner.values() if o == i) for i in range(len(curves))}
    text = Text(no_wrap=True, overflow="crop")
    several = len(models) > 1
    n_sample = 0
    beyond = 0
    for (label, _), r in zip(models, finite):
        n_sample = max(n_sample, r.size)
        beyond += int(np.sum((r < lo) | (r > hi)))
        if several:
            head = f"{label}: r = {label} − y"
            text.append((head if len(head) <= width else head[: width - 1] + "…") + "\n", style="bold")
        counts, _ = np.histogram(r, bins=bins, range=(lo, hi))
        bar = counts / counts.max() * height if counts.max() > 0 else counts.astype(float)
        grid = [[(" ", "")] * bins for _ in range(height)]
        for x in range(bins):
            for yy in range(height):
                level = bar[x] - yy  # how much of cell row yy (0 = bottom) is filled
                if level >= 1:
                    grid[height - 1 - yy][x] = ("█", "grey35")
                elif level > 0:
                    grid[height - 1 - yy][x] = (BLOCKS[max(1, int(round(level * 8)))], "grey35")
        for (x, yy), i in owner.items():
            grid[height - 1 - yy][x] = (MARKS[i % len(MARKS)], COLORS[i % len(COLORS)])
        for line in grid:
            text.append("│")
            for ch, style in line:
                text.append(ch, style=style or None)
            text.append("\n")
        text.append("└" + "─" * bins + "\n")
        left, right = f"{lo:.3g}", f"{hi:.3g}"
        axis = "r = ŷ − y"
        gap = bins + 1 - len(left) - len(right) - len(axis)
        if gap >= 2:
            text.append(left + " " * (gap // 2) + axis + " " * (gap - gap // 2) + right + "\n", style="dim")
        else:
            text.append(left + " " * max(1, bins + 1 - len(left) - len(right)) + right + "\n", style="dim")
    note = f"; {beyond:,} beyond the range shown" if beyond else ""
    for line in _note(f"shaded: residual histogram of {sample_text(n_sample, rows)}{note}; "
                      "curves: ℓ(r) scaled to fit", width):
        text.append(line + "\n", style="dim")
    # the legend: a mark for each curve that shows; a curve covered everywhere is named
    # beside the curve that covers it
    under: dict[int, list[str]] = {}
    for i, (label, _) in enumerate(curves):
        if rows_of[i] is None or shown[i]:
            continue
        cover = [owner[(x, int(rows_of[i][x]))] for x in range(bins)]
        under.setdefault(max(set(cover), key=cover.count), []).append(label)
    pieces = []
    for i, (label, _) in enumerate(curves):
        if rows_of[i] is None or not shown[i]:
            continue
        style = COLORS[i % len(COLORS)]
        pieces.append((f" {MARKS[i % len(MARKS)]} {label}", style))
        if i in under:  # in words, so that the line breaks between them
            also = f"(also {', '.join(under[i])}: the same curve at this scale)"
            pieces += [(" " + w, style) for w in also.split(" ")]
    for line in _wrap(pieces, width):
        for t, style in line:
            text.append(t, style=style)
        text.append("\n")
    text.rstrip()
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


def curve_grid(residuals: list[np.ndarray], points: int = GRID) -> np.ndarray:
    """Where to evaluate the loss curves: ``points`` residuals spanning every model's range."""
    ranges = [_range(r[np.isfinite(r)]) for r in residuals] or [(-1.0, 1.0)]
    return np.linspace(min(a for a, _ in ranges), max(b for _, b in ranges), points)


def probability_chart(
    target: np.ndarray, models: list[tuple[str, np.ndarray]], *, width: int = 80, rows: int | None = None
) -> Any:
    """Per model and per true class, a one-line histogram of the probability given to that class.

    ``models`` are (label, sampled probabilities); the counts are labelled as a sample
    when ``rows`` (the rows evaluated) exceeds the sample's size."""
    from rich.text import Text

    text = Text(no_wrap=True, overflow="crop")
    t = target if target.ndim == 1 else np.argmax(target, axis=1)
    several = len(models) > 1
    per_model = []
    for _, prob in models:
        if prob.ndim == 1:
            per_model.append([(prob[t == 0], "p(y=1) | y=0"), (prob[t == 1], "p(y=1) | y=1")])
        else:
            tc = t.astype(int)
            per_model.append([(prob[tc == c, c], f"p(y={c}) | y={c}") for c in range(prob.shape[1])])
    lw = max(len(c[1]) for classes in per_model for c in classes)
    nw = len(f"  n={len(t):,}")
    bins = min(20, width - lw - 2 - nw)
    if bins < 5:
        return f"(no probability picture: it needs {lw + nw + 7} columns, the terminal has {width})"
    for (label, _), classes in zip(models, per_model):
        if several:
            text.append((label if len(label) <= width else label[: width - 1] + "…") + "\n", style="bold")
        text.append(" " * (lw + 2) + "0" + " " * (bins - 2) + "1\n", style="dim")
        for i, (p, name) in enumerate(classes):
            counts, _ = np.histogram(p, bins=bins, range=(0.0, 1.0))
            top = counts.max() if counts.size and counts.max() > 0 else 1
            line = "".join(BLOCKS[0 if k == 0 else max(1, int(round(k / top * 8)))] for k in counts)
            text.append(f"{name:>{lw}}  ", style="bold")
            text.append(line, style=COLORS[i % len(COLORS)])
            text.append(f"  n={p.size:,}\n", style="dim")
    for line in _note(f"class counts n: {sample_text(len(t), rows)}", width):
        text.append(line + "\n", style="dim")
    text.rstrip()
    return text
