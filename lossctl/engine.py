"""The streaming engine: batches → per-loss mergeable state → results.

A loss is a *kernel* bound to its parameters. Most kernels are *decomposable*: the
value is a function of column sums of per-row statistics (a weighted mean is
Σwℓ / Σw, Dice is a ratio of Σpg, Σp, Σg). Their state is a compensated sum of those
statistics, so update/merge/result are exact whatever the batch sizes, and slices,
shard merges and bootstrap intervals come for free. Kernels that are not (batch-mined
triplets, Wasserstein) provide their own state with the same update/merge/result.
"""
from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lossctl.accumulate import GradSummary, Scaled, Sum, row_keys, splitmix64
from lossctl.errors import InputError, UsageError


@dataclass
class Batch:
    """Rows of bound inputs: role → array of shape (n,) or (n, k)."""

    cols: dict[str, np.ndarray]
    n: int
    weight: np.ndarray | None = None
    offset: int = 0  # global index of the first row (0-based)
    source: str = ""
    columns: Mapping[str, str] = field(default_factory=dict)  # role → column label, for messages
    input_start: int = 0  # 0-based input row of the first row, counting dropped rows
    keep: np.ndarray | None = None  # which input rows survived --nan drop
    # intermediate arrays shared by the losses of one batch (segmentation's probabilities and one-hot masks)
    memo: dict = field(default_factory=dict)
    column_names: Mapping[str, list[str]] = field(default_factory=dict)  # role → its columns
    # the global index of each row, where the rows are not offset..offset+n−1 (a slice taken by `take`):
    # bootstrap units and gradient samples are keyed by it, so they do not depend on batch boundaries
    rows: np.ndarray | None = None

    def shared(self, name: str, roles: tuple[str, ...], make: Callable[[], np.ndarray]) -> np.ndarray:
        """``make()``, computed once per batch for every loss that reads the same columns."""
        key = (name,) + tuple(id(self.cols[r]) for r in roles)
        out = self.memo.get(key)
        if out is None:
            out = self.memo[key] = make()
        return out

    def __getitem__(self, role: str) -> np.ndarray:
        return self.cols[role]

    def get(self, role: str) -> np.ndarray | None:
        return self.cols.get(role)

    def take(self, idx: np.ndarray) -> "Batch":
        """The rows ``idx`` of this batch, each keeping its own global row index."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return Batch(
            {k: v[idx] for k, v in self.cols.items()},
            int(idx.size),
            None if self.weight is None else self.weight[idx],
            self.offset,
            self.source,
            self.columns,
            column_names=self.column_names,
            rows=(np.asarray(idx, dtype=np.uint64) + np.uint64(self.offset)) if self.rows is None else self.rows[idx],
        )  # a fresh memo: the subset's arrays are new

    @property
    def row_keys(self) -> int | np.ndarray:
        """What keys rows for hashing: the first row's index where the rows are consecutive, else each row's."""
        return self.offset if self.rows is None else self.rows

    def input_row(self, i: int) -> int:
        """The 1-based row of the input file that row ``i`` of this batch came from."""
        if self.keep is None:
            return self.input_start + i + 1
        return self.input_start + int(np.flatnonzero(self.keep)[i]) + 1

    def row_indices(self) -> np.ndarray:
        if self.rows is not None:
            return self.rows
        return np.arange(self.offset, self.offset + self.n, dtype=np.uint64)

    def fail(self, message: str, role: str, mask: np.ndarray, values: np.ndarray | None = None) -> InputError:
        """An InputError naming the first row where ``mask`` is true.

        ``mask`` is per row (n,) or per element (n, k); for a vector role the message
        names the column of the first offending element.
        """
        bad = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)) if mask.ndim > 1 else np.flatnonzero(mask)
        i = int(bad[0])
        arr = self.cols[role] if values is None else values
        v = arr[i]
        column = self.columns.get(role, role)
        if np.ndim(v):
            j = int(np.flatnonzero(mask[i])[0]) if mask.ndim > 1 else None
            if j is not None:
                v = v[j]
                names = self.column_names.get(role)
                if names and len(names) == np.size(arr[i]):
                    column = names[j]
                else:
                    column = f"{column}[{j}]"
            else:
                v = "[" + ", ".join(f"{x:g}" for x in np.ravel(v)[:8]) + (", …]" if np.size(v) > 8 else "]")
        v = v.item() if hasattr(v, "item") else v
        return InputError.at(
            message,
            source=self.source or None,
            column=column,
            row=self.input_row(i),
            value=v,
            count=int(bad.size),
        )


@dataclass(frozen=True)
class Context:
    """What a kernel may need to know beyond its parameters (part of a plan: frozen)."""

    task: str
    grad: bool = False
    n_classes: int | None = None
    target_kind: str = "scalar"  # "scalar" (labels / values) or "vector" (one-hot, soft, distributions)
    rows_bound: int | None = None
    top_keep: int = 1  # GradSummary keep_factor: 2 when the state goes to a file for merging
    # keep the hashed gradient sample (the table's histogram); the CLI turns it off for
    # json/csv output, where nothing shows it (a quarter of the --grad cost)
    sample_grads: bool = True
    # filled in by a pre-pass for kernels that need whole-file facts (balanced weights)
    prepass: dict[str, Any] = field(default_factory=dict, compare=False)


class Kernel:
    """A decomposable loss bound to its parameters.

    Subclasses define ``stats`` (per-row statistics whose column sums determine the
    value), ``value`` (vectorised over leading axes, for the bootstrap) and the
    gradient: either in the same pass (``grad_scale`` gives the final positive
    scale) or, for losses whose gradient needs the final sums, in a second pass.
    """

    row_mean = True
    two_pass_grad = False
    needs_prepass = False
    grad_roles: tuple[str, ...] = ("pred",)

    def __init__(self, params: Mapping[str, Any], ctx: Context) -> None:
        self.params = dict(params)
        self.ctx = ctx

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled by class name, parameters and context: the constructor runs on the other side (and
        # makes its own buffers); what the kernel learnt from the data travels as its attributes
        data = {k: v for k, v in self.__dict__.items() if k not in ("params", "ctx")}
        return (_kernel_of, (type(self), self.params, self.ctx), data)

    # per-row statistics: a list of (n,) or (n, k) arrays, or float constants
    def stats(self, b: Batch, grad: bool) -> tuple[list[Any], dict[str, np.ndarray] | None]:
        raise NotImplementedError

    def value(self, totals: np.ndarray) -> np.ndarray | float:
        raise NotImplementedError

    def sums(self, b: Batch) -> np.ndarray | None:
        """Optional fast path: the column sums of ``stats`` computed directly (fused,
        in cache-sized blocks) when no gradient, weight or bootstrap is asked for."""
        return None

    def sums_and_grads(self, b: Batch) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """Optional fast path with gradients: (column sums of ``stats``, per-row gradients)."""
        return None

    def sums_rows(self, b: Batch, grad: bool) -> tuple[np.ndarray, dict[str, np.ndarray] | None, list[Any]] | None:
        """Optional fast path for the bootstrap: the fused sums (and gradients) with the
        per-row ``stats`` written in the same pass: (sums, gradients or None, stats)."""
        return None

    def extra(self, totals: np.ndarray) -> dict[str, Any]:
        return {}

    def value_parts(self, mant: np.ndarray, exp: np.ndarray) -> float:
        """``value`` of the totals mant·2^exp, where a sum left the double range (Sum.e)."""
        with np.errstate(over="ignore", under="ignore"):
            return float(self.value(np.ldexp(mant, exp)))

    def grad_scale_parts(self, mant: np.ndarray, exp: np.ndarray, n: int) -> float:
        with np.errstate(over="ignore", under="ignore"):
            return self.grad_scale(np.ldexp(mant, exp), n)

    def reduce_sum(self, totals: np.ndarray) -> float:
        raise UsageError(f"{type(self).__name__} has no sum reduction")

    def grad_scale(self, totals: np.ndarray, n: int) -> float:
        return 1.0

    def grad2(self, b: Batch, totals: np.ndarray, n: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def per_row(self, b: Batch, grad: bool) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        raise NotImplementedError

    def prepass(self, b: Batch) -> None:  # pragma: no cover - overridden where needed
        pass

    def end_prepass(self) -> None:  # pragma: no cover
        pass

    def validate(self, b: Batch) -> None:
        """Check the domain of this loss's inputs (labels, probabilities)."""


def _kernel_of(cls: type[Kernel], params: Mapping[str, Any], ctx: Context) -> Kernel:
    """A pickled kernel, built again by its class from its parameters."""
    return cls(params, ctx)


class RowMeanKernel(Kernel):
    """A loss that is the (weighted) mean of per-row losses ℓᵢ.

    Subclasses implement ``rows(b, grad) -> (ℓ, grads, row_weight)``: per-row losses,
    per-row gradients ∂ℓᵢ/∂output (or None) and an optional per-row weight that the
    loss itself applies (torch's class weights), which joins the sample weight in
    both numerator and denominator of the mean.
    """

    def rows(self, b: Batch, grad: bool) -> tuple[np.ndarray, dict[str, np.ndarray] | None, np.ndarray | None]:
        raise NotImplementedError

    def stats(self, b: Batch, grad: bool) -> tuple[list[Any], dict[str, np.ndarray] | None]:
        loss, grads, roww = self.rows(b, grad)
        w = b.weight
        if roww is not None:
            w = roww if w is None else w * roww
        if w is None:
            return [loss, 1.0], grads
        with np.errstate(over="ignore", invalid="ignore"):  # w·ℓ may overflow: the sum is rescaled (_sum_stats)
            if grads is not None:
                grads = {k: g * (w if g.ndim == 1 else w[:, None]) for k, g in grads.items()}
            return [loss * w, w], grads

    def value(self, totals: np.ndarray) -> np.ndarray | float:
        with np.errstate(invalid="ignore", divide="ignore"):
            return totals[..., 0] / totals[..., 1]

    def reduce_sum(self, totals: np.ndarray) -> float:
        return float(totals[0])

    def grad_scale(self, totals: np.ndarray, n: int) -> float:
        return n / float(totals[1]) if totals[1] > 0 else 1.0

    def value_parts(self, mant: np.ndarray, exp: np.ndarray) -> float:
        # Σwℓ/Σw with Σwℓ beyond the double range (a mean of r² with r near 1e154 is finite)
        from lossctl.losses._numerics import ldexp

        with np.errstate(invalid="ignore", divide="ignore"):
            return ldexp(float(mant[0] / mant[1]), int(exp[0] - exp[1]))

    def per_row(self, b: Batch, grad: bool) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        loss, grads, roww = self.rows(b, grad)
        if roww is not None:
            loss = loss * roww
            if grads is not None:
                grads = {k: g * (roww if g.ndim == 1 else roww[:, None]) for k, g in grads.items()}
        return loss, grads


def _stat_sizes(stats: list[Any]) -> list[int]:
    return [1 if np.ndim(s) <= 1 else s.shape[1] for s in stats]


def _sum_stats(stats: list[Any], n: int) -> np.ndarray | Scaled:
    out = []
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing sum of finite terms is rescaled below
        for s in stats:
            if np.ndim(s) == 0:
                out.append(float(s) * n)
            elif s.ndim == 1:
                out.append(float(np.sum(s)))
            else:
                out.extend(np.sum(s, axis=0).tolist())
    sums = np.asarray(out, dtype=float)
    if np.isinf(sums).any():  # (never on ordinary data) a sum of finite terms may overflow
        return _scaled_sums(stats, sums)
    return sums


def _scaled_sums(stats: list[Any], sums: np.ndarray) -> np.ndarray | Scaled:
    """Column sums of ``stats`` that overflowed although every term is finite, as Σ(x·2⁻ᵏ)·2ᵏ."""
    cols = []
    for s in stats:
        if np.ndim(s) == 0:
            cols.append(None)
        elif s.ndim == 1:
            cols.append(s)
        else:
            cols.extend(s[:, j] for j in range(s.shape[1]))
    exp = np.zeros(sums.size, dtype=np.int64)
    for i, col in enumerate(cols):
        if col is None or not np.isinf(sums[i]) or not np.isfinite(col).all():
            continue
        k = math.frexp(float(np.max(np.abs(col))))[1]
        with np.errstate(under="ignore"):
            sums[i], exp[i] = float(np.sum(np.ldexp(col, -k))), k
    return Scaled(sums, exp) if exp.any() else sums


def _stats_matrix(stats: list[Any], n: int) -> np.ndarray:
    cols = []
    for s in stats:
        if np.ndim(s) == 0:
            cols.append(np.full((n, 1), float(s)))
        elif s.ndim == 1:
            cols.append(s[:, None])
        else:
            cols.append(s)
    return np.hstack(cols).astype(float, copy=False)


# ------------------------------------------------------------------ bootstrap units

_TINY = float(np.finfo(np.float64).tiny)
ROW_UNITS_LIMIT = 1 << 15  # up to this many rows, resample rows exactly
BUCKETS = 1 << 12  # beyond it, resample this many hashed blocks of rows (a power of two)


def _blocks_of(keys: np.ndarray) -> np.ndarray:
    """The bootstrap block of each row from its hash: the hash mod BUCKETS (a power of two)."""
    return (keys & np.uint64(BUCKETS - 1)).astype(np.intp)


class RowBlocks:
    """The bootstrap block of each row of one batch, hashed once for every state that reads
    the batch (``Batch.memo`` is shared by the jobs of a batch), and the block sums of the
    columns those states share: row counts and the weights."""

    __slots__ = ("rows", "span", "ids", "_counts", "_shared")
    _KEY = ("bootstrap row blocks",)

    def __init__(self, b: Batch) -> None:
        self.rows, self.span = b.rows, (b.offset, b.n)
        keys = row_keys(b.offset, b.n) if b.rows is None else splitmix64(b.rows)
        self.ids = _blocks_of(keys)
        self._counts: np.ndarray | None = None
        self._shared: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def of(cls, b: Batch) -> "RowBlocks":
        got = b.memo.get(cls._KEY)
        if got is None or got.rows is not b.rows or got.span != (b.offset, b.n):
            got = b.memo[cls._KEY] = cls(b)
        return got

    def sums(self, col: np.ndarray | None, shared: bool = False) -> np.ndarray:
        """Per-block sums of ``col`` (None: of ones, the row counts); ``shared``: a column
        that every state of the batch sums (the weights), summed once."""
        if col is None:
            if self._counts is None:
                self._counts = np.bincount(self.ids, minlength=BUCKETS).astype(float)
            return self._counts
        if shared:
            if self._shared is None or self._shared[0] is not col:
                self._shared = (col, np.bincount(self.ids, weights=col, minlength=BUCKETS))
            return self._shared[1]
        return np.bincount(self.ids, weights=col, minlength=BUCKETS)


class BootUnits:
    """Per-unit sums of a decomposable loss's statistics, for the bootstrap.

    Units are rows while there are at most ROW_UNITS_LIMIT of them (an exact row
    bootstrap); past that, rows are hashed by their index into BUCKETS blocks whose
    sums are resampled. Hashing by row index keeps units paired across prediction
    sets and independent of batch sizes.
    """

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []  # (n, S) blocks while exact
        self.idx: list[np.ndarray] = []
        self.buckets: np.ndarray | None = None
        self.count = 0

    def add(self, mat: np.ndarray, idx: np.ndarray) -> None:
        self.count += mat.shape[0]
        if self.buckets is None:
            self.rows.append(mat)
            self.idx.append(idx)
            if self.count > ROW_UNITS_LIMIT:
                self._to_buckets()
        else:
            self._bucket_add(mat, idx)

    def add_stats(self, stats: list[Any], b: Batch) -> None:
        """Add a batch's per-row statistics (as ``Kernel.stats`` gives them). Past the row
        limit each column goes straight to its block sums, with the rows' blocks hashed
        once per batch for every state (``RowBlocks``); a constant column and the
        batch's weights are summed per block once per batch too."""
        if self.buckets is None:
            if self.count + b.n <= ROW_UNITS_LIMIT:
                self.add(_stats_matrix(stats, b.n), b.row_indices())
                return
            self._to_buckets(sum(_stat_sizes(stats)))  # the rows held so far; this batch goes straight to blocks
        self.count += b.n
        blocks = RowBlocks.of(b)
        j = 0
        for s in stats:
            if np.ndim(s) == 0:
                self.buckets[:, j] += blocks.sums(None) * float(s)
                j += 1
            elif s.ndim == 1:
                self.buckets[:, j] += blocks.sums(s, shared=s is b.weight)
                j += 1
            else:
                for c in range(s.shape[1]):
                    self.buckets[:, j] += blocks.sums(s[:, c])
                    j += 1

    def _bucket_add(self, mat: np.ndarray, idx: np.ndarray) -> None:
        assert self.buckets is not None
        b = _blocks_of(splitmix64(idx))
        for j in range(mat.shape[1]):
            self.buckets[:, j] += np.bincount(b, weights=mat[:, j], minlength=BUCKETS)

    def _to_buckets(self, width: int = 0) -> None:
        s = self.rows[0].shape[1] if self.rows else width
        self.buckets = np.zeros((BUCKETS, s))
        if self.rows:  # (one hash of every row held, in one call)
            self._bucket_add(np.vstack(self.rows), np.concatenate(self.idx))
        self.rows, self.idx = [], []

    def merge(self, other: "BootUnits") -> None:
        if other.buckets is None:
            for mat, idx in zip(other.rows, other.idx):
                self.add(mat, idx)
            return
        if self.buckets is None:
            self._to_buckets() if self.rows else None
            if self.buckets is None:
                self.buckets = np.zeros_like(other.buckets)
        self.buckets += other.buckets
        self.count += other.count

    def _one_block(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The rows held as one block (the same matrix), not one per batch: what travels."""
        if len(self.rows) > 1:
            return [np.vstack(self.rows)], [np.concatenate(self.idx)]
        return self.rows, self.idx

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["rows"], d["idx"] = self._one_block()
        return d

    def to_dict(self) -> dict[str, Any]:
        if self.buckets is not None:
            return {"count": self.count, "buckets": self.buckets.tolist()}
        rows, idx = self._one_block()
        return {"count": self.count, "rows": [m.tolist() for m in rows], "idx": [[int(i) for i in x] for x in idx]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BootUnits":
        u = cls()
        u.count = d["count"]
        if "buckets" in d:
            u.buckets = np.asarray(d["buckets"], dtype=float)
        else:
            u.rows = [np.asarray(m, dtype=float).reshape(len(m), -1) for m in d["rows"]]
            u.idx = [np.asarray(x, dtype=np.uint64) for x in d["idx"]]
        return u

    def matrix(self) -> tuple[np.ndarray, str]:
        if self.buckets is not None:
            return self.buckets, f"percentile bootstrap over {BUCKETS} hashed row blocks"
        if not self.rows:
            return np.zeros((0, 0)), "percentile bootstrap over rows"
        order = np.argsort(np.concatenate(self.idx), kind="stable")
        return np.vstack(self.rows)[order], "percentile bootstrap over rows"


class Resampling:
    """One bootstrap resampling, drawn once and applied to every unit matrix of a set of states.

    ``replicates`` resamples of the units, drawn from ``seed``: for m units, each replicate
    counts how often each unit was drawn (a multinomial draw up to 4,096 units, one
    bincount of m drawn units above), in chunks of at most 2²² counts. The counts depend
    only on (m, replicates, seed), so every job of a set (and every paired delta between
    two jobs) reads the same resample: the draw, the costliest step, happens once per set,
    and the replicate totals of all matrices come from one product per chunk.
    ``mats[i]`` is job i's (m, S) unit matrix, or None where it has none.
    """

    def __init__(self, mats: Sequence[np.ndarray | None], replicates: int, seed: int) -> None:
        self.mats = list(mats)
        self.replicates = replicates
        self.seed = seed
        self._totals: list[np.ndarray | None] | None = None

    def totals(self, i: int) -> np.ndarray:
        """Job i's replicate totals: (replicates, S), row r the column sums of its units resampled by replicate r."""
        if self._totals is None:
            self._totals = self._draw()
        t = self._totals[i]
        assert t is not None, "no units for this job"
        return t

    def _draw(self) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(self.mats)
        by_m: dict[int, list[int]] = {}
        for i, u in enumerate(self.mats):
            if u is not None:
                by_m.setdefault(u.shape[0], []).append(i)
        for m, which in by_m.items():  # (every matrix of a set has the same units; a set that mixes them draws per m)
            mats = [self.mats[i] for i in which]
            widths = [u.shape[1] for u in mats]
            both = np.hstack(mats).astype(float, copy=False) if len(mats) > 1 else mats[0].astype(float, copy=False)
            tot = np.empty((self.replicates, both.shape[1]))
            r = self.replicates
            chunk = _chunk(m, r)
            ahead = _take_ahead(m, r, self.seed)  # the first chunk, drawn while the batches streamed
            rng = ahead[0] if ahead is not None else np.random.default_rng(self.seed)
            for start in range(0, r, chunk):
                k = min(chunk, r - start)
                counts = ahead[1] if ahead is not None and start == 0 else _counts(rng, m, k)
                with np.errstate(over="ignore", invalid="ignore"):  # replicates of infinite sums are inf or nan, and dropped
                    np.matmul(counts, both, out=tot[start:start + k])
            cuts = np.cumsum(widths)[:-1]
            for i, t in zip(which, np.split(tot, cuts, axis=1)):
                out[i] = t
        return out


def _chunk(m: int, replicates: int) -> int:
    """Replicates drawn at a time: at most 2²² counts."""
    return max(1, min(replicates, (1 << 22) // max(m, 1)))


def _counts(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """k replicates of how often each of m units is drawn (m draws with replacement)."""
    if m <= 4096:
        return rng.multinomial(m, np.full(m, 1.0 / m), size=k).astype(float)
    return np.stack([np.bincount(rng.integers(0, m, m), minlength=m) for _ in range(k)]).astype(float)


# One draw ahead: (m, replicates, seed) → (thread, its result). The first chunk of counts of the
# whole data's resampling (a 1,000 × 4,096 multinomial, the bootstrap's costliest step) is drawn
# in a thread as soon as the units are hashed blocks, while the batches stream; numpy releases
# the GIL while it draws. The same Generator continues with the next chunks: the same counts.
_AHEAD: dict[tuple[int, int, int], tuple[threading.Thread, dict[str, Any]]] = {}
_AHEAD_LOCK = threading.Lock()


def draw_ahead(m: int, replicates: int, seed: int) -> None:
    """Start drawing the first chunk of the resampling (m units, ``replicates``, ``seed``)."""
    key = (m, replicates, seed)
    with _AHEAD_LOCK:
        if key in _AHEAD:
            return
        _AHEAD.clear()  # one slot: a draw nobody took is dropped
        box: dict[str, Any] = {}

        def work() -> None:
            rng = np.random.default_rng(seed)
            box["counts"] = _counts(rng, m, min(_chunk(m, replicates), replicates))
            box["rng"] = rng

        th = threading.Thread(target=work, name="lossctl-bootstrap-draw", daemon=True)
        _AHEAD[key] = (th, box)
        th.start()


def _take_ahead(m: int, replicates: int, seed: int) -> tuple[np.random.Generator, np.ndarray] | None:
    with _AHEAD_LOCK:
        got = _AHEAD.pop((m, replicates, seed), None)
    if got is None:
        return None
    th, box = got
    th.join()
    return (box["rng"], box["counts"]) if "counts" in box else None


TAIL_REPLICATES = 5  # replicates beyond each end of a percentile interval, at least, for ends that mean something


def bootstrap_notes(level: float, replicates: int, library: bool = False) -> list[str]:
    """A note where a percentile interval's ends rest on too few replicates: each end is an
    order statistic of the B replicates, and with fewer than 5 beyond it the same resampling
    noise that the interval measures moves the end itself (B = 1 gave an "interval" [x, x])."""
    tail = replicates * (1 - level) / 2
    if tail >= TAIL_REPLICATES:
        return []
    need = math.ceil(2 * TAIL_REPLICATES / (1 - level) - 1e-9)
    ci, boot = (f"ci={level:g}", f"bootstrap={need}") if library else (f"--ci {level:g}", f"--bootstrap {need:,}")
    return [f"{ci} from {replicates:,} bootstrap replicate{'s' * (replicates != 1)}: each end of an interval rests on "
            f"{tail:.3g} replicates beyond it; give {boot} or more for ends that hold still"]


def bootstrap_values(
    units: Sequence[np.ndarray],
    fns: Sequence[Callable[[list[np.ndarray]], Any]],
    replicates: int,
    seed: int,
) -> list[np.ndarray]:
    """Resample the rows of each unit matrix jointly (paired) and apply each fn to the
    list of replicate totals (one (replicates, S) array per matrix): one draw for all."""
    boot = Resampling(units, replicates, seed)
    totals = [boot.totals(i) for i in range(len(units))]
    out = []
    for fn in fns:
        v = np.empty(replicates)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            v[:] = fn(totals)
        out.append(v)
    return out


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


# ------------------------------------------------------------------ states


@dataclass
class Options:
    grad: bool = False
    ci: float | None = None
    bootstrap: int = 1000
    seed: int = 0
    reduction: str = "mean"


class State:
    """What the engine drives for one (loss, prediction set[, group]).

    A state that can travel (to a state file, to another process) and be merged with the
    state of another part of the data says so through one property, ``unmergeable_reason``
    (None, or why not, in a few words a driver puts after the loss's name); ``mergeable``
    is its negation. Every driver (``--emit-state``, ``merge``, ``--engine dask``) reads it,
    before any row is read. A mergeable state pickles with the standard ``pickle`` module
    as its data only (its kernel by class name and parameters, no scratch buffers).
    """

    two_pass = False
    decomposable = False
    # the default for a state that has not said how it travels
    unmergeable_reason: str | None = "its state cannot be saved to a file yet"

    @property
    def mergeable(self) -> bool:
        return self.unmergeable_reason is None

    def update(self, b: Batch) -> None:
        raise NotImplementedError

    def update2(self, b: Batch) -> None:  # second pass, where two_pass
        pass

    def merge(self, other: "State") -> None:
        raise NotImplementedError

    def result(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The state's sufficient statistics, for ``--emit-state`` (JSON-able)."""
        raise UsageError(f"--emit-state: {self.unmergeable_reason}")

    def load(self, d: dict[str, Any]) -> "State":
        raise NotImplementedError


class DecomposableState(State):
    decomposable = True
    # set by the vectorised slices (lossctl.slices.VectorJob): keep each batch's per-row
    # statistics, written by the fused pass that sums them, in ``last_rows`` for the slices'
    # group sums (the same values the slices would compute again)
    share_rows = False
    last_rows: tuple[Batch, list[Any], dict[str, np.ndarray] | None] | None = None

    def __init__(self, kernel: Kernel, opts: Options) -> None:
        self.kernel = kernel
        self.opts = opts
        self.totals: Sum | None = None
        self.n = 0
        self.grad = (GradSummary(kernel.ctx.rows_bound, kernel.ctx.top_keep, sample=kernel.ctx.sample_grads)
                     if opts.grad else None)
        self.grad_by_role: dict[str, GradSummary] = {}
        self.boot = BootUnits() if opts.ci else None
        self.two_pass = bool(opts.grad and kernel.two_pass_grad)
        self._final: np.ndarray | None = None

    def update(self, b: Batch) -> None:
        if b.n == 0:
            return
        want_grad = self.grad is not None and not self.kernel.two_pass_grad
        if self.opts.reduction != "sum":
            # a fused reduction (and gradients) where the kernel has one: no per-row losses for the
            # sums, which are then the same with --ci and without
            rows = self.kernel.sums_rows(b, want_grad) if self.boot is not None or self.share_rows else None
            if rows is not None:
                fused = rows[:2] if want_grad else rows[0]
            else:
                fused = self.kernel.sums_and_grads(b) if want_grad else self.kernel.sums(b)
            if fused is not None:
                fast, grads = fused if want_grad else (fused, None)
                if self.totals is None:
                    self.totals = Sum(len(fast.mant) if isinstance(fast, Scaled) else fast.size)
                self.totals.add(fast)
                self.n += b.n
                if grads is not None:
                    self._add_grads(grads, b)
                if self.boot is not None:  # (after the gradients are consumed: the kernel reuses its buffers)
                    self._add_units(rows[2] if rows is not None else self.kernel.stats(b, False)[0], b)
                if self.share_rows:
                    self.last_rows = (b, rows[2], grads) if rows is not None else None
                return
        stats, grads = self.kernel.stats(b, want_grad)
        sums = _sum_stats(stats, b.n)
        if not isinstance(sums, Scaled) and self.opts.reduction != "sum" and not (
                (np.abs(sums) >= _TINY) & (np.abs(sums) < math.inf)).all():
            # a sum at 0, below the normal range or infinite: per-row r² may have under- or overflowed (r near
            # 1e-170 or 1e155), where the kernel's own sums (sumsq) rescale; ordinary data never comes here
            # but for exact zeros
            fused = self.kernel.sums(b)
            if isinstance(fused, Scaled):
                sums = fused
        if self.totals is None:
            self.totals = Sum(len(sums.mant) if isinstance(sums, Scaled) else sums.size)
        self.totals.add(sums)
        self.n += b.n
        if want_grad and grads is not None:
            self._add_grads(grads, b)
        if self.boot is not None:
            self._add_units(stats, b)
        if self.share_rows:
            self.last_rows = (b, stats, grads if want_grad else None)

    def _add_units(self, stats: list[Any], b: Batch) -> None:
        assert self.boot is not None
        rows_before = self.boot.buckets is None
        self.boot.add_stats(stats, b)
        if rows_before and self.boot.buckets is not None:  # now hashed blocks: the whole data's draw can start
            draw_ahead(BUCKETS, self.opts.bootstrap, self.opts.seed)

    def _add_grads(self, grads: dict[str, np.ndarray], b: Batch) -> None:
        assert self.grad is not None
        if len(grads) == 1:
            (g,) = grads.values()
        else:
            g = np.hstack([x.reshape(b.n, -1) for x in grads.values()])
            for role, x in grads.items():
                gs = self.grad_by_role.setdefault(role, GradSummary(self.kernel.ctx.rows_bound, self.kernel.ctx.top_keep,
                                                                    sample=self.kernel.ctx.sample_grads))
                gs.update(x, b.row_keys)
        self.grad.update(g, b.row_keys)

    def update2(self, b: Batch) -> None:
        if b.n == 0 or self.grad is None:
            return
        if self._final is None:
            self._final = self.totals.value if self.totals is not None else np.zeros(0)
        self._add_grads(self.kernel.grad2(b, self._final, self.n), b)

    def merge(self, other: State) -> None:
        assert isinstance(other, DecomposableState)
        if self.totals is not None and other.totals is not None and self.totals.s.size != other.totals.s.size:
            raise ValueError(f"{other.totals.s.size} sums where the other shard has {self.totals.s.size} "
                             "(shards with a different number of classes or columns?)")
        for attr in getattr(self.kernel, "state_attrs", ()):  # what the kernel learnt from the data
            mine, theirs = getattr(self.kernel, attr, None), getattr(other.kernel, attr, None)
            if mine is None:
                setattr(self.kernel, attr, theirs)
            elif theirs is not None and theirs != mine:
                raise ValueError(f"the shards disagree on {attr} ({mine!r} and {theirs!r}), which one run would refuse")
        if other.totals is not None:
            if self.totals is None:
                self.totals = Sum(other.totals.s.size)
            self.totals.merge(other.totals)
        self.n += other.n
        if self.grad is not None and other.grad is not None:
            self.grad.merge(other.grad)
            for role, gs in other.grad_by_role.items():
                self.grad_by_role.setdefault(role, GradSummary(gs.rows_bound)).merge(gs)
        if self.boot is not None and other.boot is not None:
            self.boot.merge(other.boot)

    @property
    def unmergeable_reason(self) -> str | None:  # type: ignore[override]
        if self.two_pass:
            return (f"with --grad, the gradient of {type(self.kernel).__name__} needs a second pass over the whole "
                    "data, which a shard cannot do; emit the state without --grad")
        if self.kernel.needs_prepass:
            return "this loss needs whole-data facts (balanced class weights): give the weights explicitly"
        return None

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_final"] = None  # the second pass's copy of the totals, remade from them
        d.pop("share_rows", None)  # (the slices' scratch: not part of the state)
        d.pop("last_rows", None)
        return d

    def to_dict(self) -> dict[str, Any]:
        reason = self.unmergeable_reason
        if reason is not None:
            raise UsageError(f"--emit-state: {reason}")
        return {
            "kind": "decomposable",
            "n": self.n,
            "totals": self.totals.to_dict() if self.totals is not None else None,
            "grad": self.grad.to_dict() if self.grad is not None else None,
            "grad_by_role": {r: g.to_dict() for r, g in self.grad_by_role.items()},
            "boot": self.boot.to_dict() if self.boot is not None else None,
            # facts a kernel learnt from the data (Kernel.state_attrs: JSON scalars, e.g. whether a target was bound)
            "kernel": {a: getattr(self.kernel, a, None) for a in getattr(self.kernel, "state_attrs", ())},
        }

    def load(self, d: dict[str, Any]) -> "DecomposableState":
        """Restore a state written by ``to_dict``; a damaged one raises KeyError/TypeError/ValueError."""
        if not isinstance(d, dict):
            raise TypeError(f"a JSON object expected, got {_json_type(d)}")
        if d.get("kind") != "decomposable":
            raise ValueError(f"kind {d.get('kind')!r} is not 'decomposable'")
        self.n = _count(d["n"], "n")
        self.totals = _load_sum(d["totals"], "totals") if d["totals"] is not None else None
        if (self.totals is None) != (self.n == 0):
            raise ValueError(f"n = {self.n} does not fit totals = {d['totals']!r:.40}")
        size = self.totals.s.size if self.totals is not None else None
        if (d["grad"] is not None) != (self.grad is not None):
            raise ValueError("gradient summary " + ("missing although the shard was evaluated with --grad"
                                                    if self.grad is not None else "present without --grad"))
        if d["grad"] is not None:
            self.grad = _load_grad(d["grad"], "grad")
        if not isinstance(d["grad_by_role"], dict):
            raise TypeError(f"grad_by_role: a JSON object expected, got {_json_type(d['grad_by_role'])}")
        self.grad_by_role = {r: _load_grad(g, f"grad_by_role.{r}") for r, g in d["grad_by_role"].items()}
        if (d["boot"] is not None) != (self.boot is not None):
            raise ValueError("bootstrap units " + ("missing although the shard was evaluated with --ci"
                                                   if self.boot is not None else "present without --ci"))
        if d["boot"] is not None:
            self.boot = _load_boot(d["boot"], size)
        kd = d.get("kernel") or {}
        if not isinstance(kd, dict):
            raise TypeError(f"kernel: a JSON object expected, got {_json_type(kd)}")
        for attr in getattr(self.kernel, "state_attrs", ()):
            v = kd.get(attr)
            if v is not None and not isinstance(v, (bool, int, float, str)):
                raise TypeError(f"kernel.{attr}: a JSON scalar expected, got {_json_type(v)}")
            setattr(self.kernel, attr, v)
        return self

    def final_totals(self) -> np.ndarray:
        return self.totals.value if self.totals is not None else np.zeros(0)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n}
        if self.n == 0 or self.totals is None:
            out["value"] = math.nan
            return out
        totals = self.totals.value
        k = self.kernel
        scaled = self.totals.scaled  # a sum beyond the double range: the value from mantissas and exponents
        if self.opts.reduction == "sum":
            out["value"] = k.reduce_sum(totals)
        elif scaled:
            out["value"] = k.value_parts(*self.totals.parts())
        else:
            out["value"] = float(k.value(totals))
        extra = k.extra(totals)
        if extra:
            out["extra"] = extra
        if scaled and self.boot is not None:
            out.setdefault("notes", []).append(
                "no bootstrap interval: its sums leave the double range (the value is rescaled, the resamples are not)")
        if self.grad is not None:
            scale = 1.0 if k.two_pass_grad else (k.grad_scale_parts(*self.totals.parts(), self.n) if scaled
                                                 else k.grad_scale(totals, self.n))
            out["grad"] = self.grad.result(scale)
            out["grad_sample"] = self.grad.sample(scale)
            for gs in (self.grad, *self.grad_by_role.values()):
                if not gs.top1_exact():
                    out.setdefault("notes", []).append(gs.top1_note())
                    break
            if self.grad_by_role:
                out["grad_by_role"] = {r: gs.result(scale) for r, gs in self.grad_by_role.items()}
        return out

    def boot_fn(self) -> Callable[[np.ndarray], np.ndarray]:
        k = self.kernel
        if self.totals is not None and self.totals.scaled:  # per-row statistics over- or underflowed: no interval
            return lambda t: np.full(np.shape(t)[:-1], math.nan)
        if self.opts.reduction == "sum":
            return lambda t: t[..., 0]
        return lambda t: np.asarray(k.value(t), dtype=float)


# ------------------------------------------------------------------ state-file checks


def _json_type(x: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(x), "a number")


def _count(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        raise ValueError(f"{what} must be a whole number ≥ 0, got {x!r:.40}")
    return x


def _floats(x: Any, what: str, ndim: int = 1) -> np.ndarray:
    if not isinstance(x, list):
        raise TypeError(f"{what}: an array of numbers expected, got {_json_type(x)}")
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: an array of numbers expected") from None
    if a.ndim != ndim and not (a.size == 0 and ndim > 1):
        raise ValueError(f"{what}: an array of {ndim} dimension{'s' if ndim > 1 else ''} expected")
    # no booleans or digit strings, which asarray would take as numbers (the types in C: a merge reads millions)
    values = itertools.chain.from_iterable(x) if ndim > 1 and a.ndim == ndim else x
    if any(issubclass(t, (bool, str)) for t in set(map(type, values))):
        raise ValueError(f"{what}: an array of numbers expected")
    return a


def _load_sum(d: Any, what: str) -> Sum:
    if not isinstance(d, dict):
        raise TypeError(f"{what}: a JSON object expected, got {_json_type(d)}")
    s, c = _floats(d["s"], f"{what}.s"), _floats(d["c"], f"{what}.c")
    if s.size != c.size or s.size == 0:
        raise ValueError(f"{what}: s and c must be arrays of the same, non-zero length")
    e = d.get("e")
    if e is not None and (not isinstance(e, list) or len(e) != s.size
                          or any(isinstance(x, bool) or not isinstance(x, int) or abs(x) > 1 << 20 for x in e)):
        raise ValueError(f"{what}.e must hold one binary exponent (a whole number) per sum")
    return Sum.from_dict({"s": s.tolist(), "c": c.tolist(), "e": e})


def _load_grad(d: Any, what: str) -> GradSummary:
    if not isinstance(d, dict):
        raise TypeError(f"{what}: a JSON object expected, got {_json_type(d)}")
    for k in ("rows", "elems", "zero_rows"):
        _count(d[k], f"{what}.{k}")
    for k in ("mean", "m2", "min", "max", "dropped_max", *(("floor",) if "floor" in d else ())):
        if isinstance(d[k], bool) or not isinstance(d[k], (int, float)):
            raise ValueError(f"{what}.{k} must be a number, got {d[k]!r:.40}")
    if "floor" in d:
        _count(d["at_floor"], f"{what}.at_floor")
    if "exp" in d and (isinstance(d["exp"], bool) or not isinstance(d["exp"], int) or abs(d["exp"]) > 1 << 20):
        raise ValueError(f"{what}.exp must be a whole number, got {d['exp']!r:.40}")
    if d["rows_bound"] is not None:
        _count(d["rows_bound"], f"{what}.rows_bound")
    if "keep_factor" in d and (_count(d["keep_factor"], f"{what}.keep_factor") < 1):
        raise ValueError(f"{what}.keep_factor must be at least 1")
    _load_sum(d["sums"], f"{what}.sums")
    _floats(d["top"], f"{what}.top")
    keys = d["sample_key"]
    if not isinstance(keys, list) or any(isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < 1 << 64
                                         for k in keys):
        raise ValueError(f"{what}.sample_key must be an array of row hashes (whole numbers in [0, 2⁶⁴))")
    if len(_floats(d["sample_val"], f"{what}.sample_val")) != len(keys):
        raise ValueError(f"{what}: sample_key and sample_val differ in length")
    return GradSummary.from_dict(d)


def _load_boot(d: Any, size: int | None) -> BootUnits:
    if not isinstance(d, dict):
        raise TypeError(f"boot: a JSON object expected, got {_json_type(d)}")
    count = _count(d["count"], "boot.count")
    if "buckets" in d:
        b = _floats(d["buckets"], "boot.buckets", 2)
        if b.shape[0] != BUCKETS or (size is not None and b.shape[1] != size):
            raise ValueError(f"boot.buckets must be {BUCKETS} rows of {size} sums")
        return BootUnits.from_dict(d)
    rows, idx = d["rows"], d["idx"]
    if not isinstance(rows, list) or not isinstance(idx, list) or len(rows) != len(idx):
        raise ValueError("boot.rows and boot.idx must be arrays of the same length")
    total = 0
    for m, x in zip(rows, idx):
        a = _floats(m, "boot.rows", 2)
        if a.shape[0] and size is not None and a.shape[1] != size:
            raise ValueError(f"boot.rows: rows of {size} statistics expected, got {a.shape[1]}")
        if not isinstance(x, list) or len(x) != a.shape[0] or any(
                isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < 1 << 64 for i in x):
            raise ValueError("boot.idx must hold one row index (a whole number ≥ 0) per row of boot.rows")
        total += a.shape[0]
    if total != count:
        raise ValueError(f"boot.count is {count} but boot.rows holds {total} rows")
    return BootUnits.from_dict(d)
