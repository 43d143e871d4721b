"""The loss registry: every loss is declared once, with its parameters and properties.

The CLI, parameter validation, ``list``, ``explain`` and ``recommend`` all read this
registry; nothing else in lossctl lists loss names.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from lossctl.errors import UsageError

from lossctl.options import TASKS  # noqa: E402 - the tasks are an enumeration of lossctl.options

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
    # values are labels (an image id): read as they are, never as numbers
    categorical: bool = False
    # binary labels may be −1/+1 (margin losses), not only 0/1
    signed: bool = False


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


_REGISTRY: dict[str, LossSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: LossSpec) -> LossSpec:
    for name in (spec.name, *spec.aliases):
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"loss name {name!r} registered twice")
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def _load() -> None:
    import lossctl.losses  # noqa: F401  (registers every loss)


def all_losses() -> list[LossSpec]:
    _load()
    return list(_REGISTRY.values())


def losses_for_task(task: str) -> list[LossSpec]:
    return [s for s in all_losses() if task in s.all_tasks]


def default_losses(task: str) -> list[LossSpec]:
    return [s for s in all_losses() if task in s.default_for]


def variants(spec: LossSpec) -> list[LossSpec]:
    """The registered forms of ``spec`` with other roles (``LossSpec.variant_of``)."""
    return [s for s in all_losses() if s.variant_of == spec.name]


def get(name: str) -> LossSpec:
    _load()
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    names = sorted(_REGISTRY) + sorted(_ALIASES)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UsageError(
        f"unknown loss '{name}'.{hint} Valid losses: {', '.join(sorted(_REGISTRY))}"
    )


# ---------------------------------------------------------------- loss specs

@dataclass(frozen=True)
class LossCall:
    """A loss with its parameters bound: what ``--loss SPEC`` denotes."""

    spec: LossSpec
    params: Mapping[str, Any]
    text: str  # the SPEC as the user would write it, e.g. "huber:delta=1.5"

    @property
    def name(self) -> str:
        return self.spec.name


_SPEC_ITEM = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\[[^\]]*\]|[^,]*)\s*(?:,|$)")


def parse_spec(text: str, overrides: Mapping[str, Any] | None = None) -> LossCall:
    """Parse ``NAME`` or ``NAME:key=value,...`` into a validated :class:`LossCall`."""
    name, sep, rest = text.partition(":")
    if not name.strip():
        raise UsageError(f"loss spec '{text}' has no loss name")
    spec = get(name)
    if sep and not rest.strip():
        raise UsageError(
            f"loss spec '{text}' has nothing after the colon; write {spec.name} "
            f"or {spec.name}:key=value"
        )
    given: dict[str, str] = {}
    pos = 0
    rest_s = rest
    while sep and pos < len(rest_s):
        m = _SPEC_ITEM.match(rest_s, pos)
        if not m or m.end() == pos:
            raise UsageError(
                f"cannot read parameters '{rest}' of loss '{spec.name}': "
                "write key=value pairs separated by commas"
            )
        key, raw = m.group(1), m.group(2).strip()
        if key in given:
            raise UsageError(f"parameter '{key}' of {spec.name} given twice")
        given[key] = raw
        pos = m.end()
    names = {p.name for p in spec.params}
    if any(k not in names for k in given):  # triplet:mining=hard is the mined form
        for v in variants(spec):
            if all(any(p.name == k for p in v.params) for k in given):
                spec = v
                break
    params = spec.defaults()
    for key, raw in given.items():
        params[key] = coerce(spec, key, raw)
    for key, value in (overrides or {}).items():
        if any(p.name == key for p in spec.params) and key not in given:
            params[key] = coerce(spec, key, value)
    return LossCall(spec, params, format_call(spec, params))


def coerce(spec: LossSpec, key: str, raw: Any) -> Any:
    """Turn a raw value (a string from the CLI or a Python value) into a valid one."""
    try:
        p = spec.param(key)
    except KeyError:
        valid = ", ".join(p.name for p in spec.params) or "none"
        close = difflib.get_close_matches(key, [p.name for p in spec.params], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UsageError(
            f"unknown parameter '{key}' for loss {spec.name}.{hint} Valid parameters: {valid}"
        ) from None

    def bad(why: str) -> UsageError:
        return UsageError(
            f"The '{key}' parameter of {spec.name} must be {why}. Got {raw!r} instead."
        )

    if p.kind == "bool":
        if isinstance(raw, bool):
            return raw
        s = str(raw).strip().lower()
        if s in ("true", "1", "yes", "on"):
            return True
        if s in ("false", "0", "no", "off"):
            return False
        raise bad("true or false")
    if p.kind == "choice":
        s = str(raw).strip().lower()
        if s in p.choices:
            return s
        raise bad("one of " + ", ".join(map(str, p.choices)))
    if p.kind == "floats":
        if raw is None:
            return None
        if isinstance(raw, str):
            s = raw.strip()
            if s.lower() in p.keywords:
                return s.lower()
            if s.lower() == "none":
                return None
            if not (s.startswith("[") and s.endswith("]")):
                # a single number is allowed where the param also takes one
                if p.interval is not None or p.extra_values:
                    return _number(p, s, bad)
                raise bad("a list such as [0.5,1,2]" + (" or " + "/".join(p.keywords) if p.keywords else ""))
            items = [x for x in s[1:-1].split(",") if x.strip()]
            if not items:
                raise bad("a non-empty list of numbers")
            vals = [_float(x, bad) for x in items]
        elif isinstance(raw, (int, float)):
            return _number(p, raw, bad)
        else:
            vals = [float(x) for x in raw]
        for v in vals:
            if not math.isfinite(v) or v < 0:
                raise bad("a list of finite numbers ≥ 0")
        return tuple(vals)
    return _number(p, raw, bad)


def _float(raw: Any, bad: Callable[[str], UsageError]) -> float:
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise bad("a number") from None
    if math.isnan(v):
        raise bad("a number")
    return v


def _number(p: Param, raw: Any, bad: Callable[[str], UsageError]) -> float | int:
    v = _float(raw, bad)
    if p.kind == "int":
        if v != int(v):
            raise bad("a whole number")
        v = int(v)
    if v in p.extra_values:
        return v
    if p.interval is not None and v not in p.interval:
        extra = "".join(f" or {e}" for e in p.extra_values)
        raise bad(f"in {p.interval}{extra}")
    return v


def format_call(spec: LossSpec, params: Mapping[str, Any]) -> str:
    """The canonical SPEC text: the name plus the parameters that differ from defaults."""
    changed = []
    for p in spec.params:
        v = params.get(p.name, p.default)
        if v != p.default:
            changed.append(f"{p.name}={format_value(v)}")
    return spec.name + (":" + ",".join(changed) if changed else "")


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}" if v == v and abs(v) < 1e16 else repr(v)
    return str(v)


def split_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


__all__ = [
    "Interval", "Param", "Role", "Properties", "LossSpec", "LossCall", "register",
    "get", "all_losses", "losses_for_task", "default_losses", "parse_spec", "TASKS",
    "format_call", "format_value", "coerce",
]


def heredoc(command: str, data: str) -> str:
    """An example that runs as it stands after ``pip install``: its data in a shell here-document."""
    return f"{command} <<'EOF'\n{data}EOF"
