"""Reading a plan's sources into aligned Arrow record batches: one file, a dataset, or files joined by --key."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from lossctl.errors import InputError
from lossctl.plan import Plan


def arrow_batches(plan: Plan, inputs: Sequence[Any], info: dict[str, Any] | None = None) -> Iterator[list[Any]]:
    """Aligned Arrow batches, one per source: [rb0, rb1?]."""
    from lossctl import io

    req = plan.request
    need = needed_columns(plan)
    numeric = {k for k, v in need.items() if v}
    batch_rows = req.batch_rows or io.DEFAULT_BATCH_ROWS
    if len(inputs) == 1:
        src = inputs[0]
        cols = [c for (s, c) in need if s == 0]
        for rb in io.iter_batches(src, cols, {c for (s, c) in numeric if s == 0}, batch_rows):
            yield [rb]
        return
    if req.key:
        yield from _joined(plan, inputs, need, numeric, batch_rows, info)
        return
    its = []
    for i, src in enumerate(inputs):
        cols = [c for (s, c) in need if s == i] or [src.columns[0]]
        its.append(io.iter_batches(src, cols, {c for (s, c) in numeric if s == i}, batch_rows))
    nsrc = len(its)  # DATA, DATA2 and/or a baseline file, aligned by position
    bufs: list[Any] = [None] * nsrc
    counts = [0] * nsrc
    while True:
        for i in range(nsrc):
            if bufs[i] is None or bufs[i].num_rows == 0:
                bufs[i] = next(its[i], None)
                if bufs[i] is not None:
                    counts[i] += bufs[i].num_rows
        if any(b is None for b in bufs):
            if any(b is not None for b in bufs):
                for i in range(nsrc):
                    for rb in its[i]:
                        counts[i] += rb.num_rows
                j = next(i for i in range(1, nsrc) if counts[i] != counts[0])
                raise InputError.at(
                    f"the {'two ' if nsrc == 2 else ''}files have different numbers of rows: {counts[0]} in "
                    f"{plan.source_names[0]}, {counts[j]} in {plan.source_names[j]}; "
                    "align them by position or join them with --key COL",
                    source=plan.source_names[j],
                )
            return
        k = min(b.num_rows for b in bufs)
        yield [b.slice(0, k) for b in bufs]
        bufs = [b.slice(k) for b in bufs]


def prefetch(it: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Read the next batches in a background thread while this one is computed.

    pyarrow decodes and numpy computes without the GIL, so on two cores reading and
    computing overlap. Exceptions in the reader are raised here, in order.
    """
    import contextlib
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put((done, e))

    t = threading.Thread(target=work, name="lossctl-reader", daemon=True)
    t.start()
    try:
        while True:
            item, err = q.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while t.is_alive():
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.05)
        t.join()


def _joined(plan: Plan, inputs: Sequence[Any], need, numeric, batch_rows, info: dict[str, Any] | None) -> Iterator[list[Any]]:
    """Rows of DATA and DATA2 with equal key values, in key order. Keys compare by value:
    integers, integral floats and digit strings are equal (7, 7.0, "7", "007")."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from lossctl import io

    key = plan.request.key
    tables, keys = [], []
    for i, src in enumerate(inputs):
        if key not in src.columns:
            raise InputError.at(f"no key column '{key}'; columns: {', '.join(src.columns)}", source=src.name)
        cols = list(dict.fromkeys([key] + [c for (s, c) in need if s == i]))
        batches = list(io.iter_batches(src, cols, {c for (s, c) in numeric if s == i and c != key}, batch_rows))
        if not batches:
            raise InputError.at("no rows to join", source=src.name)
        t = pa.Table.from_batches(batches)
        keys.append(_key_values(t.column(key), src.name, key))
        tables.append(t.select([c for c in cols if (i, c) in need]) if any(s == i for s, _ in need) else t.select([key]))
    ks = _common_keys(keys)
    for i, (src, k) in enumerate(zip(inputs, ks)):
        vc = pc.value_counts(k)
        dup = pc.filter(vc, pc.greater(vc.field("counts"), 1))
        if len(dup):
            v = dup[0]["values"].as_py()
            first = int(pc.index(k, dup[0]["values"]).as_py())
            raise InputError.at(f"key value {v!r} occurs {dup[0]['counts'].as_py()} times; keys must be unique",
                                source=src.name, column=key, row=first + 1)
    # each first-file key's row in every other file (keys are unique); a row joins when all have it
    wheres = [pc.index_in(ks[0], value_set=k) for k in ks[1:]]
    valid = np.ones(len(ks[0]), dtype=bool)
    for w in wheres:
        valid &= np.asarray(w.is_valid())
    idxs = [np.flatnonzero(valid)]
    idxs += [np.asarray(w.filter(pa.array(valid)), dtype=np.int64) for w in wheres]
    matched = int(idxs[0].size)
    if info is not None:
        info["join"] = {"matched": matched, **{n: len(k) - matched for n, k in zip(_join_names(plan), ks)}}
    if matched == 0:
        raise InputError.at(f"no key value of '{key}' occurs in both files", source=plan.source_names[1])
    if plan.request.strict_key:
        for i, (src, k) in enumerate(zip(inputs, ks)):
            if len(k) > matched:
                mask = np.ones(len(k), dtype=bool)
                mask[idxs[i]] = False
                first = int(np.flatnonzero(mask)[0])
                others = " and ".join(s.name for s in inputs if s is not src)
                raise InputError.at(
                    f"--strict-key: {len(k) - matched} value{'s' * (len(k) - matched > 1)} of key '{key}' "
                    f"{'have' if len(k) - matched > 1 else 'has'} no match in {others}",
                    source=src.name, column=key, row=first + 1, value=k[first].as_py())
    # rows in key order: deterministic whatever the files' orders
    order = np.asarray(pc.sort_indices(ks[0].take(pa.array(idxs[0]))))
    idxs = [idx[order] for idx in idxs]
    for start in range(0, matched, batch_rows):
        parts = []
        for t, idx in zip(tables, idxs):
            sub = t.take(pa.array(idx[start:start + batch_rows])).combine_chunks()
            parts.append(sub.to_batches()[0] if sub.num_rows else pa.RecordBatch.from_pylist([], schema=sub.schema))
        yield parts


def _join_names(plan: Plan) -> list[str]:
    """The join report's key for each source's unmatched keys."""
    names = ["only_in_data", "only_in_data2"][:len(plan.source_names) - bool(plan.request.baseline)]
    return names + ["only_in_baseline"] * bool(plan.request.baseline)


_INT_TEXT = r"^\s*[+-]?\d{1,18}\s*$"


_NUM_TEXT = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


def _key_values(col: Any, source: str, key: str) -> tuple[str, Any]:
    """A key column as (kind, values): "int" (int64), "float" (float64), "str" (strings, any
    number among them written as an integer is written canonically) or "other"."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t) \
            or pa.types.is_fixed_size_binary(t):
        raise InputError.at(f"a key must be a number or a string, not {t}", source=source, column=key)
    if arr.null_count or pa.types.is_null(t):
        row = int(np.flatnonzero(np.asarray(arr.is_null()))[0]) + 1
        raise InputError.at("missing key value", source=source, column=key, row=row)
    if pa.types.is_boolean(t):
        return "int", arr.cast(pa.int64())
    if pa.types.is_decimal(t):
        arr = arr.cast(pa.float64(), safe=False)
        t = arr.type
    if pa.types.is_integer(t):
        if pa.types.is_uint64(t) and len(arr) and pc.max(arr).as_py() > 2**63 - 1:
            return "str", arr.cast(pa.string())
        return "int", arr.cast(pa.int64())
    if pa.types.is_floating(t):
        vals = np.asarray(arr.cast(pa.float64()), dtype=np.float64)
        if np.isnan(vals).any():
            raise InputError.at("missing key value", source=source, column=key,
                                row=int(np.flatnonzero(np.isnan(vals))[0]) + 1, value=float("nan"))
        if np.isfinite(vals).all() and (vals == np.round(vals)).all() and (np.abs(vals) < 2.0**63).all():
            return "int", pa.array(vals.astype(np.int64))
        return "float", pa.array(vals)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        arr = arr.cast(pa.string())
        if len(arr) and pc.all(pc.match_substring_regex(arr, _INT_TEXT)).as_py():
            return "int", pc.utf8_trim_whitespace(pc.utf8_ltrim(pc.utf8_trim_whitespace(arr), characters="+")).cast(pa.int64())
        if len(arr) and pc.all(pc.match_substring_regex(arr, _NUM_TEXT)).as_py():
            return _key_values(pc.utf8_trim_whitespace(arr).cast(pa.float64()), source, key)
        # strings, some of which may be numbers: those written as integers (007, +7, 7.0) → 7
        canon = pc.replace_substring_regex(arr, r"^\s*\+?(-?)0*(\d+)(\.0*)?\s*$", r"\1\2")
        canon = pc.replace_substring_regex(canon, r"^-0$", "0")
        return "str", canon
    return "other", arr


def _common_keys(keys: list[tuple[str, Any]]) -> list[Any]:
    """Every file's keys as one type, so that equal values compare equal."""
    import pyarrow as pa

    kinds = {kind for kind, _ in keys}
    if len(kinds) == 1 and all(k.type.equals(keys[0][1].type) for _, k in keys):
        return [k for _, k in keys]
    if kinds <= {"int", "float"}:
        return [k.cast(pa.float64(), safe=False) for _, k in keys]
    return [_key_text(kind, k) for kind, k in keys]


def _key_text(kind: str, k: Any) -> Any:
    import pyarrow as pa

    if kind == "str":
        return k
    if kind == "float":  # integral values as integers ("7", not "7.0"); others as Python writes them
        return pa.array([str(int(v)) if v == int(v) else repr(v) for v in np.asarray(k)], pa.string()) \
            if k.null_count == 0 and np.isfinite(np.asarray(k)).all() else k.cast(pa.string())
    try:
        return k.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([str(v) for v in k.to_pylist()], pa.string())


def needed_columns(plan: Plan) -> dict[tuple[int, str], bool]:
    """(source, column) → numeric? for every column the plan reads."""
    need: dict[tuple[int, str], bool] = {}
    for job in plan.jobs:
        for role, sel in job.binding.roles.items():
            spec_role = next(r for r in job.call.spec.roles if r.name == role)
            for c in sel.columns:
                need[(sel.src, c)] = need.get((sel.src, c), False) or not spec_role.categorical
    if plan.weight:
        for c in plan.weight.columns:
            need[(plan.weight.src, c)] = True
    for sel in plan.by:
        for c in sel.columns:
            need.setdefault((sel.src, c), False)
    if plan.id:
        for c in plan.id.columns:
            need.setdefault((plan.id.src, c), False)
    for a, b, cat in plan.equal:
        for sel in (a, b):
            for c in sel.columns:
                need[(sel.src, c)] = need.get((sel.src, c), False) or not cat
    return need
