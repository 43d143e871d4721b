"""What an evaluation is: the request, and the plan built from it (jobs: a loss on a prediction set, bound to columns)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


from lossctl import registry
from lossctl.binding import Binding, Selector
from lossctl.engine import Context, Options
from lossctl.options import NAN_POLICIES, REDUCTIONS  # noqa: F401 - declared in lossctl.options; importable here


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
    strict_key: bool = False  # --strict-key: a key without a match in every file is an error


BASELINE = "baseline"


@dataclass(frozen=True)
class Job:
    """One loss on one prediction set: the loss with its parameters, its columns, the set's label."""

    call: registry.LossCall
    binding: Binding
    pred: str  # label of the prediction set

    def kernel(self, ctx: Context) -> Any:
        """A fresh kernel (or state) of this job's loss, for a run in ``ctx``."""
        return self.call.spec.factory(self.call.params, ctx)


@dataclass(frozen=True)
class Plan:
    """An evaluation as data: built once by the planner (:func:`lossctl.planner.prepare`),
    frozen after that. Two plans are compatible (two shards, a candidate and its baseline)
    when they are equal; :func:`plan_wire` is what a worker receives. The open files it
    was planned from are not part of it: they travel beside it (:class:`Inputs`)."""

    request: Request
    source_names: tuple[str, ...]
    source_formats: tuple[str, ...]
    task: str
    task_inferred: bool
    jobs: tuple[Job, ...]
    pred_labels: tuple[str, ...]
    ctx: Context
    weight: Selector | None
    by: tuple[Selector, ...]
    id: Selector | None
    bindings: Mapping[str, Any]  # role → column(s), as the report shows them
    notes: tuple[str, ...] = ()
    # (DATA's column, the baseline file's, categorical?): must hold the same values row by row
    equal: tuple[tuple[Selector, Selector, bool], ...] = ()

    def with_context(self, **changes: Any) -> "Plan":
        """The same plan in another context (the CLI's output needs: ``sample_grads``, ``top_keep``)."""
        return dataclasses.replace(self, ctx=dataclasses.replace(self.ctx, **changes))

    def with_notes(self, *notes: str) -> "Plan":
        return dataclasses.replace(self, notes=self.notes + tuple(notes))


class Inputs(list):
    """A plan's opened sources, in the plan's order (DATA, DATA2, the baseline file): what the
    driver reads. They can be read again for a pass that needs one; ``close`` releases them."""

    def close(self) -> None:
        for s in self:
            s.close()

    def __enter__(self) -> "Inputs":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def options(plan: Plan) -> Options:
    req = plan.request
    return Options(grad=req.grad, ci=req.ci, bootstrap=req.bootstrap, seed=req.seed, reduction=req.reduction)

def pred_role(spec: registry.LossSpec) -> str:
    names = [r.name for r in spec.roles]
    if "pred" in names:
        return "pred"
    return spec.grad_roles[0] if spec.grad_roles else names[-1]


def plan_wire(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-able data: what a worker receives (no open files, no kernels, no
    states; losses by their spec text and parameters). :func:`plan_from_wire` inverts it:
    ``plan_from_wire(json.loads(json.dumps(plan_wire(p)))) == p``."""
    def sel(s: Selector | None) -> dict[str, Any] | None:
        return None if s is None else dataclasses.asdict(s)

    ctx = {f.name: getattr(plan.ctx, f.name) for f in dataclasses.fields(plan.ctx) if f.compare}
    return {
        "request": dataclasses.asdict(plan.request),
        "source_names": list(plan.source_names), "source_formats": list(plan.source_formats),
        "task": plan.task, "task_inferred": plan.task_inferred,
        "jobs": [{"loss": j.call.spec.name, "spec": j.call.text, "params": dict(j.call.params),
                  "binding": {r: sel(s) for r, s in j.binding.roles.items()}, "pred": j.pred} for j in plan.jobs],
        "pred_labels": list(plan.pred_labels), "ctx": ctx,
        "weight": sel(plan.weight), "by": [sel(s) for s in plan.by], "id": sel(plan.id),
        "bindings": dict(plan.bindings), "notes": list(plan.notes),
        "equal": [[sel(a), sel(b), cat] for a, b, cat in plan.equal],
    }


def plan_from_wire(w: Mapping[str, Any]) -> Plan:
    """The plan :func:`plan_wire` describes."""
    def sel(d: Mapping[str, Any] | None) -> Selector | None:
        return None if d is None else Selector(**{**d, "columns": list(d["columns"])})

    jobs = []
    for j in w["jobs"]:
        spec = registry.get(j["loss"])
        params = {k: registry.coerce(spec, k, v) for k, v in j["params"].items()}
        binding = Binding({r: sel(d) for r, d in j["binding"].items()})  # type: ignore[misc]
        jobs.append(Job(registry.LossCall(spec, params, j["spec"]), binding, j["pred"]))
    return Plan(
        Request(**w["request"]), tuple(w["source_names"]), tuple(w["source_formats"]), w["task"], w["task_inferred"],
        tuple(jobs), tuple(w["pred_labels"]), Context(**w["ctx"]), sel(w["weight"]),
        tuple(sel(d) for d in w["by"]), sel(w["id"]), dict(w["bindings"]), tuple(w["notes"]),  # type: ignore[misc]
        tuple((sel(a), sel(b), bool(c)) for a, b, c in w["equal"]),  # type: ignore[misc]
    )
