"""Slice results: the slices of a --by run in slice order (numbers, booleans, text, a
missing value last): Groups from per-group states, or, from the vectorised tables of
:mod:`lossctl.slices`, columns (:class:`lossctl.results.SliceGroups`: a value and a count
per slice and loss, a result object only where a result needs one)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lossctl.engine import Options, State
from lossctl.outcome import _add_ci, _comparisons, result_for
from lossctl.results import Comparison, Group, LossColumn, SliceGroups

if TYPE_CHECKING:
    from lossctl.plan import Plan


def _group_results(plan: Plan, group_states, group_rows, opts: Options) -> tuple[list[Group] | SliceGroups, int]:
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


def _slice_results(plan: Plan, sl: Any, opts: Options) -> tuple[SliceGroups, int]:
    """:func:`_group_results` of vectorised slices (:class:`lossctl.slices.Slices`), as
    columns (:class:`lossctl.results.SliceGroups`): the values of a table of sums for every
    group at once; a result object (from a state per group) only where a result needs one
    (gradients, intervals, extras, sums beyond the double range, per-group states)."""
    from lossctl.engine import Kernel
    from lossctl.slices import VectorJob

    label = ",".join(s.text for s in plan.by)
    size = sl.size
    rows = sl.rows[:size]
    order = np.asarray(_slice_order(sl), dtype=np.intp)
    values = sl.keys.values()
    gl = order[rows[order] >= plan.request.min_rows]
    shown = gl.tolist()
    # bootstrap seed offsets, hidden ones counted
    seeds = {g: gi + 1 for gi, g in enumerate(order.tolist())} if opts.ci else {}
    hidden = size - len(shown)
    shown_rows = rows[gl].astype(np.int64)
    columns: list[LossColumn] = []
    made: dict[int, list[State]] = {}

    def state(g: int, ji: int) -> State:
        if g not in made:
            made[g] = sl.states(g)
        return made[g][ji]

    for ji, (job, vj) in enumerate(zip(plan.jobs, sl.jobs)):
        vals = None
        need: Any = range(len(shown))
        if isinstance(vj, VectorJob) and vj.table is not None and not opts.grad and opts.reduction == "mean" \
                and type(vj.kernel).extra is Kernel.extra:
            totals, scaled = vj.table.values(size)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                vals = np.array(vj.kernel.value(totals[gl]), dtype=float)
            if vals.shape == (len(shown),):
                need = np.flatnonzero(scaled[gl]).tolist()
            else:
                vals = None
        col = LossColumn(job.call.spec.name, job.call.text, job.call.params, job.pred, opts.reduction,
                         np.empty(len(shown)) if vals is None else vals, shown_rows.copy())
        for i in need:
            r = col.full[i] = result_for(job, state(shown[i], ji), opts, in_slice=True)
            col.value[i], col.n[i] = r.value, r.n
        columns.append(col)
    several = len(plan.pred_labels) > 1
    comparisons: dict[int, list[Comparison]] = {}
    if opts.ci or several:
        for i, g in enumerate(shown):
            res = [c.result(i) for c in columns]
            sts: list[State] = []
            boot = None  # (each slice its own units)
            if opts.ci:
                sts = [state(g, ji) for ji in range(len(plan.jobs))]
                boot = _add_ci(plan, sts, res, opts, seed_offset=seeds[g])
            if several:
                comparisons[i] = _comparisons(plan, sts, res, opts, boot)
            made.pop(g, None)
    if len(shown) > 1:  # mark the worst slice (largest loss) of each loss and prediction set
        for c in columns:
            if not np.isnan(c.value).all():
                c.worst = int(np.nanargmax(c.value))
                if c.worst in c.full:
                    c.full[c.worst].worst = True
    return SliceGroups(label, [values[g] for g in shown], shown_rows, columns, comparisons), hidden


def _slice_order(sl: Any) -> list[int]:
    """Group ids in :func:`_sort_key` order (a single integer column: its sorted table)."""
    cols = sl.keys.cols
    if len(cols) == 1 and not cols[0].mixed:  # integers, looked up in the sorted table, then any missing value (last)
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
