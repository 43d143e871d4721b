"""``lossctl list`` and ``lossctl explain``: views of the registry."""
from __future__ import annotations

import difflib
import json
from typing import Any, TextIO

from lossctl import registry
from lossctl.errors import UsageError

ROBUST_WORDS = {"no": "sensitive", "bounded-influence": "bounded influence", "yes": "robust"}


def spec_json(spec: registry.LossSpec) -> dict[str, Any]:
    p = spec.properties
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "task": spec.task,
        "tasks": list(spec.all_tasks),
        "summary": spec.summary,
        "roles": [
            {"name": r.name, "shape": {False: "column", True: "columns", None: "column or columns"}[r.vector],
             "required": r.required, "names": list(r.names), "help": r.help}
            for r in spec.roles
        ],
        "params": [
            {"name": q.name, "type": q.kind, "default": registry.format_value(q.default) if isinstance(q.default, tuple) else q.default,
             "range": q.describe_range(), "help": q.help}
            for q in spec.params
        ],
        "default_for": list(spec.default_for),
        "row_mean": spec.row_mean,
        "gradient_wrt": list(spec.grad_roles),
        "properties": {
            "formula": p.formula,
            "gradient": p.gradient,
            "convex": p.convex,
            "differentiable": p.differentiable,
            "robust_to_outliers": p.robust,
            "outliers": p.outlier_note or ROBUST_WORDS[p.robust],
            "estimates": p.estimates,
            "output": p.output,
            "cost": p.cost,
            "use_when": p.use_when,
            "avoid_when": p.avoid_when,
            "conventions": p.conventions,
            "references": list(p.references),
        },
        "example": spec.example,
    }


def _specs(task: str | None) -> list[registry.LossSpec]:
    if task is not None and task not in registry.TASKS:
        raise UsageError(f"unknown task '{task}'; valid tasks: {', '.join(registry.TASKS)}")
    return registry.losses_for_task(task) if task else registry.all_losses()


def _params_text(spec: registry.LossSpec) -> str:
    if not spec.params:
        return "—"
    return ", ".join(f"{q.name}={'none' if q.default is None else registry.format_value(q.default)}"
                     for q in spec.params if q.name not in ("eps",)) or "—"


def render_list(task: str | None, fmt: str, out: TextIO, *, color: bool = False) -> None:
    specs = _specs(task)
    if fmt == "json":
        out.write(json.dumps({"schema_version": 1, "losses": [spec_json(s) for s in specs]}, indent=2, ensure_ascii=False) + "\n")
        return
    cols = ["loss", "task", "roles", "params", "formula", "outliers", "differentiable", "minimiser estimates", "output", "cost"]
    rows = []
    for s in specs:
        p = s.properties
        rows.append([
            s.name + (f" ({', '.join(s.aliases)})" if s.aliases else ""),
            "/".join(s.all_tasks),
            ", ".join(r.name + ("?" if not r.required else "") for r in s.roles),
            _params_text(s),
            p.formula,
            p.outlier_note or ROBUST_WORDS[p.robust],
            p.differentiable,
            p.estimates,
            p.output,
            p.cost,
        ])
    if fmt == "markdown":
        out.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
        for r in rows:
            out.write("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |\n")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=out, force_terminal=color, no_color=not color, width=_list_width(color), highlight=False)
    if console.width < WIDE_LIST:
        _list_cards(console, cols, rows)
        return
    t = Table(header_style="bold", show_lines=True)
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(escape(c) for c in r))  # formulas hold brackets: "[eps, 1 − eps]" is not markup
    console.print(t)
    console.print("[dim]lossctl explain LOSS for the full story of one loss[/dim]")


WIDE_LIST = 160  # the ten-column table needs this many; narrower consoles get one block per loss


def columns_env() -> int | None:
    """$COLUMNS when it holds a positive whole number."""
    import os

    try:
        cols = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        return None
    return cols if cols > 0 else None


def _list_width(color: bool) -> int | None:
    """$COLUMNS, else the terminal's (None lets rich ask it), else 200 (a file or a pipe)."""
    return columns_env() or (None if color else 200)


def _list_cards(console: Any, cols: list[str], rows: list[list[str]]) -> None:
    """The catalogue on a narrow console: per loss, a heading line and its properties
    below it, indented, each wrapped at the console's width (nothing is cut)."""
    from rich.markup import escape
    from rich.padding import Padding

    for r in rows:
        d = dict(zip(cols, r))
        console.print(f"[bold]{escape(d['loss'])}[/bold] · {escape(d['task'])} · roles: {escape(d['roles'])}"
                      f" · params: {escape(d['params'])}")
        body = [d["formula"], f"outliers: {d['outliers']}", f"differentiable: {d['differentiable']}",
                f"minimiser estimates: {d['minimiser estimates']}", f"output: {d['output']} · cost: {d['cost']}"]
        for line in body:
            console.print(Padding(escape(line), (0, 0, 0, 2), expand=False))
    console.print("[dim]lossctl explain LOSS for the full story of one loss[/dim]")


def explain_json(name: str) -> dict[str, Any]:
    return spec_json(_get(name))


def _get(name: str) -> registry.LossSpec:
    try:
        return registry.get(name)
    except UsageError:
        names = [s.name for s in registry.all_losses()] + [a for s in registry.all_losses() for a in s.aliases]
        close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise UsageError(f"unknown loss '{name}'.{hint} See 'lossctl list'.") from None


def _wrapped(text: str, width: int) -> str:
    """Lines longer than ``width`` wrapped at spaces, their continuations indented two more
    than the line (a terminal folds mid-word otherwise); a word longer than a line stays whole."""
    import textwrap

    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip(" "))]
        out += textwrap.wrap(line.strip(), width=width, initial_indent=indent, subsequent_indent=indent + "  ",
                             break_long_words=False, break_on_hyphens=False)
    return "\n".join(out)


def render_explain(name: str, fmt: str, out: TextIO, *, color: bool = False, width: int | None = None) -> None:
    spec = _get(name)
    d = spec_json(spec)
    if fmt == "json":
        out.write(json.dumps(d, indent=2, ensure_ascii=False) + "\n")
        return
    p = d["properties"]
    lines = [f"# {spec.name}" + (f" ({', '.join(spec.aliases)})" if spec.aliases else "") + f" — {spec.summary}", ""]
    lines.append(f"task: {'/'.join(spec.all_tasks)}")
    lines.append("roles: " + "; ".join(f"{r['name']} ({r['shape']}{'' if r['required'] else ', optional'})"
                                      + (f" — {r['help']}" if r["help"] else "")
                                      + (f" [names: {', '.join(r['names'])}]" if r["names"] else "")
                                      for r in d["roles"]))
    lines += ["", "## Formula", f"  {p['formula']}", "", "## Gradient", f"  {p['gradient']}",
              "  lossctl reports g = ∂(N·L)/∂output, the per-sample gradient for a mean over rows."]
    lines += ["", "## Properties",
              f"  convex: {_yn(p['convex'])}",
              f"  differentiable: {p['differentiable']}",
              f"  outliers: {p['outliers']} ({p['robust_to_outliers']})",
              f"  minimiser estimates: {p['estimates']}",
              f"  output: {p['output']}",
              f"  cost: {p['cost']}",
              f"  value: {'mean of per-row losses' if spec.row_mean else 'a function of whole-set statistics (no per-row value)'}"]
    if d["params"]:
        lines += ["", "## Parameters"]
        for q in d["params"]:
            lines.append(f"  {q['name']} = {registry.format_value(q['default']) if q['default'] is not None else 'none'}  ({q['range']}) — {q['help']}")
    lines += ["", "## Use when", f"  {p['use_when']}", "", "## Avoid when", f"  {p['avoid_when']}"]
    if p["conventions"]:
        lines += ["", "## Conventions and how they differ elsewhere", f"  {p['conventions']}"]
    lines += ["", "## References"] + [f"  - {r}" for r in p["references"]]
    if spec.example:  # a shell command that runs as it stands, its data in a here-document
        lines += ["", "## Example (runs as it stands; paste it into a shell)"]
    text = "\n".join(lines) + "\n"
    example = f"{spec.example}\n" if spec.example else ""  # flush left: a here-document ends at "EOF" alone
    if fmt == "markdown":
        out.write(text.replace("\n  ", "\n") + (f"```sh\n{example}```\n" if example else ""))
        return
    if width:  # (a terminal: the prose wrapped at words; the example as it stands, to be pasted)
        text = _wrapped(text, width)
    out.write(text + example)


def _yn(v: Any) -> str:
    return {True: "yes", False: "no", None: "depends"}[v]
