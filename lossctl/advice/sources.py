"""Drivers: the same evidence and check from files (the CLI) or from arrays (the library).

Files go through ``lossctl.planner``: ``prepare`` binds the columns exactly as
``eval`` does (same task inference, same conventional names, same errors), its
``Feeder`` yields the bound batches, and the empirical check is an ordinary
``eval --grad`` run of the recommended specs.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lossctl import registry
from lossctl.engine import Batch
from lossctl.errors import InputError, UsageError
from lossctl.advice import core, evidence

LIB_BATCH = 1 << 17


# ------------------------------------------------------------------ files


@dataclasses.dataclass(frozen=True)
class EvidenceSpec:
    """What the evidence pass reads, as plain data (it travels to a Dask worker): the task,
    the roles bound, how the scores are read, and for each role the job whose Batch holds
    it, with the names messages give it."""

    task: str
    roles: frozenset[str]
    logits: bool | None
    named: bool  # the prediction is named like logits
    jobs: tuple[tuple[str, int], ...]  # (role, the index of a job that binds it)
    names: tuple[tuple[str, str], ...]
    columns: tuple[tuple[str, tuple[str, ...]], ...]


def evidence_spec(plan: Any, logits: bool | None) -> tuple[EvidenceSpec, dict[str, tuple[int, Any]]]:
    """The evidence pass of ``plan`` (and, by role, the job index and selector it reads)."""
    from lossctl.binding import logits_hinted

    chosen: dict[str, tuple[int, Any]] = {}
    for i, job in enumerate(plan.jobs):
        for role, sel in job.binding.roles.items():
            cur = chosen.get(role)
            if cur is None or len(sel.columns) > len(cur[1].columns):
                chosen[role] = (i, sel)
    named = "pred" in chosen and logits_hinted(chosen["pred"][1])
    spec = EvidenceSpec(plan.task, frozenset(chosen), logits, named,
                        tuple((role, i) for role, (i, _) in chosen.items()),
                        tuple((role, sel.text) for role, (_, sel) in chosen.items()),
                        tuple((role, tuple(sel.columns)) for role, (_, sel) in chosen.items()))
    return spec, chosen


def evidence_pass(plan: Any, inputs: Any, spec: EvidenceSpec, row_offset: int = 0, input_offset: int = 0) -> tuple[Any, Any]:
    """The evidence state of the rows of ``inputs`` (one pass; rows keyed by their index in the
    whole data, so that the states of parts merge into the state of the whole), and the pass."""
    from lossctl.feed import Feeder

    state = evidence.for_task(spec.task, set(spec.roles), spec.logits, spec.named)
    names = dict(spec.names)
    colnames = {role: list(c) for role, c in spec.columns}
    feeder = Feeder(plan, inputs, row_offset, input_offset)
    for jobs_b, _, _ in feeder.batches():
        if not jobs_b:
            continue
        b0 = jobs_b[0]
        cols = {role: jobs_b[i].cols[role] for role, i in spec.jobs}
        state.update(Batch(cols, b0.n, b0.weight, b0.offset, b0.source, names, input_start=b0.input_start,
                           keep=b0.keep, column_names=colnames))
    return state, feeder


def run_request(req: Any, *, goal: str | None = None, coverage: float | None = None, check: bool = True,
                engine: Any = None) -> core.Advice:
    """Measure, rank and (where predictions are given) check, for a Request: locally, or on
    ``engine`` (lossctl.engines.dask.Engine), which computes the evidence and the check's
    states on its workers."""
    from lossctl.planner import prepare

    core.check_options(goal, coverage, req.task)
    base = dataclasses.replace(req, losses=[], grad=False, reduction="mean", by=[], ci=None, id=None,
                               task=req.task or core.goal_task(goal))
    if engine is not None:
        engine.check_request(base)
    try:
        plan, inputs = prepare(base)
    except InputError as e:
        if req.preds or "prediction" not in str(e):
            raise
        if engine is not None:
            raise UsageError("recommend --engine dask judges predictions: give -p (the target's distribution "
                             "alone needs --engine local)") from None
        return _targets_only(base, goal, coverage, e)
    try:
        core.check_options(goal, coverage, plan.task)
        spec, chosen = evidence_spec(plan, req.logits)
        if engine is None:
            state, feeder = evidence_pass(plan, inputs, spec)
            rows, dropped = feeder.rows, feeder.dropped
        else:
            state, rows, dropped = engine.evidence(plan, inputs, spec)
        if rows == 0:
            raise InputError.at(f"no rows left: --nan drop dropped all {dropped}" if dropped
                                else "no rows to evaluate", source=plan.source_names[0])
        roles = set(spec.roles)
        task, inferred = plan.task, plan.task_inferred and req.task is None
        has_pred = any(r in roles for r in ("pred", "student", "x1", "anchor", "embedding", "mu", "lower"))
        advice = core.advise(task, state.result(), roles, goal=goal, coverage=coverage, task_inferred=inferred,
                             has_pred=has_pred)
        advice.rows = rows
        advice.bindings = {role: (sel.columns if sel.vector else sel.columns[0]) for role, (_, sel) in chosen.items()}
        kind = advice.evidence.get("score_kind")
        if spec.named and req.logits is None and kind == "probability":
            advice.notes.append(f"'{chosen['pred'][1].text}' is named like logits, but every score lies in [0, 1]: "
                                "read as probabilities (--logits to read them as logits)")
        if req.weight:
            advice.notes.append("the evidence counts every row once; the weights enter the empirical check")
        if dropped:
            advice.notes.append(f"--nan drop: dropped {dropped} rows with missing or infinite values")
        if check and has_pred:
            # the same opened sources (standard input is spooled once): a second pass over them
            if kind == "probability" and req.logits is None:
                req = dataclasses.replace(req, logits=False)  # as the evidence read them, not by the name
            core.check(advice, _file_evaluator(req, task, chosen, inputs, engine))
    finally:
        inputs.close()
    return advice


def _file_evaluator(req: Any, task: str, chosen: dict[str, tuple[int, Any]], sources: list[Any], engine: Any = None):
    from lossctl.planner import plan_on
    from lossctl.driver import accumulate
    from lossctl.assemble import build_report

    def run(eval_task: str, specs: list[str]) -> dict[str, Any]:
        r = dataclasses.replace(req, losses=list(specs), task=eval_task, grad=True, reduction="mean", by=[],
                                ci=None, id=None)
        if eval_task != task:  # per-pixel losses of a segmentation file: the mask and the scores only
            r.target = ",".join(chosen["target"][1].columns)
            r.preds = [",".join(chosen["pred"][1].columns)]
            r.cols = {}
        try:
            overrides = {"logits": True} if r.logits else {}
            calls = [registry.parse_spec(s, overrides) for s in specs]
            plan = plan_on(r, list(sources), calls, False).with_context(sample_grads=False)
            acc = engine.accumulate(plan, sources) if engine is not None else accumulate(plan, sources)
            report = build_report(plan, acc)
        except (InputError, UsageError) as e:
            if len(specs) == 1:
                return {specs[0]: str(e)}
            out: dict[str, Any] = {}
            for s in specs:
                out.update(run(eval_task, [s]))
            return out
        return dict(zip(specs, report.results))

    return run


def _targets_only(req: Any, goal: str | None, coverage: float | None, err: InputError) -> core.Advice:
    """No prediction column: judge from the target's distribution."""
    from lossctl import io
    from lossctl.binding import generic_matches
    from lossctl.planner import select_in
    from lossctl.arrays import to_matrix

    src = io.open_source(req.data, req.input_format)
    try:
        if req.target:
            tsel = select_in(req.target, [src], 0, "-t/--target")
        else:
            found = generic_matches("target", [(0, src.columns, src.types)], set())
            if len(found) != 1:
                raise err
            tsel = found[0]
        state = None
        task = req.task
        rows = dropped = 0
        for rb in io.iter_batches(src, tsel.columns, set(tsel.columns), req.batch_rows or io.DEFAULT_BATCH_ROWS):
            y = to_matrix([rb.column(c) for c in tsel.columns], tsel, src.name, rows + dropped)
            bad = ~np.isfinite(y) if y.ndim == 1 else ~np.isfinite(y).all(axis=1)
            keep = None
            if bad.any():
                if req.nan == "error":
                    i = int(np.flatnonzero(bad)[0])
                    raise InputError.at("missing or infinite value (use --nan drop to skip such rows)",
                                        source=src.name, column=tsel.columns[0], row=rows + dropped + i + 1,
                                        count=int(bad.sum()))
                keep = ~bad
                y = y[keep]
            if task is None:
                vals = np.unique(y)
                task = "binary" if vals.size <= 2 and (set(vals.tolist()) <= {0.0, 1.0} or set(vals.tolist()) <= {-1.0, 1.0}) \
                    else "regression"
            if state is None:
                state = evidence.for_task(task, {"target"}, None)
            b = Batch({"target": y}, y.shape[0], None, rows, src.name, {"target": tsel.text},
                      input_start=rows + dropped, keep=keep, column_names={"target": list(tsel.columns)})
            state.update(b)
            rows += y.shape[0]
            dropped += int(bad.sum())
        if state is None or rows == 0:
            raise InputError.at("no rows to evaluate", source=src.name)
    finally:
        src.close()
    advice = core.advise(task, state.result(), {"target"}, goal=goal, coverage=coverage,
                         task_inferred=req.task is None, has_pred=False)
    advice.rows = rows
    advice.bindings = {"target": tsel.columns[0] if len(tsel.columns) == 1 else tsel.columns}
    advice.notes.append("no prediction column: judged from the target's distribution alone")
    return advice


# ------------------------------------------------------------------ arrays


def _infer_task(cols: dict[str, np.ndarray]) -> str:
    if "teacher" in cols or "mu" in cols:
        return "distribution"
    if "embedding" in cols or "x1" in cols or "anchor" in cols:
        return "metric"
    if "group" in cols:
        return "segmentation"
    y, p = cols.get("target"), cols.get("pred")
    if y is None:
        raise UsageError("recommend needs y (the target) or the roles of a metric or distribution task")
    if y.ndim == 2 and y.shape[1] > 1:  # as eval: one-hot / soft labels are multiclass, else several outputs
        soft = y.min() >= 0 and y.max() <= 1 and np.allclose(y.sum(axis=1), 1, atol=1e-6)
        return "multiclass" if soft and p is not None and p.ndim == 2 and p.shape[1] == y.shape[1] else "regression"
    if p is not None and p.ndim == 2 and p.shape[1] >= 2:
        if p.shape[1] == 2 and np.allclose(p.sum(axis=1), 1, atol=1e-6) and y.ndim == 1:
            return "binary"
        return "multiclass"
    if y.ndim == 1:
        vals = np.unique(y)
        if vals.size <= 2 and (set(vals.tolist()) <= {0.0, 1.0} or set(vals.tolist()) <= {-1.0, 1.0}):
            return "binary"
    return "regression"


def run_arrays(y: Any = None, yhat: Any = None, *, task: str | None = None, goal: str | None = None,
               coverage: float | None = None, weight: Any = None, logits: bool | None = None,
               batch_rows: int | None = None, check: bool = True, **roles: Any) -> core.Advice:
    from lossctl import api

    core.check_options(goal, coverage, task)
    if task is not None and task not in registry.TASKS:
        raise UsageError(f"unknown task {task!r}; valid tasks: {', '.join(registry.TASKS)}")
    known = {r.name for s in registry.all_losses() for r in s.roles}
    for k in roles:
        if k not in known:
            raise UsageError(f"unknown keyword '{k}': not an input of any loss; inputs: {', '.join(sorted(known))}")
    raw = dict(roles)
    if y is not None:
        raw["target"] = y
    if yhat is not None:
        raw["pred"] = yhat
    if not raw:
        raise UsageError("recommend needs data: y (and yhat), or the roles of a metric or distribution task")
    labels_roles = {"group"} | ({"target"} if "embedding" in raw else set())
    cols = {k: (api._as_labels(k, v) if k in labels_roles else api._as_array(k, v)) for k, v in raw.items()}
    n = next(iter(cols.values())).shape[0]
    for k, a in cols.items():
        if a.shape[0] != n:
            raise InputError.at(f"has {a.shape[0]} rows but the first input has {n}", column=k)
    if n == 0:
        raise InputError("no rows to evaluate: the inputs are empty")
    w = api._as_weight(weight, n) if weight is not None else None
    if task is None:
        task = core.goal_task(goal) or _infer_task(cols)
        inferred = True
    else:
        inferred = False
    core.check_options(goal, coverage, task)
    for k in ("target", "pred"):
        if k in cols and cols[k].ndim == 2 and cols[k].shape[1] == 1 and task != "multiclass":
            cols[k] = cols[k][:, 0]
    state = evidence.for_task(task, set(cols), logits)
    step = int(batch_rows or LIB_BATCH)
    if step < 1:
        raise UsageError(f"batch_rows must be a whole number ≥ 1. Got {batch_rows!r} instead.")
    for start in range(0, n, step):
        stop = min(n, start + step)
        state.update(Batch({k: a[start:stop] for k, a in cols.items()}, stop - start,
                           None if w is None else w[start:stop], start, "", {}, input_start=start))
    has_pred = any(r in cols for r in ("pred", "student", "x1", "anchor", "embedding", "mu", "lower"))
    advice = core.advise(task, state.result(), set(cols), goal=goal, coverage=coverage, task_inferred=inferred,
                         has_pred=has_pred)
    advice.rows = n
    if check and has_pred:
        def run(eval_task: str, specs: list[str]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for s in specs:
                spec = registry.parse_spec(s).spec
                need = {r.name for r in spec.roles}
                kw = {k: raw[k] for k in need if k in raw and k not in ("target", "pred")}
                try:
                    out[s] = api.evaluate(raw.get("target") if "target" in need else None,
                                          raw.get("pred") if "pred" in need else None, s, grad=True,
                                          task=eval_task, weight=weight, batch_rows=batch_rows, **kw)
                except (InputError, UsageError) as e:
                    out[s] = str(e)
            return out

        core.check(advice, run)
    return advice
