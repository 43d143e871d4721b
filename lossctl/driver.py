"""The driver: a plan and its batches → every job's mergeable states.

``accumulate`` streams the batches of a plan's sources (or a part of them) through every
state and every slice's states, running the passes the losses need (a whole-data pre-pass,
a second pass for gradients). The local engine, the shard path (``eval --emit-state FILE
--row-offset N``) and every task of ``--engine dask`` run it; ``lossctl merge`` and the
Dask reduction add up what it returns (:func:`lossctl.statefile.merge_payloads`). Rows are
keyed by their true index in the whole data (``row_offset``), so bootstrap units, slices
and gradient samples do not depend on where the data was cut.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from lossctl.engine import Batch, Context, DecomposableState, Options, State
from lossctl.errors import InputError, UsageError
from lossctl.feed import Feeder
from lossctl.plan import Job, Plan, options


def unmergeable(plan: Any) -> tuple[str, str] | None:
    """(loss, reason) for the first loss whose state cannot travel from one shard to
    another, else None: the state's declared ``unmergeable_reason`` (what ``--emit-state``
    and ``merge`` read too), on fresh states, before any row is read."""
    o = options(plan)
    for job in plan.jobs:
        st = new_state(job, plan.ctx, o)
        if hasattr(st, "grouped") and st.grouped is None:
            # a per-image state learns it is one from its first rows: the binding says it now
            st.grouped = "group" in job.binding.roles
        reason = st.unmergeable_reason
        if reason is not None:
            return job.call.text, reason
    return None


def run_shard(
    plan: Plan,
    inputs: Sequence[Any],
    row_offset: int = 0,
    *,
    input_offset: int = 0,
    progress: Callable[[int], None] | None = None,
    sample: bool = False,
    whole: bool = True,
) -> Any:
    """Every state of ``plan``'s rows, the first of them row ``row_offset`` of the whole data
    (``input_offset`` counting rows that --nan drop drops, for messages). ``whole=False``:
    a fragment of a larger run, whose row and weight checks the caller makes on the total.
    Refuses, before reading, a loss whose state would not merge."""

    found = unmergeable(plan)
    if found is not None:
        raise UsageError(f"--emit-state: {found[0]}: {found[1]}")
    return accumulate(plan, inputs, row_offset, progress, sample, input_offset=input_offset, whole=whole)


def new_state(job: Job, ctx: Context, opts: Options) -> State:
    """A fresh state of ``job``'s loss (the decomposable kernels wrapped in their common state)."""
    k = job.kernel(ctx)
    if isinstance(k, State):
        return k
    return DecomposableState(k, opts)


@dataclass
class Accumulated:
    """Every state of a run, before results are computed: what a state file holds."""

    states: list[State]
    group_states: dict[tuple, list[State]]
    group_rows: dict[tuple, int]
    rows: int
    dropped: int
    join: dict[str, int] | None = None
    sample: Any = None  # a RowSample of the first job's target and prediction, for pictures
    weight_total: float = 0.0


class Pass(Protocol):
    """One pass over a plan's rows: per batch, one Batch per job, the --by columns' values
    and the --id values (:class:`lossctl.feed.Feeder` over files; the library's arrays)."""

    rows: int  # the global index of the row after the last one read
    dropped: int
    weight_total: float
    info: dict[str, Any]

    def batches(self) -> Iterator[tuple[list[Batch], list[Any], Any]]: ...


@dataclass
class Driven:
    """What :func:`drive` returns: the jobs' states, the slices' states, the rows sampled
    for pictures, and the main pass (its row, drop and weight counts)."""

    states: list[State]
    slices: Any
    sample: Any
    main: Pass


def drive(plan: Plan, open_pass: Callable[[], Pass], progress: Callable[[int], None] | None = None,
          sample: bool = False) -> Driven:
    """The one loop: every batch of ``open_pass()`` through every job's state (and every
    slice's), with the passes the losses need: a pre-pass for whole-data facts before the
    main pass (``weight=balanced``'s class counts), a second pass after it (Dice-family
    gradients, which need the totals)."""
    from lossctl.accumulate import RowSample

    opts = options(plan)
    sampler = RowSample() if sample and plan.jobs else None
    states = [new_state(j, plan.ctx, opts) for j in plan.jobs]
    pre = [needs(plan, j, "prepass") for j in plan.jobs]
    second = [needs(plan, j, "second") for j in plan.jobs]
    for s, p, q in zip(states, pre, second):  # the declarations are what the states do (a test checks every loss)
        assert p == bool(getattr(getattr(s, "kernel", None), "needs_prepass", False)) and q == s.two_pass, \
            f"{type(s).__name__}: its declared passes differ from what its state does"

    if any(pre):  # whole-data facts first (weight=balanced's class counts)
        for jobs_b, _, _ in open_pass().batches():
            for s, b, p in zip(states, jobs_b, pre):
                if p:
                    s.kernel.validate(b)
                    s.kernel.prepass(b)
        for s, p in zip(states, pre):
            if p:
                s.kernel.end_prepass()

    slices = None
    if plan.by:
        from lossctl.slices import Slices

        slices = Slices(len(plan.by), states, [lambda j=j: new_state(j, plan.ctx, opts) for j in plan.jobs], opts)
    main = open_pass()
    for jobs_b, by_vals, _ in main.batches():
        for s, b in zip(states, jobs_b):
            validate_batch(s, b)
            s.update(b)
        if progress is not None and jobs_b:
            progress(jobs_b[0].n)
        if sampler is not None and jobs_b and jobs_b[0].n:
            cols = sample_cols(plan, jobs_b)
            if cols:
                sampler.update(cols, jobs_b[0].offset)
        if slices is not None:
            slices.update(jobs_b, by_vals)
    if any(second):  # gradients from the totals (the Dice family's, wasserstein's)
        for jobs_b, by_vals, _ in open_pass().batches():
            for s, b, q in zip(states, jobs_b, second):
                if q:
                    s.update2(b)
            if slices is not None:
                slices.update2(jobs_b, by_vals)
    return Driven(states, slices, sampler, main)


def needs(plan: Plan, job: Job, kind: str) -> bool:
    """Whether ``job`` needs a pass of ``kind`` ("prepass", "second") in this plan, as its loss declares."""
    return job.call.spec.needs(kind, job.call.params, grad=plan.ctx.grad, outputs=plan.ctx.n_classes or 1)


def accumulate(
    plan: Plan, inputs: Sequence[Any], row_offset: int = 0, progress: Callable[[int], None] | None = None,
    sample: bool = False, *, input_offset: int = 0, whole: bool = True,
) -> Accumulated:
    """Every state of ``plan`` over its inputs (and every slice's states): :func:`drive` on
    passes of a :class:`~lossctl.feed.Feeder`.

    ``input_offset`` is the input rows before the first (a fragment's place in its dataset,
    for messages); ``whole=False`` leaves the checks that need every row to the caller
    (:func:`check_rows`), for a fragment of a larger run."""
    d = drive(plan, lambda: Feeder(plan, inputs, row_offset, input_offset), progress, sample)
    states, slices, sampler, feeder = d.states, d.slices, d.sample, d.main
    used = feeder.rows - row_offset
    if whole:
        check_rows(plan, used, feeder.dropped, feeder.weight_total)
    group_states: Any = slices.view() if slices is not None else {}
    group_rows = slices.rows_view() if slices is not None else {}
    return Accumulated(states, group_states, group_rows, used, feeder.dropped, feeder.info.get("join"),
                       sampler, feeder.weight_total)


def check_rows(plan: Plan, used: int, dropped: int, weight_total: float) -> None:
    """What only the whole data can tell: rows were left, and weights that are not all 0."""
    if plan.weight is not None and used and weight_total == 0:
        raise InputError.at("every weight is 0: there is nothing to average", source=plan.source_names[plan.weight.src],
                            column=plan.weight.columns[0])
    if used == 0:
        raise InputError.at(
            f"no rows left: --nan drop dropped all {dropped}" if dropped else "no rows to evaluate",
            source=plan.source_names[0],
        )


def sample_cols(plan: Plan, jobs_b: list[Batch]) -> dict[str, np.ndarray]:
    """The columns the pictures sample from a batch: the target, and the prediction of each
    prediction set (the first loss's jobs: "pred", "pred.1", …)."""
    npred = max(1, len(plan.pred_labels))
    cols: dict[str, np.ndarray] = {}
    for pi, b in enumerate(jobs_b[:npred]):
        t, p = b.cols.get("target"), b.cols.get("pred")
        if t is None or p is None or t.dtype.kind != "f" or p.dtype.kind != "f":
            return cols if pi else {}
        cols.setdefault("target", t)
        cols["pred" if pi == 0 else f"pred.{pi}"] = p
    return cols


def validate_batch(s: State, b: Batch) -> None:
    k = getattr(s, "kernel", None)
    if k is not None:
        k.validate(b)
    elif hasattr(s, "validate"):
        s.validate(b)  # type: ignore[attr-defined]
