"""What an evaluation is: the request, and the plan built from it (jobs: a loss on a prediction set, bound to columns)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


from lossctl import registry
from lossctl.binding import Binding, Selector
from lossctl.engine import Context, Options


NAN_POLICIES = ("error", "drop")


REDUCTIONS = ("mean", "sum", "none")


@dataclass
class Request:
    data: str
    data2: str | None = None
    more: list[str] = field(default_factory=list)  # paths after DATA2: several paths are one dataset
    key: str | None = None
    target: str | None = None
    preds: list[str] = field(default_factory=list)
    cols: dict[str, str] = field(default_factory=dict)
    weight: str | None = None
    task: str | None = None
    losses: list[str] = field(default_factory=list)
    logits: bool | None = None
    reduction: str = "mean"
    grad: bool = False
    nan: str = "error"
    by: list[str] = field(default_factory=list)
    min_rows: int = 1
    ci: float | None = None
    bootstrap: int = 1000
    seed: int = 0
    input_format: str | None = None
    batch_rows: int | None = None
    id: str | None = None
    # a reference model (lossctl check): its predictions in another file for the same rows
    # (same columns as the candidate's unless baseline_pred), or a column of DATA (baseline_pred
    # alone); evaluated in the same pass as an extra prediction set labelled BASELINE, listed first
    baseline: str | None = None
    baseline_pred: str | None = None


BASELINE = "baseline"


def _unset_factory() -> Any:  # replaced once the plan's context is known
    raise AssertionError("kernel factory used before the plan was complete")


@dataclass
class Job:
    """One loss on one prediction set."""

    call: registry.LossCall
    binding: Binding
    pred: str  # label of the prediction set
    kernel_factory: Callable[[], Any]


@dataclass
class Plan:
    request: Request
    sources: list[Any]
    task: str
    task_inferred: bool
    jobs: list[Job]
    pred_labels: list[str]
    ctx: Context
    weight: Selector | None
    by: list[Selector]
    id: Selector | None
    notes: list[str] = field(default_factory=list)
    # (DATA's column, the baseline file's, categorical?): must hold the same values row by row
    equal: list[tuple[Selector, Selector, bool]] = field(default_factory=list)

    def close(self) -> None:
        for s in self.sources:
            s.close()


def options(plan: Plan) -> Options:
    req = plan.request
    return Options(grad=req.grad, ci=req.ci, bootstrap=req.bootstrap, seed=req.seed, reduction=req.reduction)

def pred_role(spec: registry.LossSpec) -> str:
    names = [r.name for r in spec.roles]
    if "pred" in names:
        return "pred"
    return spec.grad_roles[0] if spec.grad_roles else names[-1]


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

    jobs = [Job(registry.LossCall(registry.get(name), params, text), binding, pred, _unset_factory)
            for name, params, text, binding, pred in w["jobs"]]
    plan = Plan(w["request"], sources, w["task"], w["task_inferred"], jobs, w["pred_labels"], w["ctx"], w["weight"],
                w["by"], w["id"], equal=w["equal"])
    for job in jobs:
        job.kernel_factory = (lambda s=job.call.spec, p=job.call.params: s.factory(p, plan.ctx))
    return plan
