"""One set of states → its results: each job's LossResult, the bootstrap intervals (one
resampling shared by every job and paired delta of the set) and the comparisons of each
prediction set with the first. The whole data's set and every slice's go through it."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from lossctl.engine import DecomposableState, Options, Resampling, State, percentile_interval
from lossctl.errors import InputError
from lossctl.plan import Job, Plan
from lossctl.results import Comparison, LossResult


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
