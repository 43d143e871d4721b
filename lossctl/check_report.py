"""Views of a gate run (lossctl.check.GateReport): table, json, markdown, JUnit XML,
GitHub workflow commands and the GitHub step summary."""
from __future__ import annotations

import math
from typing import TextIO

from lossctl.check import CheckResult, GateReport
from lossctl.render import _fits, _md, _plain_width, dumps, fmt_num

from lossctl.options import REPORT_FORMATS as FORMATS  # noqa: E402 - declared once, in lossctl.options
ANNOTATION_LIMIT = 10  # GitHub shows at most 10 error annotations per step


def render(gate: GateReport, fmt: str, out: TextIO, *, color: bool = False, width: int | None = None) -> None:
    if fmt == "json":
        out.write(dumps(gate.to_json()) + "\n")
    elif fmt == "markdown":
        out.write(markdown(gate))
    else:
        _rich(gate, out, color=color, width=width)


def _interval(p: tuple[float, float] | None, signed: bool = False) -> str:
    if p is None:
        return ""
    if signed and all(map(math.isfinite, p)):
        return f"[{p[0]:+.4g}, {p[1]:+.4g}]"
    return f"[{fmt_num(p[0], 4)}, {fmt_num(p[1], 4)}]"


def _delta(c: CheckResult) -> str:
    if c.delta is None:
        return ""
    return f"{c.delta:+.4g}" if math.isfinite(c.delta) else fmt_num(c.delta)


def cells(c: CheckResult, strict: bool, digits: int = 6) -> dict[str, str]:
    """The text of one row: check, value (CI), bound, baseline, delta (CI), mdd, verdict."""
    return {
        "check": c.name,
        "value": fmt_num(c.value, digits) + (f" {_interval(c.ci)}" if c.ci else ""),
        "bound": bound_text(c, digits),
        "baseline": "" if c.baseline is None else fmt_num(c.baseline, digits),
        "delta": _delta(c) + (f" {_interval(c.delta_ci, True)}" if c.delta_ci else ""),
        "mdd": "" if c.mdd is None else fmt_num(c.mdd, 4),
        "verdict": verdict_text(c, strict),
    }


def bound_text(c: CheckResult, digits: int = 6) -> str:
    """``<= 0.5``, ``<= baseline``, ``<= baseline * 1.05 (35.32)``."""
    text = f"{c.op} {c.bound_text}"
    return text + (f" ({fmt_num(c.bound, digits)})" if c.vs_baseline and c.bound_text != "baseline" else "")


def verdict_text(c: CheckResult, strict: bool) -> str:
    v = c.verdict.upper() if c.failed(strict) else c.verdict
    return v + (" · worst" if c.worst else "")


def _columns(gate: GateReport) -> list[tuple[str, str]]:
    cols = [("check", "check"), ("value", "value" + (f" [{gate.ci:g} CI]" if gate.ci else "")), ("bound", "bound")]
    if gate.has_baseline:
        cols += [("baseline", "baseline"), ("delta", "delta vs baseline" + (" [CI]" if gate.ci else ""))]
        if gate.ci:
            cols.append(("mdd", "mdd"))
    cols.append(("verdict", "verdict"))
    return cols


def summary_line(gate: GateReport) -> str:
    n = gate.counts()
    word = "PASSED" if gate.passed else "FAILED"
    text = (f"{word}: {n['checks']} check{'s' * (n['checks'] != 1)} on {gate.rows:,} rows: {n['pass']} pass, "
            f"{n['fail']} fail, {n['inconclusive']} inconclusive")
    if n["inconclusive"]:
        text += (" (--strict: inconclusive fails)" if gate.strict else
                 " (inconclusive: the interval straddles the bound; it passes unless --strict)")
    return text


def failure_text(c: CheckResult, gate: GateReport) -> str:
    """One line saying which check failed and by how much."""
    parts = [f"{c.name}: {c.verdict}: value {fmt_num(c.value)} vs bound {c.op} {c.bound_text}"
             + (f" = {fmt_num(c.bound)}" if c.vs_baseline else "")]
    if c.ci:
        parts.append(f"{gate.ci:g} CI {_interval(c.ci)}")
    if c.baseline is not None:
        parts.append(f"baseline {fmt_num(c.baseline)}, delta {_delta(c)}"
                     + (f" {_interval(c.delta_ci, True)}" if c.delta_ci else ""))
    if c.mdd is not None:
        parts.append(f"min. detectable difference {fmt_num(c.mdd, 4)}")
    if c.excess_ci is not None and c.vs_baseline:
        parts.append(f"value − bound in {_interval(c.excess_ci, True)}")
    beyond = -c.margin
    if math.isfinite(beyond) and beyond > 0:
        parts.append(f"beyond the bound by {fmt_num(beyond)}")
    parts.append(f"{c.rows:,} rows")
    return "; ".join(parts)


def failures(gate: GateReport, limit: int = 20) -> list[str]:
    """One line per failed check (which, and by how much); beyond ``limit``, a count."""
    failed = [c for c in gate.checks if c.failed(gate.strict)]
    lines = [failure_text(c, gate) for c in failed[:limit]]
    if len(failed) > limit:
        lines.append(f"and {len(failed) - limit} more failed checks")
    return lines


def markdown(gate: GateReport, notes: bool = False) -> str:
    """A markdown report; ``notes``: with the run's notes (which on a terminal go to stderr)."""
    cols = _columns(gate)
    lines = [f"**lossctl check** · {_md(', '.join(gate.sources))} · task: {gate.task} · rows: {gate.rows:,}", ""]
    lines.append("| " + " | ".join(h for _, h in cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for c in gate.checks:
        row = cells(c, gate.strict)
        text = {k: _md(row[k]) for k, _ in cols}
        text["check"] = f"`{text['check']}`"
        if c.failed(gate.strict):
            text["verdict"] = f"**{text['verdict']}**"
        lines.append("| " + " | ".join(text[k] for k, _ in cols) + " |")
    lines += ["", f"**{summary_line(gate)}**"]
    for f in failures(gate):
        lines.append(f"- ✗ {_md(f)}")
    for s in gate.slices:
        lines.append(f"- {_md(s.text())}")
    for w in gate.warnings if notes else ():
        lines.append(f"- note: {_md(w)}")
    lines.append("")
    return "\n".join(lines)


def _rich(gate: GateReport, out: TextIO, *, color: bool, width: int | None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=out, force_terminal=color, no_color=not color, width=width or (None if color else _plain_width()),
                      highlight=False, soft_wrap=False)
    console.print(f"[bold]lossctl check[/bold] · {escape(', '.join(gate.sources))} · "
                  f"{escape(f'task: {gate.task} · rows: {gate.rows:,}')}")
    cols = _columns(gate)
    t = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for key, head in cols:
        t.add_column(escape(head), justify="left" if key in ("check", "bound", "verdict") else "right",
                     overflow="fold", no_wrap=key in ("check", "verdict", "baseline", "mdd"),
                     min_width=12 if key == "bound" else None)
    style = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}
    rows = []
    for c in gate.checks:
        row = cells(c, gate.strict, digits=4)
        if c.by is not None:  # a slice: under its check, ▲ marking the worst
            row["check"] = ("▲ " if c.worst else "  ") + c.slice_label
            row["verdict"] = row["verdict"].replace(" · worst", "")
        rows.append((c, row))
        out_row = [escape(row[k]) for k, _ in cols]
        s = "bold red" if c.failed(gate.strict) else style[c.verdict]
        out_row[-1] = f"[{s}]{out_row[-1]}[/{s}]"
        t.add_row(*out_row)
    if _fits(console, t):
        console.print(t)
    else:  # a narrow terminal: a line per check, its verdict first (a table would drop columns)
        for c, row in rows:
            s = "bold red" if c.failed(gate.strict) else style[c.verdict]
            rest = " · ".join(f"{head} {escape(row[k])}" for k, head in cols if k not in ("check", "verdict") and row[k])
            console.print(f"{escape(row['check'])}: [{s}]{escape(row['verdict'])}[/{s}] · {rest}")
    console.print(("[bold green]" if gate.passed else "[bold red]") + escape(summary_line(gate)) + "[/]")
    for f in failures(gate):
        console.print(f"[red]✗ {escape(f)}[/red]")
    for s in gate.slices:
        console.print(f"[dim]▲ {escape(s.text())}[/dim]")
    if gate.has_baseline and gate.ci:
        console.print(f"[dim]mdd: the minimum detectable difference, half the width of the {gate.ci:g} "
                      "interval of the delta at this sample size[/dim]")


# ------------------------------------------------------------------ CI systems


def junit(gate: GateReport) -> bytes:
    """A JUnit XML report: one testcase per check and slice, a failure element for each failed one,
    a skipped element for each slice too small to judge."""
    import xml.etree.ElementTree as ET

    cases = []
    for c in gate.checks:
        case = ET.Element("testcase", name=c.name, classname=f"lossctl.check.{c.loss}", time="0")
        if c.failed(gate.strict):
            f = ET.SubElement(case, "failure", message=failure_text(c, gate), type=c.verdict)
            f.text = "\n".join(f"{k}: {v}" for k, v in _failure_fields(c, gate).items()) + "\n"
        elif c.verdict == "inconclusive":
            ET.SubElement(case, "system-out").text = failure_text(c, gate)
        cases.append(case)
    for s in gate.slices:
        loss = next((c.loss for c in gate.checks if c.check == s.check), "check")
        for g, rows, why in s.skipped:
            from lossctl.check import slice_label

            case = ET.Element("testcase", name=f"{s.check} [{slice_label(s.by, g)}]",
                              classname=f"lossctl.check.{loss}", time="0")
            ET.SubElement(case, "skipped", message=f"{rows} rows, fewer than min_rows {s.min_rows}"
                          if why == "too small" else f"the loss is undefined in this slice: {why}")
            cases.append(case)
    n = len(cases)
    failures = sum(c.failed(gate.strict) for c in gate.checks)
    skipped = sum(len(s.skipped) for s in gate.slices)
    attrs = {"name": "lossctl check", "tests": str(n), "failures": str(failures), "errors": "0",
             "skipped": str(skipped), "time": f"{gate.elapsed:.3f}"}
    root = ET.Element("testsuites", {k: v for k, v in attrs.items() if k != "skipped"})
    suite = ET.SubElement(root, "testsuite", attrs)
    props = ET.SubElement(suite, "properties")
    for k, v in (("rows", gate.rows), ("task", gate.task), ("sources", ", ".join(gate.sources)),
                 ("ci", gate.ci), ("strict", gate.strict)):
        ET.SubElement(props, "property", name=k, value=str(v))
    suite.extend(cases)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _failure_fields(c: CheckResult, gate: GateReport) -> dict[str, str]:
    d = {"observed": fmt_num(c.value), "bound": f"{c.op} {c.bound_text}" + (f" = {fmt_num(c.bound)}" if c.vs_baseline else "")}
    if c.ci:
        d["ci"] = f"{_interval(c.ci)} ({gate.ci:g})"
    if c.baseline is not None:
        d["baseline"] = fmt_num(c.baseline)
        d["delta"] = _delta(c)
    if c.delta_ci:
        d["delta_ci"] = _interval(c.delta_ci, True)
    if c.mdd is not None:
        d["mdd"] = fmt_num(c.mdd, 4)
    d["rows"] = str(c.rows)
    d["verdict"] = c.verdict
    return d


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_prop(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def annotations(gate: GateReport) -> list[str]:
    """``::error`` workflow commands for the failed checks; beyond ten, the last one aggregates the rest."""
    failed = [c for c in gate.checks if c.failed(gate.strict)]
    lines = []
    shown = failed if len(failed) <= ANNOTATION_LIMIT else failed[:ANNOTATION_LIMIT - 1]
    for c in shown:
        lines.append(f"::error title={_escape_prop('lossctl check: ' + c.name)}::{_escape_data(failure_text(c, gate))}")
    rest = failed[len(shown):]
    if rest:
        names = "; ".join(c.name for c in rest)
        lines.append(f"::error title={_escape_prop(f'lossctl check: {len(rest)} more failed checks')}::"
                     + _escape_data(f"{len(rest)} more checks failed (see the job summary): {names}"))
    return lines


def step_summary(gate: GateReport) -> str:
    return "## lossctl check\n\n" + markdown(gate, notes=True) + "\n"
