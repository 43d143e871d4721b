"""Classification losses.

Binary: a label y ∈ {0,1} (soft labels in [0,1] for BCE; {−1,+1} for the margin
losses) and one score per row — a probability p, a logit z, or a raw decision value f.
Multi-class: a class index 0..C−1 (or C one-hot / soft-label columns) and C
probability or logit columns per row.

Every gradient is the per-sample ∂ℓᵢ/∂output (the probability or, with ``logits``,
the logit); the engine scales it to ∂(N·L)/∂output.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from lossctl.engine import Batch, Context, RowMeanKernel
from lossctl.errors import InputError, UsageError
from lossctl.losses._numerics import BLOCK, EPS, FusedSums, Scratch, blockwise, blockwise_many, dot, log_sigmoid
from lossctl.spec import (
    BINARY, CLASS, DISTRIBUTION, PROBABILITY, REAL, SIGNED, Interval, LossSpec, Param, Pass, Properties,
    Role, check_domain, heredoc,
)

ROW_SUM_TOL = 1e-6  # a probability or label row must sum to 1 within this

# ================================================================ binary maths


def bce(y: np.ndarray, p: np.ndarray, *, pos_weight: float = 1.0, eps: float = EPS) -> np.ndarray:
    """−[w₊·y·log p + (1−y)·log(1−p)], p clipped to [eps, 1−eps] (scikit-learn ``log_loss``)."""
    pc = np.clip(p, eps, 1.0 - eps)
    return -(pos_weight * y * np.log(pc) + (1.0 - y) * np.log1p(-pc))


def bce_grad(y: np.ndarray, p: np.ndarray, *, pos_weight: float = 1.0, eps: float = EPS) -> np.ndarray:
    """∂ℓ/∂p = −w₊·y/p + (1−y)/(1−p), at the clipped p; = (p−y)/(p(1−p)) for w₊ = 1."""
    pc = np.clip(p, eps, 1.0 - eps)
    return -pos_weight * y / pc + (1.0 - y) / (1.0 - pc)


def bce_logits(y: np.ndarray, z: np.ndarray, *, pos_weight: float = 1.0) -> np.ndarray:
    """w₊·y·softplus(−z) + (1−y)·softplus(z): −log σ(z) = softplus(−z), never log(sigmoid(z)).

    softplus(±z) = max(±z, 0) + log1p(e^{−|z|}): one exp and one log1p serve both, and
    neither side cancels (softplus(z) − z would, for z ≪ 0).
    """
    a = np.log1p(np.exp(-np.abs(z)))
    return pos_weight * y * (np.maximum(-z, 0.0) + a) + (1.0 - y) * (np.maximum(z, 0.0) + a)


def bce_logits_grad(y: np.ndarray, z: np.ndarray, *, pos_weight: float = 1.0) -> np.ndarray:
    """∂ℓ/∂z = w₊·y·(σ(z) − 1) + (1−y)·σ(z); σ(z) − 1 = −σ(−z) keeps it exact at z ≫ 0.

    With e = e^{−|z|}: σ(z) = (1 or e)/(1 + e) and σ(−z) = (e or 1)/(1 + e), one exp for both.
    """
    e = np.exp(-np.abs(z))
    inv = 1.0 / (1.0 + e)
    pos = z >= 0
    sig = np.where(pos, inv, e * inv)
    sig_neg = np.where(pos, e * inv, inv)
    return -pos_weight * y * sig_neg + (1.0 - y) * sig


def bce_logits_and_grad(y: np.ndarray, z: np.ndarray, *, pos_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bce_logits` and :func:`bce_logits_grad` from one e = e^{−|z|}."""
    e = np.exp(-np.abs(z))
    a = np.log1p(e)
    inv = 1.0 / (1.0 + e)
    pos = z >= 0
    wy = pos_weight * y
    ny = 1.0 - y
    loss = wy * (np.maximum(-z, 0.0) + a) + ny * (np.maximum(z, 0.0) + a)
    ei = e * inv
    grad = -wy * np.where(pos, ei, inv) + ny * np.where(pos, inv, ei)
    return loss, grad


# Fused block sums for BCE without pos_weight: Σℓ over one block and, when g is given,
# the block's gradients written into g, with cache-sized scratch arrays t1..t3 and no
# per-row losses. Every sum adds terms of one sign.


def _fz_bce(y: np.ndarray, p: np.ndarray, t1: np.ndarray, t2: np.ndarray, t3: np.ndarray,
            g: np.ndarray | None, *, eps: float) -> float:
    # ℓ = −[y·log q + (1 − y)·log(1 − q)], q = clip(p, eps, 1 − eps): −(y·log q) − ((1 − y)·log1p(−q))
    q = np.clip(p, eps, 1.0 - eps, out=t1)
    lq = np.log(q, out=t2)
    l1q = np.log1p(np.negative(q, out=t3), out=t3)
    s = -dot(y, lq)
    ny = np.subtract(1.0, y, out=t2)
    s -= dot(ny, l1q)
    if g is not None:  # (q − y) / (q(1 − q))
        np.subtract(q, y, out=g)
        d = np.subtract(1.0, q, out=t3)
        d *= q
        g /= d
    return s


def _fz_bce_logits(y: np.ndarray, z: np.ndarray, t1: np.ndarray, t2: np.ndarray, t3: np.ndarray,
                   g: np.ndarray | None) -> float:
    # ℓ = softplus(z) − y·z = z·(k − y) + log1p(e^{−|z|}), k = [z ≥ 0]: both terms ≥ 0, and
    # z·(k − y) is exact for y ∈ {0, 1} (no max(z, 0) − z to cancel)
    e = np.exp(np.negative(np.abs(z, out=t1), out=t1), out=t1)
    s = float(np.add.reduce(np.log1p(e, out=t2)))
    k = np.greater_equal(z, 0.0, out=t3)
    d = np.subtract(k, y, out=g) if g is not None else np.subtract(k, y, out=k)
    s += dot(z, d)
    if g is not None:
        # σ(z) − y = (k − y) − (2k − 1)·σ(−|z|): exactly −σ(−z) where y = 1 and z ≫ 0 (the sign
        # comes from k, not from z's sign bit, so z = −0.0 takes the z ≥ 0 side consistently)
        np.add(e, 1.0, out=t2)
        sm = np.divide(e, t2, out=t2)
        k *= 2.0
        k -= 1.0
        sm *= k
        g -= sm
    return s


def hinge(s: np.ndarray, f: np.ndarray, *, margin: float = 1.0) -> np.ndarray:
    """max(0, m − s·f), s ∈ {−1,+1} (scikit-learn ``hinge_loss``)."""
    return np.maximum(0.0, margin - s * f)


def hinge_grad(s: np.ndarray, f: np.ndarray, *, margin: float = 1.0) -> np.ndarray:
    """−s where s·f < m, else 0 (0 at the kink s·f = m)."""
    return np.where(s * f < margin, -s, 0.0)


def squared_hinge(s: np.ndarray, f: np.ndarray, *, margin: float = 1.0) -> np.ndarray:
    """max(0, m − s·f)² (Keras ``SquaredHinge``)."""
    h = np.maximum(0.0, margin - s * f)
    return h * h


def squared_hinge_grad(s: np.ndarray, f: np.ndarray, *, margin: float = 1.0) -> np.ndarray:
    """−2s·max(0, m − s·f)."""
    return -2.0 * s * np.maximum(0.0, margin - s * f)


def exponential(s: np.ndarray, f: np.ndarray) -> np.ndarray:
    """exp(−s·f) (AdaBoost); overflows to inf for s·f < −709, a value, not an error."""
    with np.errstate(over="ignore"):
        return np.exp(-s * f)


def exponential_grad(s: np.ndarray, f: np.ndarray) -> np.ndarray:
    """−s·exp(−s·f)."""
    with np.errstate(over="ignore"):
        return -s * np.exp(-s * f)


def _alpha_t(y: np.ndarray, alpha: float) -> np.ndarray | float:
    # torchvision: α for positives, 1 − α for negatives; α < 0 switches it off
    return 1.0 if alpha < 0 else np.where(y == 1, alpha, 1.0 - alpha)


def sigmoid_focal(y: np.ndarray, z: np.ndarray, *, gamma: float = 2.0, alpha: float = 0.25) -> np.ndarray:
    """−α_t (1 − p_t)^γ log p_t with p = σ(z), in log space.

    log p_t = log σ(±z) and log(1 − p_t) = log σ(∓z), so (1 − p_t)^γ = exp(γ·log σ(∓z))
    is finite and exact for z = ±1000 and any γ ≥ 0 (torchvision's ``(1 − p_t)**γ``
    is not).
    """
    s = 2.0 * y - 1.0
    log_pt = log_sigmoid(s * z)
    log_1mpt = log_sigmoid(-s * z)
    return -_alpha_t(y, alpha) * np.exp(gamma * log_1mpt) * log_pt + 0.0


def sigmoid_focal_grad(y: np.ndarray, z: np.ndarray, *, gamma: float = 2.0, alpha: float = 0.25) -> np.ndarray:
    """∂ℓ/∂z; with t = ±z, dℓ/dt = α_t (1−p_t)^γ [γ p_t log p_t − (1 − p_t)].

    For y = 1 this is α(1−p)^γ[γ·p·log p + p − 1], for y = 0 (1−α)·p^γ[p − γ(1−p)·log(1−p)]
    (LOSSES.md erratum 4); no (1 − p_t)^{γ−1} appears, so γ < 1 stays finite.
    """
    s = 2.0 * y - 1.0
    log_pt = log_sigmoid(s * z)
    log_1mpt = log_sigmoid(-s * z)
    inner = gamma * np.exp(log_pt) * log_pt - np.exp(log_1mpt)
    return s * _alpha_t(y, alpha) * np.exp(gamma * log_1mpt) * inner + 0.0  # + 0.0: no −0 in output


def focal_prob(y: np.ndarray, p: np.ndarray, *, gamma: float = 2.0, alpha: float = 0.25, eps: float = EPS) -> np.ndarray:
    """−α_t (1 − p_t)^γ log p_t on probabilities clipped to [eps, 1 − eps]."""
    log_pt, log_1mpt = _prob_logs(y, p, eps)
    return -_alpha_t(y, alpha) * np.exp(gamma * log_1mpt) * log_pt


def focal_prob_grad(y: np.ndarray, p: np.ndarray, *, gamma: float = 2.0, alpha: float = 0.25, eps: float = EPS) -> np.ndarray:
    """∂ℓ/∂p = ±α_t (1 − p_t)^{γ−1}[γ log p_t − (1 − p_t)/p_t], + for y = 1, at the clipped p."""
    log_pt, log_1mpt = _prob_logs(y, p, eps)
    d_pt = np.exp((gamma - 1.0) * log_1mpt) * (gamma * log_pt - np.exp(log_1mpt - log_pt))
    return (2.0 * y - 1.0) * _alpha_t(y, alpha) * d_pt


def _focal_prob_both(y: np.ndarray, p: np.ndarray, *, gamma: float, alpha: float, eps: float):
    """focal_prob and focal_prob_grad from one set of logs (the same operations, the same numbers)."""
    log_pt, log_1mpt = _prob_logs(y, p, eps)
    a = _alpha_t(y, alpha)
    loss = -a * np.exp(gamma * log_1mpt) * log_pt
    d_pt = np.exp((gamma - 1.0) * log_1mpt) * (gamma * log_pt - np.exp(log_1mpt - log_pt))
    return loss, (2.0 * y - 1.0) * a * d_pt


def _sigmoid_focal_both(y: np.ndarray, z: np.ndarray, *, gamma: float, alpha: float):
    """sigmoid_focal and sigmoid_focal_grad from one set of logs (the same operations, the same numbers)."""
    s = 2.0 * y - 1.0
    log_pt = log_sigmoid(s * z)
    log_1mpt = log_sigmoid(-s * z)
    a = _alpha_t(y, alpha)
    w = np.exp(gamma * log_1mpt)
    inner = gamma * np.exp(log_pt) * log_pt - np.exp(log_1mpt)
    return -a * w * log_pt + 0.0, s * a * w * inner + 0.0


def _prob_logs(y: np.ndarray, p: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    pc = np.clip(p, eps, 1.0 - eps)
    log_p, log_1mp = np.log(pc), np.log1p(-pc)
    return np.where(y == 1, log_p, log_1mp), np.where(y == 1, log_1mp, log_p)


# ================================================================ multi-class maths


def smoothed_targets(
    y: np.ndarray, n_classes: int, *, weight: np.ndarray | None = None, label_smoothing: float = 0.0
) -> tuple[np.ndarray, np.ndarray | None]:
    """The effective target q (n, C) with ℓ = −Σ_c q_c log p_c, and the row's share of the denominator.

    As torch ``cross_entropy``: a class index y (1-D) gives
    q = (1−ε)·w_y·onehot(y) + (ε/C)·w and denominator w_y (the mean is Σ w_{yᵢ}ℓᵢ / Σ w_{yᵢ});
    one-hot or soft rows Y (2-D) give q = w ⊙ (Y(1−ε) + ε/C) and the mean divides by N
    (denominator None).
    """
    eps_ls, c = float(label_smoothing), n_classes
    if y.ndim == 2:
        q = y * (1.0 - eps_ls) + eps_ls / c if eps_ls else y.astype(float, copy=True)
        return (q * weight if weight is not None else q), None
    idx = y.astype(np.intp)
    onehot = np.zeros((idx.size, c))
    onehot[np.arange(idx.size), idx] = 1.0
    if weight is None:
        return (onehot * (1.0 - eps_ls) + eps_ls / c if eps_ls else onehot), None
    wy = weight[idx]
    q = onehot * ((1.0 - eps_ls) * wy)[:, None]
    if eps_ls:
        q = q + (eps_ls / c) * weight[None, :]
    return q, wy


def softmax_cross_entropy(q: np.ndarray, z: np.ndarray) -> np.ndarray:
    """−Σ_c q_c log softmax(z)_c, with log-sum-exp: finite for logits ±1000.

    log p comes from :func:`softmax_logs`, whose log1p keeps −log p_y ≈ e^{−232} for a
    class that leads by 232 (a plain log-sum-exp rounds it to 0).
    """
    return -np.sum(q * softmax_logs(z)[0], axis=1) + 0.0  # + 0.0: no −0 in output


def softmax_nll(idx: np.ndarray, z: np.ndarray) -> np.ndarray:
    """−log softmax(z)_y for class indices y: log1p(T) − s_y, s = z − max z,
    T = Σ_{j ≠ argmax} e^{s_j} (the largest class left out, so log1p keeps a tiny −log p_y)."""
    rows = np.arange(z.shape[0])
    m = np.argmax(z, axis=1)
    s = z - z[rows, m][:, None]
    e = np.exp(s)
    e[rows, m] = 0.0
    return np.log1p(np.sum(e, axis=1)) - s[rows, idx] + 0.0  # + 0.0: no −0 in output


def softmax_nll_and_grad(idx: np.ndarray, z: np.ndarray,
                         out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """−log softmax(z)_y and its gradient softmax(z) − e_y for class indices y, written into
    ``out`` = (nll (n,), gradient (n, C)) when given.

    With T as in :func:`softmax_nll`, p_j = e^{s_j}/(1 + T) and p_max = 1/(1 + T); where y
    is the largest class its gradient is −T/(1 + T), exact when p_y rounds to 1.
    """
    n = z.shape[0]
    rows = np.arange(n)
    m = np.argmax(z, axis=1)
    nll, g = out if out is not None else (np.empty(n), np.empty_like(z, dtype=np.float64))
    np.subtract(z, z[rows, m][:, None], out=g)  # s = z − max z
    s_y = g[rows, idx]
    np.exp(g, out=g)
    g[rows, m] = 0.0
    t = np.add.reduce(g, axis=1)
    np.log1p(t, out=nll)
    nll -= s_y
    nll += 0.0  # no −0 in output
    inv = t + 1.0
    np.divide(1.0, inv, out=inv)
    g *= inv[:, None]
    g[rows, m] = inv
    g[rows, idx] -= 1.0
    top = idx == m
    if top.any():
        g[rows[top], m[top]] = -t[top] * inv[top]
    return nll, g


def softmax_cross_entropy_grad(q: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(Σ_c q_c)·softmax(z) − q; = softmax(z) − y for a plain target."""
    _, log1mp, p, _ = softmax_logs(z)
    return _softmax_chain(q, p, log1mp)


def _softmax_chain(a: np.ndarray, p: np.ndarray, log1mp: np.ndarray) -> np.ndarray:
    """S·p − a, S = Σ_c a_c: the gradient through a softmax of Σ_c a_c·(−log p_c)-like terms.

    Where p_k > ½ it is computed as (S − a_k) − S·(1 − p_k) with 1 − p_k from its log, so the
    true class of a saturated row gets −(1 − p_y) ≈ −e^{−80}, not p_y − 1 = 0.
    """
    total = np.sum(a, axis=1, keepdims=True)
    return np.where(p > 0.5, (total - a) - total * np.exp(log1mp), total * p - a)


def prob_cross_entropy(q: np.ndarray, p: np.ndarray, *, eps: float = EPS) -> np.ndarray:
    """−Σ_c q_c log p_c with p clipped to [eps, 1 − eps] (scikit-learn ``log_loss``)."""
    return -np.sum(q * np.log(np.clip(p, eps, 1.0 - eps)), axis=1) + 0.0


def prob_cross_entropy_grad(q: np.ndarray, p: np.ndarray, *, eps: float = EPS) -> np.ndarray:
    """∂ℓ/∂p_c = −q_c/p_c at the clipped p."""
    return -q / np.clip(p, eps, 1.0 - eps)


def softmax_logs(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """log p, log(1 − p), p and (−log p)/(1 − p) for p = softmax(z), accurate when a p is ≈ 1.

    Only the largest class can have p > ½. For it, with T = Σ_{j≠m} e^{z_j − z_m}:
    −log p_m = log1p(T) and log(1 − p_m) = log T − log1p(T), log T a log-sum-exp over
    the other classes — finite even when T underflows (z = [1000, −1000]). For the
    others log1p(−p) is exact.
    """
    n, c = z.shape
    rows = np.arange(n)
    m = np.argmax(z, axis=1)
    s = z - z[rows, m][:, None]
    is_max = np.zeros(z.shape, dtype=bool)
    is_max[rows, m] = True
    others = np.where(is_max, -np.inf, s)
    mo = np.max(others, axis=1)
    log_t = mo + np.log(np.sum(np.exp(others - mo[:, None]), axis=1))
    t = np.exp(log_t)
    log1p_t = np.log1p(t)
    logp = s - log1p_t[:, None]
    p = np.exp(logp)
    with np.errstate(divide="ignore"):
        log1mp = np.log1p(-p)
    log1mp[rows, m] = log_t - log1p_t
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = -logp / np.exp(log1mp)
    safe_t = np.where(t > 1e-8, t, 1.0)
    # (−log p_m)/(1 − p_m) = log1p(T)(1 + T)/T → 1 + T/2 as T → 0
    ratio[rows, m] = np.where(t > 1e-8, log1p_t * (1.0 + t) / safe_t, 1.0 + 0.5 * t)
    return logp, log1mp, p, ratio


def softmax_focal(
    y: np.ndarray, z: np.ndarray, *, gamma: float = 2.0, alpha: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-class focal loss from logits and its gradient ∂ℓ/∂z.

    ℓ = −Σ_c y_c α_c (1 − p_c)^γ log p_c, p = softmax(z) (for a one-hot y: −α_y (1−p_y)^γ log p_y).
    With A_c = (1 − p_c)^γ [1 + γ p_c (−log p_c)/(1 − p_c)], the derivative of the c-th term
    is α_c A_c (p_k − [k = c]), so ∂ℓ/∂z_k = p_k Σ_c y_c α_c A_c − y_k α_k A_k.
    """
    logp, log1mp, p, ratio = softmax_logs(z)
    av = np.ones(z.shape[1]) if alpha is None else alpha
    mod = np.exp(gamma * log1mp)  # (1 − p)^γ, finite: log1mp is finite for finite logits
    loss = np.sum(y * av * mod * (-logp), axis=1)
    ya = y * av * mod * (1.0 + gamma * p * ratio)
    return loss, _softmax_chain(ya, p, log1mp)


def prob_focal(
    y: np.ndarray, p: np.ndarray, *, gamma: float = 2.0, alpha: np.ndarray | None = None, eps: float = EPS
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-class focal loss on probabilities (clipped to [eps, 1−eps]) and ∂ℓ/∂p.

    ∂ℓ/∂p_k = y_k α_k (1 − p_k)^{γ−1}[γ log p_k − (1 − p_k)/p_k].
    """
    pc = np.clip(p, eps, 1.0 - eps)
    logp, log1mp = np.log(pc), np.log1p(-pc)
    av = np.ones(p.shape[1]) if alpha is None else alpha
    loss = np.sum(y * av * np.exp(gamma * log1mp) * (-logp), axis=1)
    grad = y * av * np.exp((gamma - 1.0) * log1mp) * (gamma * logp - np.exp(log1mp - logp))
    return loss, grad


def multi_hinge_ww(idx: np.ndarray, f: np.ndarray, *, margin: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Weston–Watkins Σ_{j≠y} max(0, m − f_y + f_j) and its subgradient (0 at each kink)."""
    rows = np.arange(f.shape[0])
    t = margin - f[rows, idx][:, None] + f
    active = t > 0
    active[rows, idx] = False
    loss = np.sum(np.where(active, t, 0.0), axis=1)
    g = active.astype(float)
    g[rows, idx] = -np.sum(active, axis=1)
    return loss, g


def multi_hinge_cs(idx: np.ndarray, f: np.ndarray, *, margin: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Crammer–Singer max(0, m − f_y + max_{j≠y} f_j) and its subgradient.

    Tied runner-ups share the +1 evenly (a valid subgradient); 0 at the kink.
    """
    rows = np.arange(f.shape[0])
    others = f.astype(float, copy=True)
    others[rows, idx] = -np.inf
    best = np.max(others, axis=1)
    t = margin - f[rows, idx] + best
    active = t > 0
    loss = np.where(active, t, 0.0)
    tied = others == best[:, None]
    g = tied / np.sum(tied, axis=1, keepdims=True) * active[:, None]
    g[rows, idx] = -active.astype(float)
    return loss, g


# ================================================================ input checks


def _where(b: Batch, role: str) -> dict[str, Any]:
    return {"source": b.source or None, "column": b.columns.get(role, role)}


def _one_column(b: Batch, role: str, loss: str) -> np.ndarray:
    a = b[role]
    if a.ndim == 2:
        if a.shape[1] == 1:
            return a[:, 0]
        what = "label" if role == "target" else "score"
        raise InputError.at(
            f"{loss} takes one {what} column, got {a.shape[1]} (for C classes use cross_entropy, "
            "multi_hinge or focal with C columns)",
            **_where(b, role),
        )
    return a


def _check_probs(b: Batch, p: np.ndarray, loss: str) -> None:
    check_domain(b, "pred", PROB_PRED.domain,
                 f"{loss} reads probabilities, which must lie in [0, 1] (for logits pass logits=true or --logits)", p)


# said where −1 labels meet a {0,1} loss: the default binary set holds both kinds
_SIGNED_HINT = "; for −1/+1 labels use the margin losses (-l hinge -l exponential)"


def _check_binary_labels(b: Batch, y: np.ndarray, loss: str) -> None:
    check_domain(b, "target", BIN_TARGET.domain,
                 lambda bad: f"{loss} needs labels 0 or 1" + _SIGNED_HINT * bool(np.any(bad == -1)), y)


def _pred_classes(b: Batch, loss: str) -> np.ndarray:
    a = b["pred"]
    c = a.shape[1] if a.ndim == 2 else 1
    if c < 2:
        raise InputError.at(
            f"{loss} needs one prediction column per class (C ≥ 2), got {c}; for binary labels use bce",
            **_where(b, "pred"),
        )
    return a


def _check_prob_rows(b: Batch, p: np.ndarray, loss: str) -> None:
    _check_probs(b, p, loss)
    sums = p.sum(axis=1)
    bad = np.abs(sums - 1.0) > ROW_SUM_TOL
    if bad.any():
        raise b.fail(
            f"{loss} reads probabilities and this row does not sum to 1 (within {ROW_SUM_TOL:g}); "
            "for logits pass logits=true or --logits",
            "pred", bad, sums,
        )


def _class_targets(b: Batch, c: int, loss: str, *, soft: bool = True) -> np.ndarray:
    """Validate and return the target: class indices (n,) as floats, or label rows (n, C)."""
    y = b["target"]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1:
        # a target that is no class index at all is usually a regression target beside
        # several models' predictions read as one vector of class scores: say so
        hint = (f"; if the {c} prediction columns are {c} models' predictions, give one -p per model "
                "(and --task regression)")
        check_domain(b, "target", MC_TARGET.domain, f"class index must be a whole number in 0..{c - 1}" + hint, y)
        bad = y >= c  # (the upper bound alone: the domain's check above has seen the rest)
        if bad.any():
            raise b.fail(f"class index ≥ number of prediction columns ({c})" + hint, "target", bad, y)
        return y
    if y.shape[1] != c:
        raise InputError.at(
            f"the target has {y.shape[1]} columns but the prediction has {c}: one-hot or soft-label "
            "targets need one column per class",
            **_where(b, "target"),
        )
    bad = (y < 0) | (y > 1)
    if bad.any():
        raise b.fail("one-hot or soft-label targets must lie in [0, 1]", "target", bad, y)
    sums = y.sum(axis=1)
    bad = np.abs(sums - 1.0) > ROW_SUM_TOL
    if bad.any():
        raise b.fail(f"one-hot or soft-label target row does not sum to 1 (within {ROW_SUM_TOL:g})", "target", bad, sums)
    if not soft:
        bad = (y != 0) & (y != 1)
        if bad.any():
            raise b.fail(f"{loss} needs a class index or one-hot rows, not soft labels", "target", bad, y)
    return y


def _target(b: Batch) -> np.ndarray:
    """The multi-class target as validated: class indices (n,) or label rows (n, C)."""
    y = b["target"]
    return y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y


def _as_indices(y: np.ndarray) -> np.ndarray:
    return np.argmax(y, axis=1) if y.ndim == 2 else y.astype(np.intp)


def _as_rows(y: np.ndarray, c: int) -> np.ndarray:
    if y.ndim == 2:
        return y
    out = np.zeros((y.size, c))
    out[np.arange(y.size), y.astype(np.intp)] = 1.0
    return out


def _class_vector(name: str, loss: str, value: Any, c: int) -> np.ndarray:
    v = np.asarray(value, dtype=float)
    if v.size != c:
        raise UsageError(
            f"The '{name}' parameter of {loss} has {v.size} numbers but the prediction has {c} "
            f"columns: give one number per class. Got {_show(value)} instead."
        )
    return v


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(f"{x:g}" for x in value) + "]"
    return repr(value)


# ================================================================ kernels


class BCEKernel(FusedSums, RowMeanKernel):
    def __init__(self, params: dict[str, Any], ctx: Context) -> None:
        super().__init__(params, ctx)
        self._scratch = Scratch()  # the fused path's block buffers, reused from batch to batch

    def validate(self, b: Batch) -> None:
        y, p = _one_column(b, "target", "bce"), _one_column(b, "pred", "bce")
        check_domain(b, "target", BCE_TARGET.domain,
                     lambda bad: "bce needs labels in [0, 1] (0/1, or soft labels)" + _SIGNED_HINT * bool(np.any(bad == -1)), y)
        if not self.params["logits"]:
            _check_probs(b, p, "bce")

    def _fused(self, b: Batch, grad: bool) -> tuple[np.ndarray, np.ndarray | None] | None:
        # cache-sized blocks, no weights, pos_weight = 1 (FusedSums)
        if b.weight is not None or self.params["pos_weight"] != 1.0:
            return None
        y, p = _one_column(b, "target", "bce"), _one_column(b, "pred", "bce")
        n = y.shape[0]
        m = min(n, BLOCK)
        t1, t2, t3 = self._scratch("t1", m), self._scratch("t2", m), self._scratch("t3", m)
        g = self._scratch("grad", n) if grad else None
        logits, eps = self.params["logits"], self.params["eps"]
        total = 0.0
        for s in range(0, n, BLOCK):
            e = min(n, s + BLOCK)
            k = e - s
            gb = None if g is None else g[s:e]
            if logits:
                total += _fz_bce_logits(y[s:e], p[s:e], t1[:k], t2[:k], t3[:k], gb)
            else:
                total += _fz_bce(y[s:e], p[s:e], t1[:k], t2[:k], t3[:k], gb, eps=eps)
        return np.array([total, float(n)]), g

    def rows(self, b: Batch, grad: bool):
        y, p = _one_column(b, "target", "bce"), _one_column(b, "pred", "bce")
        w = self.params["pos_weight"]
        if self.params["logits"]:
            # in cache-sized blocks: several temporaries per row, none leaves the cache
            if grad:
                loss, g = blockwise_many(bce_logits_and_grad, y, p, pos_weight=w)
            else:
                loss, g = blockwise(bce_logits, y, p, pos_weight=w), None
        else:
            eps = self.params["eps"]
            loss = bce(y, p, pos_weight=w, eps=eps)
            g = bce_grad(y, p, pos_weight=w, eps=eps) if grad else None
        return loss, ({"pred": g} if g is not None else None), None


class MarginKernel(RowMeanKernel):
    """hinge, squared_hinge, exponential: labels {−1,+1} or {0,1} (0 → −1), raw scores."""

    name = ""
    state_attrs = ("neg_label",)  # shards must use the same negative label, as one run must

    def __init__(self, params: dict[str, Any], ctx: Context) -> None:
        super().__init__(params, ctx)
        self.seen: set[float] = set()  # which of 0 and −1 the labels used so far
        self.neg_label: float | None = None  # the one of them, once seen

    def validate(self, b: Batch) -> None:
        y = _one_column(b, "target", self.name)
        _one_column(b, "pred", self.name)
        check_domain(b, "target", MARGIN_TARGET.domain, f"{self.name} needs labels −1/+1 (or 0/1, 0 read as −1)", y)
        present = [v for v in (0.0, -1.0) if (y == v).any()]
        if len(self.seen | set(present)) == 2:
            # the first row where 0 and −1 have both appeared (in this batch or an earlier one)
            later = present[0] if len(present) == 1 else max(present, key=lambda v: int(np.argmax(y == v)))
            raise b.fail(
                f"{self.name} labels mix 0 and −1: use {{−1,+1}} or {{0,1}}, not three values",
                "target", y == later, y,
            )
        self.seen |= set(present)
        if self.seen:
            (self.neg_label,) = self.seen

    def _fn(self, s: np.ndarray, f: np.ndarray, grad: bool):
        raise NotImplementedError

    def rows(self, b: Batch, grad: bool):
        y, f = _one_column(b, "target", self.name), _one_column(b, "pred", self.name)
        s = np.where(y == 0, -1.0, y)
        loss, g = self._fn(s, f, grad)
        return loss, ({"pred": g} if grad else None), None


class HingeKernel(MarginKernel):
    name = "hinge"

    def _fn(self, s, f, grad):
        m = self.params["margin"]
        return hinge(s, f, margin=m), (hinge_grad(s, f, margin=m) if grad else None)


class SquaredHingeKernel(MarginKernel):
    name = "squared_hinge"

    def _fn(self, s, f, grad):
        m = self.params["margin"]
        return squared_hinge(s, f, margin=m), (squared_hinge_grad(s, f, margin=m) if grad else None)


class ExponentialKernel(MarginKernel):
    name = "exponential"

    def _fn(self, s, f, grad):
        return exponential(s, f), (exponential_grad(s, f) if grad else None)


class FocalKernel(RowMeanKernel):
    """Binary focal loss for one score column, multi-class (softmax) focal loss for C columns."""

    def __init__(self, params: dict[str, Any], ctx: Context) -> None:
        if params["alpha"] is None:  # alpha=none: no class weighting, as −1
            params = {**params, "alpha": -1.0}
        super().__init__(params, ctx)
        alpha = params["alpha"]
        if isinstance(alpha, tuple) and any(a > 1 for a in alpha):
            raise UsageError(
                f"The 'alpha' parameter of focal must be numbers in [0, 1] (one per class), "
                f"or one number in [0, 1], or -1 for none. Got {_show(alpha)} instead."
            )

    @staticmethod
    def multiclass(b: Batch) -> bool:
        p = b["pred"]
        return p.ndim == 2 and p.shape[1] > 1

    def _alpha_vector(self, c: int) -> np.ndarray | None:
        a = self.params["alpha"]
        if isinstance(a, tuple):
            return _class_vector("alpha", "focal", a, c)
        return None if a < 0 else np.full(c, float(a))

    def validate(self, b: Batch) -> None:
        logits = self.params["logits"]
        if self.multiclass(b):
            p = _pred_classes(b, "focal")
            _class_targets(b, p.shape[1], "focal")
            self._alpha_vector(p.shape[1])
            if not logits:
                _check_prob_rows(b, p, "focal")
            return
        if isinstance(self.params["alpha"], tuple):
            raise UsageError(
                "The 'alpha' parameter of focal must be a number in [0, 1] or -1 for binary targets "
                f"(a list, one weight per class, is for multiclass). Got {_show(self.params['alpha'])} instead."
            )
        y, p = _one_column(b, "target", "focal"), _one_column(b, "pred", "focal")
        _check_binary_labels(b, y, "focal")
        if not logits:
            _check_probs(b, p, "focal")

    def rows(self, b: Batch, grad: bool):
        gamma, logits, eps = self.params["gamma"], self.params["logits"], self.params["eps"]
        if self.multiclass(b):
            p = b["pred"]
            c = p.shape[1]
            y = _as_rows(_target(b), c)
            av = self._alpha_vector(c)
            if logits:
                loss, g = softmax_focal(y, p, gamma=gamma, alpha=av)
            else:
                loss, g = prob_focal(y, p, gamma=gamma, alpha=av, eps=eps)
            return loss, ({"pred": g} if grad else None), None
        y, p = _one_column(b, "target", "focal"), _one_column(b, "pred", "focal")
        alpha = float(self.params["alpha"])
        # in cache-sized blocks, the logs shared by the loss and its gradient (--grad cost 1.6× the value)
        kw = {"gamma": gamma, "alpha": alpha} if logits else {"gamma": gamma, "alpha": alpha, "eps": eps}
        if grad:
            loss, g = blockwise_many(_sigmoid_focal_both if logits else _focal_prob_both, y, p, **kw)
        else:
            loss, g = blockwise(sigmoid_focal if logits else focal_prob, y, p, **kw), None
        return loss, ({"pred": g} if g is not None else None), None


class CrossEntropyKernel(RowMeanKernel):
    """Softmax / categorical cross-entropy with torch's class weights and label smoothing.

    A row contributes a numerator −Σ_c q_c log p_c and a denominator (w_{yᵢ} for class-index
    targets with weights, else 1); the value is Σ num / Σ den, which is torch's weighted mean.
    """

    def __init__(self, params: dict[str, Any], ctx: Context) -> None:
        super().__init__(params, ctx)
        weight = params["weight"]
        self.balanced = weight == "balanced"
        self.needs_prepass = self.balanced
        self.fixed = None if weight is None or self.balanced else np.asarray(weight, dtype=float)
        self.counts: np.ndarray | None = None
        self.total = 0
        self.key: tuple[str, str] | None = None
        self.bal: np.ndarray | None = None
        self.fallback_batches = 0
        self._scratch = Scratch()  # the class-index path's outputs, reused from batch to batch

    # -- whole-file class counts for weight=balanced
    @staticmethod
    def _key(b: Batch) -> tuple[str, str]:
        return ("class_counts", f"{b.source}\x1f{b.columns.get('target', 'target')}")

    @staticmethod
    def _count(b: Batch, c: int) -> np.ndarray:
        y = _target(b)
        return y.sum(axis=0) if y.ndim == 2 else np.bincount(y.astype(np.intp), minlength=c).astype(float)

    def prepass(self, b: Batch) -> None:
        c = b["pred"].shape[1]
        counts = self._count(b, c)
        self.counts = counts if self.counts is None else self.counts + counts
        self.total += b.n
        self.key = self._key(b)

    def end_prepass(self) -> None:
        if self.counts is None:
            return
        self.bal = _balanced(self.counts, self.total)
        if self.key is not None:
            self.ctx.prepass[self.key] = (self.counts, self.total)

    def _weights(self, b: Batch, c: int) -> np.ndarray | None:
        if self.fixed is not None:
            return _class_vector("weight", "cross_entropy", tuple(self.fixed.tolist()), c)
        if not self.balanced:
            return None
        if self.bal is None:
            found = self.ctx.prepass.get(self._key(b))
            if found is not None:
                self.bal = _balanced(*found)
            else:
                # no pre-pass ran (lossctl.api.per_row): only a single batch is exact
                self.fallback_batches += 1
                if self.fallback_batches > 1:
                    raise UsageError(
                        "cross_entropy:weight=balanced needs the whole file's class counts, "
                        "but no pre-pass over the file was made on this path"
                    )
                return _balanced(self._count(b, c), b.n)
        return self.bal

    def validate(self, b: Batch) -> None:
        p = _pred_classes(b, "cross_entropy")
        c = p.shape[1]
        _class_targets(b, c, "cross_entropy")
        if self.fixed is not None:
            _class_vector("weight", "cross_entropy", tuple(self.fixed.tolist()), c)
        if not self.params["logits"]:
            _check_prob_rows(b, p, "cross_entropy")

    def terms(self, b: Batch, grad: bool):
        p = b["pred"]
        c = p.shape[1]
        y = _target(b)
        if self.params["logits"] and y.ndim == 1 and self.params["weight"] is None and self.params["label_smoothing"] == 0:
            # the common case (class indices, logits, no weights or smoothing): a few passes over z
            # in blocks of ~BLOCK elements (rows × C): the temporaries stay in cache
            idx = _as_indices(y)
            rows = max(1, BLOCK // c)
            if not grad:
                return blockwise(softmax_nll, idx, p, block_rows=rows), None, None
            n = p.shape[0]
            num, g = self._scratch("nll", n), self._scratch("grad", n * c).reshape(n, c)
            for s in range(0, n, rows):
                softmax_nll_and_grad(idx[s:s + rows], p[s:s + rows], out=(num[s:s + rows], g[s:s + rows]))
            return num, {"pred": g}, None
        q, den = smoothed_targets(
            _target(b), c, weight=self._weights(b, c), label_smoothing=self.params["label_smoothing"]
        )
        if self.params["logits"]:
            num = softmax_cross_entropy(q, p)
            g = softmax_cross_entropy_grad(q, p) if grad else None
        else:
            eps = self.params["eps"]
            num = prob_cross_entropy(q, p, eps=eps)
            g = prob_cross_entropy_grad(q, p, eps=eps) if grad else None
        return num, ({"pred": g} if g is not None else None), den

    def stats(self, b: Batch, grad: bool):
        num, grads, den = self.terms(b, grad)
        w = b.weight
        if w is None:
            return [num, 1.0 if den is None else den], grads
        if grads is not None:
            grads = {k: g * w[:, None] for k, g in grads.items()}
        return [num * w, w if den is None else den * w], grads

    def per_row(self, b: Batch, grad: bool):
        num, grads, _ = self.terms(b, grad)
        return num, grads

    def extra(self, totals: np.ndarray) -> dict[str, Any]:
        if self.balanced and self.bal is not None:
            return {"class_weights": [float(x) for x in self.bal]}
        return {}


def _balanced(counts: np.ndarray, n: int) -> np.ndarray:
    """w_c = N / (C · count_c) (scikit-learn ``compute_class_weight``); 0 for an absent class."""
    c = counts.size
    with np.errstate(divide="ignore"):
        w = n / (c * counts)
    return np.where(counts > 0, w, 0.0)


class MultiHingeKernel(RowMeanKernel):
    def validate(self, b: Batch) -> None:
        p = _pred_classes(b, "multi_hinge")
        _class_targets(b, p.shape[1], "multi_hinge", soft=False)

    def rows(self, b: Batch, grad: bool):
        f = b["pred"]
        idx = _as_indices(_target(b))
        fn = multi_hinge_ww if self.params["variant"] == "ww" else multi_hinge_cs
        loss, g = fn(idx, f, margin=self.params["margin"])
        return loss, ({"pred": g} if grad else None), None


# ================================================================ registry

BIN, MC = "binary", "multiclass"
POS = Interval(0, math.inf)

LOGITS = Param("logits", "bool", False, "the scores are logits (stable softplus / log-sum-exp forms), not probabilities")
EPS_PARAM = Param(
    "eps", "float", EPS, "probabilities are clipped to [eps, 1 − eps] inside the log (float64 machine epsilon)",
    Interval(0, 0.5),
)
MARGIN = Param("margin", "float", 1.0, "the margin m: rows with y·f ≥ m cost nothing (0 gives the perceptron loss)",
               Interval(0, math.inf, "left"))

BCE_TARGET = Role("target", help="label y ∈ {0,1}, or a soft label in [0,1]", domain=PROBABILITY)
BIN_TARGET = Role("target", help="label y ∈ {0,1}", domain=BINARY)
MARGIN_TARGET = Role("target", help="label y ∈ {−1,+1}; 0/1 labels are read with 0 as −1", domain=SIGNED)
PROB_PRED = Role("pred", help="probability p of the positive class, or its logit z with logits=true",
                 domain=PROBABILITY, logit_domain=REAL)
SCORE_PRED = Role("pred", help="score f: a decision value or logit, used as given (no sigmoid)", domain=REAL)
MC_TARGET = Role("target", vector=None, help="class index 0..C−1, or C one-hot / soft-label columns", domain=CLASS)
MC_PRED = Role("pred", vector=True, help="C columns: class probabilities (rows sum to 1), or logits with logits=true",
               domain=DISTRIBUTION, logit_domain=REAL)
MC_SCORES = Role("pred", vector=True, help="C columns of class scores (logits or decision values), used as given", domain=REAL)
FOCAL_TARGET = Role("target", vector=None, help="binary: y ∈ {0,1}; multiclass: class index or C one-hot / soft-label columns",
                    domain=CLASS)
FOCAL_PRED = Role("pred", vector=None, help="binary: one probability (or logit) column; multiclass: C probability (or logit) columns",
                  domain=DISTRIBUTION, logit_domain=REAL)


def _spec(name: str, kernel: type, props: Properties, **kw: Any) -> LossSpec:
    return LossSpec(name=name, factory=lambda p, ctx, k=kernel: k(p, ctx), properties=props, **kw)


_EXAMPLE_Y_PROB = (  # the examples' data (a test runs every example)
    "y,prob\n"
    "1,0.9\n"
    "0,0.2\n"
    "1,0.65\n"
    "0,0.4\n"
    "1,0.3\n"
)

_EXAMPLE_Y_SCORE = (  # the examples' data (a test runs every example)
    "y,score\n"
    "1,2.3\n"
    "0,-1.1\n"
    "1,0.4\n"
    "0,0.7\n"
    "1,-0.2\n"
)

_EXAMPLE_LABEL_LOGIT_0_LOGIT_1 = (  # the examples' data (a test runs every example)
    "label,logit_0,logit_1,logit_2\n"
    "0,2.0,0.5,-1.0\n"
    "1,0.1,1.2,0.3\n"
    "2,-0.5,0.2,1.9\n"
    "1,1.1,0.9,-0.2\n"
    "0,0.3,0.4,0.1\n"
)


SPEC_BCE = _spec(
    "bce", BCEKernel,
    Properties(
        takes=("probability", "logit"), minimiser="probability", imbalance="weights",
        formula="ℓ = −[w₊·y·log p + (1 − y)·log(1 − p)], p clipped to [eps, 1 − eps]; "
                "with logits: ℓ = w₊·y·softplus(−z) + (1 − y)·softplus(z)",
        gradient="probabilities: ∂ℓ/∂p = −w₊·y/p + (1 − y)/(1 − p), = (p − y)/(p(1 − p)) at w₊ = 1; "
                 "logits: ∂ℓ/∂z = w₊·y·(σ(z) − 1) + (1 − y)·σ(z), = σ(z) − y at w₊ = 1",
        convex=True, differentiable="everywhere (in p on (0, 1); in z everywhere)", robust="no",
        estimates="the conditional probability P(y = 1 | x) (a strictly proper scoring rule; pos_weight shifts it)",
        output="probability", cost="low",
        use_when="the standard loss for binary classifiers that output probabilities or logits; "
                 "reach for pos_weight (or class-weighted BCE) first when positives are rare",
        avoid_when="the labels are noisy and confident mistakes should not dominate, or you only need a decision",
        references=(
            "torch.nn.functional.binary_cross_entropy", "torch.nn.functional.binary_cross_entropy_with_logits(pos_weight=)",
            "sklearn.metrics.log_loss", "Bishop 2006, PRML §4.3.2",
        ),
        outlier_note="sensitive: −log p grows without bound as a confident prediction turns out wrong "
                     "(capped at −log eps ≈ 36 by the clipping); in logit space it grows linearly, like the hinge",
        conventions="Probabilities are clipped to [eps, 1 − eps] inside the log, eps = float64 machine epsilon, as "
                    "scikit-learn ≥ 1.5 does (torch clamps log p at −100 instead; they agree for p in [eps, 1 − eps]). "
                    "With probabilities the gradient is evaluated at the clipped p. Soft labels y ∈ [0, 1] are accepted "
                    "(the loss is then minimised at p = y, where it equals the entropy of y, not 0). pos_weight multiplies "
                    "the positive term, as torch's pos_weight. The derivative −y/ŷ + (1 − y)/(1 − ŷ) often quoted "
                    "is the per-sample gradient; the gradient of the mean carries 1/N. Keras smooths binary labels toward ½; "
                    "lossctl's bce takes the labels as given.",
    ),
    task=BIN, roles=(BCE_TARGET, PROB_PRED),
    params=(
        LOGITS, EPS_PARAM,
        Param("pos_weight", "float", 1.0, "weight w₊ of the positive term (torch pos_weight), e.g. #neg/#pos", POS),
    ),
    default_for=(BIN,),
    summary="binary cross-entropy (log loss)",
    example=heredoc("lossctl eval - -l bce --grad", _EXAMPLE_Y_PROB),
)
SPEC_HINGE = _spec(
    "hinge", HingeKernel,
    Properties(
        takes=("margin", "logit"), minimiser="decision", imbalance="no",
        formula="ℓ = max(0, m − y·f), y ∈ {−1, +1}, f the raw score",
        gradient="∂ℓ/∂f = −y if y·f < m, else 0 (0 at the kink y·f = m)",
        convex=True, differentiable="everywhere except y·f = m", robust="bounded-influence",
        estimates="the Bayes decision sign(P(y = 1 | x) − ½), not a probability",
        output="decision value (score)", cost="low",
        use_when="max-margin classifiers (linear SVMs) and when only the decision, not a probability, matters",
        avoid_when="you need calibrated probabilities, or the scores are probabilities in [0, 1] "
                   "(then no positive row ever clears the margin m = 1)",
        references=("sklearn.metrics.hinge_loss", "Cortes & Vapnik 1995"),
        outlier_note="relatively robust: the loss grows linearly with the violation and the gradient is bounded by 1",
        conventions="Labels {0, 1} are read with 0 as −1; a file that mixes 0 and −1 is refused. The score is used as "
                    "given (a decision value or logit; no sigmoid). Rows with 0 < y·f < m are inside the margin and "
                    "still cost; y·f ≤ 0 is a misclassification. margin = 0 gives the perceptron loss. Matches "
                    "scikit-learn's hinge_loss (margin 1).",
    ),
    task=BIN, roles=(MARGIN_TARGET, SCORE_PRED), params=(MARGIN,), default_for=(BIN,),
    summary="hinge (SVM) loss",
    example=heredoc("lossctl eval - -l hinge --grad", _EXAMPLE_Y_SCORE),
)
SPEC_SQUARED_HINGE = _spec(
    "squared_hinge", SquaredHingeKernel,
    Properties(
        takes=("margin", "logit"), minimiser="decision", imbalance="no",
        formula="ℓ = max(0, m − y·f)², y ∈ {−1, +1}",
        gradient="∂ℓ/∂f = −2y·max(0, m − y·f)",
        convex=True, differentiable="everywhere (once; the second derivative jumps at y·f = m)", robust="no",
        estimates="2·P(y = 1 | x) − 1 (with m = 1): classification-calibrated, the sign gives the Bayes decision",
        output="decision value (score)", cost="low",
        use_when="an SVM-style margin loss with a smooth gradient (LinearSVC's default loss)",
        avoid_when="outliers or label noise: the penalty grows quadratically with the violation",
        references=("keras.losses.SquaredHinge", "sklearn.svm.LinearSVC(loss='squared_hinge')"),
        outlier_note="sensitive: a badly misclassified row's gradient grows linearly with its violation",
        conventions="Labels {0, 1} are read with 0 as −1, as Keras does; the score is used as given.",
    ),
    task=BIN, roles=(MARGIN_TARGET, SCORE_PRED), params=(MARGIN,),
    summary="squared hinge loss",
    example=heredoc("lossctl eval - -l squared_hinge", _EXAMPLE_Y_SCORE),
)
SPEC_EXPONENTIAL = _spec(
    "exponential", ExponentialKernel,
    Properties(
        takes=("margin", "logit"), minimiser="decision", imbalance="no",
        formula="ℓ = exp(−y·f), y ∈ {−1, +1}",
        gradient="∂ℓ/∂f = −y·exp(−y·f)",
        convex=True, differentiable="everywhere", robust="no",
        estimates="½·log(P(y = 1 | x) / P(y = −1 | x)), half the log-odds (Friedman, Hastie & Tibshirani 2000)",
        output="decision value (half the log-odds)", cost="low",
        use_when="analysing boosting (AdaBoost minimises it stagewise), or when hard examples should dominate",
        avoid_when="labels are noisy or outliers exist: one misclassified row can outweigh all the others",
        references=("Freund & Schapire 1997 (AdaBoost)", "Friedman, Hastie & Tibshirani 2000, Ann. Statist. 28(2)"),
        outlier_note="very sensitive: loss and gradient grow exponentially with the violation",
        conventions="Labels {0, 1} are read with 0 as −1. exp(−y·f) overflows to inf for y·f < −709; that is "
                    "reported as a value, not an error. Its minimiser is half the log-odds where the logistic "
                    "loss's is the log-odds, which is the sense in which it is called close to cross-entropy.",
    ),
    task=BIN, roles=(MARGIN_TARGET, SCORE_PRED), params=(), default_for=(BIN,),
    summary="exponential (AdaBoost) loss",
    example=heredoc("lossctl eval - -l exponential", _EXAMPLE_Y_SCORE),
)
SPEC_FOCAL = _spec(
    "focal", FocalKernel,
    Properties(
        takes=("probability", "logit"), minimiser="probability", imbalance="yes",
        formula="binary: ℓ = −α_t (1 − p_t)^γ log p_t, p_t = p if y = 1 else 1 − p, α_t = α if y = 1 else 1 − α "
                "(α = −1: α_t = 1); multiclass: ℓ = −α_y (1 − p_y)^γ log p_y, p = softmax(z) or the given probabilities",
        gradient="binary logits, p = σ(z): y = 1: α(1 − p)^γ[γ·p·log p + p − 1]; y = 0: (1 − α)·p^γ[p − γ(1 − p)·log(1 − p)]; "
                 "multiclass logits: ∂ℓ/∂z_k = α_y A_y (p_k − [k = y]), A_y = (1 − p_y)^γ + γ p_y (1 − p_y)^{γ−1}(−log p_y); "
                 "probabilities: ∂ℓ/∂p_t = α_t (1 − p_t)^{γ−1}[γ log p_t − (1 − p_t)/p_t]",
        convex=False, differentiable="everywhere", robust="no",
        estimates="for γ > 0 a monotone transform of P(y | x), not P itself (classification-calibrated but not "
                  "strictly proper); γ = 0, α = −1 is BCE / cross-entropy",
        output="probability (calibration distorted for γ > 0)", cost="medium",
        use_when="extreme class imbalance dominated by easy negatives (dense object detection, lesion detection, "
                 "fraud); try class-weighted BCE first",
        avoid_when="you need calibrated probabilities, or the hard rows are label noise (focal concentrates on them)",
        references=(
            "torchvision.ops.sigmoid_focal_loss", "Lin et al. 2017, Focal Loss for Dense Object Detection (RetinaNet)",
            "Charoenphakdee et al. 2021, On Focal Loss for Class-Posterior Probability Estimation",
        ),
        outlier_note="not robust to label noise: a mislabelled row has p_t → 0, where (1 − p_t)^γ → 1, so it costs as "
                     "much as under BCE; the modulating factor only discounts easy rows (calling label noise 'mitigated' overstates this)",
        conventions="α weights the positive class and 1 − α the negative one, as torchvision's sigmoid_focal_loss; "
                    "α = −1 switches the weighting off. Multiclass: a single α multiplies every class (so it only "
                    "rescales the loss), C numbers weight class y by α_y. Multiclass targets may be one-hot or soft rows: "
                    "ℓ = −Σ_c y_c α_c (1 − p_c)^γ log p_c. γ = 0 with α = −1 equals bce / cross_entropy. Computed in "
                    "log space from the logits (log(1 − p_t) = log σ(∓z), a log-sum-exp for softmax), so γ < 1 with a "
                    "saturated logit gives finite values and gradients (torchvision's (1 − p_t)**γ gives NaN there). "
                    "With logits ∂ℓ/∂z = α(1 − p)^γ[γ·p·log p + p − 1] for y = 1 and (1 − α)·p^γ[p − γ(1 − p)·log(1 − p)] "
                    "for y = 0 (a form often quoted flips the overall sign for y = 1 and the γ-term's for y = 0). "
                    "With probabilities, p is clipped to [eps, 1 − eps] and the gradient "
                    "is with respect to p. Not convex in z for γ > 0.",
    ),
    task=BIN, tasks=(MC,), roles=(FOCAL_TARGET, FOCAL_PRED),
    params=(
        Param("gamma", "float", 2.0, "focusing parameter γ: larger discounts easy rows more; 0 gives cross-entropy",
              Interval(0, math.inf, "left")),
        Param("alpha", "floats", 0.25,
              "class-balance weight α of the positive class (1 − α for negatives), -1 for none; multiclass: "
              "one α for every class or C numbers",
              Interval(0, 1, "both"), extra_values=(-1,)),
        LOGITS, EPS_PARAM,
    ),
    default_for=(BIN, MC), summary="focal loss (binary and multiclass)",
    example=heredoc("lossctl eval - -l focal:gamma=2,alpha=0.25 --grad", _EXAMPLE_Y_PROB),
)
SPEC_CROSS_ENTROPY = _spec(
    "cross_entropy", CrossEntropyKernel,
    Properties(
        takes=("probability", "logit"), minimiser="probability", imbalance="weights",
        formula="ℓ = −Σ_c y_c log p_c (y one-hot for a class index); p = softmax(z) with logits (log-sum-exp), "
                "else the given probabilities clipped to [eps, 1 − eps]",
        gradient="logits: ∂ℓ/∂z = softmax(z) − y; with class weights or label smoothing (Σ_c q_c)·softmax(z) − q, "
                 "q_c the weighted, smoothed target; probabilities: ∂ℓ/∂p_c = −q_c/p_c",
        convex=True, differentiable="everywhere", robust="no",
        estimates="the conditional class probabilities P(y = c | x) (a strictly proper scoring rule)",
        output="probability distribution", cost="low",
        use_when="the default for multi-class classifiers (softmax outputs): images, text, language models",
        avoid_when="classes are extremely imbalanced and weighting is not enough (try focal), or labels are very noisy",
        references=(
            "torch.nn.functional.cross_entropy(weight=, label_smoothing=)", "sklearn.metrics.log_loss",
            "sklearn.utils.class_weight.compute_class_weight", "Szegedy et al. 2016 (label smoothing)",
        ),
        outlier_note="sensitive: −log p_y is unbounded as the true class's probability goes to 0 (36 at the clip)",
        conventions="Class weights follow torch, and the two target forms differ — a known trap: with a class-index "
                    "target the mean is Σᵢ w_{yᵢ} ℓᵢ / Σᵢ w_{yᵢ} (a weighted mean), with one-hot or soft-label targets "
                    "ℓᵢ = −Σ_c w_c y_ic log p_ic and the mean divides by N, so the same data give different numbers. "
                    "Label smoothing follows torch: y ← y(1 − ε) + ε/C, weighted like the rest (Keras's binary "
                    "cross-entropy smooths binary labels toward ½ instead). weight=balanced gives "
                    "w_c = N/(C·count_c) from the whole file's target as scikit-learn's compute_class_weight "
                    "(a pre-pass counts the classes; sample weights do not enter the counts; a class absent from the "
                    "target gets weight 0; the weights are reported as class_weights). Probability rows must sum to 1 "
                    "within 1e-6 and are clipped to [eps, 1 − eps] inside the log, as scikit-learn's log_loss. "
                    "Minimising it is minimising KL(y ‖ p) plus the entropy of y.",
    ),
    task=MC, roles=(MC_TARGET, MC_PRED),
    params=(
        LOGITS,
        Param("weight", "floats", None, "class weights w_c: C numbers, or balanced (N/(C·count_c))", keywords=("balanced",)),
        Param("label_smoothing", "float", 0.0, "ε: targets become y(1 − ε) + ε/C (torch)", Interval(0, 1, "both")),
        EPS_PARAM,
    ),
    aliases=("cce",), default_for=(MC,),
    passes=(Pass("prepass", param=("weight", "balanced"), why="balanced class weights need the whole data's class counts"),),
    summary="categorical (softmax) cross-entropy",
    example=heredoc("lossctl eval - -l cross_entropy:weight=balanced --grad", _EXAMPLE_LABEL_LOGIT_0_LOGIT_1),
)
SPEC_MULTI_HINGE = _spec(
    "multi_hinge", MultiHingeKernel,
    Properties(
        takes=("margin", "logit"), minimiser="decision", imbalance="no",
        formula="ww: ℓ = Σ_{j≠y} max(0, m − f_y + f_j); cs: ℓ = max(0, m − f_y + max_{j≠y} f_j)",
        gradient="ww: +1 on each j ≠ y whose term is positive, minus their count on y; cs: +1 on the runner-up j*, "
                 "−1 on y while the term is positive (tied runner-ups share the +1); 0 at kinks",
        convex=True, differentiable="everywhere except where a term sits at its hinge or runner-ups tie",
        robust="bounded-influence",
        estimates="the most likely class (argmax) under a margin; neither form is Fisher-consistent in general "
                  "(Tewari & Bartlett 2007), and no probabilities",
        output="class scores (decision values)", cost="low",
        use_when="multi-class SVMs, or judging scores by their margins rather than probabilities",
        avoid_when="you need probabilities, or the scores are probabilities (the margin is on the score scale)",
        references=(
            "torch.nn.functional.multi_margin_loss(p=1) (divided by C)", "sklearn.metrics.hinge_loss (multiclass: cs)",
            "Weston & Watkins 1999", "Crammer & Singer 2001",
        ),
        outlier_note="relatively robust: linear in the violation, gradient entries bounded by 1 (ww: by C − 1 on y)",
        conventions="The sum Σ_{j≠y} max(0, 1 − f_y + f_j) is the Weston–Watkins form (ww, the default), though it "
                    "is often called Crammer–Singer; Crammer–Singer (cs) takes the max over j instead. torch's multi_margin_loss divides the ww sum by C; scikit-learn's "
                    "multiclass hinge_loss is cs with margin 1. Scores are used as given (no softmax). The target is a "
                    "class index or one-hot rows.",
    ),
    task=MC, roles=(MC_TARGET, MC_SCORES),
    params=(
        Param("variant", "choice", "ww", "ww (Weston–Watkins: sum over classes) or cs (Crammer–Singer: the worst class)",
              choices=("ww", "cs")),
        Param("margin", "float", 1.0, "the margin m the true class's score must clear", Interval(0, math.inf, "left")),
    ),
    default_for=(MC,), summary="multi-class hinge loss (Weston–Watkins or Crammer–Singer)",
    example=heredoc("lossctl eval - -l multi_hinge:variant=cs", _EXAMPLE_LABEL_LOGIT_0_LOGIT_1),
)


# every loss of this family, in the order `lossctl list` shows them (lossctl.losses.ALL)
LOSSES: tuple[LossSpec, ...] = (
    SPEC_BCE,
    SPEC_HINGE,
    SPEC_SQUARED_HINGE,
    SPEC_EXPONENTIAL,
    SPEC_FOCAL,
    SPEC_CROSS_ENTROPY,
    SPEC_MULTI_HINGE,
)
