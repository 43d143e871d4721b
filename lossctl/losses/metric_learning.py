"""Metric-learning losses: every input role is an embedding, a vector of D columns.

``contrastive`` scores pairs, ``triplet`` explicit (anchor, positive, negative) rows,
and ``triplet_mined`` mines triplets from labelled embeddings inside consecutive
batches of ``batch_size`` rows. Gradients are with respect to each embedding vector:
g = ∂(N·L)/∂e, one D-vector per row and role.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import numpy as np

from lossctl.accumulate import GradSummary, Sum
from lossctl.engine import Batch, Context, RowMeanKernel, State
from lossctl.errors import InputError
from lossctl.spec import BINARY, CATEGORICAL, REAL, Interval, LossSpec, Param, Properties, Role, check_domain, heredoc

Mining = Literal["hard", "semihard", "all"]

# torch F.normalize: x / max(‖x‖, 1e-12)
NORM_EPS = 1e-12
# distance rows of at most this many entries are held at once while mining
BLOCK_ELEMS = 1 << 21
# batches without a valid triplet named one by one in the notes; the rest are counted
MAX_NOTES = 10

# ---------------------------------------------------------------- the maths


def l2_normalize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """u = x / max(‖x‖, 1e-12) per row (torch ``F.normalize``); returns u and the divisor."""
    den = np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), NORM_EPS)
    return x / den[:, None], den


def l2_normalize_backward(g: np.ndarray, u: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Chain rule through u = x/‖x‖: ∂u/∂x = (I − u uᵀ)/‖x‖ (I/1e-12 below the floor)."""
    proj = g - np.einsum("ij,ij->i", g, u)[:, None] * u
    return np.where((den > NORM_EPS)[:, None], proj, g) / den[:, None]


def _distance(diff: np.ndarray, *, squared: bool, eps: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """d(x, y) of the rows of diff = x − y, and ∂d/∂x.

    squared: d = ‖x − y‖², ∂d/∂x = 2(x − y). Otherwise torch ``pairwise_distance``:
    d = ‖x − y + eps‖₂, ∂d/∂x = (x − y + eps)/d, 0 where d = 0 (a kink).
    """
    if squared:
        return np.einsum("ij,ij->i", diff, diff), 2.0 * diff
    z = diff + eps
    d = np.sqrt(np.einsum("ij,ij->i", z, z))
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where((d > 0)[:, None], z / d[:, None], 0.0)
    return d, g


def contrastive(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, *, margin: float = 1.0) -> np.ndarray:
    """½[y·d² + (1 − y)·max(0, m − d)²], d = ‖x1 − x2‖₂, y = 1 similar (Hadsell et al. 2006)."""
    diff = x1 - x2
    d2 = np.einsum("ij,ij->i", diff, diff)
    h = np.maximum(margin - np.sqrt(d2), 0.0)
    return 0.5 * (y * d2 + (1.0 - y) * h * h)


def contrastive_grad(
    x1: np.ndarray, x2: np.ndarray, y: np.ndarray, *, margin: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """∂ℓ/∂x1 = [y − (1 − y)·max(0, m − d)/d]·(x1 − x2) = −∂ℓ/∂x2; 0 where d = 0 and y = 0."""
    diff = x1 - x2
    d = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    h = np.maximum(margin - d, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        push = np.where(d > 0, h / d, 0.0)
    g1 = (y - (1.0 - y) * push)[:, None] * diff + 0.0  # + 0.0 and 0.0 − g1: no −0.0 reported
    return g1, 0.0 - g1


def triplet(
    a: np.ndarray, p: np.ndarray, n: np.ndarray, *,
    margin: float = 0.2, squared: bool = True, normalize: bool = False, eps: float = 1e-6,
) -> np.ndarray:
    """max(0, d(a, p) − d(a, n) + m) per row; d squared Euclidean, or torch's ‖x − y + eps‖₂."""
    return _triplet(a, p, n, margin=margin, squared=squared, normalize=normalize, eps=eps, grad=False)[0]


def triplet_grad(
    a: np.ndarray, p: np.ndarray, n: np.ndarray, *,
    margin: float = 0.2, squared: bool = True, normalize: bool = False, eps: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(∂ℓ/∂a, ∂ℓ/∂p, ∂ℓ/∂n) per row; 0 where the hinge is inactive (ℓ = 0, kink included)."""
    out = _triplet(a, p, n, margin=margin, squared=squared, normalize=normalize, eps=eps, grad=True)[1]
    assert out is not None
    return out


def _triplet(a, p, n, *, margin, squared, normalize, eps, grad):
    if normalize:
        (ua, da), (up, dp_), (un, dn_) = l2_normalize(a), l2_normalize(p), l2_normalize(n)
    else:
        ua, up, un = a, p, n
    d_ap, g_ap = _distance(ua - up, squared=squared, eps=eps)
    d_an, g_an = _distance(ua - un, squared=squared, eps=eps)
    loss = np.maximum(d_ap - d_an + margin, 0.0)
    if not grad:
        return loss, None
    on = (loss > 0)[:, None]
    ga, gp, gn = np.where(on, g_ap - g_an, 0.0), np.where(on, -g_ap, 0.0), np.where(on, g_an, 0.0)
    if normalize:
        ga, gp, gn = l2_normalize_backward(ga, ua, da), l2_normalize_backward(gp, up, dp_), l2_normalize_backward(gn, un, dn_)
    return loss, (ga, gp, gn)


def _centred(u: np.ndarray) -> np.ndarray:
    """u shifted near the origin, for the Gram trick ‖x‖² + ‖y‖² − 2x·y.

    That form cancels catastrophically for embeddings far from the origin (an offset of
    1e7 changes semihard losses by 25 %); distances and their gradients do not change under
    a translation. The shift per column is the mean rounded to a multiple of the largest
    power of two not above the column's spread, so inputs on a coarse grid (integers,
    duplicate rows) stay exact and exact distance ties stay ties.
    """
    if u.shape[0] == 0:
        return u
    lo, hi = np.min(u, axis=0), np.max(u, axis=0)
    spread = hi - lo
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        unit = np.exp2(np.floor(np.log2(np.where(spread > 0, spread, 1.0))))
        c = np.round(np.mean(u, axis=0) / unit) * unit
    c = np.where(spread > 0, c, u[0])
    c = np.where(np.isfinite(c), c, 0.0)
    return u - c


@dataclass
class Mined:
    """What mining one batch gives: Σ w·ℓ over its terms, Σ w (the denominator), counts."""

    loss_sum: float
    denom: float
    terms: int  # terms averaged: anchors (hard), anchor–positive pairs (semihard), positive triplets (all)
    valid_anchors: int  # anchors with at least one positive and one negative
    valid_triplets: int  # (a, p, n) with p ≠ a of a's class and n of another class
    grad: np.ndarray | None  # Σ_t w_t ∂ℓ_t/∂e_i per row, (B, D)


def mine_batch(
    emb: np.ndarray,
    labels: np.ndarray,
    *,
    mining: Mining = "hard",
    margin: float = 0.2,
    squared: bool = True,
    normalize: bool = False,
    weight: np.ndarray | None = None,
    grad: bool = False,
) -> Mined:
    """Mine triplets inside one batch of labelled embeddings.

    d(i, j) is ‖eᵢ − eⱼ‖² when ``squared``, ‖eᵢ − eⱼ‖₂ otherwise (of the L2-normalised
    embeddings with ``normalize``). An anchor a is valid when its class has another row
    (a positive p ≠ a) and the batch holds a row of another class (a negative n).

    - ``hard`` (Hermans et al. 2017, batch hard): per valid anchor one term
      max(0, max_p d(a,p) − min_n d(a,n) + m); the mean is over valid anchors.
    - ``semihard`` (FaceNet; TF-Addons ``triplet_semihard_loss``): per anchor–positive
      pair one term max(0, d(a,p) − d(a,n*) + m), n* the nearest negative with
      d(a,n) > d(a,p), else the farthest negative; the mean is over all such pairs.
    - ``all`` (batch all): every valid triplet; the mean is over those with a positive
      loss (TF-Addons ``batch_all``, pytorch-metric-learning ``AvgNonZeroReducer``).

    With sample weights each term carries its anchor's weight, in the sum and in the
    denominator. The distance matrix is built in blocks of anchor rows, so memory is
    O(B·D + min(B², 2²¹)) and time O(B² (D + log B)).
    """
    e = np.asarray(emb, dtype=np.float64)
    if e.ndim == 1:
        e = e[:, None]
    lab = np.asarray(labels)
    b = e.shape[0]
    w = np.ones(b) if weight is None else np.asarray(weight, dtype=np.float64)
    if normalize:
        u, den = l2_normalize(e)
    else:
        u, den = e, None
    uc = _centred(u)
    sq = np.einsum("ij,ij->i", uc, uc)
    g_u = np.zeros_like(u) if grad else None
    loss_sum = denom = 0.0
    terms = valid_anchors = valid_triplets = 0
    step = max(1, min(b, BLOCK_ELEMS // max(b, 1)))
    cols = np.arange(b)
    for s in range(0, b, step):
        t = min(b, s + step)
        c = t - s
        rows = np.arange(c)
        d2 = sq[s:t, None] + sq[None, :] - 2.0 * (uc[s:t] @ uc.T)
        np.maximum(d2, 0.0, out=d2)
        d2[rows, rows + s] = 0.0
        dist = d2 if squared else np.sqrt(d2)
        same = lab[s:t, None] == lab[None, :]
        pos = same.copy()
        pos[rows, rows + s] = False
        neg = ~same
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        valid = (n_pos > 0) & (n_neg > 0)
        valid_anchors += int(valid.sum())
        valid_triplets += int(np.sum(n_pos[valid] * n_neg[valid]))
        wa = w[s:t]
        coef = np.zeros((c, b)) if grad else None  # ∂(Σ_t w_t ℓ_t)/∂d(a, j) for the block's anchors
        if mining == "hard":
            dpos = np.where(pos, dist, -np.inf)
            ip = dpos.argmax(axis=1)
            dneg = np.where(neg, dist, np.inf)
            ineg = dneg.argmin(axis=1)
            with np.errstate(invalid="ignore"):
                lv = np.where(valid, np.maximum(dpos[rows, ip] - dneg[rows, ineg] + margin, 0.0), 0.0)
            loss_sum += float(np.sum(wa * lv))
            denom += float(np.sum(wa[valid]))
            terms += int(valid.sum())
            if coef is not None:
                on = valid & (lv > 0)
                coef[rows[on], ip[on]] += wa[on]
                coef[rows[on], ineg[on]] -= wa[on]
        elif mining == "semihard":
            # sort each anchor's row by distance, negatives before others at ties, so
            # the first negative after a positive's place is strictly farther
            order = np.lexsort((~neg, dist), axis=1)
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.broadcast_to(cols, order.shape), axis=1)
            sneg = np.take_along_axis(neg, order, axis=1)
            nxt = np.minimum.accumulate(np.where(sneg, cols, b)[:, ::-1], axis=1)[:, ::-1]
            nxt = np.concatenate([nxt, np.full((c, 1), b)], axis=1)
            last_neg = b - 1 - np.argmax(sneg[:, ::-1], axis=1)
            ai, pj = np.nonzero(pos & valid[:, None])
            q = nxt[ai, rank[ai, pj] + 1]
            ni = order[ai, np.where(q < b, q, last_neg[ai])]
            lv = np.maximum(dist[ai, pj] - dist[ai, ni] + margin, 0.0)
            loss_sum += float(np.sum(wa[ai] * lv))
            denom += float(np.sum(wa[ai]))
            terms += int(ai.size)
            if coef is not None:
                on = lv > 0
                wt = wa[ai[on]]
                flat = coef.reshape(-1)
                flat += np.bincount(ai[on] * b + pj[on], weights=wt, minlength=c * b)
                flat -= np.bincount(ai[on] * b + ni[on], weights=wt, minlength=c * b)
        else:  # all
            # merge each anchor's thresholds d(a,p) + m with its negatives' distances;
            # thresholds first at ties, so a negative counts when d(a,n) < d(a,p) + m
            thr = np.where(pos & valid[:, None], dist + margin, np.inf)
            dn = np.where(neg & valid[:, None], dist, np.inf)
            vals = np.concatenate([thr, dn], axis=1)
            tie = np.concatenate([np.zeros((c, b), bool), np.ones((c, b), bool)], axis=1)
            order = np.lexsort((tie, vals), axis=1)
            sv = np.take_along_axis(vals, order, axis=1)
            fin = np.isfinite(sv)
            is_neg = (order >= b) & fin
            is_thr = (order < b) & fin
            neg_before = np.cumsum(is_neg, axis=1)  # 0 at threshold places' own column
            neg_sum_before = np.cumsum(np.where(is_neg, sv, 0.0), axis=1)
            qa, qj = np.nonzero(is_thr)
            k = neg_before[qa, qj]
            # Σ_{n: d(a,n) < t} (t − d(a,n)) = k·t − Σ d(a,n)
            lv = k * sv[qa, qj] - neg_sum_before[qa, qj]
            loss_sum += float(np.sum(wa[qa] * lv))
            denom += float(np.sum(wa[qa] * k))
            terms += int(k.sum())
            if coef is not None:
                flat = coef.reshape(-1)
                flat += np.bincount(qa * b + order[qa, qj], weights=wa[qa] * k, minlength=c * b)
                thr_before = np.cumsum(is_thr, axis=1)
                n_thr = is_thr.sum(axis=1)
                na, nj = np.nonzero(is_neg)
                # positives whose threshold lies above d(a,n): each such triplet is active
                later = n_thr[na] - thr_before[na, nj]
                flat -= np.bincount(na * b + order[na, nj] - b, weights=wa[na] * later, minlength=c * b)
        if g_u is not None and coef is not None:
            # d(a,j) depends on u_a and u_j: ∂d/∂u_a = k·(u_a − u_j) = −∂d/∂u_j
            if squared:
                k_mat = 2.0 * coef
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    k_mat = np.where(dist > 0, coef / dist, 0.0)
            ub = uc[s:t]
            g_u[s:t] += k_mat.sum(axis=1)[:, None] * ub - k_mat @ uc
            g_u += k_mat.sum(axis=0)[:, None] * uc - k_mat.T @ ub
    g = None
    if g_u is not None:
        g = l2_normalize_backward(g_u, u, den) if normalize and den is not None else g_u
    return Mined(loss_sum, denom, terms, valid_anchors, valid_triplets, g)


def mined_triplet(
    emb: np.ndarray,
    labels: np.ndarray,
    *,
    mining: Mining = "hard",
    margin: float = 0.2,
    squared: bool = True,
    normalize: bool = False,
    batch_size: int = 4096,
) -> float:
    """The value of ``triplet_mined`` on a whole array: batches of rows 1..B, B+1..2B, …

    L = Σ_batches Σ_terms ℓ / Σ_batches (number of terms): every term of every batch
    counts once, so with batches of unequal difficulty L is a count-weighted mean of
    the per-batch means, not their plain mean.
    """
    e = np.asarray(emb, dtype=np.float64)
    total = den = 0.0
    for s in range(0, e.shape[0], batch_size):
        m = mine_batch(e[s:s + batch_size], np.asarray(labels)[s:s + batch_size], mining=mining,
                       margin=margin, squared=squared, normalize=normalize)
        total += m.loss_sum
        den += m.denom
    return total / den if den > 0 else 0.0


# ---------------------------------------------------------------- kernels and state


def _as_matrix(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def _check_widths(b: Batch, roles: tuple[str, ...], loss: str) -> None:
    widths = {r: _as_matrix(b[r]).shape[1] for r in roles}
    first = roles[0]
    for r in roles[1:]:
        if widths[r] != widths[first]:
            def label(role: str) -> str:
                col = b.columns.get(role)
                return f"{role} ('{col}')" if col and col != role else role

            raise InputError.at(
                f"the vector roles of {loss} must have the same width: {label(first)} has "
                f"{widths[first]} columns but {label(r)} has {widths[r]}",
                source=b.source or None, column=b.columns.get(r, r), row=b.input_row(0) if b.n else None,
            )


class ContrastiveKernel(RowMeanKernel):
    grad_roles = ("x1", "x2")

    def validate(self, b: Batch) -> None:
        _check_widths(b, ("x1", "x2"), "contrastive")
        check_domain(b, "target", PAIR_TARGET.domain, "contrastive targets are 1 (similar) or 0 (dissimilar)")

    def rows(self, b: Batch, grad: bool):
        x1, x2, y = _as_matrix(b["x1"]), _as_matrix(b["x2"]), np.asarray(b["target"], dtype=np.float64)
        m = self.params["margin"]
        loss = contrastive(x1, x2, y, margin=m)
        grads = None
        if grad:
            g1, g2 = contrastive_grad(x1, x2, y, margin=m)
            grads = {"x1": g1, "x2": g2}
        return loss, grads, None


class TripletKernel(RowMeanKernel):
    grad_roles = ("anchor", "positive", "negative")

    def validate(self, b: Batch) -> None:
        _check_widths(b, ("anchor", "positive", "negative"), "triplet")

    def rows(self, b: Batch, grad: bool):
        a, p, n = (_as_matrix(b[r]) for r in ("anchor", "positive", "negative"))
        kw = {k: self.params[k] for k in ("margin", "squared", "normalize", "eps")}
        loss, g = _triplet(a, p, n, grad=grad, **kw)
        grads = None if g is None else dict(zip(("anchor", "positive", "negative"), g))
        return loss, grads, None


class MinedTripletState(State):
    """Batch-mined triplet loss: not a function of row sums, so it has its own state.

    Rows are buffered until ``batch_size`` of them have arrived, mined together, and
    only Σ w·ℓ, Σ w, counts and the gradient summary are kept: memory is one batch.
    Batches are consecutive runs of ``batch_size`` rows in the order this state sees
    them (for a whole file rows 1..B, B+1..2B, …, whatever the read batch size; for a
    ``--by`` group its own rows in file order); the last, partial batch is mined at the
    end. ``merge`` adds the sums of two states of disjoint shards: each shard is cut
    into batches of its own, so the merged value equals one run over the shards'
    batches, not one run over the concatenated rows.
    """

    unmergeable_reason = ("its state cannot be saved to a file: triplets are mined within batches of "
                          "consecutive rows, which a cut between shards would change")

    def __init__(self, params: Mapping[str, Any], ctx: Context) -> None:
        self.params = dict(params)
        self.batch_size = int(params["batch_size"])
        self.want_grad = bool(ctx.grad)
        self.rows_bound = ctx.rows_bound
        self.buf: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self.buffered = 0
        self.start = 0  # stream position of the next batch to mine
        self.n = 0
        self.sums = Sum(2)  # Σ w·ℓ, Σ w over the mined terms
        self.terms = 0
        self.valid_anchors = 0
        self.valid_triplets = 0
        self.batches = 0
        self.empty: list[str] = []
        self.empty_count = 0
        self.first_label: Any = None
        self.multi_class = False
        self.width: int | None = None
        self.weighted = False
        self.source = ""
        self.column = "target"
        self.emb_column = "embedding"
        self.grad = GradSummary(ctx.rows_bound, sample=ctx.sample_grads) if self.want_grad else None

    # -- streaming
    def validate(self, b: Batch) -> None:
        if b.n == 0:
            return
        e = b["embedding"]
        w = 1 if e.ndim == 1 else e.shape[1]
        if self.width is None:
            self.width = w
        elif w != self.width:
            raise InputError.at(
                f"embeddings are {w} wide here but {self.width} wide in earlier rows",
                source=b.source or None, column=b.columns.get("embedding", "embedding"), row=b.input_row(0),
            )
        lab = np.asarray(b["target"])
        if lab.dtype.kind == "f":
            bad = ~np.isfinite(lab)
            if bad.any():
                raise b.fail("missing class label", "target", bad)

    def update(self, b: Batch) -> None:
        if b.n == 0:
            return
        self.source = b.source or self.source
        self.column = b.columns.get("target", self.column)
        self.emb_column = b.columns.get("embedding", self.emb_column)
        lab = np.asarray(b["target"])
        if not self.multi_class:
            if self.first_label is None:
                self.first_label = lab[0].item() if hasattr(lab[0], "item") else lab[0]
            self.multi_class = bool(np.any(lab != self.first_label))
        if b.weight is not None:
            self.weighted = True
        self.buf.append((_as_matrix(b["embedding"]), lab, None if b.weight is None else np.asarray(b.weight, float)))
        self.buffered += b.n
        self.n += b.n
        while self.buffered >= self.batch_size:
            self._mine(self._take(self.batch_size))

    def _take(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        es, ls, ws, got = [], [], [], 0
        while got < k:
            e, lab, w = self.buf[0]
            need = k - got
            if e.shape[0] <= need:
                self.buf.pop(0)
            else:
                self.buf[0] = (e[need:], lab[need:], None if w is None else w[need:])
                e, lab, w = e[:need], lab[:need], None if w is None else w[:need]
            es.append(e)
            ls.append(lab)
            ws.append(np.ones(e.shape[0]) if w is None else w)
            got += e.shape[0]
        self.buffered -= k
        return np.concatenate(es), np.concatenate(ls), (np.concatenate(ws) if self.weighted else None)

    def _mine(self, batch: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> None:
        e, lab, w = batch
        p = self.params
        # class labels (numbers or strings) → integer codes: cheap B×B comparisons
        codes = np.unique(lab, return_inverse=True)[1].reshape(-1)
        m = mine_batch(e, codes, mining=p["mining"], margin=p["margin"], squared=p["squared"],
                       normalize=p["normalize"], weight=w, grad=self.grad is not None)
        self.batches += 1
        first, last = self.start + 1, self.start + e.shape[0]
        if m.valid_anchors == 0:
            self.empty_count += 1
            if len(self.empty) < MAX_NOTES:
                why = "a single class" if np.all(lab == lab[0]) else "no class with two rows"
                self.empty.append(f"batch {self.batches} (rows {first}–{last}) has no valid triplet ({why})")
        self.sums.add(np.array([m.loss_sum, m.denom]))
        self.terms += m.terms
        self.valid_anchors += m.valid_anchors
        self.valid_triplets += m.valid_triplets
        if self.grad is not None and m.grad is not None:
            self.grad.update(m.grad, self.start)
        self.start += e.shape[0]

    def _flush(self) -> None:
        if self.buffered:
            self._mine(self._take(self.buffered))

    def merge(self, other: State) -> None:
        assert isinstance(other, MinedTripletState)
        self._flush()
        other._flush()
        self.n += other.n
        self.sums.merge(other.sums)
        self.terms += other.terms
        self.valid_anchors += other.valid_anchors
        self.valid_triplets += other.valid_triplets
        self.batches += other.batches
        self.empty += [f"another shard's {x}" for x in other.empty][: max(0, MAX_NOTES - len(self.empty))]
        self.empty_count += other.empty_count
        if other.first_label is not None:
            if self.first_label is None:
                self.first_label = other.first_label
            self.multi_class = self.multi_class or other.multi_class or other.first_label != self.first_label
        if self.grad is not None and other.grad is not None:
            self.grad.merge(other.grad)

    # -- the value
    def result(self) -> dict[str, Any]:
        self._flush()
        out: dict[str, Any] = {"n": self.n}
        if self.n == 0:
            out["value"] = math.nan
            return out
        if not self.multi_class:
            raise InputError.at(
                f"every row has the same class ({self.first_label!r}); mined triplets need at "
                "least two classes (an anchor, a positive of its class and a negative of another)",
                source=self.source or None, column=self.column,
            )
        if self.valid_anchors == 0:
            raise InputError.at(
                f"no batch of {self.batch_size} rows holds a valid triplet (an anchor, another row "
                "of its class and a row of another class); shuffle the rows or raise batch_size",
                source=self.source or None, column=self.column,
            )
        s, wsum = (float(x) for x in self.sums.value)
        mining = self.params["mining"]
        if wsum > 0:
            value = s / wsum
        else:
            # batch all with no positive-loss triplet: 0, as TF-Addons and pytorch-metric-learning
            value = 0.0 if mining == "all" and self.terms == 0 else math.nan
        out["value"] = value
        extra: dict[str, Any] = {"batches": self.batches, "terms": self.terms}
        if mining == "all":
            extra["valid_triplets"] = self.valid_triplets
            extra["fraction_positive"] = self.terms / self.valid_triplets if self.valid_triplets else 0.0
        else:
            extra["valid_anchors"] = self.valid_anchors
        out["extra"] = extra
        notes = list(self.empty)
        if self.empty_count > len(self.empty):
            notes.append(f"… {self.empty_count - len(self.empty)} more batches with no valid triplet "
                         f"({self.empty_count} of {self.batches} in all)")
        if notes:
            out["notes"] = notes
        if self.grad is not None:
            # g_i = ∂(N·L)/∂e_i = N/Σw · Σ_t w_t ∂ℓ_t/∂e_i
            scale = self.n / wsum if wsum > 0 else 0.0
            out["grad"] = self.grad.result(scale)
            out["grad_sample"] = self.grad.sample(scale)
        return out


# ---------------------------------------------------------------- registry

METRIC = "metric"
MARGIN_RANGE = Interval(0, math.inf, closed="left")


def _squared_param(default: bool = True) -> Param:
    return Param("squared", "bool", default,
                 "squared Euclidean distance (true) or the Euclidean distance (false)")


def _normalize_param() -> Param:
    return Param("normalize", "bool", False, "L2-normalise each embedding before the distances")


PAIR_TARGET = Role("target", help="1 if the pair is similar, 0 if dissimilar",
                   names=("similar", "same", "is_similar", "is_same", "match", "pair_label"), domain=BINARY)

_EXAMPLE_X1_0_X1_1_X2_0 = (  # the examples' data (a test runs every example)
    "x1_0,x1_1,x2_0,x2_1,similar\n"
    "0.1,0.9,0.2,0.8,1\n"
    "0.5,-0.3,-0.6,0.4,0\n"
    "1.0,0.0,0.9,0.2,1\n"
    "-0.2,0.7,0.8,-0.5,0\n"
)

_EXAMPLE_ANCHOR_0_ANCHOR_1_POSITIVE_0 = (  # the examples' data (a test runs every example)
    "anchor_0,anchor_1,positive_0,positive_1,negative_0,negative_1\n"
    "0.1,0.9,0.2,0.8,0.9,-0.1\n"
    "0.5,-0.3,0.4,-0.2,-0.6,0.4\n"
    "1.0,0.0,0.8,0.1,0.0,1.0\n"
)

_EXAMPLE_EMB_0_EMB_1_LABEL = (  # the examples' data (a test runs every example)
    "emb_0,emb_1,label\n"
    "0.1,0.9,0\n"
    "0.2,0.8,0\n"
    "0.0,1.1,0\n"
    "0.9,0.1,1\n"
    "1.1,0.0,1\n"
    "0.8,0.3,1\n"
    "-0.7,-0.6,2\n"
    "-0.9,-0.4,2\n"
    "-0.6,-0.8,2\n"
)


SPEC_CONTRASTIVE = LossSpec(
    name="contrastive",
    task=METRIC,
    roles=(
        Role("x1", vector=True, help="first embedding of the pair (D columns)", names=("x1_*", "x1"), domain=REAL),
        Role("x2", vector=True, help="second embedding of the pair (D columns, as x1)", names=("x2_*", "x2"), domain=REAL),
        PAIR_TARGET,
    ),
    params=(Param("margin", "float", 1.0, "dissimilar pairs closer than this are penalised (usual range 0.5–2.0)",
                  MARGIN_RANGE),),
    factory=lambda p, ctx: ContrastiveKernel(p, ctx),
    properties=Properties(
        takes=("embedding",), minimiser="embedding", imbalance="no",
        formula="ℓ = ½[y·d² + (1 − y)·max(0, m − d)²], d = ‖x1 − x2‖₂, y = 1 similar, 0 dissimilar",
        gradient="∂ℓ/∂x1 = [y − (1 − y)·max(0, m − d)/d]·(x1 − x2) = −∂ℓ/∂x2 (0 for a dissimilar pair with x1 = x2)",
        convex=False,
        differentiable="everywhere except x1 = x2 in a dissimilar pair",
        robust="no",
        estimates="an embedding where similar pairs coincide and dissimilar pairs are at least m apart",
        output="embedding",
        cost="low",
        use_when="you have labelled pairs (same / different), e.g. Siamese networks for verification",
        avoid_when="you have class labels per sample: mined triplets use many more comparisons per batch",
        references=("Hadsell, Chopra & LeCun 2006", "tfa.losses.contrastive_loss"),
        outlier_note="sensitive: a similar pair far apart pulls with a force that grows with its distance",
        conventions=(
            "y = 1 means similar (Hadsell et al.'s Y is 1 − y). lossctl keeps the ½ of the paper; "
            "TF-Addons' contrastive_loss has no ½ (twice lossctl's value) and takes the distance as input. "
            "Usual margins lie in 0.5–2.0. Targets other than 0 and 1 are an input error."
        ),
    ),
    default_for=(METRIC,),
    grad_roles=("x1", "x2"),
    summary="contrastive loss of labelled pairs",
    example=heredoc("lossctl eval - -l contrastive:margin=1 --grad", _EXAMPLE_X1_0_X1_1_X2_0),
)

SPEC_TRIPLET = LossSpec(
    name="triplet",
    task=METRIC,
    roles=(
        Role("anchor", vector=True, help="anchor embedding (D columns)", names=("anchor_*", "anchor"), domain=REAL),
        Role("positive", vector=True, help="embedding of the anchor's class", names=("positive_*", "positive", "pos_*"), domain=REAL),
        Role("negative", vector=True, help="embedding of another class", names=("negative_*", "negative", "neg_*"), domain=REAL),
    ),
    params=(
        Param("margin", "float", 0.2, "required gap between d(a,n) and d(a,p) (usual range 0.2–1.0)", MARGIN_RANGE),
        _squared_param(),
        _normalize_param(),
        Param("eps", "float", 1e-6, "added to a − p (a − n) in the non-squared distance, as torch pairwise_distance",
              Interval(0, math.inf, closed="left")),
    ),
    factory=lambda p, ctx: TripletKernel(p, ctx),
    properties=Properties(
        takes=("embedding",), minimiser="embedding", imbalance="no",
        formula="ℓ = max(0, d(a,p) − d(a,n) + m); d = ‖x − y‖² if squared, else ‖x − y + eps‖₂",
        gradient=("active rows (ℓ > 0): squared: ∂ℓ/∂a = 2(n − p), ∂ℓ/∂p = −2(a − p), ∂ℓ/∂n = 2(a − n); "
                  "non-squared: ∂ℓ/∂a = u_ap − u_an, ∂ℓ/∂p = −u_ap, ∂ℓ/∂n = u_an with u_xy = (x − y + eps)/d(x,y); "
                  "0 where ℓ = 0; with normalize the chain rule through x/‖x‖"),
        convex=False,
        differentiable="everywhere except where d(a,p) − d(a,n) + m = 0 (the hinge)",
        robust="no",
        estimates="an embedding where each anchor is nearer its positive than its negative by at least m",
        output="embedding",
        cost="low",
        use_when="you have explicit (anchor, positive, negative) triplets, e.g. face or product retrieval",
        avoid_when="your triplets are easy (most rows have ℓ = 0 and no gradient): mine hard ones (triplet_mined)",
        references=("Schroff, Kalenichenko & Philbin 2015 (FaceNet)", "torch.nn.functional.triplet_margin_loss"),
        outlier_note="squared distances: the pull grows with the distance; squared=false bounds it by 2 per role",
        conventions=(
            "squared=true by default (FaceNet); torch triplet_margin_loss(margin, p=2, eps=1e-6) is squared=false, "
            "with its eps added to the difference, ‖a − p + eps‖₂ (eps is ignored when squared). "
            "A triplet loss over labelled embeddings (roles embedding and target) is triplet_mined: "
            "-l triplet:mining=…, or -l triplet on a file of labelled embeddings, selects it. "
            "Usual margins lie in 0.2–1.0."
        ),
    ),
    default_for=(METRIC,),
    grad_roles=("anchor", "positive", "negative"),
    summary="triplet margin loss of explicit triplets",
    example=heredoc("lossctl eval - -l triplet:squared=false --grad", _EXAMPLE_ANCHOR_0_ANCHOR_1_POSITIVE_0),
)

SPEC_TRIPLET_MINED = LossSpec(
    name="triplet_mined",
    variant_of="triplet",
    task=METRIC,
    aliases=("mined_triplet",),
    roles=(
        Role("embedding", vector=True, help="the embedding of each row (D columns or a list column)",
             names=("embedding", "embeddings", "emb", "embedding_*", "emb_*"), domain=REAL),
        Role("target", help="class label of each row (numbers or strings)",
             names=("label", "class", "y", "labels", "class_id"), domain=CATEGORICAL),
    ),
    params=(
        Param("mining", "choice", "hard", "which triplets each batch contributes", choices=("hard", "semihard", "all")),
        Param("margin", "float", 0.2, "required gap between d(a,n) and d(a,p) (usual range 0.2–1.0)", MARGIN_RANGE),
        _squared_param(),
        _normalize_param(),
        Param("batch_size", "int", 4096, "rows per mining batch (triplets are mined inside each batch)",
              Interval(2, math.inf, closed="left")),
    ),
    factory=lambda p, ctx: MinedTripletState(p, ctx),
    properties=Properties(
        takes=("embedding",), minimiser="embedding", imbalance="no",
        formula=(
            "rows are cut into batches of batch_size (rows 1..B, B+1..2B, …); in each batch: hard = per anchor "
            "max(0, max_p d(a,p) − min_n d(a,n) + m); semihard = per anchor–positive pair max(0, d(a,p) − d(a,n*) + m), "
            "n* the nearest negative with d(a,n) > d(a,p), else the farthest; all = every triplet max(0, d(a,p) − d(a,n) + m). "
            "L = Σ over all batches' terms / number of terms (for all: of the terms with ℓ > 0)"
        ),
        gradient=(
            "g_i = ∂(N·L)/∂e_i = N/T · Σ_terms ∂ℓ/∂e_i (T the denominator of L, N the rows), the mined "
            "selection held fixed, as autograd of (N·L).backward() gives"
        ),
        convex=False,
        differentiable="almost everywhere: not at hinge points or where the mined positive/negative changes",
        robust="no",
        estimates="an embedding where each class's rows lie nearer one another than to other classes by m",
        output="embedding",
        cost="high",
        use_when="you have class-labelled embeddings and want the batch-mined objective a training run would see",
        avoid_when="rows are sorted by class (batches then hold one class: shuffle first) or you have explicit triplets",
        references=(
            "Hermans, Beyer & Leibe 2017 (batch hard)", "Schroff et al. 2015 (FaceNet, semihard)",
            "tfa.losses.triplet_semihard_loss", "pytorch_metric_learning BatchHardMiner + TripletMarginLoss",
        ),
        outlier_note="hard mining makes outliers (mislabelled rows) the triplets it picks",
        conventions=(
            "Often called simply 'triplet loss'; lossctl gives it its own name because its roles (embedding, "
            "target) differ from explicit triplets. Memory: O(B²) per batch at most (one B×B distance matrix, "
            "built in blocks of rows), O(B·D) for the buffered batch; time O(B²·D) per batch. The value depends "
            "on batch_size: B ≥ N mines the whole file at once; smaller B mines each batch alone and pools the terms "
            "of all batches (a count-weighted mean of the per-batch means). A batch with no valid triplet (one class, "
            "or no class with two rows) is reported; a file with one class is an input error. hard averages over anchors "
            "with a positive and a negative (pytorch-metric-learning BatchHardMiner; TF-Addons triplet_hard_loss "
            "averages over every row); semihard over all anchor–positive pairs (TF-Addons); all over the triplets with "
            "ℓ > 0, 0 if none (TF-Addons batch_all, pytorch-metric-learning AvgNonZeroReducer). TF-Addons uses "
            "Euclidean distances by default (squared=false here). Sample weights weight each term by its anchor's "
            "weight. Batches follow the order rows arrive: per --by group its own rows; merged shards keep their own batches."
        ),
    ),
    default_for=(METRIC,),
    row_mean=False,
    grad_roles=("embedding",),
    merges=False,
    merge_note="triplets are mined within batches of consecutive rows, which a shard boundary would cut: "
               "its state is not saved to a file",
    summary="triplet loss mined in batches of labelled embeddings (hard, semihard, all)",
    example=heredoc("lossctl eval - -l triplet_mined:mining=semihard --grad", _EXAMPLE_EMB_0_EMB_1_LABEL),
)


# every loss of this family, in the order `lossctl list` shows them (lossctl.losses.ALL)
LOSSES: tuple[LossSpec, ...] = (
    SPEC_CONTRASTIVE,
    SPEC_TRIPLET,
    SPEC_TRIPLET_MINED,
)
