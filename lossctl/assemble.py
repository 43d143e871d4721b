"""States → a Report: results, bootstrap intervals, comparisons, slices, bindings and notes."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from lossctl.engine import Batch, DecomposableState, Options, Resampling, State, percentile_interval
from lossctl.errors import InputError
from lossctl.results import Comparison, Group, LossResult, Report
from lossctl.plan import Job, Plan, options
from lossctl.driver import Accumulated, accumulate


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


def _group_results(plan: Plan, group_states, group_rows, opts: Options) -> tuple[list[Group], int]:
    """One Group per slice (sorted by value, a missing value last), each with its results
    and, with several prediction sets, its own comparisons and paired intervals."""
    sl = getattr(group_states, "slices", None)
    if sl is not None:
        return _slice_results(plan, sl, opts)
    groups = []
    hidden = 0
    label = ",".join(s.text for s in plan.by)
    for gi, (k, sts) in enumerate(sorted(group_states.items(), key=lambda kv: _sort_key(kv[0]))):
        if group_rows[k] < plan.request.min_rows:
            hidden += 1
            continue
        res = [result_for(j, s, opts, in_slice=True) for j, s in zip(plan.jobs, sts)]
        boot = _add_ci(plan, sts, res, opts, seed_offset=gi + 1) if opts.ci else None
        cmp = _comparisons(plan, sts, res, opts, boot)
        value = k[0] if len(k) == 1 else list(k)
        groups.append(Group(by=label, value=value, rows=group_rows[k], results=res, comparisons=cmp))
    if len(groups) > 1:  # mark the worst slice (largest loss) of each loss and prediction set
        for j in range(len(plan.jobs)):
            finite = [g for g in groups if g.results[j].value == g.results[j].value]
            if finite:
                max(finite, key=lambda g: g.results[j].value).results[j].worst = True
    return groups, hidden


def _slice_results(plan: Plan, sl: Any, opts: Options) -> tuple[list[Group], int]:
    """:func:`_group_results` of vectorised slices (:class:`lossctl.slices.Slices`): the
    values of a table of sums for every group at once; a state per group only where a result
    needs one (gradients, intervals, extras, sums beyond the double range, per-group states)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()  # hundreds of thousands of results, none in a cycle: no collection passes over them
    try:
        return _slice_results_of(plan, sl, opts)
    finally:
        # and none after: the results join the oldest generation without being traversed
        # (freeze then unfreeze promotes every tracked object; a full collection still sees them)
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()


def _slice_results_of(plan: Plan, sl: Any, opts: Options) -> tuple[list[Group], int]:
    from lossctl.engine import Kernel
    from lossctl.slices import VectorJob

    label = ",".join(s.text for s in plan.by)
    size = sl.size
    rows = sl.rows[:size]
    order = _slice_order(sl)
    values = sl.keys.values()
    shown = [g for g in order if rows[g] >= plan.request.min_rows]
    seeds = {g: gi + 1 for gi, g in enumerate(order)} if opts.ci else {}  # bootstrap seed offsets, hidden ones counted
    hidden = size - len(shown)
    gl = np.asarray(shown, dtype=np.intp)
    shown_rows = rows[gl].tolist()
    columns: list[list[LossResult]] = []
    made: dict[int, list[State]] = {}

    def state(g: int, ji: int) -> State:
        if g not in made:
            made[g] = sl.states(g)
        return made[g][ji]

    for ji, (job, vj) in enumerate(zip(plan.jobs, sl.jobs)):
        col: list[Any] = [None] * len(shown)
        if isinstance(vj, VectorJob) and vj.table is not None and not opts.grad and opts.reduction == "mean" \
                and type(vj.kernel).extra is Kernel.extra:
            totals, scaled = vj.table.values(size)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                vals = np.asarray(vj.kernel.value(totals[gl]), dtype=float)
            if vals.shape == (len(shown),):
                spec, name, params, pred = job.call.text, job.call.spec.name, job.call.params, job.pred
                red = opts.reduction
                # (positional: a quarter faster than keywords, 200,000 times at 100,000 slices)
                col = [None if s else LossResult(name, spec, dict(params), pred, v, n, red)
                       for v, n, s in zip(vals.tolist(), shown_rows, scaled[gl].tolist())]
        for i, r in enumerate(col):
            if r is None:
                col[i] = result_for(job, state(shown[i], ji), opts, in_slice=True)
        columns.append(col)
    several = len(plan.pred_labels) > 1
    groups = []
    for g, n, res in zip(shown, shown_rows, zip(*columns) if columns else [()] * len(shown)):
        res = list(res)
        cmp: list[Comparison] = []
        if opts.ci or several:
            sts: list[State] = []
            boot = None  # (each slice its own units)
            if opts.ci:
                sts = [state(g, ji) for ji in range(len(plan.jobs))]
                boot = _add_ci(plan, sts, res, opts, seed_offset=seeds[g])
            if several:
                cmp = _comparisons(plan, sts, res, opts, boot)
            made.pop(g, None)
        groups.append(Group(label, values[g], n, res, comparisons=cmp))
    if len(groups) > 1:  # mark the worst slice (largest loss) of each loss and prediction set
        for j, col in enumerate(columns):
            v = np.array([r.value for r in col], dtype=float)
            if not np.isnan(v).all():
                groups[int(np.nanargmax(v))].results[j].worst = True
    return groups, hidden


def _slice_order(sl: Any) -> list[int]:
    """Group ids in :func:`_sort_key` order (a single integer column: its sorted table)."""
    cols = sl.keys.cols
    if len(cols) == 1:  # integers, looked up in the sorted table, then any missing value (last)
        ints = cols[0]._ic
        rest = np.ones(sl.size, dtype=bool)
        rest[ints] = False
        others = np.flatnonzero(rest).tolist()
        values = cols[0].values
        if all(_sort_key((values[g],))[0][0] == 3 for g in others):
            return ints.tolist() + others
    keys = sl.keys.keys()
    return sorted(range(len(keys)), key=lambda g: _sort_key(keys[g]))


def _sort_key(k: tuple) -> tuple:
    """Slices in order: numbers (−inf … inf), then booleans, then text; a missing value last."""
    def one(x: Any) -> tuple:
        if x is None or (isinstance(x, float) and x != x):
            return (3, 0, "")
        if isinstance(x, (bool, np.bool_)):
            return (1, int(x), "")
        if isinstance(x, (int, float, np.number)):
            return (0, x, "")
        return (2, 0, str(x))

    return tuple(one(x) for x in k)
