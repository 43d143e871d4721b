"""Numerically stable building blocks shared by the losses (numpy only)."""
from __future__ import annotations

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


def blockwise(fn, *arrays: np.ndarray, **kw) -> np.ndarray:
    """``fn(*arrays, **kw)`` evaluated on aligned blocks of BLOCK rows.

    The result is the same array; the temporaries ``fn`` makes are block-sized, so
    they stay in cache and are reused instead of being page-faulted afresh.
    """
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    if n <= BLOCK:
        return fn(*arrays, **kw)
    first = fn(*(a[:BLOCK] for a in arrays), **kw)
    out = np.empty((n,) + first.shape[1:], dtype=first.dtype)
    out[:BLOCK] = first
    for s in range(BLOCK, n, BLOCK):
        out[s:s + BLOCK] = fn(*(a[s:s + BLOCK] for a in arrays), **kw)
    return out


def blockwise_many(fn, *arrays: np.ndarray, **kw) -> tuple[np.ndarray, ...]:
    """Like :func:`blockwise` for a function returning a tuple of row-aligned arrays."""
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    if n <= BLOCK:
        return fn(*arrays, **kw)
    first = fn(*(a[:BLOCK] for a in arrays), **kw)
    outs = tuple(np.empty((n,) + f.shape[1:], dtype=f.dtype) for f in first)
    for o, f in zip(outs, first):
        o[:BLOCK] = f
    for s in range(BLOCK, n, BLOCK):
        for o, f in zip(outs, fn(*(a[s:s + BLOCK] for a in arrays), **kw)):
            o[s:s + BLOCK] = f
    return outs
