"""Results as data. Renderers (lossctl.render) are views of these objects."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = 1

GRAD_KEYS = ("mean", "std", "min", "max", "abs_mean", "l2", "zero_frac", "top1_share")


@dataclass
class LossResult:
    loss: str
    spec: str  # the canonical SPEC, e.g. "huber:delta=1.5"
    params: dict[str, Any]
    pred: str
    value: float
    n: int
    reduction: str = "mean"
    grad: dict[str, float] | None = None
    grad_by_role: dict[str, dict[str, float]] | None = None
    grad_sample: np.ndarray | None = field(default=None, repr=False)  # up to 4,096 values: not in repr
    ci: tuple[float, float] | None = None
    ci_method: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    worst: bool = False  # in a slice: the worst slice for this loss and prediction set

    def __float__(self) -> float:
        return float(self.value)

    def to_json(self) -> dict[str, Any]:
        d = _head(self.loss, self.spec, self.params, self.pred)
        d.update(_number_field("value", self.value))
        d["n"] = self.n
        d["reduction"] = self.reduction
        if self.grad is not None:
            d["grad"] = _number_fields(self.grad)
        if self.grad_by_role:
            d["grad_by_role"] = {
                r: _number_fields(g) for r, g in self.grad_by_role.items()
            }
        if self.ci is not None:
            d["ci"] = [_finite_or_none(x) for x in self.ci]
            d["ci_method"] = self.ci_method
        for k, v in self.extra.items():
            d.update(_number_field(k, v) if isinstance(v, float) else {k: _jsonable(v)})
        if self.notes:
            d["notes"] = list(self.notes)
        if self.worst:
            d["worst"] = True
        return d


@dataclass
class Comparison:
    loss: str
    spec: str
    params: dict[str, Any]
    pred: str
    baseline: str
    value: float
    baseline_value: float
    ci: tuple[float, float] | None = None

    @property
    def delta(self) -> float:
        return self.value - self.baseline_value

    def to_json(self) -> dict[str, Any]:
        d = _head(self.loss, self.spec, self.params, self.pred)
        d["baseline"] = self.baseline
        d.update(_number_field("delta", self.delta))
        if self.ci is not None:
            d["ci"] = [_finite_or_none(x) for x in self.ci]
        return d


@dataclass
class Group:
    by: str
    value: Any  # one value, or a list of values for a cross of several --by columns; None: missing
    rows: int
    results: list[LossResult]
    worst: bool = False
    comparisons: list[Comparison] = field(default_factory=list)  # per slice, with several prediction sets

    @property
    def missing(self) -> bool:
        """Whether the slice gathers rows whose --by value is missing (null or NaN)."""
        return self.value is None or (isinstance(self.value, (list, tuple)) and any(v is None for v in self.value))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"by": self.by, "value": group_value_json(self.value)}
        if self.missing:
            d["missing"] = True
        d["rows"] = self.rows
        d["results"] = [r.to_json() for r in self.results]
        if self.comparisons:
            d["comparisons"] = [c.to_json() for c in self.comparisons]
        return d


def group_value_json(v: Any) -> Any:
    """A group value as JSON holds it: a string, number, boolean or null (a missing value);
    ±inf as the strings "inf" and "-inf"; a cross of several --by columns as a list of these."""
    if isinstance(v, (tuple, list)):
        return [group_value_json(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            return nonfinite_label(v)
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


@dataclass
class Report:
    task: str
    task_inferred: bool
    rows: int
    dropped_rows: int
    results: list[LossResult]
    comparisons: list[Comparison] = field(default_factory=list)
    groups: list[Group] | None = None
    sources: list[str] = field(default_factory=list)
    bindings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    join: dict[str, int] | None = None
    hidden_groups: int = 0
    picture: dict[str, Any] | None = None  # data for the terminal pictures (never in JSON)

    def to_json(self) -> dict[str, Any]:
        from lossctl import __version__

        d: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "lossctl_version": __version__,
            "task": self.task,
            "task_inferred": self.task_inferred,
            "sources": self.sources,
            "bindings": self.bindings,
            "rows": self.rows,
            "dropped_rows": self.dropped_rows,
            "results": [r.to_json() for r in self.results],
        }
        if self.comparisons:
            d["comparisons"] = [c.to_json() for c in self.comparisons]
        if self.groups is not None:
            d["groups"] = [g.to_json() for g in self.groups]
        if self.join is not None:
            d["join"] = self.join
        if self.warnings:
            d["warnings"] = self.warnings
        return d


def _head(loss: str, spec: str, params: dict[str, Any], pred: str) -> dict[str, Any]:
    """The keys that name a result: loss, spec, params (defaults included), pred."""
    return {"loss": loss, "spec": spec, "params": {k: _jsonable(v) for k, v in params.items()}, "pred": pred}


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    return v


def nonfinite_label(v: float) -> str:
    if math.isnan(v):
        return "nan"
    return "inf" if v > 0 else "-inf"


def _number_field(key: str, v: Any) -> dict[str, Any]:
    """A number for JSON: non-finite values become null with a "nonfinite" marker."""
    v = float(v)
    if math.isfinite(v):
        return {key: v}
    marker = "nonfinite" if key == "value" else f"{key}_nonfinite"
    return {key: None, marker: nonfinite_label(v)}


def _number_fields(d: dict[str, Any]) -> dict[str, Any]:
    """A dict of numbers (a gradient summary) for JSON, each as :func:`_number_field`."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_number_field(k, v) if isinstance(v, (float, int, np.number)) and not isinstance(v, bool)
                   else {k: _jsonable(v)})
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
