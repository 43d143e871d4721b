"""Mergeable accumulators: compensated sums and gradient summaries.

Everything here is exact to float64 round-off whatever the batch sizes: within a
batch numpy's pairwise summation, across batches Neumaier's compensated sum, and
Chan's parallel update for variances.
"""
from __future__ import annotations

import copy
import math
import threading
from typing import Any, NamedTuple

import numpy as np

# 1% of rows with the largest gradient, as CLI.md defines top1_share
TOP_FRACTION = 0.01
# rows kept for the gradient histogram (a deterministic, batch-invariant sample)
SAMPLE_SIZE = 4096


class Scaled(NamedTuple):
    """Sums too large or too small for a double, as mantissas and binary exponents:
    the sums are mant·2^exp (see :func:`lossctl.losses._numerics.sumsq`)."""

    mant: np.ndarray
    exp: np.ndarray


def _overflowed(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Where t = a + b is infinite although a and b are finite (the sum left the double
    range), or None where that happens nowhere (the usual case: one pass over t)."""
    inf = np.isinf(t)
    if not inf.any():
        return None
    over = inf & np.isfinite(a) & np.isfinite(b)
    return over if over.any() else None


class Sum:
    """A vector of Neumaier-compensated float64 sums.

    Where a batch's sum left the double range (:class:`Scaled`), each component also
    carries a binary exponent ``e``: the sum is (s + c)·2ᵉ. Ordinary data never sets it.
    """

    __slots__ = ("s", "c", "e")

    def __init__(self, size: int) -> None:
        self.s = np.zeros(size)
        self.c = np.zeros(size)
        self.e: np.ndarray | None = None

    def add(self, x: np.ndarray | Scaled, e: np.ndarray | None = None) -> None:
        if isinstance(x, Scaled):
            x, e = x
        if e is not None or self.e is not None:
            self._add_scaled(np.asarray(x, dtype=float), e)
            return
        if self.s.size <= 4:  # a few totals per batch: Python floats beat six tiny numpy calls
            ss, cs = self.s.tolist(), self.c.tolist()
            for i, xi in enumerate(np.asarray(x, dtype=float).tolist()):
                si = ss[i]
                t = si + xi
                if math.isinf(t) and math.isfinite(si) and math.isfinite(xi):
                    return self._add_scaled(np.asarray(x, dtype=float), None)  # (nothing changed yet)
                cs[i] += (si - t) + xi if abs(si) >= abs(xi) else (xi - t) + si
                ss[i] = t
            self.s, self.c = np.array(ss), np.array(cs)
            return
        s = self.s
        with np.errstate(over="ignore"):
            t = s + x
        if _overflowed(t, s, x) is not None:
            return self._add_scaled(np.asarray(x, dtype=float), None)
        big = np.abs(s) >= np.abs(x)
        with np.errstate(invalid="ignore"):
            self.c += np.where(big, (s - t) + x, (x - t) + s)
        self.s = t

    def _add_scaled(self, x: np.ndarray, e: np.ndarray | None) -> None:
        mine = self.e if self.e is not None else np.zeros(self.s.size, dtype=np.int64)
        theirs = np.zeros(x.size, dtype=np.int64) if e is None else np.asarray(e, dtype=np.int64)
        # a common exponent per component: the larger, unless one side is 0
        empty = (self.s == 0) & (self.c == 0)
        common = np.where(empty, theirs, np.where(x == 0, mine, np.maximum(mine, theirs)))
        for _ in range(2):
            with np.errstate(under="ignore", over="ignore", invalid="ignore"):
                s, c, xs = np.ldexp(self.s, mine - common), np.ldexp(self.c, mine - common), np.ldexp(x, theirs - common)
                t = s + xs
            over = _overflowed(t, s, xs)
            if over is None:
                break
            # two finite sums whose sum leaves the double range: halved (exactly), it cannot
            common = common + over
        with np.errstate(invalid="ignore"):
            c = c + np.where(np.abs(s) >= np.abs(xs), (s - t) + xs, (xs - t) + s)
        self.s, self.c, self.e = t, c, common

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # the raw float64 (and int64) bytes: exact to the bit, and a few bytes per sum (a slice's
        # state is mostly its sums)
        return (_sum_of, (self.s.astype(np.float64, copy=False).tobytes(),
                          self.c.astype(np.float64, copy=False).tobytes(),
                          None if self.e is None else self.e.astype(np.int64, copy=False).tobytes()))

    def merge(self, other: "Sum") -> None:
        self.add(other.s, other.e)
        self.add(other.c, other.e)

    @property
    def scaled(self) -> bool:
        return self.e is not None and bool(self.e.any())

    def parts(self) -> tuple[np.ndarray, np.ndarray]:
        """(mantissas, exponents): the sums are mant·2^exp."""
        with np.errstate(invalid="ignore"):
            v = self.s + self.c
        v = np.where(np.isfinite(self.s), v, self.s)
        return v, (self.e if self.e is not None else np.zeros(v.size, dtype=np.int64))

    @property
    def value(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            v = self.s + self.c
        # an infinite sum makes the compensation NaN; the sum itself is the answer
        v = np.where(np.isfinite(self.s), v, self.s)
        if self.e is not None:
            with np.errstate(over="ignore", under="ignore"):
                v = np.ldexp(v, self.e)
        return v

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"s": self.s.tolist(), "c": self.c.tolist()}
        if self.e is not None:
            d["e"] = [int(x) for x in self.e]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sum":
        out = cls(len(d["s"]))
        out.s = np.asarray(d["s"], dtype=float)
        out.c = np.asarray(d["c"], dtype=float)
        if d.get("e") is not None:
            out.e = np.asarray(d["e"], dtype=np.int64)
        return out


def _sum_of(s: bytes, c: bytes, e: bytes | None) -> Sum:
    """The :class:`Sum` that ``Sum.__reduce__`` pickled."""
    out = Sum(0)
    out.s = np.frombuffer(s, dtype=np.float64).copy()
    out.c = np.frombuffer(c, dtype=np.float64).copy()
    out.e = None if e is None else np.frombuffer(e, dtype=np.int64).copy()
    return out


# the last batch's row keys, per thread: every loss of a batch asks for the same keys, and the
# states of one process may be filled by several threads at once (a Dask worker's tasks)
_LAST = threading.local()


def row_keys(offset: int, n: int) -> np.ndarray:
    """splitmix64 of the row indices offset..offset+n−1, cached for this thread's last batch
    (every loss of a batch asks for the same keys)."""
    got = getattr(_LAST, "keys", None)
    if got is not None and got[0] == offset and got[1] == n:
        return got[2]
    keys = splitmix64(np.arange(offset, offset + n, dtype=np.uint64))
    _LAST.keys = (offset, n, keys)
    return keys


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A counter-based hash of uint64 row indices (Steele et al. 2014)."""
    z = np.add(np.asarray(x).astype(np.uint64, copy=False), np.uint64(0x9E3779B97F4A7C15))
    t = np.empty_like(z)  # in place: one scratch array, no temporary per step
    with np.errstate(over="ignore"):
        np.right_shift(z, np.uint64(30), out=t)
        z ^= t
        z *= np.uint64(0xBF58476D1CE4E5B9)
        np.right_shift(z, np.uint64(27), out=t)
        z ^= t
        z *= np.uint64(0x94D049BB133111EB)
        np.right_shift(z, np.uint64(31), out=t)
        z ^= t
    return z


class GradSummary:
    """Streaming summary of per-row gradients g_i (a number or a vector per row).

    The engine feeds unscaled gradients (weights applied) and gives the final,
    positive scale at the end (N/Σw for weighted means, 1/RMSE for RMSE): mean, std,
    min, max, abs_mean and l2 scale with it; zero_frac and top1_share do not.
    """

    def __init__(self, rows_bound: int | None = None, keep_factor: int = 1, sample: bool = True) -> None:
        self.sampling = sample  # keep the hashed row sample (for the histogram)
        self.rows = 0
        self.elems = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.sums = Sum(2)  # Σ|g|, Σg²
        self.zero_rows = 0
        self.rows_bound = rows_bound
        # candidates kept per 1% of rows: 1 is exact for one run; state files for
        # shards keep 2, so that the union of shards is exact unless very lopsided
        self.keep_factor = keep_factor
        self._buf = np.empty(0)  # candidates for the largest row L1 norms: self.top
        self._n = 0
        self.dropped_max = -math.inf  # a bound on the row norms dropped (below the floor)
        self._floor = -math.inf  # every row norm ≥ the floor is kept: in `top`, or counted in at_floor
        self.at_floor = 0  # rows whose norm equals the floor, counted rather than stored
        self.merged = False  # a union of shards' summaries (for the wording of the lower-bound note)
        self.sample_key = np.empty(0, dtype=np.uint64)
        self.sample_val = np.empty(0)
        self._key_cut = np.uint64(0)
        self._d: np.ndarray | None = None  # scratch for g − ḡ, reused from batch to batch
        # every figure held is for g·2^-exp: 0 unless Σg² left the double range (gradients near 1e154 or 1e-170)
        self.exp = 0

    # -- pickling: the data, not the scratch (``_d``) nor the candidates buffer's spare room
    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_d"] = None
        d["_buf"] = self._buf[: self._n].copy()
        d["_cap"] = self._buf.size  # (the room is remade: pruning happens when it would have)
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        d = dict(d)
        cap, top = d.pop("_cap", 0), d["_buf"]
        if cap > top.size:
            buf = np.empty(cap)
            buf[: top.size] = top
            d["_buf"] = buf
        self.__dict__.update(d)

    # -- updating
    def update(self, g: np.ndarray, offset: int | np.ndarray = 0) -> None:
        """Add the gradients of rows offset, offset+1, … (or, an array, of those rows)."""
        n = g.shape[0]
        if n == 0:
            return
        from lossctl.losses._numerics import TINY, ldexp  # (not at import: lossctl.losses imports the engine)

        raw = np.ascontiguousarray(g, dtype=np.float64).reshape(-1)
        flat = self._scaled(raw, self.exp) if self.exp else raw
        bmean, bm2, sq = self._moments(flat)
        if (not TINY <= sq < math.inf or bm2 == math.inf) and not math.isnan(sq):
            # Σg² left the double range: hold g·2⁻ᵏ instead, 2ᵏ just above the largest |g| (LAPACK dlassq);
            # never on ordinary data, whose Σg² is a normal double
            big = float(np.max(np.abs(raw)))
            if self.rows:
                big = max(big, ldexp(max(abs(self.min), abs(self.max)), self.exp))
            k = math.frexp(big)[1] if 0 < big < math.inf else self.exp
            if abs(k - self.exp) > 64:  # (else the batch is negligible beside what is held)
                self._rescale(k - self.exp)
                flat = self._scaled(raw, k)
                bmean, bm2, sq = self._moments(flat)
        if flat is not raw:
            g = flat.reshape(g.shape)
        m = flat.size
        self._merge_moments(m, bmean, bm2)
        self.min = min(self.min, float(flat.min()))
        self.max = max(self.max, float(flat.max()))
        absg = np.abs(g)
        with np.errstate(over="ignore"):  # (infinite gradients: their sums are inf)
            l1 = absg if g.ndim == 1 else absg.sum(axis=1)
            self.sums.add(np.array([float(np.add.reduce(l1)), sq]))
        self.zero_rows += int(n - np.count_nonzero(l1))
        self.rows += n
        self._add_top(l1)
        if self.sampling:
            self._add_sample(l1 if g.ndim > 1 else g, offset)

    def _moments(self, flat: np.ndarray) -> tuple[float, float, float]:
        """ḡ, Σ(g − ḡ)² and Σg² of one batch."""
        from lossctl.losses._numerics import dot

        m = flat.size
        if self._d is None or self._d.size < m:
            self._d = np.empty(m)
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):  # infinite gradients (KL at Q = 0) stay inf/nan
            bmean = float(np.add.reduce(flat)) / m
            d = np.subtract(flat, bmean, out=self._d[:m])
            # Σ(g − ḡ)² and Σg² by pairwise-accurate dots (rows of 4,096: no BLAS threads)
            return bmean, dot(d, d), dot(flat, flat)

    @staticmethod
    def _scaled(x: np.ndarray, k: int) -> np.ndarray:
        with np.errstate(under="ignore", over="ignore"):
            return np.ldexp(x, -k)

    def _rescale(self, k: int) -> None:
        """Hold g·2⁻ᵏ more than before: every stored figure scales exactly (or flushes to 0)."""
        with np.errstate(under="ignore", over="ignore"):
            self.mean = float(np.ldexp(self.mean, -k))
            self.m2 = float(np.ldexp(self.m2, -2 * k))
            self.min, self.max = float(np.ldexp(self.min, -k)), float(np.ldexp(self.max, -k))
            ex = np.array([-k, -2 * k])
            self.sums.s, self.sums.c = np.ldexp(self.sums.s, ex), np.ldexp(self.sums.c, ex)
            self._buf[: self._n] = np.ldexp(self._buf[: self._n], -k)
            self._floor = float(np.ldexp(self._floor, -k))
            self.dropped_max = float(np.ldexp(self.dropped_max, -k))
            self.sample_val = np.ldexp(self.sample_val, -k)
        self.exp += k

    def _merge_moments(self, m: int, mean: float, m2: float) -> None:
        tot = self.elems + m
        if self.elems == 0:
            self.mean, self.m2, self.elems = mean, m2, tot
            return
        delta = mean - self.mean
        self.mean += delta * m / tot
        self.m2 += m2 + delta * delta * self.elems * m / tot
        self.elems = tot

    def _keep(self) -> int:
        """How many candidates for the top 1% a prune keeps.

        With a bound on the rows (exact for Parquet and uncompressed text; a hint from the
        decompressed size for compressed text) the top 1% of the bound; without one, or once
        the rows outgrow a hint, twice the top 1% of the rows seen so far. Either way
        :meth:`top1_exact` checks at the end whether what was kept holds the top 1%.
        """
        kf = self.keep_factor
        if self.rows_bound is not None and self.rows <= self.rows_bound:
            keep = math.ceil(TOP_FRACTION * self.rows_bound) * kf
        else:
            keep = math.ceil(TOP_FRACTION * max(self.rows, 1024 * 100)) * max(2, kf)
        if kf > 1:  # a shard's state: small shards keep enough for the union's top 1%
            keep = max(keep, 1024)
        return max(1, keep)

    @property
    def top(self) -> np.ndarray:
        """The candidates above the floor (a view of the buffer); ``at_floor`` more rows
        equal the floor. Together they are every row norm ≥ the floor, ties included."""
        return self._buf[: self._n]

    @top.setter
    def top(self, values: np.ndarray) -> None:
        self._buf = np.array(values, dtype=float)
        self._n = self._buf.size

    @property
    def held(self) -> int:
        """How many of the largest row norms are known exactly."""
        return self._n + self.at_floor

    def _below_floor(self, l1: np.ndarray) -> np.ndarray:
        """``l1`` without the rows at or below the floor: ties with it are counted, the rest dropped."""
        floor = self._floor
        if floor == -math.inf:
            return l1
        above = l1 > floor
        n_above = int(np.count_nonzero(above))
        if n_above == l1.size:
            return l1
        ties = int(np.count_nonzero(l1 == floor))
        self.at_floor += ties
        if n_above + ties < l1.size:
            self.dropped_max = max(self.dropped_max, floor)  # (a bound: what was dropped lies below it)
        return l1[above]

    def _raise_floor(self, floor: float) -> None:
        """Drop everything below ``floor`` (≥ the current floor); count the candidates tied with it."""
        if floor <= self._floor:
            return
        if self.at_floor:
            self.dropped_max = max(self.dropped_max, self._floor)
            self.at_floor = 0
        cur = self._buf[: self._n]
        self._floor = floor
        low = cur <= floor
        if low.any():
            out = cur[low]
            ties = int(np.count_nonzero(out == floor))
            self.at_floor += ties
            if ties < out.size:
                self.dropped_max = max(self.dropped_max, float(np.max(out[out < floor])))
            kept = cur[~low]
            self._buf[: kept.size] = kept
            self._n = kept.size

    def _add_top(self, l1: np.ndarray) -> None:
        # Invariant: top ∪ {floor × at_floor} is exactly the multiset of row norms ≥ floor;
        # the floor only rises. Ties with the floor are counted, never dropped (all rows of
        # MAE have |g| = 1: the top 1% is then 1% of the rows, at the floor).
        l1 = self._below_floor(l1)
        if l1.size == 0:
            return
        if self._n + l1.size <= self._buf.size:
            self._buf[self._n:self._n + l1.size] = l1
            self._n += l1.size
            return
        keep = self._keep()
        cand = np.concatenate([self._buf[: self._n], l1])
        if cand.size > keep:
            # the keep-th largest becomes the floor: rows above it stay, rows equal to it are counted
            cut = cand.size - keep
            cand[np.isnan(cand)] = math.inf  # (a NaN gradient: the share is NaN anyway; keep the order total)
            cand.partition(cut)
            v = float(cand[cut])
            lo, hi = cand[:cut], cand[cut:]
            if v > self._floor and self.at_floor:
                self.dropped_max = max(self.dropped_max, self._floor)
                self.at_floor = 0
            below = lo[lo < v]
            if below.size:
                self.dropped_max = max(self.dropped_max, float(np.max(below)))
            self.at_floor += (lo.size - below.size) + int(np.count_nonzero(hi == v))
            self._floor = v
            cand = hi[hi > v]
        capacity = keep + max(keep // 4, 1024)
        if self._buf.size < max(capacity, cand.size):
            self._buf = np.empty(max(capacity, cand.size))
        self._buf[: cand.size] = cand
        self._n = cand.size

    def _add_sample(self, vals: np.ndarray, offset: int | np.ndarray) -> None:
        # offset: the first row's global index, or (rows of a slice) every row's
        keys = splitmix64(offset) if isinstance(offset, np.ndarray) else row_keys(int(offset), vals.shape[0])
        if self.sample_key.size >= SAMPLE_SIZE:
            keep = keys < self._key_cut  # only rows that beat the current sample can join it
            keys, vals = keys[keep], vals[keep]
            if keys.size == 0:
                return
        key = np.concatenate([self.sample_key, keys])
        val = np.concatenate([self.sample_val, vals])
        if key.size > SAMPLE_SIZE:
            idx = np.argpartition(key, SAMPLE_SIZE)[:SAMPLE_SIZE]
            key, val = key[idx], val[idx]
        self.sample_key, self.sample_val = key, val
        if key.size >= SAMPLE_SIZE:
            self._key_cut = key.max()

    def merge(self, other: "GradSummary") -> None:
        if other.elems == 0:
            return
        if other.exp != self.exp:  # hold both at the larger scale
            if self.elems == 0 or other.exp > self.exp:
                self._rescale(other.exp - self.exp)
            if other.exp < self.exp:
                other = copy.deepcopy(other)
                other._rescale(self.exp - other.exp)
        if self.elems == 0:
            self.mean, self.m2, self.elems = other.mean, other.m2, other.elems
        else:
            self._merge_moments(other.elems, other.mean, other.m2)
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.sums.merge(other.sums)
        self.zero_rows += other.zero_rows
        self.rows += other.rows
        if self.rows_bound is not None and other.rows_bound is not None:
            self.rows_bound = self.rows_bound + other.rows_bound
        else:
            self.rows_bound = None
        self.dropped_max = max(self.dropped_max, other.dropped_max)
        self.merged = True
        # the union knows exactly the norms ≥ the higher of the two floors
        floor = max(self._floor, other._floor)
        self._raise_floor(floor)
        if other.at_floor:
            if other._floor == floor:
                self.at_floor += other.at_floor
            else:
                self.dropped_max = max(self.dropped_max, other._floor)
        self._add_top(np.array(other.top))
        self.sample_key = np.concatenate([self.sample_key, other.sample_key])
        self.sample_val = np.concatenate([self.sample_val, other.sample_val])
        if self.sample_key.size > SAMPLE_SIZE:
            idx = np.argpartition(self.sample_key, SAMPLE_SIZE)[:SAMPLE_SIZE]
            self.sample_key, self.sample_val = self.sample_key[idx], self.sample_val[idx]
        self._cuts()

    def _cuts(self) -> None:
        self._key_cut = self.sample_key.max() if self.sample_key.size >= SAMPLE_SIZE else np.uint64(0)

    # -- results
    def result(self, scale: float = 1.0) -> dict[str, float]:
        if self.rows == 0:
            return {}
        abs_sum, sq_sum = (float(x) for x in self.sums.value)
        k = max(1, math.ceil(TOP_FRACTION * self.rows))
        top = self.top
        if top.size >= k:
            top_sum = float(np.sum(np.partition(top, top.size - k)[top.size - k:]))
        else:  # the rest of the top 1% are rows tied at the floor (or, past `held`, unknown: a lower bound)
            top_sum = float(np.sum(top)) + (min(k - top.size, self.at_floor) * self._floor if self.at_floor else 0.0)
        s = abs(scale)
        lo, hi = self.min * scale, self.max * scale
        if scale < 0:
            lo, hi = hi, lo
        out: dict[str, Any] = {
            "mean": self.mean * scale,
            "std": math.sqrt(max(self.m2, 0.0) / self.elems) * s,
            "min": lo,
            "max": hi,
            "abs_mean": abs_sum / self.elems * s,
            "l2": math.sqrt(sq_sum) * s,
            "zero_frac": self.zero_rows / self.rows,
            "top1_share": (top_sum / abs_sum) if abs_sum > 0 else (math.nan if math.isnan(abs_sum) else 0.0),
        }
        if self.exp:  # held as g·2^-exp: scale back (each figure is representable, or truly overflows)
            from lossctl.losses._numerics import ldexp

            for key in ("mean", "std", "min", "max", "abs_mean", "l2"):
                out[key] = ldexp(out[key], self.exp)
        if not self.top1_exact():
            out["top1_share_lower_bound"] = True
        return out

    def top1_exact(self) -> bool:
        """Whether top1_share is exact: every row of the top 1% was kept (or counted as a tie).

        The summary holds every row norm at or above its floor, so it is exact when it holds
        at least 1% of the rows. It may fall short where the row count was not known in
        advance and the largest rows came first, or after merging lopsided shards: then
        top1_share is a lower bound, and this says so.
        """
        return self.rows == 0 or self.held >= max(1, math.ceil(TOP_FRACTION * self.rows))

    def top1_note(self) -> str:
        if self.merged:
            return "top1_share is a lower bound: a merged shard pruned rows that may belong to the top 1%"
        return ("top1_share is a lower bound: the number of rows was not known in advance and rows that may "
                "belong to the top 1% were pruned (an uncompressed or Parquet input gives the exact share)")

    # -- state files
    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "elems": self.elems, "mean": self.mean, "m2": self.m2,
            "min": self.min, "max": self.max, "sums": self.sums.to_dict(), "zero_rows": self.zero_rows,
            "rows_bound": self.rows_bound, "keep_factor": self.keep_factor, "top": self.top.tolist(),
            "dropped_max": self.dropped_max, "exp": self.exp, "floor": self._floor, "at_floor": self.at_floor, "merged": self.merged,
            "sample_key": [int(x) for x in self.sample_key], "sample_val": self.sample_val.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GradSummary":
        g = cls(d["rows_bound"], d.get("keep_factor", 1))
        g.rows, g.elems, g.mean, g.m2 = d["rows"], d["elems"], d["mean"], d["m2"]
        g.min, g.max, g.zero_rows = d["min"], d["max"], d["zero_rows"]
        g.sums = Sum.from_dict(d["sums"])
        g.top = np.asarray(d["top"], dtype=float)
        g.dropped_max = d["dropped_max"]
        g.merged = bool(d.get("merged", False))
        g.exp = int(d.get("exp", 0))
        if "floor" in d:
            g._floor, g.at_floor = float(d["floor"]), int(d["at_floor"])
        elif g.dropped_max > -math.inf:
            # an older state file, whose pruning dropped ties: it holds exactly the norms above dropped_max
            g._raise_floor(float(np.nextafter(g.dropped_max, math.inf)))
        g.sample_key = np.asarray(d["sample_key"], dtype=np.uint64)
        g.sample_val = np.asarray(d["sample_val"], dtype=float)
        g._cuts()
        return g

    def sample(self, scale: float = 1.0) -> np.ndarray:
        """Up to SAMPLE_SIZE per-row gradients (or row norms), for histograms."""
        if self.exp:
            with np.errstate(over="ignore", under="ignore"):
                return np.ldexp(self.sample_val * scale, self.exp)
        return self.sample_val * scale


class RowSample:
    """A deterministic sample of rows (the K smallest hashes of the row index).

    Mergeable and independent of batch sizes; used for the terminal pictures.
    """

    def __init__(self, k: int = SAMPLE_SIZE) -> None:
        self.k = k
        self.keys = np.empty(0, dtype=np.uint64)
        self.cols: dict[str, np.ndarray] = {}

    def update(self, cols: dict[str, np.ndarray], offset: int) -> None:
        n = next(iter(cols.values())).shape[0]
        keys = splitmix64(np.arange(offset, offset + n, dtype=np.uint64))
        if self.keys.size + n > self.k:
            allkeys = np.concatenate([self.keys, keys])
            thresh = np.partition(allkeys, self.k - 1)[self.k - 1]
            mine, theirs = self.keys <= thresh, keys <= thresh
        else:
            mine, theirs = np.ones(self.keys.size, bool), np.ones(n, bool)
        self.keys = np.concatenate([self.keys[mine], keys[theirs]])
        for name, a in cols.items():
            old = self.cols.get(name)
            new = a[theirs]
            self.cols[name] = new if old is None else np.concatenate([old[mine], new])
