"""Loss kernels: lossctl vs a cache-blocked numpy reference vs PyTorch's CPU losses.

    python benchmarks/bench_kernels.py [--rows 1000000] [--repeat 5] [--torch-python /opt/torchenv/bin/python]

For each loss (mse, mae, huber δ=1, quantile τ=0.5, log_cosh, bce on probabilities,
bce on logits, cross_entropy on C=10 logits) two jobs are timed in this process,
the best of at least REPEAT calls and 0.2 s of calls, on ROWS rows of float64:

  value       the mean loss
  value+grad  the mean loss and the per-row gradient array ∂ℓᵢ/∂output

Implementations:
  lossctl fn       the per-loss pure functions (lossctl.losses.regression.mse / mse_grad, ...):
                   fn(y, ŷ).mean(), and grad_fn(y, ŷ) for the gradient; classification
                   functions are looked up by name and used only where their numbers match
  lossctl per_row  lossctl.api.per_row(y, ŷ, SPEC): the registered kernel's per-row losses and
                   gradients (value+grad only)
  lossctl evaluate lossctl.evaluate(y, ŷ, SPEC[, grad=True]): the whole library path (checks,
                   compensated sums; with grad=True the gradient *summary*, not the array)
  blocked numpy    the reference: blocks of 65,536 elements, preallocated buffers, one fused
                   pass for value and gradient, BLAS dot products for the sums
  torch            torch.nn.functional losses (mse_loss, l1_loss, huber_loss,
                   binary_cross_entropy[_with_logits], cross_entropy); quantile and log_cosh
                   have none, so they are torch tensor ops. Gradients by autograd of the
                   sum-reduced loss (so per row, like lossctl's). Needs `import torch` here, or
                   --torch-python PY: then the torch timings run in PY (which needs numpy and
                   torch only) on the same arrays, saved as .npy, and come back as JSON.

Targets (issue 5): lossctl's kernel ≤ 1.2× the blocked reference, and ahead of torch.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# One BLAS thread, set before numpy loads: OpenBLAS splits each np.dot of a 64K block
# over both cores, and the hand-off costs more than the dot (3-10x slower, erratic).
# numpy and lossctl are then both single-threaded; torch keeps its own threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

BLOCK = 1 << 16
DELTA = 1.0
TAU = 0.5
N_CLASSES = 10
EPS = float(np.finfo(np.float64).eps)
LOG2 = math.log(2.0)
TOL = 1e-9
MIN_TIME = 0.2  # seconds of calls per cell at least (at 1M rows; less for fewer), so that thread pools settle


# ------------------------------------------------------------------ data


def make_data(rows: int) -> dict[str, np.ndarray]:
    """Every array the cases need, from one seed."""
    y, yh = C.gen_arrays(rows)
    rng = np.random.default_rng([C.SEED, 99])
    lab = (rng.random(rows) < 0.3).astype(np.float64)
    z = 1.5 * (2.0 * lab - 1.0) + rng.normal(0.0, 2.0, rows)
    cls = rng.integers(0, N_CLASSES, rows)
    zc = rng.normal(0.0, 2.0, (rows, N_CLASSES))
    zc[np.arange(rows), cls] += 2.0
    return {"y": y, "yhat": yh, "label": lab, "logit": z, "prob": 1.0 / (1.0 + np.exp(-z)),
            "cls": cls.astype(np.int64), "zc": zc}


# ------------------------------------------------------------------ the blocked numpy reference


_GRAD_OUT: dict[tuple[int, ...], np.ndarray] = {}


def _grad_out(shape: tuple[int, ...]) -> np.ndarray:
    """The reference's gradient array, allocated once and reused from call to call, so
    that its timings do not pay for fresh pages (lossctl's kernels reuse theirs too)."""
    a = _GRAD_OUT.get(shape)
    if a is None:
        a = _GRAD_OUT[shape] = np.empty(shape)
    return a


def _blocks(n: int, step: int = BLOCK):
    for s in range(0, n, step):
        yield s, min(n, s + step)


def ref_mse(y, yh, grad=False):
    n = y.size
    buf = np.empty(min(BLOCK, n))
    g = _grad_out((n,)) if grad else None
    s = 0.0
    for a, b in _blocks(n):
        r = np.subtract(yh[a:b], y[a:b], out=g[a:b] if grad else buf[: b - a])
        s += float(np.dot(r, r))
        if grad:
            np.multiply(r, 2.0, out=r)
    return s / n, g


def ref_mae(y, yh, grad=False):
    n = y.size
    buf = np.empty(min(BLOCK, n))
    g = _grad_out((n,)) if grad else None
    s = 0.0
    for a, b in _blocks(n):
        r = np.subtract(yh[a:b], y[a:b], out=buf[: b - a])
        if grad:
            sg = np.sign(r, out=g[a:b])
            s += float(np.dot(r, sg))  # |r| = r·sign(r)
        else:
            s += float(np.abs(r, out=r).sum())
    return s / n, g


def ref_huber(y, yh, grad=False, delta=DELTA):
    n = y.size
    buf = np.empty(min(BLOCK, n))
    buf2 = np.empty(min(BLOCK, n))
    g = _grad_out((n,)) if grad else None
    s = 0.0
    for a, b in _blocks(n):
        r = np.subtract(yh[a:b], y[a:b], out=buf[: b - a])
        # c = clip(r, ±δ) is the gradient, and huber = c·r − ½c·c (m = |c| = min(|r|, δ))
        c = np.clip(r, -delta, delta, out=g[a:b] if grad else buf2[: b - a])
        s += float(np.dot(c, r)) - 0.5 * float(np.dot(c, c))
    return s / n, g


def ref_quantile(y, yh, grad=False, tau=TAU):
    n = y.size
    buf = np.empty(min(BLOCK, n))
    buf2 = np.empty(min(BLOCK, n))
    g = _grad_out((n,)) if grad else None
    s = 0.0
    for a, b in _blocks(n):
        r = np.subtract(yh[a:b], y[a:b], out=buf[: b - a])
        if grad:
            # g = −τ (r < 0), 1 − τ (r > 0), 0 (r = 0) = ½sign(r) + (½ − τ)|sign(r)|; pinball = g·r
            gb = np.sign(r, out=g[a:b])
            if tau != 0.5:
                t = np.abs(gb, out=buf2[: b - a])
                gb *= 0.5
                gb += (0.5 - tau) * t
            else:
                gb *= 0.5
            s += float(np.dot(gb, r))
        else:
            # pinball = max(τd, (τ−1)d), d = −r, = max(r, 0) − τr
            s += float(np.maximum(r, 0.0, out=buf2[: b - a]).sum()) - tau * float(r.sum())
    return s / n, g


def ref_log_cosh(y, yh, grad=False):
    n = y.size
    buf = np.empty(min(BLOCK, n))
    e = np.empty(min(BLOCK, n))
    t = np.empty(min(BLOCK, n))
    g = _grad_out((n,)) if grad else None
    s = 0.0
    for a, b in _blocks(n):
        m = b - a
        r = np.subtract(yh[a:b], y[a:b], out=buf[:m])
        ab = np.abs(r, out=t[:m])
        s += float(ab.sum())
        # log cosh r = |r| + log1p(e^{−2|r|}) − log 2; tanh r = sign(r)(1 − e)/(1 + e), e = e^{−2|r|}
        ee = np.exp(np.multiply(ab, -2.0, out=e[:m]), out=e[:m])
        s += float(np.log1p(ee, out=t[:m]).sum())
        if grad:
            gb = np.subtract(1.0, ee, out=g[a:b])
            ee += 1.0
            gb /= ee
            np.copysign(gb, r, out=gb)
    return s / n - LOG2, g


def ref_bce(y, p, grad=False, eps=EPS):
    n = y.size
    pc = np.empty(min(BLOCK, n))
    lp = np.empty(min(BLOCK, n))
    l1 = np.empty(min(BLOCK, n))
    g = _grad_out((n,)) if grad else None
    s = 0.0
    for a, b in _blocks(n):
        m = b - a
        yb = y[a:b]
        q = np.clip(p[a:b], eps, 1.0 - eps, out=pc[:m])
        np.log(q, out=lp[:m])
        np.negative(q, out=l1[:m])
        np.log1p(l1[:m], out=l1[:m])
        # −[y log p + (1 − y) log(1 − p)] = −y·log p − Σlog(1 − p) + y·log(1 − p)
        s -= float(np.dot(yb, lp[:m])) + float(l1[:m].sum()) - float(np.dot(yb, l1[:m]))
        if grad:
            gb = np.subtract(q, yb, out=g[a:b])  # (p − y) / (p(1 − p))
            np.subtract(1.0, q, out=lp[:m])
            lp[:m] *= q
            gb /= lp[:m]
    return s / n, g


def ref_bce_logits(y, z, grad=False):
    n = y.size
    e = np.empty(min(BLOCK, n))
    t = np.empty(min(BLOCK, n))
    g = _grad_out((n,)) if grad else None
    s = 0.0
    for a, b in _blocks(n):
        m = b - a
        zb, yb = z[a:b], y[a:b]
        # softplus(z) − yz, softplus(z) = max(z, 0) + log1p(e^{−|z|})
        ee = np.exp(np.negative(np.abs(zb, out=e[:m]), out=e[:m]), out=e[:m])
        s += float(np.maximum(zb, 0.0, out=t[:m]).sum())
        s += float(np.log1p(ee, out=t[:m]).sum()) - float(np.dot(yb, zb))
        if grad:
            # s = σ(−|z|) = e/(1 + e); σ(z) = ½ + copysign(½ − s, z); gradient σ − y
            np.add(ee, 1.0, out=t[:m])
            gb = np.divide(ee, t[:m], out=g[a:b])
            np.subtract(0.5, gb, out=gb)
            np.copysign(gb, zb, out=gb)
            gb += 0.5
            gb -= yb
    return s / n, g


def ref_cross_entropy(cls, zc, grad=False):
    n, k = zc.shape
    rows = max(1, BLOCK // k)
    g = _grad_out(zc.shape) if grad else None
    buf = np.empty((min(rows, n), k))
    s = 0.0
    for a, b in _blocks(n, rows):
        m = b - a
        zb = zc[a:b]
        mx = zb.max(axis=1, keepdims=True)
        ez = np.exp(np.subtract(zb, mx, out=buf[:m]), out=buf[:m])
        se = ez.sum(axis=1, keepdims=True)
        idx = np.arange(m)
        s += float(np.log(se).sum() + mx.sum() - zb[idx, cls[a:b]].sum())
        if grad:
            gb = np.divide(ez, se, out=g[a:b])  # softmax − onehot
            gb[idx, cls[a:b]] -= 1.0
    return s / n, g


# ------------------------------------------------------------------ the cases


@dataclass
class Case:
    name: str
    spec: str
    target: str
    pred: str
    ref: Callable[..., tuple[float, Any]]
    family: str
    fn_names: tuple[tuple[str, str, dict[str, Any]], ...]  # (value fn, grad fn, kwargs) to try
    torch_note: str = ""


CASES = [
    Case("mse", "mse", "y", "yhat", ref_mse, "regression", (("mse", "mse_grad", {}),)),
    Case("mae", "mae", "y", "yhat", ref_mae, "regression", (("mae", "mae_grad", {}),)),
    Case("huber", "huber", "y", "yhat", ref_huber, "regression", (("huber", "huber_grad", {"delta": DELTA}),)),
    Case("quantile", "quantile", "y", "yhat", ref_quantile, "regression",
         (("pinball", "pinball_grad", {"tau": TAU}), ("quantile", "quantile_grad", {"tau": TAU})), "tensor ops"),
    Case("log_cosh", "log_cosh", "y", "yhat", ref_log_cosh, "regression", (("log_cosh", "log_cosh_grad", {}),),
         "tensor ops"),
    Case("bce (probs)", "bce", "label", "prob", ref_bce, "classification",
         (("bce", "bce_grad", {}), ("binary_cross_entropy", "binary_cross_entropy_grad", {}))),
    Case("bce (logits)", "bce:logits=true", "label", "logit", ref_bce_logits, "classification",
         (("bce", "bce_grad", {"logits": True}), ("bce_logits", "bce_logits_grad", {}),
          ("bce_with_logits", "bce_with_logits_grad", {}),
          ("binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_grad", {}))),
    Case("cross_entropy (C=10 logits)", "cross_entropy:logits=true", "cls", "zc", ref_cross_entropy,
         "classification",
         (("cross_entropy", "cross_entropy_grad", {"logits": True}),
          ("cross_entropy_logits", "cross_entropy_logits_grad", {}),
          ("softmax_cross_entropy", "softmax_cross_entropy_grad", {}))),
]


def grad_diff(g, ref) -> float:
    g = np.asarray(g, dtype=np.float64).reshape(ref.shape)
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(g - ref))) / scale


# ------------------------------------------------------------------ lossctl


def _lossctl_fn(case: Case, data, ref_value: float, ref_grad) -> tuple[Callable | None, Callable | None, str]:
    """The first (value, value+grad) pure functions of lossctl that give the reference's numbers."""
    import importlib

    try:
        mod = importlib.import_module(f"lossctl.losses.{case.family}")
    except ImportError:
        return None, None, "module missing"
    y, p = data[case.target], data[case.pred]
    targets = [y]
    if case.target == "cls":
        onehot = np.zeros_like(data["zc"])
        onehot[np.arange(y.size), y] = 1.0
        targets.append(onehot)
    why = "no function found"
    for vname, gname, kw in case.fn_names:
        f, gf = getattr(mod, vname, None), getattr(mod, gname, None)
        if f is None:
            continue
        for t in targets:
            try:
                with np.errstate(all="ignore"):
                    v = float(np.mean(f(t, p, **kw)))
                    g = gf(t, p, **kw) if gf is not None else None
            except Exception as e:  # noqa: BLE001 - an unknown signature: try the next
                why = f"{vname}: {type(e).__name__}: {e}"
                continue
            if C.rel_diff(v, ref_value) > TOL:
                why = f"{vname} gives {v!r}, reference {ref_value!r}"
                continue
            value = (lambda f=f, t=t: float(np.mean(f(t, p, **kw))))
            how = f"{vname}({'one-hot target' if t is not y else 'y'}, pred{''.join(f', {k}={v}' for k, v in kw.items())})"
            if g is None or grad_diff(g, ref_grad) > TOL:
                return value, None, f"{how}; no matching {gname}"
            both = (lambda f=f, gf=gf, t=t: (float(np.mean(f(t, p, **kw))), gf(t, p, **kw)))
            return value, both, f"{how} and {gname}"
    return None, None, why


def bench_lossctl(case: Case, data, repeat: int, ref_value: float, ref_grad) -> dict[str, Any]:
    import lossctl
    from lossctl.api import per_row

    y, p = data[case.target], data[case.pred]
    out: dict[str, Any] = {}
    fv, fvg, how = _lossctl_fn(case, data, ref_value, ref_grad)
    out["fn_how"] = how
    if fv is not None:
        out["fn_value"] = C.best_of(fv, repeat, min_time=MIN_TIME)[0]
    if fvg is not None:
        out["fn_grad"] = C.best_of(fvg, repeat, min_time=MIN_TIME)[0]
    checks = []
    try:
        t, (rows, grads) = C.best_of(lambda: per_row(y, p, case.spec), repeat, min_time=MIN_TIME)
        v = float(np.mean(rows))
        gd = grad_diff(grads["pred"], ref_grad)
        checks.append(("per_row", C.rel_diff(v, ref_value), gd))
        if C.rel_diff(v, ref_value) <= TOL and gd <= TOL:
            out["per_row_grad"] = t
    except Exception as e:  # noqa: BLE001 - a loss not registered yet
        out["per_row_error"] = f"{type(e).__name__}: {e}"
    try:
        t, res = C.best_of(lambda: lossctl.evaluate(y, p, case.spec), repeat, min_time=MIN_TIME)
        checks.append(("evaluate", C.rel_diff(res.value, ref_value), 0.0))
        if C.rel_diff(res.value, ref_value) <= TOL:
            out["eval_value"] = t
        t, res = C.best_of(lambda: lossctl.evaluate(y, p, case.spec, grad=True), repeat, min_time=MIN_TIME)
        if C.rel_diff(res.value, ref_value) <= TOL:
            out["eval_grad"] = t
    except Exception as e:  # noqa: BLE001
        out["eval_error"] = f"{type(e).__name__}: {e}"
    try:
        kv, kg = _engine_kernel(case, y, p)
        t, v = C.best_of(kv, repeat, min_time=MIN_TIME)
        if C.rel_diff(v, ref_value) <= TOL:
            out["kernel_value"] = t
        v, g = kg(True)
        gd = grad_diff(g, ref_grad)
        checks.append(("kernel", C.rel_diff(v, ref_value), gd))
        t, _ = C.best_of(lambda: kg(False), repeat, min_time=MIN_TIME)
        if C.rel_diff(v, ref_value) <= TOL and gd <= TOL:
            out["kernel_grad"] = t
    except Exception as e:  # noqa: BLE001
        out["kernel_error"] = f"{type(e).__name__}: {e}"
    out["checks"] = checks
    return out


def _engine_kernel(case: Case, y, p):
    """The registered kernel as `lossctl eval` drives it: batches of 131,072 rows,
    compensated sums (input checks are not timed). For value+grad each batch's per-row
    gradients are made and handed on, as `eval` hands them to the gradient summary;
    ``value_and_grad(True)`` also collects them into one array, to check them against
    the reference (that copy is not timed)."""
    from lossctl import registry
    from lossctl.engine import Batch, Context, DecomposableState, Options

    call = registry.parse_spec(case.spec)
    ctx = Context(task=call.spec.task)
    if p.ndim == 2:
        ctx.n_classes = p.shape[1]
        if "multiclass" in call.spec.all_tasks:
            ctx.task = "multiclass"
    n, rows = y.shape[0], 131072
    batches = [Batch({"target": y[s:s + rows], "pred": p[s:s + rows]}, min(rows, n - s), offset=s)
               for s in range(0, n, rows)]
    k0 = call.spec.factory(call.params, ctx)
    for b in batches:
        k0.validate(b)

    kv = call.spec.factory(call.params, ctx)

    def value():
        st = DecomposableState(kv, Options())
        for b in batches:
            st.update(b)
        return st.result()["value"]

    kg = call.spec.factory(call.params, ctx)

    def value_and_grad(collect: bool):
        k = kg
        g = np.empty(p.shape) if collect else None
        total = 0.0
        for b in batches:
            fused = k.sums_and_grads(b)  # the engine's fused path, where the kernel has one
            if fused is not None:
                sums, grads = fused
                total += float(sums[0])
            else:
                stats, grads = k.stats(b, True)
                total += float(np.sum(stats[0]))
            if g is not None:
                g[b.offset:b.offset + b.n] = grads["pred"]
        return total / n, g

    return value, value_and_grad


# ------------------------------------------------------------------ torch


def _torch_fns(torch, F):
    def value_fns():
        return {
            "mse": lambda t, p: F.mse_loss(p, t),
            "mae": lambda t, p: F.l1_loss(p, t),
            "huber": lambda t, p: F.huber_loss(p, t, delta=DELTA),
            "quantile": lambda t, p: torch.maximum(TAU * (t - p), (TAU - 1.0) * (t - p)).mean(),
            "log_cosh": lambda t, p: ((p - t).abs() + F.softplus(-2.0 * (p - t).abs()) - LOG2).mean(),
            "bce (probs)": lambda t, p: F.binary_cross_entropy(p, t),
            "bce (logits)": lambda t, p: F.binary_cross_entropy_with_logits(p, t),
            "cross_entropy (C=10 logits)": lambda t, p: F.cross_entropy(p, t),
        }

    def sum_fns():
        return {
            "mse": lambda t, p: F.mse_loss(p, t, reduction="sum"),
            "mae": lambda t, p: F.l1_loss(p, t, reduction="sum"),
            "huber": lambda t, p: F.huber_loss(p, t, delta=DELTA, reduction="sum"),
            "quantile": lambda t, p: torch.maximum(TAU * (t - p), (TAU - 1.0) * (t - p)).sum(),
            "log_cosh": lambda t, p: ((p - t).abs() + F.softplus(-2.0 * (p - t).abs()) - LOG2).sum(),
            "bce (probs)": lambda t, p: F.binary_cross_entropy(p, t, reduction="sum"),
            "bce (logits)": lambda t, p: F.binary_cross_entropy_with_logits(p, t, reduction="sum"),
            "cross_entropy (C=10 logits)": lambda t, p: F.cross_entropy(p, t, reduction="sum"),
        }

    return value_fns(), sum_fns()


def bench_torch(data: dict[str, np.ndarray], repeat: int, threads: int | None) -> dict[str, Any]:
    """Torch timings and their agreement with the reference (runs wherever torch imports)."""
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    vfns, sfns = _torch_fns(torch, F)
    out: dict[str, Any] = {"_meta": {"torch": torch.__version__, "threads": torch.get_num_threads()}}
    for case in CASES:
        y, p = data[case.target], data[case.pred]
        ref_value, ref_grad = case.ref(y, p, True)
        tt, tp = torch.from_numpy(y), torch.from_numpy(p)
        n = y.shape[0]

        def value():
            with torch.no_grad():
                return float(vfns[case.name](tt, tp))

        def both():
            x = tp.detach().requires_grad_(True)
            loss = sfns[case.name](tt, x)
            (g,) = torch.autograd.grad(loss, x)
            return float(loss.detach()) / n, g

        value(), both()  # warm-up: torch's thread pool and allocator
        tv, v = C.best_of(value, repeat, min_time=MIN_TIME)
        tg, (v2, g) = C.best_of(both, repeat, min_time=MIN_TIME)
        out[case.name] = {"value": tv, "grad": tg, "value_diff": max(C.rel_diff(v, ref_value), C.rel_diff(v2, ref_value)),
                          "grad_diff": grad_diff(g.numpy(), ref_grad)}
    return out


def torch_elsewhere(python: str, data: dict[str, np.ndarray], repeat: int, threads: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lossctl-kernels-") as d:
        for k, v in data.items():
            np.save(os.path.join(d, f"{k}.npy"), v)
        cmd = [python, str(Path(__file__).resolve()), "--torch-worker", d, "--repeat", str(repeat),
               "--min-time", repr(MIN_TIME)]
        if threads:
            cmd += ["--torch-threads", str(threads)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise C.BenchError(f"the torch worker failed in {python}:\n{p.stderr.strip()}")
        return json.loads(p.stdout)


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per loss (default 1,000,000; C=10 columns for cross_entropy)")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per cell; the best counts (default 5)")
    ap.add_argument("--torch-python", metavar="PY", help="run the torch timings in this interpreter (e.g. /opt/torchenv/bin/python)")
    ap.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    ap.add_argument("--no-torch", action="store_true", help="skip torch")
    ap.add_argument("--only", help="comma list of case names (e.g. mse,huber)")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT")
    ap.add_argument("--torch-worker", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--min-time", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    global MIN_TIME

    if a.torch_worker:
        MIN_TIME = a.min_time if a.min_time is not None else MIN_TIME
        data = {Path(f).stem: np.load(os.path.join(a.torch_worker, f)) for f in os.listdir(a.torch_worker)}
        json.dump(bench_torch(data, a.repeat, a.torch_threads), sys.stdout)
        return 0

    MIN_TIME = MIN_TIME * min(1.0, a.rows / 1e6)
    cases = CASES
    if a.only:
        want = {s.strip() for s in a.only.split(",")}
        cases = [c for c in CASES if c.name in want or c.name.split(" ")[0] in want]
    C.header(f"bench_kernels: {a.rows:,} rows per loss, best of {a.repeat}")
    data = make_data(a.rows)

    torch_res: dict[str, Any] | None = None
    torch1_res: dict[str, Any] | None = None  # torch on one thread, as numpy and lossctl run
    torch_why = ""
    if not a.no_torch:
        try:
            if a.torch_python:
                torch_res = torch_elsewhere(a.torch_python, data, a.repeat, a.torch_threads)
                torch1_res = torch_elsewhere(a.torch_python, data, a.repeat, 1)
            else:
                import importlib.util

                if importlib.util.find_spec("torch") is None:
                    torch_why = "torch is not installed here (pass --torch-python /opt/torchenv/bin/python)"
                else:
                    torch_res = bench_torch(data, a.repeat, a.torch_threads)
        except C.BenchError as e:
            torch_why = str(e)
    if torch_res:
        m = torch_res["_meta"]
        print(f"torch {m['torch']} with {m['threads']} intra-op threads (`torch`) and with one (`torch 1t`); "
              f"numpy and lossctl run on one thread (OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}).\n")
    elif torch_why:
        print(f"torch: skipped ({torch_why})\n")

    rows, notes, results = [], [], {}
    for case in cases:
        y, p = data[case.target], data[case.pred]
        with np.errstate(all="ignore"):
            ref_t, _ = C.best_of(lambda: case.ref(y, p, False), a.repeat, min_time=MIN_TIME)
            ref_tg, (ref_value, ref_grad) = C.best_of(lambda: case.ref(y, p, True), a.repeat, min_time=MIN_TIME)
        lc = bench_lossctl(case, data, a.repeat, ref_value, ref_grad)
        tr = (torch_res or {}).get(case.name)
        tr1 = (torch1_res or {}).get(case.name)
        results[case.name] = {"blocked_value": ref_t, "blocked_grad": ref_tg, "lossctl": lc, "torch": tr,
                              "torch_1_thread": tr1}
        if "fn_value" not in lc:
            notes.append(f"{case.name}: no lossctl pure function used ({lc['fn_how']})")
        else:
            notes.append(f"{case.name}: lossctl fn = {lc['fn_how']}")
        for what, label in (("per_row_error", "per_row"), ("eval_error", "evaluate")):
            if what in lc:
                notes.append(f"{case.name}: lossctl {label} failed: {lc[what]}")
        for path, vd, gd in lc["checks"]:
            if vd > TOL or gd > TOL:
                notes.append(f"{case.name}: lossctl {path} DISAGREES with the reference "
                             f"(value rel. diff {vd:.1e}, gradient {gd:.1e}); not timed")
        if tr and (tr["value_diff"] > 1e-7 or tr["grad_diff"] > 1e-7):
            notes.append(f"{case.name}: torch differs from the reference (value {tr['value_diff']:.1e}, "
                         f"gradient {tr['grad_diff']:.1e})")
        for mode, ref_time, fn_key, alt_key, ev_key in (
            ("value", ref_t, "fn_value", None, "eval_value"),
            ("value+grad", ref_tg, "fn_grad", "per_row_grad", "eval_grad"),
        ):
            k_key = "kernel_value" if mode == "value" else "kernel_grad"
            kern, kern_src = lc.get(k_key), "kernel"
            if kern is None:
                kern, kern_src = lc.get(fn_key), "fn"
            if kern is None and alt_key and alt_key in lc:
                kern, kern_src = lc[alt_key], "per_row"
            t_t = tr[("value" if mode == "value" else "grad")] if tr else None
            t_1 = tr1[("value" if mode == "value" else "grad")] if tr1 else None
            r_ref = kern / ref_time if kern else None
            r_torch = t_t / kern if (kern and t_t) else None
            r_torch1 = t_1 / kern if (kern and t_1) else None
            rows.append([
                case.name if mode == "value" else "", mode,
                C.fmt_time(lc.get(k_key)),
                C.fmt_time(lc.get(fn_key)),
                C.fmt_time(lc.get(alt_key)) if alt_key else "",
                C.fmt_time(lc.get(ev_key)),
                C.fmt_time(ref_time),
                C.fmt_time(t_t) + (f" ({case.torch_note})" if t_t and case.torch_note else ""),
                (C.fmt_ratio(r_ref) + {"kernel": "", "fn": " ᶠ", "per_row": " ᵖ"}[kern_src]) if r_ref else "—",
                C.verdict(r_ref, "<=", 1.2) if r_ref else "n/a",
                C.fmt_ratio(r_torch) if r_torch else "—",
                C.verdict(r_torch, ">=", 1.0) if r_torch else "n/a",
                C.fmt_time(t_1),
                C.fmt_ratio(r_torch1) if r_torch1 else "—",
                C.verdict(r_torch1, ">=", 1.0) if r_torch1 else "n/a",
            ])
    print(C.table(["loss", "job", "lossctl kernel", "lossctl fn", "lossctl per_row", "lossctl evaluate", "blocked numpy",
                   "torch", "lossctl / blocked", "≤ 1.2×", "torch / lossctl", "> 1×", "torch 1t", "torch 1t / lossctl",
                   "> 1×"], rows, "llrrrrrrrlrlrrl"))
    print()
    print("lossctl / blocked and torch / lossctl use `lossctl kernel`: the registered kernel as `eval` drives it, "
          "in 131,072-row batches (ᶠ: the pure function, ᵖ: per_row, where the kernel did not match). "
          "`evaluate` with grad computes the gradient summary, not the array.")
    if notes:
        print()
        for n in notes:
            print(f"- {n}")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": C.machine_info(), "rows": a.rows, "results": results},
                                           indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
