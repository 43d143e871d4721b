"""Columns → a loss's roles, and the task a file holds.

Roles bind, in this order, to: an explicit selector (-t, -p, --col ROLE=SEL), the
role's own conventional names from the registry (``anchor_*``, ``mask``, ``mu_*``),
then the generic names below. A selector is a column name, a comma list, or a glob
that selects several columns in file order; a Parquet list column is a vector.
"""
from __future__ import annotations

import difflib
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
        "score_*", "p_*", "p[0-9]*",
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
                f"no column '{part}' (for {role}){did_you_mean(part, columns) or '.'} Columns: {', '.join(columns)}",
                source=source,
            )
    chosen = list(dict.fromkeys(chosen))
    is_list = len(chosen) == 1 and _is_list_type(types.get(chosen[0]))
    return Selector(text, chosen, vector=len(chosen) > 1 or is_list or any(ch in text for ch in "*?[,"), list_column=is_list)


def did_you_mean(name: str, columns: Sequence[str]) -> str:
    """": did you mean 'p_model'?" for a misspelt column name, or ""."""
    lower = {c.lower(): c for c in columns}
    close = difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.6)
    if not close:
        return ""
    return ": did you mean " + " or ".join(f"'{lower[c]}'" for c in close) + "?"


def _is_list_type(t: Any) -> bool:
    if t is None:
        return False
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def find_by_names(names: Sequence[str], columns: Sequence[str], types: Mapping[str, Any], taken: set[str],
                  *, single: bool = False) -> Selector | None:
    """The first conventional name (exact, case-insensitive, or prefix glob) the file has.

    A prefix glob needs two columns (or one list column); with ``single`` it also binds
    one plain column (``p_model`` is one of ``p_*``).
    """
    lower = {c.strip().lower(): c for c in columns}  # " yhat" in a header still reads as yhat
    for name in names:
        if name.endswith("*"):
            pat = name.lower()
            hits = [c for c in columns if fnmatch.fnmatchcase(c.lower(), pat) and c not in taken]
            if len(hits) >= 2 or (len(hits) == 1 and _is_list_type(types.get(hits[0]))):
                hits = _natural(hits)
                return Selector(name, hits, vector=True, list_column=len(hits) == 1, how="generic")
            if single and len(hits) == 1:
                return Selector(hits[0], hits, vector=False, how="generic")
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
        if not out and role == "pred":
            # weaker: one column under a prediction glob (p_model, prob_lr), when nothing else matched
            for name in GENERIC_NAMES[role]:
                if name.endswith("*"):
                    pool = [c for c in free if c.lower() not in _EXACT_GENERIC and not _claimed_elsewhere(c, role, name)]
                    sel = find_by_names([name], pool, types, set(), single=True)
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


@dataclass
class Verdict:
    """What a target's and a prediction's values say about the task (see task_from_values)."""

    task: str
    # two columns that sum to 1 (predict_proba's layout): binary, scored on the second
    positive_column: bool = False
    # K columns against one target column that cannot be one prediction set
    several_sets: bool = False
    row: int | None = None  # the first row (0-based) that does not sum to 1


SUM_TOL = 1e-6  # as the classification losses check a row of probabilities


def task_from_values(y: Any, p: Any, width: int, *, logits: bool, score_named: bool = False) -> Verdict:
    """The task the values of a target ``y`` and a prediction ``p`` (``width`` columns) hold.

    One target column against K ≥ 2 prediction columns: class probabilities (rows summing
    to 1) or, with ``logits``, class scores; two columns that sum to 1 against 0/1 labels
    are a binary classifier's predict_proba. K columns that cannot be one prediction set
    (real-valued targets, or 0/1 labels with rows that do not sum to 1) are reported as
    ``several_sets``: the caller says how to give them as separate prediction sets.
    Names (mask, p_*/q_*, embeddings) are the caller's business: values cannot tell them.
    """
    import numpy as np

    y = np.asarray(y, dtype=float)
    finite = y[np.isfinite(y)] if y.size else y
    if y.ndim == 2 and y.shape[1] > 1:
        if (width == y.shape[1] and finite.size and finite.min() >= 0 and finite.max() <= 1
                and np.allclose(np.nansum(y, axis=1), 1, atol=SUM_TOL)):
            return Verdict("multiclass")
        return Verdict("regression")
    vals = _distinct(finite.ravel())
    labels01 = bool(vals.size) and (set(vals.tolist()) <= {0.0, 1.0} or set(vals.tolist()) <= {-1.0, 1.0})
    if width >= 2:
        if not vals.size:
            return Verdict("multiclass")
        integral = bool(np.all(vals == np.round(vals)))
        if logits:
            return Verdict("multiclass") if integral and vals.min() >= 0 else Verdict("multiclass", several_sets=True)
        q = np.asarray(p, dtype=float).reshape(-1, width) if p is not None else np.empty((0, width))
        ok = np.isfinite(q).all(axis=1)
        rows = q[ok]
        off = np.flatnonzero(np.abs(rows.sum(axis=1) - 1) > SUM_TOL)
        sums = off.size == 0 and (rows.size == 0 or (rows.min() >= 0 and rows.max() <= 1))
        first = int(np.flatnonzero(ok)[off[0]]) if off.size else None
        if width == 2 and sums and (labels01 or (vals.min() >= 0 and vals.max() <= 1)):
            return Verdict("binary", positive_column=True)
        if not sums and (not integral or labels01 or vals.min() < 0 or vals.max() >= width):
            return Verdict("multiclass", several_sets=True, row=first)
        return Verdict("multiclass")
    if labels01:
        return Verdict("binary")
    # a classifier's score column (prob, logit, score…) against a few whole-number
    # labels is a binary task with bad labels, not a regression: say so at validation
    if score_named and vals.size and vals.size <= 3 and np.all(vals == np.round(vals)):
        return Verdict("binary")
    return Verdict("regression")


def binary_set(y: Any, p: Any, *, logits: bool) -> str:
    """Which part of the default binary set fits (CLI.md, Choosing losses).

    ``"signed"``: −1/+1 labels, only the margin losses take them; ``"all"``: logits, every
    loss; ``"proba"``: probabilities (values in [0, 1]), the probability losses (a margin
    loss would read them as margins); ``"margin"``: other scores, the margin losses.
    """
    import numpy as np

    if np.any(np.asarray(y) == -1):
        return "signed"
    if logits:
        return "all"
    v = np.asarray(p, dtype=float)
    v = v[np.isfinite(v)]
    return "proba" if not v.size or (v.min() >= 0 and v.max() <= 1) else "margin"


def _distinct(a: Any) -> Any:
    """np.unique of a 1-d array, without the import of numpy.ma that np.unique makes (10 ms)."""
    import numpy as np

    s = np.sort(a)
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if s.size else s


def logits_hinted(sel: Selector | None) -> bool:
    """Columns named like logits (logit, logit_3, z_0, score) are read as logits."""
    return bool(sel and sel.columns and all(LOGIT_HINT.match(c) for c in sel.columns))


__all__ = ["Selector", "Binding", "select", "bind_roles", "find_by_names", "GENERIC_NAMES", "Role"]
