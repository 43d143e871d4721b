"""States → a Report: results, bootstrap intervals, comparisons, slices, bindings and notes."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from lossctl.engine import Batch, DecomposableState, Options, Resampling, State, percentile_interval
from lossctl.errors import InputError
from lossctl.results import Comparison, LossResult, Report
from lossctl.plan import Job, Plan, options
from lossctl.driver import Accumulated, accumulate
from lossctl.slice_results import _group_results, _sort_key  # noqa: F401  (_sort_key: check.py reads it here)


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


def result_for(job: Job, st: State, opts: Options, in_slice: bool = False) -> LossResult:
    try:
        r = st.result()
    except InputError as e:
        if not in_slice:
            raise
        # a slice where the loss is undefined (one class for mined triplets): say so there
        r = {"value": math.nan, "n": getattr(st, "n", 0), "notes": [f"undefined in this slice: {e}"]}
    gs = getattr(st, "grad", None)
    if (r.get("grad") or {}).get("top1_share_lower_bound") and hasattr(gs, "top1_note") \
            and gs.top1_note() not in r.get("notes", []):  # (states other than the decomposable one)
        r["notes"] = [*r.get("notes", []), gs.top1_note()]
    return LossResult(
        loss=job.call.spec.name,
        spec=job.call.text,
        params=dict(job.call.params),
        pred=job.pred,
        value=float(r.get("value", math.nan)),
        n=int(r.get("n", 0)),
        reduction=opts.reduction,
        grad=r.get("grad"),
        grad_by_role=r.get("grad_by_role"),
        grad_sample=r.get("grad_sample"),
        extra=r.get("extra", {}),
        notes=list(r.get("notes", [])),
    )


def _add_ci(plan: Plan, states: list[State], results: list[LossResult], opts: Options,
            seed_offset: int = 0) -> tuple[Resampling, dict[int, Callable[[np.ndarray], np.ndarray]]] | None:
    """Each result's percentile interval, from one resampling of the set's units, which it
    returns for ``_comparisons``' paired deltas: drawn once for every job and delta."""
    mats: list[np.ndarray | None] = []
    fns: dict[int, Callable[[np.ndarray], np.ndarray]] = {}
    method = None
    for i, s in enumerate(states):
        mat = None
        if isinstance(s, DecomposableState) and s.boot is not None and s.boot.count:
            mat, method = s.boot.matrix()
            fns[i] = s.boot_fn()
        else:
            results[i].notes.append("no bootstrap interval: this loss is not a function of row sums")
        mats.append(mat)
    first = next((m for m in mats if m is not None), None)
    if first is None or first.shape[0] < 2:
        for i in fns:  # --ci was asked for: say why there is none
            results[i].notes.append("no bootstrap interval: it needs at least 2 rows")
        return None
    boot = Resampling(mats, opts.bootstrap, opts.seed + seed_offset)
    for i, fn in fns.items():
        v = _replicates(lambda: fn(boot.totals(i)))
        results[i].ci = percentile_interval(v, opts.ci)
        results[i].ci_method = method
    return boot, fns


def _replicates(fn: Callable[[], Any]) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # replicates of infinite sums: dropped
        return np.asarray(fn(), dtype=float).reshape(-1)


def _comparisons(plan: Plan, states: list[State], results: list[LossResult], opts: Options,
                 boot: tuple[Resampling, dict[int, Callable[[np.ndarray], np.ndarray]]] | None = None,
                 ) -> list[Comparison]:
    """Each prediction set after the first against the first, loss by loss; with --ci the
    interval of the delta comes from a paired bootstrap: the resampling of the results' own
    intervals (``boot``, from :func:`_add_ci`), the same resample of rows for both."""
    if len(plan.pred_labels) < 2:
        return []
    out = []
    npred = len(plan.pred_labels)
    for li in range(len(plan.jobs) // npred):
        base = li * npred
        for pi in range(1, npred):
            j = base + pi
            c = Comparison(
                loss=results[j].loss, spec=results[j].spec, params=results[j].params,
                pred=results[j].pred, baseline=results[base].pred,
                value=results[j].value, baseline_value=results[base].value,
            )
            if opts.ci and boot is not None:
                rs, fns = boot
                if base in fns and j in fns:
                    d = _replicates(lambda: fns[j](rs.totals(j)) - fns[base](rs.totals(base)))
                    c.ci = percentile_interval(d, opts.ci)
            out.append(c)
    return out
