"""Columns → a loss's roles, and the task a file holds.

Roles bind, in this order, to: an explicit selector (-t, -p, --col ROLE=SEL), the
role's own conventional names from the registry (``anchor_*``, ``mask``, ``mu_*``),
then the generic names below. A selector is a column name, a comma list, or a glob
that selects several columns in file order; a Parquet list column is a vector.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from lossctl.errors import InputError, UsageError
from lossctl.registry import LossSpec, Role

# generic conventional names, tried after a role's own names
GENERIC_NAMES: dict[str, tuple[str, ...]] = {
    "target": ("y", "y_true", "target", "label", "labels", "truth", "actual", "class", "y_*", "target_*", "label_*", "onehot_*"),
    "pred": (
        "y_pred", "pred", "prediction", "predictions", "yhat", "y_hat", "score", "scores", "logit", "logits",
        "prob", "proba", "probability", "output", "p", "y_pred_*", "pred_*", "prob_*", "proba_*", "logit_*",
        "score_*", "p_*",
    ),
    "weight": ("weight", "weights", "sample_weight", "w"),
}
LOGIT_HINT = re.compile(r"^(logit|logits|score|scores|z)(_|$)", re.I)  # README: logit*, z_*, score*
_EXACT_GENERIC = {n.lower() for names in GENERIC_NAMES.values() for n in names if not n.endswith("*")}


@dataclass
class Selector:
    """Columns bound to one role."""

    text: str  # as given, or the column name(s) found
    columns: list[str]
    vector: bool
    list_column: bool = False
    how: str = "explicit"  # explicit | specific | generic
    src: int = 0  # which input file (0: DATA, 1: DATA2)

    @property
    def width_hint(self) -> int | None:
        return None if self.list_column else len(self.columns)

    @property
    def label(self) -> str:
        return self.text


def select(text: str, columns: Sequence[str], types: Mapping[str, Any], source: str, role: str) -> Selector:
    """Resolve a user selector (name, comma list or glob) against the file's columns."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError(f"empty column selector for {role}")
    chosen: list[str] = []
    stripped = {c.strip(): c for c in columns}
    for part in parts:
        if part in columns:
            chosen.append(part)
        elif part in stripped:
            chosen.append(stripped[part])
        elif any(ch in part for ch in "*?["):
            hits = [c for c in columns if fnmatch.fnmatchcase(c, part)]
            if not hits:
                raise InputError.at(
                    f"no column matches '{part}' (for {role}); columns: {', '.join(columns)}", source=source
                )
            chosen.extend(hits)
        else:
            raise InputError.at(
                f"no column '{part}' (for {role}); columns: {', '.join(columns)}", source=source
            )
    chosen = list(dict.fromkeys(chosen))
    is_list = len(chosen) == 1 and _is_list_type(types.get(chosen[0]))
    return Selector(text, chosen, vector=len(chosen) > 1 or is_list or any(ch in text for ch in "*?[,"), list_column=is_list)


def _is_list_type(t: Any) -> bool:
    if t is None:
        return False
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def find_by_names(names: Sequence[str], columns: Sequence[str], types: Mapping[str, Any], taken: set[str]) -> Selector | None:
    """The first conventional name (exact, case-insensitive, or prefix glob) the file has."""
    lower = {c.strip().lower(): c for c in columns}  # " yhat" in a header still reads as yhat
    for name in names:
        if name.endswith("*"):
            pat = name.lower()
            hits = [c for c in columns if fnmatch.fnmatchcase(c.lower(), pat) and c not in taken]
            if len(hits) >= 2 or (len(hits) == 1 and _is_list_type(types.get(hits[0]))):
                hits = _natural(hits)
                return Selector(name, hits, vector=True, list_column=len(hits) == 1, how="generic")
        elif name.lower() in lower and lower[name.lower()] not in taken:
            col = lower[name.lower()]
            return Selector(col, [col], vector=_is_list_type(types.get(col)), list_column=_is_list_type(types.get(col)), how="generic")
    return None


def _natural(cols: list[str]) -> list[str]:
    """File order, but p_2 before p_10 when the file lists them as strings sorted."""
    def key(c: str):
        m = re.search(r"(\d+)$", c)
        return (c[: m.start()] if m else c, int(m.group(1)) if m else -1)
    return sorted(cols, key=key) if all(re.search(r"\d+$", c) for c in cols) else cols


@dataclass
class Binding:
    """One loss's roles bound to selectors."""

    roles: dict[str, Selector] = field(default_factory=dict)

    def columns(self) -> list[str]:
        out: list[str] = []
        for sel in self.roles.values():
            out.extend(sel.columns)
        return out


Space = tuple[int, Sequence[str], Mapping[str, Any]]  # (source index, columns, types)


def bind_roles(
    spec: LossSpec,
    spaces_for,
    explicit: Mapping[str, Selector],
    source: str,
    *,
    required: bool = True,
) -> Binding | None:
    """Bind every role of ``spec``; None (or an error when ``required``) if one is missing.

    ``spaces_for(role)`` gives the column spaces to search for a role, in order.
    """
    out = Binding()
    taken = {(s.src, c) for s in explicit.values() for c in s.columns}
    for role in spec.roles:
        sel = explicit.get(role.name)
        spaces: list[Space] = spaces_for(role)
        if sel is None:
            sel = _find(role.names, spaces, taken)
            if sel is not None:
                sel.how = "specific"
        if sel is None and role.name in GENERIC_NAMES and not role.names_only:
            found = generic_matches(role.name, spaces, taken)
            if len(found) > 1:
                if not required:
                    return None
                raise InputError.at(
                    f"ambiguous {role.name} column for {spec.name}: "
                    + " or ".join(f"'{s.text}'" for s in found)
                    + f"; choose one with {'-t COL' if role.name == 'target' else '-p COL' if role.name == 'pred' else '--col ' + role.name + '=COL'}",
                    source=source,
                )
            sel = found[0] if found else None
        if sel is None:
            if not role.required:
                continue
            if not required:
                return None
            flag = {"target": "-t COL", "pred": "-p COL"}.get(role.name, f"--col {role.name}=COL")
            cols = ", ".join(c for _, cs, _ in spaces for c in cs)
            raise InputError.at(
                f"cannot find a column for the {role.name} of {spec.name}; bind it with {flag}. "
                f"Columns: {cols}",
                source=source,
            )
        if role.vector is False and sel.vector:
            if not required:
                return None
            raise InputError.at(
                f"the {role.name} of {spec.name} is one column, but '{sel.text}' selects {len(sel.columns)}",
                source=source,
            )
        if role.vector is True and not sel.vector and not required:
            return None
        out.roles[role.name] = sel
        taken.update((sel.src, c) for c in sel.columns)
    return out


def generic_matches(role: str, spaces: list[Space], taken: set) -> list[Selector]:
    """Every distinct column (or column group) the generic names of ``role`` match.

    Globs leave out columns that are themselves generic names (y_pred is not one of y_*).
    """
    out: list[Selector] = []
    seen: set = set()
    for src, columns, types in spaces:
        free = [c for c in columns if (src, c) not in taken]
        for name in GENERIC_NAMES[role]:
            if name.endswith("*"):
                pool = [c for c in free if c.lower() not in _EXACT_GENERIC and not _claimed_elsewhere(c, role, name)]
                sel = find_by_names([name], pool, types, set())
            else:
                sel = find_by_names([name], free, types, set())
            if sel is not None and (src, tuple(sel.columns)) not in seen:
                seen.add((src, tuple(sel.columns)))
                sel.src = src
                out.append(sel)
        if out:
            break  # the first space that has a match wins (DATA2 for predictions)
    return out


def _claimed_elsewhere(column: str, role: str, glob: str) -> bool:
    """Whether another role's generic glob with a longer fixed prefix matches ``column``:
    y_pred_0 is one of y_pred_* (a prediction), not one of y_* (a target)."""
    c = column.lower()
    for other, names in GENERIC_NAMES.items():
        if other == role:
            continue
        for n in names:
            if n.endswith("*") and len(n) > len(glob) and fnmatch.fnmatchcase(c, n.lower()):
                return True
    return False


def _find(names: Sequence[str], spaces: list[Space], taken: set) -> Selector | None:
    for src, columns, types in spaces:
        sel = find_by_names(names, columns, types, {c for s, c in taken if s == src})
        if sel is not None:
            sel.src = src
            return sel
    return None


def logits_hinted(sel: Selector | None) -> bool:
    """Columns named like logits (logit, logit_3, z_0, score) are read as logits."""
    return bool(sel and sel.columns and all(LOGIT_HINT.match(c) for c in sel.columns))


__all__ = ["Selector", "Binding", "select", "bind_roles", "find_by_names", "GENERIC_NAMES", "Role"]
