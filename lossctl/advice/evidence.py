"""Evidence: what the selection guides turn on, measured in one streaming pass.

Every state here has ``update(batch)``, ``merge(other)`` and ``result()``, like the
loss states of :mod:`lossctl.engine`, so it is fed the same bound batches as ``eval``
and two shards' states merge into one. Counts, sums, extremes and central moments
(merged by Pébay's formulas) are exact over all rows. Statistics that need every
value at once (median, MAD, quantiles, ROC AUC, pairwise distances) come from a
bounded sample of at most ``SAMPLE_ROWS`` distinct rows: those with the smallest hash
of their *values* (splitmix64 of the float bits), each with its exact count, so the
sample, and everything measured on it, is the same whatever the row order and batch
size. With at most that many distinct rows the sample is the whole data and those
figures are exact; otherwise the result lists them under ``"sampled"``. (A single
row value repeated in a large share of the rows is in the sample with its count, or
out of it: such data are better judged with the exact figures.)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from lossctl.engine import Batch

SAMPLE_ROWS = 65_536  # rows kept for the sampled figures (median, MAD, AUC, quantiles)
PAIR_ROWS = 2_048  # rows whose pairwise distances describe an embedding space
OUTLIER_K = 3.5  # "beyond k robust SDs": |r − median| > k · 1.4826 · MAD
GROSS_K = 10.0  # gross outliers: beyond 10 robust SDs
ECE_BINS = 10
TEMPERATURES = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0)
MAD_TO_SD = 1.4826  # 1/Φ⁻¹(3/4): MAD → standard deviation for a Gaussian


# ------------------------------------------------------------------ building blocks


def value_keys(*arrays: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of the rows' values (every column of every array).

    The float64 bits of the columns are folded together (multiply by the golden-ratio
    constant, xor the next column) and finished with splitmix64: a row's key depends
    on its values only, never on its position, so a sample of the smallest keys is
    the same whatever the order of the rows.
    """
    n = arrays[0].shape[0]
    h: np.ndarray | None = None
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        for a in arrays:
            if a.dtype.kind in "OU":
                cols = [np.array([hash(str(v)) & 0xFFFFFFFFFFFFFFFF for v in a], dtype=np.uint64)]
            else:
                a = np.ascontiguousarray(a, dtype=np.float64) + 0.0  # −0.0 → 0.0
                m = a.reshape(n, -1)
                cols = [m[:, j].view(np.uint64) if m.shape[1] == 1 else np.ascontiguousarray(m[:, j]).view(np.uint64)
                        for j in range(m.shape[1])]
            for c in cols:
                if h is None:
                    h = c.copy()
                else:
                    h *= golden
                    h ^= c
    assert h is not None
    return _mix(h)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place (Steele et al. 2014)."""
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


class HashSample:
    """The ``k`` distinct rows with the smallest value hash, each with its exact count.

    A row's key is a hash of its values, so equal rows share a key: the sample keeps
    each distinct row once with the number of times it occurs (every occurrence has
    the same key, so a kept row's count is exact). That makes it a uniform sample of
    the *distinct* rows, weighted by their counts: unbiased for shares and quantiles
    even when a few values repeat millions of times (discrete scores, rounded data),
    and exact whenever the data has at most ``k`` distinct rows. It does not depend on
    row order or batch size, and two samples merge into the sample of the union.
    """

    def __init__(self, k: int = SAMPLE_ROWS) -> None:
        self.k = k
        self.keys = np.empty(0, dtype=np.uint64)
        self.counts = np.empty(0, dtype=np.int64)
        self.cols: dict[str, np.ndarray] = {}
        self.seen = 0
        self.truncated = False
        self._cut: np.uint64 | None = None

    def update(self, keys: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        self.seen += keys.size
        if self._cut is not None:
            m = keys <= self._cut
            if not m.any():
                return
            keys = keys[m]
            cols = {c: a[m] for c, a in cols.items()}
        uk, first, cnt = np.unique(keys, return_index=True, return_counts=True)
        self._add(uk, {c: a[first] for c, a in cols.items()}, cnt.astype(np.int64))

    def _add(self, keys: np.ndarray, cols: dict[str, np.ndarray], counts: np.ndarray) -> None:
        if self.keys.size and keys.size * 8 < self.keys.size and set(cols) == set(self.cols):
            self._insert(keys, cols, counts)
            return
        allk = np.concatenate([self.keys, keys])
        allw = np.concatenate([self.counts, counts])
        allc = {c: (np.concatenate([self.cols[c], a]) if c in self.cols else a) for c, a in cols.items()}
        order = np.argsort(allk, kind="stable")
        sk = allk[order]
        head = np.concatenate(([True], sk[1:] != sk[:-1])) if sk.size else np.zeros(0, bool)
        group = np.cumsum(head) - 1
        w = np.bincount(group, weights=allw[order]).astype(np.int64) if sk.size else allw
        keep = order[head]
        if keep.size > self.k:
            keep, w = keep[: self.k], w[: self.k]
            self.truncated = True
        self.keys, self.counts = allk[keep], w
        self.cols = {c: a[keep] for c, a in allc.items()}
        if self.truncated:
            self._cut = self.keys[-1]

    def _insert(self, keys: np.ndarray, cols: dict[str, np.ndarray], counts: np.ndarray) -> None:
        """A few new distinct keys (sorted) into the sorted sample: no full sort (the common case
        once the sample is full and only rows under the cut get in)."""
        pos = np.searchsorted(self.keys, keys)
        inside = pos < self.keys.size
        hit = np.zeros(keys.size, bool)
        hit[inside] = self.keys[pos[inside]] == keys[inside]
        if hit.any():
            self.counts[pos[hit]] += counts[hit]
        new = ~hit
        if new.any():
            at = pos[new]
            self.keys = np.insert(self.keys, at, keys[new])
            self.counts = np.insert(self.counts, at, counts[new])
            self.cols = {c: np.insert(a, at, cols[c][new], axis=0) for c, a in self.cols.items()}
            if self.keys.size > self.k:
                self.keys, self.counts = self.keys[: self.k], self.counts[: self.k]
                self.cols = {c: a[: self.k] for c, a in self.cols.items()}
                self.truncated = True
        if self.truncated:
            self._cut = self.keys[-1]

    def merge(self, other: "HashSample") -> None:
        self.seen += other.seen
        self.truncated = self.truncated or other.truncated
        if other.keys.size:
            self._add(other.keys, other.cols, other.counts)
        if self.truncated and self.keys.size:
            self._cut = self.keys[-1]

    @property
    def exact(self) -> bool:
        """Whether the sample holds every distinct row (then its figures are exact)."""
        return not self.truncated

    @property
    def rows(self) -> int:
        """How many rows the sample stands for (the sum of the counts)."""
        return int(self.counts.sum())

    def get(self, name: str) -> np.ndarray:
        a = self.cols.get(name)
        return a if a is not None else np.empty(0)


def wquantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    """np.quantile(np.repeat(x, w), q) (linear interpolation) without repeating."""
    if x.size == 0:
        return math.nan
    o = np.argsort(x, kind="stable")
    xs, cw = x[o], np.cumsum(w[o])
    h = (cw[-1] - 1) * q
    lo, hi = math.floor(h), math.ceil(h)
    vlo = xs[np.searchsorted(cw, lo, side="right")]
    vhi = xs[np.searchsorted(cw, hi, side="right")]
    return float(vlo + (h - lo) * (vhi - vlo))


def _top_share(v: np.ndarray, w: np.ndarray, frac: float) -> float:
    """The share of Σv held by the ⌈frac·N⌉ largest of N rows (``w`` counts each value's rows)."""
    if v.size == 0:
        return math.nan
    tot = float(np.dot(v, w))
    if tot <= 0:
        return 0.0
    o = np.argsort(v)[::-1]
    vs, ws = v[o], w[o].astype(np.float64)
    k = math.ceil(frac * ws.sum())
    cw = np.cumsum(ws)
    j = int(np.searchsorted(cw, k))  # the value holding the k-th largest row
    top = float(np.dot(vs[:j], ws[:j])) + vs[j] * (k - (cw[j - 1] if j else 0.0))
    return top / tot


def wmean(mask: np.ndarray, w: np.ndarray) -> float:
    tot = w.sum()
    return float(w[mask].sum() / tot) if tot else math.nan


class Moments:
    """Count, mean and central moments M2..M4, merged exactly (Pébay 2008)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = self.m3 = self.m4 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        if x.size == 0:
            return
        from lossctl.losses._numerics import dot  # pairwise-accurate, no BLAS threads

        mean = float(np.add.reduce(x)) / x.size
        d = x - mean
        d2 = d * d
        self._merge(x.size, mean, float(np.add.reduce(d2)), dot(d2, d), dot(d2, d2), float(x.min()), float(x.max()))

    def _merge(self, nb: int, mb: float, m2b: float, m3b: float, m4b: float, lo: float, hi: float) -> None:
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        na = self.n
        if na == 0:
            self.n, self.mean, self.m2, self.m3, self.m4 = nb, mb, m2b, m3b, m4b
            return
        n = na + nb
        d = mb - self.mean
        m2a, m3a = self.m2, self.m3
        self.m4 = (self.m4 + m4b + d ** 4 * na * nb * (na * na - na * nb + nb * nb) / n ** 3
                   + 6 * d * d * (na * na * m2b + nb * nb * m2a) / n ** 2 + 4 * d * (na * m3b - nb * m3a) / n)
        self.m3 = m3a + m3b + d ** 3 * na * nb * (na - nb) / n ** 2 + 3 * d * (na * m2b - nb * m2a) / n
        self.m2 = m2a + m2b + d * d * na * nb / n
        self.mean += d * nb / n
        self.n = n

    def merge(self, other: "Moments") -> None:
        if other.n:
            self._merge(other.n, other.mean, other.m2, other.m3, other.m4, other.min, other.max)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n else math.nan

    @property
    def skew(self) -> float:
        """Sample skewness g₁ = m₃/m₂^1.5 (scipy.stats.skew, bias=True)."""
        return math.sqrt(self.n) * self.m3 / self.m2 ** 1.5 if self.m2 > 0 else 0.0

    @property
    def kurtosis(self) -> float:
        """Excess kurtosis g₂ = m₄/m₂² − 3 (scipy.stats.kurtosis, fisher=True, bias=True)."""
        return self.n * self.m4 / self.m2 ** 2 - 3.0 if self.m2 > 0 else 0.0


class Counts:
    """Exact counts of labels (numbers or strings)."""

    def __init__(self) -> None:
        self.c: dict[Any, int] = {}

    def update(self, labels: np.ndarray) -> None:
        if labels.size == 0:
            return
        vals, cnt = np.unique(labels, return_counts=True)
        for v, k in zip(vals.tolist(), cnt.tolist()):
            self.c[v] = self.c.get(v, 0) + int(k)

    def merge(self, other: "Counts") -> None:
        for v, k in other.c.items():
            self.c[v] = self.c.get(v, 0) + k


def _f(x: float, nd: int = 6) -> float | None:
    """A JSON-safe rounded figure."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{nd}g}")


def auc(y: np.ndarray, s: np.ndarray, w: np.ndarray | None = None) -> float:
    """ROC AUC: the share of (positive, negative) pairs ranked right, ties counting ½
    (the Mann–Whitney statistic), with rows weighted by their counts ``w``."""
    y = np.asarray(y, dtype=bool)
    w = np.ones(y.size) if w is None else np.asarray(w, dtype=np.float64)
    P, N = float(w[y].sum()), float(w[~y].sum())
    if P == 0 or N == 0:
        return math.nan
    u, inv = np.unique(s, return_inverse=True)
    pos = np.bincount(inv, weights=np.where(y, w, 0.0), minlength=u.size)
    neg = np.bincount(inv, weights=np.where(y, 0.0, w), minlength=u.size)
    below = np.cumsum(neg) - neg  # negatives with a strictly lower score
    return float(np.sum(pos * (below + 0.5 * neg)) / (P * N))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def _entropy_rows(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -t.sum(axis=1)


# ------------------------------------------------------------------ regression


class RegressionEvidence:
    """Residuals r = ŷ − y (or, with targets alone, y itself)."""

    family = "regression"

    def __init__(self, has_pred: bool) -> None:
        self.has_pred = has_pred
        self.mom = Moments()
        self.pos = 0
        self.sample = HashSample()

    def update(self, b: Batch) -> None:
        y = b["target"]
        p = b.get("pred") if self.has_pred else None
        r = (p - y) if p is not None else y
        if r.ndim > 1:  # several outputs: their residuals pooled
            r = r.ravel()
        self.mom.update(r)
        self.pos += int(np.count_nonzero(r > 0))
        # the sampled figures are functions of r alone: rows are sampled by their residual's value
        self.sample.update(value_keys(r), {"r": r})

    def merge(self, other: "RegressionEvidence") -> None:
        self.mom.merge(other.mom)
        self.pos += other.pos
        self.sample.merge(other.sample)

    def result(self) -> dict[str, Any]:
        r, w = self.sample.get("r"), self.sample.counts
        med = wquantile(r, w, 0.5)
        mad = wquantile(np.abs(r - med), w, 0.5)
        scale = MAD_TO_SD * mad
        if scale > 0:
            outl = wmean(np.abs(r - med) > OUTLIER_K * scale, w)
        else:  # more than half the residuals equal: anything else is an outlier
            outl = wmean(r != med, w) if r.size else 0.0
        gross = wmean(np.abs(r - med) > GROSS_K * scale, w) if scale > 0 else outl
        q1, q3 = wquantile(r, w, 0.25), wquantile(r, w, 0.75)
        bowley = float((q3 + q1 - 2 * med) / (q3 - q1)) if q3 > q1 else 0.0
        m = self.mom
        what = "residual" if self.has_pred else "target"
        ev = {
            "of": what + "s",
            "n": m.n,
            f"{what}_mean": _f(m.mean),
            f"{what}_std": _f(m.std),
            f"{what}_median": _f(med),
            f"{what}_mad": _f(mad),
            "robust_scale": _f(scale),
            f"{what}_skewness": _f(m.skew),
            f"{what}_kurtosis": _f(m.kurtosis),
            "quartile_skewness": _f(bowley),
            "mean_minus_median": _f((m.mean - med) / scale if scale > 0 else 0.0),
            "outlier_share": _f(outl),
            "outlier_k": OUTLIER_K,
            "gross_outlier_share": _f(gross),
            "worst1pct_mse_share": _f(_top_share(r * r, w, 0.01)),
            "positive_share": _f(self.pos / m.n if m.n else math.nan),
            "min": _f(m.min),
            "max": _f(m.max),
        }
        sampled = [] if self.sample.exact else [f"{what}_median", f"{what}_mad", "robust_scale", "outlier_share",
                                                "gross_outlier_share", "quartile_skewness", "mean_minus_median",
                                                "worst1pct_mse_share"]
        return {"figures": ev, "sampled": sampled, "sample_size": int(self.sample.keys.size)}


# ------------------------------------------------------------------ classification


class ClassificationEvidence:
    """Labels, the kind of scores, separability and calibration.

    ``logits`` is what the user said (--logits/--no-logits: True/False) or, when None,
    whether the column is named like logits (``name_hint``). Scores that all lie in
    [0, 1] (rows summing to 1) are probabilities unless the user said logits; the
    reliability bins are kept for both readings and the right one chosen at the end.
    """

    family = "classification"

    def __init__(self, task: str, has_pred: bool, logits: bool | None, name_hint: bool = False) -> None:
        self.task = task
        self.has_pred = has_pred
        self.logits = logits
        self.name_hint = name_hint
        self.counts = Counts()
        self.smin = math.inf
        self.smax = -math.inf
        self.rowsum_dev = 0.0  # largest |Σ_c p_c − 1| (multiclass scores)
        self.n = 0
        self.sample = HashSample()
        # reliability bins for each reading of the scores: [as probabilities, through sigmoid/softmax]
        self.bins = np.zeros((2, 3, ECE_BINS))  # (reading, [n, Σconf, Σacc], bin)
        self.easy = np.zeros(2)  # rows with p_t > 0.9
        self.width = 0

    def _labels(self, b: Batch) -> np.ndarray:
        y = b["target"]
        if y.ndim == 2:  # one-hot or soft labels: their argmax
            if y.shape[1] == 1:
                y = y[:, 0]
            else:
                return np.argmax(y, axis=1).astype(np.float64)
        return y

    def update(self, b: Batch) -> None:
        y = self._labels(b)
        if self.task == "binary":
            bad = ~np.isin(y, (0.0, 1.0, -1.0))
            if bad.any():
                raise b.fail("label outside {0, 1} (or −1/+1 for margin losses)", "target", bad)
        else:
            bad = (y != np.round(y)) | (y < 0)
            if bad.any():
                raise b.fail("class label must be a whole number 0..C−1", "target", bad)
        self.counts.update(y)
        self.n += y.size
        if not self.has_pred:
            return
        s = b["pred"]
        if self.task == "binary" and s.ndim == 2:
            s = s[:, -1] if s.shape[1] == 2 else s[:, 0]
        self.width = 1 if s.ndim == 1 else s.shape[1]
        if s.size == 0:
            return
        self.smin = min(self.smin, float(s.min()))
        self.smax = max(self.smax, float(s.max()))
        if s.ndim == 2:
            self.rowsum_dev = max(self.rowsum_dev, float(np.max(np.abs(s.sum(axis=1) - 1))))
        self.sample.update(value_keys(y, s), {"y": y, "s": s})
        if s.ndim == 2 and y.size and y.max() >= s.shape[1]:
            raise b.fail(f"class label outside 0..{s.shape[1] - 1}", "target", y >= s.shape[1])
        for k, prob in enumerate((s, _sigmoid(s) if s.ndim == 1 else _softmax(s))):
            if k == 0 and (s.min() < 0 or s.max() > 1):
                continue  # not probabilities: that reading is dropped at the end anyway
            self._reliability(k, y, prob)

    def _reliability(self, k: int, y: np.ndarray, prob: np.ndarray) -> None:
        if prob.ndim == 1:
            yy = (y == 1).astype(np.float64)
            conf, acc = prob, yy
            pt = np.where(yy == 1, prob, 1 - prob)
        else:
            yi = y.astype(np.int64)
            conf = prob.max(axis=1)
            acc = (np.argmax(prob, axis=1) == yi).astype(np.float64)
            pt = prob[np.arange(yi.size), yi]
        idx = np.minimum((conf * ECE_BINS).astype(np.int64), ECE_BINS - 1)
        self.bins[k, 0] += np.bincount(idx, minlength=ECE_BINS)
        self.bins[k, 1] += np.bincount(idx, conf, minlength=ECE_BINS)
        self.bins[k, 2] += np.bincount(idx, acc, minlength=ECE_BINS)
        self.easy[k] += np.count_nonzero(pt > 0.9)

    def merge(self, other: "ClassificationEvidence") -> None:
        self.counts.merge(other.counts)
        self.n += other.n
        self.smin, self.smax = min(self.smin, other.smin), max(self.smax, other.smax)
        self.rowsum_dev = max(self.rowsum_dev, other.rowsum_dev)
        self.sample.merge(other.sample)
        self.bins += other.bins
        self.easy += other.easy
        self.width = self.width or other.width

    def score_kind(self) -> str:
        if not self.has_pred:
            return "none"
        if self.logits:
            return "logit"
        probs = self.smin >= 0 and self.smax <= 1 and (self.width <= 1 or self.rowsum_dev <= 1e-6)
        if probs:
            return "probability"
        return "logit" if (self.name_hint or self.width > 1) else "margin"

    def result(self) -> dict[str, Any]:
        counts = dict(sorted(self.counts.c.items(), key=lambda kv: kv[0]))
        if self.task == "binary":
            pos = counts.get(1.0, 0)
            neg = self.n - pos
            counts = {"0" if -1.0 not in counts else "-1": neg, "1": pos}
        else:
            counts = {str(int(k)): v for k, v in counts.items()}
        vals = [v for v in counts.values()]
        nz = [v for v in vals if v > 0]
        ratio = max(nz) / min(nz) if nz else math.nan
        ev: dict[str, Any] = {
            "n": self.n,
            "classes": len(nz),
            "class_counts": counts,
            "imbalance_ratio": _f(ratio),
            "minority_share": _f(min(nz) / self.n if nz else math.nan),
            "score_kind": self.score_kind(),
        }
        sampled: list[str] = []
        if self.has_pred:
            ev["score_min"], ev["score_max"] = _f(self.smin), _f(self.smax)
            y, s, w = self.sample.get("y"), self.sample.get("s"), self.sample.counts
            if self.task == "binary":
                a = auc(y == 1, s, w) if y.size else math.nan
            else:
                per = [auc(y == c, s[:, c], w) for c in range(s.shape[1]) if s.ndim == 2 and np.any(y == c)]
                a = float(np.mean(per)) if per else math.nan
            ev["roc_auc"] = _f(a)
            if not self.sample.exact:
                sampled.append("roc_auc")
            kind = self.score_kind()
            k = 0 if kind == "probability" else 1
            if kind != "margin":  # decision values have no probability reading to calibrate
                nb, cs, ac = self.bins[k]
                with np.errstate(invalid="ignore", divide="ignore"):
                    conf = cs / nb
                    acc = ac / nb
                ece = float(np.nansum(nb / nb.sum() * np.abs(acc - conf)))
                ev["ece"] = _f(ece)
                ev["reliability"] = [
                    {"bin": [k / ECE_BINS, (k + 1) / ECE_BINS], "n": int(nb[k]),
                     "mean_score": _f(conf[k]), "observed": _f(acc[k])}
                    for k in range(ECE_BINS) if nb[k]
                ]
                ev["easy_share"] = _f(self.easy[k] / self.n)
        return {"figures": ev, "sampled": sampled, "sample_size": int(self.sample.keys.size)}


# ------------------------------------------------------------------ segmentation


class SegmentationEvidence:
    """Foreground share overall, per image and per class."""

    family = "segmentation"

    def __init__(self, has_pred: bool) -> None:
        self.has_pred = has_pred
        self.n = 0
        self.class_area: dict[int, int] = {}
        self.images: dict[Any, list[int]] = {}  # id → [pixels, foreground pixels]
        self.smin = math.inf
        self.smax = -math.inf
        self.width = 0

    def update(self, b: Batch) -> None:
        g = b["target"]
        if g.ndim == 2:
            g = g[:, 0] if g.shape[1] == 1 else np.argmax(g, axis=1).astype(np.float64)
        bad = (g != np.round(g)) | (g < 0)
        if bad.any():
            raise b.fail("mask value must be 0/1 or a class 0..C−1", "target", bad)
        self.n += g.size
        cls, cnt = np.unique(g.astype(np.int64), return_counts=True)
        for c, k in zip(cls.tolist(), cnt.tolist()):
            self.class_area[c] = self.class_area.get(c, 0) + k
        gid = b.get("group")
        if gid is not None and gid.size:
            ids, inv = np.unique(gid, return_inverse=True)
            pix = np.bincount(inv, minlength=ids.size)
            fg = np.bincount(inv, (g > 0).astype(np.float64), minlength=ids.size)
            for i, v in enumerate(ids.tolist()):
                cur = self.images.setdefault(v, [0, 0])
                cur[0] += int(pix[i])
                cur[1] += int(fg[i])
        p = b.get("pred")
        if p is not None and p.size:
            self.width = 1 if p.ndim == 1 else p.shape[1]
            self.smin, self.smax = min(self.smin, float(p.min())), max(self.smax, float(p.max()))

    def merge(self, other: "SegmentationEvidence") -> None:
        self.n += other.n
        for c, k in other.class_area.items():
            self.class_area[c] = self.class_area.get(c, 0) + k
        for v, (pix, fg) in other.images.items():
            cur = self.images.setdefault(v, [0, 0])
            cur[0] += pix
            cur[1] += fg
        self.smin, self.smax = min(self.smin, other.smin), max(self.smax, other.smax)
        self.width = self.width or other.width

    def result(self) -> dict[str, Any]:
        n = self.n
        fg = sum(k for c, k in self.class_area.items() if c > 0)
        ev: dict[str, Any] = {
            "n": n,
            "mask_classes": len(self.class_area),
            "foreground_share": _f(fg / n if n else math.nan),
            "class_area": {str(c): _f(k / n) for c, k in sorted(self.class_area.items())},
            "class_pixels": {str(c): k for c, k in sorted(self.class_area.items())},
        }
        if len(self.class_area) > 2:
            ev["smallest_class_share"] = _f(min(self.class_area.values()) / n)
        if self.images:
            shares = np.array([f / p for p, f in self.images.values() if p])
            ev["images"] = len(self.images)
            ev["image_foreground_median"] = _f(float(np.median(shares)))
            ev["image_foreground_min"] = _f(float(shares.min()))
            ev["small_object_image_share"] = _f(float(np.mean(shares < 0.01)))
        if self.has_pred:
            kind = "probability" if self.smin >= 0 and self.smax <= 1 else "logit"
            ev["score_kind"] = kind
        return {"figures": ev, "sampled": [], "sample_size": 0}


# ------------------------------------------------------------------ metric learning


def _default(loss: str, param: str) -> float:
    from lossctl import registry

    return float(registry.get(loss).param(param).default)


def _norms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", x, x))


def _unit(x: np.ndarray) -> np.ndarray:
    n = _norms(x)
    return x / np.where(n > 0, n, 1.0)[:, None]


class MetricEvidence:
    """Classes, positives per anchor, distance distributions against the margin."""

    family = "metric"

    def __init__(self, layout: str) -> None:
        self.layout = layout  # labelled | pairs | triplets
        self.counts = Counts()
        self.norms = Moments()
        self.n = 0
        self.sample = HashSample(PAIR_ROWS if layout == "labelled" else SAMPLE_ROWS)
        self.hard = 0
        self.semi = 0

    def update(self, b: Batch) -> None:
        self.n += b.n
        if self.layout == "labelled":
            e, y = b["embedding"], b["target"]
            self.counts.update(y)
            self.norms.update(_norms(e))
            self.sample.update(value_keys(e, y), {"e": e, "y": y})
        elif self.layout == "pairs":
            x1, x2, y = b["x1"], b["x2"], b["target"]
            self.counts.update(y)
            self.norms.update(np.concatenate([_norms(x1), _norms(x2)]))
            d = _norms(_unit(x1) - _unit(x2))
            self.sample.update(value_keys(x1, x2, y), {"d": d, "raw": _norms(x1 - x2), "y": y})
        else:
            a, p, ng = b["anchor"], b["positive"], b["negative"]
            self.norms.update(np.concatenate([_norms(a), _norms(p), _norms(ng)]))
            ua, up, un = _unit(a), _unit(p), _unit(ng)
            dap, dan = _norms(ua - up), _norms(ua - un)
            self.hard += int(np.count_nonzero(dan < dap))
            self.sample.update(value_keys(a, p, ng), {"dap": dap, "dan": dan})

    def merge(self, other: "MetricEvidence") -> None:
        self.counts.merge(other.counts)
        self.norms.merge(other.norms)
        self.n += other.n
        self.sample.merge(other.sample)
        self.hard += other.hard

    def result(self) -> dict[str, Any]:
        ev: dict[str, Any] = {"n": self.n, "layout": self.layout}
        mean_norm = self.norms.mean
        ev["embedding_norm_mean"] = _f(mean_norm)
        ev["embedding_norm_cv"] = _f(self.norms.std / mean_norm if mean_norm > 0 else math.nan)
        ev["normalised"] = bool(self.norms.n and abs(self.norms.min - 1) < 1e-3 and abs(self.norms.max - 1) < 1e-3)
        sampled: list[str] = []
        if self.layout == "labelled":
            c = self.counts.c
            sizes = np.array(list(c.values()), dtype=np.float64)
            ev["classes"] = len(c)
            ev["rows_per_class_median"] = _f(float(np.median(sizes)) if sizes.size else math.nan)
            ev["rows_per_class_min"] = int(sizes.min()) if sizes.size else 0
            # an anchor in a class of k rows has k − 1 positives: mean over rows of (k − 1)
            ev["positives_per_anchor"] = _f(float(np.sum(sizes * (sizes - 1)) / self.n) if self.n else math.nan)
            ev["anchors_without_positive"] = _f(float(np.sum(sizes[sizes == 1])) / self.n if self.n else math.nan)
            e, y = self.sample.get("e"), self.sample.get("y")
            if e.size:
                u = _unit(e)
                d2 = np.maximum(2.0 - 2.0 * (u @ u.T), 0.0)  # squared distances of unit vectors
                same = y[:, None] == y[None, :]
                iu = np.triu_indices(y.size, 1)
                pos, neg = np.sqrt(d2[iu][same[iu]]), np.sqrt(d2[iu][~same[iu]])
                self._dist(ev, pos, neg)
                # per anchor: its farthest positive against its nearest negative (batch-hard view)
                dd = np.sqrt(d2)
                np.fill_diagonal(same, False)
                has_pos = same.any(axis=1) & (~same).any(axis=1)
                np.fill_diagonal(dd, np.nan)
                if has_pos.any():
                    fp = np.nanmax(np.where(same, dd, -np.inf), axis=1)
                    nn_ = np.nanmin(np.where(~same & ~np.eye(y.size, dtype=bool), dd, np.inf), axis=1)
                    ev["hard_anchor_share"] = _f(float(np.mean((nn_ < fp)[has_pos])))
                    # the nearest other row is of another class: overlap or label noise (1-NN error)
                    near = np.nanargmin(np.where(np.eye(y.size, dtype=bool), np.inf, dd), axis=1)
                    ev["nn_other_class_share"] = _f(float(np.mean(y[near] != y)))
            if not self.sample.exact:
                sampled += ["pos_distance_median", "neg_distance_median", "distance_gap", "hard_anchor_share",
                            "nn_other_class_share"]
        elif self.layout == "pairs":
            d, y, w = self.sample.get("d"), self.sample.get("y"), self.sample.counts
            self._dist(ev, d[y == 1], d[y != 1], w[y == 1], w[y != 1])
            ev["similar_pairs"] = int(self.counts.c.get(1.0, 0))
            raw = self.sample.get("raw")[y == 1]
            if raw.size:  # contrastive reads the embeddings as they are: its margin is in these units
                ev["pos_distance_q90_raw"] = _f(wquantile(raw, w[y == 1], 0.9))
            m = _default("contrastive", "margin")
            if np.any(y != 1):  # dissimilar pairs still inside the default margin: they carry the loss
                ev["default_margin"] = m
                ev["dissimilar_within_margin"] = _f(wmean(d[y != 1] < m, w[y != 1]))
                if not self.sample.exact:
                    sampled.append("dissimilar_within_margin")
            if not self.sample.exact:
                sampled += ["pos_distance_median", "neg_distance_median", "distance_gap"]
        else:
            dap, dan, w = self.sample.get("dap"), self.sample.get("dan"), self.sample.counts
            self._dist(ev, dap, dan, w, w)
            ev["hard_triplet_share"] = _f(self.hard / self.n if self.n else math.nan)
            m = _default("triplet", "margin")  # on squared distances, triplet's default
            ev["default_margin"] = m
            ev["semihard_triplet_share"] = _f(wmean((dan > dap) & (dan ** 2 < dap ** 2 + m), w)
                                              if dap.size else math.nan)
            if not self.sample.exact:
                sampled.append("semihard_triplet_share")
            if not self.sample.exact:
                sampled += ["pos_distance_median", "neg_distance_median", "distance_gap"]
        return {"figures": ev, "sampled": sampled, "sample_size": int(self.sample.keys.size)}

    @staticmethod
    def _dist(ev: dict[str, Any], pos: np.ndarray, neg: np.ndarray, wp: np.ndarray | None = None,
              wn: np.ndarray | None = None) -> None:
        """Distances between L2-normalised embeddings (in [0, 2]), rows weighted by their counts."""
        wp = np.ones(pos.size) if wp is None else wp
        wn = np.ones(neg.size) if wn is None else wn
        if pos.size:
            ev["pos_distance_median"] = _f(wquantile(pos, wp, 0.5))
            ev["pos_distance_q90"] = _f(wquantile(pos, wp, 0.9))
        if neg.size:
            ev["neg_distance_median"] = _f(wquantile(neg, wn, 0.5))
            ev["neg_distance_q10"] = _f(wquantile(neg, wn, 0.1))
        if pos.size and neg.size:
            ev["distance_gap"] = _f(wquantile(neg, wn, 0.5) - wquantile(pos, wp, 0.5))


# ------------------------------------------------------------------ distributions


class DistributionEvidence:
    """Entropies, zeros of Q where P > 0, support overlap; teacher and student; VAE."""

    family = "distribution"

    def __init__(self, layout: str, logits: bool = False) -> None:
        self.layout = layout  # pq | distill | vae | samples
        self.logits = logits
        self.n = 0
        self.sums: dict[str, float] = {}
        self.first_zero_row: int | None = None
        self.t_entropy = np.zeros(len(TEMPERATURES))
        self.width = 0
        self.dim_kl: np.ndarray | None = None
        self.mom_y = Moments()
        self.mom_p = Moments()

    def _add(self, key: str, v: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + v

    def update(self, b: Batch) -> None:
        self.n += b.n
        if b.n == 0:
            return
        if self.layout == "pq" and b["target"].ndim == 1:
            self.layout = "samples"  # one value per row: two samples, not distribution rows
        if self.layout == "pq":
            P, Q = b["target"], b["pred"]
            if self.logits:
                Q = _softmax(Q)
            self.width = P.shape[1]
            zero = (Q <= 0) & (P > 0)
            zrows = zero.any(axis=1)
            nz = int(zrows.sum())
            if nz and self.first_zero_row is None:
                self.first_zero_row = b.input_row(int(np.flatnonzero(zrows)[0]))
            self._add("zero_rows", nz)
            self._add("zero_cells", float(zero.sum()))
            self._add("h_p", float(_entropy_rows(P).sum()))
            self._add("h_q", float(_entropy_rows(Q).sum()))
            self._add("overlap", float(np.where(Q > 0, P, 0.0).sum()))
            self._add("tv", float(0.5 * np.abs(P - Q).sum()))
        elif self.layout == "distill":
            t, s = b["teacher"], b["student"]
            self.width = t.shape[1]
            for i, T in enumerate(TEMPERATURES):
                self.t_entropy[i] += float(_entropy_rows(_softmax(t / T)).sum())
            self._add("h_s", float(_entropy_rows(_softmax(s)).sum()))
            ta, sa = np.argmax(t, axis=1), np.argmax(s, axis=1)
            self._add("agree", float(np.count_nonzero(ta == sa)))
            y = b.get("target")
            if y is not None:
                self._add("labelled", float(y.size))
                self._add("teacher_correct", float(np.count_nonzero(ta == y)))
                self._add("student_correct", float(np.count_nonzero(sa == y)))
        elif self.layout == "vae":
            mu, lv = b["mu"], b["logvar"]
            mu = mu.reshape(b.n, -1)
            lv = lv.reshape(b.n, -1)
            kl = 0.5 * (np.exp(lv) + mu * mu - 1.0 - lv)
            s = kl.sum(axis=0)
            self.dim_kl = s if self.dim_kl is None else self.dim_kl + s
        else:
            self.mom_y.update(b["target"])
            self.mom_p.update(b["pred"])

    def merge(self, other: "DistributionEvidence") -> None:
        self.n += other.n
        for k, v in other.sums.items():
            self._add(k, v)
        if self.first_zero_row is None:
            self.first_zero_row = other.first_zero_row
        self.t_entropy += other.t_entropy
        self.width = self.width or other.width
        if other.dim_kl is not None:
            self.dim_kl = other.dim_kl.copy() if self.dim_kl is None else self.dim_kl + other.dim_kl
        self.mom_y.merge(other.mom_y)
        self.mom_p.merge(other.mom_p)

    def result(self) -> dict[str, Any]:
        n = max(self.n, 1)
        s = self.sums
        ev: dict[str, Any] = {"n": self.n, "layout": self.layout}
        if self.layout == "pq":
            ev["classes"] = self.width
            ev["entropy_p"] = _f(s.get("h_p", 0) / n)
            ev["entropy_q"] = _f(s.get("h_q", 0) / n)
            ev["q_zero_rows"] = int(s.get("zero_rows", 0))
            ev["q_zero_share"] = _f(s.get("zero_rows", 0) / n)
            if self.first_zero_row is not None:
                ev["q_zero_first_row"] = self.first_zero_row
            ev["support_overlap"] = _f(s.get("overlap", 0) / n)
            ev["tv_mean"] = _f(s.get("tv", 0) / n)
        elif self.layout == "distill":
            ev["classes"] = self.width
            logc = math.log(self.width) if self.width > 1 else 1.0
            ev["teacher_entropy"] = _f(self.t_entropy[0] / n)
            ev["teacher_entropy_norm"] = _f(self.t_entropy[0] / n / logc)
            ev["teacher_entropy_by_t"] = {f"{T:g}": _f(h / n / logc) for T, h in zip(TEMPERATURES, self.t_entropy)}
            ev["student_entropy"] = _f(s.get("h_s", 0) / n)
            ev["agreement"] = _f(s.get("agree", 0) / n)
            if s.get("labelled"):
                ev["teacher_accuracy"] = _f(s["teacher_correct"] / s["labelled"])
                ev["student_accuracy"] = _f(s["student_correct"] / s["labelled"])
        elif self.layout == "vae":
            kl = (self.dim_kl if self.dim_kl is not None else np.zeros(0)) / n
            ev["latent_dims"] = int(kl.size)
            ev["kl_per_row"] = _f(float(kl.sum()))
            ev["kl_per_dim"] = [_f(float(x), 4) for x in kl]
            ev["collapsed_dims"] = int(np.sum(kl < 0.01))
        else:
            ev["target_mean"], ev["pred_mean"] = _f(self.mom_y.mean), _f(self.mom_p.mean)
            ev["target_std"], ev["pred_std"] = _f(self.mom_y.std), _f(self.mom_p.std)
        return {"figures": ev, "sampled": [], "sample_size": 0}


def for_task(task: str, roles: set[str], logits: bool | None, name_hint: bool = False) -> Any:
    """The evidence state for a task, given the roles bound in the data."""
    if task == "regression":
        return RegressionEvidence("pred" in roles)
    if task in ("binary", "multiclass"):
        return ClassificationEvidence(task, "pred" in roles, logits, name_hint)
    if task == "segmentation":
        return SegmentationEvidence("pred" in roles)
    if task == "metric":
        if "embedding" in roles:
            return MetricEvidence("labelled")
        if "x1" in roles:
            return MetricEvidence("pairs")
        return MetricEvidence("triplets")
    if "teacher" in roles:
        return DistributionEvidence("distill")
    if "mu" in roles:
        return DistributionEvidence("vae")
    if "target" in roles and "pred" in roles:
        return DistributionEvidence("pq", bool(logits))
    return DistributionEvidence("samples")
