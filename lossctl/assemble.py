"""States → a Report: results, bootstrap intervals, comparisons, slices, bindings and notes."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lossctl.engine import Batch
from lossctl.results import Report
from lossctl.plan import Plan, options
from lossctl.driver import Accumulated, accumulate
from lossctl.outcome import _add_ci, _comparisons, result_for
from lossctl.slice_results import _group_results


def run(plan: Plan, inputs: Sequence[Any]) -> Report:
    """Evaluate a plan on its sources: its states, then its report."""
    return build_report(plan, accumulate(plan, inputs))


def build_report(plan: Plan, acc: Accumulated) -> Report:
    opts = options(plan)
    results = [result_for(j, s, opts) for j, s in zip(plan.jobs, acc.states)]
    boot = _add_ci(plan, acc.states, results, opts) if opts.ci else None
    comparisons = _comparisons(plan, acc.states, results, opts, boot)
    groups = None
    hidden = 0
    if plan.by:
        groups, hidden = _group_results(plan, acc.group_states, acc.group_rows, opts)
    report = Report(
        task=plan.task,
        task_inferred=plan.task_inferred,
        rows=acc.rows,
        dropped_rows=acc.dropped,
        results=results,
        comparisons=comparisons,
        groups=groups,
        sources=list(plan.source_names),
        bindings=dict(plan.bindings),
        warnings=list(plan.notes),
        join=acc.join,
        hidden_groups=hidden,
    )
    if acc.sample is not None and acc.sample.cols:
        report.picture = _picture(plan, acc.sample.cols)
    report.warnings += run_notes(plan, acc.dropped, report.join, report.sources)
    return report


def run_notes(plan: Plan, dropped: int, join: dict[str, int] | None, sources: list[str]) -> list[str]:
    """What a run says about its rows: those --nan drop dropped, the keys --key left unmatched."""
    out = []
    if dropped:
        out.append(f"--nan drop: dropped {dropped} rows with missing or infinite values")
    keys = [k for k in ("only_in_data", "only_in_data2", "only_in_baseline") if k in (join or {})]
    if join and any(join[k] for k in keys):
        counts = [(join[k], src) for k, src in zip(keys, sources)]
        if len(counts) == 2:
            text = f"{counts[0][0]} keys only in {counts[0][1]}, {counts[1][0]} only in {counts[1][1]}"
        else:  # three files: a key is unmatched when any other file lacks it
            text = ", ".join(f"{n} keys of {src}" for n, src in counts) + " lack a match in another file"
        out.append(f"--key {plan.request.key}: {text}; {join['matched']} matched")
    return out


def _picture(plan: Plan, cols: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """What the terminal pictures need: each model's residuals and the loss curves, or each
    model's probabilities (from the sample of rows; the renderer labels it as one)."""
    from lossctl import pictures

    y = cols["target"]
    preds = [cols[k] for k in ["pred"] + [f"pred.{i}" for i in range(1, len(plan.pred_labels))] if k in cols]
    labels = list(plan.pred_labels[: len(preds)]) or ["pred"]
    if plan.task == "regression" and y.ndim == 1 and all(p.ndim == 1 for p in preds):
        residuals = [p - y for p in preds]
        xs = pictures.curve_grid(residuals)
        curves = []
        seen = set()
        for job in plan.jobs:
            if job.call.text in seen or not job.call.spec.row_mean or job.call.spec.roles[-1].name != "pred":
                continue
            seen.add(job.call.text)
            k = job.kernel(plan.ctx)
            b = Batch({"target": np.zeros_like(xs), "pred": xs}, xs.size)
            curves.append((job.call.text, k.per_row(b, False)[0]))
        return {"kind": "regression", "models": list(zip(labels, residuals)), "xs": xs, "curves": curves}
    if plan.task in ("binary", "multiclass"):
        models = []
        for pi, (label, p) in enumerate(zip(labels, preds)):
            prob = p
            if plan.jobs[pi].call.params.get("logits"):
                from lossctl.losses._numerics import sigmoid, softmax

                prob = softmax(p) if p.ndim == 2 else sigmoid(p)
            if (prob.ndim == 2) != (plan.task == "multiclass") or not np.all((prob >= 0) & (prob <= 1)):
                return None
            models.append((label, prob))
        return {"kind": "classification", "target": y, "models": models}
    return None
