"""Aligned Arrow batches → bound per-job Batches (roles to arrays), the NaN policy applied once, --by factors."""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

from lossctl.binding import Selector
from lossctl.engine import Batch
from lossctl.errors import InputError
from lossctl.align import arrow_batches, prefetch
from lossctl.arrays import fill_value, index_codes, label_array, labels_view, to_matrix, valid_mask
from lossctl.plan import Job, Plan


def _widen(a: np.ndarray, memo: dict[int, np.ndarray]) -> np.ndarray:
    if a.dtype != np.float32:
        return a
    out = memo.get(id(a))
    if out is None:
        out = memo[id(a)] = a.astype(np.float64)
    return out


class Feeder:
    """Turns aligned Arrow batches into per-job Batches, applying the NaN policy once."""

    def __init__(self, plan: Plan, inputs: Sequence[Any], row_offset: int = 0, input_offset: int = 0) -> None:
        self.plan = plan
        self.inputs = inputs
        self.info: dict[str, Any] = {}  # what reading learnt: the --key join's counts
        self.dropped = 0
        self.rows = row_offset  # global index of the next row (shards start where the previous ended)
        self.weight_total = 0.0
        self.row_offset = row_offset
        self.offset_in = input_offset  # input rows before this one (a fragment of a dataset: its first row's)

    def batches(self) -> Iterator[tuple[list[Batch], list[np.ndarray], np.ndarray | None]]:
        """Per aligned batch: one Batch per job, the --by columns' values, the --id values."""
        reader = prefetch(arrow_batches(self.plan, self.inputs, self.info))
        try:
            yield from self._convert(reader)
        finally:
            reader.close()  # stops and joins the reader thread, also on errors

    def _convert(self, reader: Iterator[list[Any]]) -> Iterator[tuple[list[Batch], list[np.ndarray], np.ndarray | None]]:
        plan = self.plan
        req = plan.request
        names = list(plan.source_names)
        for parts in reader:
            n_in = parts[0].num_rows
            cache: dict[tuple[int, tuple[str, ...], bool], np.ndarray] = {}

            def arr(sel: Selector) -> np.ndarray:
                k = (sel.src, tuple(sel.columns), sel.list_column)
                if k not in cache:
                    rb = parts[sel.src]
                    cache[k] = to_matrix([rb.column(c) for c in sel.columns], sel, names[sel.src], self.offset_in)
                return cache[k]

            cat_cache: dict[tuple[int, str], np.ndarray] = {}

            def cat(sel: Selector) -> np.ndarray:
                k = (sel.src, sel.columns[0])
                if k not in cat_cache:
                    cat_cache[k] = self._categorical(parts[sel.src], sel)
                return cat_cache[k]

            per_job = [
                {role: (cat(sel) if self._is_cat(job, role) else arr(sel)) for role, sel in job.binding.roles.items()}
                for job in plan.jobs
            ]
            weight = arr(plan.weight) if plan.weight else None
            for a_sel, b_sel, categorical in plan.equal:  # before --nan drop: every row is compared
                self._same(a_sel, b_sel, (cat if categorical else arr))
            # non-finite values: one mask over every numeric column in use
            bad = None
            for key, a in cache.items():
                # a finite sum proves every value finite: one pass, no temporary (+inf and −inf sum to NaN: no warning)
                if a.dtype.kind != "f":
                    continue
                with np.errstate(invalid="ignore", over="ignore"):
                    if np.isfinite(np.sum(a)):
                        continue
                m = ~np.isfinite(a)
                if a.ndim > 1:
                    m = m.any(axis=1)
                if m.any():  # (a sum can overflow to inf with every value finite)
                    if req.nan == "error":
                        i = int(np.flatnonzero(m)[0])
                        col_idx = 0
                        row = a[i]
                        if a.ndim > 1:
                            col_idx = int(np.flatnonzero(~np.isfinite(row))[0])
                            v = row[col_idx]
                        else:
                            v = row
                        src_i, cols, _ = key
                        col = cols[col_idx] if len(cols) > col_idx else cols[0]
                        what = "missing value" if np.isnan(v) else "infinite value"
                        raise InputError.at(
                            f"{what} (use --nan drop to skip such rows)",
                            source=names[src_i], column=col, row=self.offset_in + i + 1,
                            value=None if np.isnan(v) else float(v), count=int(m.sum()),
                        )
                    bad = m if bad is None else (bad | m)
            by_vals = [self._by_factor(parts[s.src], s) for s in plan.by]
            ids = self._categorical(parts[plan.id.src], plan.id) if plan.id else None
            keep = None
            if bad is not None:
                keep = ~bad
                self.dropped += int(bad.sum())
                per_job = [{r: a[keep] for r, a in d.items()} for d in per_job]
                weight = weight[keep] if weight is not None else None
                by_vals = [v[keep] for v in by_vals]
                ids = ids[keep] if ids is not None else None
            # float32 columns are read as float32 (the file's data is never doubled);
            # each batch is widened here so that the maths and the sums are float64
            widened: dict[int, np.ndarray] = {}
            per_job = [{r: _widen(a, widened) for r, a in d.items()} for d in per_job]
            if weight is not None:
                weight = _widen(weight, widened)
            n = n_in - (int(bad.sum()) if bad is not None else 0)
            offset = self.rows
            if weight is not None and n:
                neg = weight < 0
                if neg.any():
                    i = int(np.flatnonzero(neg)[0])
                    raise InputError.at(
                        "negative weight", source=names[plan.weight.src], column=plan.weight.columns[0],
                        row=self._input_row(i, keep), value=float(weight[i]),
                    )
                self.weight_total += float(np.sum(weight))
            jobs_b = []
            memo: dict = {}
            for job, d in zip(plan.jobs, per_job):
                src_name = names[next(iter(job.binding.roles.values())).src] if len(names) > 1 else names[0]
                b = Batch(d, n, weight, offset, src_name, {r: s.text for r, s in job.binding.roles.items()},
                          input_start=self.offset_in, keep=keep, memo=memo,
                          column_names={r: s.columns for r, s in job.binding.roles.items()})
                jobs_b.append(b)
            self.rows += n
            self.offset_in += n_in
            yield jobs_b, by_vals, ids

    def _same(self, a_sel: Selector, b_sel: Selector, read: Callable[[Selector], np.ndarray]) -> None:
        """A column that two files both hold (the baseline file's target) must agree row by row."""
        a, b = read(a_sel), read(b_sel)
        same = (a == b) | ((a != a) & (b != b)) if a.dtype.kind == "f" and b.dtype.kind == "f" else (a == b)
        if np.all(same):
            return
        bad = ~same if same.ndim == 1 else ~same.all(axis=1)
        i = int(np.flatnonzero(bad)[0])
        j = int(np.flatnonzero(~same[i])[0]) if same.ndim > 1 else 0
        va, vb = (a[i, j], b[i, j]) if same.ndim > 1 else (a[i], b[i])
        va, vb = (v.item() if hasattr(v, "item") else v for v in (va, vb))
        names = self.plan.source_names
        raise InputError.at(
            f"the baseline's target differs from {names[a_sel.src]}'s ({va!r} there); the baseline must "
            "hold predictions for the same rows (--key COL aligns them by a key)",
            source=names[b_sel.src], column=b_sel.columns[j], row=self.offset_in + i + 1, value=vb,
            count=int(bad.sum()),
        )

    @staticmethod
    def _is_cat(job: Job, role: str) -> bool:
        return any(r.name == role and r.categorical for r in job.call.spec.roles)

    def _input_row(self, i: int, keep: np.ndarray | None) -> int:
        if keep is None:
            return self.offset_in + i + 1
        return self.offset_in + int(np.flatnonzero(keep)[i]) + 1

    def _by_factor(self, rb: Any, sel: Selector) -> Any:
        """A --by column factorised (:class:`lossctl.slices.Factor`): codes per row and the
        values they stand for, as :meth:`_categorical` reads them (a missing value, null or
        NaN, is None). The values are converted once per distinct value, not per row; an
        integer column spanning few values is coded by subtraction, a dictionary column by
        its indices."""
        import pyarrow as pa

        from lossctl.slices import Factor, dense_or_none

        col = rb.column(sel.columns[0])
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        t = col.type
        if pa.types.is_integer(t) and not col.null_count and not pa.types.is_uint64(t):
            f = dense_or_none(labels_view(col))
            if f is not None:
                return f
        if pa.types.is_dictionary(t):
            idx, dictionary = col.indices, col.dictionary
        else:  # (decimals, dates, extension types … as their text first: what dictionary_encode takes)
            enc = label_array(col, "--by", self.plan.source_names[sel.src], sel.columns[0]).dictionary_encode()
            idx, dictionary = enc.indices, enc.dictionary
        values = self._by_values(dictionary, sel)
        codes = index_codes(idx)
        if idx.null_count:
            codes[~valid_mask(idx)] = len(values)
            values = values + [None]
        return Factor(codes, values)

    def _by_values(self, dictionary: Any, sel: Selector) -> list:
        """The distinct values of a --by column as Python values (:meth:`_categorical`'s
        conversions), cached for a dictionary that the next batches share."""
        key = (sel.src, sel.columns[0])
        cache = self.__dict__.setdefault("_by_cache", {})
        hit = cache.get(key)
        if hit is not None and len(hit[0]) == len(dictionary) and hit[0].equals(dictionary):
            return list(hit[1])
        import pyarrow as pa

        plan = self.plan
        source = plan.source_names[sel.src]
        t = dictionary.type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
            out = dictionary.to_pylist()  # (as labels_view reads them; without importing pyarrow.compute)
            cache[key] = (dictionary, out)
            return list(out)
        arr = label_array(dictionary, "--by", source, sel.columns[0])
        missing = np.asarray(arr.is_null()) if arr.null_count else None
        if arr.null_count:
            arr = arr.fill_null(fill_value(arr.type))
        vals = labels_view(arr)
        if vals.dtype.kind == "f":
            nan = np.isnan(vals)
            missing = nan if missing is None else (missing | nan)
            finite = vals[~missing]
            if plan.source_formats[sel.src] in ("csv", "tsv", "jsonl") and np.all(np.isfinite(finite)) \
                    and np.all(finite == np.round(finite)):
                vals = np.where(missing, 0, vals).astype(np.int64)
        out = vals.tolist()
        if missing is not None and missing.any():
            for i in np.flatnonzero(missing).tolist():
                out[i] = None
        cache[key] = (dictionary, out)
        return list(out)

    def _categorical(self, rb: Any, sel: Selector) -> np.ndarray:
        """A label column (a --by or --id column, a categorical role) as a numpy array of
        values JSON can hold: numbers, booleans, strings (decimals, dates, times, durations
        and bytes as text). In a --by column a missing value (null, NaN) is None: a group
        of its own, whatever --nan says; elsewhere it is an input error."""
        plan = self.plan
        source = plan.source_names[sel.src]
        is_by = any(sel is s for s in plan.by)
        what = "--by" if is_by else "--id" if sel is plan.id else "label"
        col = label_array(rb.column(sel.columns[0]), what, source, sel.columns[0])
        missing = None
        if col.null_count:
            if not is_by:
                i = int(np.flatnonzero(np.asarray(col.is_null()))[0])
                raise InputError.at("missing value", source=source, column=sel.columns[0], row=self.offset_in + i + 1)
            missing = np.asarray(col.is_null())
            col = col.fill_null(fill_value(col.type))
        vals = labels_view(col)
        if vals.dtype.kind == "f":
            nan = np.isnan(vals)
            if is_by and nan.any():
                missing = nan if missing is None else (missing | nan)
            finite = vals[~missing] if missing is not None else vals
            if plan.source_formats[sel.src] in ("csv", "tsv", "jsonl") and np.all(np.isfinite(finite)) \
                    and np.all(finite == np.round(finite)):
                # a text column that is also read as numbers (--by label): its values as the file
                # writes them, 0 and 1 as in a Parquet int column, not 0.0 and 1.0
                vals = np.where(missing, 0, vals).astype(np.int64) if missing is not None else vals.astype(np.int64)
        if missing is not None and missing.any():
            vals = vals.astype(object)
            vals[missing] = None
        return vals
