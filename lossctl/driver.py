"""The shard driver: a plan over one part of the data → that part's mergeable states.

The local engine's shard path (``eval --emit-state FILE --row-offset N``) and every task
of ``--engine dask`` run this one function; ``lossctl merge`` and the Dask reduction add
up what it returns (:func:`lossctl.statefile.merge_payloads`). Rows are keyed by their
true index in the whole data (``row_offset``), so bootstrap units, slices and gradient
samples do not depend on where the data was cut. (The smallest form of the seam the
"one seam for every driver" issue describes: one loop, the pipeline's ``accumulate``.)
"""
from __future__ import annotations

from typing import Any, Callable

from lossctl.errors import UsageError


def unmergeable(plan: Any) -> tuple[str, str] | None:
    """(loss, reason) for the first loss whose state cannot travel from one shard to
    another, else None: the state's declared ``unmergeable_reason`` (what ``--emit-state``
    and ``merge`` read too), on fresh states, before any row is read."""
    from lossctl.pipeline import _new_state, options

    o = options(plan)
    for job in plan.jobs:
        st = _new_state(job, o)
        if hasattr(st, "grouped") and st.grouped is None:
            # a per-image state learns it is one from its first rows: the binding says it now
            st.grouped = "group" in job.binding.roles
        reason = st.unmergeable_reason
        if reason is not None:
            return job.call.text, reason
    return None


def run_shard(
    plan: Any,
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
    from lossctl.pipeline import accumulate

    found = unmergeable(plan)
    if found is not None:
        raise UsageError(f"--emit-state: {found[0]}: {found[1]}")
    return accumulate(plan, row_offset, progress, sample, input_offset=input_offset, whole=whole)


# ------------------------------------------------------------------ a plan as data


def plan_wire(plan: Any) -> dict[str, Any]:
    """What another process needs to run ``plan`` on a part of its data: losses by name and
    parameters, bindings, context and options (no open files, no kernels, no states)."""
    return {
        "request": plan.request, "task": plan.task, "task_inferred": plan.task_inferred,
        "jobs": [(j.call.spec.name, dict(j.call.params), j.call.text, j.binding, j.pred) for j in plan.jobs],
        "pred_labels": list(plan.pred_labels), "ctx": plan.ctx, "weight": plan.weight, "by": list(plan.by),
        "id": plan.id, "equal": list(plan.equal),
    }


def plan_from_wire(w: dict[str, Any], sources: list[Any]) -> Any:
    """The plan :func:`plan_wire` describes, reading ``sources``."""
    from lossctl import registry
    from lossctl.pipeline import Job, Plan, _unset_factory

    jobs = [Job(registry.LossCall(registry.get(name), params, text), binding, pred, _unset_factory)
            for name, params, text, binding, pred in w["jobs"]]
    plan = Plan(w["request"], sources, w["task"], w["task_inferred"], jobs, w["pred_labels"], w["ctx"], w["weight"],
                w["by"], w["id"], equal=w["equal"])
    for job in jobs:
        job.kernel_factory = (lambda s=job.call.spec, p=job.call.params: s.factory(p, plan.ctx))
    return plan
