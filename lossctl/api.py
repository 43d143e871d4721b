"""The library entry point: the same engine as the CLI, on numpy arrays."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lossctl import registry
from lossctl.engine import Batch, Context, DecomposableState, Options, State
from lossctl.errors import InputError, UsageError
from lossctl.results import LossResult


def _as_array(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError.at("not numeric", column=name) from None
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    if a.ndim == 2 and a.shape[1] == 1 and name not in ("pred", "target"):
        a = a[:, 0]
    if a.ndim not in (1, 2):
        raise InputError.at(f"expected a 1-D or 2-D array, got shape {a.shape}", column=name)
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(a.shape[0], -1).any(axis=1))[0])
        v = a.reshape(a.shape[0], -1)[i][bad.reshape(a.shape[0], -1)[i]][0]
        raise InputError.at("missing or infinite value", column=name, row=i + 1, value=float(v))
    return a


def evaluate(
    y: Any = None,
    yhat: Any = None,
    loss: str | Sequence[str] = "mse",
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
    arguments (``anchor=``, ``positive=``, ``mu=``, ``group=`` …). Returns a
    :class:`~lossctl.results.LossResult` (``float(result)`` is its value), or a list
    for a list of specs. ``batch_rows`` streams the rows in batches of that size, as
    the CLI does; the result does not depend on it.
    """
    specs = [loss] if isinstance(loss, str) else list(loss)
    arrays: dict[str, np.ndarray] = {}
    if y is not None:
        roles["target"] = y
    if yhat is not None:
        roles["pred"] = yhat
    for name, x in roles.items():
        if name == "group":
            arrays[name] = np.asarray(x)
        else:
            arrays[name] = _as_array(name, x)
    if not arrays:
        raise UsageError("no inputs: pass y and yhat (or the loss's roles as keywords)")
    n = next(iter(arrays.values())).shape[0]
    for name, a in arrays.items():
        if a.shape[0] != n:
            raise InputError.at(f"has {a.shape[0]} rows, not {n}", column=name)
    w = _as_array("weight", weight) if weight is not None else None
    if w is not None and (w < 0).any():
        i = int(np.flatnonzero(w < 0)[0])
        raise InputError.at("negative weight", column="weight", row=i + 1, value=float(w[i]))
    out = [_one(registry.parse_spec(s), arrays, w, n, grad, reduction, ci, bootstrap, seed, task, batch_rows)
           for s in specs]
    return out[0] if isinstance(loss, str) else out


def _one(call, arrays, w, n, grad, reduction, ci, bootstrap, seed, task, batch_rows) -> LossResult:
    spec = call.spec
    if task is None:
        task = spec.task
        if len(spec.all_tasks) > 1:
            p = arrays.get("pred")
            task = "multiclass" if "multiclass" in spec.all_tasks and p is not None and p.ndim == 2 else spec.task
    ctx = Context(task=task, grad=grad, rows_bound=n)
    p = arrays.get("pred")
    if p is not None and p.ndim == 2:
        ctx.n_classes = p.shape[1]
    t = arrays.get("target")
    if t is not None and t.ndim == 2:
        ctx.target_kind = "vector"
    if reduction not in ("mean", "sum"):
        raise UsageError("evaluate() reduces: use reduction='mean' or 'sum' (per-row values: lossctl.per_row)")
    if reduction == "sum" and not spec.row_mean:
        raise UsageError(f"{spec.name} is not a mean over rows, so reduction='sum' does not apply to it")
    opts = Options(grad=grad, ci=ci, bootstrap=bootstrap, seed=seed, reduction=reduction)
    kernel = spec.factory(call.params, ctx)
    state: State = kernel if isinstance(kernel, State) else DecomposableState(kernel, opts)
    step = batch_rows or max(n, 1)
    cols = {r: a for r, a in arrays.items() if r in {role.name for role in spec.roles}}

    def batches():
        for start in range(0, n, step):
            stop = min(n, start + step)
            yield Batch({r: a[start:stop] for r, a in cols.items()}, stop - start,
                        None if w is None else w[start:stop], start, "", {}, input_start=start)

    k = getattr(state, "kernel", None)
    if k is not None and k.needs_prepass:
        for b in batches():
            k.validate(b)
            k.prepass(b)
        k.end_prepass()
    for b in batches():
        if k is not None:
            k.validate(b)
        elif hasattr(state, "validate"):
            state.validate(b)
        state.update(b)
    if state.two_pass:
        for b in batches():
            state.update2(b)
    r = state.result()
    res = LossResult(
        loss=spec.name, spec=call.text, params=dict(call.params), pred="pred", value=float(r.get("value", np.nan)),
        n=int(r.get("n", 0)), reduction=reduction, grad=r.get("grad"), grad_by_role=r.get("grad_by_role"),
        grad_sample=r.get("grad_sample"), extra=r.get("extra", {}), notes=list(r.get("notes", [])),
    )
    if ci and isinstance(state, DecomposableState) and state.boot is not None and state.boot.count > 1:
        from lossctl.engine import bootstrap_values, percentile_interval

        mat, method = state.boot.matrix()
        fn = state.boot_fn()
        (vals,) = bootstrap_values([mat], [lambda t: fn(t[0])], bootstrap, seed)
        res.ci, res.ci_method = percentile_interval(vals, ci), method
    return res


def per_row(y: Any = None, yhat: Any = None, loss: str = "mse", **roles: Any) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Per-row losses and gradients ∂ℓᵢ/∂output of a loss that is a mean over rows."""
    call = registry.parse_spec(loss)
    if y is not None:
        roles["target"] = y
    if yhat is not None:
        roles["pred"] = yhat
    arrays = {k: _as_array(k, v) for k, v in roles.items()}
    n = next(iter(arrays.values())).shape[0]
    ctx = Context(task=call.spec.task, grad=True, rows_bound=n)
    p = arrays.get("pred")
    if p is not None and p.ndim == 2:
        ctx.n_classes = p.shape[1]
        if len(call.spec.all_tasks) > 1 and "multiclass" in call.spec.all_tasks:
            ctx.task = "multiclass"
    t = arrays.get("target")
    if t is not None and t.ndim == 2:
        ctx.target_kind = "vector"
    k = call.spec.factory(call.params, ctx)
    b = Batch(arrays, n, None, 0, "", {})
    k.validate(b)
    return k.per_row(b, True)


evaluate_arrays = evaluate
