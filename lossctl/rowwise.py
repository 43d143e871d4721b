"""Per-row output (--reduction none): each row's loss (and gradient), batch by batch."""
from __future__ import annotations

import re
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from lossctl.errors import InputError
from lossctl.engine import Batch
from lossctl.driver import needs
from lossctl.feed import Feeder
from lossctl.plan import Job, Plan, pred_role


_INTEGER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")


def _typed_text(values: np.ndarray) -> np.ndarray:
    """CSV text values as the numbers they spell: a whole number written canonically
    ("42", "-7"; not "007" or "1e3") becomes an int, so --id values come out as from a
    typed file; anything else stays text, exactly as written."""
    if values.dtype.kind not in "OUS":
        return values
    out = [int(v) if isinstance(v, str) and _INTEGER_TEXT.match(v) else v for v in values.tolist()]
    if all(type(v) is int and -(2**63) <= v < 2**63 for v in out):
        return np.asarray(out, dtype=np.int64)
    return np.asarray(out, dtype=object)


def _scalar_grad(job: Job) -> bool:
    """Whether the loss's gradient is one number per row (one output column, one grad role)."""
    spec = job.call.spec
    roles = list(spec.grad_roles) or [pred_role(spec)]
    return len(roles) == 1 and roles[0] in job.binding.roles and not job.binding.roles[roles[0]].vector


def rowwise_notes(plan: Plan) -> list[str]:
    """What per-row output leaves out: the gradient column of a loss whose gradient is a vector per row."""
    if not plan.request.grad:
        return []
    multi = len(plan.pred_labels) > 1
    return [f"{job.call.text + (f'@{job.pred}' if multi else '')}: no per-row gradient column: its gradient is a "
            "vector for each row (--grad without --reduction none summarises it)"
            for job in plan.jobs if not _scalar_grad(job)]


def row_values(kernels: Sequence[Any], prepass: Sequence[bool], open_pass: Callable[[], Any], main: Any,
               grads: Sequence[bool]) -> Iterator[
        tuple[list[Batch], Any, list[tuple[np.ndarray, dict[str, np.ndarray] | None]]]]:
    """Per batch of ``main`` (after a pre-pass over ``open_pass()`` where a job's loss declares
    one: ``prepass[j]``):
    the jobs' Batches, the --id values, and each job's per-row losses and gradients
    (``grads[j]``: whether job j's), multiplied by the rows' weights."""
    if any(prepass):
        for jobs_b, _, _ in open_pass().batches():
            for k, b, p in zip(kernels, jobs_b, prepass):
                if p:
                    k.validate(b)
                    k.prepass(b)
        for k, p in zip(kernels, prepass):
            if p:
                k.end_prepass()
    for jobs_b, _, ids in main.batches():
        out = []
        for k, b, want in zip(kernels, jobs_b, grads):
            k.validate(b)
            loss, g = k.per_row(b, want)
            w = b.weight
            if w is not None:
                loss = loss * w
                if g is not None:
                    g = {r: v * (w if v.ndim == 1 else w[:, None]) for r, v in g.items()}
            out.append((loss, g))
        yield jobs_b, ids, out


def iter_rows(plan: Plan, inputs: Sequence[Any]) -> Iterator[tuple[list[str], list[np.ndarray]]]:
    """Per-row values (and gradients) for --reduction none, batch by batch.

    Under --nan drop a first ``row`` column gives each output row's input row number
    (from 1), so that the output still lines up with the input. A loss whose gradient
    is a vector per row gets no SPEC.grad column (:func:`rowwise_notes` says so).
    """
    req = plan.request
    kernels = [j.kernel(plan.ctx) for j in plan.jobs]
    header: list[str] = []
    numbered = req.nan == "drop"
    if numbered:
        header.append("row")
    if plan.id:
        header.append(plan.id.columns[0])
    text_ids = bool(plan.id) and plan.source_formats[plan.id.src] in ("csv", "tsv")
    multi = len(plan.pred_labels) > 1
    # SPEC.grad only for losses whose gradient is one number per row (CLI.md)
    scalar = [_scalar_grad(job) for job in plan.jobs]
    for job, k, sc in zip(plan.jobs, kernels, scalar):
        name = job.call.text + (f"@{job.pred}" if multi else "")
        header.append(name)
        if req.grad and sc:
            header.append(name + ".grad")
    feeder = Feeder(plan, inputs)
    prepass = [needs(plan, j, "prepass") for j in plan.jobs]
    for jobs_b, ids, per_job in row_values(kernels, prepass, lambda: Feeder(plan, inputs), feeder,
                                           [req.grad and sc for sc in scalar]):
        cols: list[np.ndarray] = []
        if numbered:
            b0 = jobs_b[0]
            kept = np.arange(b0.n) if b0.keep is None else np.flatnonzero(b0.keep)
            cols.append(kept.astype(np.int64) + (b0.input_start + 1))
        if plan.id:
            ids = ids if ids is not None else np.empty(0)
            cols.append(_typed_text(ids) if text_ids else ids)
        for b, sc, (loss, grads) in zip(jobs_b, scalar, per_job):
            cols.append(loss)
            if req.grad and sc:
                g = next(iter(grads.values())) if grads and len(grads) == 1 else None
                cols.append(g if g is not None and g.ndim == 1 else np.full(b.n, np.nan))
        yield header, cols
    if feeder.rows == feeder.row_offset and feeder.dropped:
        raise InputError.at(f"no rows left: --nan drop dropped all {feeder.dropped}", source=plan.source_names[0])
