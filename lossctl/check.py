"""``lossctl check``: a CI gate over one evaluation pass.

Assertions ("SPEC OP BOUND", from ``--assert`` or the ``[[check]]`` tables of a TOML
config) are evaluated on the candidate's predictions and, where a baseline is given,
on the baseline's in the same pass (the pipeline binds the baseline as an extra
prediction set). With ``--ci`` each verdict comes from a paired bootstrap interval of
value − bound: ``fail`` when it lies wholly on the wrong side, ``pass`` when wholly on
the right side, ``inconclusive`` when it straddles the bound.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from lossctl.errors import UsageError
from lossctl.options import EvalOptions

_DEFAULTS = EvalOptions()  # the defaults of the options a gate run shares with eval

OPS = ("<=", ">=", "<", ">")
VERDICTS = ("pass", "fail", "inconclusive")
GRAMMAR = (
    'an assertion is "SPEC OP BOUND": SPEC a loss (mse, huber:delta=1.5), OP one of <, <=, >, >=, '
    "BOUND a number, baseline, baseline * K or baseline + K (a baseline needs --baseline FILE or "
    '--baseline-pred COL); e.g. --assert "mse <= 0.25" --assert "mae <= baseline * 1.05"'
)
CONFIG_NAME = "lossctl.toml"

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_ASSERT = re.compile(r"^(?P<spec>[^<>]*?)\s*(?P<op><=|>=|<|>)\s*(?P<bound>[^<>]*?)\s*$")
_BASELINE = re.compile(rf"^baseline(?:\s*(?P<how>[*+])\s*(?P<k>{_NUMBER}))?$", re.I)


# ------------------------------------------------------------------ assertions


@dataclass(frozen=True)
class Assertion:
    """One check: ``spec op bound``, the bound a number or a function of the baseline's value."""

    text: str  # as written (or as a config table reads)
    spec: str
    op: str
    number: float | None = None  # an absolute bound; None: the bound is factor × baseline + offset
    factor: float = 1.0
    offset: float = 0.0
    by: tuple[str, ...] | None = None  # None: the --by of the run
    min_rows: int | None = None

    @property
    def vs_baseline(self) -> bool:
        return self.number is None

    @property
    def upper(self) -> bool:
        return self.op in ("<", "<=")

    def bound(self, baseline: Any) -> Any:
        return self.number if self.number is not None else self.factor * baseline + self.offset

    @property
    def bound_text(self) -> str:
        if self.number is not None:
            return _num(self.number)
        if self.factor != 1.0:
            return f"baseline * {_num(self.factor)}"
        if self.offset:
            return f"baseline + {_num(self.offset)}"
        return "baseline"


def _num(v: float) -> str:
    return f"{v:g}" if v == v else "nan"


def parse_assertion(text: str, *, by: tuple[str, ...] | None = None, min_rows: int | None = None) -> Assertion:
    """``"mse <= 0.25"``, ``"huber:delta=1.5 < baseline * 1.05"`` → an :class:`Assertion`.

    A malformed assertion, or an unknown loss or parameter in it, is a usage error
    that says what was wrong and gives the grammar.
    """
    from lossctl import registry

    def bad(what: str) -> UsageError:
        return UsageError(f"--assert {text!r}: {what}; {GRAMMAR}")

    m = _ASSERT.match(text.strip())
    if m is None:
        n = len(re.findall(r"<=|>=|<|>", text))
        raise bad("no comparison operator" if n == 0 else f"{n} comparison operators where one is expected")
    spec, op, bound = m.group("spec").strip(), m.group("op"), m.group("bound").strip()
    if spec.endswith(("=", "!")) or bound.startswith("="):
        written = (spec[-1] if spec.endswith(("=", "!")) else "") + op + ("=" if bound.startswith("=") else "")
        raise bad(f"'{written}' is not an operator")
    if not spec:
        raise bad(f"no loss before '{op}'")
    if not bound:
        raise bad(f"no bound after '{op}'")
    try:
        registry.parse_spec(spec)
    except UsageError as e:
        raise bad(str(e).rstrip(".")) from None
    if re.fullmatch(_NUMBER, bound):
        return Assertion(text.strip(), spec, op, number=float(bound), by=by, min_rows=min_rows)
    b = _BASELINE.match(bound)
    if b is None:
        raise bad(f"cannot read the bound '{bound}'")
    k = float(b.group("k")) if b.group("k") else None
    if b.group("how") == "*":
        if not (k is not None and k > 0):
            raise bad(f"the factor of baseline * K must be > 0. Got {b.group('k')} instead")
        return Assertion(text.strip(), spec, op, factor=k, by=by, min_rows=min_rows)
    return Assertion(text.strip(), spec, op, offset=k or 0.0, by=by, min_rows=min_rows)


# ------------------------------------------------------------------ configuration

_DATA_KEYS: dict[str, tuple[type, ...]] = {
    "path": (str,), "data2": (str,), "target": (str,), "pred": (str,), "baseline": (str,), "baseline_pred": (str,),
    "key": (str,), "strict_key": (bool,), "weight": (str,), "task": (str,), "nan": (str,), "input_format": (str,), "col": (dict,),
}
_TOP_KEYS: dict[str, tuple[type, ...]] = {
    "data": (dict,), "check": (list,), "ci": (float, int), "bootstrap": (int,), "seed": (int,), "strict": (bool,),
    "min_rows": (int,), "by": (str, list), "logits": (bool,),
}
_CHECK_KEYS: dict[str, tuple[type, ...]] = {
    "loss": (str,), "max": (float, int), "min": (float, int), "max_vs_baseline": (float, int, str),
    "assert": (str,), "by": (str, list), "min_rows": (int,),
}
_PATH_KEYS = ("path", "data2", "baseline")
# the config's keys that are evaluation options (lossctl.options.EvalOptions): option → key
_OPTION_KEYS = {"ci": "ci", "bootstrap": "bootstrap", "seed": "seed", "min_rows": "min_rows", "logits": "logits",
                "task": "data.task", "nan": "data.nan", "input_format": "data.input_format"}


@dataclass
class Config:
    """What a TOML config says: data options, run options and checks."""

    path: str
    data: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    checks: list[Assertion] = field(default_factory=list)


def find_config(explicit: str | None, cwd: str | None = None) -> Config | None:
    """``--config FILE``, else ``lossctl.toml``, else ``[tool.lossctl]`` of ``pyproject.toml`` in ``cwd``."""
    cwd = cwd or os.getcwd()
    if explicit is not None:
        return load_config(explicit)
    local = os.path.join(cwd, CONFIG_NAME)
    if os.path.isfile(local):
        return load_config(local)
    pyproject = os.path.join(cwd, "pyproject.toml")
    if os.path.isfile(pyproject):
        doc = _read_toml(pyproject)
        table = doc.get("tool", {}).get("lossctl") if isinstance(doc.get("tool"), dict) else None
        if table is not None:
            return _config_from(table, pyproject, "tool.lossctl.")
    return None


def load_config(path: str) -> Config:
    return _config_from(_read_toml(path), path, "")


def _read_toml(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise UsageError(f"cannot read the config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None


def _config_from(table: Any, path: str, prefix: str) -> Config:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: {prefix.rstrip('.') or 'the file'} must be a table")
    _check_keys(table, _TOP_KEYS, path, prefix)
    cfg = Config(path=path)
    base = os.path.dirname(os.path.abspath(path))
    data = dict(table.get("data", {}))
    _check_keys(data, _DATA_KEYS, path, prefix + "data.")
    for k in _PATH_KEYS:  # relative to the config file, wherever lossctl runs
        if k in data and data[k] != "-" and not os.path.isabs(data[k]):
            data[k] = os.path.relpath(os.path.join(base, data[k]))
    for role, sel in data.get("col", {}).items():
        if not isinstance(sel, str):
            raise UsageError(f"{path}: {prefix}data.col.{role} must be a string (columns). Got {sel!r} instead")
    _check_options(table, data, path, prefix)
    cfg.data = data
    cfg.options = {k: v for k, v in table.items() if k not in ("data", "check")}
    if "by" in cfg.options:
        cfg.options["by"] = _by_list(cfg.options["by"], path, prefix + "by")
    for i, chk in enumerate(table.get("check", [])):
        where = f"{prefix}check[{i + 1}]"
        if not isinstance(chk, dict):
            raise UsageError(f"{path}: {where} must be a table ([[check]])")
        _check_keys(chk, _CHECK_KEYS, path, where + ".")
        cfg.checks += _checks_of(chk, path, where)
    return cfg


def _check_keys(table: Mapping[str, Any], allowed: Mapping[str, tuple[type, ...]], path: str, prefix: str) -> None:
    for k, v in table.items():
        if k not in allowed:
            raise UsageError(f"{path}: unknown key '{prefix}{k}'; valid keys: {', '.join(allowed)}")
        types = allowed[k]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            want = " or ".join({str: "a string", int: "an integer", float: "a number", bool: "true or false",
                                list: "a list", dict: "a table"}[t] for t in types if not (t is int and float in types))
            raise UsageError(f"{path}: {prefix}{k} must be {want}. Got {v!r} instead")


def _check_options(table: Mapping[str, Any], data: Mapping[str, Any], path: str, prefix: str) -> None:
    """The evaluation options the config gives, checked as every entry point checks them; a bad
    value is an error naming the file and the key."""
    from lossctl.options import config_spelling

    values = {}
    for opt, key in _OPTION_KEYS.items():
        table_name, _, name = key.rpartition(".")
        src = data if table_name == "data" else table
        if name in src:
            values[opt] = src[name]
    EvalOptions.validated(config_spelling(path, {opt: prefix + key for opt, key in _OPTION_KEYS.items()}), **values)


def _by_list(v: Any, path: str, where: str) -> tuple[str, ...]:
    items = [v] if isinstance(v, str) else v
    if not items or not all(isinstance(x, str) and x for x in items):
        raise UsageError(f"{path}: {where} must be a column name or a list of them. Got {v!r} instead")
    return tuple(items)


def _columns(by: Sequence[str]) -> tuple[str, ...]:
    """--by a,b (or by = ["a", "b"]) is the cross of a and b."""
    return tuple(dict.fromkeys(c.strip() for b in by for c in b.split(",") if c.strip()))


def _checks_of(chk: Mapping[str, Any], path: str, where: str) -> list[Assertion]:
    by = _columns(_by_list(chk["by"], path, where + ".by")) if "by" in chk else None
    min_rows = chk.get("min_rows")
    if min_rows is not None:
        from lossctl.options import config_spelling

        EvalOptions.validated(config_spelling(path, {"min_rows": where + ".min_rows"}), min_rows=min_rows)
    bounds = [k for k in chk if k in ("max", "min", "max_vs_baseline")]  # in the order written
    if "assert" in chk:  # the --assert grammar: "SPEC OP BOUND"
        if "loss" in chk or bounds:
            given = ", ".join(k for k in ("loss", *bounds) if k in chk)
            raise UsageError(f"{path}: {where} gives both assert and {given}: a check is one or the other")
        try:
            return [parse_assertion(chk["assert"], by=by, min_rows=min_rows)]
        except UsageError as e:
            raise UsageError(f"{path}: {where}.assert: {e}") from None
    if "loss" not in chk:
        raise UsageError(f"{path}: {where} has no 'loss' (or 'assert')")
    if not bounds:
        raise UsageError(f"{path}: {where} ({chk['loss']}) has no bound: give max, min or max_vs_baseline")
    out = []
    for k in bounds:
        if k == "max_vs_baseline":
            text = f"{chk['loss']} <= baseline * {_num(_factor(chk[k], path, where + '.' + k))}"
        else:
            text = f"{chk['loss']} {'<=' if k == 'max' else '>='} {_num(float(chk[k]))}"
        try:
            out.append(parse_assertion(text, by=by, min_rows=min_rows))
        except UsageError as e:
            raise UsageError(f"{path}: {where}: {e}") from None
    return out


def _factor(v: Any, path: str, where: str) -> float:
    """1.05, or "5%" (→ 1.05), "-10%" (→ 0.9)."""
    if isinstance(v, str):
        m = re.fullmatch(rf"\s*({_NUMBER})\s*%\s*", v)
        if m is None:
            raise UsageError(f'{path}: {where} must be a factor (1.05) or a percentage ("5%"). Got {v!r} instead')
        v = 1 + float(m.group(1)) / 100
    if not v > 0:
        raise UsageError(f"{path}: {where} must make a factor > 0. Got {v!r} instead")
    return float(v)


# ------------------------------------------------------------------ settings


@dataclass
class Settings:
    """Everything one gate run needs: the config's values with the flags laid over them."""

    data: str | None = None
    data2: str | None = None
    target: str | None = None
    pred: str | None = None
    cols: dict[str, str] = field(default_factory=dict)
    weight: str | None = None
    key: str | None = None
    strict_key: bool = False
    task: str | None = None
    logits: bool | None = None
    nan: str = _DEFAULTS.nan.value
    baseline: str | None = None
    baseline_pred: str | None = None
    by: tuple[str, ...] = ()
    min_rows: int = _DEFAULTS.min_rows
    min_rows_flag: bool = False  # --min-rows given: it overrides every check's min_rows
    ci: float | None = None
    bootstrap: int = _DEFAULTS.bootstrap
    seed: int = _DEFAULTS.seed
    strict: bool = False
    input_format: str | None = None
    batch_rows: int | None = None
    assertions: list[Assertion] = field(default_factory=list)
    config: str | None = None  # the file the settings came from, if any


def settings(config: Config | None, flags: Mapping[str, Any], assertions: Sequence[str]) -> Settings:
    """Lay the flags that were given (not None) over the config's values."""
    s = Settings()
    if config is not None:
        s.config = config.path
        d = config.data
        s.data, s.data2, s.target, s.pred = d.get("path"), d.get("data2"), d.get("target"), d.get("pred")
        s.cols = dict(d.get("col", {}))
        for k in ("weight", "key", "task", "baseline", "baseline_pred", "input_format"):
            setattr(s, k, d.get(k))
        s.nan = d.get("nan", s.nan)
        s.strict_key = d.get("strict_key", s.strict_key)
        o = config.options
        for k in ("ci", "bootstrap", "seed", "strict", "min_rows", "logits"):
            if k in o:
                setattr(s, k, float(o[k]) if k == "ci" else o[k])
        s.by = _columns(o.get("by", ()))
        s.assertions = list(config.checks)
    for k, v in flags.items():
        if v is None or (k in ("by", "cols") and not v):
            continue
        setattr(s, k, _columns(v) if k == "by" else (dict(v) if k == "cols" else v))
    s.min_rows_flag = flags.get("min_rows") is not None
    if assertions:  # --assert replaces the config's checks
        s.assertions = [parse_assertion(a) for a in assertions]
    return s


# ------------------------------------------------------------------ results


@dataclass
class CheckResult:
    """One assertion on the whole data or on one slice, with its verdict."""

    check: str
    loss: str
    spec: str
    params: dict[str, Any]
    op: str
    bound_text: str
    bound: float
    value: float
    verdict: str
    rows: int
    ci: tuple[float, float] | None = None
    baseline: float | None = None
    delta: float | None = None
    delta_ci: tuple[float, float] | None = None
    excess_ci: tuple[float, float] | None = None  # of value − bound: what the verdict reads with --ci
    mdd: float | None = None
    vs_baseline: bool = False
    undefined: str | None = None  # in a slice where the loss is undefined: why
    by: str | None = None
    group: Any = None
    worst: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def margin(self) -> float:
        """Room to the bound on the passing side (negative: beyond it)."""
        m = self.bound - self.value if self.op in ("<", "<=") else self.value - self.bound
        return m if m == m else -math.inf

    @property
    def slice_label(self) -> str:
        return slice_label(self.by, self.group)

    @property
    def name(self) -> str:
        return self.check + (f" [{self.slice_label}]" if self.by is not None else "")

    def failed(self, strict: bool) -> bool:
        return self.verdict == "fail" or (strict and self.verdict == "inconclusive")

    def to_json(self) -> dict[str, Any]:
        from lossctl.results import _jsonable

        def num(v: Any) -> Any:
            return None if v is None or not math.isfinite(v) else float(v)

        def pair(p: Any) -> Any:
            return None if p is None else [num(x) for x in p]

        return {
            "check": self.check, "loss": self.loss, "spec": self.spec,
            "params": {k: _jsonable(v) for k, v in self.params.items()},
            "op": self.op, "bound": num(self.bound), "bound_text": self.bound_text,
            "value": num(self.value), "ci": pair(self.ci),
            "baseline": num(self.baseline), "delta": num(self.delta), "delta_ci": pair(self.delta_ci),
            "mdd": num(self.mdd), "excess_ci": pair(self.excess_ci), "margin": num(self.margin),
            "verdict": self.verdict, "by": self.by, "group": _jsonable(self.group), "rows": self.rows,
            **({"worst": True} if self.worst else {}), **({"notes": self.notes} if self.notes else {}),
        }


def slice_label(by: str | None, group: Any) -> str:
    if by is None:
        return ""
    cols = by.split(",")
    vals = group if isinstance(group, list) and len(cols) > 1 else [group]
    return ",".join(f"{c}={'null' if v is None else v}" for c, v in zip(cols, vals))


@dataclass
class SliceSummary:
    """The per-slice part of one check: how many slices were judged, the worst, the skipped."""

    check: str
    by: str
    tested: int
    worst: Any
    worst_margin: float
    min_rows: int
    skipped: list[tuple[Any, int, str]] = field(default_factory=list)  # (group, rows, why)

    def text(self) -> str:
        out = f"{self.check} by {self.by}: {self.tested} slice{'s' * (self.tested != 1)} tested"
        if self.tested:
            out += f", worst {slice_label(self.by, self.worst)} (margin {_fmt(self.worst_margin)})"
        out += "; each slice is judged on its own, with no multiple-testing correction"
        small = [(g, r) for g, r, why in self.skipped if why == "too small"]
        if small:
            shown = ", ".join(f"{slice_label(self.by, g)} ({r} rows)" for g, r in small[:10])
            more = f" and {len(small) - 10} more" if len(small) > 10 else ""
            out += f"; too small to judge (< {self.min_rows} rows): {shown}{more}"
        undefined = [(g, why) for g, _, why in self.skipped if why != "too small"]
        if undefined:
            shown = ", ".join(slice_label(self.by, g) for g, _ in undefined[:10])
            more = f" and {len(undefined) - 10} more" if len(undefined) > 10 else ""
            out += f"; not judged, the loss is undefined there ({undefined[0][1]}): {shown}{more}"
        return out


def _fmt(v: float) -> str:
    from lossctl.render import fmt_num

    return fmt_num(v)


@dataclass
class GateReport:
    task: str
    rows: int
    checks: list[CheckResult]
    strict: bool = False
    ci: float | None = None
    slices: list[SliceSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    has_baseline: bool = False
    elapsed: float = 0.0

    @property
    def passed(self) -> bool:
        return not any(c.failed(self.strict) for c in self.checks)

    def counts(self) -> dict[str, int]:
        out = {"checks": len(self.checks), **{v: 0 for v in VERDICTS}}
        for c in self.checks:
            out[c.verdict] += 1
        out["failed"] = sum(c.failed(self.strict) for c in self.checks)
        return out

    def to_json(self) -> dict[str, Any]:
        from lossctl import __version__
        from lossctl.results import SCHEMA_VERSION, _jsonable

        return {
            "schema_version": SCHEMA_VERSION,
            "lossctl_version": __version__,
            "passed": self.passed,
            "strict": self.strict,
            "ci": self.ci,
            "task": self.task,
            "rows": self.rows,
            "sources": self.sources,
            "summary": self.counts(),
            "checks": [c.to_json() for c in self.checks],
            "slices": [{"check": s.check, "by": s.by, "tested": s.tested, "worst": _jsonable(s.worst),
                        "multiple_testing_correction": None, "min_rows": s.min_rows} for s in self.slices],
            "skipped_slices": [{"check": s.check, "by": s.by, "group": _jsonable(g), "rows": r, "min_rows": s.min_rows,
                                "reason": why} for s in self.slices for g, r, why in s.skipped],
            "warnings": list(self.warnings),
        }


def verdict(op: str, value: float, bound: float, excess_ci: tuple[float, float] | None) -> str:
    """pass / fail / inconclusive for ``value op bound``; with an interval of value − bound,
    fail only when all of it lies on the wrong side, pass only when all of it lies on the right one."""
    if not (math.isfinite(value) and math.isfinite(bound)):
        return "fail"
    lo, hi = (value - bound,) * 2 if excess_ci is None or not all(map(math.isfinite, excess_ci)) else excess_ci
    if op == "<=":
        ok, wrong = hi <= 0, lo > 0
    elif op == "<":
        ok, wrong = hi < 0, lo >= 0
    elif op == ">=":
        ok, wrong = lo >= 0, hi < 0
    else:
        ok, wrong = lo > 0, hi <= 0
    return "pass" if ok else "fail" if wrong else "inconclusive"


# ------------------------------------------------------------------ the gate


def build_request(s: Settings):
    """The request of a gate run: the asserted losses, the candidate and the baseline."""
    from lossctl import registry
    from lossctl.plan import Request

    if not s.assertions:
        raise UsageError("nothing to check: give --assert \"SPEC OP BOUND\" or [[check]] tables in a config "
                         f"(--config FILE, {CONFIG_NAME} or [tool.lossctl] in pyproject.toml); {GRAMMAR}")
    if s.data is None:
        raise UsageError("no data: give DATA, or path in the [data] table of the config")
    if any(a.vs_baseline for a in s.assertions) and not (s.baseline or s.baseline_pred):
        first = next(a for a in s.assertions if a.vs_baseline)
        raise UsageError(f"'{first.text}' compares with a baseline: give --baseline FILE (its predictions for the "
                         "same rows) or --baseline-pred COL (a column of DATA)")
    overrides = {"logits": True} if s.logits else {}
    texts = list(dict.fromkeys(registry.parse_spec(a.spec, overrides).text for a in s.assertions))
    by = list(dict.fromkeys(c for a in s.assertions for c in (a.by if a.by is not None else s.by)))
    return Request(
        data=s.data, data2=s.data2, key=s.key, strict_key=s.strict_key, target=s.target, preds=[s.pred] if s.pred else [], cols=dict(s.cols),
        weight=s.weight, task=s.task, losses=texts, logits=s.logits, nan=s.nan, by=by, ci=s.ci,
        bootstrap=s.bootstrap, seed=s.seed, input_format=s.input_format, batch_rows=s.batch_rows,
        baseline=s.baseline, baseline_pred=s.baseline_pred,
    ), texts


def run(s: Settings, progress: Callable[[Any], Any] | None = None, engine: Any = None) -> GateReport:
    """Evaluate every assertion of ``s`` in one pass over the data (on ``engine``, such as
    lossctl.engines.dask.Engine, where one is given)."""
    from lossctl.driver import accumulate
    from lossctl.planner import prepare

    req, texts = build_request(s)
    if engine is not None:
        engine.check_request(req)
    plan, inputs = prepare(req)
    with inputs:
        bar = progress(inputs) if progress is not None and engine is None else None
        try:
            acc = engine.accumulate(plan, inputs) if engine is not None else accumulate(plan, inputs, 0, bar)
        finally:
            if bar is not None:
                bar.close()
        return judge(plan, acc, s, texts)


def judge(plan: Any, acc: Any, s: Settings, texts: list[str]) -> GateReport:
    """Verdicts from the accumulated states of a gate run (overall and per slice)."""
    from lossctl import registry
    from lossctl.plan import BASELINE, options
    from lossctl.assemble import run_notes
    from lossctl.slice_results import _sort_key

    opts = options(plan)
    npred = len(plan.pred_labels)
    has_base = plan.pred_labels[0] == BASELINE and (s.baseline or s.baseline_pred) is not None
    overrides = {"logits": True} if s.logits else {}
    index = {t: i for i, t in enumerate(texts)}
    # each assertion → (baseline job, candidate job); loss i has jobs i*npred .. (baseline first)
    pairs = []
    for a in s.assertions:
        li = index[registry.parse_spec(a.spec, overrides).text]
        pairs.append((li * npred if has_base else None, li * npred + (1 if has_base else 0)))
    warnings = list(plan.notes) + run_notes(plan, acc.dropped, acc.join, list(plan.source_names))

    boots: dict[int, Any] = {}  # one resampling per set of states, shared by its assertions
    overall = _judge_set(plan, s, s.assertions, pairs, acc.states, acc.rows, None, None, opts.seed, warnings,
                         boots=boots)
    checks: list[CheckResult] = []
    slices: list[SliceSummary] = []
    by_all = [sel.text for sel in plan.by]
    ordered = sorted(acc.group_states, key=_sort_key)
    seeds = {k: opts.seed + gi + 1 for gi, k in enumerate(ordered)}  # as eval --by --ci seeds its slices
    projections: dict[tuple[str, ...], dict[tuple, tuple[list[Any], int, int]]] = {}
    for a, pair, res in zip(s.assertions, pairs, overall):
        checks.append(res)
        by = tuple(a.by if a.by is not None else s.by)
        if not by:
            continue
        min_rows = a.min_rows if a.min_rows is not None and not s.min_rows_flag else s.min_rows
        if by not in projections:
            projections[by] = _project(plan, acc, ordered, seeds, by_all, by, opts)
        label = ",".join(by)
        summary = SliceSummary(a.text, label, 0, None, math.inf, min_rows)
        here = []
        for key, (states, rows, seed) in projections[by].items():
            value = key[0] if len(key) == 1 else list(key)
            if rows < min_rows:
                summary.skipped.append((value, rows, "too small"))
                continue
            (r,) = _judge_set(plan, s, [a], [pair], states, rows, label, value, seed, warnings, in_slice=True,
                              boots=boots)
            if r.undefined:  # one class in a slice for mined triplets: nothing to judge there
                summary.skipped.append((value, rows, r.undefined))
                continue
            here.append(r)
        summary.tested = len(here)
        if here:
            worst = min(here, key=lambda r: r.margin)
            worst.worst = True
            summary.worst, summary.worst_margin = worst.group, worst.margin
        checks.extend(here)
        slices.append(summary)
    return GateReport(
        task=plan.task, rows=acc.rows, checks=checks, strict=s.strict, ci=s.ci, slices=slices,
        warnings=list(dict.fromkeys(warnings)), sources=list(plan.source_names), has_baseline=has_base,
    )


def _project(plan, acc, ordered, seeds, by_all, by, opts) -> dict[tuple, tuple[list[Any], int, int]]:
    """The slices of ``by`` (a subset of the run's --by columns): the run's own slices when
    they are the same columns, else its finer slices merged."""
    from lossctl.driver import new_state
    from lossctl.slice_results import _sort_key

    if list(by) == by_all:
        return {k: (acc.group_states[k], acc.group_rows[k], seeds[k]) for k in ordered}
    pos = [by_all.index(c) for c in by]
    merged: dict[tuple, tuple[list[Any], int]] = {}
    for k in ordered:
        sub = tuple(k[i] for i in pos)
        if sub not in merged:
            merged[sub] = ([new_state(j, plan.ctx, opts) for j in plan.jobs], 0)
        states, rows = merged[sub]
        for mine, theirs in zip(states, acc.group_states[k]):
            try:
                mine.merge(theirs)
            except (NotImplementedError, AssertionError):
                raise UsageError(
                    f"checks slice by different columns ({', '.join(by)} and {', '.join(by_all)}), and "
                    f"{type(mine).__name__} cannot be merged across slices: give every check the same 'by'"
                ) from None
        merged[sub] = (states, rows + acc.group_rows[k])
    keys = sorted(merged, key=_sort_key)
    return {k: (merged[k][0], merged[k][1], opts.seed + gi + 1) for gi, k in enumerate(keys)}


def _value(state: Any, notes: list[str], in_slice: bool) -> tuple[float, str | None]:
    """The state's value, and why it is undefined in a slice (None: it is defined)."""
    from lossctl.errors import InputError

    try:
        r = state.result()
    except InputError as e:
        if not in_slice:
            raise
        return math.nan, str(e).split(": ")[-1]
    notes.extend(r.get("notes", []))
    return float(r.get("value", math.nan)), None


def _judge_set(plan, s: Settings, asserts: Sequence[Assertion], pairs, states, rows: int, by: str | None,
               group: Any, seed: int, warnings: list[str], in_slice: bool = False,
               boots: dict[int, Any] | None = None) -> list[CheckResult]:
    """Verdicts of ``asserts`` on one set of states (the whole data, or one slice).

    With --ci every interval of the set (values, deltas, value − bound) reads one
    resampling of its units (``engine.Resampling``, as eval's results and comparisons do),
    kept in ``boots`` for the set's other assertions."""
    import numpy as np

    from lossctl.engine import Resampling, percentile_interval

    out = []
    boot = None
    if s.ci is not None:
        boot = (boots or {}).get(id(states))
        if boot is None:
            boot = Resampling([_boot(st) for st in states], s.bootstrap, seed)
            if boots is not None:
                boots[id(states)] = boot
    want: list[tuple[CheckResult, list[Callable[[], Any]]]] = []
    for a, (bi, ci_) in zip(asserts, pairs):
        job = plan.jobs[ci_]
        notes: list[str] = []
        value, undefined = _value(states[ci_], notes, in_slice)
        base, base_undefined = _value(states[bi], [], in_slice) if bi is not None else (None, None)
        bound = a.bound(base) if a.vs_baseline else a.number
        r = CheckResult(
            check=a.text, loss=job.call.spec.name, spec=job.call.text, params=dict(job.call.params), op=a.op,
            bound_text=a.bound_text, bound=float(bound), value=value, verdict="", rows=rows,
            baseline=base, delta=None if base is None else value - base, vs_baseline=a.vs_baseline, by=by,
            group=group, notes=notes, undefined=undefined or base_undefined,
        )
        if boot is not None and not r.undefined:
            idx = [ci_] + ([bi] if bi is not None else [])
            if all(boot.mats[i] is not None for i in idx):
                fc = _replicates(boot, ci_, states[ci_].boot_fn())
                slots = [fc]
                if bi is not None:
                    fb = _replicates(boot, bi, states[bi].boot_fn())
                    slots += [lambda fc=fc, fb=fb: fc() - fb(), lambda fc=fc, fb=fb, a=a: fc() - a.bound(fb())]
                want.append((r, slots))
            else:
                notes.append("no bootstrap interval (this loss is not a function of row sums): judged on its value")
        out.append(r)
    for r, slots in want:
        if _units(boot) < 2:
            r.notes.append("no bootstrap interval: it needs at least 2 rows")
            continue
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # replicates of infinite sums: dropped
            vals = [np.asarray(f(), dtype=float) for f in slots]
        r.ci = percentile_interval(vals[0], s.ci)
        if len(vals) > 1:
            r.delta_ci = percentile_interval(vals[1], s.ci)
            r.excess_ci = percentile_interval(vals[2], s.ci)
            r.mdd = (r.delta_ci[1] - r.delta_ci[0]) / 2
        else:
            r.excess_ci = (r.ci[0] - r.bound, r.ci[1] - r.bound)
    for r in out:
        r.verdict = verdict(r.op, r.value, r.bound, r.excess_ci)
        if r.undefined:
            continue
        if not math.isfinite(r.value):
            r.notes.append(f"the value is {_num(r.value)}: a check on it fails")
        for n in r.notes:
            warnings.append(f"{r.name}: {n}" if in_slice else n)
    return out


def _replicates(boot: Any, i: int, fn: Callable[[Any], Any]) -> Callable[[], Any]:
    """Job i's bootstrap replicates of its value (computed when called, from the shared draw)."""
    return lambda: fn(boot.totals(i))


def _units(boot: Any) -> int:
    """How many bootstrap units the set has (rows, or hashed row blocks)."""
    return next((m.shape[0] for m in boot.mats if m is not None), 0)


def _boot(state: Any) -> Any:
    boot = getattr(state, "boot", None)
    if boot is None or not boot.count:
        return None
    return boot.matrix()[0]
