"""The types a loss is declared with: roles, parameters, properties, passes, domains.

The family modules (:mod:`lossctl.losses.regression`, …) build their ``LOSSES`` from
these; :mod:`lossctl.registry` builds its tables from :data:`lossctl.losses.ALL`. This
module imports no loss and not the registry (only :mod:`lossctl.options`, for the tasks), so a
loss module never imports the registry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Literal, Mapping

from lossctl.options import TASKS  # noqa: E402,F401 - the tasks are an enumeration of lossctl.options

ParamKind = Literal["float", "int", "bool", "choice", "floats"]
# what a model hands a loss: a regression value, an interval's bounds, a probability,
# a logit, an unbounded decision value (margin), an embedding, a distribution (or its
# logits: "logit" covers them), a Gaussian posterior's (mu, logvar)
OutputKind = Literal["value", "interval", "probability", "logit", "margin", "embedding", "distribution", "posterior"]
Minimiser = Literal["", "mean", "median", "mean-median", "quantile", "probability", "decision", "overlap",
                    "distribution", "embedding", "prior"]


@dataclass(frozen=True)
class Interval:
    """A real interval with open or closed ends, as scikit-learn's ``Interval``."""

    low: float = -math.inf
    high: float = math.inf
    closed: Literal["both", "left", "right", "neither"] = "neither"

    def __contains__(self, x: float) -> bool:
        lo_ok = x >= self.low if self.closed in ("both", "left") else x > self.low
        hi_ok = x <= self.high if self.closed in ("both", "right") else x < self.high
        return lo_ok and hi_ok

    def __str__(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"{left}{_fmt(self.low)}, {_fmt(self.high)}{right}"


def _fmt(x: float) -> str:
    if x == math.inf:
        return "inf"
    if x == -math.inf:
        return "-inf"
    return f"{x:g}"


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its type, default, valid range and help."""

    name: str
    kind: ParamKind
    default: Any
    help: str
    interval: Interval | None = None
    choices: tuple[Any, ...] = ()
    # values accepted besides the interval (focal's alpha = -1 means "none")
    extra_values: tuple[Any, ...] = ()
    # for list-valued parameters, string keywords accepted instead of a list
    keywords: tuple[str, ...] = ()

    def describe_range(self) -> str:
        if self.kind == "bool":
            return "true|false"
        if self.kind == "choice":
            return "|".join(str(c) for c in self.choices)
        parts = []
        if self.interval is not None:
            parts.append(str(self.interval))
        parts += [str(v) for v in self.extra_values]
        if self.kind == "floats":
            parts = ["list of numbers" + (f" in {self.interval}" if self.interval else "")]
            if self.interval is not None or self.extra_values:  # where coerce() takes one number too
                parts.append(f"a number in {self.interval}" if self.interval else "a number")
            parts += [str(v) for v in self.extra_values] + list(self.keywords)
        return " or ".join(parts) if parts else self.kind


DomainKind = Literal["real", "nonnegative", "positive", "probability", "binary", "signed", "class",
                     "distribution", "categorical"]


@dataclass(frozen=True)
class Domain:
    """The values a role's column may hold (what input validation checks, and what a
    generated test input is drawn from).

    ``interval``: every value lies in it; ``values``: every value is one of them (a
    label set); ``whole``: a whole number (class indices 0..C−1, C from the prediction's
    columns); ``row_sum``: several columns sum to this in every row (a distribution).
    """

    kind: DomainKind
    interval: Interval | None = None
    values: tuple[float, ...] = ()
    whole: bool = False
    row_sum: float | None = None
    text: str = ""

    def outside(self, x: Any) -> Any:
        """The elements of the array ``x`` outside the interval or the label set (a boolean
        array of x's shape). NaN counts as outside a label set and inside an interval, as the
        checks ``(y != 0) & (y != 1)`` and ``(p < 0) | (p > 1)`` treat it (a missing value is
        refused before, by the reader's --nan policy)."""
        if self.values:
            bad = x != self.values[0]
            for v in self.values[1:]:
                bad &= x != v
            return bad
        iv = self.interval
        if iv is None:
            return x != x  # (NaN only: any real is inside)
        low_bad = x < iv.low if iv.closed in ("both", "left") else x <= iv.low
        high_bad = x > iv.high if iv.closed in ("both", "right") else x >= iv.high
        if iv.low == -math.inf:
            bad = high_bad
        elif iv.high == math.inf:
            bad = low_bad
        else:
            bad = low_bad
            bad |= high_bad
        if self.whole:  # a class index: a whole number (the bound C − 1 comes from the data)
            import numpy as np  # (here, not at the top: `lossctl --help` imports this module)

            bad |= x != np.floor(x)  # (30× faster than x % 1 != 0)
        return bad

    def classes(self, c: int) -> Domain:
        """This class-index domain bounded by the data's number of classes: 0..c−1."""
        return replace(self, interval=Interval(0, c - 1, "both"), text=f"a class index 0..{c - 1}")

    def __str__(self) -> str:
        return self.text or self.kind


REAL = Domain("real", text="any real number")
NONNEGATIVE = Domain("nonnegative", Interval(0, math.inf, "left"), text="a number ≥ 0")
POSITIVE = Domain("positive", Interval(0, math.inf), text="a number > 0")
PROBABILITY = Domain("probability", Interval(0, 1, "both"), text="a probability in [0, 1]")
BINARY = Domain("binary", values=(0.0, 1.0), text="a label in {0, 1}")
# −1/+1 labels, 0 read as −1 (a file may not mix 0 and −1)
SIGNED = Domain("signed", values=(-1.0, 0.0, 1.0), text="a label in {−1, +1} (or {0, 1}, 0 read as −1)")
CLASS = Domain("class", Interval(0, math.inf, "left"), whole=True,
               text="a class index 0..C−1 (C the prediction's columns), or C one-hot / soft-label columns")
DISTRIBUTION = Domain("distribution", Interval(0, 1, "both"), row_sum=1.0,
                      text="probabilities in [0, 1]; with several columns each row sums to 1")
CATEGORICAL = Domain("categorical", text="a label compared for equality (numbers or strings)")


def check_domain(b: Any, role: str, domain: Domain, message: str | Callable[[Any], str],
                 values: Any = None) -> None:
    """Refuse the first row of batch ``b`` whose ``role`` (or ``values``) lies outside
    ``domain``: the shared validator the kernels' ``validate`` call. ``message`` is the
    error's text, or a function of the offending values that returns it."""
    x = b[role] if values is None else values
    bad = domain.outside(x)
    if bad.any():
        raise b.fail(message(x[bad]) if callable(message) else message, role, bad, x)


PassKind = Literal["prepass", "second"]


@dataclass(frozen=True)
class Pass:
    """A pass over the data that a loss needs beyond the one that accumulates its state.

    ``prepass``: a whole-data pass before it (facts such as balanced class weights);
    ``second``: a pass after it (a gradient that needs the final sums, as Dice's).
    Needed always, or only where each condition given holds: gradients are asked for
    (``grad``), a parameter has a value (``param``: ("weight", "balanced")), the target
    has several output columns (``multioutput``).
    """

    kind: PassKind
    grad: bool = False
    param: tuple[str, Any] | None = None
    multioutput: bool = False
    why: str = ""

    def needed(self, params: Mapping[str, Any], *, grad: bool, outputs: int = 1) -> bool:
        if self.grad and not grad:
            return False
        if self.param is not None and params.get(self.param[0]) != self.param[1]:
            return False
        if self.multioutput and outputs <= 1:
            return False
        return True



@dataclass(frozen=True)
class Role:
    """An input of a loss: a scalar column or a vector of columns."""

    name: str
    vector: bool | None = False  # False: one column; True: several; None: either
    required: bool = True
    help: str = ""
    # conventional column names; a trailing '*' is a prefix glob for vector roles
    names: tuple[str, ...] = ()
    # only the names above, never the generic target/pred names
    names_only: bool = False
    # the values the column may hold; ``logit_domain``: what they may hold when the loss's
    # ``logits`` parameter is true (a probability column then holds logits, any real)
    domain: Domain = REAL
    logit_domain: Domain | None = None

    @property
    def categorical(self) -> bool:
        """Values are labels (an image id, a class name): read as they are, never as numbers."""
        return self.domain.kind == "categorical"

    @property
    def signed(self) -> bool:
        """Binary labels may be −1/+1 (margin losses), not only 0/1."""
        return self.domain.kind == "signed"

    def domain_for(self, params: Mapping[str, Any]) -> Domain:
        """The role's domain under these parameters (``logits=true`` reads logits)."""
        if self.logit_domain is not None and params.get("logits"):
            return self.logit_domain
        return self.domain


@dataclass(frozen=True)
class Properties:
    """What ``list``, ``explain`` and ``recommend`` say about a loss."""

    formula: str
    gradient: str
    convex: bool | None
    differentiable: str  # "everywhere" or where it is not
    robust: Literal["no", "bounded-influence", "yes"]
    estimates: str
    output: str
    cost: Literal["low", "medium", "high"]
    use_when: str
    avoid_when: str
    references: tuple[str, ...]
    conventions: str = ""
    outlier_note: str = ""
    # typed tags that `recommend` reads (the free-text fields above are for people):
    # the kinds of model output the loss takes, what its minimiser estimates, and
    # whether it is built for class imbalance ("weights": through a class-weight
    # parameter; "yes": by its form, as focal and Dice are)
    takes: tuple[OutputKind, ...] = ()
    minimiser: Minimiser = ""
    imbalance: Literal["no", "weights", "yes"] = "no"


@dataclass(frozen=True)
class LossSpec:
    """A loss, declared once: name, roles, parameters, maths and properties.

    ``factory(params, ctx)`` returns the object the streaming engine drives (see
    :mod:`lossctl.engine`); ``row_mean`` says whether the value is a (weighted) mean
    of per-row losses, which is what ``--reduction sum|none`` need.
    """

    name: str
    task: str
    roles: tuple[Role, ...]
    params: tuple[Param, ...]
    factory: Callable[..., Any]
    properties: Properties
    aliases: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()  # further tasks it fits (focal: binary and multiclass)
    default_for: tuple[str, ...] = ()
    row_mean: bool = True
    grad_roles: tuple[str, ...] = ("pred",)
    summary: str = ""
    example: str = ""
    # the spec's name for a form of another loss with other roles (the spec's "triplet mined"
    # is triplet_mined, variant_of="triplet"): `-l triplet:mining=hard`, or `-l triplet` on a
    # file whose columns bind only the variant's roles, select it
    variant_of: str = ""
    # the passes over the data it needs beyond the one that accumulates its state, each
    # with the condition under which it needs it (the driver runs them; see Pass)
    passes: tuple[Pass, ...] = ()
    # whether its state merges across shards (sharded eval, --engine dask, `lossctl merge`),
    # and why not when it does not; ``merges_grouped``: also with its optional group role
    # bound (per-image Dice states do not travel yet)
    merges: bool = True
    merge_note: str = ""
    merges_grouped: bool = True

    def needs(self, kind: PassKind, params: Mapping[str, Any], *, grad: bool, outputs: int = 1) -> bool:
        """Whether a run with these parameters needs a pass of this kind."""
        return any(p.kind == kind and p.needed(params, grad=grad, outputs=outputs) for p in self.passes)

    @property
    def all_tasks(self) -> tuple[str, ...]:
        return (self.task,) + tuple(t for t in self.tasks if t != self.task)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


@dataclass(frozen=True)
class LossCall:
    """A loss with its parameters bound: what ``--loss SPEC`` denotes."""

    spec: LossSpec
    params: Mapping[str, Any]
    text: str  # the SPEC as the user would write it, e.g. "huber:delta=1.5"

    @property
    def name(self) -> str:
        return self.spec.name


def heredoc(command: str, data: str) -> str:
    """An example that runs as it stands after ``pip install``: its data in a shell here-document."""
    return f"{command} <<'EOF'\n{data}EOF"
