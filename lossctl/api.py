"""The library entry point: the same engine as the CLI, on numpy arrays."""
from __future__ import annotations

import functools
import re
from typing import Any, Iterator, Sequence

import numpy as np

from lossctl import registry
from lossctl.engine import Batch, Context, State, bootstrap_notes
from lossctl.errors import InputError, UsageError
from lossctl.binding import Binding
from lossctl.driver import drive
from lossctl.outcome import _add_ci, result_for
from lossctl.plan import Job, Plan, Request, options
from lossctl.results import LossResult

# how the positional arguments are named in messages
_POSITIONAL = {"target": "y", "pred": "yhat"}


def _first_not_number(name: str, a: np.ndarray) -> InputError:
    flat = a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
    for i, row in enumerate(flat):
        for v in row:
            if v is None:
                continue
            try:
                float(v)
            except (TypeError, ValueError):
                return InputError.at("not a number", column=name, row=i + 1,
                                     value=v.item() if isinstance(v, np.generic) else v)
    return InputError.at("not a number", column=name)


def _as_array(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind == "c":
        raise InputError.at("complex numbers are not losses' inputs: pass real values", column=name)
    if a.dtype.kind not in "fiub":
        if a.dtype.kind == "O":  # pandas' NA (nullable dtypes) is a missing value, as None is
            a = np.array([np.nan if type(v).__name__ == "NAType" else v for v in a.ravel()],
                         dtype=object).reshape(a.shape)
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError):
            raise _first_not_number(name, a) from None
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    if a.ndim == 2 and a.shape[1] == 1 and name not in ("pred", "target"):
        a = a[:, 0]
    if a.ndim not in (1, 2):
        raise InputError.at(f"expected a 1-D or 2-D array, got shape {a.shape}", column=name)
    if np.isfinite(np.add.reduce(a, axis=None)):  # one pass: NaN and ±inf reach the sum (overflow only errs safe)
        return a
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(a.shape[0], -1).any(axis=1))[0])
        v = a.reshape(a.shape[0], -1)[i][bad.reshape(a.shape[0], -1)[i]][0]
        raise InputError.at("missing or infinite value", column=name, row=i + 1, value=float(v))
    return a


def _as_labels(name: str, x: Any) -> np.ndarray:
    """A categorical role (an image id, a class label): values as they are, one per row."""
    a = np.asarray(x)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise InputError.at(f"expected one label per row (a 1-D array), got shape {a.shape}", column=name)
    if a.dtype.kind == "O":
        bad = [i for i, v in enumerate(a) if v is None or (isinstance(v, float) and v != v)]
        if bad:
            what = "missing image id" if name == "group" else "missing label"
            raise InputError.at(what, column=name, row=bad[0] + 1, count=len(bad))
    return a


def _as_weight(x: Any, n: int) -> np.ndarray:
    w = _as_array("weight", x)
    if w.ndim != 1:
        raise InputError.at(f"expected one weight per row (a 1-D array), got shape {w.shape}", column="weight")
    if w.shape[0] != n:
        raise InputError.at(f"has {w.shape[0]} rows but the inputs have {n}", column="weight")
    if (w < 0).any():
        i = int(np.flatnonzero(w < 0)[0])
        raise InputError.at("negative weight", column="weight", row=i + 1, value=float(w[i]))
    if n and not w.any():
        raise InputError.at("every weight is 0: there is nothing to average", column="weight")
    return w


def _spec_texts(loss: Any) -> list[str]:
    texts = [loss] if isinstance(loss, str) else None
    if texts is None:
        try:
            texts = list(loss)
        except TypeError:
            texts = None
    if texts is None or not all(isinstance(t, str) for t in texts):
        raise UsageError(
            f"loss must be a SPEC string such as 'huber:delta=1.5', or a list of them. Got {loss!r} instead.")
    return texts


def _check_options(reduction: Any, ci: Any, bootstrap: Any, batch_rows: Any, task: Any, *, grad: Any = False,
                   seed: Any = 0) -> dict[str, Any]:
    """The library's options checked as every entry point checks them (lossctl.options), as plain values."""
    args = (reduction, ci, bootstrap, batch_rows, task, grad, seed)
    try:  # (memoised by value and type: the library checks them at every call; True is not 1 here)
        return dict(_checked_options(tuple((v, type(v)) for v in args)))
    except TypeError:  # an unhashable value: checked (and refused) without the memo
        return _validated_options(*args)


def _validated_options(reduction: Any, ci: Any, bootstrap: Any, batch_rows: Any, task: Any, grad: Any,
                       seed: Any) -> dict[str, Any]:
    from lossctl.options import LIBRARY, EvalOptions

    return EvalOptions.validated(LIBRARY, reduces=True, reduction=reduction, ci=ci, bootstrap=bootstrap, batch_rows=batch_rows,
                                 task=task, grad=grad, seed=seed).plain()


@functools.lru_cache(maxsize=64)
def _checked_options(typed: tuple[tuple[Any, type], ...]) -> tuple[tuple[str, Any], ...]:
    return tuple(_validated_options(*(v for v, _ in typed)).items())


def _given_in_text(text: str, key: str) -> bool:
    _, sep, rest = text.partition(":")
    return bool(sep) and re.search(rf"(?:^|,)\s*{re.escape(key)}\s*=", rest) is not None


def _bind(texts: list[str], y: Any, yhat: Any, kwargs: dict[str, Any]):
    """Parse the SPECs; split the keyword arguments into inputs (roles) and parameter overrides.

    Returns (calls, raw inputs by role). A keyword that is neither a role nor a
    parameter of any of the losses, a role no loss reads, a required role that is
    missing, or a parameter given both in the SPEC and as a keyword is a UsageError.
    """
    bare = [registry.parse_spec(t) for t in texts]  # unknown names and params first
    roles: set[str] = set()
    params: set[str] = set()
    for c in bare:
        for s in (c.spec, *registry.variants(c.spec)):
            roles |= {r.name for r in s.roles}
            params |= {p.name for p in s.params}
    raw: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for key, v in kwargs.items():
        if key in roles or key in ("target", "pred"):
            if v is not None:
                raw[key] = v
        elif key in params:
            overrides[key] = v
        else:
            names = ", ".join(c.spec.name for c in bare)
            raise UsageError(
                f"unknown keyword '{key}': not an input or a parameter of {names}; "
                f"inputs: {', '.join(sorted(roles))}; parameters: {', '.join(sorted(params)) or 'none'}"
            )
    for role, v in (("target", y), ("pred", yhat)):
        if v is not None:
            if role in raw:
                raise UsageError(f"'{role}' given twice: as {_POSITIONAL[role]} and as {role}=")
            raw[role] = v
    calls = []
    for text, plain in zip(texts, bare):
        for key in overrides:
            if _given_in_text(text, key):
                raise UsageError(f"parameter '{key}' given twice: in the SPEC '{text}' and as {key}=")
        call = registry.parse_spec(text, overrides) if overrides else plain
        if any(r.required and r.name not in raw for r in call.spec.roles):
            for v in registry.variants(call.spec):  # triplet with embedding= is the mined form
                if all(r.name in raw for r in v.roles if r.required):
                    _, sep, rest = text.partition(":")
                    call = registry.parse_spec(v.name + sep + rest, overrides)
                    break
        missing = [r.name for r in call.spec.roles if r.required and r.name not in raw]
        if missing:
            how = ", ".join(_POSITIONAL.get(m, "") + (" or " if m in _POSITIONAL else "") + f"{m}=" for m in missing)
            need = ", ".join(r.name for r in call.spec.roles if r.required)
            raise UsageError(
                f"{call.spec.name} needs the input{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"(pass {how}); its inputs are {need}; given: {', '.join(raw) or 'nothing'}"
            )
        calls.append(call)
    used = {r.name for c in calls for r in c.spec.roles}
    unused = [k for k in raw if k not in used]
    if unused:
        shown = ", ".join(_POSITIONAL[k] + f" ({k})" if k in _POSITIONAL else k for k in unused)
        names = ", ".join(c.spec.name for c in calls)
        raise UsageError(f"{shown} is not an input of {names}; its inputs are "
                         f"{', '.join(sorted(used))}")
    for key in overrides:
        if not any(any(p.name == key for p in c.spec.params) for c in calls):
            raise UsageError(f"parameter '{key}' does not apply to {', '.join(c.spec.name for c in calls)}")
    return calls, raw


def _convert(calls: list[registry.LossCall], raw: dict[str, Any]) -> tuple[dict, dict, int]:
    """Numeric arrays and label arrays by role, and the number of rows (all must agree)."""
    cat = {r.name for c in calls for r in c.spec.roles if r.categorical}
    num = {r.name for c in calls for r in c.spec.roles if not r.categorical}
    nums = {k: _as_array(k, v) for k, v in raw.items() if k in num}
    labels = {k: _as_labels(k, v) for k, v in raw.items() if k in cat}
    order = [k for k in ("target", "pred") if k in raw] + [k for k in raw if k not in ("target", "pred")]
    first = order[0]
    arr0 = nums.get(first, labels.get(first))
    n = arr0.shape[0]
    for name in order[1:]:
        for a in (nums.get(name), labels.get(name)):
            if a is not None and a.shape[0] != n:
                raise InputError.at(f"has {a.shape[0]} rows but '{first}' has {n}", column=name)
    if n == 0:
        raise InputError("no rows to evaluate: the inputs are empty")
    return nums, labels, n


def _cols(spec: registry.LossSpec, nums: dict, labels: dict) -> dict[str, np.ndarray]:
    out = {}
    for r in spec.roles:
        src = labels if r.categorical else nums
        if r.name in src:
            out[r.name] = src[r.name]
    return out


def _wide(a: np.ndarray) -> np.ndarray:
    """float32 (and float16) widened batch by batch, as the CLI's reader does: the kernels
    compute in float64 (clipping a float32 probability to 1 − 2⁻⁵² would round to 1)."""
    return a.astype(np.float64) if a.dtype.kind == "f" and a.dtype.itemsize < 8 else a


def _one_column(a: Any) -> Any:
    """An (n, 1) array (``d[['yhat']]``) as (n,): one column is one output."""
    a = np.asarray(a) if not isinstance(a, np.ndarray) else a
    return a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a


def _match_columns(y: Any, yhat: Any) -> tuple[Any, Any]:
    """A 1-d target with an (n, 1) prediction (or the reverse) is one output, as the CLI
    reads a one-column selector."""
    if y is None or yhat is None:
        return y, yhat
    ny, np_ = np.ndim(y), np.ndim(yhat)
    if ny == 1 and np_ == 2 and np.shape(yhat)[1] == 1:
        return y, _one_column(yhat)
    if np_ == 1 and ny == 2 and np.shape(y)[1] == 1:
        return _one_column(y), yhat
    return y, yhat


def _standard_set(y: Any, yhat: Any, roles: dict[str, Any], task: str | None) -> tuple[list[str], str, Any]:
    """The task the inputs hold and its standard set, as the CLI chooses them.

    Returns (loss names, task, yhat): predict_proba's two columns on a binary task become
    the positive class's column.
    """
    from lossctl.binding import binary_set, task_from_values

    every = registry.all_losses()
    role_names = {r.name for s in every for r in s.roles}
    given = {k for k, v in roles.items() if v is not None and k in role_names}
    if y is not None:
        given.add("target")
    if yhat is not None:
        given.add("pred")
    logits = roles.get("logits") is True
    numeric = given == {"target", "pred"}  # only then do the values decide (labels may be strings otherwise)
    y_arr = (_as_array("target", y) if numeric else np.asarray(y)) if y is not None else None
    p_arr = _as_array("pred", yhat) if yhat is not None else None
    if task is None:
        if numeric:
            width = p_arr.shape[1] if p_arr.ndim == 2 else 1
            v = task_from_values(y_arr, p_arr, width, logits=logits)
            if v.several_sets:
                why = (f"row {v.row + 1} does not sum to 1 as class probabilities do" if v.row is not None
                       else "the target does not hold class labels 0..K−1")
                raise InputError.at(
                    f"has {width} columns for one prediction set, but {why}: these look like {width} "
                    f"prediction sets; evaluate each column on its own (class logits take logits=True)",
                    column="yhat",
                )
            task = v.task
        else:
            fits = [s for s in every if s.default_for and _fits(s, given)]
            if not fits:
                raise UsageError(
                    f"cannot tell the task from the inputs {', '.join(sorted(given)) or '(none)'}: "
                    f"pass loss= (a SPEC or a list) or task= ({', '.join(registry.TASKS)})"
                )
            task = fits[0].default_for[0]
    specs = [s for s in registry.default_losses(task) if _fits(s, given, y_arr, p_arr)]
    if task == "binary" and numeric and p_arr.ndim == 2 and p_arr.shape[1] == 2:
        v = task_from_values(y_arr, p_arr, 2, logits=logits)
        if v.positive_column:  # predict_proba's layout: the positive class
            p_arr = yhat = p_arr[:, 1]
            specs = [s for s in registry.default_losses(task) if _fits(s, given, y_arr, p_arr)]
    if task == "binary" and numeric and p_arr.ndim == 1:
        kind = binary_set(y_arr, p_arr, logits=logits)
        margin = [s for s in specs if any(r.name == "target" and r.signed for r in s.roles)]
        if kind in ("signed", "margin"):
            specs = margin or specs
        elif kind == "proba":
            specs = [s for s in specs if s not in margin] or specs
    if task == "multiclass" and numeric and p_arr.ndim == 2 and not logits:
        # probabilities (as the command line's default set): multi_hinge would read them as class scores
        v = p_arr[np.isfinite(p_arr)]
        if v.size and v.min() >= 0 and v.max() <= 1:
            specs = [s for s in specs if "probability" in s.properties.takes] or specs
    if not specs:
        raise UsageError(f"no loss of the {task} standard set takes the inputs {', '.join(sorted(given))}; pass loss=")
    return [s.name for s in specs], task, yhat


def _fits(spec: registry.LossSpec, given: set[str], y: Any = None, p: Any = None) -> bool:
    """Whether ``spec`` reads exactly the inputs given (and, for target and pred, their shapes)."""
    names = {r.name for r in spec.roles}
    if not all(r.name in given for r in spec.roles if r.required) or not given <= names:
        return False
    for r in spec.roles:
        a = y if r.name == "target" else p if r.name == "pred" else None
        if a is None or r.vector is None:
            continue
        if (a.ndim == 2 and a.shape[1] > 1) != r.vector:
            return False
    return True


def evaluate(
    y: Any = None,
    yhat: Any = None,
    loss: str | Sequence[str] | None = None,
    *,
    weight: Any = None,
    grad: bool = False,
    reduction: str = "mean",
    ci: float | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    task: str | None = None,
    batch_rows: int | None = None,
    **roles: Any,
) -> LossResult | list[LossResult]:
    """Evaluate one loss SPEC (or a list of them) on arrays.

    ``y`` and ``yhat`` bind the ``target`` and ``pred`` roles; other roles are keyword
    arguments (``anchor=``, ``positive=``, ``mu=``, ``group=`` …). A keyword that names
    a parameter of the loss overrides its default (``evaluate(y, p, "huber", delta=2)``);
    ``weight=`` is always the per-row sample weight (class weights go in the SPEC:
    ``"cross_entropy:weight=[1,2,3]"``). Returns a :class:`~lossctl.results.LossResult`
    (``float(result)`` is its value), or a list for a list of specs. Without ``loss`` the
    task is inferred as the command line infers it (or taken from ``task=``) and its
    standard set is evaluated: a list. An ``(n, 1)`` prediction for a 1-d target is one
    column. ``batch_rows`` streams the rows in batches of that size, as the CLI does; the
    result does not depend on it. Bad inputs raise :class:`~lossctl.errors.InputError`,
    bad options :class:`~lossctl.errors.UsageError` (both ``ValueError``).
    """
    o = _check_options(reduction, ci, bootstrap, batch_rows, task, grad=grad, seed=seed)
    reduction, task, ci, bootstrap, batch_rows, seed = (o[k] for k in ("reduction", "task", "ci", "bootstrap",
                                                                       "batch_rows", "seed"))
    y, yhat = _match_columns(y, yhat)
    if loss is None:
        for role, pos in (("target", y), ("pred", yhat)):
            if roles.get(role) is not None and pos is not None:
                raise UsageError(f"'{role}' given twice: as {_POSITIONAL[role]} and as {role}=")
        y = roles.pop("target") if y is None and "target" in roles else y
        yhat = roles.pop("pred") if yhat is None and "pred" in roles else yhat
        y, yhat = _match_columns(y, yhat)
        texts, task, yhat = _standard_set(y, yhat, roles, task)
    else:
        texts = _spec_texts(loss)
    if not texts:
        return []
    calls, raw = _bind(texts, y, yhat, roles)
    nums, labels, n = _convert(calls, raw)
    w = _as_weight(weight, n) if weight is not None else None
    # losses that read the same arrays in the same context are one plan: one pass over the rows
    # and, with ci, one resampling for all of them (the intervals are each loss's own, as alone)
    sets: dict[Any, list[int]] = {}
    cols_of = []
    for i, c in enumerate(calls):
        cols = _cols(c.spec, nums, labels)
        cols_of.append(cols)
        key = (_context(c.spec, cols, n, grad, task), tuple(sorted((r, id(a)) for r, a in cols.items())))
        sets.setdefault(key, []).append(i)
    out: list[Any] = [None] * len(calls)
    for idx in sets.values():
        got = _many([calls[i] for i in idx], cols_of[idx[0]], w, n, grad, reduction, ci, bootstrap, seed, task,
                    batch_rows)
        for i, r in zip(idx, got):
            out[i] = r
    return out[0] if isinstance(loss, str) else out


def _context(spec: registry.LossSpec, cols: dict[str, np.ndarray], n: int, grad: bool, task: str | None) -> Context:
    p = cols.get("pred")
    if task is None:
        task = spec.task
        if len(spec.all_tasks) > 1 and "multiclass" in spec.all_tasks and p is not None and p.ndim == 2:
            task = "multiclass"
    t = cols.get("target")
    return Context(task=task, grad=grad, rows_bound=n, n_classes=p.shape[1] if p is not None and p.ndim == 2 else None,
                   target_kind="vector" if t is not None and t.ndim == 2 else "scalar")


class _ArrayPass:
    """One pass over arrays in batches of ``step`` rows: the driver's :class:`~lossctl.driver.Pass`."""

    def __init__(self, cols: dict[str, np.ndarray], w: np.ndarray | None, n: int, step: int, jobs: int = 1) -> None:
        self.cols, self.w, self.n, self.step, self.jobs = cols, w, n, step, jobs
        self.rows = self.dropped = 0
        self.weight_total = 0.0
        self.info: dict[str, Any] = {}

    def batches(self) -> Iterator[tuple[list[Batch], list[Any], Any]]:
        for start in range(0, self.n, self.step):
            stop = min(self.n, start + self.step)
            w = None if self.w is None else self.w[start:stop]
            self.rows = stop
            cols = {r: _wide(a[start:stop]) for r, a in self.cols.items()}
            yield [Batch(dict(cols), stop - start, w, start, "", {}, input_start=start)
                   for _ in range(self.jobs)], [], None


def _many(calls, cols, w, n, grad, reduction, ci, bootstrap, seed, task, batch_rows) -> list[LossResult]:
    """Losses on the same arrays: a plan of one job each, driven and assembled as the CLI's are."""
    ctx = _context(calls[0].spec, cols, n, grad, task)
    for call in calls:
        if reduction == "sum" and not call.spec.row_mean:
            raise UsageError(f"{call.spec.name} is not a mean over rows, so reduction='sum' does not apply to it")
    req = Request(data="", losses=[c.text for c in calls], grad=grad, reduction=reduction, ci=ci, bootstrap=bootstrap,
                  seed=seed, batch_rows=batch_rows)
    jobs = tuple(Job(call, Binding(), "pred") for call in calls)
    plan = Plan(req, ("",), ("arrays",), ctx.task, False, jobs, ("pred",), ctx, None, (), None, {})
    step = int(batch_rows or max(n, 1))
    states = drive(plan, lambda: _ArrayPass(cols, w, n, step, len(jobs))).states
    opts = options(plan)
    res = [result_for(job, st, opts) for job, st in zip(jobs, states)]
    if ci:
        _add_ci(plan, states, res, opts)
        for r in res:
            r.notes += bootstrap_notes(ci, bootstrap, library=True)
    return res


def per_row(
    y: Any = None,
    yhat: Any = None,
    loss: str = "mse",
    *,
    weight: Any = None,
    task: str | None = None,
    **roles: Any,
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Per-row losses ℓᵢ and gradients ∂ℓᵢ/∂output of a loss that is a mean over rows.

    Returns ``(losses (n,), {role: gradient (n,) or (n, k)})``. With ``weight=`` both are
    multiplied by the row's weight, as ``lossctl eval --reduction none -w`` does, so
    ``losses.sum()`` is ``evaluate(..., reduction='sum', weight=w).value``. Losses that are
    not a mean over rows (rmse, the Dice family, mined triplets, wasserstein) raise
    :class:`~lossctl.errors.UsageError`.
    """
    if not isinstance(loss, str):
        raise UsageError(f"per_row takes one loss SPEC string. Got {loss!r} instead.")
    task = _check_options("mean", None, 1, None, task)["task"]
    y, yhat = _match_columns(y, yhat)
    (call,), raw = _bind([loss], y, yhat, roles)
    spec = call.spec
    if not spec.row_mean:
        raise UsageError(f"{spec.name} is not a mean over rows, so it has no per-row values; use evaluate()")
    nums, labels, n = _convert([call], raw)
    w = _as_weight(weight, n) if weight is not None else None
    cols = _cols(spec, nums, labels)
    k = spec.factory(call.params, _context(spec, cols, n, True, task))
    if isinstance(k, State) or not hasattr(k, "per_row"):
        raise UsageError(f"{spec.name} has no per-row values; use evaluate()")
    from lossctl.rowwise import row_values

    main = _ArrayPass(cols, w, n, max(n, 1))
    pre = spec.needs("prepass", call.params, grad=True, outputs=(p.shape[1] if (p := cols.get("pred")) is not None
                                                                and p.ndim == 2 else 1))
    ((_, _, ((loss_rows, grads),)),) = row_values([k], [pre], lambda: _ArrayPass(cols, w, n, max(n, 1)), main, [True])
    return loss_rows, grads


evaluate_arrays = evaluate
