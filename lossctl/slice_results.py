"""Slice results: the per-slice Groups of a --by run, from per-group states or from the
vectorised tables of :mod:`lossctl.slices`, in slice order (numbers, booleans, text, a
missing value last)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lossctl.engine import Options, State
from lossctl.results import Comparison, Group, LossResult

if TYPE_CHECKING:
    from lossctl.pipeline import Plan


def _group_results(plan: Plan, group_states, group_rows, opts: Options) -> tuple[list[Group], int]:
    """One Group per slice (sorted by value, a missing value last), each with its results
    and, with several prediction sets, its own comparisons and paired intervals."""
    from lossctl.pipeline import _add_ci, _comparisons, _result_for  # (pipeline imports this module)

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
        res = [_result_for(j, s, opts, in_slice=True) for j, s in zip(plan.jobs, sts)]
        plan._boot = None  # type: ignore[attr-defined]  # no other slice's units
        if opts.ci:
            _add_ci(plan, sts, res, opts, seed_offset=gi + 1)
        cmp = _comparisons(plan, sts, res, opts, seed_offset=gi + 1)
        value = k[0] if len(k) == 1 else list(k)
        groups.append(Group(by=label, value=value, rows=group_rows[k], results=res, comparisons=cmp))
    plan._boot = None  # type: ignore[attr-defined]
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
    from lossctl.pipeline import _add_ci, _comparisons, _result_for  # (pipeline imports this module)
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
                col[i] = _result_for(job, state(shown[i], ji), opts, in_slice=True)
        columns.append(col)
    several = len(plan.pred_labels) > 1
    groups = []
    for g, n, res in zip(shown, shown_rows, zip(*columns) if columns else [()] * len(shown)):
        res = list(res)
        cmp: list[Comparison] = []
        if opts.ci or several:
            plan._boot = None  # type: ignore[attr-defined]  # no other slice's units
            sts: list[State] = []
            if opts.ci:
                sts = [state(g, ji) for ji in range(len(plan.jobs))]
                _add_ci(plan, sts, res, opts, seed_offset=seeds[g])
            if several:
                cmp = _comparisons(plan, sts, res, opts, seed_offset=seeds.get(g, 0))
            made.pop(g, None)
        groups.append(Group(label, values[g], n, res, comparisons=cmp))
    plan._boot = None  # type: ignore[attr-defined]
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
