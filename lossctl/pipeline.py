"""The pipeline: plans and runs an evaluation: sources → bound batches → states → a Report.

``Request`` is everything the CLI (or a library caller) asks for; ``prepare`` opens
the inputs, infers the task, parses the loss specs and binds columns to roles;
``run`` streams the batches through every loss's state and assembles the results.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from lossctl import registry
from lossctl.binding import Binding, Selector, bind_roles, logits_hinted, select
from lossctl.engine import (
    Batch,
    Context,
    DecomposableState,
    Options,
    State,
    bootstrap_values,
    percentile_interval,
)
from lossctl.errors import InputError, UsageError
from lossctl.results import Comparison, Group, LossResult, Report

NAN_POLICIES = ("error", "drop")
REDUCTIONS = ("mean", "sum", "none")


@dataclass
class Request:
    data: str
    data2: str | None = None
    key: str | None = None
    target: str | None = None
    preds: list[str] = field(default_factory=list)
    cols: dict[str, str] = field(default_factory=dict)
    weight: str | None = None
    task: str | None = None
    losses: list[str] = field(default_factory=list)
    logits: bool | None = None
    reduction: str = "mean"
    grad: bool = False
    nan: str = "error"
    by: list[str] = field(default_factory=list)
    min_rows: int = 1
    ci: float | None = None
    bootstrap: int = 1000
    seed: int = 0
    input_format: str | None = None
    batch_rows: int | None = None
    id: str | None = None


@dataclass
class Job:
    """One loss on one prediction set."""

    call: registry.LossCall
    binding: Binding
    pred: str  # label of the prediction set
    kernel_factory: Callable[[], Any]


@dataclass
class Plan:
    request: Request
    sources: list[Any]
    task: str
    task_inferred: bool
    jobs: list[Job]
    pred_labels: list[str]
    ctx: Context
    weight: Selector | None
    by: list[Selector]
    id: Selector | None
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        for s in self.sources:
            s.close()


# ------------------------------------------------------------------ planning

def _spaces(sources: Sequence[Any]):
    spaces = [(i, s.columns, s.types) for i, s in enumerate(sources)]

    def spaces_for(role: registry.Role):
        if len(spaces) == 1:
            return spaces
        return list(reversed(spaces)) if role.name in ("pred",) or not _is_target_side(role) else spaces

    return spaces_for


def _is_target_side(role: registry.Role) -> bool:
    return role.name in ("target", "group", "weight")


def _select(text: str, sources: Sequence[Any], prefer: int, role: str = "selector") -> Selector:
    order = [prefer] + [i for i in range(len(sources)) if i != prefer]
    last_err: Exception | None = None
    for i in order:
        try:
            sel = select(text, sources[i].columns, sources[i].types, sources[i].name, role)
            sel.src = i
            return sel
        except InputError as e:
            last_err = e
    assert last_err is not None
    raise last_err


def prepare(req: Request) -> Plan:
    from lossctl import io

    if req.reduction not in REDUCTIONS:
        raise UsageError(f"unknown reduction '{req.reduction}'; valid: {', '.join(REDUCTIONS)}")
    if req.nan not in NAN_POLICIES:
        raise UsageError(f"unknown --nan policy '{req.nan}'; valid: {', '.join(NAN_POLICIES)}")
    if req.task is not None and req.task not in registry.TASKS:
        raise UsageError(f"unknown task '{req.task}'; valid tasks: {', '.join(registry.TASKS)}")
    if req.ci is not None and not (0 < req.ci < 1):
        raise UsageError(f"--ci must be a level in (0, 1), such as 0.95. Got {req.ci} instead.")
    if req.bootstrap < 1:
        raise UsageError(f"--bootstrap must be at least 1. Got {req.bootstrap} instead.")
    if req.data == "-" and req.data2 == "-":
        raise UsageError("standard input can be read only once: give - for DATA or for DATA2, not both")
    if req.key and not req.data2:
        raise UsageError("--key joins two files: give DATA and DATA2")
    # parse specs before opening files: a typo should not wait for a large read
    raw_specs = [s for s in req.losses if s.strip().lower() != "all"]
    want_all = len(raw_specs) != len(req.losses)
    overrides = {"logits": True} if req.logits else {}
    calls = [registry.parse_spec(s, overrides) for s in raw_specs]
    # the same loss twice (-l mse -l l2, -l huber -l huber:delta=1) is evaluated once
    calls = list({c.text: c for c in calls}.values())

    sources = [io.open_source(req.data, req.input_format)]
    try:
        if req.data2:
            sources.append(io.open_source(req.data2, req.input_format))
        return _plan(req, sources, calls, want_all)
    except BaseException:
        for s in sources:
            s.close()
        raise


def _plan(req: Request, sources: list[Any], calls: list[registry.LossCall], want_all: bool) -> Plan:
    name = sources[0].name
    chosen_specs = [s for c in calls for s in (c.spec, *registry.variants(c.spec))]  # -l triplet may be the mined form
    known_roles = {r.name for s in (chosen_specs or registry.all_losses()) for r in s.roles}
    for role in req.cols:
        if role not in known_roles:
            raise UsageError(
                f"--col {role}=…: no {'selected ' if calls else ''}loss has a role '{role}'; "
                f"roles: {', '.join(sorted(known_roles))}"
            )
    spaces_for = _spaces(sources)
    pred_src = len(sources) - 1
    explicit: dict[str, Selector] = {}
    if req.target:
        explicit["target"] = _select(req.target, sources, 0, "-t/--target")
    for role, text in req.cols.items():
        explicit[role] = _select(text, sources, pred_src if role != "target" else 0, f"--col {role}")
    pred_sels = [_select(p, sources, pred_src, "-p/--pred") for p in req.preds]
    weight = _select(req.weight, sources, 0, "-w/--weight") if req.weight else None  # never guessed by name
    by = []
    for b in req.by:  # a comma list or glob of columns is a cross of them, like --by repeated
        sel = _select(b, sources, 0, "--by")
        by += [Selector(c, [c], vector=False, src=sel.src) for c in sel.columns]
    idsel = _select(req.id, sources, 0, "--id") if req.id is not None else None  # --id "" is an error, not ignored

    signed_note = ""
    # the task: declared, implied by the losses, by specific column names, or by the data
    task, inferred = req.task, req.task is None
    if task is None and calls:
        common = set(calls[0].spec.all_tasks)
        for c in calls[1:]:
            common &= set(c.spec.all_tasks)
        if len(common) == 1:
            task = next(iter(common))
    specific: list[registry.LossSpec] = []
    if task is None or not calls:
        for spec in registry.all_losses():
            if not spec.default_for or (task is not None and task not in spec.default_for):
                continue
            ex = dict(explicit)
            if pred_sels:
                ex.setdefault(_pred_role(spec), pred_sels[0])
            b = bind_roles(spec, spaces_for, ex, name, required=False)
            # only required roles found by their own names say what the file holds
            # (an optional image_id column does not make a classifier's file a segmentation)
            if b is not None and any(r.required and r.name in b.roles and _by_own_name(r, b.roles[r.name])
                                     for r in spec.roles):
                specific.append(spec)
        if task is None and specific:
            task = specific[0].default_for[0] if specific[0].task not in specific[0].default_for else specific[0].task
    if task is None:
        task = _infer_from_data(req, sources, explicit, pred_sels, spaces_for)

    if want_all:  # every loss of the task whose roles bind in this file
        have = {c.spec.name for c in calls}
        calls += [registry.parse_spec(s.name, {"logits": True} if req.logits else {})
                  for s in registry.losses_for_task(task)
                  if s.name not in have and _binds(s, spaces_for, explicit, pred_sels, name)]
    if not calls:
        defaults = [s for s in specific if task in s.default_for] or registry.default_losses(task)
        if specific:
            defaults = [s for s in defaults if s in specific] or defaults
        bindable = [s for s in defaults if _binds(s, spaces_for, explicit, pred_sels, name)]
        chosen = bindable or defaults
        if task == "binary":
            chosen, signed_note = _signed_label_defaults(chosen, sources, spaces_for, explicit, pred_sels, name)
        calls = [registry.parse_spec(s.name, {"logits": True} if req.logits else {}) for s in chosen]
    calls = [_variant_that_binds(c, spaces_for, explicit, pred_sels, name) for c in calls]
    for c in calls:
        if task not in c.spec.all_tasks:
            raise UsageError(
                f"loss {c.spec.name} is for {'/'.join(c.spec.all_tasks)}, not {task}"
                + (" (inferred from the data; set --task)" if inferred else "")
            )

    # bind every (loss, prediction set)
    jobs: list[Job] = []
    labels: list[str] = []
    logits_by_name = None
    for ci, call in enumerate(calls):
        for pi, psel in enumerate(pred_sels or [None]):
            ex = dict(explicit)
            if psel is not None:
                ex[_pred_role(call.spec)] = psel
            b = bind_roles(call.spec, spaces_for, ex, name)
            assert b is not None
            prole = _pred_role(call.spec)
            label = psel.text if psel is not None else (b.roles[prole].label if prole in b.roles else call.spec.name)
            if ci == 0:
                labels.append(label)
            params = dict(call.params)
            if (
                "logits" in params
                and req.logits is None
                and not _explicit_param(call, "logits")
                and prole in b.roles
                and logits_hinted(b.roles[prole])
            ):
                params["logits"] = True
                logits_by_name = b.roles[prole].text
            job_call = registry.LossCall(call.spec, params, registry.format_call(call.spec, params))
            jobs.append(Job(job_call, b, label, _unset_factory))
    if len(set(labels)) != len(labels):
        raise UsageError("the same prediction set is given twice with -p")

    ctx = Context(task=task, grad=req.grad)
    if req.grad:
        from lossctl import io

        ctx.rows_bound = io.rows_upper_bound(sources[0])  # exact top-1% gradient shares in one pass
    plan = Plan(req, sources, task, inferred, jobs, labels, ctx, weight, by, idsel)
    if signed_note:
        plan.notes.append(signed_note)
    if logits_by_name:
        plan.notes.append(f"read '{logits_by_name}' as logits (named like logits; --logits/--no-logits to say so)")
    _shape_context(plan)
    for job in plan.jobs:
        spec = job.call.spec
        job.kernel_factory = (lambda s=spec, p=job.call.params: s.factory(p, plan.ctx))
    if req.reduction != "mean":
        for job in plan.jobs:
            if not job.call.spec.row_mean:
                raise UsageError(
                    f"{job.call.spec.name} is not a mean over rows, so --reduction {req.reduction} "
                    "does not apply to it" + (" (use --by or a group column for per-group values)" if req.reduction == "none" else "")
                )
    return plan


def _by_own_name(role: registry.Role, sel: Selector) -> bool:
    """Whether a role's columns carry one of its own conventional names (found by
    name, or given with -t/-p/--col: `-t mask` still says segmentation)."""
    if sel.how == "specific":
        return True
    if sel.how != "explicit" or not role.names:
        return False
    from lossctl.binding import find_by_names

    return find_by_names(role.names, sel.columns, {}, set()) is not None


def _signed_label_defaults(specs, sources, spaces_for, explicit, pred_sels, name):
    """The default binary set for −1/+1 labels: only the losses that take them (the margin
    losses), with a note; bce and focal would stop the run at the first −1."""
    signed = [s for s in specs if any(r.name == "target" and r.signed for r in s.roles)]
    if not signed or len(signed) == len(specs):
        return specs, ""
    ex = dict(explicit)
    if pred_sels:
        ex.setdefault(_pred_role(signed[0]), pred_sels[0])
    b = bind_roles(signed[0], spaces_for, ex, name, required=False)
    t = b.roles.get("target") if b is not None else None
    if t is None or t.vector:
        return specs, ""
    y = _peek(sources[t.src], t)
    if not np.any(y == -1):
        return specs, ""
    left = ", ".join(s.name for s in specs if s not in signed)
    return signed, f"labels are −1/+1: the default set's {left} need 0/1 labels and are left out (-l to choose)"


def _variant_that_binds(call: registry.LossCall, spaces_for, explicit, pred_sels, name) -> registry.LossCall:
    """``call`` itself, or the form of its loss with other roles (``-l triplet`` on a file of
    labelled embeddings is the mined triplet) when only that form's roles bind."""
    if _binds(call.spec, spaces_for, explicit, pred_sels, name):
        return call
    for v in registry.variants(call.spec):
        if _binds(v, spaces_for, explicit, pred_sels, name):
            return registry.parse_spec(v.name + call.text[len(call.spec.name):])
    return call


def _unset_factory() -> Any:  # replaced once the plan's context is known
    raise AssertionError("kernel factory used before the plan was complete")


def _binds(spec, spaces_for, explicit, pred_sels, name) -> bool:
    ex = dict(explicit)
    if pred_sels:
        ex.setdefault(_pred_role(spec), pred_sels[0])
    return bind_roles(spec, spaces_for, ex, name, required=False) is not None


def _explicit_param(call: registry.LossCall, key: str) -> bool:
    return f"{key}=" in call.text


def _pred_role(spec: registry.LossSpec) -> str:
    names = [r.name for r in spec.roles]
    if "pred" in names:
        return "pred"
    return spec.grad_roles[0] if spec.grad_roles else names[-1]


def _infer_from_data(req, sources, explicit, pred_sels, spaces_for) -> str:
    from lossctl.binding import generic_matches

    name = sources[0].name
    def one(role: str, taken: set) -> Selector | None:
        found = generic_matches(role, spaces_for(registry.Role(role)), taken)
        if len(found) > 1:
            raise InputError.at(
                f"ambiguous {role} column: " + " or ".join(f"'{s.text}'" for s in found)
                + f"; choose one with {'-t' if role == 'target' else '-p'} COL",
                source=name,
            )
        return found[0] if found else None

    tsel = explicit.get("target") or one("target", set())
    psel = pred_sels[0] if pred_sels else one("pred", {(tsel.src, c) for c in tsel.columns} if tsel else set())
    if tsel is None or psel is None:
        missing = "target" if tsel is None else "prediction"
        cols = ", ".join(c for s in sources for c in s.columns)
        raise InputError.at(
            f"cannot find the {missing} column by its name; bind it with "
            f"{'-t COL' if tsel is None else '-p COL'} (and --task to skip the guess). Columns: {cols}",
            source=name,
        )
    y = _peek(sources[tsel.src], tsel)
    pw = psel.width_hint
    if pw is None:
        pw = _peek(sources[psel.src], psel).shape[1] if psel.list_column else 1
    finite = y[np.isfinite(y)] if y.size else y
    if y.ndim == 2 and y.shape[1] > 1:
        if pw == y.shape[1] and finite.size and finite.min() >= 0 and finite.max() <= 1 and np.allclose(np.nansum(y, axis=1), 1, atol=1e-6):
            return "multiclass"
        return "regression"
    if pw >= 2:
        return "multiclass"
    vals = _distinct(finite)
    if vals.size and vals.size <= 2 and (set(vals.tolist()) <= {0.0, 1.0} or set(vals.tolist()) <= {-1.0, 1.0}):
        return "binary"
    # a classifier's score column (prob, logit, score…) against a few whole-number
    # labels is a binary task with bad labels, not a regression: say so at validation
    if re.match(r"^(prob|proba|probability|p|logit|logits|score|scores)$", psel.columns[0], re.I) and \
            vals.size and vals.size <= 3 and np.all(vals == np.round(vals)):
        return "binary"
    return "regression"


def _distinct(a: np.ndarray) -> np.ndarray:
    """np.unique of a 1-d array, without the import of numpy.ma that np.unique makes (10 ms)."""
    s = np.sort(a)
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if s.size else s


def _peek(src, sel: Selector, rows: int = 4096) -> np.ndarray:
    from lossctl import io

    for rb in io.iter_batches(src, sel.columns, set(sel.columns), batch_rows=rows):
        return _to_matrix([rb.column(c) for c in sel.columns], sel, src.name, 0)
    return np.empty(0)


def _shape_context(plan: Plan) -> None:
    """Number of classes and target kind, from the bound columns' widths."""
    for job in plan.jobs:
        t = job.binding.roles.get("target")
        p = job.binding.roles.get(_pred_role(job.call.spec))
        if p is not None and p.vector:
            w = p.width_hint
            if w is None:
                w = _peek(plan.sources[p.src], p).shape[1]
            plan.ctx.n_classes = w
        if t is not None and t.vector:
            plan.ctx.target_kind = "vector"


# ------------------------------------------------------------------ data


def _to_matrix(arrays: list[Any], sel: Selector, source: str, offset: int) -> np.ndarray:
    """Arrow columns bound to one role → float array (n,) or (n, k)."""
    import pyarrow as pa

    if sel.list_column:
        arr = arrays[0]
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.null_count:
            i = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
            raise InputError.at("missing value", source=source, column=sel.columns[0], row=offset + i + 1)
        if pa.types.is_fixed_size_list(arr.type):
            width = arr.type.list_size
            flat = arr.flatten()
        else:
            lengths = np.asarray(arr.value_lengths())
            width = int(lengths[0]) if lengths.size else 0
            if lengths.size and (lengths != width).any():
                i = int(np.flatnonzero(lengths != width)[0])
                raise InputError.at(
                    f"list lengths differ: {int(lengths[i])} here, {width} in the first row",
                    source=source, column=sel.columns[0], row=offset + i + 1,
                )
            flat = arr.flatten()
        vals = _numeric(flat, sel.columns[0], source, offset, width=max(width, 1))
        return vals.reshape(-1, width) if width else vals.reshape(len(arr), 0)
    cols = [_numeric(a, c, source, offset) for a, c in zip(arrays, sel.columns)]
    if not sel.vector:
        return cols[0]
    return np.column_stack(cols) if cols else np.empty((0, 0))


def _numeric(arr: Any, column: str, source: str, offset: int, width: int = 1) -> np.ndarray:
    """A column (or a list column's flattened values, ``width`` per row) as floats."""
    import pyarrow as pa

    t = arr.type
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return float_view(arr)
    if pa.types.is_null(t):
        return np.full(len(arr), np.nan)
    # strings and anything else: find the first value that is not a number
    vals = arr.to_pylist()
    for i, v in enumerate(vals):
        if v is None:
            continue
        try:
            float(v)
        except (TypeError, ValueError):
            raise InputError.at("not a number", source=source, column=column, row=offset + i // width + 1,
                                value=v) from None
    return np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)


def float_view(arr: Any) -> np.ndarray:
    """An Arrow numeric array as float64 (float32 stays float32), nulls as NaN.

    Reads the data buffer directly: zero-copy for float columns without nulls, and
    never through pyarrow's pandas bridge (importing pandas costs 0.2 s).
    """
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_float64(arr.type) or pa.types.is_float32(arr.type)):
        arr = arr.cast(pa.float64())
    if arr.null_count:
        import pyarrow.compute as pc  # only here: importing it costs 15-25 ms of start-up

        arr = pc.fill_null(arr, pa.scalar(float("nan"), arr.type))
    dtype = np.float32 if pa.types.is_float32(arr.type) else np.float64
    buf = arr.buffers()[1]
    if buf is None:
        return np.empty(0, dtype=dtype)
    return np.frombuffer(buf, dtype=dtype, count=len(arr), offset=arr.offset * dtype().itemsize)


def labels_view(arr: Any) -> np.ndarray:
    """An Arrow column of labels (ids, group values) as a numpy array."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_integer(t):
        return np.frombuffer(arr.cast(pa.int64()).buffers()[1], dtype=np.int64, count=len(arr), offset=arr.offset * 8) \
            if arr.offset == 0 else np.asarray(arr.cast(pa.int64()).to_pylist(), dtype=np.int64)
    if pa.types.is_floating(t):
        return float_view(arr)
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
    enc = arr.dictionary_encode()
    codes = np.asarray(enc.indices.to_pylist() if enc.indices.null_count else
                       np.frombuffer(enc.indices.buffers()[1], dtype=np.int32, count=len(enc), offset=enc.indices.offset * 4))
    values = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    return values[codes]


def _arrow_batches(plan: Plan) -> Iterator[list[Any]]:
    """Aligned Arrow batches, one per source: [rb0, rb1?]."""
    from lossctl import io

    req = plan.request
    need = _needed(plan)
    numeric = {k for k, v in need.items() if v}
    batch_rows = req.batch_rows or io.DEFAULT_BATCH_ROWS
    if len(plan.sources) == 1:
        src = plan.sources[0]
        cols = [c for (s, c) in need if s == 0]
        for rb in io.iter_batches(src, cols, {c for (s, c) in numeric if s == 0}, batch_rows):
            yield [rb]
        return
    if req.key:
        yield from _joined(plan, need, numeric, batch_rows)
        return
    its = []
    for i, src in enumerate(plan.sources):
        cols = [c for (s, c) in need if s == i] or [src.columns[0]]
        its.append(io.iter_batches(src, cols, {c for (s, c) in numeric if s == i}, batch_rows))
    bufs: list[Any] = [None, None]
    counts = [0, 0]
    while True:
        for i in range(2):
            if bufs[i] is None or bufs[i].num_rows == 0:
                bufs[i] = next(its[i], None)
                if bufs[i] is not None:
                    counts[i] += bufs[i].num_rows
        if bufs[0] is None or bufs[1] is None:
            if bufs[0] is not None or bufs[1] is not None:
                for i in range(2):
                    for rb in its[i]:
                        counts[i] += rb.num_rows
                raise InputError.at(
                    f"the two files have different numbers of rows: {counts[0]} in "
                    f"{plan.sources[0].name}, {counts[1]} in {plan.sources[1].name}; "
                    "align them by position or join them with --key COL",
                    source=plan.sources[1].name,
                )
            return
        k = min(bufs[0].num_rows, bufs[1].num_rows)
        yield [bufs[0].slice(0, k), bufs[1].slice(0, k)]
        bufs = [b.slice(k) for b in bufs]


def _prefetch(it: Iterator[Any], depth: int = 2) -> Iterator[Any]:
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


def _joined(plan: Plan, need, numeric, batch_rows) -> Iterator[list[Any]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    from lossctl import io

    key = plan.request.key
    tables = []
    for i, src in enumerate(plan.sources):
        if key not in src.columns:
            raise InputError.at(f"no key column '{key}'; columns: {', '.join(src.columns)}", source=src.name)
        cols = [key] + [c for (s, c) in need if s == i and c != key]
        t = pa.Table.from_batches(list(io.iter_batches(src, cols, {c for (s, c) in numeric if s == i}, batch_rows)))
        if t.column(key).null_count:
            row = int(np.flatnonzero(np.asarray(t.column(key).is_null()))[0]) + 1
            raise InputError.at("missing key value", source=src.name, column=key, row=row)
        vc = pc.value_counts(t.column(key))
        dup = pc.filter(vc, pc.greater(vc.field("counts"), 1))
        if len(dup):
            v = dup[0]["values"].as_py()
            raise InputError.at(f"key value {v!r} occurs {dup[0]['counts'].as_py()} times; keys must be unique", source=src.name, column=key)
        t = t.rename_columns([key] + [f"{i}\x1f{c}" for c in t.column_names[1:]])
        tables.append(t)
    left, right = tables
    joined = left.join(right, keys=key, join_type="inner")
    left_keys = pc.is_in(left.column(key), value_set=right.column(key))
    right_keys = pc.is_in(right.column(key), value_set=left.column(key))
    only_left = len(left) - pc.sum(left_keys).as_py()
    only_right = len(right) - pc.sum(right_keys).as_py()
    plan.join_info = {"matched": joined.num_rows, "only_in_data": only_left, "only_in_data2": only_right}
    if joined.num_rows == 0:
        raise InputError.at(f"no key value of '{key}' occurs in both files", source=plan.sources[1].name)
    # rows in key order: deterministic whatever the files' orders
    order = pc.sort_indices(joined, sort_keys=[(key, "ascending")])
    joined = joined.take(order)
    for rb in joined.to_batches(max_chunksize=batch_rows):
        parts = []
        for i in range(2):
            names = [n for n in rb.schema.names if n.startswith(f"{i}\x1f")]
            arrays = [rb.column(n) for n in names]
            parts.append(pa.RecordBatch.from_arrays(arrays, names=[n.split("\x1f", 1)[1] for n in names]) if names else rb.select([key]))
        yield parts


def _needed(plan: Plan) -> dict[tuple[int, str], bool]:
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
    return need


def _widen(a: np.ndarray, memo: dict[int, np.ndarray]) -> np.ndarray:
    if a.dtype != np.float32:
        return a
    out = memo.get(id(a))
    if out is None:
        out = memo[id(a)] = a.astype(np.float64)
    return out


class _Feeder:
    """Turns aligned Arrow batches into per-job Batches, applying the NaN policy once."""

    def __init__(self, plan: Plan, row_offset: int = 0) -> None:
        self.plan = plan
        self.dropped = 0
        self.rows = row_offset  # global index of the next row (shards start where the previous ended)
        self.weight_total = 0.0
        self.row_offset = row_offset
        self.offset_in = 0

    def batches(self) -> Iterator[tuple[list[Batch], list[np.ndarray], np.ndarray | None]]:
        """Per aligned batch: one Batch per job, the --by columns' values, the --id values."""
        reader = _prefetch(_arrow_batches(self.plan))
        try:
            yield from self._convert(reader)
        finally:
            reader.close()  # stops and joins the reader thread, also on errors

    def _convert(self, reader: Iterator[list[Any]]) -> Iterator[tuple[list[Batch], list[np.ndarray], np.ndarray | None]]:
        plan = self.plan
        req = plan.request
        names = [s.name for s in plan.sources]
        for parts in reader:
            n_in = parts[0].num_rows
            cache: dict[tuple[int, tuple[str, ...], bool], np.ndarray] = {}

            def arr(sel: Selector) -> np.ndarray:
                k = (sel.src, tuple(sel.columns), sel.list_column)
                if k not in cache:
                    rb = parts[sel.src]
                    cache[k] = _to_matrix([rb.column(c) for c in sel.columns], sel, names[sel.src], self.offset_in)
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
            # non-finite values: one mask over every numeric column in use
            bad = None
            for key, a in cache.items():
                # a finite sum proves every value finite: one pass, no temporary
                if a.dtype.kind != "f" or np.isfinite(np.sum(a)):
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
            by_vals = [self._categorical(parts[s.src], s) for s in plan.by]
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

    @staticmethod
    def _is_cat(job: Job, role: str) -> bool:
        return any(r.name == role and r.categorical for r in job.call.spec.roles)

    def _input_row(self, i: int, keep: np.ndarray | None) -> int:
        if keep is None:
            return self.offset_in + i + 1
        return self.offset_in + int(np.flatnonzero(keep)[i]) + 1

    def _categorical(self, rb: Any, sel: Selector) -> np.ndarray:
        col = rb.column(sel.columns[0])
        if col.null_count:
            i = int(np.flatnonzero(np.asarray(col.is_null()))[0])
            raise InputError.at("missing value", source=self.plan.sources[sel.src].name,
                                column=sel.columns[0], row=self.offset_in + i + 1)
        vals = labels_view(col)
        if vals.dtype.kind == "f" and self.plan.sources[sel.src].fmt in ("csv", "tsv", "jsonl") \
                and np.all(np.isfinite(vals)) and np.all(vals == np.round(vals)):
            # a text column that is also read as numbers (--by label): its values as the file
            # writes them, 0 and 1 as in a Parquet int column, not 0.0 and 1.0
            vals = vals.astype(np.int64)
        return vals


# ------------------------------------------------------------------ running


def _new_state(job: Job, opts: Options) -> State:
    k = job.kernel_factory()
    if isinstance(k, State):
        return k
    return DecomposableState(k, opts)


@dataclass
class Accumulated:
    """Every state of a run, before results are computed: what a state file holds."""

    states: list[State]
    group_states: dict[tuple, list[State]]
    group_rows: dict[tuple, int]
    rows: int
    dropped: int
    join: dict[str, int] | None = None
    sample: Any = None  # a RowSample of the first job's target and prediction, for pictures


def options(plan: Plan) -> Options:
    req = plan.request
    return Options(grad=req.grad, ci=req.ci, bootstrap=req.bootstrap, seed=req.seed, reduction=req.reduction)


def accumulate(
    plan: Plan, row_offset: int = 0, progress: Callable[[int], None] | None = None, sample: bool = False
) -> Accumulated:
    """Stream every batch through every state (and every slice's states)."""
    from lossctl.accumulate import RowSample

    opts = options(plan)
    sampler = RowSample() if sample and plan.jobs else None
    states = [_new_state(j, opts) for j in plan.jobs]
    group_states: dict[tuple, list[State]] = {}
    group_rows: dict[tuple, int] = {}
    kernels = [s.kernel for s in states if isinstance(s, DecomposableState)]
    feeder = _Feeder(plan, row_offset)

    if any(k.needs_prepass for k in kernels):
        for jobs_b, _, _ in _Feeder(plan, row_offset).batches():
            for s, b in zip(states, jobs_b):
                if isinstance(s, DecomposableState) and s.kernel.needs_prepass:
                    s.kernel.validate(b)
                    s.kernel.prepass(b)
        for k in kernels:
            if k.needs_prepass:
                k.end_prepass()
        plan.ctx.prepass_done = True  # type: ignore[attr-defined]

    for jobs_b, by_vals, _ in feeder.batches():
        for s, b in zip(states, jobs_b):
            _validate(s, b)
            s.update(b)
        if progress is not None and jobs_b:
            progress(jobs_b[0].n)
        if sampler is not None and jobs_b and jobs_b[0].n:
            b0 = jobs_b[0]
            cols = {k: v for k, v in b0.cols.items() if k in ("target", "pred") and v.dtype.kind == "f"}
            if len(cols) == 2:
                sampler.update(cols, b0.offset)
        if plan.by:
            _update_groups(plan, jobs_b, by_vals, group_states, group_rows, opts, states)
    if any(s.two_pass for s in states) or any(s.two_pass for ss in group_states.values() for s in ss):
        for jobs_b, by_vals, _ in _Feeder(plan, row_offset).batches():
            for s, b in zip(states, jobs_b):
                if s.two_pass:
                    s.update2(b)
            if plan.by:
                _update_groups(plan, jobs_b, by_vals, group_states, group_rows, opts, states, second=True)
    used = feeder.rows - row_offset
    if plan.weight is not None and used and feeder.weight_total == 0:
        raise InputError.at("every weight is 0: there is nothing to average", source=plan.sources[plan.weight.src].name,
                            column=plan.weight.columns[0])
    if used == 0:
        raise InputError.at(
            f"no rows left: --nan drop dropped all {feeder.dropped}" if feeder.dropped else "no rows to evaluate",
            source=plan.sources[0].name,
        )
    return Accumulated(states, group_states, group_rows, used, feeder.dropped, getattr(plan, "join_info", None),
                       sampler)


def run(plan: Plan) -> Report:
    return build_report(plan, accumulate(plan))


def build_report(plan: Plan, acc: Accumulated) -> Report:
    req = plan.request
    opts = options(plan)
    results = _results(plan, acc.states, opts)
    comparisons = _comparisons(plan, acc.states, results, opts)
    groups = None
    hidden = 0
    if plan.by:
        groups, hidden = _group_results(plan, acc.group_states, acc.group_rows, opts)
    report = Report(
        task=plan.task,
        task_inferred=plan.task_inferred,
        rows=acc.rows,
        dropped_rows=acc.dropped,
        results=results,
        comparisons=comparisons,
        groups=groups,
        sources=list(getattr(plan, "source_names", None) or [s.name for s in plan.sources]),
        bindings=getattr(plan, "bindings", None) or _bindings(plan),
        warnings=list(plan.notes),
        join=acc.join,
        hidden_groups=hidden,
    )
    if acc.sample is not None and acc.sample.cols:
        report.picture = _picture(plan, acc.sample.cols)
    if acc.dropped:
        report.warnings.append(f"--nan drop: dropped {acc.dropped} rows with missing or infinite values")
    if report.join and (report.join["only_in_data"] or report.join["only_in_data2"]):
        report.warnings.append(
            f"--key {req.key}: {report.join['only_in_data']} keys only in {report.sources[0]}, "
            f"{report.join['only_in_data2']} only in {report.sources[1]}; {report.join['matched']} matched"
        )
    return report


def _picture(plan: Plan, cols: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """What the terminal pictures need: residuals and loss curves, or probabilities."""
    from lossctl import pictures

    y, p = cols["target"], cols["pred"]
    if plan.task == "regression" and y.ndim == 1 and p.ndim == 1:
        r = p - y
        xs = pictures.bin_centres(r)
        curves = []
        seen = set()
        for job in plan.jobs:
            if job.call.text in seen or not job.call.spec.row_mean or job.call.spec.roles[-1].name != "pred":
                continue
            seen.add(job.call.text)
            k = job.kernel_factory()
            b = Batch({"target": np.zeros_like(xs), "pred": xs}, xs.size)
            curves.append((job.call.text, k.per_row(b, False)[0]))
        return {"kind": "regression", "residuals": r, "curves": curves}
    if plan.task in ("binary", "multiclass"):
        params = plan.jobs[0].call.params
        prob = p
        if params.get("logits"):
            from lossctl.losses._numerics import sigmoid, softmax

            prob = softmax(p) if p.ndim == 2 else sigmoid(p)
        if (prob.ndim == 2) == (plan.task == "multiclass") and np.all((prob >= 0) & (prob <= 1)):
            return {"kind": "classification", "target": y, "prob": prob}
    return None


def _validate(s: State, b: Batch) -> None:
    k = getattr(s, "kernel", None)
    if k is not None:
        k.validate(b)
    elif hasattr(s, "validate"):
        s.validate(b)  # type: ignore[attr-defined]


def _update_groups(plan, jobs_b, by_vals, group_states, group_rows, opts, states, second=False):
    if not by_vals or jobs_b[0].n == 0:
        return
    keys = list(zip(*[v.tolist() for v in by_vals])) if len(by_vals) > 1 else [(v,) for v in by_vals[0].tolist()]
    uniq: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        uniq.setdefault(k, []).append(i)
    for k, idx_list in uniq.items():
        idx = np.asarray(idx_list)
        if k not in group_states:
            group_states[k] = [_new_state(j, opts) for j in plan.jobs]
            group_rows[k] = 0
        if not second:
            group_rows[k] += idx.size
        for s, b in zip(group_states[k], jobs_b):
            sub = b.take(idx)
            if second:
                if s.two_pass:
                    s.update2(sub)
            else:
                s.update(sub)


def _result_for(job: Job, st: State, opts: Options, in_slice: bool = False) -> LossResult:
    try:
        r = st.result()
    except InputError as e:
        if not in_slice:
            raise
        # a slice where the loss is undefined (one class for mined triplets): say so there
        r = {"value": math.nan, "n": getattr(st, "n", 0), "notes": [f"undefined in this slice: {e}"]}
    return LossResult(
        loss=job.call.spec.name,
        spec=job.call.text,
        params=dict(job.call.params),
        pred=job.pred,
        value=float(r.get("value", math.nan)),
        n=int(r.get("n", 0)),
        reduction=opts.reduction,
        grad=r.get("grad"),
        grad_by_role=r.get("grad_by_role"),
        grad_sample=r.get("grad_sample"),
        extra=r.get("extra", {}),
        notes=list(r.get("notes", [])),
    )


def _results(plan: Plan, states: list[State], opts: Options) -> list[LossResult]:
    results = [_result_for(j, s, opts) for j, s in zip(plan.jobs, states)]
    if opts.ci:
        _add_ci(plan, states, results, opts)
    return results


def _add_ci(plan: Plan, states: list[State], results: list[LossResult], opts: Options, seed_offset: int = 0) -> None:
    units, fns, idx = [], [], []
    method = None
    for i, s in enumerate(states):
        if isinstance(s, DecomposableState) and s.boot is not None and s.boot.count:
            mat, method = s.boot.matrix()
            units.append(mat)
            fns.append(_pick(len(units) - 1, s.boot_fn()))
            idx.append(i)
        else:
            results[i].notes.append("no bootstrap interval: this loss is not a function of row sums")
    if not units or units[0].shape[0] < 2:
        for i in idx:  # --ci was asked for: say why there is none
            results[i].notes.append("no bootstrap interval: it needs at least 2 rows")
        return
    vals = bootstrap_values(units, fns, opts.bootstrap, opts.seed + seed_offset)
    for i, v in zip(idx, vals):
        results[i].ci = percentile_interval(v, opts.ci)
        results[i].ci_method = method
    plan._boot = (units, idx)  # type: ignore[attr-defined]


def _pick(i: int, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[list[np.ndarray]], np.ndarray]:
    return lambda totals: fn(totals[i])


def _comparisons(plan: Plan, states: list[State], results: list[LossResult], opts: Options) -> list[Comparison]:
    if len(plan.pred_labels) < 2:
        return []
    out = []
    npred = len(plan.pred_labels)
    boot = getattr(plan, "_boot", None)
    for li in range(len(plan.jobs) // npred):
        base = li * npred
        for pi in range(1, npred):
            j = base + pi
            c = Comparison(
                loss=results[j].loss, spec=results[j].spec, params=results[j].params,
                pred=results[j].pred, baseline=results[base].pred,
                value=results[j].value, baseline_value=results[base].value,
            )
            if opts.ci and boot is not None:
                units, idx = boot
                if base in idx and j in idx:
                    ub, uj = idx.index(base), idx.index(j)
                    fb, fj = states[base].boot_fn(), states[j].boot_fn()  # type: ignore[attr-defined]
                    (d,) = bootstrap_values(
                        units, [lambda t, ub=ub, uj=uj, fb=fb, fj=fj: fj(t[uj]) - fb(t[ub])], opts.bootstrap, opts.seed
                    )
                    c.ci = percentile_interval(d, opts.ci)
            out.append(c)
    return out


def _group_results(plan: Plan, group_states, group_rows, opts: Options) -> tuple[list[Group], int]:
    groups = []
    hidden = 0
    label = ",".join(s.text for s in plan.by)
    for gi, (k, sts) in enumerate(sorted(group_states.items(), key=lambda kv: _sort_key(kv[0]))):
        if group_rows[k] < plan.request.min_rows:
            hidden += 1
            continue
        res = [_result_for(j, s, opts, in_slice=True) for j, s in zip(plan.jobs, sts)]
        if opts.ci:
            _add_ci(plan, sts, res, opts, seed_offset=gi + 1)
        value = k[0] if len(k) == 1 else list(k)
        groups.append(Group(by=label, value=value, rows=group_rows[k], results=res))
    if len(groups) > 1:  # mark the worst slice (largest loss) of each loss and prediction set
        for j in range(len(plan.jobs)):
            finite = [g for g in groups if g.results[j].value == g.results[j].value]
            if finite:
                max(finite, key=lambda g: g.results[j].value).results[j].worst = True
    return groups, hidden


def _sort_key(k: tuple) -> tuple:
    return tuple((0, x, "") if isinstance(x, (int, float)) else (1, 0, str(x)) for x in k)


def _bindings(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for job in plan.jobs:
        for role, sel in job.binding.roles.items():
            if role in ("pred",) and len(plan.pred_labels) > 1:
                continue
            out.setdefault(role, sel.columns if sel.vector else sel.columns[0])
    if len(plan.pred_labels) > 1:
        out["pred"] = list(plan.pred_labels)
    if plan.weight:
        out["weight"] = plan.weight.columns[0]
    return out


# ------------------------------------------------------------------ per-row output


_INTEGER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")


def _typed_text(values: np.ndarray) -> np.ndarray:
    """CSV text values as the numbers they spell: a whole number written canonically
    ("42", "-7"; not "007" or "1e3") becomes an int, so --id values come out as from a
    typed file; anything else stays text, exactly as written."""
    if values.dtype.kind not in "OUS":
        return values
    out = [int(v) if isinstance(v, str) and _INTEGER_TEXT.match(v) else v for v in values.tolist()]
    if all(type(v) is int and -(2**63) <= v < 2**63 for v in out):
        return np.asarray(out, dtype=np.int64)
    return np.asarray(out, dtype=object)


def _scalar_grad(job: Job) -> bool:
    """Whether the loss's gradient is one number per row (one output column, one grad role)."""
    spec = job.call.spec
    roles = list(spec.grad_roles) or [_pred_role(spec)]
    return len(roles) == 1 and roles[0] in job.binding.roles and not job.binding.roles[roles[0]].vector


def iter_rows(plan: Plan) -> Iterator[tuple[list[str], list[np.ndarray]]]:
    """Per-row values (and gradients) for --reduction none, batch by batch.

    Under --nan drop a first ``row`` column gives each output row's input row number
    (from 1), so that the output still lines up with the input. A loss whose gradient
    is a vector per row gets no SPEC.grad column, and a note says so.
    """
    req = plan.request
    kernels = [j.kernel_factory() for j in plan.jobs]
    header: list[str] = []
    numbered = req.nan == "drop"
    if numbered:
        header.append("row")
    if plan.id:
        header.append(plan.id.columns[0])
    text_ids = bool(plan.id) and plan.sources[plan.id.src].fmt in ("csv", "tsv")
    multi = len(plan.pred_labels) > 1
    # SPEC.grad only for losses whose gradient is one number per row (CLI.md)
    scalar = [_scalar_grad(job) for job in plan.jobs]
    for job, k, sc in zip(plan.jobs, kernels, scalar):
        name = job.call.text + (f"@{job.pred}" if multi else "")
        header.append(name)
        if req.grad and sc:
            header.append(name + ".grad")
        elif req.grad:
            plan.notes.append(f"{name}: no per-row gradient column: its gradient is a vector for each row "
                              "(--grad without --reduction none summarises it)")
    if any(getattr(k, "needs_prepass", False) for k in kernels):
        for jobs_b, _, _ in _Feeder(plan).batches():
            for k, b in zip(kernels, jobs_b):
                if getattr(k, "needs_prepass", False):
                    k.validate(b)
                    k.prepass(b)
        for k in kernels:
            if getattr(k, "needs_prepass", False):
                k.end_prepass()
    feeder = _Feeder(plan)
    for jobs_b, _, ids in feeder.batches():
        cols: list[np.ndarray] = []
        if numbered:
            b0 = jobs_b[0]
            kept = np.arange(b0.n) if b0.keep is None else np.flatnonzero(b0.keep)
            cols.append(kept.astype(np.int64) + (b0.input_start + 1))
        if plan.id:
            ids = ids if ids is not None else np.empty(0)
            cols.append(_typed_text(ids) if text_ids else ids)
        for k, b, sc in zip(kernels, jobs_b, scalar):
            k.validate(b)
            loss, grads = k.per_row(b, req.grad and sc)
            if b.weight is not None:
                loss = loss * b.weight
            cols.append(loss)
            if req.grad and sc:
                g = None
                if grads and len(grads) == 1:
                    (g,) = grads.values()
                    if b.weight is not None:
                        g = g * b.weight
                cols.append(g if g is not None and g.ndim == 1 else np.full(b.n, np.nan))
        yield header, cols
    if feeder.rows == feeder.row_offset and feeder.dropped:
        raise InputError.at(f"no rows left: --nan drop dropped all {feeder.dropped}", source=plan.sources[0].name)
