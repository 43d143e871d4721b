"""Numerically stable building blocks shared by the losses (numpy only)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

EPS = float(np.finfo(np.float64).eps)  # 2.220446e-16, scikit-learn's log_loss default


def softplus(z: np.ndarray) -> np.ndarray:
    # log(1 + e^z) = max(z, 0) + log1p(e^{-|z|}): no overflow for z = ±1000
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    # log σ(z) = −softplus(−z)
    return -softplus(-z)


def sigmoid(z: np.ndarray) -> np.ndarray:
    # σ(z) = e^{min(z,0)} / (1 + e^{−|z|}): the exponent never overflows
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def logsumexp(z: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(z, axis=axis, keepdims=True)
    return (m + np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True))).squeeze(axis)


def log_softmax(z: np.ndarray) -> np.ndarray:
    m = np.max(z, axis=-1, keepdims=True)
    s = z - m
    return s - np.log(np.sum(np.exp(s), axis=-1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def clip_prob(p: np.ndarray, eps: float) -> np.ndarray:
    return np.clip(p, eps, 1.0 - eps)


def xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x·log(y) with 0·log(y) = 0 (scipy.special.xlogy)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = x * np.log(y)
    return np.where(x == 0, 0.0, out)


BLOCK = 1 << 16  # rows per block: a float64 temporary of 512 KB stays in cache

DOT_ROW = 1 << 12  # elements per BLAS dot in :func:`dot`
_vecdot = getattr(np, "vecdot", None)  # numpy ≥ 2.0


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Σ aᵢbᵢ of two 1-d float64 arrays, as accurate as numpy's pairwise sum.

    One BLAS dot over a long block accumulates each SIMD lane sequentially, so its
    error grows with the block: on 2²⁰ log-normal terms in blocks of 2¹⁶, 5–6 ulp on
    average and up to 18, against 0.6–0.8 (at most 2) for numpy's pairwise sum. Dots
    over rows of DOT_ROW elements, added exactly (``math.fsum``), measure as the
    pairwise sum does, at the speed of the dot and without the product array that
    ``np.sum(a * b)`` writes.
    """
    n = a.shape[0]
    m = n - n % DOT_ROW
    s = 0.0
    if m:
        rows_a, rows_b = a[:m].reshape(-1, DOT_ROW), b[:m].reshape(-1, DOT_ROW)
        parts = _vecdot(rows_a, rows_b) if _vecdot is not None else np.einsum("ij,ij->i", rows_a, rows_b)
        s = math.fsum(parts.tolist())
    if m < n:
        s += float(np.dot(a[m:], b[m:]))
    return s


TINY = float(np.finfo(np.float64).tiny)  # the smallest normal double, 2.2e-308


def sumsq(x: np.ndarray) -> tuple[float, int]:
    """Σxᵢ² of a 1-d float64 array as (s, e), Σxᵢ² = s·2ᵉ.

    The plain :func:`dot` (e = 0) wherever it lands in the normal range, which is every
    ordinary array: the check costs nothing. Where it overflows or underflows although the
    elements are finite and not all 0, the sum is recomputed on x·2⁻ᵏ with 2ᵏ just above
    max|xᵢ| (as BLAS nrm2 and LAPACK dlassq scale), exact to round-off: the scaling by a
    power of 2 is exact, and elements it flushes to 0 are below 2⁻¹⁰⁷⁴ of the largest.
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        s = dot(x, x)
    if TINY <= s < math.inf or math.isnan(s):
        return s, 0
    m = float(np.max(np.abs(x))) if x.size else 0.0
    if m == 0.0 or not math.isfinite(m):
        return s, 0  # all zero (the sum is exact), or an infinite element (the sum is too)
    k = math.frexp(m)[1]
    with np.errstate(under="ignore"):
        xs = np.ldexp(x, -k)
    return dot(xs, xs), 2 * k


def ldexp(x: float, e: int) -> float:
    """x·2ᵉ, inf on overflow (math.ldexp raises)."""
    try:
        return math.ldexp(x, e)
    except OverflowError:
        return math.copysign(math.inf, x)


class Scratch:
    """Named arrays reused from batch to batch: the engine consumes a batch's outputs
    before it asks for the next, and fresh pages cost more than the arithmetic."""

    __slots__ = ("_arrays",)

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (Scratch, ())  # buffers, not data: a pickled kernel gets an empty one

    def __call__(self, name: str, n: int, dtype: type = np.float64) -> np.ndarray:
        a = self._arrays.get(name)
        if a is None or a.shape[0] != n:
            a = self._arrays[name] = np.empty(n, dtype=dtype)
        return a


class FusedSums:
    """Mixin for a kernel with a fused block path, ``_fused(b, grad)`` returning
    ([Σℓ, N], per-row gradients or None), or None where it does not apply (weights…):
    the engine's ``sums`` / ``sums_and_grads`` fast paths, no per-row losses kept."""

    def _fused(self, b, grad: bool):  # pragma: no cover - each kernel defines it
        raise NotImplementedError

    def sums(self, b) -> np.ndarray | None:
        fused = self._fused(b, grad=False)
        return None if fused is None else fused[0]

    def sums_and_grads(self, b) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        fused = self._fused(b, grad=True)
        return None if fused is None else (fused[0], {"pred": fused[1]})


def blockwise(fn, *arrays: np.ndarray, block_rows: int = BLOCK, **kw) -> np.ndarray:
    """``fn(*arrays, **kw)`` evaluated on aligned blocks of ``block_rows`` rows.

    The result is the same array; the temporaries ``fn`` makes are block-sized, so
    they stay in cache and are reused instead of being page-faulted afresh.
    """
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    if n <= block_rows:
        return fn(*arrays, **kw)
    first = fn(*(a[:block_rows] for a in arrays), **kw)
    out = np.empty((n,) + first.shape[1:], dtype=first.dtype)
    out[:block_rows] = first
    for s in range(block_rows, n, block_rows):
        out[s:s + block_rows] = fn(*(a[s:s + block_rows] for a in arrays), **kw)
    return out


def blockwise_many(fn, *arrays: np.ndarray, block_rows: int = BLOCK, **kw) -> tuple[np.ndarray, ...]:
    """Like :func:`blockwise` for a function returning a tuple of row-aligned arrays."""
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    if n <= block_rows:
        return fn(*arrays, **kw)
    first = fn(*(a[:block_rows] for a in arrays), **kw)
    outs = tuple(np.empty((n,) + f.shape[1:], dtype=f.dtype) for f in first)
    for o, f in zip(outs, first):
        o[:block_rows] = f
    for s in range(block_rows, n, block_rows):
        for o, f in zip(outs, fn(*(a[s:s + block_rows] for a in arrays), **kw)):
            o[s:s + block_rows] = f
    return outs
