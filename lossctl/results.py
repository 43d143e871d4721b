"""Results as data. Renderers (lossctl.render) are views of these objects."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Iterator, Sequence
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


class LossColumn:
    """One loss (and prediction set) over every shown slice, as columns: ``value`` and ``n``
    (arrays, one entry per slice), the slice with the worst value (−1: none), and the
    slices whose result is an object (``full``: made from a state, given an interval or
    notes, or asked for by a reader): those objects are the results there."""

    __slots__ = ("loss", "spec", "params", "pred", "reduction", "value", "n", "worst", "full")

    def __init__(self, loss: str, spec: str, params: dict[str, Any], pred: str, reduction: str,
                 value: np.ndarray, n: np.ndarray, full: dict[int, LossResult] | None = None) -> None:
        self.loss, self.spec, self.params, self.pred, self.reduction = loss, spec, params, pred, reduction
        self.value = value
        self.n = n
        self.worst = -1
        self.full: dict[int, LossResult] = {} if full is None else full

    def result(self, i: int) -> LossResult:
        """Slice ``i``'s result (made once, then kept: a change to it is the result's)."""
        r = self.full.get(i)
        if r is None:
            r = self.full[i] = LossResult(self.loss, self.spec, dict(self.params), self.pred, float(self.value[i]),
                                          int(self.n[i]), self.reduction, worst=i == self.worst)
        return r


class SliceGroups(Sequence):
    """The slices of a --by run held as columns (one :class:`LossColumn` per loss and
    prediction set), read as a sequence of :class:`Group`: a Group is made when it is
    read, and kept. The CSV and JSON writers read the columns without making Groups."""

    def __init__(self, by: str, values: list[Any], rows: np.ndarray, columns: list[LossColumn],
                 comparisons: dict[int, list[Comparison]] | None = None) -> None:
        self.by = by
        self.values = values  # each slice's value (a list for a cross of several columns)
        self.rows = rows
        self.columns = columns
        self.comparisons = comparisons or {}
        self._made: dict[int, Group] = {}

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self.values)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("slice index out of range")
        g = self._made.get(i)
        if g is None:
            g = self._made[i] = Group(self.by, self.values[i], int(self.rows[i]), [c.result(i) for c in self.columns],
                                      comparisons=list(self.comparisons.get(i, [])))
        return g

    def __iter__(self) -> Iterator[Group]:
        for i in range(len(self.values)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (list, SliceGroups)) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> list[dict[str, Any]]:
        """Every slice as :meth:`Group.to_json` writes it, from the columns (a slice read as a
        Group: from the Group)."""
        heads = [_head(c.loss, c.spec, c.params, c.pred) for c in self.columns]
        values = [(c.value.tolist(), c.n.tolist(), c.full, c.worst, c.reduction) for c in self.columns]
        out: list[dict[str, Any]] = []
        for i, (v, rows) in enumerate(zip(self.values, self.rows.tolist())):
            g = self._made.get(i)
            if g is not None:
                out.append(g.to_json())
                continue
            d: dict[str, Any] = {"by": self.by, "value": group_value_json(v)}
            if v is None or (isinstance(v, (list, tuple)) and any(x is None for x in v)):
                d["missing"] = True
            d["rows"] = rows
            res = []
            for head, (vals, ns, full, worst, red) in zip(heads, values):
                r = full.get(i)
                if r is not None:
                    res.append(r.to_json())
                    continue
                e = {**head, "params": dict(head["params"])}
                e.update(_number_field("value", vals[i]))
                e["n"] = ns[i]
                e["reduction"] = red
                if i == worst:
                    e["worst"] = True
                res.append(e)
            d["results"] = res
            cmp = self.comparisons.get(i)
            if cmp:
                d["comparisons"] = [c.to_json() for c in cmp]
            out.append(d)
        return out

    def object_groups(self) -> list[Group]:
        """The slices where some result is an object (made from a state, given an interval,
        notes or extras, or read as a Group), in order: every other slice's results are a
        value and a count each, nothing more."""
        idx = set(self._made).union(*(c.full for c in self.columns))
        return [self[i] for i in sorted(idx)]

    def all_comparisons(self) -> list[Comparison]:
        """Every slice's comparisons, slice by slice."""
        out = []
        for i in sorted(set(self.comparisons) | set(self._made)):
            g = self._made.get(i)
            out.extend(g.comparisons if g is not None else self.comparisons[i])
        return out

    def any_missing(self) -> bool:
        """Whether some slice gathers rows with a missing value."""
        v = self.values
        return None in v or any(None in x for x in v if isinstance(x, (list, tuple)))

    def missing(self) -> list[bool]:
        """Each slice's :attr:`Group.missing`."""
        return [v is None or (isinstance(v, (list, tuple)) and any(x is None for x in v)) for v in self.values]


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
    groups: list[Group] | SliceGroups | None = None  # SliceGroups: a --by run's slices as columns
    sources: list[str] = field(default_factory=list)
    bindings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    join: dict[str, int] | None = None
    hidden_groups: int = 0
    picture: dict[str, Any] | None = None  # data for the terminal pictures (never in JSON)

    def all_results(self) -> list[LossResult]:
        """The overall results, then every slice's that may carry notes (slices held as
        columns: only their result objects; the others are a value and a count each)."""
        groups = self.groups.object_groups() if isinstance(self.groups, SliceGroups) else self.groups or []
        return list(self.results) + [r for g in groups for r in g.results]

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
        if isinstance(self.groups, SliceGroups):
            d["groups"] = self.groups.to_json()
        elif self.groups is not None:
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
