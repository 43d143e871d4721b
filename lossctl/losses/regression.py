"""Regression losses: r = ŷ − y, one value per element, a row's loss is the mean
over its outputs (one output unless target and prediction span K columns)."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from lossctl.engine import Batch, RowMeanKernel
from lossctl.accumulate import Scaled
from lossctl.losses._numerics import BLOCK, TINY, FusedSums, Scratch, blockwise, dot, ldexp, sumsq

FUSED_BLOCK = 1 << 17  # rows per fused block: one per 131,072-row batch (measured best of 2¹⁵..2¹⁷)
from lossctl.spec import REAL, Interval, LossSpec, Param, Pass, Properties, Role, heredoc

LOG2 = math.log(2.0)

# ---------------------------------------------------------------- the maths


def mse(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """Squared error r², r = ŷ − y, per element."""
    return blockwise(lambda y, p: _mse_r(p - y), y, yhat)


def _mse_r(r: np.ndarray) -> np.ndarray:
    return r * r


def mse_grad(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """∂r²/∂ŷ = 2r."""
    return blockwise(lambda y, p: _mse_grad_r(p - y), y, yhat)


def _mse_grad_r(r: np.ndarray) -> np.ndarray:
    return 2.0 * r


def mae(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """Absolute error |r|."""
    return blockwise(lambda y, p: np.abs(p - y), y, yhat)


def _mae_r(r: np.ndarray, a: np.ndarray) -> np.ndarray:
    return a


def mae_grad(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """sign(r); 0 at r = 0, a valid subgradient."""
    return blockwise(lambda y, p: np.sign(p - y), y, yhat)


def _mae_grad_r(r: np.ndarray) -> np.ndarray:
    return np.sign(r)


def huber(y: np.ndarray, yhat: np.ndarray, *, delta: float = 1.0) -> np.ndarray:
    """½r² for |r| ≤ δ, δ(|r| − ½δ) beyond (torch ``huber_loss``)."""
    return blockwise(lambda y, p: _huber_r(p - y, np.abs(p - y), delta=delta), y, yhat)


def _huber_r(r: np.ndarray, a: np.ndarray, *, delta: float) -> np.ndarray:
    # with c = clip(r, −δ, δ): c(r − ½c) is ½r² inside and δ(|r| − ½δ) outside
    c = np.clip(r, -delta, delta)
    t = np.multiply(c, -0.5)
    t += r
    t *= c
    return t


def huber_grad(y: np.ndarray, yhat: np.ndarray, *, delta: float = 1.0) -> np.ndarray:
    """clip(r, −δ, δ)."""
    return blockwise(lambda y, p: _huber_grad_r(p - y, delta=delta), y, yhat)


def _huber_grad_r(r: np.ndarray, *, delta: float) -> np.ndarray:
    return np.clip(r, -delta, delta)


def smooth_l1(y: np.ndarray, yhat: np.ndarray, *, beta: float = 1.0) -> np.ndarray:
    """½r²/β for |r| < β, |r| − ½β beyond (torch ``smooth_l1_loss``); = huber/β."""
    return blockwise(lambda y, p: _smooth_l1_r(p - y, np.abs(p - y), beta=beta), y, yhat)


def _smooth_l1_r(r: np.ndarray, a: np.ndarray, *, beta: float) -> np.ndarray:
    return np.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


def smooth_l1_grad(y: np.ndarray, yhat: np.ndarray, *, beta: float = 1.0) -> np.ndarray:
    """r/β inside, sign(r) outside."""
    return blockwise(lambda y, p: _smooth_l1_grad_r(p - y, beta=beta), y, yhat)


def _smooth_l1_grad_r(r: np.ndarray, *, beta: float) -> np.ndarray:
    return np.where(np.abs(r) < beta, r / beta, np.sign(r))


def pinball(y: np.ndarray, yhat: np.ndarray, *, tau: float = 0.5) -> np.ndarray:
    """max(τ(y−ŷ), (τ−1)(y−ŷ)) (scikit-learn ``mean_pinball_loss``, alpha = τ)."""
    return blockwise(lambda y, p: _pinball_r(p - y, np.abs(p - y), tau=tau), y, yhat)


def _pinball_r(r: np.ndarray, a: np.ndarray, *, tau: float) -> np.ndarray:
    # max(τd, (τ−1)d) with d = −r is (1 − τ)·max(r, 0) − τ·min(r, 0): one term per row, no cancellation
    return (1.0 - tau) * np.maximum(r, 0.0) - tau * np.minimum(r, 0.0)


def pinball_grad(y: np.ndarray, yhat: np.ndarray, *, tau: float = 0.5) -> np.ndarray:
    """−τ where y > ŷ, 1 − τ where y < ŷ, 0 where equal."""
    return blockwise(lambda y, p: _pinball_grad_r(p - y, tau=tau), y, yhat)


def _pinball_grad_r(r: np.ndarray, *, tau: float) -> np.ndarray:
    # exactly 1 − τ where r > 0, −τ where r < 0, 0 at r = 0
    return np.where(r > 0, 1.0 - tau, np.where(r < 0, -tau, 0.0))


def log_cosh(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """log cosh r = log1p(2 sinh²(r/2)): exact for small r (where |r| + log1p(e^{−2|r|}) − log 2
    cancels) and, past |r| ≈ 710 where sinh² overflows, |r| − log 2."""
    return blockwise(lambda y, p: _log_cosh_r(p - y, np.abs(p - y)), y, yhat)


def _log_cosh_r(r: np.ndarray, a: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        u = np.sinh(0.5 * r)
        out = np.log1p(2.0 * (u * u))
    big = np.isinf(out)
    if big.any():
        out[big] = a[big] - LOG2
    return out


def log_cosh_grad(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """tanh(r)."""
    return blockwise(lambda y, p: np.tanh(p - y), y, yhat)


def _log_cosh_grad_r(r: np.ndarray) -> np.ndarray:
    return np.tanh(r)


# ------------------------------------------------- fused block sums
# Σℓ over one block of residuals r and, when g is given, the block's gradients written
# into g; r and t are cache-sized buffers the function may overwrite (for a loss with
# ``r_in_grad`` r *is* g when gradients are asked for). No per-row losses are written:
# this is the path of `lossctl eval` when no bootstrap or weights need them. Every sum
# is numpy's pairwise sum or :func:`dot` (as accurate), over terms of one sign.


def _fz_mse(r: np.ndarray, t: np.ndarray, g: np.ndarray | None) -> float:
    s = dot(r, r)
    if g is not None:
        r *= 2.0  # r is g
    return s


def _fz_mae(r: np.ndarray, t: np.ndarray, g: np.ndarray | None) -> float:
    if g is None:
        return float(np.add.reduce(np.abs(r, out=r)))
    np.sign(r, out=g)
    return dot(r, g)  # |r| = r·sign(r), exactly


def _fz_huber(r: np.ndarray, t: np.ndarray, g: np.ndarray | None, *, delta: float) -> float:
    # ℓ = c·r − ½c², c = clip(r, −δ, δ) (the gradient); c·r ≥ c² ≥ 0, so Σℓ ≥ ½Σc·r: no cancellation
    c = np.clip(r, -delta, delta, out=t if g is None else g)
    return dot(c, r) - 0.5 * dot(c, c)


def _fz_smooth_l1(r: np.ndarray, t: np.ndarray, g: np.ndarray | None, *, beta: float) -> float:
    # smooth L1 = huber_β / β, gradient clip(r, −β, β) / β
    s = _fz_huber(r, t, g, delta=beta) / beta
    if g is not None:
        g /= beta
    return s


def _fz_pinball(r: np.ndarray, t: np.ndarray, g: np.ndarray | None, *, tau: float) -> float:
    if g is None:
        # (1 − τ)·Σmax(r, 0) − τ·Σmin(r, 0): two sums of one sign each
        pos = np.clip(r, 0.0, np.inf, out=t)
        s_pos = float(np.add.reduce(pos))
        r -= pos  # min(r, 0), exactly
        return (1.0 - tau) * s_pos - tau * float(np.add.reduce(r))
    # g = 1 − τ (r > 0), −τ (r < 0), 0 (r = 0); ℓ = g·r exactly per row
    np.sign(r, out=g)
    if tau == 0.5:
        g *= 0.5
    else:  # max(s, 0)·(1 − τ) + min(s, 0)·τ: the constants exactly, 0 at the kink
        np.clip(g, 0.0, np.inf, out=t)
        t *= 1.0 - tau
        np.clip(g, -np.inf, 0.0, out=g)
        g *= tau
        g += t
    return dot(g, r)


def _fz_log_cosh(r: np.ndarray, t: np.ndarray, g: np.ndarray | None) -> float:
    if g is not None:
        np.tanh(r, out=g)
    # log cosh r = log1p(2 sinh²(r/2)): no cancellation for small r, where |r| + log1p(e^{−2|r|}) − log 2
    # loses every digit (r = 1e−5: ℓ = 5e−11 from terms of size 0.7)
    with np.errstate(over="ignore"):
        np.multiply(r, 0.5, out=t)
        np.sinh(t, out=t)
        np.square(t, out=t)
        t *= 2.0
        np.log1p(t, out=t)
    s = float(np.add.reduce(t))
    if s == math.inf:  # sinh² overflows past |r| ≈ 710, where log cosh r = |r| − log 2 to the last digit
        big = np.isinf(t)
        t[big] = np.abs(r[big]) - LOG2
        s = float(np.add.reduce(t))
    return s


# ---------------------------------------------------------------- kernels


class Elementwise(FusedSums, RowMeanKernel):
    """A regression loss applied element by element; a row is the mean of its outputs.

    The residual r = ŷ − y and |r| are computed once per batch and shared by every
    regression loss evaluated on the same columns.
    """

    fn: Callable[..., np.ndarray]  # f(r, |r|, **params)
    grad_fn: Callable[..., np.ndarray]  # g(r, **params)
    fused: Callable[..., float] | None = None  # Σℓ (and g) over a block, in place: see _fz_mse
    r_in_grad = False  # `fused` may take the gradient block itself as r
    keys: tuple[str, ...] = ()
    uses_abs = True

    def __init__(self, params: dict[str, Any], ctx: Any) -> None:
        super().__init__(params, ctx)
        self.kw = {k: params[k] for k in self.keys}
        self._buffer = Scratch()

    def validate(self, b: Batch) -> None:
        y, yhat = b["target"], b["pred"]
        if y.ndim != yhat.ndim or (y.ndim == 2 and y.shape[1] != yhat.shape[1]):
            from lossctl.errors import InputError

            wy = 1 if y.ndim == 1 else y.shape[1]
            wp = 1 if yhat.ndim == 1 else yhat.shape[1]
            raise InputError.at(
                f"target has {wy} columns but the prediction has {wp}", source=b.source or None
            )

    def rows(self, b: Batch, grad: bool):
        y, p = b["target"], b["pred"]
        # r² of r near 1e154 is inf row by row: intended (the sums are rescaled), and no warning
        with np.errstate(over="ignore", invalid="ignore"):
            if y.ndim == 1:
                return (*self._blocks(y, p, grad), None)
            r = p - y
            loss = type(self).fn(r, np.abs(r), **self.kw) if self.uses_abs else type(self).fn(r, **self.kw)
            g = type(self).grad_fn(r, **self.kw) if grad else None
        if loss.ndim == 2:
            k = loss.shape[1]
            loss = loss.mean(axis=1)
            if g is not None:
                g = g / k
        return loss, ({"pred": g} if g is not None else None), None

    def sums_rows(self, b: Batch, grad: bool):
        # the fused sums, with the per-row losses written in the same pass (for the bootstrap)
        if type(self)._fused is not Elementwise._fused or b.weight is not None:
            return None
        loss = self._buffer("loss", b.n)
        fused = self._fused(b, grad, loss)
        if fused is None:
            return None
        return fused[0], (None if fused[1] is None else {"pred": fused[1]}), [loss, 1.0]

    def _fused(self, b: Batch, grad: bool, loss: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None] | None:
        # cache-sized blocks, one output column, no weights (FusedSums); ``loss``: also write ℓ per row
        fz = type(self).fused
        y, p = b["target"], b["pred"]
        if fz is _fz_mse and y.ndim == 1 and b.weight is not None:
            return self._weighted_mse(b, grad)
        if fz is None or y.ndim != 1 or b.weight is not None:
            return None
        n = y.shape[0]
        g = self._buffer("grad", n) if grad else None
        r_buf, t_buf = self._buffer("r", min(n, FUSED_BLOCK)), self._buffer("t", min(n, FUSED_BLOCK))
        r_is_g = g is not None and type(self).r_in_grad
        kw, fn, uses_abs = self.kw, type(self).fn, self.uses_abs
        total = 0.0
        with np.errstate(over="ignore", invalid="ignore"):  # an overflowing sum is caught below
            for s in range(0, n, FUSED_BLOCK):
                e = min(n, s + FUSED_BLOCK)
                gb = None if g is None else g[s:e]
                r = np.subtract(p[s:e], y[s:e], out=gb if r_is_g else r_buf[: e - s])
                if loss is not None:  # (before fz, which may overwrite r)
                    loss[s:e] = fn(r, np.abs(r), **kw) if uses_abs else fn(r, **kw)
                total += fz(r, t_buf[: e - s], gb, **kw)
        if fz is _fz_mse and not TINY <= total < math.inf and not math.isnan(total):
            # Σr² left the double range (r near 1e154 or 1e-170): rescaled, the mean may well be finite
            with np.errstate(over="ignore"):
                sq, ex = sumsq(p - y)
            if ex:
                return Scaled(np.array([sq, float(n)]), np.array([ex, 0])), g
        return np.array([total, float(n)]), g

    @staticmethod
    def _weighted_mse(b: Batch, grad: bool) -> tuple[np.ndarray | Scaled, np.ndarray | None]:
        # Σwr² = Σ(√w·r)² by sumsq: w·r² may overflow row by row where the weighted mean does not
        w = b.weight
        with np.errstate(over="ignore", invalid="ignore"):
            r = b["pred"] - b["target"]
            sq, ex = sumsq(r * np.sqrt(w))
            g = 2.0 * r * w if grad else None
        sums = np.array([sq, float(np.sum(w))])
        return (Scaled(sums, np.array([ex, 0])) if ex else sums), g

    def _blocks(self, y: np.ndarray, p: np.ndarray, grad: bool) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """ℓ (and g) in cache-sized blocks: r = ŷ − y and every temporary stay in cache."""
        n = y.shape[0]
        fn, gfn, kw, uses_abs = type(self).fn, type(self).grad_fn, self.kw, self.uses_abs
        loss = self._buffer("loss", n)
        g = self._buffer("grad", n) if grad else None
        buf = self._buffer("r", min(n, BLOCK))
        for s in range(0, n, BLOCK):
            e = min(n, s + BLOCK)
            r = np.subtract(p[s:e], y[s:e], out=buf[: e - s])
            loss[s:e] = fn(r, np.abs(r), **kw) if uses_abs else fn(r, **kw)
            if g is not None:
                g[s:e] = gfn(r, **kw)
        return loss, ({"pred": g} if g is not None else None)


def _kernel(name: str, fn, grad_fn, keys: tuple[str, ...] = (), uses_abs: bool = True,
            fused=None, r_in_grad: bool = False) -> type[Elementwise]:
    """An Elementwise kernel class named ``name`` and bound to that name in this module, so
    that it (and a state holding one) pickles by reference with the standard ``pickle``."""
    if name in globals():
        raise ValueError(f"kernel class name {name!r} is taken in {__name__}")
    cls = type(name, (Elementwise,), {"fn": staticmethod(fn), "grad_fn": staticmethod(grad_fn), "keys": keys,
                                      "uses_abs": uses_abs, "r_in_grad": r_in_grad,
                                      "fused": staticmethod(fused) if fused else None,
                                      "__module__": __name__, "__qualname__": name})
    globals()[name] = cls
    return cls


class RMSEKernel(Elementwise):
    """scikit-learn's ``root_mean_squared_error``: each output's √(Σwᵢr²ᵢₖ / Σw), averaged
    over the K outputs (``multioutput="uniform_average"``). A function of sums, not a mean of rows.
    """

    row_mean = False
    fused = None

    def __init__(self, params: dict[str, Any], ctx: Any) -> None:
        super().__init__(params, ctx)
        # each of K > 1 outputs has its own 1/RMSEₖ: the gradient needs the final sums, a second pass
        self.two_pass_grad = (ctx.n_classes or 1) > 1

    def _fused(self, b: Batch, grad: bool):
        # Σwᵢrᵢₖ² = Σ(√wᵢ rᵢₖ)² per output by sumsq: exact to round-off even where r² over- or underflows
        # (residuals near 1e154 or 1e-170 have a finite, non-zero RMSE)
        y, p, w = b["target"], b["pred"], b.weight
        with np.errstate(over="ignore", invalid="ignore"):
            r = p - y
        with np.errstate(over="ignore", invalid="ignore"):
            rw = r if w is None else r * (np.sqrt(w) if r.ndim == 1 else np.sqrt(w)[:, None])
        cols = [rw] if rw.ndim == 1 else [np.ascontiguousarray(rw[:, j]) for j in range(rw.shape[1])]
        parts = [sumsq(c) for c in cols]
        sums = np.array([s for s, _ in parts] + [float(b.n) if w is None else float(np.sum(w))])
        exps = np.array([e for _, e in parts] + [0])
        out = Scaled(sums, exps) if exps.any() else sums
        grads = None
        if grad and not self.two_pass_grad:
            with np.errstate(over="ignore", invalid="ignore"):
                grads = {"pred": r if w is None else r * (w if r.ndim == 1 else w[:, None])}
        return out, grads

    def sums_and_grads(self, b: Batch):
        return self._fused(b, grad=True)

    def value_parts(self, mant, exp):
        # mean over outputs of √(Σr²ₖ/Σw), each √ of m·2ᵈ taken as √(m·2^(d mod 2))·2^(d div 2)
        vals = []
        for m, d in zip(mant[:-1] / mant[-1], exp[:-1] - exp[-1]):
            d = int(d)
            vals.append(ldexp(math.sqrt(m * (2.0 if d % 2 else 1.0)), d // 2) if m >= 0 else math.nan)
        return float(np.mean(vals))

    def grad_scale_parts(self, mant, exp, n):
        rmse = self.value_parts(mant, exp)
        w = ldexp(float(mant[-1]), int(exp[-1]))
        return (n / w) / rmse if rmse > 0 and w > 0 else 0.0

    def stats(self, b: Batch, grad: bool):
        w = b.weight
        with np.errstate(over="ignore", invalid="ignore"):  # per-row r² may overflow; the sums are rescaled
            r = b["pred"] - b["target"]
            sq = r * r
            if w is not None:
                sq *= w if sq.ndim == 1 else w[:, None]
            grads = None
            if grad and not self.two_pass_grad:
                grads = {"pred": r if w is None else r * (w if r.ndim == 1 else w[:, None])}
        return [sq, 1.0 if w is None else w], grads

    def value(self, totals):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(totals[..., :-1] / totals[..., -1:]).mean(axis=-1)

    def grad_scale(self, totals, n):
        rmse = float(self.value(totals))
        # ∂(N·RMSE)/∂ŷᵢ = N wᵢ rᵢ / (Σw · RMSE); at RMSE = 0 every gradient is 0
        return n / (float(totals[-1]) * rmse) if rmse > 0 and totals[-1] > 0 else 0.0

    def grad2(self, b: Batch, totals: np.ndarray, n: int) -> dict[str, np.ndarray]:
        # ∂(N·mean_k RMSEₖ)/∂ŷᵢₖ = N wᵢ rᵢₖ / (K · Σw · RMSEₖ), 0 for an output with RMSEₖ = 0
        r = b["pred"] - b["target"]
        k = totals.size - 1
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            rmse = np.sqrt(totals[:-1] / totals[-1])
            scale = np.where(rmse > 0, n / (k * totals[-1] * rmse), 0.0)
            g = r * (scale if r.ndim == 2 else scale[0])
            if b.weight is not None:
                g *= b.weight if g.ndim == 1 else b.weight[:, None]
        return {"pred": g}


class IntervalKernel(RowMeanKernel):
    """Pinball loss of a lower and an upper quantile prediction, and coverage."""

    grad_roles = ("lower", "upper")

    def __init__(self, params: dict[str, Any], ctx: Any) -> None:
        super().__init__(params, ctx)
        if params["lo"] >= params["hi"]:
            from lossctl.errors import UsageError

            raise UsageError(
                f"The 'lo' parameter of interval must be below 'hi'. Got lo={params['lo']:g}, hi={params['hi']:g} instead."
            )

    def validate(self, b: Batch) -> None:
        pass

    def rows(self, b: Batch, grad: bool):
        y, lo, hi = b["target"], b["lower"], b["upper"]
        t_lo, t_hi = self.params["lo"], self.params["hi"]
        loss = 0.5 * (pinball(y, lo, tau=t_lo) + pinball(y, hi, tau=t_hi))
        grads = None
        if grad:
            grads = {"lower": 0.5 * pinball_grad(y, lo, tau=t_lo), "upper": 0.5 * pinball_grad(y, hi, tau=t_hi)}
        return loss, grads, None

    def stats(self, b: Batch, grad: bool):
        (wl, w), grads = super().stats(b, grad)
        y, lo, hi = b["target"], b["lower"], b["upper"]
        t_lo, t_hi = self.params["lo"], self.params["hi"]
        ww = 1.0 if b.weight is None else b.weight
        inside = ((y >= lo) & (y <= hi)).astype(float)
        return [wl, w, pinball(y, lo, tau=t_lo) * ww, pinball(y, hi, tau=t_hi) * ww,
                inside * ww, (hi - lo) * ww, (lo > hi).astype(float) * ww], grads

    def extra(self, totals):
        w = totals[1]
        return {
            "pinball_lower": float(totals[2] / w),
            "pinball_upper": float(totals[3] / w),
            "coverage": float(totals[4] / w),
            "nominal_coverage": round(float(self.params["hi"] - self.params["lo"]), 12),  # 0.9, not 0.8999999999999999
            "width": float(totals[5] / w),
            "crossing_share": float(totals[6] / w),
        }


# ---------------------------------------------------------------- registry

TARGET = Role("target", vector=None, help="observed value y (K columns for K outputs)", domain=REAL)
PRED = Role("pred", vector=None, help="prediction ŷ (as many columns as the target)", domain=REAL)
REG = "regression"


def _spec(name: str, kernel: type, props: Properties, params: tuple[Param, ...] = (), **kw: Any) -> LossSpec:
    return LossSpec(
        name=name, task=REG, roles=kw.pop("roles", (TARGET, PRED)), params=params,
        factory=lambda p, ctx, k=kernel: k(p, ctx), properties=props, **kw,
    )


_EXAMPLE_Y_YHAT = (  # the examples' data (a test runs every example)
    "y,yhat\n"
    "3.0,2.5\n"
    "-0.5,0.0\n"
    "2.0,2.0\n"
    "7.0,8.0\n"
    "4.2,3.9\n"
)

_EXAMPLE_Y_LOWER_UPPER = (  # the examples' data (a test runs every example)
    "y,lower,upper\n"
    "11.9,8.9,15.8\n"
    "5.4,1.7,4.9\n"
    "7.3,5.0,9.6\n"
    "2.2,0.4,3.9\n"
)


SPEC_MSE = _spec(
    "mse", _kernel("MSEKernel", _mse_r, _mse_grad_r, uses_abs=False, fused=_fz_mse, r_in_grad=True),
    Properties(
        takes=("value",), minimiser="mean", imbalance="no",
        formula="ℓ = r², r = ŷ − y; L = mean ℓ",
        gradient="∂ℓ/∂ŷ = 2r (per sample; the gradient of the mean carries 1/n)",
        convex=True, differentiable="everywhere", robust="no",
        estimates="conditional mean E[y|x]", output="point estimate", cost="low",
        use_when="clean data with roughly Gaussian noise, when large errors should cost much more",
        avoid_when="residuals have heavy tails or gross outliers: each outlier's pull grows with its size",
        references=("torch.nn.functional.mse_loss", "sklearn.metrics.mean_squared_error"),
        outlier_note="sensitive: gradient grows linearly with the residual",
        conventions="The often quoted ∂MSE/∂ŷᵢ = −2(yᵢ − ŷᵢ) is the per-sample gradient; the gradient of the mean carries 1/n.",
    ),
    aliases=("l2",), default_for=(REG,),
    summary="mean squared error",
    example=heredoc("lossctl eval - -l mse --grad", _EXAMPLE_Y_YHAT),
)
SPEC_RMSE = _spec(
    "rmse", RMSEKernel,
    Properties(
        takes=("value",), minimiser="mean", imbalance="no",
        formula="L = √(mean r²); with K output columns the mean of the K outputs' RMSEs (scikit-learn)",
        gradient="∂(N·L)/∂ŷᵢ = rᵢ / L",
        convex=True, differentiable="everywhere except where every r = 0", robust="no",
        estimates="conditional mean", output="point estimate", cost="low",
        use_when="you want MSE in the target's own units",
        avoid_when="outliers: same sensitivity as MSE",
        references=("sklearn.metrics.root_mean_squared_error",),
        outlier_note="sensitive, like MSE",
        conventions="A function of the whole set (√ of a mean), so there is no per-row value: --reduction none/sum do not apply.",
    ),
    row_mean=False, summary="root mean squared error",
    # each of K > 1 outputs has its own 1/RMSEₖ: the gradient needs the final sums
    passes=(Pass("second", grad=True, multioutput=True, why="each output's gradient carries 1/RMSEₖ of the whole data"),),
    example=heredoc("lossctl eval - -l rmse", _EXAMPLE_Y_YHAT),
)
SPEC_MAE = _spec(
    "mae", _kernel("MAEKernel", _mae_r, _mae_grad_r, fused=_fz_mae),
    Properties(
        takes=("value",), minimiser="median", imbalance="no",
        formula="ℓ = |r|",
        gradient="∂ℓ/∂ŷ = sign(r), 0 at r = 0 (subgradient)",
        convex=True, differentiable="everywhere except r = 0", robust="yes",
        estimates="conditional median", output="point estimate", cost="medium",
        use_when="outliers or heavy tails, when errors should cost in proportion to their size",
        avoid_when="you need a smooth gradient near the optimum or the conditional mean",
        references=("torch.nn.functional.l1_loss", "sklearn.metrics.mean_absolute_error"),
        outlier_note="robust: every residual pulls with the same force",
        conventions="Equal to 2 × quantile loss at τ = 0.5 (sometimes said to be equal; it is twice).",
    ),
    aliases=("l1",), default_for=(REG,), summary="mean absolute error",
    example=heredoc("lossctl eval - -l mae --grad", _EXAMPLE_Y_YHAT),
)
SPEC_HUBER = _spec(
    "huber", _kernel("HuberKernel", _huber_r, _huber_grad_r, ("delta",), fused=_fz_huber),
    Properties(
        takes=("value",), minimiser="mean-median", imbalance="no",
        formula="ℓ = ½r² if |r| ≤ δ, else δ(|r| − ½δ)",
        gradient="∂ℓ/∂ŷ = clip(r, −δ, δ)",
        convex=True, differentiable="everywhere (once; the second derivative jumps at |r| = δ)",
        robust="bounded-influence",
        estimates="between the conditional mean and median (a trimmed-mean-like M-estimate)",
        output="point estimate", cost="medium",
        use_when="some outliers, and you want MSE's behaviour on small errors; pick δ around the noise scale",
        avoid_when="you cannot pick δ (it is in the target's units) or want a quantile",
        references=("torch.nn.functional.huber_loss(delta=)", "keras.losses.Huber", "Huber 1964"),
        outlier_note="robust: the gradient is capped at δ",
        conventions="torch and Keras agree; smooth_l1 (torch) is huber/β with β = δ.",
    ),
    params=(Param("delta", "float", 1.0, "where the loss turns from quadratic to linear", Interval(0, math.inf)),),
    default_for=(REG,), summary="Huber loss",
    example=heredoc("lossctl eval - -l huber:delta=1.5 --grad", _EXAMPLE_Y_YHAT),
)
SPEC_SMOOTH_L1 = _spec(
    "smooth_l1", _kernel("SmoothL1Kernel", _smooth_l1_r, _smooth_l1_grad_r, ("beta",), fused=_fz_smooth_l1),
    Properties(
        takes=("value",), minimiser="mean-median", imbalance="no",
        formula="ℓ = ½r²/β if |r| < β, else |r| − ½β",
        gradient="∂ℓ/∂ŷ = r/β inside, sign(r) outside",
        convex=True, differentiable="everywhere (once)", robust="bounded-influence",
        estimates="between the conditional mean and median", output="point estimate", cost="medium",
        use_when="box regression in detectors (Fast R-CNN, RetinaNet's regression head)",
        avoid_when="as huber: you need a quantile, or cannot pick β",
        references=("torch.nn.functional.smooth_l1_loss(beta=)", "Girshick 2015"),
        outlier_note="robust: the gradient is capped at 1",
        conventions="smooth_l1 = huber/β; its slope outside is 1 (Huber's is δ).",
    ),
    params=(Param("beta", "float", 1.0, "width of the quadratic zone", Interval(0, math.inf)),),
    summary="smooth L1 loss (torch)",
    example=heredoc("lossctl eval - -l smooth_l1:beta=0.5", _EXAMPLE_Y_YHAT),
)
SPEC_QUANTILE = _spec(
    "quantile", _kernel("QuantileKernel", _pinball_r, _pinball_grad_r, ("tau",), fused=_fz_pinball),
    Properties(
        takes=("value",), minimiser="quantile", imbalance="no",
        formula="ℓ = max(τ(y − ŷ), (τ − 1)(y − ŷ))  (pinball)",
        gradient="∂ℓ/∂ŷ = −τ if y > ŷ, 1 − τ if y < ŷ, 0 if equal",
        convex=True, differentiable="everywhere except r = 0", robust="yes",
        estimates="conditional τ-quantile", output="quantile (two of them make an interval)", cost="medium",
        use_when="you need a quantile or a prediction interval (risk, inventory, prognosis)",
        avoid_when="you need the mean",
        references=("sklearn.metrics.mean_pinball_loss(alpha=tau)", "Koenker & Bassett 1978"),
        outlier_note="robust: the gradient is bounded by max(τ, 1−τ)",
        conventions="At τ = 0.5 it is ½|r|, half of MAE (not equal to it). At τ = 0.9 an over-estimate costs 0.1 per unit, an under-estimate 0.9.",
    ),
    params=(Param("tau", "float", 0.5, "the quantile level", Interval(0, 1)),),
    aliases=("pinball",), default_for=(REG,), summary="quantile (pinball) loss",
    example=heredoc("lossctl eval - -l quantile:tau=0.9", _EXAMPLE_Y_YHAT),
)
SPEC_LOG_COSH = _spec(
    "log_cosh", _kernel("LogCoshKernel", _log_cosh_r, _log_cosh_grad_r, fused=_fz_log_cosh),
    Properties(
        takes=("value",), minimiser="mean-median", imbalance="no",
        formula="ℓ = log cosh(r) = |r| + log1p(e^{−2|r|}) − log 2",
        gradient="∂ℓ/∂ŷ = tanh(r)",
        convex=True, differentiable="everywhere (infinitely)", robust="bounded-influence",
        estimates="between the conditional mean and median", output="point estimate", cost="medium",
        use_when="you want Huber-like robustness with a smooth second derivative and no δ",
        avoid_when="the target's scale makes |r| ≫ 1 everywhere (then it is MAE shifted by log 2)",
        references=("keras.losses.LogCosh", "torchmetrics LogCoshError"),
        outlier_note="robust: the gradient is bounded by 1",
        conventions="Keras computes the same value; its `reduction` averages over the last axis first.",
    ),
    aliases=("logcosh",), summary="log-cosh loss",
    example=heredoc("lossctl eval - -l log_cosh", _EXAMPLE_Y_YHAT),
)
SPEC_INTERVAL = _spec(
    "interval", IntervalKernel,
    Properties(
        takes=("interval",), minimiser="quantile", imbalance="no",
        formula="ℓ = ½[pinball_lo(y, lower) + pinball_hi(y, upper)]; also coverage = share of y in [lower, upper]",
        gradient="∂ℓ/∂lower = ½ pinball gradient at τ = lo; ∂ℓ/∂upper likewise at τ = hi",
        convex=True, differentiable="everywhere except where y equals a bound", robust="yes",
        estimates="the lo- and hi-quantiles", output="interval", cost="medium",
        use_when="judging prediction intervals: compare empirical with nominal coverage, and the width",
        avoid_when="you have point predictions",
        references=("sklearn.metrics.mean_pinball_loss", "Gneiting & Raftery 2007"),
        outlier_note="robust",
        conventions="The value is the mean of the two pinball losses; coverage, nominal coverage (hi − lo), mean width and the share of crossed intervals (lower > upper) are reported beside it.",
    ),
    params=(
        Param("lo", "float", 0.05, "quantile level of the lower bound", Interval(0, 1)),
        Param("hi", "float", 0.95, "quantile level of the upper bound", Interval(0, 1)),
    ),
    roles=(
        Role("target", help="observed value y", domain=REAL),
        Role("lower", help="lower quantile prediction", names=("lower", "lo", "q_lo", "q_low", "pred_lower", "y_lower"), domain=REAL),
        Role("upper", help="upper quantile prediction", names=("upper", "hi", "q_hi", "q_high", "pred_upper", "y_upper"), domain=REAL),
    ),
    grad_roles=("lower", "upper"), default_for=(REG,), summary="prediction-interval score",
    example=heredoc("lossctl eval -", _EXAMPLE_Y_LOWER_UPPER),
)


# every loss of this family, in the order `lossctl list` shows them (lossctl.losses.ALL)
LOSSES: tuple[LossSpec, ...] = (
    SPEC_MSE,
    SPEC_RMSE,
    SPEC_MAE,
    SPEC_HUBER,
    SPEC_SMOOTH_L1,
    SPEC_QUANTILE,
    SPEC_LOG_COSH,
    SPEC_INTERVAL,
)
