"""Views of an Advice: a text table readable in 80 columns, JSON, and Markdown."""
from __future__ import annotations

import json
import math
import textwrap
from typing import Any, TextIO

from lossctl.advice.core import Advice

from lossctl.options import REPORT_FORMATS as FORMATS  # noqa: E402 - declared once, in lossctl.options
WIDTH = 80


def _num(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == 0:
            return "0"
        if abs(v) >= 1e6 or abs(v) < 1e-4:
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_num(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_num(x)}" for k, x in v.items()) + "}"
    return str(v)


def _scalar_figures(ev: dict[str, Any]) -> list[tuple[str, Any]]:
    skip = {"sampled", "sample_size", "reliability", "teacher_entropy_by_t", "kl_per_dim"}
    return [(k, v) for k, v in ev.items() if k not in skip]


def render(advice: Advice, fmt: str, out: TextIO, width: int = WIDTH) -> None:
    if fmt == "json":
        from lossctl.render import json_text

        out.write(json_text(advice.to_dict(), indent=2, allow_nan=False) + "\n")
    elif fmt == "markdown":
        out.write(markdown(advice))
    else:
        out.write(table(advice, width))


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=first, subsequent_indent=rest,
                         break_long_words=True, break_on_hyphens=False) or [first.rstrip()]


def table(advice: Advice, width: int = WIDTH) -> str:
    d = advice.to_dict()
    lines: list[str] = []
    head = f"lossctl recommend · {advice.task}{' (inferred)' if advice.task_inferred else ''} · {advice.rows:,} rows"
    if advice.goal:
        head += f" · goal {advice.goal}"
    lines += _wrap(head, width, "", "  ")
    lines.append("")
    lines.append("Ranking (best first)")
    sw = max(8, min(38, width - 31))  # the loss column: 38 characters in 80 columns, fewer in a narrow terminal
    lines.append(f"  {'#':>2}  {'loss':<{sw}} {'score':>5} {'value':>10} {'top1% g':>7}")
    for i, r in enumerate(advice.recommendations, 1):
        top = r.grad.get("top1_share") if r.grad else None
        figures = f"{r.score:>5g} {_num(r.value):>10} {(f'{top:.1%}' if top is not None else '—'):>7}"
        if len(r.spec) <= sw:
            lines.append(f"  {i:>2}  {r.spec:<{sw}} {figures}")
        else:  # a SPEC longer than its column: on a line of its own, never cut
            lines.append(f"  {i:>2}  {r.spec}")
            lines.append(f"  {'':>2}  {'':<{sw}} {figures}")
        for reason in r.reasons:
            lines += _wrap(reason, width, "      why: ", "           ")
        for p, how in r.derivation.items():
            lines += _wrap(how, width, f"      {p}: ", "           ")
        if r.versus_standard and r.versus_standard.get("text"):
            lines += _wrap(r.versus_standard["text"], width, "      vs standard: ", "           ")
        for n in r.notes:
            lines += _wrap(n, width, "      note: ", "           ")
    if not advice.recommendations:
        lines.append("  (no loss fits: see the notes)")
    if advice.ruled_out:
        lines.append("")
        lines.append("Ruled out")
        for o in advice.ruled_out:
            lines += _wrap(o["reason"], width, f"  {o['loss']}: ", "    ")
    lines.append("")
    lines.append("Guide lines applied")
    for r in d["rules_fired"]:
        lines += _wrap(r["guide"], width, f"  {r['rule']}: ", "    ")
    lines.append("")
    lines.append("Evidence" + (f" (of the {advice.evidence.get('of')})" if advice.evidence.get("of") else ""))
    for k, v in _scalar_figures(d["evidence"]):
        if k in ("of",):
            continue
        mark = " *" if k in advice.sampled else ""
        lines += _wrap(f"{_num(v)}{mark}", width, f"  {k:<28} ", " " * 31)
    rel = d["evidence"].get("reliability")
    if rel:
        lines.append("  reliability (bin: n, mean score → observed)")
        for b in rel:
            lo, hi = b["bin"]
            lines.append(f"    [{lo:.1f}, {hi:.1f}): {b['n']:>9,}  {_num(b['mean_score']):>8} → {_num(b['observed'])}")
    if advice.sampled:
        lines += _wrap(f"* from a hashed sample of {advice.sample_size:,} rows (the same whatever the row order)",
                       width, "  ", "    ")
    for n in advice.notes:
        lines += _wrap(n, width, "note: ", "      ")
    return "\n".join(lines) + "\n"


def markdown(advice: Advice) -> str:
    d = advice.to_dict()
    out = [f"## lossctl recommend: {advice.task}" + (" (inferred)" if advice.task_inferred else ""), ""]
    out.append(f"{advice.rows:,} rows" + (f", goal `{advice.goal}`" if advice.goal else "") + ".")
    out += ["", "| # | loss | score | value | top1% of gradient | why |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(advice.recommendations, 1):
        top = r.grad.get("top1_share") if r.grad else None
        why = "<br>".join(x.replace("|", "\\|") for x in r.reasons)
        out.append(f"| {i} | `{r.spec}` | {r.score:g} | {_num(r.value)} | "
                   f"{f'{top:.1%}' if top is not None else '—'} | {why} |")
    der = [(r.spec, p, how) for r in advice.recommendations for p, how in r.derivation.items()]
    if der:
        out += ["", "### Derived parameters", ""]
        out += [f"- `{s}` {p}: {how}" for s, p, how in der]
    vs = [(r.spec, r.versus_standard["text"]) for r in advice.recommendations
          if r.versus_standard and r.versus_standard.get("text")]
    if vs:
        out += ["", "### Against the standard loss", ""]
        out += [f"- `{s}`: {t}" for s, t in vs]
    if advice.ruled_out:
        out += ["", "### Ruled out", ""]
        out += [f"- `{o['loss']}`: {o['reason']}" for o in advice.ruled_out]
    out += ["", "### Guide lines applied", ""]
    out += [f"- `{r['rule']}`: {r['guide']}" for r in d["rules_fired"]]
    out += ["", "### Evidence", "", "| figure | value |", "|---|---|"]
    for k, v in _scalar_figures(d["evidence"]):
        out.append(f"| {k}{' *' if k in advice.sampled else ''} | {_num(v)} |")
    if advice.sampled:
        out += ["", f"\\* from a hashed sample of {advice.sample_size:,} rows."]
    if advice.notes:
        out += [""] + [f"> {n}" for n in advice.notes]
    return "\n".join(out) + "\n"
