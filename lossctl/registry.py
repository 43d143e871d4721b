"""The loss registry: every loss is declared once, with its parameters and properties.

The CLI, parameter validation, ``list``, ``explain`` and ``recommend`` all read this
registry; nothing else in lossctl lists loss names.
"""
from __future__ import annotations

import difflib
import math
import re
from typing import Any, Callable, Mapping

from lossctl.errors import UsageError

# the declared data of every loss; re-exported here, where the rest of lossctl reads them
from lossctl.spec import (  # noqa: E402,F401
    BINARY, CATEGORICAL, CLASS, DISTRIBUTION, NONNEGATIVE, POSITIVE, PROBABILITY, REAL, SIGNED, TASKS,
    Domain, DomainKind, Interval, LossCall, LossSpec, Minimiser, OutputKind, Param, ParamKind, Pass, PassKind,
    Properties, Role, check_domain, heredoc,
)

_REGISTRY: dict[str, LossSpec] = {}
_ALIASES: dict[str, str] = {}


def _add(spec: LossSpec, names: dict[str, LossSpec], aliases: dict[str, str]) -> None:
    for name in (spec.name, *spec.aliases):
        if name in names or name in aliases:
            raise ValueError(f"loss name {name!r} registered twice")
    names[spec.name] = spec
    for alias in spec.aliases:
        aliases[alias] = spec.name


def build(specs: tuple[LossSpec, ...] | list[LossSpec]) -> tuple[dict[str, LossSpec], dict[str, str]]:
    """The name and alias tables of ``specs``, in their order; a name or alias declared
    twice is refused (ValueError)."""
    names: dict[str, LossSpec] = {}
    aliases: dict[str, str] = {}
    for spec in specs:
        _add(spec, names, aliases)
    return names, aliases


def _load() -> None:
    """Fill the tables from :data:`lossctl.losses.ALL`, once (lazily: ``lossctl --help``
    imports no loss module, hence no numpy)."""
    if _REGISTRY:
        return
    from lossctl.losses import ALL

    names, aliases = build(ALL)
    _ALIASES.update(aliases)
    _REGISTRY.update(names)


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
    "Interval", "Param", "Role", "Properties", "LossSpec", "LossCall", "Domain", "Pass", "build",
    "get", "all_losses", "losses_for_task", "default_losses", "parse_spec", "TASKS",
    "format_call", "format_value", "coerce",
]

