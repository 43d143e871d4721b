"""Views of results: rich tables, JSON, JSON Lines, CSV/TSV and Markdown."""
from __future__ import annotations

import csv
import json
import math
from typing import Any, Iterable, TextIO

import numpy as np

from lossctl.results import GRAD_KEYS, LossResult, Report, nonfinite_label

FORMATS = ("table", "json", "jsonl", "csv", "tsv", "markdown")


def fmt_num(v: Any, digits: int = 6) -> str:
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return str(v).lower()
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if abs(int(v)) >= 10000 else str(int(v))
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if abs(v) >= 1e6 or abs(v) < 1e-4:
        return f"{v:.{digits - 2}e}"
    return f"{v:.{digits}g}"


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, allow_nan=False, ensure_ascii=False)


# ------------------------------------------------------------------ eval


def render_report(
    report: Report, fmt: str, out: TextIO, *, color: bool = False, width: int | None = None, pictures: bool | None = None
) -> None:
    if fmt == "json":
        out.write(dumps(report.to_json()) + "\n")
    elif fmt == "jsonl":
        for row in _flat_rows(report):
            out.write(json.dumps(row, allow_nan=False, ensure_ascii=False) + "\n")
    elif fmt in ("csv", "tsv"):
        _write_delimited(report, out, "\t" if fmt == "tsv" else ",")
    elif fmt == "markdown":
        out.write(markdown(report))
    else:
        _rich_report(report, out, color=color, width=width, pictures=color if pictures is None else pictures)


def _flat_rows(report: Report) -> Iterable[dict[str, Any]]:
    base = {"task": report.task, "rows": report.rows}
    for r in report.results:
        yield {**base, **r.to_json()}
    for c in report.comparisons:
        yield {**base, "comparison": True, **c.to_json()}
    for g in report.groups or []:
        for r in g.results:
            yield {**base, "by": g.by, "group": _jsonable(g.value), "group_rows": g.rows, **r.to_json()}


def _jsonable(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _flat_columns(report: Report) -> list[str]:
    cols = ["loss", "spec", "pred", "value", "n"]
    extra_keys: list[str] = []
    all_results = list(report.results) + [r for g in report.groups or [] for r in g.results]
    for r in all_results:
        for k in r.extra:
            if k not in extra_keys:
                extra_keys.append(k)
    cols += extra_keys
    if any(r.ci is not None for r in all_results):
        cols += ["ci_lo", "ci_hi"]
    if report.comparisons:
        cols += ["baseline", "delta"]
        if any(c.ci is not None for c in report.comparisons):
            cols += ["delta_ci_lo", "delta_ci_hi"]
    if any(r.grad is not None for r in all_results):
        cols += [f"grad_{k}" for k in GRAD_KEYS]
    roles = list(dict.fromkeys(role for r in all_results for role in r.grad_by_role or {}))
    cols += [f"grad_{role}_{k}" for role in roles for k in GRAD_KEYS]
    if report.groups is not None:
        cols = ["by", "group", "group_rows"] + cols + ["worst"]
    return cols


def _flat_values(r: LossResult) -> dict[str, Any]:
    d: dict[str, Any] = {"loss": r.loss, "spec": r.spec, "pred": r.pred, "value": r.value, "n": r.n}
    d.update(r.extra)
    if r.ci is not None:
        d["ci_lo"], d["ci_hi"] = r.ci
    if r.grad is not None:
        for k in GRAD_KEYS:
            d[f"grad_{k}"] = r.grad.get(k)
    for role, g in (r.grad_by_role or {}).items():
        for k in GRAD_KEYS:
            d[f"grad_{role}_{k}"] = g.get(k)
    return d


def _comparison_values(report: Report) -> dict[tuple[str, str], dict[str, Any]]:
    """(spec, pred) -> the comparison columns of that result's CSV row."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for c in report.comparisons:
        d: dict[str, Any] = {"baseline": c.baseline, "delta": c.delta}
        if c.ci is not None:
            d["delta_ci_lo"], d["delta_ci_hi"] = c.ci
        out[(c.spec, c.pred)] = d
    return out


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, allow_nan=False, ensure_ascii=False, default=_jsonable)
    if isinstance(v, float) or isinstance(v, np.floating):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    return str(v)


def _write_delimited(report: Report, out: TextIO, delimiter: str) -> None:
    cols = _flat_columns(report)
    w = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    w.writerow(cols)
    groups = report.groups
    cmp = _comparison_values(report)
    if groups is None:
        for r in report.results:
            d = {**_flat_values(r), **cmp.get((r.spec, r.pred), {})}
            w.writerow([_cell(d.get(c)) for c in cols])
    else:
        for r in report.results:
            d = {"by": "", "group": "(all)", "group_rows": report.rows, **_flat_values(r), **cmp.get((r.spec, r.pred), {})}
            w.writerow([_cell(d.get(c)) for c in cols])
        for g in groups:
            for r in g.results:
                d = {"by": g.by, "group": g.value, "group_rows": g.rows, **_flat_values(r), "worst": r.worst}
                w.writerow([_cell(d.get(c)) for c in cols])


def markdown(report: Report) -> str:
    preds = list(dict.fromkeys(r.pred for r in report.results))
    specs = list(dict.fromkeys(r.spec for r in report.results))
    lines = [f"**lossctl** · task: {report.task} · rows: {report.rows}", ""]
    head = ["loss"] + [_md(p) for p in preds]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for spec, cells in comparison_cells(report, preds):
        row = [f"`{_md(spec)}`"] + [f"**{_md(t)}**" if best else _md(t) for t, best in cells]
        lines.append("| " + " | ".join(row) + " |")
    if report.groups:
        on = f" ({_md(preds[0])})" if len(preds) > 1 else ""
        lines += ["", f"Slices by `{_md(report.groups[0].by)}`{on}, ▲ worst:", ""]
        lines.append("| group | rows | " + " | ".join(f"`{_md(s)}`" for s in specs) + " |")
        lines.append("|---|---|" + "---|" * len(specs))
        for g in report.groups:
            res = {r.spec: r for r in g.results if r.pred == preds[0]}
            cells = [("▲ " if res[s].worst else "") + fmt_num(res[s].value) if s in res else "" for s in specs]
            lines.append(f"| {_md(group_text(g.value))} | {g.rows} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _md(text: str) -> str:
    """Text for a Markdown table cell: a '|' would end the cell, a newline the row."""
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def group_text(v: Any) -> str:
    """A slice's value as people read it: a cross of several --by columns as 'a · x'."""
    if isinstance(v, (tuple, list)):
        return " · ".join(str(_jsonable(x)) for x in v)
    return str(_jsonable(v))


def comparison_cells(report: Report, preds: list[str]) -> list[tuple[str, list[tuple[str, bool]]]]:
    """Per loss SPEC, one (text, is_best) cell per prediction set: the value, its
    interval or its delta to the first set (with the paired interval)."""
    by = {(r.spec, r.pred): r for r in report.results}
    cmp = {(c.spec, c.pred): c for c in report.comparisons}
    rows = []
    for spec in dict.fromkeys(r.spec for r in report.results):
        best = _best([by[(spec, p)].value for p in preds if (spec, p) in by]) if len(preds) > 1 else None
        cells = []
        for p in preds:
            r = by.get((spec, p))
            if r is None:
                cells.append(("", False))
                continue
            text = fmt_num(r.value)
            c = cmp.get((spec, p))
            if c is not None:
                text += f" (Δ {c.delta:+.4g}" + (f", CI [{c.ci[0]:+.4g}, {c.ci[1]:+.4g}]" if c.ci else "") + ")"
            elif r.ci is not None:
                text += f" [{fmt_num(r.ci[0], 4)}, {fmt_num(r.ci[1], 4)}]"
            cells.append((text, best is not None and r.value == best))
        rows.append((spec, cells))
    return rows


def _best(vals: list[float]) -> float | None:
    finite = [v for v in vals if v == v]
    return min(finite) if finite else None


GRAD_TITLE = ("gradient g = ∂(N·L)/∂output per row: mean, std, mean |g|, ‖g‖₂, share of rows with g = 0, "
              "share of Σ|g| in the top 1% of rows")
GRAD_COLUMNS = (("g mean", "mean"), ("g std", "std"), ("|g| mean", "abs_mean"), ("‖g‖₂", "l2"), ("zero", "zero_frac"),
                ("top 1%", "top1_share"))


def _plain_width() -> int:
    """The width of a table without colour: $COLUMNS, the terminal's, else 100 (a file or a pipe)."""
    import os
    import shutil
    import sys

    try:
        cols = int(os.environ.get("COLUMNS", ""))
        if cols > 0:
            return cols
    except ValueError:
        pass
    try:
        if sys.stdout.isatty():
            return shutil.get_terminal_size((100, 24)).columns
    except (AttributeError, ValueError, OSError):
        pass
    return 100


def _rich_report(report: Report, out: TextIO, *, color: bool, width: int | None, pictures: bool = False) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(file=out, force_terminal=color, no_color=not color, width=width or (None if color else _plain_width()),
                      highlight=False, soft_wrap=False)
    inferred = " (inferred)" if report.task_inferred else ""
    binds = ", ".join(f"{k}={_short(v)}" for k, v in report.bindings.items())
    sub = f"task: {report.task}{inferred} · rows: {report.rows:,}"
    if report.dropped_rows:
        sub += f" · dropped: {report.dropped_rows:,}"
    # every text that comes from the data (paths, column names, specs, numbers in brackets) is
    # escaped: rich would read "[nan, 1]" or a column named "a[/b]" as markup
    console.print(f"[bold]lossctl[/bold] · {escape(', '.join(report.sources))} · {escape(sub)}")
    if binds:
        console.print(f"[dim]columns: {escape(binds)}[/dim]")
    preds = list(dict.fromkeys(r.pred for r in report.results))
    multi = len(preds) > 1
    if multi:
        _rich_comparison(console, report, preds)
    else:
        _rich_single(console, report)
    for r in report.results:
        if r.extra:
            console.print(f"[dim]{escape(r.spec)}:[/dim] " + escape(", ".join(
                f"{k} {fmt_num(v)}" for k, v in r.extra.items() if not isinstance(v, (list, dict)))))
    if report.groups:
        _rich_groups(console, report)
    if pictures and report.picture:
        from lossctl import pictures as pics

        pic = report.picture
        if pic["kind"] == "regression":
            console.print(pics.residual_chart(pic["residuals"], pic["curves"]))
        else:
            console.print(pics.probability_chart(pic["target"], pic["prob"]))


def _rich_single(console: Any, report: Report) -> None:
    """One prediction set: a row per loss with its value, interval and gradient summary.

    The gradient columns go beside the values when they fit the console; else the
    histogram goes first, then the statistics move below the table as lines of text
    (numbers are never cut short)."""
    from rich.markup import escape
    from rich.table import Table

    has_ci = any(r.ci for r in report.results)
    has_grad = any(r.grad for r in report.results)

    def build(grad: bool, histogram: bool) -> Table:
        t = Table(show_edge=False, header_style="bold")
        t.add_column("loss", overflow="fold")
        t.add_column("value", justify="right", no_wrap=True)
        if has_ci:
            t.add_column("CI", justify="right")
        if grad:
            t.title = GRAD_TITLE
            for head, _ in GRAD_COLUMNS:
                t.add_column(head, justify="right", no_wrap=True)
            if histogram:
                t.add_column("g histogram", no_wrap=True, min_width=12)
        for r in report.results:
            row = [escape(r.spec), fmt_num(r.value)]
            if has_ci:
                row.append(escape(f"[{fmt_num(r.ci[0], 4)}, {fmt_num(r.ci[1], 4)}]") if r.ci else "—")
            if grad:
                g = r.grad or {}
                row += [fmt_num(g.get(k), 4) for _, k in GRAD_COLUMNS]
                if histogram:
                    row.append(sparkline(r.grad_sample))
            t.add_row(*row)
        return t

    def fits(t: Table) -> bool:  # the table's natural width (console.measure caps it at the console's)
        return console.measure(t, options=console.options.update_width(1 << 20)).maximum <= console.width

    if has_grad:
        for histogram in (True, False):
            t = build(True, histogram)
            if fits(t):
                console.print(t)
                return
    console.print(build(False, False))
    if has_grad:
        console.print(f"[dim]{GRAD_TITLE}[/dim]")
        for r in report.results:
            g = r.grad or {}
            console.print(f"[bold]{escape(r.spec)}[/bold]: " + escape(", ".join(
                f"{head} {fmt_num(g.get(k), 4)}" for head, k in GRAD_COLUMNS)))


def _short(v: Any) -> str:
    if isinstance(v, list):
        return v[0] + "…" + v[-1] if len(v) > 3 and isinstance(v[0], str) else ",".join(map(str, v))
    return str(v)


def _rich_comparison(console: Any, report: Report, preds: list[str]) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(show_edge=False, header_style="bold", title="lower is better; ★ best per row")
    t.add_column("loss", overflow="fold")
    for p in preds:
        t.add_column(escape(p), justify="right", overflow="fold")  # never "mod…" for every model
    for spec, cells in comparison_cells(report, preds):
        t.add_row(escape(spec), *[f"[bold green]★ {escape(text)}[/bold green]" if best else escape(text)
                                  for text, best in cells])
    console.print(t)


def _rich_groups(console: Any, report: Report) -> None:
    from rich.markup import escape
    from rich.table import Table

    assert report.groups is not None
    specs = list(dict.fromkeys(r.spec for r in report.results))
    pred0 = report.results[0].pred
    several = len({r.pred for r in report.results}) > 1
    by = report.groups[0].by
    title = f"slices by {by}" + (f" for {pred0}" if several else "") + " (▲ worst)"
    t = Table(show_edge=False, header_style="bold", title=escape(title))
    t.add_column(escape(by), overflow="fold")
    t.add_column("rows", justify="right", no_wrap=True)
    for s in specs:
        t.add_column(escape(s), justify="right", overflow="fold")
    for g in report.groups:
        cells = [escape(group_text(g.value)), f"{g.rows:,}"]
        for s in specs:
            r = next((r for r in g.results if r.spec == s and r.pred == pred0), None)
            if r is None:
                cells.append("")
                continue
            text = fmt_num(r.value)
            if r.ci:
                text += f" [{fmt_num(r.ci[0], 3)}, {fmt_num(r.ci[1], 3)}]"
            text = escape(text)
            if r.worst:
                text = f"[bold red]▲ {text}[/bold red]"
            cells.append(text)
        t.add_row(*cells)
    console.print(t)
    if report.hidden_groups:
        n = report.hidden_groups
        console.print(f"[dim]{n} slice{'s' if n != 1 else ''} with fewer than --min-rows rows hidden[/dim]")


BLOCKS = " ▁▂▃▄▅▆▇█"


def sparkline(sample: np.ndarray | None, bins: int = 12) -> str:
    """A one-line histogram of sampled per-row gradients."""
    if sample is None or len(sample) == 0:
        return ""
    s = np.asarray(sample, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return ""
    lo, hi = float(s.min()), float(s.max())
    if lo == hi:
        return "█"
    # the 1st–99th percentile range; rarer extremes pile into the end bins
    plo, phi = (float(x) for x in np.percentile(s, [1, 99]))
    if phi > plo:
        lo, hi = plo, phi
        s = np.clip(s, lo, hi)
    counts, _ = np.histogram(s, bins=bins, range=(lo, hi))
    top = counts.max()
    return "".join(BLOCKS[0 if c == 0 else max(1, int(round(c / top * 8)))] for c in counts)


# ------------------------------------------------------------------ per-row output


def write_rows(chunks: Iterable[tuple[list[str], list[np.ndarray]]], fmt: str, out: TextIO) -> None:
    """Per-row output, one write and one flush per batch: a pipe or a terminal sees each
    batch as soon as it is computed (``--reduction none | head`` answers at once)."""
    header_done = False
    delim = "\t" if fmt == "tsv" else ","
    for header, cols in chunks:
        if fmt in ("csv", "tsv"):
            if not header_done:
                csv.writer(out, delimiter=delim, lineterminator="\n").writerow(header)
                header_done = True
            _write_columns(out, cols, delim)
        else:
            n = len(cols[0]) if cols else 0
            lists = [c.tolist() for c in cols]
            lines = []
            for i in range(n):
                row: dict[str, Any] = {}
                for h, col in zip(header, lists):
                    v = col[i]
                    if isinstance(v, float) and not math.isfinite(v):
                        # as in the JSON document: null, and a marker that says which
                        row[h] = None
                        row[f"{h}_nonfinite"] = nonfinite_label(v)
                    else:
                        row[h] = v
                lines.append(json.dumps(row, allow_nan=False, ensure_ascii=False) + "\n")
            out.write("".join(lines))
        out.flush()


def _write_columns(out: TextIO, cols: list[np.ndarray], delim: str) -> None:
    if not cols or len(cols[0]) == 0:
        return
    texts = []
    for c in cols:
        if c.dtype.kind == "f":
            texts.append(np.asarray([_cell(x) for x in c.tolist()], dtype=object))
        else:
            texts.append(np.asarray([_csv_text(x, delim) for x in c.tolist()], dtype=object))
    lines = texts[0]
    for t in texts[1:]:
        lines = lines + delim + t
    out.write("\n".join(lines.tolist()) + "\n")


def _csv_text(x: Any, delim: str) -> str:
    s = str(x)
    if delim in s or '"' in s or "\n" in s or "\r" in s:
        s = '"' + s.replace('"', '""') + '"'
    return s
