"""The options of an evaluation, declared and validated once.

``eval``, ``check`` and ``recommend`` on the command line, :func:`lossctl.evaluate` in the
library and the TOML config of ``check`` take the same options (a reduction, a NaN policy,
a task, a bootstrap level …). Their choices are the enumerations below, and
:class:`EvalOptions` checks every value; only the way a message names the option differs
(``--ci`` on the command line, ``ci`` in the library, ``FILE: ci`` in a config), which a
:class:`Spelling` says.

Imported by ``lossctl --help``: nothing here may import numpy, pandas or pyarrow.
"""
from __future__ import annotations

import dataclasses
import enum
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping, Optional

from lossctl.errors import UsageError

__all__ = [
    "Reduction", "NanPolicy", "Task", "Format", "InputFormat", "Engine", "EvalOptions", "Spelling",
    "CLI", "LIBRARY", "config_spelling", "TASKS", "REDUCTIONS", "NAN_POLICIES", "FORMATS", "REPORT_FORMATS",
    "INPUT_FORMATS", "ENGINES", "check_level",
]


class _Choice(str, enum.Enum):
    """An enumerated option: a str, so ``Reduction.SUM == "sum"``, and written as its value."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(cls._value2member_map_)  # (the members' values, in order; checked at every library call)


class Reduction(_Choice):
    MEAN = "mean"
    SUM = "sum"
    NONE = "none"  # one output row per input row (the command line's --reduction none; lossctl.per_row)


class NanPolicy(_Choice):
    ERROR = "error"
    DROP = "drop"


class Task(_Choice):
    REGRESSION = "regression"
    BINARY = "binary"
    MULTICLASS = "multiclass"
    SEGMENTATION = "segmentation"
    METRIC = "metric"
    DISTRIBUTION = "distribution"


class Format(_Choice):
    """What results are written as (``-f``)."""

    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"
    TSV = "tsv"
    MARKDOWN = "markdown"


class InputFormat(_Choice):
    """What a data file holds, when its name does not say (``--input-format``)."""

    CSV = "csv"
    TSV = "tsv"
    PARQUET = "parquet"
    FEATHER = "feather"
    JSONL = "jsonl"


class Engine(_Choice):
    LOCAL = "local"
    DASK = "dask"


TASKS = Task.values()
REDUCTIONS = Reduction.values()
NAN_POLICIES = NanPolicy.values()
FORMATS = Format.values()
# the formats of a report that is a document, not rows (check, recommend, list, explain)
REPORT_FORMATS = (Format.TABLE.value, Format.JSON.value, Format.MARKDOWN.value)
INPUT_FORMATS = InputFormat.values()
ENGINES = Engine.values()


# ------------------------------------------------------------------ how messages name an option


@dataclass(frozen=True)
class Spelling:
    """How a message names an option: ``--batch-rows`` (cli), ``batch_rows`` (library), or
    ``FILE: data.nan`` (config: ``path`` the file, ``keys`` each option's key as written)."""

    where: Literal["cli", "library", "config"]
    path: str = ""
    keys: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def name(self, option: str) -> str:
        if self.where == "cli":
            return "--" + option.replace("_", "-")
        if self.where == "config":
            return self.keys.get(option, option)
        return option

    def error(self, option: str, template: str, **fields: Any) -> UsageError:
        """The UsageError of ``template`` (``{name}`` the option as this spelling writes it)."""
        message = template.format(name=self.name(option), **fields)
        if self.where != "config":
            return UsageError(message)
        # a config's messages name the file, and the key where the message does not (no final stop: house style there)
        lead = "" if "{name}" in template else f"{self.name(option)}: "
        return UsageError(f"{self.path}: {lead}{message.rstrip('.')}")


CLI = Spelling("cli")
LIBRARY = Spelling("library")


def config_spelling(path: str, keys: Mapping[str, str]) -> Spelling:
    """A config file's spelling: ``keys`` maps an option (``nan``) to its key as written (``data.nan``)."""
    return Spelling("config", path, dict(keys))


# ------------------------------------------------------------------ the rules

# one message per option; {name} is the option as the Spelling writes it, {v} the value given,
# {valid} the choices
_MESSAGES = {
    "reduction": "unknown reduction {v!r}; valid: {valid}",
    "nan": "unknown {name} policy {v!r}; valid: {valid}",
    "task": "unknown task {v!r}; valid tasks: {valid}",
    "input_format": "unknown input format {v!r}; valid formats: {valid}",
    "engine": "unknown engine {v!r}; valid engines: {valid}",
    "ci": "{name} must be a level in (0, 1), such as 0.95. Got {v!r} instead.",
    "grad": "{name} must be True or False. Got {v!r} instead.",
    "logits": "{name} must be True, False or None. Got {v!r} instead.",
    "whole": "{name} must be at least {low}. Got {v!r} instead.",
}
# the library says a few of them its own way (its values are not typed by a parser)
_LIBRARY_MESSAGES = {
    "bootstrap": "{name} must be a whole number of replicates ≥ 1. Got {v!r} instead.",
    "batch_rows": "{name} must be a whole number ≥ 1 (or None: one batch). Got {v!r} instead.",
    "whole": "{name} must be a whole number ≥ {low}. Got {v!r} instead.",
}
_CHOICES: dict[str, type[_Choice]] = {
    "reduction": Reduction, "nan": NanPolicy, "task": Task, "input_format": InputFormat, "engine": Engine,
}
_WHOLE = {"bootstrap": 1, "seed": 0, "min_rows": 1, "batch_rows": 1, "row_offset": 0}  # option: its least value
_OPTIONAL = {"task", "input_format", "ci", "batch_rows", "logits"}  # None: not given (inferred, or not used)
# where the caller reduces (lossctl.evaluate: per-row values are lossctl.per_row's), reduction 'none' is refused
_REDUCES = "evaluate() reduces: use reduction='mean' or 'sum' (per-row values: lossctl.per_row)"


def _fail(option: str, kind: str, spelling: Spelling, **fields: Any) -> UsageError:
    template = None
    if spelling.where == "library":
        template = _LIBRARY_MESSAGES.get(option) or _LIBRARY_MESSAGES.get(kind)
    template = template or _MESSAGES.get(option) or _MESSAGES[kind]
    return spelling.error(option, template, **fields)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool) or type(v).__name__ in ("bool", "bool_")  # numpy's bool (np.bool, np.bool_)


def _is_level(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not _is_bool(v) and 0 < v < 1  # NaN is not


def _check(option: str, v: Any, spelling: Spelling, reduces: bool = False) -> Any:
    """``v`` as the option holds it (an enum member, an int, a float), or a UsageError."""
    if v is None and option in _OPTIONAL:
        return None
    if option in _CHOICES:
        kind = _CHOICES[option]
        if isinstance(v, str) and v in kind.values() and not (reduces and v == Reduction.NONE):
            return kind(str.__str__(v))
        if reduces and option == "reduction":
            raise spelling.error(option, _REDUCES)
        raise _fail(option, "choice", spelling, v=v, valid=", ".join(kind.values()))
    if option in _WHOLE:
        low = _WHOLE[option]
        if isinstance(v, numbers.Integral) and not _is_bool(v) and v >= low:
            return int(v)
        raise _fail(option, "whole", spelling, v=v, low=low)
    if option == "ci":
        if _is_level(v):
            return float(v)
        raise _fail(option, "ci", spelling, v=v)
    if option in ("grad", "logits"):
        if _is_bool(v):
            return bool(v)
        raise _fail(option, option, spelling, v=v)
    raise AssertionError(f"no rule for the option {option}")  # pragma: no cover - a field without a rule


def check_level(name: str, v: Any, example: float) -> Optional[float]:
    """A level in (0, 1) (``--coverage``, ``--ci``) or None; else a UsageError naming ``name``."""
    if v is None:
        return None
    if _is_level(v):
        return float(v)
    raise UsageError(f"{name} must be a level in (0, 1), such as {example}. Got {v!r} instead.")


# ------------------------------------------------------------------ the options


@dataclass(frozen=True)
class EvalOptions:
    """The options eval, check and recommend share (and the library's evaluate), each checked.

    Construct with keywords (``EvalOptions(ci=0.95)``: messages name the options as the
    library does), or with :meth:`validated` and a :class:`Spelling`. Enumerated options
    hold enum members (a str: ``opts.nan == "drop"``), numbers hold int or float.
    """

    reduction: Reduction = Reduction.MEAN
    nan: NanPolicy = NanPolicy.ERROR
    task: Optional[Task] = None
    grad: bool = False
    logits: Optional[bool] = None
    ci: Optional[float] = None
    bootstrap: int = 1000
    seed: int = 0
    min_rows: int = 1
    batch_rows: Optional[int] = None
    row_offset: int = 0
    input_format: Optional[InputFormat] = None
    engine: Engine = Engine.LOCAL

    spelling: ClassVar[Spelling] = LIBRARY

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check(f.name, getattr(self, f.name), self.spelling))

    @classmethod
    def validated(cls, spelling: Spelling = LIBRARY, *, reduces: bool = False, **values: Any) -> "EvalOptions":
        """The options ``values`` give (the others at their defaults), every one checked once;
        a bad one is a UsageError that names it as ``spelling`` does. Each value is checked in
        the order of the fields; an unknown keyword is a bug of the caller (TypeError).
        ``reduces``: the caller reduces (lossctl.evaluate), so reduction 'none' is refused."""
        unknown = set(values) - _ORDER.keys()
        if unknown:
            raise TypeError(f"EvalOptions has no option {', '.join(sorted(unknown))}")
        out = object.__new__(cls)
        state = dict(_DEFAULTS)  # (the library checks its options at every call: no dataclasses.fields here)
        for k, v in sorted(values.items(), key=lambda kv: _ORDER[kv[0]]):
            state[k] = _check(k, v, spelling, reduces)
        out.__dict__.update(state)
        return out

    def plain(self) -> dict[str, Any]:
        """The options as plain values (enum members as their strings): what a Request holds."""
        return {name: (v.value if isinstance(v := getattr(self, name), _Choice) else v) for name in _ORDER}


_ORDER = {f.name: i for i, f in enumerate(dataclasses.fields(EvalOptions))}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(EvalOptions)}
