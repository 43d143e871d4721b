"""Slices (``--by COL``, crosses of several ``--by`` columns), vectorised.

Each batch's key columns are factorised once (:class:`Factor`: codes per row and the
batch's distinct values), the codes of a cross of several columns combined into one, and
mapped to global group ids kept across batches (:class:`Keys`; a missing value, null or
NaN, is the value ``None``: a group of its own). A decomposable loss's per-row statistics
are computed once for the whole batch and scatter-added with ``np.bincount`` into one
groups × statistics table of Neumaier-compensated sums (:class:`GroupSums`), as accurate
as the ungrouped sums: at most :data:`CHUNK` rows are added sequentially into one partial
(the ungrouped path's BLAS dots run over 4,096 elements), the partials of a group's chunks
pairwise, and the batches' sums into the table with compensation.

A per-group path is kept where a statistic needs it: states that are not sums of per-row
terms (mined triplets, Wasserstein, segmentation), the gradient summaries (their top-1%
candidates and hashed samples) with ``--grad``, and the bootstrap units with ``--ci``.
Those are fed the group's rows of the batch (one stable sort of the codes per batch),
never a state update per group for the sums.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from lossctl.accumulate import GradSummary, Sum, _overflowed

CHUNK_BITS = 12
CHUNK = 1 << CHUNK_BITS  # rows added sequentially into one partial sum at most
DENSE = 1 << 16  # integer keys spanning at most max(DENSE, 2n) values are coded by subtraction

# the vectorised path; False runs every job through the per-group states (the tests' reference)
VECTORISE = True


# ------------------------------------------------------------------ keys


class Factor:
    """One batch's key column: ``codes`` (n,) in [0, len(uniques)) and the values they stand
    for (an int64 array, or a list of Python values with None for a missing value). Not every
    value need occur (a Parquet dictionary holds its row group's values)."""

    __slots__ = ("codes", "uniques")

    def __init__(self, codes: np.ndarray, uniques: np.ndarray | list) -> None:
        self.codes = codes
        self.uniques = uniques

    def __getitem__(self, keep: np.ndarray) -> "Factor":
        return Factor(self.codes[keep], self.uniques)

    def __len__(self) -> int:
        return int(self.codes.shape[0])


def dense_or_none(v: np.ndarray) -> Factor | None:
    """Integer keys coded by subtracting the smallest, where they span few values."""
    n = v.shape[0]
    if n == 0:
        return Factor(np.empty(0, dtype=np.intp), np.empty(0, dtype=np.int64))
    lo, hi = int(v.min()), int(v.max())
    if hi - lo > max(DENSE, 2 * n):
        return None
    codes = (v - lo).astype(np.intp, copy=False) if lo else v.astype(np.intp, copy=False)
    return Factor(codes, np.arange(lo, hi + 1, dtype=np.int64))


def first_seen(ids: np.ndarray) -> Factor:
    """A column of ids (numbers or strings) factorised with its values in the order first seen."""
    ids = np.asarray(ids)
    uniq, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    perm = np.argsort(first, kind="stable")
    rank = np.empty(perm.size, dtype=np.intp)
    rank[perm] = np.arange(perm.size)
    vals = uniq[perm]
    return Factor(rank[inv.reshape(-1)], vals.astype(np.int64) if vals.dtype.kind == "i" else vals.tolist())


class KeyIndex:
    """Global codes of one key column's values, by Python equality (1, 1.0 and True are one
    value, as dict keys are); int64 values are looked up vectorised in a sorted table, and
    while every value is such an integer, new ones are added without a dict."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}  # value → code, for values[:_indexed]
        self.values: list[Any] = []
        self._indexed = 0
        self._ints_only = True  # every value came from an int64 lookup: distinct ints
        self._ik = np.empty(0, dtype=np.int64)  # int values seen, sorted
        self._ic = np.empty(0, dtype=np.intp)  # their codes
        self.mixed = False  # some int in the table has a group whose value is 1.0 or True

    def lookup(self, uniques: np.ndarray | list) -> np.ndarray:
        if isinstance(uniques, np.ndarray) and uniques.dtype == np.int64:
            return self._lookup_int(uniques)
        vals = uniques.tolist() if isinstance(uniques, np.ndarray) else uniques
        ints = [i for i, v in enumerate(vals) if type(v) is int and -(1 << 63) <= v < 1 << 63]
        if not ints or len(ints) == len(vals):
            return self._lookup_int(np.array(vals, dtype=np.int64)) if ints else self._lookup_py(vals)
        # integers and other values (an integer column with a null): the integers by the table
        out = np.empty(len(vals), dtype=np.intp)
        pos = np.array(ints, dtype=np.intp)
        out[pos] = self._lookup_int(np.array([vals[i] for i in ints], dtype=np.int64))
        rest = np.ones(len(vals), dtype=bool)
        rest[pos] = False
        other = np.flatnonzero(rest)
        out[other] = self._lookup_py([vals[i] for i in other.tolist()])
        return out

    def _lookup_py(self, vals: list) -> np.ndarray:
        index, values = self.index, self.values
        for i in range(self._indexed, len(values)):
            index.setdefault(values[i], i)
        self._ints_only = False
        out = []
        for v in vals:
            c = index.get(v)
            if c is None:
                c = index[v] = len(values)
                values.append(v)
            out.append(c)
        self._indexed = len(values)
        return np.array(out, dtype=np.intp)

    def _lookup_int(self, u: np.ndarray) -> np.ndarray:
        keys = self._ik
        out = np.empty(u.size, dtype=np.intp)
        if keys.size:
            pos = np.minimum(np.searchsorted(keys, u), keys.size - 1)
            hit = keys[pos] == u
            out[hit] = self._ic[pos[hit]]
            miss = np.flatnonzero(~hit)
        else:
            miss = np.arange(u.size)
        if miss.size:
            if self._ints_only:  # distinct ints never seen: new codes
                codes = np.arange(len(self.values), len(self.values) + miss.size, dtype=np.intp)
                self.values.extend(u[miss].tolist())
            else:  # (a value seen as 1.0 or True keeps its code)
                codes = self._lookup_py(u[miss].tolist())
                self._ints_only = False
                values = self.values
                if not self.mixed and not all(type(values[c]) is int for c in codes.tolist()):
                    self.mixed = True  # the table holds an integer whose group's value is not one
            out[miss] = codes
            k = np.concatenate([keys, u[miss]])
            c = np.concatenate([self._ic, codes])
            o = np.argsort(k, kind="stable")
            self._ik, self._ic = k[o], c[o]
        return out


def compact(code: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes in [0, size) renumbered 0..m−1: (new codes, the old code of each, counts)."""
    n = code.shape[0]
    if size <= max(4 * n, DENSE):
        cnt = np.bincount(code, minlength=size)
        present = np.flatnonzero(cnt)
        remap = np.empty(size, dtype=np.intp)
        remap[present] = np.arange(present.size)
        return remap[code], present, cnt[present]
    old, inv, cnt = np.unique(code, return_inverse=True, return_counts=True)
    return inv.reshape(-1).astype(np.intp, copy=False), old, cnt


class Keys:
    """Group ids across batches for the --by columns (one, or a cross of several)."""

    def __init__(self, ncols: int) -> None:
        self.cols = [KeyIndex() for _ in range(ncols)]
        self.cross: dict[tuple, int] = {}
        self.members: list[tuple[int, ...]] = []  # a cross's group → each column's code

    @property
    def size(self) -> int:
        return len(self.cols[0].values) if len(self.cols) == 1 else len(self.members)

    def key(self, g: int) -> tuple:
        if len(self.cols) == 1:
            return (self.cols[0].values[g],)
        return tuple(c.values[i] for c, i in zip(self.cols, self.members[g]))

    def values(self) -> list[Any]:
        """Every group's value by group id: the value, or for a cross a list of values."""
        if len(self.cols) == 1:
            return self.cols[0].values
        return [list(k) for k in self.keys()]

    def keys(self) -> list[tuple]:
        """Every group's key (a tuple of values), by group id."""
        cached = getattr(self, "_keys", None)
        if cached is not None and len(cached) == self.size:
            return cached
        if len(self.cols) == 1:
            out = [(v,) for v in self.cols[0].values]
        else:
            out = [self.key(g) for g in range(len(self.members))]
        self._keys = out
        return out

    def _column(self, ki: KeyIndex, f: Factor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes, global code of each local code or −1 where absent, counts) of one column."""
        size = len(f.uniques)
        counts = np.bincount(f.codes, minlength=size)
        present = np.flatnonzero(counts)
        g = np.full(size, -1, dtype=np.intp)
        if present.size == size:
            g[:] = ki.lookup(f.uniques)
        else:
            u = f.uniques[present] if isinstance(f.uniques, np.ndarray) else [f.uniques[i] for i in present]
            g[present] = ki.lookup(u)
        return f.codes, g, counts

    def batch(self, factors: Sequence[Factor]) -> "BatchGroups":
        n = len(factors[0])
        if len(factors) == 1:
            codes, g, counts = self._column(self.cols[0], factors[0])
            present = np.flatnonzero(counts)
            gp = g[present]
            if gp.size > 1 and not (isinstance(factors[0].uniques, np.ndarray) and factors[0].uniques.dtype == np.int64):
                s = np.sort(gp)
                if (s[1:] == s[:-1]).any():  # values equal in Python (0.0 and −0.0, NaN and null): one group
                    table = np.full(g.size, -1, dtype=np.intp)
                    uniq, inv = np.unique(gp, return_inverse=True)
                    table[present] = inv.reshape(-1)
                    codes = table[codes]
                    return BatchGroups(codes, uniq.astype(np.intp), np.bincount(codes, minlength=uniq.size), n)
            return BatchGroups(codes, g, counts, n)
        # a cross: each column's global codes per row, combined in mixed radix, renumbered
        per_row = []
        for ki, f in zip(self.cols, factors):
            codes, g, _ = self._column(ki, f)
            per_row.append(g[codes])
        sizes = [len(ki.values) for ki in self.cols]
        if math.prod(sizes) < 1 << 62:
            comb = per_row[0].astype(np.int64)
            for r, s in zip(per_row[1:], sizes[1:]):
                comb = comb * s + r
            codes, old, counts = compact(comb, math.prod(sizes))
            parts = []
            for s in reversed(sizes[1:]):
                old, rem = np.divmod(old, s)
                parts.append(rem)
            parts.append(old)
            members = np.column_stack(parts[::-1]).tolist()
        else:  # (beyond 2^62 combinations) rows of codes, sorted
            mat = np.column_stack(per_row)
            old, inv, counts = np.unique(mat, axis=0, return_inverse=True, return_counts=True)
            codes = inv.reshape(-1).astype(np.intp)
            members = old.tolist()
        gids = np.empty(len(members), dtype=np.intp)
        cross = self.cross
        for i, m in enumerate(members):
            t = tuple(m)
            c = cross.get(t)
            if c is None:
                c = cross[t] = len(self.members)
                self.members.append(t)
            gids[i] = c
        return BatchGroups(codes, gids, counts, n)


# ------------------------------------------------------------------ one batch's groups

_CHUNK_IDS: np.ndarray = np.empty(0, dtype=np.intp)


def _chunk_ids(n: int) -> np.ndarray:
    global _CHUNK_IDS
    if _CHUNK_IDS.size < n:
        _CHUNK_IDS = np.arange(max(n, 1 << 17), dtype=np.intp) >> CHUNK_BITS
    return _CHUNK_IDS[:n]


_CHUNK_BASES: dict[int, np.ndarray] = {}


def _chunk_base(n: int, groups: int) -> np.ndarray:
    """Each row's chunk id times ``groups`` (kept for the few group counts seen last)."""
    base = _CHUNK_BASES.get(groups)
    if base is None or base.size < n:
        if len(_CHUNK_BASES) >= 8:
            _CHUNK_BASES.clear()
        base = _CHUNK_BASES[groups] = _chunk_ids(max(n, 1 << 17)) * groups
    return base[:n]


class BatchGroups:
    """The groups of one batch: local ``codes`` (n,) in [0, L), each local code's global
    group id (``gids``; −1 where it does not occur) and row count."""

    def __init__(self, codes: np.ndarray, gids: np.ndarray, counts: np.ndarray, n: int) -> None:
        self.codes = codes
        self.gids = gids
        self.counts = counts
        self.n = n
        self.L = int(gids.size)
        self.present = np.flatnonzero(counts)
        self._plan: tuple | None = None
        self._order: tuple[np.ndarray, np.ndarray] | None = None

    def _slots(self) -> tuple:
        """Each row's slot for bincount: its group's, or, for a group of more than CHUNK rows
        in this batch, its group's slot for its chunk of CHUNK rows (so that no partial sum
        adds more than CHUNK rows sequentially)."""
        if self._plan is None:
            heavy = self.counts > CHUNK
            if self.L <= 1 or not heavy.any():
                self._plan = (self.codes, self.L, None, 0, 0)
            else:
                nch = -(-self.n // CHUNK)
                ch = _chunk_ids(self.n)
                hidx = np.flatnonzero(heavy)
                if hidx.size == self.L:  # chunk by chunk, each chunk's L slots (one pass to make)
                    slots = self.codes + _chunk_base(self.n, self.L)
                    self._plan = (slots, self.L * nch, hidx, nch, 0)
                else:
                    rank = np.cumsum(heavy) - 1
                    slots = np.where(heavy[self.codes], self.L + rank[self.codes] * nch + ch, self.codes)
                    self._plan = (slots, self.L + hidx.size * nch, hidx, nch, self.L)
        return self._plan

    def sums(self, col: np.ndarray) -> np.ndarray:
        """Σ col over each local group's rows, (L,)."""
        if self.L == 1:
            return np.array([np.sum(col)], dtype=float)
        slots, width, hidx, nch, base = self._slots()
        s = np.bincount(slots, weights=col, minlength=width)
        if hidx is None:
            return s
        if base == 0:  # every group heavy: its chunks' partials (a row per group), pairwise
            return np.ascontiguousarray(s.reshape(nch, self.L).T).sum(axis=1)
        out = s[:self.L].copy()
        out[hidx] = s[base:].reshape(hidx.size, nch).sum(axis=1)
        return out

    def order(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows sorted by group (stable: each group's rows keep their order), and where
        each local group's rows start."""
        if self._order is None:
            order = np.argsort(self.codes, kind="stable")
            starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.intp)
            self._order = (order, starts)
        return self._order

    def split(self) -> Iterator[tuple[int, np.ndarray]]:
        """(global group id, the batch's rows of that group) for every group present."""
        order, starts = self.order()
        for i in self.present.tolist():
            s = int(starts[i])
            yield int(self.gids[i]), order[s:s + int(self.counts[i])]


# ------------------------------------------------------------------ the table


class GroupSums:
    """Neumaier-compensated sums of ``width`` statistics per group: (s + c)·2ᵉ per cell, as
    :class:`lossctl.accumulate.Sum` holds them (e only where a sum left the double range).
    Stored statistic by statistic, (width, groups): gathering and scattering a batch's groups
    is then one-dimensional, 40 times faster than by rows of a (groups, width) array."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.s = np.zeros((width, 0))
        self.c = np.zeros((width, 0))
        self.e: np.ndarray | None = None

    def _grow(self, size: int) -> None:
        if self.s.shape[1] >= size:
            return
        cap = max(size, 2 * self.s.shape[1], 16)
        for name in ("s", "c", "e"):
            old = getattr(self, name)
            if old is None:
                continue
            new = np.zeros((self.width, cap), dtype=old.dtype)
            new[:, : old.shape[1]] = old
            setattr(self, name, new)

    def add(self, rows: np.ndarray, x: np.ndarray, e: np.ndarray | None = None) -> None:
        """Add x (m, width) into the distinct groups ``rows``."""
        if rows.size == 0:
            return
        self._grow(int(rows.max()) + 1)
        if e is None and self.e is None:  # (every statistic at once: the same operations, element by element)
            s, xt = self.s[:, rows], x.T
            with np.errstate(over="ignore"):
                t = s + xt
            if _overflowed(t, s, xt) is None:
                with np.errstate(invalid="ignore"):
                    self.c[:, rows] += np.where(np.abs(s) >= np.abs(xt), (s - t) + xt, (xt - t) + s)
                self.s[:, rows] = t
                return
            # a group's sum leaves the double range across batches: binary exponents from here on (Sum's)
        if self.e is None:
            self.e = np.zeros(self.s.shape, dtype=np.int64)
        tmp = Sum(rows.size * self.width)
        tmp.s, tmp.c, tmp.e = self.s[:, rows].ravel(), self.c[:, rows].ravel(), self.e[:, rows].ravel()
        tmp.add(x.T.ravel(), None if e is None else e.T.ravel())
        shape = (self.width, rows.size)
        self.s[:, rows], self.c[:, rows] = tmp.s.reshape(shape), tmp.c.reshape(shape)
        self.e[:, rows] = tmp.e.reshape(shape)

    def row(self, g: int) -> Sum:
        out = Sum(self.width)
        out.s, out.c = self.s[:, g].copy(), self.c[:, g].copy()
        if self.e is not None and self.e[:, g].any():
            out.e = self.e[:, g].copy()
        return out

    def values(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(the sums of groups 0..size−1 as doubles, (size, width); which groups' sums left
        the double range)."""
        s, c = self.s[:, :size], self.c[:, :size]
        with np.errstate(invalid="ignore"):
            v = np.where(np.isfinite(s), s + c, s)
        scaled = np.zeros(size, dtype=bool) if self.e is None else self.e[:, :size].any(axis=0)
        return np.ascontiguousarray(v.T), scaled


# ------------------------------------------------------------------ jobs


def _columns(stats: list[Any]) -> list[Any]:
    """The statistics as columns: (n,) arrays or float constants."""
    out: list[Any] = []
    for s in stats:
        if np.ndim(s) == 0:
            out.append(float(s))
        elif s.ndim == 1:
            out.append(s)
        else:
            out.extend(s[:, j] for j in range(s.shape[1]))
    return out


def group_sums(bg: BatchGroups, stats: list[Any]) -> np.ndarray:
    """Σ of each statistic over each local group's rows, (L, columns); as accurate as the
    ungrouped sums (see :meth:`BatchGroups.sums`)."""
    cols = _columns(stats)
    x = np.empty((bg.L, len(cols)))
    with np.errstate(over="ignore", invalid="ignore"):
        for j, col in enumerate(cols):
            x[:, j] = col * bg.counts if isinstance(col, float) else bg.sums(col)
    return x


class VectorJob:
    """A decomposable loss over every group: a GroupSums table, and per group only what
    needs a per-group path (gradient summaries, bootstrap units)."""

    def __init__(self, state: Any, opts: Any) -> None:
        self.kernel = state.kernel  # the overall state's kernel: validated, pre-passed
        self.overall = state  # whose update of the same batch leaves its per-row statistics
        state.share_rows = True
        self.opts = opts
        self.table: GroupSums | None = None
        self.grads: dict[int, GradSummary] = {}
        self.grads_by_role: dict[int, dict[str, GradSummary]] = {}
        self.boots: dict[int, Any] = {}

    def update(self, b: Any, bg: BatchGroups) -> None:
        k = self.kernel
        want_grad = bool(self.opts.grad)
        shared, self.overall.last_rows = self.overall.last_rows, None
        if shared is not None and shared[0] is b and (shared[2] is not None or not want_grad):
            stats, grads = shared[1], shared[2]
        else:
            stats, grads = k.stats(b, want_grad)
        cols = _columns(stats)
        x = group_sums(bg, stats)
        ex: np.ndarray | None = None
        p = bg.present
        xp = x[p]
        if not np.isfinite(xp).all():
            xp, ex = self._rescale(bg, cols, xp)
        if self.table is None:
            self.table = GroupSums(len(cols))
        self.table.add(bg.gids[p], xp, ex)
        if (want_grad and grads) or self.opts.ci:
            self._per_group(b, bg, stats, grads if want_grad else None)

    @staticmethod
    def _rescale(bg: BatchGroups, cols: list[Any], xp: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Group sums that overflowed although every term is finite, as Σ(x·2⁻ᵏ)·2ᵏ
        (as the engine's ``_scaled_sums``; never on ordinary data)."""
        exp = np.zeros(xp.shape, dtype=np.int64)
        for j, col in enumerate(cols):
            bad = np.isinf(xp[:, j])
            if isinstance(col, float) or not bad.any() or not np.isfinite(col).all():
                continue
            k = math.frexp(float(np.max(np.abs(col))))[1]
            with np.errstate(under="ignore"):
                sc = bg.sums(np.ldexp(col, -k))[bg.present]
            xp[bad, j] = sc[bad]
            exp[bad, j] = k
        return xp, (exp if exp.any() else None)

    def _per_group(self, b: Any, bg: BatchGroups, stats: list[Any], grads: dict | None) -> None:
        from lossctl.engine import BootUnits, _stats_matrix

        rows = b.row_indices()
        mat = _stats_matrix(stats, b.n) if self.opts.ci else None
        ctx = self.kernel.ctx
        for gid, idx in bg.split():
            keys = rows[idx]
            if grads:
                gs = self.grads.get(gid)
                if gs is None:
                    gs = self.grads[gid] = GradSummary(ctx.rows_bound, ctx.top_keep, sample=ctx.sample_grads)
                if len(grads) == 1:
                    (g,) = grads.values()
                    gs.update(g[idx], keys)
                else:
                    by_role = self.grads_by_role.setdefault(gid, {})
                    parts = []
                    for role, x in grads.items():
                        sub = x[idx]
                        parts.append(sub.reshape(sub.shape[0], -1))
                        r = by_role.get(role)
                        if r is None:
                            r = by_role[role] = GradSummary(ctx.rows_bound, ctx.top_keep, sample=ctx.sample_grads)
                        r.update(sub, keys)
                    gs.update(np.hstack(parts), keys)
            if mat is not None:
                bu = self.boots.get(gid)
                if bu is None:
                    bu = self.boots[gid] = BootUnits()
                bu.add(mat[idx], keys)

    def state(self, g: int, n: int) -> Any:
        """Group ``g``'s state, as the per-group path would hold it."""
        from lossctl.engine import DecomposableState

        st = DecomposableState(self.kernel, self.opts)
        st.n = n
        if self.table is not None:
            st.totals = self.table.row(g)
        if st.grad is not None:
            st.grad = self.grads.get(g) or st.grad
            st.grad_by_role = dict(self.grads_by_role.get(g, {}))
        if st.boot is not None:
            st.boot = self.boots.get(g) or st.boot
        return st


class GroupJob:
    """A loss whose state is not a table of sums: one state per group, fed its rows."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.states: dict[int, Any] = {}

    def update(self, b: Any, bg: BatchGroups, second: bool = False) -> None:
        for gid, idx in bg.split():
            st = self.states.get(gid)
            if st is None:
                st = self.states[gid] = self.factory()
            sub = b.take(idx)
            if second:
                if st.two_pass:
                    st.update2(sub)
            else:
                st.update(sub)

    def state(self, g: int, n: int) -> Any:
        st = self.states.get(g)
        return st if st is not None else self.factory()


def vectorisable(state: Any, opts: Any) -> bool:
    from lossctl.engine import DecomposableState

    return VECTORISE and type(state) is DecomposableState and not (opts.grad and state.kernel.two_pass_grad)


class Slices:
    """Every job's statistics for every group of the --by columns."""

    def __init__(self, ncols: int, states: Sequence[Any], factories: Sequence[Callable[[], Any]], opts: Any) -> None:
        self.keys = Keys(ncols)
        self.opts = opts
        self.jobs: list[VectorJob | GroupJob] = [
            VectorJob(s, opts) if vectorisable(s, opts) else GroupJob(f) for s, f in zip(states, factories)
        ]
        self.rows = np.zeros(0, dtype=np.int64)
        self.two_pass = False

    def update(self, jobs_b: Sequence[Any], factors: Sequence[Factor]) -> None:
        if not factors or not jobs_b or jobs_b[0].n == 0:
            return
        bg = self.keys.batch(factors)
        g = self.keys.size
        if self.rows.size < g:
            self.rows = np.concatenate([self.rows, np.zeros(max(g - self.rows.size, self.rows.size), dtype=np.int64)])
        self.rows[bg.gids[bg.present]] += bg.counts[bg.present]
        for job, b in zip(self.jobs, jobs_b):
            job.update(b, bg)
            if isinstance(job, GroupJob) and not self.two_pass and job.states:
                self.two_pass = next(iter(job.states.values())).two_pass  # (the same for every group)

    def update2(self, jobs_b: Sequence[Any], factors: Sequence[Factor]) -> None:
        """The second pass of two-pass gradients (per-group states only)."""
        if not factors or not jobs_b or jobs_b[0].n == 0:
            return
        bg = self.keys.batch(factors)
        for job, b in zip(self.jobs, jobs_b):
            if isinstance(job, GroupJob):
                job.update(b, bg, second=True)

    @property
    def size(self) -> int:
        return self.keys.size

    def states(self, g: int) -> list[Any]:
        n = int(self.rows[g])
        return [job.state(g, n) for job in self.jobs]

    def view(self) -> "GroupStates":
        return GroupStates(self)

    def rows_view(self) -> "GroupRows":
        return GroupRows(self)

    def index(self) -> dict[tuple, int]:
        """key → group id."""
        if getattr(self, "_ids", None) is None or len(self._ids) != self.size:
            self._ids = {k: i for i, k in enumerate(self.keys.keys())}
        return self._ids


class GroupRows(Mapping):
    """key → the group's row count."""

    def __init__(self, slices: Slices) -> None:
        self.slices = slices

    def __getitem__(self, key: tuple) -> int:
        return int(self.slices.rows[self.slices.index()[key]])

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.slices.index())

    def __len__(self) -> int:
        return self.slices.size


class GroupStates(Mapping):
    """key → [state per job], materialised on demand (state files, check's projections)."""

    def __init__(self, slices: Slices) -> None:
        self.slices = slices
        self._made: dict[int, list[Any]] = {}

    def _index(self) -> dict[tuple, int]:
        return self.slices.index()

    def __getitem__(self, key: tuple) -> list[Any]:
        g = self._index()[key]
        made = self._made.get(g)
        if made is None:
            made = self._made[g] = self.slices.states(g)
        return made

    def __iter__(self) -> Iterator[tuple]:
        return iter(self._index())

    def __len__(self) -> int:
        return self.slices.size
