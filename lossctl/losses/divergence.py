"""Divergences and distributions: KL, Jensen–Shannon, total variation, W₁ between
samples, the VAE's KL to N(0, I), and knowledge distillation.

For ``kl``, ``js`` and ``tv`` each row is one distribution over C classes: the
target P and the prediction Q are C columns each. ``wasserstein`` compares the
whole target column with the whole prediction column (one number per file).
``vae_kl`` reads an encoder's mean and log-variance, ``distill`` a teacher's and a
student's logits. Natural logarithms unless ``base`` says otherwise; a KL of +inf
(Q = 0 < P) is a value, not an error.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import weakref
from typing import Any, Iterator

import numpy as np

from lossctl.accumulate import GradSummary, Sum
from lossctl.engine import Batch, Context, RowMeanKernel, State
from lossctl.errors import InputError, UsageError
from lossctl.losses._numerics import log_softmax, softmax
from lossctl.spec import (
    CLASS, DISTRIBUTION, REAL, Interval, LossSpec, Param, Pass, Properties, Role, check_domain, heredoc,
)

LOG2 = math.log(2.0)
# a row of P or Q is a distribution when its sum is within this of 1 (LOSSES.md)
SUM_TOL = 1e-6

# ---------------------------------------------------------------- the maths


def rel_entr(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p·log(p/q) elementwise with 0·log(0/q) = 0 and p·log(p/0) = +inf (scipy.special.rel_entr)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = p * np.log(p / q)
    return np.where(p > 0, np.where(q > 0, out, np.inf), 0.0)


def kl_div(p: np.ndarray, q: np.ndarray, *, base: float = math.e) -> np.ndarray:
    """KL(P‖Q) = Σ_c P_c log(P_c/Q_c) per row (last axis); +inf where Q_c = 0 < P_c."""
    return np.sum(rel_entr(p, q), axis=-1) / math.log(base)


def kl_div_grad(p: np.ndarray, q: np.ndarray, *, base: float = math.e) -> np.ndarray:
    """∂KL/∂Q_c = −P_c/Q_c (0 where P_c = 0, −inf where Q_c = 0 < P_c)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(p > 0, -p / q, 0.0)
    return g / math.log(base)


def kl_div_logits(p: np.ndarray, z: np.ndarray, *, base: float = math.e) -> np.ndarray:
    """KL(P‖softmax(z)) = Σ P (log P − log_softmax(z)): log-sum-exp, finite for any finite z."""
    ls = log_softmax(z)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - ls), 0.0)
    return np.sum(terms, axis=-1) / math.log(base)


def kl_div_logits_grad(p: np.ndarray, z: np.ndarray, *, base: float = math.e) -> np.ndarray:
    """∂KL/∂z = softmax(z) − P (P sums to 1)."""
    return (softmax(z) - p) / math.log(base)


def js_div(p: np.ndarray, q: np.ndarray, *, base: float = math.e) -> np.ndarray:
    """JS(P, Q) = ½KL(P‖M) + ½KL(Q‖M), M = ½(P + Q): the divergence, scipy's distance squared."""
    s = p + q
    # P/M = 2P/(P + Q): never forms ½(P + Q), which underflows to 0 for subnormal P + Q
    return 0.5 * (np.sum(_xlog2x_over(p, s), axis=-1) + np.sum(_xlog2x_over(q, s), axis=-1)) / math.log(base)


def _xlog2x_over(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """x·log(2x/s), 0 where x = 0 (s ≥ x > 0 elsewhere)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = x * np.log(2.0 * x / s)
    return np.where(x > 0, out, 0.0)


def js_div_grad(p: np.ndarray, q: np.ndarray, *, base: float = math.e) -> np.ndarray:
    """∂JS/∂Q_c = ½ log(Q_c/M_c) = ½ log(2Q_c/(P_c + Q_c)) (the 1/M parts cancel).

    At Q_c = 0 = P_c the limit ½ log 2 (the term is ½ Q_c log 2 there); at
    Q_c = 0 < P_c the one-sided derivative −inf.
    """
    s = p + q
    with np.errstate(divide="ignore", invalid="ignore"):
        g = 0.5 * np.log(2.0 * q / s)
    g = np.where(s > 0, g, 0.5 * LOG2)
    return g / math.log(base)


def tv_dist(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total variation sup_A |P(A) − Q(A)| = ½ Σ_c |P_c − Q_c| (erratum 6)."""
    return 0.5 * np.sum(np.abs(p - q), axis=-1)


def tv_dist_grad(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """½ sign(Q − P); 0 where Q_c = P_c (a valid subgradient)."""
    return 0.5 * np.sign(q - p)


def vae_kl(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(N(μ, diag e^{logvar}) ‖ N(0, I)) = ½ Σ_j (e^{logvar_j} + μ_j² − 1 − logvar_j).

    +inf where e^{logvar} or μ² overflows (a value, reported, not a warning)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return 0.5 * np.sum(np.exp(logvar) + mu * mu - 1.0 - logvar, axis=-1)


def vae_kl_grad(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(∂/∂μ, ∂/∂logvar) = (μ, ½(e^{logvar} − 1))."""
    with np.errstate(over="ignore"):
        return mu.copy(), 0.5 * np.expm1(logvar)


def distill(
    teacher: np.ndarray,
    student: np.ndarray,
    label: np.ndarray | None = None,
    *,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> np.ndarray:
    """α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y) per row (Hinton et al. 2015).

    Without labels only the distillation term counts (α = 1).
    """
    kd, ce = _distill_parts(teacher, student, label, temperature)
    a = alpha if label is not None else 1.0
    out = a * temperature**2 * kd
    return out if ce is None else out + (1.0 - a) * ce


def distill_grad(
    teacher: np.ndarray,
    student: np.ndarray,
    label: np.ndarray | None = None,
    *,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> np.ndarray:
    """∂/∂s = α·T·(softmax(s/T) − softmax(t/T)) + (1 − α)(softmax(s) − onehot(y))."""
    t = temperature
    a = alpha if label is not None else 1.0
    g = a * t * (softmax(student / t) - softmax(teacher / t))
    if label is not None:
        sm = softmax(student)
        sm[np.arange(sm.shape[0]), label.astype(np.intp)] -= 1.0
        g = g + (1.0 - a) * sm
    return g


def _distill_parts(teacher, student, label, temperature):
    lt = log_softmax(teacher / temperature)
    ls = log_softmax(student / temperature)
    pt = np.exp(lt)
    # pt·(lt − ls): pt = 0 only by underflow, where lt is finite, so the product is 0
    kd = np.sum(pt * (lt - ls), axis=-1)
    ce = None
    if label is not None:
        ce = -log_softmax(student)[np.arange(student.shape[0]), label.astype(np.intp)]
    return kd, ce


def wasserstein_1d(y: np.ndarray, yhat: np.ndarray, w: np.ndarray | None = None) -> float:
    """W₁ between the empirical distributions of y and ŷ (weights w on both), in memory.

    W₁ = ∫ |F(x) − G(x)| dx, F and G the (weighted) empirical CDFs: the same as
    ``scipy.stats.wasserstein_distance(y, yhat, w, w)``.
    """
    ry, rp = _Run.build(np.asarray(y, float), w), _Run.build(np.asarray(yhat, float), w)
    total = float(len(y)) if w is None else float(np.sum(w))
    return _w1([ry] if ry else [], [rp] if rp else [], total, total)


def wasserstein_1d_grad(y: np.ndarray, yhat: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """∂(N·W₁)/∂ŷᵢ, N = len(ŷ); for equal unweighted samples sign(ŷ₍ₖ₎ − y₍ₖ₎) matched by rank."""
    y = np.asarray(y, float)
    yhat = np.asarray(yhat, float)
    total = float(len(y)) if w is None else float(np.sum(w))
    ry, rp = _Run.build(y, w), _Run.build(yhat, w)
    return _w1_grad([ry] if ry else [], [rp] if rp else [], yhat, w, total, len(yhat))


# ---------------------------------------------------------------- distributions: checks


def _first_row(b: Batch) -> int | None:
    return b.input_row(0) if b.n else None


def _as_rows(b: Batch, role: str) -> np.ndarray:
    x = np.asarray(b[role], dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    return x


def _check_distribution(b: Batch, role: str, x: np.ndarray, normalize: bool, what: str) -> None:
    """Entries ≥ 0 and rows summing to 1 within 1e-6 (or > 0 with normalize)."""
    neg = x < 0
    if neg.any():
        raise b.fail(f"negative probability in {what}", role, neg, values=x)
    s = np.sum(x, axis=1)
    if normalize:
        bad = ~(s > 0)
        if bad.any():
            raise b.fail(f"{what} sums to 0, so normalize=true cannot divide by its sum", role, bad, values=s)
        return
    big = x > 1.0 + SUM_TOL
    if big.any():
        raise b.fail(f"probability above 1 in {what}", role, big, values=x)
    bad = np.abs(s - 1.0) > SUM_TOL
    if bad.any():
        raise b.fail(
            f"{what} does not sum to 1 within {SUM_TOL:g} (the row sum is shown); "
            "pass normalize=true to divide each row by its sum",
            role, bad, values=s,
        )


def _through_normalize(g: np.ndarray, qn: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Chain rule through Q̃ = Q/ΣQ: ∂/∂Q_c = (g_c − Σ_k g_k Q̃_k)/ΣQ (0·(−inf) read as 0)."""
    with np.errstate(invalid="ignore"):
        gq = np.where(qn > 0, g * qn, 0.0)
    return (g - np.sum(gq, axis=1, keepdims=True)) / s[:, None]


def _base_of(name: str, params: dict[str, Any]) -> float:
    base = params.get("base", math.e)
    if base == 1.0:
        raise UsageError(
            f"The 'base' parameter of {name} must be in (0, inf) and not 1. Got {base!r} instead."
        )
    return float(base)


# ---------------------------------------------------------------- kernels


class _RowKernel(RowMeanKernel):
    """A row-mean kernel whose rows may hold +inf: a weight of 0 removes a row entirely
    (inf·0 would be NaN), and the count of infinite rows is reported."""

    def stats(self, b: Batch, grad: bool):
        loss, grads, _ = self.rows(b, grad)
        inf = np.isinf(loss).astype(float)
        w = b.weight
        if w is None:
            return [loss, 1.0, inf], grads
        live = w > 0
        lw = np.where(live, loss * np.where(live, w, 1.0), 0.0)
        if grads is not None:
            grads = {k: np.where(live if g.ndim == 1 else live[:, None],
                                 g * (w if g.ndim == 1 else w[:, None]), 0.0)
                     for k, g in grads.items()}
        return [lw, w, inf * live], grads

    def extra(self, totals: np.ndarray) -> dict[str, Any]:
        n_inf = int(round(float(totals[2])))
        return {"inf_rows": n_inf} if n_inf else {}


class _PairKernel(_RowKernel):
    """P (target) against Q (pred), C columns each."""

    what_q = "prediction Q"

    def __init__(self, params: dict[str, Any], ctx: Context) -> None:
        super().__init__(params, ctx)
        self.normalize = bool(params.get("normalize", False))
        self.logits = bool(params.get("logits", False))

    def validate(self, b: Batch) -> None:
        p, q = _as_rows(b, "target"), _as_rows(b, "pred")
        if p.shape[1] != q.shape[1]:
            raise InputError.at(
                f"the target distribution P has {p.shape[1]} columns but the prediction Q has {q.shape[1]}",
                source=b.source or None, column=b.columns.get("pred", "pred"), row=_first_row(b),
            )
        if p.shape[1] < 2 and b.n:
            raise InputError.at(
                "a distribution needs at least 2 columns (one per class); "
                f"'{b.columns.get('target', 'target')}' is one column",
                source=b.source or None,
            )
        _check_distribution(b, "target", p, self.normalize, "target distribution P")
        if not self.logits:
            _check_distribution(b, "pred", q, self.normalize, "predicted distribution Q")

    def pq(self, b: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        p, q = _as_rows(b, "target"), _as_rows(b, "pred")
        s = None
        if self.normalize:
            p = p / np.sum(p, axis=1, keepdims=True)
            if not self.logits:
                s = np.sum(q, axis=1)
                q = q / s[:, None]
        return p, q, s

    def rows(self, b: Batch, grad: bool):
        p, q, s = self.pq(b)
        loss = self.value_fn(p, q)
        g = None
        if grad:
            g = self.grad_fn(p, q)
            if s is not None:
                g = _through_normalize(g, q, s)
        return loss, ({"pred": g} if g is not None else None), None


class KLKernel(_PairKernel):
    def __init__(self, params: dict[str, Any], ctx: Context) -> None:
        super().__init__(params, ctx)
        self.base = _base_of("kl", params)

    def value_fn(self, p, q):
        return kl_div_logits(p, q, base=self.base) if self.logits else kl_div(p, q, base=self.base)

    def grad_fn(self, p, q):
        return kl_div_logits_grad(p, q, base=self.base) if self.logits else kl_div_grad(p, q, base=self.base)


class JSKernel(_PairKernel):
    def __init__(self, params: dict[str, Any], ctx: Context) -> None:
        super().__init__(params, ctx)
        self.base = _base_of("js", params)

    def value_fn(self, p, q):
        return js_div(p, q, base=self.base)

    def grad_fn(self, p, q):
        return js_div_grad(p, q, base=self.base)


class TVKernel(_PairKernel):
    def value_fn(self, p, q):
        return tv_dist(p, q)

    def grad_fn(self, p, q):
        return tv_dist_grad(p, q)


class VAEKLKernel(_RowKernel):
    grad_roles = ("mu", "logvar")

    def validate(self, b: Batch) -> None:
        mu, lv = _as_rows(b, "mu"), _as_rows(b, "logvar")
        if mu.shape[1] != lv.shape[1]:
            raise InputError.at(
                f"mu has {mu.shape[1]} columns but logvar has {lv.shape[1]}", source=b.source or None,
                column=b.columns.get("logvar", "logvar"), row=_first_row(b),
            )

    def rows(self, b: Batch, grad: bool):
        mu, lv = _as_rows(b, "mu"), _as_rows(b, "logvar")
        loss = vae_kl(mu, lv)
        grads = None
        if grad:
            gm, gl = vae_kl_grad(mu, lv)
            grads = {"mu": gm, "logvar": gl}
        return loss, grads, None


class DistillKernel(_RowKernel):
    grad_roles = ("student",)
    state_attrs = ("has_target",)  # whether a label column was bound: shards must agree

    def __init__(self, params: dict[str, Any], ctx: Context) -> None:
        super().__init__(params, ctx)
        self.t = float(params["temperature"])
        self.alpha = float(params["alpha"])
        self.has_target: bool | None = None

    def _label(self, b: Batch) -> np.ndarray | None:
        y = b.get("target")
        if y is None:
            return None
        y = np.asarray(y, dtype=np.float64)
        return y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y

    def validate(self, b: Batch) -> None:
        t, s = _as_rows(b, "teacher"), _as_rows(b, "student")
        if t.shape[1] != s.shape[1]:
            raise InputError.at(
                f"the teacher has {t.shape[1]} logit columns but the student has {s.shape[1]}",
                source=b.source or None, column=b.columns.get("student", "student"), row=_first_row(b),
            )
        y = self._label(b)
        if y is not None:
            if y.ndim != 1:
                raise InputError.at("the target of distill is one class column (0..C−1)", source=b.source or None)
            c = s.shape[1]
            check_domain(b, "target", DISTILL_TARGET.domain.classes(c), f"class label outside 0..{c - 1}", y)

    def _compute(self, b: Batch, grad: bool):
        t, s = _as_rows(b, "teacher"), _as_rows(b, "student")
        y = self._label(b)
        self.has_target = y is not None
        kd, ce = _distill_parts(t, s, y, self.t)
        a = self.alpha if y is not None else 1.0
        loss = a * self.t**2 * kd + ((1.0 - a) * ce if ce is not None else 0.0)
        g = distill_grad(t, s, y, temperature=self.t, alpha=self.alpha) if grad else None
        return loss, g, kd, ce

    def rows(self, b: Batch, grad: bool):
        loss, g, _, _ = self._compute(b, grad)
        return loss, ({"student": g} if g is not None else None), None

    def stats(self, b: Batch, grad: bool):
        loss, g, kd, ce = self._compute(b, grad)
        grads = {"student": g} if g is not None else None
        kd_t = self.t**2 * kd
        ce = np.zeros(b.n) if ce is None else ce
        w = b.weight
        if w is None:
            return [loss, 1.0, 0.0, kd_t, ce], grads
        if grads is not None:
            grads = {"student": g * w[:, None]}
        return [loss * w, w, 0.0, kd_t * w, ce * w], grads

    def extra(self, totals: np.ndarray) -> dict[str, Any]:
        w = float(totals[1])
        out: dict[str, Any] = {
            "alpha_effective": self.alpha if self.has_target else 1.0,
            "distill_term": float(totals[3] / w) if w > 0 else math.nan,
        }
        if self.has_target:
            out["ce_term"] = float(totals[4] / w) if w > 0 else math.nan
        return out


# ---------------------------------------------------------------- W₁: exact, out of core

# values (target and prediction together) held in RAM before the buffer is sorted and
# spilled to disk as a run; a module constant so tests can lower it
SPILL_VALUES = 1 << 22
# the smallest block read from each run during the merge
MERGE_MIN_CHUNK = 1 << 12
# where runs are spilled (None: the system's temporary directory, $TMPDIR)
SPILL_DIR: str | None = None


class _Run:
    """Sorted values with their weights and cumulative weights, in RAM or on disk.

    On disk a run is raw float64 files in its own temporary directory, removed when
    the run is garbage-collected; files are opened only while a block is read, so
    many runs do not hold many file descriptors.
    """

    def __init__(self, values: np.ndarray, weights: np.ndarray | None, spill: bool) -> None:
        self.size = 0
        self.weighted = weights is not None
        self.dir: str | None = None
        self._mem: dict[str, np.ndarray] = {}
        if spill:
            self.dir = tempfile.mkdtemp(prefix="lossctl-w1-", dir=SPILL_DIR)
            self._finalizer = weakref.finalize(self, shutil.rmtree, self.dir, True)
            self._append(values, weights)
        else:
            self.size = int(values.size)
            self._mem = {"v": values}
            if weights is not None:
                self._mem["w"] = weights
                self._mem["c"] = np.cumsum(weights)

    def _append(self, values: np.ndarray, weights: np.ndarray | None) -> None:
        """Append a sorted block not below the last value (on disk only)."""
        carry = 0.0
        if self.weighted and self.size:
            carry = float(self.read("c", self.size - 1, self.size)[0])
        with open(self._path("v"), "ab") as f:
            values.tofile(f)
        if self.weighted:
            assert weights is not None
            with open(self._path("w"), "ab") as f:
                weights.tofile(f)
            with open(self._path("c"), "ab") as f:
                (carry + np.cumsum(weights)).tofile(f)
        self.size += int(values.size)

    @classmethod
    def build(cls, values: np.ndarray, weights: np.ndarray | None, spill: bool = False) -> "_Run | None":
        if values.size == 0:
            return None
        if weights is None:
            return cls(np.sort(values, kind="stable"), None, spill)
        order = np.argsort(values, kind="stable")
        return cls(values[order], np.asarray(weights, float)[order], spill)

    @classmethod
    def consolidate(cls, runs: list["_Run"]) -> list["_Run"]:
        """One run holding every run's values: a k-way merge, streamed to disk when any
        run is there, so the gradient pass searches one run per side, not k."""
        if len(runs) <= 1:
            return runs
        weighted = any(r.weighted for r in runs)
        if not any(r.on_disk for r in runs):
            v = np.concatenate([r.array("v") for r in runs])
            w = np.concatenate([r.read("w", 0, r.size) for r in runs]) if weighted else None
            out = cls.build(v, w)
            return [out] if out is not None else []
        merged = cls(np.empty(0), np.empty(0) if weighted else None, spill=True)
        chunk = max(MERGE_MIN_CHUNK, SPILL_VALUES // len(runs))
        for v, dw, _ in _merged_blocks(runs, [], chunk):
            merged._append(v, dw if weighted else None)
        return [merged]

    def _path(self, key: str) -> str:
        assert self.dir is not None
        return os.path.join(self.dir, key + ".f64")

    def read(self, key: str, start: int, stop: int) -> np.ndarray:
        if key in ("w", "c") and not self.weighted:
            return np.ones(stop - start) if key == "w" else np.arange(start + 1, stop + 1, dtype=float)
        if self.dir is None:
            return self._mem[key][start:stop]
        return np.fromfile(self._path(key), dtype=np.float64, count=stop - start, offset=8 * start)

    def array(self, key: str) -> np.ndarray:
        """The whole array; memory-mapped when on disk (read only where touched)."""
        if self.dir is None:
            return self._mem[key]
        return np.memmap(self._path(key), dtype=np.float64, mode="r", shape=(self.size,))

    def cum_at(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Total weight of the run's values < x and ≤ x, for sorted queries x.

        One binary search per query; the second only where x ties a run value.
        """
        v = self.array("v")
        lo = np.searchsorted(v, x, side="left")
        hi = lo.copy()
        inside = np.flatnonzero(lo < self.size)
        tie = inside[v[lo[inside]] == x[inside]]
        if tie.size:
            hi[tie] = np.searchsorted(v, x[tie], side="right")
        if not self.weighted:
            return lo.astype(float), hi.astype(float)
        c = self.array("c")
        return self._cum(c, lo), self._cum(c, hi)

    @staticmethod
    def _cum(c: np.ndarray, idx: np.ndarray) -> np.ndarray:
        out = np.zeros(idx.shape)
        pos = idx > 0
        out[pos] = c[idx[pos] - 1]
        return out

    @property
    def on_disk(self) -> bool:
        return self.dir is not None


def _merged_blocks(runs_y: list[_Run], runs_p: list[_Run], chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(values, dF, dG) blocks in ascending order of value over every run (a k-way merge).

    Each step reads up to ``chunk`` values from each run, emits everything not above
    the smallest last-read value of the runs that have more, and keeps the rest.
    """
    srcs = [(r, 0) for r in runs_y] + [(r, 1) for r in runs_p]
    k = len(srcs)
    pos = [0] * k
    bv: list[np.ndarray] = [np.empty(0)] * k
    bw: list[np.ndarray] = [np.empty(0)] * k
    while True:
        for i, (r, _) in enumerate(srcs):
            if bv[i].size == 0 and pos[i] < r.size:
                stop = min(r.size, pos[i] + chunk)
                bv[i], bw[i] = r.read("v", pos[i], stop), r.read("w", pos[i], stop)
                pos[i] = stop
        live = [i for i in range(k) if bv[i].size]
        if not live:
            return
        more = [bv[i][-1] for i in live if pos[i] < srcs[i][0].size]
        bound = min(more) if more else math.inf
        vals, df, dg = [], [], []
        for i in live:
            m = bv[i].size if bound == math.inf else int(np.searchsorted(bv[i], bound, side="right"))
            if m == 0:
                continue
            v, w = bv[i][:m], bw[i][:m]
            vals.append(v)
            z = np.zeros(m)
            df.append(w if srcs[i][1] == 0 else z)
            dg.append(z if srcs[i][1] == 0 else w)
            bv[i], bw[i] = bv[i][m:], bw[i][m:]
        v = np.concatenate(vals)
        order = np.argsort(v, kind="stable")
        yield v[order], np.concatenate(df)[order], np.concatenate(dg)[order]


def _w1(runs_y: list[_Run], runs_p: list[_Run], wy: float, wp: float, chunk: int | None = None) -> float:
    """∫|F − G| over the merged breakpoints: Σ |F(x_j) − G(x_j)|·(x_{j+1} − x_j)."""
    if not runs_y or not runs_p or not (wy > 0 and wp > 0):
        return math.nan
    k = len(runs_y) + len(runs_p)
    if chunk is None:
        chunk = max(MERGE_MIN_CHUNK, SPILL_VALUES // k)
    acc = Sum(1)
    f = g = 0.0
    prev_x: float | None = None
    same = wy == wp
    for v, df, dg in _merged_blocks(runs_y, runs_p, chunk):
        cf = f + np.cumsum(df)
        cg = g + np.cumsum(dg)
        if same:  # one normalisation at the end: exact integer differences when unweighted
            d = np.abs(cf - cg)
            d0 = abs(f - g)
        else:
            d = np.abs(cf / wy - cg / wp)
            d0 = abs(f / wy - g / wp)
        x0 = v[0] if prev_x is None else prev_x
        before = np.concatenate(([d0], d[:-1]))
        xs = np.concatenate(([x0], v[:-1]))
        acc.add(np.array([float(np.sum(before * (v - xs)))]))
        f, g, prev_x = float(cf[-1]), float(cg[-1]), float(v[-1])
    total = float(acc.value[0])
    return total / wy if same else total


def _w1_grad(runs_y, runs_p, yhat, w, total: float, n: int) -> np.ndarray:
    """∂(N·W₁)/∂ŷᵢ: the mean of the left and right derivatives of N·∫|F − G|.

    With D⁻ = G − F just left of ŷᵢ and D = G − F at ŷᵢ (raw weights), moving ŷᵢ
    right turns D into D − wᵢ on [ŷᵢ, ŷᵢ + ε), moving it left turns D⁻ into D⁻ + wᵢ
    on [ŷᵢ − ε, ŷᵢ). Where ŷᵢ ties with no other value both agree; at a tie (a kink)
    their mean is used, which is 0 at a tie between ŷᵢ and its rank-matched y.
    """
    yhat = np.asarray(yhat, float)
    wi = np.ones(yhat.size) if w is None else np.asarray(w, float)
    if yhat.size == 0:
        return np.empty(0)
    order = np.argsort(yhat, kind="stable")  # sorted queries: searchsorted walks forward
    x = yhat[order]
    f_lt, f_le, g_lt, g_le = (np.zeros(x.size) for _ in range(4))
    for r in runs_y:
        lt, le = r.cum_at(x)
        f_lt += lt
        f_le += le
    for r in runs_p:
        lt, le = r.cum_at(x)
        g_lt += lt
        g_le += le
    a = wi[order]
    dm = g_lt - f_lt
    dp = g_le - f_le
    right = np.abs(dp - a) - np.abs(dp)
    left = np.abs(dm) - np.abs(dm + a)
    out = np.empty(yhat.size)
    out[order] = (n / total) * 0.5 * (right + left) if total > 0 else 0.0
    return out


def _scalar(b: Batch, role: str) -> np.ndarray:
    x = np.asarray(b[role], dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    return x


class WassersteinState(State):
    """Exact W₁ between the target and prediction samples, in bounded memory.

    Batches are buffered; past SPILL_VALUES values the buffer is sorted and written
    to disk as runs. The value is an exact chunked k-way merge of the runs; for the
    gradient (a second pass) the runs of each side are first merged into one, where
    each ŷᵢ is looked up by binary search. Merging two states is the union of their runs.
    """

    decomposable = False
    unmergeable_reason = ("its state cannot be saved to a file: exact W₁ keeps every sample (sorted runs, spilled "
                          "to a temporary folder past a few million values), not sums that a shard could send")

    def __reduce__(self) -> Any:
        raise TypeError(f"wasserstein: {self.unmergeable_reason}")  # its runs may be files on this machine

    def __init__(self, params: dict[str, Any], ctx: Context) -> None:
        self.ctx = ctx
        self.two_pass = bool(ctx.grad)
        self.n = 0
        self.wsum = Sum(1)
        self.weighted = False
        self._buf: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._buffered = 0
        self.runs_y: list[_Run] = []
        self.runs_p: list[_Run] = []
        self.spills = 0
        self.grad = GradSummary(ctx.rows_bound, sample=ctx.sample_grads) if ctx.grad else None
        self._grad_rows = 0
        self._value: float | None = None
        self._consolidated = False

    def validate(self, b: Batch) -> None:
        for role in ("target", "pred"):
            x = np.asarray(b[role])
            if x.ndim == 2 and x.shape[1] != 1:
                raise InputError.at(
                    f"the {role} of wasserstein is one column of samples, not {x.shape[1]}",
                    source=b.source or None,
                )

    def update(self, b: Batch) -> None:
        if b.n == 0:
            return
        y = np.array(_scalar(b, "target"), dtype=np.float64)  # copies: batches may be views of Arrow buffers
        p = np.array(_scalar(b, "pred"), dtype=np.float64)
        w = None if b.weight is None else np.array(b.weight, dtype=np.float64)
        self.weighted |= w is not None
        self.n += b.n
        self.wsum.add(np.array([float(b.n) if w is None else float(np.sum(w))]))
        self._buf.append((y, p, w))
        self._buffered += 2 * b.n
        self._value = None
        self._consolidated = False
        if self._buffered >= SPILL_VALUES:
            self._flush(spill=True)

    def _flush(self, spill: bool) -> None:
        if not self._buf:
            return
        y = np.concatenate([t[0] for t in self._buf])
        p = np.concatenate([t[1] for t in self._buf])
        w = None
        if self.weighted:
            w = np.concatenate([t[2] if t[2] is not None else np.ones(t[0].size) for t in self._buf])
        self._buf, self._buffered = [], 0
        for runs, x in ((self.runs_y, y), (self.runs_p, p)):
            r = _Run.build(x, w, spill=spill)
            if r is not None:
                runs.append(r)
        if spill:
            self.spills += 1

    def merge(self, other: State) -> None:
        assert isinstance(other, WassersteinState)
        self.n += other.n
        self.wsum.merge(other.wsum)
        self.weighted |= other.weighted
        self.runs_y += other.runs_y
        self.runs_p += other.runs_p
        self.spills += other.spills
        self._buf += other._buf
        self._buffered += other._buffered
        self._value = None
        self._consolidated = False
        if self.grad is not None and other.grad is not None:
            self.grad.merge(other.grad)
            self._grad_rows += other._grad_rows
        if self._buffered >= SPILL_VALUES:
            self._flush(spill=True)

    def total_weight(self) -> float:
        return float(self.wsum.value[0])

    def update2(self, b: Batch) -> None:
        if b.n == 0 or self.grad is None:
            return
        if not self._consolidated:
            self._flush(spill=False)
            self.runs_y, self.runs_p = _Run.consolidate(self.runs_y), _Run.consolidate(self.runs_p)
            self._consolidated = True
        g = _w1_grad(self.runs_y, self.runs_p, _scalar(b, "pred"), b.weight, self.total_weight(), self.n)
        self.grad.update(g, b.row_keys)
        self._grad_rows += b.n

    def value(self) -> float:
        self._flush(spill=False)
        if self._value is None:
            w = self.total_weight()
            self._value = _w1(self.runs_y, self.runs_p, w, w) if self.n else math.nan
        return self._value

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "value": self.value()}
        notes = []
        if self.spills:
            notes.append(
                f"exact W₁ by external merge: {self.n} target and {self.n} prediction values "
                f"sorted in {2 * self.spills} runs on disk (at most {SPILL_VALUES} values in memory)"
            )
        if self.grad is not None and self._grad_rows:
            out["grad"] = self.grad.result(1.0)
            out["grad_sample"] = self.grad.sample(1.0)
        if notes:
            out["notes"] = notes
        return out


# ---------------------------------------------------------------- registry

DIST = "distribution"

P_ROLE = Role("target", vector=True, help="target distribution P (C columns per row, each row sums to 1)",
              names=("p_*", "p_true_*", "target_p_*"), domain=DISTRIBUTION)
Q_ROLE = Role("pred", vector=True, help="predicted distribution Q (C columns; logits with logits=true)",
              names=("q_*", "q_pred_*", "pred_q_*"), domain=DISTRIBUTION, logit_domain=REAL)
# js and tv read probabilities only: their Q binds by its own names (or -p), never to the
# generic prediction names, which include logit_* (kl reads those as logits)
Q_PROB_ROLE = Role("pred", vector=True, help="predicted distribution Q (C columns of probabilities)",
                   names=Q_ROLE.names, names_only=True, domain=DISTRIBUTION)
NORMALIZE = Param("normalize", "bool", False,
                  "divide each row of P and Q by its sum (else rows must sum to 1 within 1e-6)")
BASE = Param("base", "float", math.e, "logarithm base: e gives nats, 2 gives bits (not 1)", Interval(0, math.inf))


def _factory(kernel: type):
    return lambda params, ctx, k=kernel: k(params, ctx)


DISTILL_TARGET = Role("target", required=False, help="optional true class 0..C−1 for the hard-label term",
                      names=("label", "labels", "y", "y_true", "target", "class"), names_only=True, domain=CLASS)

_EXAMPLE_P_0_P_1_P_2 = (  # the examples' data (a test runs every example)
    "p_0,p_1,p_2,q_0,q_1,q_2\n"
    "0.7,0.2,0.1,0.6,0.3,0.1\n"
    "0.1,0.8,0.1,0.2,0.6,0.2\n"
    "0.3,0.3,0.4,0.25,0.25,0.5\n"
)

_EXAMPLE_TARGET_SAMPLE_PRED_SAMPLE_WEIGHT = (  # the examples' data (a test runs every example)
    "target_sample,pred_sample,weight\n"
    "1.2,0.9,1.0\n"
    "3.4,3.9,0.5\n"
    "2.2,2.0,2.0\n"
    "0.5,1.1,1.0\n"
)

_EXAMPLE_MU_0_MU_1_LOGVAR_0 = (  # the examples' data (a test runs every example)
    "mu_0,mu_1,logvar_0,logvar_1\n"
    "0.5,-0.8,-1.8,-0.4\n"
    "-0.1,0.3,-0.2,0.1\n"
    "1.2,0.0,-0.9,-1.1\n"
)

_EXAMPLE_TEACHER_0_TEACHER_1_TEACHER_2 = (  # the examples' data (a test runs every example)
    "teacher_0,teacher_1,teacher_2,student_0,student_1,student_2,label\n"
    "2.0,0.5,-1.0,1.5,0.7,-0.8,0\n"
    "0.1,1.8,0.3,0.4,1.1,0.2,1\n"
    "-0.5,0.2,2.4,-0.2,0.1,1.6,2\n"
)


SPEC_KL = LossSpec(
    name="kl", task=DIST, roles=(P_ROLE, Q_ROLE),
    params=(
        Param("logits", "bool", False, "Q columns are logits (softmax applied, log-sum-exp form)"),
        BASE, NORMALIZE,
    ),
    factory=_factory(KLKernel),
    properties=Properties(
        takes=("distribution", "logit"), minimiser="distribution", imbalance="no",
        formula="ℓ = KL(P‖Q) = Σ_c P_c log(P_c/Q_c) / log(base); 0·log 0 = 0; P_c > 0 = Q_c gives +inf",
        gradient="∂ℓ/∂Q_c = −P_c/(Q_c log base); with logits ∂ℓ/∂z = (softmax(z) − P)/log base",
        convex=True, differentiable="everywhere Q > 0 (+inf where Q_c = 0 < P_c)", robust="no",
        estimates="Q = P (minimised at the target distribution; forward KL is mode-covering)",
        output="distribution", cost="low",
        use_when="comparing predicted class distributions with soft targets; VAEs, variational inference, distillation",
        avoid_when="Q can be exactly 0 where P is not (KL is +inf), or you need a symmetric or bounded distance (use js or tv)",
        references=("scipy.special.rel_entr", "torch.nn.functional.kl_div(log Q, P, reduction='batchmean')",
                    "Kullback & Leibler 1951"),
        outlier_note="sensitive: a near-zero Q_c where P_c > 0 dominates the mean",
        conventions=(
            "KL(P‖Q) with P the target: torch's kl_div(input, target) takes log Q first and P second; its "
            "reduction='mean' divides by N·C, 'batchmean' by N (what lossctl reports). An infinite row is "
            "reported as value inf (JSON null with \"nonfinite\": \"inf\") and counted in inf_rows, not "
            "clipped. Rows must sum to 1 within 1e-6 unless normalize=true; with normalize the gradient "
            "is taken through the normalisation (w.r.t. the raw Q columns)."
        ),
    ),
    aliases=("kl_div", "kld"), default_for=(DIST,), summary="Kullback–Leibler divergence KL(P‖Q) per row",
    example=heredoc("lossctl eval - -l kl:base=2 --grad", _EXAMPLE_P_0_P_1_P_2),
)
SPEC_JS = LossSpec(
    name="js", task=DIST, roles=(P_ROLE, Q_PROB_ROLE), params=(BASE, NORMALIZE),
    factory=_factory(JSKernel),
    properties=Properties(
        takes=("distribution",), minimiser="distribution", imbalance="no",
        formula="ℓ = ½KL(P‖M) + ½KL(Q‖M), M = ½(P + Q), divided by log(base)",
        gradient="∂ℓ/∂Q_c = ½ log(2Q_c/(P_c + Q_c)) / log base (½ log 2 / log base where P_c = Q_c = 0)",
        convex=True, differentiable="everywhere Q > 0", robust="bounded-influence",
        estimates="Q = P", output="distribution", cost="low",
        use_when="a symmetric, bounded (≤ log 2) divergence that stays finite when supports differ",
        avoid_when="you need gradients that do not vanish for far-apart distributions (GANs: use wasserstein)",
        references=("scipy.spatial.distance.jensenshannon(P, Q, base) ** 2", "Lin 1991"),
        outlier_note="bounded: each row contributes at most log 2",
        conventions=(
            "The divergence, not its square root: scipy's jensenshannon returns the distance √JS, so "
            "jensenshannon(P, Q)**2 is the oracle. scipy also normalises every row silently; lossctl "
            "checks the sums unless normalize=true."
        ),
    ),
    aliases=("jensen_shannon", "jsd"), default_for=(DIST,), summary="Jensen–Shannon divergence per row",
    example=heredoc("lossctl eval - -l js:base=2", _EXAMPLE_P_0_P_1_P_2),
)
SPEC_TV = LossSpec(
    name="tv", task=DIST, roles=(P_ROLE, Q_PROB_ROLE), params=(NORMALIZE,),
    factory=_factory(TVKernel),
    properties=Properties(
        takes=("distribution",), minimiser="distribution", imbalance="no",
        formula="ℓ = sup_A |P(A) − Q(A)| = ½ Σ_c |P_c − Q_c|",
        gradient="∂ℓ/∂Q_c = ½ sign(Q_c − P_c), 0 where Q_c = P_c",
        convex=True, differentiable="everywhere except where some Q_c = P_c", robust="yes",
        estimates="Q = P (a median-like fit)", output="distribution", cost="low",
        use_when="a symmetric metric in [0, 1] that obeys the triangle inequality",
        avoid_when="you need a smooth gradient",
        references=("Levin, Peres & Wilmer, Markov Chains and Mixing Times, §4.1",),
        outlier_note="robust: bounded by 1 per row",
        conventions="TV = ½ Σ|P − Q| = sup_A |P(A) − Q(A)|: symmetric, a metric, in [0, 1].",
    ),
    aliases=("total_variation",), default_for=(DIST,), summary="total variation distance per row",
    example=heredoc("lossctl eval - -l tv --grad", _EXAMPLE_P_0_P_1_P_2),
)
SPEC_WASSERSTEIN = LossSpec(
    name="wasserstein", task=DIST,
    roles=(
        Role("target", help="samples of the target distribution (one column)",
             names=("target_sample", "p_sample", "y_sample"), domain=REAL),
        Role("pred", help="samples of the predicted distribution (one column)",
             names=("pred_sample", "q_sample", "yhat_sample"), domain=REAL),
    ),
    params=(),
    factory=lambda params, ctx: WassersteinState(params, ctx),
    properties=Properties(
        takes=("value",), minimiser="distribution", imbalance="no",
        formula="W₁ = ∫ |F(x) − G(x)| dx, F and G the empirical CDFs of the target and prediction columns "
                "(one number for the file; sample weights on both sides)",
        gradient="∂(N·W₁)/∂ŷᵢ = N·wᵢ/Σw · (±1 by where ŷᵢ's jump meets F − G); for equal, unweighted samples "
                 "sign(ŷ₍ₖ₎ − y₍ₖ₎) with y and ŷ matched by rank; at ties the mean of the left and right derivatives",
        convex=None, differentiable="everywhere except where a ŷᵢ ties another sample value", robust="yes",
        estimates="the distribution of y (matches all quantiles)", output="distribution (of samples)",
        cost="high",
        use_when="comparing the distribution of predictions with that of the targets (calibration of spread, "
                 "WGAN critics), when supports may not overlap",
        avoid_when="you need a per-row loss: W₁ between samples is a whole-set statistic",
        references=("scipy.stats.wasserstein_distance(y, yhat, w, w)", "Arjovsky et al. 2017 (WGAN)",
                    "Villani, Optimal Transport (2009)"),
        outlier_note="robust-ish: an outlier costs in proportion to its distance",
        conventions=(
            "Exact, not approximated: W₁ in one dimension is the area between the two empirical CDFs, "
            "computed by sorting both samples and merging them. Memory: up to 2^22 values are sorted in "
            "RAM; beyond that the sorted runs are spilled to disk in the temporary directory ($TMPDIR, 8 bytes "
            "a value, 24 with weights) and combined by a chunked k-way merge, so a file larger than memory "
            "gives the same number as scipy. The gradient needs a second pass (each ŷᵢ is located in "
            "every sorted run by binary search). Not a mean over rows: no --reduction sum/none and no "
            "bootstrap interval."
        ),
    ),
    aliases=("w1", "emd", "earth_movers"), default_for=(DIST,), row_mean=False,
    passes=(Pass("second", grad=True, why="each ŷᵢ is located in the whole data's sorted samples"),),
    merges=False,
    merge_note="exact W₁ sorts the whole of both samples (spilling sorted runs to a temporary folder): "
               "its state is not saved to a file",
    summary="1-D Wasserstein-1 distance between the target and prediction samples",
    example=heredoc("lossctl eval - -w weight --grad", _EXAMPLE_TARGET_SAMPLE_PRED_SAMPLE_WEIGHT),
)
SPEC_VAE_KL = LossSpec(
    name="vae_kl", task=DIST,
    roles=(
        Role("mu", vector=None, help="the encoder's means μ (J columns)", names=("mu_*", "mu", "z_mean_*", "z_mean"),
             domain=REAL),
        Role("logvar", vector=None, help="the encoder's log-variances log σ² (J columns)",
             names=("logvar_*", "log_var_*", "logvar", "log_var", "z_log_var_*"), domain=REAL),
    ),
    params=(),
    factory=_factory(VAEKLKernel),
    properties=Properties(
        takes=("posterior",), minimiser="prior", imbalance="no",
        formula="ℓ = KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_j (e^{logvar_j} + μ_j² − 1 − logvar_j)",
        gradient="∂ℓ/∂μ = μ; ∂ℓ/∂logvar = ½(e^{logvar} − 1)",
        convex=True, differentiable="everywhere", robust="no",
        estimates="μ = 0, logvar = 0 (the prior N(0, I))", output="distribution (Gaussian posterior)",
        cost="low",
        use_when="the regulariser of a VAE: how far each encoded posterior is from the N(0, I) prior",
        avoid_when="the posterior is not a diagonal Gaussian",
        references=("Kingma & Welling 2014, Appendix B",),
        outlier_note="sensitive: grows like e^{logvar} and μ²",
        conventions=(
            "Summed over the J latent dimensions, averaged over rows (as the usual PyTorch VAE example "
            "sums, then divides by the batch). Reads log σ², not σ or log σ."
        ),
    ),
    grad_roles=("mu", "logvar"), default_for=(DIST,),
    summary="KL of a diagonal Gaussian posterior to N(0, I)",
    example=heredoc("lossctl eval - --grad", _EXAMPLE_MU_0_MU_1_LOGVAR_0),
)
SPEC_DISTILL = LossSpec(
    name="distill", task=DIST,
    roles=(
        Role("teacher", vector=True, help="the teacher's logits (C columns)", names=("teacher_*", "t_logit_*"),
             domain=REAL),
        Role("student", vector=True, help="the student's logits (C columns)", names=("student_*", "s_logit_*"),
             domain=REAL),
        DISTILL_TARGET,
    ),
    params=(
        Param("temperature", "float", 2.0, "softmax temperature T for both teacher and student", Interval(0, math.inf)),
        Param("alpha", "float", 0.5, "weight of the distillation term (1.0 is used when no target is bound)",
              Interval(0, 1, "both")),
    ),
    factory=_factory(DistillKernel),
    properties=Properties(
        takes=("logit",), minimiser="distribution", imbalance="no",
        formula="ℓ = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y)",
        gradient="∂ℓ/∂s = α·T·(softmax(s/T) − softmax(t/T)) + (1 − α)(softmax(s) − onehot(y))",
        convex=True, differentiable="everywhere", robust="no",
        estimates="the student's softened distribution equal to the teacher's", output="distribution",
        cost="low",
        use_when="training a small student on a teacher's soft labels (knowledge distillation)",
        avoid_when="the teacher is poorly calibrated or wrong on much of the data",
        references=("Hinton, Vinyals & Dean 2015", "torch.nn.functional.kl_div(log_softmax(s/T), softmax(t/T), "
                    "reduction='batchmean') * T**2 + cross_entropy(s, y)"),
        outlier_note="sensitive through the cross-entropy term",
        conventions=(
            "The T² factor keeps the soft term's gradient scale independent of T (Hinton et al.). Without "
            "a target column the hard-label term cannot be computed and the effective α is 1.0 whatever "
            "alpha says; results report alpha_effective, distill_term (T²·KL) and ce_term."
        ),
    ),
    aliases=("kd", "distillation"), grad_roles=("student",), default_for=(DIST,),
    summary="knowledge-distillation loss (soft teacher targets + hard labels)",
    example=heredoc("lossctl eval - -l distill:temperature=4,alpha=0.7 --grad", _EXAMPLE_TEACHER_0_TEACHER_1_TEACHER_2),
)


# every loss of this family, in the order `lossctl list` shows them (lossctl.losses.ALL)
LOSSES: tuple[LossSpec, ...] = (
    SPEC_KL,
    SPEC_JS,
    SPEC_TV,
    SPEC_WASSERSTEIN,
    SPEC_VAE_KL,
    SPEC_DISTILL,
)
