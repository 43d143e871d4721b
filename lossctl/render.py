"""Views of results: rich tables, JSON, JSON Lines, CSV/TSV and Markdown."""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
from typing import Any, Iterable, Iterator, TextIO

import numpy as np

from lossctl.results import (
    GRAD_KEYS,
    Comparison,
    Group,
    LossResult,
    Report,
    SliceGroups,
    group_value_json,
    nonfinite_label,
)

from lossctl.options import FORMATS  # noqa: E402 - declared once, in lossctl.options

# a number smaller than this share of its row's scale is rounding noise (a gradient mean of
# 8.65e-20 beside a mean |g| of 0.4): the views print it as 0, JSON and CSV keep it exact
NOISE = 1e-12


def fmt_num(v: Any, digits: int = 6, *, signed: bool = False, scale: Any = None) -> str:
    """A number for people: ``digits`` significant digits; 0 when it is below the
    resolution of ``scale`` (the magnitude of the numbers it stands beside)."""
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
        return ("+inf" if signed else "inf") if v > 0 else "-inf"
    if scale is not None and math.isfinite(float(scale)) and abs(v) < NOISE * abs(float(scale)):
        v = 0.0
    if v == 0:
        return "0"
    sign = "+" if signed else ""
    if abs(v) >= 1e6 or abs(v) < 1e-4:
        return f"{v:{sign}.{max(digits - 2, 1)}e}"
    return f"{v:{sign}.{digits}g}"


def fmt_interval(lo: Any, hi: Any, digits: int = 4, *, signed: bool = False, scale: Any = None) -> str:
    """``[lo, hi]`` with enough digits that distinct ends print differently."""
    a = b = ""
    for d in range(digits, 18):
        a, b = fmt_num(lo, d, signed=signed, scale=scale), fmt_num(hi, d, signed=signed, scale=scale)
        if a != b or lo == hi or lo is None or hi is None:
            break
    return f"[{a}, {b}]"


# Characters that Python's str.splitlines (and JavaScript) take for line breaks: escaped in
# every JSON text lossctl writes, so that a JSON Lines reader splitting lines any way sees one
# record a line (inside a JSON string they can only stand for themselves: the same value).
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def json_text(obj: Any, **kw: Any) -> str:
    """``json.dumps(obj, ensure_ascii=False, **kw)`` with the line-break characters escaped."""
    return json.dumps(obj, ensure_ascii=False, **kw).translate(_LINE_BREAKS)


def dumps(obj: Any) -> str:
    return json_text(obj, indent=2, allow_nan=False)


# ------------------------------------------------------------------ eval


def render_report(
    report: Report, fmt: str, out: TextIO, *, color: bool = False, width: int | None = None, pictures: bool | None = None
) -> None:
    if fmt == "json":
        _write_json(report, out)
    elif fmt == "jsonl":
        for row in _flat_rows(report):
            out.write(json_text(row, allow_nan=False) + "\n")
    elif fmt in ("csv", "tsv"):
        _write_delimited(report, out, "\t" if fmt == "tsv" else ",")
    elif fmt == "markdown":
        out.write(markdown(report))
    else:
        # pictures (by default) whenever the report carries their sample: the CLI samples on a terminal
        _rich_report(report, out, color=color, width=width,
                     pictures=report.picture is not None if pictures is None else pictures)


def _write_json(report: Report, out: TextIO) -> None:
    """The JSON document, ``dumps(report.to_json())``; slices held as columns are written
    from them, slice by slice, each as the indented encoder writes it (100,000 slices)."""
    groups = report.groups
    if not isinstance(groups, SliceGroups) or not len(groups):
        out.write(dumps(report.to_json()) + "\n")
        return
    import dataclasses

    text = dumps(dataclasses.replace(report, groups=[]).to_json())
    mark = '\n  "groups": []'  # (a key of the document's own: two spaces in)
    at = text.index(mark) + len(mark) - 1
    out.write(text[:at])  # (up to the list's "[")
    out.write("\n")
    out.write(",\n".join(_json_group_texts(groups)))
    out.write("\n  ]")
    out.write(text[at + 1:] + "\n")


def _indented(obj: Any, depth: int) -> str:
    """``dumps(obj)`` as it stands ``depth`` spaces in (its first line not indented)."""
    return dumps(obj).replace("\n", "\n" + " " * depth)


def _json_group_texts(groups: SliceGroups) -> list[str]:
    """Each slice of the document's "groups" list, four spaces in, as the indented encoder
    writes it: loss by loss for every slice at once from templates, then slice by slice; a
    slice with a result object (or read as a Group) from its JSON object."""
    from lossctl.results import _head

    def enc(v: Any) -> str:
        return json_text(v)

    n = len(groups)
    missing = groups.missing()
    texts = []
    miss = ',\n      "missing": true'
    for v, m, rows in zip(groups.values, missing, groups.rows.tolist()):
        if type(v) is int:
            gv = str(v)
        else:
            j = group_value_json(v)
            gv = _indented(j, 6) if type(j) is list else enc(j)
        texts.append(f'{gv}{miss if m else ""},\n      "rows": {rows},\n      "results": [\n')
    by = '    {\n      "by": ' + enc(groups.by) + ',\n      "value": '
    per_loss = []
    for c in groups.columns:
        head = _indented(_head(c.loss, c.spec, c.params, c.pred), 8)
        head = "        " + head[: -len("\n        }")] + ',\n          "value": '
        tail = ',\n          "reduction": ' + enc(c.reduction)
        vals, ns = c.value.tolist(), c.n.tolist()
        lines = [f'{head}{x!r},\n          "n": {k}{tail}\n        }}' for x, k in zip(vals, ns)]
        for i in np.flatnonzero(~np.isfinite(c.value)).tolist() + ([c.worst] if 0 <= c.worst < n else []):
            x = vals[i]
            value = repr(x) if x - x == 0 else f'null,\n          "nonfinite": "{nonfinite_label(x)}"'
            worst = ',\n          "worst": true' if i == c.worst else ""
            lines[i] = f'{head}{value},\n          "n": {ns[i]}{tail}{worst}\n        }}'
        per_loss.append(lines)
    out = [by + t + ",\n".join(rs) + "\n      ]\n    }" for t, *rs in zip(texts, *per_loss)]
    for i in set(groups._made).union(*(c.full for c in groups.columns), groups.comparisons):
        out[i] = "    " + _indented(groups[i].to_json(), 4)
    return out


def _group_head(g: Group) -> dict[str, Any]:
    d: dict[str, Any] = {"by": g.by, "group": group_value_json(g.value)}
    if g.missing:
        d["missing"] = True
    d["group_rows"] = g.rows
    return d


def _flat_rows(report: Report) -> Iterable[dict[str, Any]]:
    """JSON Lines: one object per result and per comparison, overall then slice by slice."""
    base = {"task": report.task, "rows": report.rows}
    for r in report.results:
        yield {**base, **r.to_json()}
    for c in report.comparisons:
        yield {**base, "comparison": True, **c.to_json()}
    for g in report.groups or []:
        head = _group_head(g)
        for r in g.results:
            yield {**base, **head, **r.to_json()}
        for c in g.comparisons:
            yield {**base, **head, "comparison": True, **c.to_json()}


def _jsonable(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _all_comparisons(report: Report) -> list[Comparison]:
    if isinstance(report.groups, SliceGroups):  # (columns: only the slices that have comparisons)
        return list(report.comparisons) + report.groups.all_comparisons()
    return list(report.comparisons) + [c for g in report.groups or [] for c in g.comparisons]


def _object_groups(groups: Any) -> Iterable[Group]:
    """The slices whose results may carry more than a value and a count: every one, or, for
    slices held as columns, those with a result object."""
    return groups.object_groups() if isinstance(groups, SliceGroups) else groups or []


def _flat_columns(report: Report) -> list[str]:
    cols = ["loss", "spec", "pred", "value", "n"]
    extra_keys: list[str] = []
    all_results = list(report.results) + [r for g in _object_groups(report.groups) for r in g.results]
    has_ci = has_grad = False
    seen_roles: dict[str, None] = {}
    for r in all_results:  # one pass (100,000 slices are 200,000 results)
        if r.extra:
            for k in r.extra:
                if k not in extra_keys:
                    extra_keys.append(k)
        if r.ci is not None:
            has_ci = True
        if r.grad is not None:
            has_grad = True
        if r.grad_by_role:
            seen_roles.update(dict.fromkeys(r.grad_by_role))
    cols += extra_keys
    if has_ci:
        cols += ["ci_lo", "ci_hi"]
    comparisons = _all_comparisons(report)
    if comparisons:
        cols += ["baseline", "delta"]
        if any(c.ci is not None for c in comparisons):
            cols += ["delta_ci_lo", "delta_ci_hi"]
    if has_grad:
        cols += [f"grad_{k}" for k in GRAD_KEYS]
    roles = list(seen_roles)
    cols += [f"grad_{role}_{k}" for role in roles for k in GRAD_KEYS]
    if report.groups is not None:
        missing = report.groups.any_missing() if isinstance(report.groups, SliceGroups) \
            else any(g.missing for g in report.groups)
        head = ["by", "group"] + (["missing"] if missing else []) + ["group_rows"]
        cols = head + cols + ["worst"]
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


def _comparison_values(comparisons: list[Comparison]) -> dict[tuple[str, str], dict[str, Any]]:
    """(spec, pred) -> the comparison columns of that result's CSV row."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for c in comparisons:
        d: dict[str, Any] = {"baseline": c.baseline, "delta": c.delta}
        if c.ci is not None:
            d["delta_ci_lo"], d["delta_ci_hi"] = c.ci
        out[(c.spec, c.pred)] = d
    return out


def _cell(v: Any) -> str:
    t = type(v)  # the common cells first: one row per slice and loss (100,000 slices are 200,000 rows)
    if t is float and math.isfinite(v):
        return repr(v)
    if t is str:
        return v
    if t is int:
        return str(v)
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (list, tuple, dict)):
        return json_text(v, allow_nan=False, default=_jsonable)
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
    cmp = _comparison_values(report.comparisons)
    if groups is None:
        for r in report.results:
            d = {**_flat_values(r), **cmp.get((r.spec, r.pred), {})}
            w.writerow([_cell(d.get(c)) for c in cols])
    else:
        for r in report.results:
            d = {"by": "", "group": "(all)", "group_rows": report.rows, **_flat_values(r), **cmp.get((r.spec, r.pred), {})}
            w.writerow([_cell(d.get(c)) for c in cols])
        nhead = cols.index("loss")
        if cols[nhead:] == ["loss", "spec", "pred", "value", "n", "worst"]:  # values only: many slices, fast
            if isinstance(groups, SliceGroups):
                out.writelines(_column_slice_lines(groups, cols[:nhead], delimiter))
            else:
                out.writelines(_plain_slice_lines(groups, cols[:nhead], delimiter))
            return
        for g in groups:
            gcmp = _comparison_values(g.comparisons)
            head = _group_head(g)
            if "missing" in cols:
                head["missing"] = g.missing
            for r in g.results:
                d = {**head, **_flat_values(r), **gcmp.get((r.spec, r.pred), {}), "worst": r.worst}
                w.writerow([_cell(d.get(c)) for c in cols])


def _line_writer(delimiter: str) -> Any:
    """A function of a row's cells to its CSV line (without the newline) as csv.writer writes
    it: joined as they are where no cell needs quoting, else through csv.writer."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")

    def line(cells: list[str]) -> str:
        joined = delimiter.join(cells)
        if joined.count(delimiter) == len(cells) - 1 and '"' not in joined and "\n" not in joined \
                and "\r" not in joined and all(cells):
            return joined
        buf.seek(0)
        buf.truncate()
        w.writerow(cells)
        return buf.getvalue()[:-1]

    return line


def _slice_heads(line: Any, by: str, pairs: Iterable[tuple[Any, int]], missing: list[bool] | None,
                 delimiter: str, by_plain: bool | None = None) -> Iterator[str]:
    """Each slice's leading cells (by, group[, missing], group_rows) with the delimiter after."""
    d = delimiter
    if by_plain is None:  # whether the --by label is written as it is
        by_plain = line([by, "0"]) == f"{by}{d}0"
    for i, (v, rows) in enumerate(pairs):
        if type(v) is int and missing is None and by_plain:  # (digits never need quoting)
            yield f"{by}{d}{v}{d}{rows}{d}"
            continue
        gv = str(v) if type(v) is int else v if type(v) is str else _cell(group_value_json(v))
        cells = [by, gv, _cell(missing[i]), str(rows)] if missing is not None else [by, gv, str(rows)]
        yield line(cells) + d


def _plain_slice_lines(groups: list[Group], head_cols: list[str], delimiter: str) -> Iterable[str]:
    """The CSV lines of slices whose rows hold values only (no extras, intervals, gradients
    or comparisons), as csv.writer writes them: the cells that may need quoting (the group's
    and the loss's) go through csv.writer once per slice and once per loss, the numbers are
    formatted directly (100,000 slices are 200,000 lines)."""
    line = _line_writer(delimiter)
    mids: dict[tuple[str, str, str], str] = {}
    d = delimiter
    missing = "missing" in head_cols
    plain: dict[str, bool] = {}
    for g in groups:
        by = _cell(g.by)
        if by not in plain:
            plain[by] = line([by, "0"]) == f"{by}{d}0"
        h = next(_slice_heads(line, by, [(g.value, g.rows)], [g.missing] if missing else None, d, plain[by]))
        for r in g.results:
            key = (r.loss, r.spec, r.pred)
            mid = mids.get(key)
            if mid is None:
                mid = mids[key] = line(list(key)) + d
            x = r.value
            yield f"{h}{mid}{repr(x) if x - x == 0 else _cell(x)}{d}{r.n}{d}{'true' if r.worst else 'false'}\n"


def _column_slice_lines(groups: SliceGroups, head_cols: list[str], delimiter: str) -> Iterable[str]:
    """:func:`_plain_slice_lines` of slices held as columns, column by column: the lines of
    each loss for every slice at once, then interleaved slice by slice; a slice read as a
    Group (which a reader may have changed) or holding result objects is written from them."""
    line = _line_writer(delimiter)
    d = delimiter
    n = len(groups)
    missing = groups.missing() if "missing" in head_cols else None
    heads = list(_slice_heads(line, _cell(groups.by), zip(groups.values, groups.rows.tolist()), missing, d))
    made = groups._made
    per_loss = []
    for j, c in enumerate(groups.columns):
        mid = line([c.loss, c.spec, c.pred]) + d
        # (repr is the CSV cell of every double: 'nan', 'inf' and '-inf' too)
        lines = [f"{h}{mid}{v!r}{d}{k}{d}false\n" for h, v, k in zip(heads, c.value.tolist(), c.n.tolist())]
        if 0 <= c.worst < n:
            lines[c.worst] = lines[c.worst][:-6] + "true\n"
        for i, r in c.full.items():
            if i not in made:
                lines[i] = _result_line(heads[i], mid, r, d)
        per_loss.append(lines)
    for i, g in made.items():  # what a reader holds is what is written
        h = next(_slice_heads(line, _cell(g.by), [(g.value, g.rows)], [g.missing] if missing is not None else None, d))
        lines = [_result_line(h, line([r.loss, r.spec, r.pred]) + d, r, d) for r in g.results]
        if len(lines) == len(per_loss):
            for j, t in enumerate(lines):
                per_loss[j][i] = t
        else:  # (results added or removed: the slice's lines go with its first loss's)
            for j in range(len(per_loss)):
                per_loss[j][i] = "".join(lines) if j == 0 else ""
    if len(per_loss) == 1:
        return per_loss[0]
    return itertools.chain.from_iterable(zip(*per_loss))


def _result_line(head: str, mid: str, r: LossResult, d: str) -> str:
    x = r.value
    return f"{head}{mid}{repr(x) if x - x == 0 else _cell(x)}{d}{r.n}{d}{'true' if r.worst else 'false'}\n"


def _preds(report: Report) -> list[str]:
    return list(dict.fromkeys(r.pred for r in report.results))


def markdown(report: Report) -> str:
    preds = _preds(report)
    specs = list(dict.fromkeys(r.spec for r in report.results))
    multi = len(preds) > 1
    lines = [f"**lossctl** · task: {report.task} · rows: {report.rows}", ""]
    head = ["loss"] + [_md(p) for p in preds]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for spec, cells in comparison_cells(report, preds):
        row = [f"`{_md(spec)}`"] + [f"**{_md(t)}**" if best else _md(t) for t, best in cells]
        lines.append("| " + " | ".join(row) + " |")
    if any(r.grad for r in report.results):
        lines += ["", f"Gradients: {GRAD_TITLE}.", ""]
        gh = ["loss"] + (["model"] if multi else []) + [h for h, _ in GRAD_COLUMNS]
        lines.append("| " + " | ".join(gh) + " |")
        lines.append("|" + "---|" * len(gh))
        for r in report.results:
            row = [f"`{_md(r.spec)}`"] + ([_md(r.pred)] if multi else []) + grad_cells(r)
            lines.append("| " + " | ".join(row) + " |")
    if report.groups:
        vs = f"; Δ against {_md(preds[0])}" if multi else ""
        lines += ["", f"Slices by `{_md(report.groups[0].by)}` (▲ worst{vs}):", ""]
        gh = ["group"] + (["model"] if multi else []) + ["rows"] + [f"`{_md(s)}`" for s in specs]
        lines.append("| " + " | ".join(gh) + " |")
        lines.append("|" + "---|" * len(gh))
        for g in report.groups:
            for i, p in enumerate(preds):
                cells = slice_cells(g, p, specs)
                row = ([_md(group_text(g.value)) if i == 0 else ""] + ([_md(p)] if multi else [])
                       + [str(g.rows) if i == 0 else ""] + [_md(t) for t, _ in cells])
                lines.append("| " + " | ".join(row) + " |")
    if report.hidden_groups:
        lines += ["", _hidden_text(report.hidden_groups)]
    lines.append("")
    return "\n".join(lines)


def _hidden_text(n: int) -> str:
    return f"{n} slice{'s' if n != 1 else ''} with fewer than --min-rows rows hidden"


def _md(text: str) -> str:
    """Text for a Markdown table cell: a '|' would end the cell, a newline the row."""
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def group_text(v: Any) -> str:
    """A slice's value as people read it: a cross of several --by columns as 'a · x';
    a missing value as '(missing)'."""
    if isinstance(v, (tuple, list)):
        return " · ".join(group_text(x) for x in v)
    v = group_value_json(v)
    if v is None:
        return "(missing)"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def _delta_scale(c: Comparison) -> float | None:
    """The figures a delta is printed beside (round-off below 10⁻¹² of them prints as 0)."""
    return max(abs(c.value), abs(c.baseline_value)) if math.isfinite(c.value) and math.isfinite(c.baseline_value) \
        else None


def _delta_text(c: Comparison, digits: int = 4) -> str:
    scale = _delta_scale(c)
    text = "Δ " + fmt_num(c.delta, digits, signed=True, scale=scale)
    if c.ci:
        text += ", CI " + fmt_interval(c.ci[0], c.ci[1], digits, signed=True, scale=scale)
    return text


def _value_text(r: LossResult, c: Comparison | None, digits: int = 4, sep: str = " ") -> str:
    """A result's value, then its delta to the baseline (with its paired interval), or
    else its own interval."""
    text = fmt_num(r.value)
    if c is not None:
        text += f"{sep}({_delta_text(c, digits)})"
    elif r.ci is not None:
        text += sep + fmt_interval(r.ci[0], r.ci[1], digits, scale=r.value)
    return text


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
            cells.append((_value_text(r, cmp.get((spec, p))), best is not None and r.value == best))
        rows.append((spec, cells))
    return rows


def slice_cells(g: Group, pred: str, specs: list[str], digits: int = 3, sep: str = " ") -> list[tuple[str, bool]]:
    """One slice's (text, is_worst) cell per loss SPEC for one prediction set: the value
    with its interval, or (after the first set) with its delta within the slice."""
    res = {r.spec: r for r in g.results if r.pred == pred}
    cmp = {c.spec: c for c in g.comparisons if c.pred == pred}
    cells = []
    for s in specs:
        r = res.get(s)
        if r is None:
            cells.append(("", False))
            continue
        text = _value_text(r, cmp.get(s), digits, sep)
        cells.append((("▲ " if r.worst else "") + text, r.worst))
    return cells


def _best(vals: list[float]) -> float | None:
    finite = [v for v in vals if v == v]
    return min(finite) if finite else None


GRAD_TITLE = ("gradient g = ∂(N·L)/∂output per row: mean, std, mean |g|, ‖g‖₂, share of rows with g = 0, "
              "share of Σ|g| in the top 1% of rows")
GRAD_COLUMNS = (("g mean", "mean"), ("g std", "std"), ("|g| mean", "abs_mean"), ("‖g‖₂", "l2"), ("zero", "zero_frac"),
                ("top 1%", "top1_share"))


def grad_cells(r: LossResult, digits: int = 4) -> list[str]:
    """A gradient summary as table cells; a mean below the resolution of mean |g| is 0."""
    g = r.grad or {}
    scale = g.get("abs_mean")
    return [fmt_num(g.get(k), digits, scale=scale if k == "mean" else None) for _, k in GRAD_COLUMNS]


def _plain_width() -> int:
    """The width of a table without colour: $COLUMNS, the terminal's, else 100 (a file or a pipe)."""
    import shutil
    import sys

    from lossctl.catalog import columns_env

    cols = columns_env()
    if cols:
        return cols
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
    preds = _preds(report)
    multi = len(preds) > 1
    if multi:
        _rich_comparison(console, report, preds)
        _rich_grads(console, report, multi=True)
    else:
        _rich_single(console, report)
    for r in report.results:
        if r.extra:
            console.print(f"[dim]{escape(r.spec)}{escape(' @ ' + r.pred) if multi else ''}:[/dim] " + escape(", ".join(
                f"{k} {fmt_num(v)}" for k, v in r.extra.items() if not isinstance(v, (list, dict)))))
    if report.groups:
        _rich_groups(console, report)
    if pictures and report.picture:
        from lossctl import pictures as pics

        pics.draw(console, report.picture, rows=report.rows)


def _fits(console: Any, t: Any) -> bool:
    """Whether a table's natural width fits the console (console.measure caps it at the console's)."""
    return console.measure(t, options=console.options.update_width(1 << 20)).maximum <= console.width


def _holds_words(console: Any, t: Any) -> bool:
    """Whether the table fits the console with no word cut (its cells wrapped at spaces only):
    its minimum width, every column as wide as its longest word."""
    return console.measure(t, options=console.options.update_width(1 << 20)).minimum <= console.width


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
                row.append(escape(fmt_interval(r.ci[0], r.ci[1], 4, scale=r.value)) if r.ci else "—")
            if grad:
                row += grad_cells(r)
                if histogram:
                    row.append(sparkline(r.grad_sample))
            t.add_row(*row)
        return t

    if has_grad:
        for histogram in (True, False):
            t = build(True, histogram)
            if _fits(console, t):
                console.print(t)
                return
    console.print(build(False, False))
    if has_grad:
        _grad_lines(console, report, multi=False)


def _grad_lines(console: Any, report: Report, multi: bool) -> None:
    from rich.markup import escape

    console.print(f"[dim]{GRAD_TITLE}[/dim]")
    for r in report.results:
        name = r.spec + (f" @ {r.pred}" if multi else "")
        console.print(f"[bold]{escape(name)}[/bold]: " + escape(", ".join(
            f"{head} {text}" for (head, _), text in zip(GRAD_COLUMNS, grad_cells(r)))))


def _rich_grads(console: Any, report: Report, multi: bool) -> None:
    """Several prediction sets: the gradient summaries of every (loss, model), as a table
    when it fits the console, else as lines of text."""
    from rich.markup import escape
    from rich.table import Table

    if not any(r.grad for r in report.results):
        return

    def build(histogram: bool) -> Table:
        t = Table(show_edge=False, header_style="bold", title=GRAD_TITLE)
        t.add_column("loss", overflow="fold")
        t.add_column("model", overflow="fold")
        for head, _ in GRAD_COLUMNS:
            t.add_column(head, justify="right", no_wrap=True)
        if histogram:
            t.add_column("g histogram", no_wrap=True, min_width=12)
        last = None
        for r in report.results:
            row = [escape(r.spec) if r.spec != last else "", escape(r.pred)] + grad_cells(r)
            if histogram:
                row.append(sparkline(r.grad_sample))
            t.add_row(*row)
            last = r.spec
        return t

    for histogram in (True, False):
        t = build(histogram)
        if _fits(console, t):
            console.print(t)
            return
    _grad_lines(console, report, multi=multi)


def _short(v: Any) -> str:
    if isinstance(v, list):
        return v[0] + "…" + v[-1] if len(v) > 3 and isinstance(v[0], str) else ",".join(map(str, v))
    return str(v)


def _rich_comparison(console: Any, report: Report, preds: list[str]) -> None:
    from rich.markup import escape
    from rich.table import Table

    title = "lower is better; ★ best per row"
    t = Table(show_edge=False, header_style="bold", title=title)
    t.add_column("loss", overflow="fold")
    for p in preds:
        t.add_column(escape(p), justify="right", overflow="fold")  # never "mod…" for every model
    rows = comparison_cells(report, preds)
    for spec, cells in rows:
        t.add_row(escape(spec), *[f"[bold green]★ {escape(text)}[/bold green]" if best else escape(text)
                                  for text, best in cells])
    if _holds_words(console, t):
        console.print(t)
        return
    # a terminal too narrow for a column per model (numbers were folded across lines): a row
    # per loss and model, then, narrower still, a line each
    t = Table(show_edge=False, header_style="bold", title=title.replace("per row", "per loss"))
    t.add_column("loss", overflow="fold")
    t.add_column("model", overflow="fold")
    t.add_column("value", justify="right", overflow="fold")
    for spec, cells in rows:
        for i, (p, (text, best)) in enumerate(zip(preds, cells)):
            if text:
                t.add_row(escape(spec) if i == 0 else "", escape(p),
                          f"[bold green]★ {escape(text)}[/bold green]" if best else escape(text),
                          end_section=i == len(preds) - 1)
    if _holds_words(console, t):
        console.print(t)
        return
    console.print(f"[dim]{title.replace('per row', 'per loss')}[/dim]")
    for spec, cells in rows:
        console.print(f"[bold]{escape(spec)}[/bold]")
        for p, (text, best) in zip(preds, cells):
            if text:
                line = escape(f"  {p}: {'★ ' if best else ''}{text}")
                console.print(f"[bold green]{line}[/bold green]" if best else line)


def _rich_groups(console: Any, report: Report) -> None:
    """The slices: a row per slice (and per prediction set when there are several, the
    later ones with their delta to the first within the slice)."""
    from rich.markup import escape
    from rich.table import Table

    assert report.groups is not None
    specs = list(dict.fromkeys(r.spec for r in report.results))
    preds = _preds(report)
    multi = len(preds) > 1
    by = report.groups[0].by
    title = f"slices by {by} (▲ worst" + (f"; Δ against {preds[0]} in the slice)" if multi else ")")
    t = Table(show_edge=False, header_style="bold", title=escape(title))
    t.add_column(escape(by), overflow="fold")
    if multi:
        t.add_column("model", overflow="fold")
    t.add_column("rows", justify="right", no_wrap=True)
    for s in specs:
        t.add_column(escape(s), justify="right", overflow="fold")
    for gi, g in enumerate(report.groups):
        for i, p in enumerate(preds):
            cells = [escape(group_text(g.value)) if i == 0 else ""] + ([escape(p)] if multi else [])
            cells.append(f"{g.rows:,}" if i == 0 else "")
            for text, worst in slice_cells(g, p, specs, sep="\n" if multi else " "):  # a delta below its value
                cells.append(f"[bold red]{escape(text)}[/bold red]" if worst else escape(text))
            t.add_row(*cells, end_section=multi and i == len(preds) - 1 and gi < len(report.groups) - 1)
    if not _fits(console, t):  # a narrow terminal: a row per loss, so that no number is folded
        t = _long_groups(report, specs, preds, title)
    if _fits(console, t):
        console.print(t)
    else:  # narrower still: a line per loss
        _group_lines(console, report, specs, preds, title)
    if report.hidden_groups:
        console.print(f"[dim]{_hidden_text(report.hidden_groups)}[/dim]")


def _group_lines(console: Any, report: Report, specs: list[str], preds: list[str], title: str) -> None:
    from rich.markup import escape

    assert report.groups is not None
    console.print(f"[dim]{escape(title)}[/dim]")
    for g in report.groups:
        console.print(f"[bold]{escape(group_text(g.value))}[/bold] · {g.rows:,} rows")
        for p in preds:
            for s, (text, worst) in zip(specs, slice_cells(g, p, specs)):
                if text:
                    line = escape(f"  {p + ' · ' if len(preds) > 1 else ''}{s} {text}")
                    console.print(f"[bold red]{line}[/bold red]" if worst else line)


def _long_groups(report: Report, specs: list[str], preds: list[str], title: str) -> Any:
    """The slices a row per (slice, prediction set, loss): the value, and its delta within
    the slice or its interval in a column of their own."""
    from rich.markup import escape
    from rich.table import Table

    assert report.groups is not None
    multi = len(preds) > 1
    t = Table(show_edge=False, header_style="bold", title=escape(title))
    t.add_column(escape(report.groups[0].by), overflow="fold")
    if multi:
        t.add_column("model", overflow="fold")
    t.add_column("rows", justify="right", no_wrap=True)
    t.add_column("loss", overflow="fold")
    t.add_column("value", justify="right", no_wrap=True)
    has_ci = any(r.ci for g in report.groups for r in g.results)
    if multi:
        t.add_column("Δ", justify="right", no_wrap=True)
    if has_ci:
        t.add_column("CI" + (" (of Δ)" if multi else ""), justify="right", overflow="fold")
    for gi, g in enumerate(report.groups):
        res = {(r.spec, r.pred): r for r in g.results}
        cmp = {(c.spec, c.pred): c for c in g.comparisons}
        rows = [(p, s, res[(s, p)]) for p in preds for s in specs if (s, p) in res]
        for k, (p, s, r) in enumerate(rows):
            first_of_pred = k == 0 or rows[k - 1][0] != p
            cells = [escape(group_text(g.value)) if k == 0 else ""]
            if multi:
                cells.append(escape(p) if first_of_pred else "")
            cells += [f"{g.rows:,}" if k == 0 else "", escape(s)]
            value = ("▲ " if r.worst else "") + fmt_num(r.value)
            cells.append(f"[bold red]{escape(value)}[/bold red]" if r.worst else escape(value))
            c = cmp.get((s, p))
            if multi:
                cells.append(fmt_num(c.delta, 3, signed=True, scale=_delta_scale(c)) if c is not None else "")
            if has_ci:
                lo_hi = c.ci if c is not None else r.ci
                cells.append(escape(fmt_interval(lo_hi[0], lo_hi[1], 3, signed=c is not None,
                                                 scale=r.value)) if lo_hi else "")
            t.add_row(*cells, end_section=k == len(rows) - 1 and gi < len(report.groups) - 1)
    return t


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
                lines.append(json_text(row, allow_nan=False) + "\n")
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
