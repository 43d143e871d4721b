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
from lossctl.binding import (
    Binding,
    Selector,
    binary_set,
    bind_roles,
    generic_matches,
    logits_hinted,
    select,
    task_from_values,
)
from lossctl.engine import (
    Batch,
    Context,
    DecomposableState,
    Options,
    Resampling,
    State,
    percentile_interval,
)
from lossctl.errors import InputError, UsageError
from lossctl.results import Comparison, LossResult, Report
from lossctl.slice_results import _group_results, _sort_key  # noqa: F401  (_sort_key: check.py reads it here)

NAN_POLICIES = ("error", "drop")
REDUCTIONS = ("mean", "sum", "none")


@dataclass
class Request:
    data: str
    data2: str | None = None
    more: list[str] = field(default_factory=list)  # paths after DATA2: several paths are one dataset
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
    # a reference model (lossctl check): its predictions in another file for the same rows
    # (same columns as the candidate's unless baseline_pred), or a column of DATA (baseline_pred
    # alone); evaluated in the same pass as an extra prediction set labelled BASELINE, listed first
    baseline: str | None = None
    baseline_pred: str | None = None


BASELINE = "baseline"


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
    # (DATA's column, the baseline file's, categorical?): must hold the same values row by row
    equal: list[tuple[Selector, Selector, bool]] = field(default_factory=list)

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
    first_err: Exception | None = None
    for i in order:
        try:
            sel = select(text, sources[i].columns, sources[i].types, sources[i].name, role)
            sel.src = i
            return sel
        except InputError as e:
            first_err = first_err or e
    assert first_err is not None
    raise first_err  # the file the role is looked for in first: -t in DATA, -p in DATA2


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
    paths = [req.data] + ([req.data2] if req.data2 else []) + list(req.more)
    if paths.count("-") + (req.baseline == "-") > 1:
        raise UsageError("standard input can be read only once: give - once")
    if req.key and (len(paths) > 2 or (len(paths) == 1 and not req.baseline)):
        raise UsageError(f"--key joins two files: give DATA and DATA2 (got {len(paths)} path{'s' * (len(paths) > 1)})")
    # parse specs before opening files: a typo should not wait for a large read
    raw_specs = [s for s in req.losses if s.strip().lower() != "all"]
    want_all = len(raw_specs) != len(req.losses)
    overrides = {"logits": True} if req.logits else {}
    calls = [registry.parse_spec(s, overrides) for s in raw_specs]
    # the same loss twice (-l mse -l l2, -l huber -l huber:delta=1) is evaluated once
    calls = list({c.text: c for c in calls}.values())

    sources: list[Any] = []
    try:
        for path in paths:  # one of several paths may have no rows (a shard that came out empty)
            sources.append(io.open_source(path, req.input_format, allow_empty=len(paths) > 1))
        base = io.open_source(req.baseline, req.input_format) if req.baseline else None
        if base is not None:
            sources.append(base)
        return _plan_sources(req, sources[:len(paths)], calls, want_all, base)
    except BaseException:
        for s in sources:
            s.close()
        raise


def _plan_sources(req: Request, sources: list[Any], calls: list[registry.LossCall], want_all: bool,
                  base: Any = None) -> Plan:
    """Several paths are one dataset when each holds every bound column; two between which
    the bound columns are split are targets and predictions. A bound column both of two
    such files hold is an error: it is never silently taken from one of them. A baseline file
    (lossctl check) comes last, whatever the paths make."""
    extra = [base] if base is not None else []
    if len(sources) == 1:
        return _plan(req, sources + extra, list(calls), want_all)
    if len(sources) > 2 or (not req.key and set(sources[0].columns) == set(sources[1].columns)):
        return _plan(req, [_as_dataset(sources)] + extra, list(calls), want_all)
    plan = _plan(req, sources + extra, list(calls), want_all)  # as targets and predictions
    bound = [(s, c) for (s, c) in _needed(plan) if c != req.key and s < 2]
    both = list(dict.fromkeys(c for s, c in bound if c in sources[1 - s].columns))
    if not both:
        return plan
    if not req.key and len(both) == len({c for _, c in bound}):
        return _plan(req, [_as_dataset(sources)] + extra, list(calls), want_all)
    a, b = sources[0].name, sources[1].name
    only = [f"'{c}' only in {sources[s].name}" for s, c in dict.fromkeys(bound) if c not in both]
    raise InputError.at(
        f"column '{both[0]}' is in both {a} and {b}"
        + (f" ({', '.join(only)})" if only else "")
        + ": two files are either one dataset (each holding every column in use) or targets and predictions "
        "(the target in the first, the predictions in the second, a column in one of them only)"
    )


def _as_dataset(sources: list[Any]) -> Any:
    from lossctl import io

    names = [s.name for s in sources]
    name = ", ".join(names) if len(names) <= 3 else f"{names[0]}, …, {names[-1]} ({len(names)} files)"
    return io.dataset_of(name, sources)


def _plan(req: Request, sources: list[Any], calls: list[registry.LossCall], want_all: bool) -> Plan:
    all_sources = sources
    sources = sources[:-1] if req.baseline else sources  # roles bind in DATA (and DATA2) only
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
            if pred_sels and _p_role(spec):
                ex.setdefault(_p_role(spec), pred_sels[0])
            b = bind_roles(spec, spaces_for, ex, name, required=False)
            # only required roles found by their own names say what the file holds
            # (an optional image_id column does not make a classifier's file a segmentation)
            if b is not None and any(r.required and r.name in b.roles and _by_own_name(r, b.roles[r.name])
                                     for r in spec.roles):
                specific.append(spec)
        if task is None and specific:
            task = specific[0].default_for[0] if specific[0].task not in specific[0].default_for else specific[0].task
    peeks: dict = {}
    if task is None:
        task = _infer_from_data(req, sources, explicit, pred_sels, spaces_for, calls, peeks)
    notes: list[str] = []
    if task in ("binary", "multiclass"):  # predict_proba's two columns; several models in one -p
        pred_sels = _prediction_sets(task, req, sources, explicit, pred_sels, spaces_for, calls, peeks, notes)

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
            chosen, signed_note = _binary_defaults(chosen, req, sources, spaces_for, explicit, pred_sels, name, peeks)
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
                if _p_role(call.spec) is None:
                    roles = [r.name for r in call.spec.roles if r.required and r.name != "target"]
                    raise UsageError(
                        f"-p binds a prediction, and {call.spec.name} reads embeddings ({', '.join(roles)}): "
                        f"bind them with --col, e.g. --col {roles[0]}={psel.text}"
                    )
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
    equal: list[tuple[Selector, Selector, bool]] = []
    if req.baseline or req.baseline_pred:
        jobs, labels, equal = _with_baseline(req, all_sources, sources, jobs, labels, len(calls))
    if len(set(labels)) != len(labels):
        raise UsageError("the same prediction set is given twice with -p")

    ctx = Context(task=task, grad=req.grad)
    if req.grad:
        from lossctl import io

        ctx.rows_bound = io.rows_upper_bound(sources[0])  # exact top-1% gradient shares in one pass
    plan = Plan(req, all_sources, task, inferred, jobs, labels, ctx, weight, by, idsel, equal=equal)
    plan.notes.extend(notes)
    if signed_note:
        plan.notes.append(signed_note)
    if req.losses:
        plan.notes.extend(_margin_on_probabilities(plan, peeks))
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


def _with_baseline(req: Request, all_sources, sources, jobs: list[Job], labels: list[str], ncalls: int):
    """Each loss's jobs preceded by a job on the baseline's predictions (so that comparisons
    give candidate − baseline), and the columns the baseline file must share with DATA."""
    import dataclasses

    npred = len(labels)
    out: list[Job] = []
    equal: list[tuple[Selector, Selector, bool]] = []
    base_src = len(all_sources) - 1
    bfile = all_sources[base_src]
    for li in range(ncalls):
        first = jobs[li * npred]
        prole = _pred_role(first.call.spec)
        cand = first.binding.roles.get(prole)
        if req.baseline and req.baseline_pred:
            sel = select(req.baseline_pred, bfile.columns, bfile.types, bfile.name, "--baseline-pred")
            sel.src = base_src
        elif req.baseline:
            if cand is None:
                raise UsageError(f"{first.call.spec.name} has no prediction column to take from the baseline file")
            missing = [c for c in cand.columns if c not in bfile.columns]
            if missing:
                raise InputError.at(
                    f"no column '{missing[0]}' for the baseline's predictions (the candidate's column; "
                    f"--baseline-pred COL names another); columns: {', '.join(bfile.columns)}", source=bfile.name)
            sel = dataclasses.replace(cand, src=base_src, how="explicit")
        else:
            assert req.baseline_pred is not None
            sel = _select(req.baseline_pred, sources, len(sources) - 1, "--baseline-pred")
        if cand is not None and sel.src == cand.src and sel.columns == cand.columns:
            raise UsageError(f"--baseline-pred {req.baseline_pred}: the candidate's own prediction column(s)")
        roles = dict(first.binding.roles)
        roles[prole] = sel
        out.append(Job(first.call, Binding(roles), BASELINE, _unset_factory))
        out.extend(jobs[li * npred:(li + 1) * npred])
        target = first.binding.roles.get("target")
        if req.baseline and target is not None and all(c in bfile.columns for c in target.columns) and \
                not any(t.columns == target.columns for t, _, _ in equal):
            cat = any(r.name == "target" and r.categorical for r in first.call.spec.roles)
            equal.append((target, dataclasses.replace(target, src=base_src), cat))
    return out, [BASELINE, *labels], equal


def _by_own_name(role: registry.Role, sel: Selector) -> bool:
    """Whether a role's columns carry one of its own conventional names (found by
    name, or given with -t/-p/--col: `-t mask` still says segmentation)."""
    if sel.how == "specific":
        return True
    if sel.how != "explicit" or not role.names:
        return False
    from lossctl.binding import find_by_names

    return find_by_names(role.names, sel.columns, {}, set()) is not None


def _is_margin(spec: registry.LossSpec) -> bool:
    """A margin loss (hinge, exponential…): its labels are −1/+1 and it reads scores as given."""
    return any(r.name == "target" and r.signed for r in spec.roles)


def _binary_defaults(specs, req, sources, spaces_for, explicit, pred_sels, name, peeks):
    """The default binary set, by what the prediction holds (CLI.md, Choosing losses).

    −1/+1 labels: only the margin losses (bce and focal would stop at the first −1), with a
    note. Logits (--logits, or columns named like logits): every loss. Probabilities (values
    in [0, 1]): the probability losses; hinge and exponential would read them as margins.
    Other scores: the margin losses, with a note (--logits reads them as logits).
    """
    margin = [s for s in specs if _is_margin(s)]
    proba = [s for s in specs if not _is_margin(s)]
    if not margin or not proba:
        return specs, ""
    ex = dict(explicit)
    if pred_sels:
        ex.setdefault(_pred_role(margin[0]), pred_sels[0])
    b = bind_roles(margin[0], spaces_for, ex, name, required=False)
    t = b.roles.get("target") if b is not None else None
    if t is None or t.vector:
        return specs, ""
    y = _peek_cached(peeks, sources, t)
    p = b.roles.get("pred")
    if p is None:
        return specs, ""
    kind = binary_set(y, _peek_cached(peeks, sources, p), logits=_reads_logits(req, p, ()))
    if kind == "signed":
        left = ", ".join(s.name for s in proba)
        return margin, f"labels are −1/+1: the default set's {left} need 0/1 labels and are left out (-l to choose)"
    if kind == "proba":
        return proba, ""
    if kind == "margin":
        return margin, (
            f"'{p.text}' holds scores outside [0, 1]: the default set is the margin losses "
            f"{', '.join(s.name for s in margin)} on them as given; --logits reads them as logits "
            f"and adds {', '.join(s.name for s in proba)}"
        )
    return specs, ""


def _margin_on_probabilities(plan: Plan, peeks: dict) -> list[str]:
    """A note for each prediction set that margin losses asked for by name read as scores
    although it holds probabilities: the number is a hinge of a probability, not of a margin."""
    if plan.request.logits:
        return []
    by_pred: dict[str, list[str]] = {}
    sels: dict[str, Selector] = {}
    for job in plan.jobs:
        if not _is_margin(job.call.spec):
            continue
        p = job.binding.roles.get("pred")
        if p is None or p.vector or (plan.request.logits is None and logits_hinted(p)):
            continue
        by_pred.setdefault(job.pred, [])
        if job.call.spec.name not in by_pred[job.pred]:
            by_pred[job.pred].append(job.call.spec.name)
        sels[job.pred] = p
    out = []
    for pred, names in by_pred.items():
        v = _peek_cached(peeks, plan.sources, sels[pred])
        v = v[np.isfinite(v)]
        if v.size and v.min() >= 0 and v.max() <= 1:
            out.append(
                f"{', '.join(names)} computed on '{pred}' as margin scores f as given (0/1 labels read as −1/+1), "
                f"but its values lie in [0, 1] like probabilities: a margin loss is meant for decision values "
                f"or logits (bce and focal score probabilities)"
            )
    return out


def _prediction_sets(task, req, sources, explicit, pred_sels, spaces_for, calls, peeks, notes):
    """The prediction sets of a classifier, checked against the target's values.

    Two columns that sum to 1 on a binary task are predict_proba's layout: the second (the
    positive class) is scored, with a note. K columns that cannot be one prediction set
    (two binary models in one -p) are an input error that says how to compare them.
    """
    tsel = explicit.get("target")
    if tsel is None:
        found = generic_matches("target", spaces_for(registry.Role("target")), set())
        tsel = found[0] if len(found) == 1 else None
    if tsel is None or tsel.vector:
        return pred_sels
    given = bool(pred_sels)
    sels = pred_sels
    if not given:
        found = generic_matches("pred", spaces_for(registry.Role("pred")), {(tsel.src, c) for c in tsel.columns})
        sels = found[:1] if len(found) == 1 else []
    out = []
    changed = False
    for psel in sels:
        width = psel.width_hint
        if width is None:
            width = _peek_cached(peeks, sources, psel).shape[1]
        if width < 2:
            out.append(psel)
            continue
        y = _peek_cached(peeks, sources, tsel)
        p = _peek_cached(peeks, sources, psel)
        logits = _reads_logits(req, psel, calls)
        v = task_from_values(y, p, width, logits=logits)
        if v.several_sets:
            _several_sets_error(psel, tsel, y, p, v, sources)
        if logits and width == 2 and not psel.list_column and task == "multiclass":
            yv = y[np.isfinite(y)]
            if yv.size and set(np.asarray(yv).tolist()) <= {0.0, 1.0}:  # values cannot tell these apart
                notes.append(
                    f"'{psel.text}' is read as the logits of 2 classes (softmax); if they are two binary "
                    f"models, compare them with " + " ".join(f"-p {c}" for c in psel.columns)
                )
        if task == "binary" and v.positive_column and not psel.list_column:
            col = psel.columns[1]
            notes.append(
                f"'{psel.text}' holds two columns that sum to 1 (predict_proba's layout): binary, "
                f"scored on '{col}', the probability of the positive class"
            )
            out.append(Selector(col, [col], vector=False, src=psel.src))
            changed = True
        else:
            out.append(psel)
    if given or changed:
        return out
    return pred_sels


def _several_sets_error(psel, tsel, y, p, v, sources) -> None:
    cols = psel.columns
    k = len(cols) if not psel.list_column else p.shape[1]
    yv = y[np.isfinite(y)]
    if yv.size and not np.all(yv == np.round(yv)):
        why = f"the target '{tsel.text}' holds real values, not class labels"
    elif v.row is not None:
        why = (f"its rows do not sum to 1 as class probabilities do (row {v.row + 1} sums to "
               f"{float(np.sum(p[v.row])):.6g}; class logits take --logits)")
    else:
        why = f"the target '{tsel.text}' does not hold labels 0..{k - 1}"
    suggest = " ".join(f"-p {c}" for c in cols) if not psel.list_column else "one -p per model"
    raise InputError.at(
        f"'{psel.text}' selects {k} columns for one prediction set, but {why}: these look like {k} "
        f"prediction sets; compare them with {suggest}",
        source=sources[psel.src].name,
    )


def _reads_logits(req, psel, calls) -> bool:
    if req.logits is not None:
        return bool(req.logits)
    return logits_hinted(psel) or any(c.params.get("logits") for c in calls)


def _p_role(spec: registry.LossSpec) -> str | None:
    """The role a plain -p binds; never an embedding role (metric learning binds those by
    their names or --col embedding=…/anchor=…)."""
    return None if spec.task == "metric" else _pred_role(spec)


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
    if pred_sels and _p_role(spec):
        ex.setdefault(_p_role(spec), pred_sels[0])
    return bind_roles(spec, spaces_for, ex, name, required=False) is not None


def _explicit_param(call: registry.LossCall, key: str) -> bool:
    return f"{key}=" in call.text


def _pred_role(spec: registry.LossSpec) -> str:
    names = [r.name for r in spec.roles]
    if "pred" in names:
        return "pred"
    return spec.grad_roles[0] if spec.grad_roles else names[-1]


def _infer_from_data(req, sources, explicit, pred_sels, spaces_for, calls=(), peeks=None) -> str:
    peeks = {} if peeks is None else peeks
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
    y = _peek_cached(peeks, sources, tsel)
    pw = psel.width_hint
    p = _peek_cached(peeks, sources, psel) if pw is None or pw >= 2 else None
    if pw is None:
        pw = p.shape[1] if p.ndim == 2 else 1
    score_named = re.match(r"^(prob|proba|probability|p|logit|logits|score|scores)$", psel.columns[0], re.I)
    v = task_from_values(y, p, pw, logits=_reads_logits(req, psel, calls), score_named=bool(score_named))
    if v.positive_column and psel.list_column:  # a list column cannot be cut to its second value: 2 classes
        return "multiclass"
    return v.task


def _peek_cached(peeks: dict, sources: Sequence[Any], sel: Selector) -> np.ndarray:
    key = (sel.src, tuple(sel.columns), sel.list_column)
    if key not in peeks:
        peeks[key] = _peek(sources[sel.src], sel)
    return peeks[key]


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
    if sel.vector and len(arrays) > 1:
        m = _stacked(arrays)
        if m is not None:
            return m
    cols = [_numeric(a, c, source, offset) for a, c in zip(arrays, sel.columns)]
    if not sel.vector:
        return cols[0]
    return np.column_stack(cols) if cols else np.empty((0, 0))


def _stacked(arrays: list[Any]) -> np.ndarray | None:
    """Integer and float columns straight into one (n, k) float64 array: each value read
    once and written once, widened as it is copied (no float32 stack to widen again),
    nulls as NaN. None for other types (booleans, decimals, text): column by column."""
    import pyarrow as pa

    arrays = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays]
    if not all((pa.types.is_floating(a.type) and not pa.types.is_float16(a.type)) or pa.types.is_integer(a.type)
               for a in arrays):
        return None
    out = np.empty((len(arrays[0]), len(arrays)))
    for j, a in enumerate(arrays):
        out[:, j] = float_view(a)
    return out


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
        # integers beyond 2**53 (and decimals) round to the nearest double, as the same number read from text does
        arr = arr.cast(pa.float64(), safe=False)
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
    if pa.types.is_uint64(t) and len(arr) and arr.null_count == 0 and \
            int(np.asarray(arr, dtype=np.uint64).max()) > np.iinfo(np.int64).max:
        return np.asarray(arr, dtype=np.uint64)  # beyond int64: as they are
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
                    f"{plan.sources[0].name}, {counts[j]} in {plan.sources[j].name}; "
                    "align them by position or join them with --key COL",
                    source=plan.sources[j].name,
                )
            return
        k = min(b.num_rows for b in bufs)
        yield [b.slice(0, k) for b in bufs]
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
    """Rows of DATA and DATA2 with equal key values, in key order. Keys compare by value:
    integers, integral floats and digit strings are equal (7, 7.0, "7", "007")."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from lossctl import io

    key = plan.request.key
    tables, keys = [], []
    for i, src in enumerate(plan.sources):
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
    for i, (src, k) in enumerate(zip(plan.sources, ks)):
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
    plan.join_info = {"matched": matched, **{n: len(k) - matched for n, k in zip(_join_names(plan), ks)}}
    if matched == 0:
        raise InputError.at(f"no key value of '{key}' occurs in both files", source=plan.sources[1].name)
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
    names = ["only_in_data", "only_in_data2"][:len(plan.sources) - bool(plan.request.baseline)]
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
    for a, b, cat in plan.equal:
        for sel in (a, b):
            for c in sel.columns:
                need[(sel.src, c)] = need.get((sel.src, c), False) or not cat
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

    def __init__(self, plan: Plan, row_offset: int = 0, input_offset: int = 0) -> None:
        self.plan = plan
        self.dropped = 0
        self.rows = row_offset  # global index of the next row (shards start where the previous ended)
        self.weight_total = 0.0
        self.row_offset = row_offset
        self.offset_in = input_offset  # input rows before this one (a fragment of a dataset: its first row's)

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
        names = [s.name for s in self.plan.sources]
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
            enc = _label_array(col, "--by", self.plan.sources[sel.src].name, sel.columns[0]).dictionary_encode()
            idx, dictionary = enc.indices, enc.dictionary
        values = self._by_values(dictionary, sel)
        codes = _index_codes(idx)
        if idx.null_count:
            codes[~_valid(idx)] = len(values)
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
        source = plan.sources[sel.src].name
        t = dictionary.type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
            out = dictionary.to_pylist()  # (as labels_view reads them; without importing pyarrow.compute)
            cache[key] = (dictionary, out)
            return list(out)
        arr = _label_array(dictionary, "--by", source, sel.columns[0])
        missing = np.asarray(arr.is_null()) if arr.null_count else None
        if arr.null_count:
            arr = arr.fill_null(_fill_value(arr.type))
        vals = labels_view(arr)
        if vals.dtype.kind == "f":
            nan = np.isnan(vals)
            missing = nan if missing is None else (missing | nan)
            finite = vals[~missing]
            if plan.sources[sel.src].fmt in ("csv", "tsv", "jsonl") and np.all(np.isfinite(finite)) \
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
        source = plan.sources[sel.src].name
        is_by = any(sel is s for s in plan.by)
        what = "--by" if is_by else "--id" if sel is plan.id else "label"
        col = _label_array(rb.column(sel.columns[0]), what, source, sel.columns[0])
        missing = None
        if col.null_count:
            if not is_by:
                i = int(np.flatnonzero(np.asarray(col.is_null()))[0])
                raise InputError.at("missing value", source=source, column=sel.columns[0], row=self.offset_in + i + 1)
            missing = np.asarray(col.is_null())
            col = col.fill_null(_fill_value(col.type))
        vals = labels_view(col)
        if vals.dtype.kind == "f":
            nan = np.isnan(vals)
            if is_by and nan.any():
                missing = nan if missing is None else (missing | nan)
            finite = vals[~missing] if missing is not None else vals
            if plan.sources[sel.src].fmt in ("csv", "tsv", "jsonl") and np.all(np.isfinite(finite)) \
                    and np.all(finite == np.round(finite)):
                # a text column that is also read as numbers (--by label): its values as the file
                # writes them, 0 and 1 as in a Parquet int column, not 0.0 and 1.0
                vals = np.where(missing, 0, vals).astype(np.int64) if missing is not None else vals.astype(np.int64)
        if missing is not None and missing.any():
            vals = vals.astype(object)
            vals[missing] = None
        return vals


def _index_codes(idx: Any) -> np.ndarray:
    """A dictionary's integer indices as a fresh intp array, read from the buffer (Arrow's
    to_numpy goes through its pandas bridge: importing pandas costs 0.2 s)."""
    n = len(idx)
    if n == 0:
        return np.empty(0, dtype=np.intp)
    dtype = np.dtype(str(idx.type))
    return np.frombuffer(idx.buffers()[1], dtype=dtype, count=n, offset=idx.offset * dtype.itemsize).astype(np.intp)


def _valid(arr: Any) -> np.ndarray:
    """Which values of an Arrow array are not null, from its validity bitmap."""
    bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little")[arr.offset:arr.offset + len(arr)].astype(bool)


_NESTED = (("list", "lists"), ("large_list", "lists"), ("fixed_size_list", "lists"), ("list_view", "lists"),
           ("large_list_view", "lists"), ("struct", "structs"), ("map", "maps"), ("union", "unions"))


def _label_array(col: Any, what: str, source: str, column: str) -> Any:
    """An Arrow column of labels as one that :func:`labels_view` reads and JSON can hold:
    numbers, booleans and strings stay; decimals, timestamps, dates and times become their
    exact text (ISO 8601), durations a count with its unit ("1500ms"), bytes their UTF-8
    text or else "0x…" hex. Nested values (lists, structs, maps) are an input error."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if isinstance(t, pa.BaseExtensionType):  # a UUID, a JSON string …: its stored values
        if t.extension_name == "arrow.uuid":
            import uuid

            return pa.array([None if v is None else str(uuid.UUID(bytes=v)) for v in col.storage.to_pylist()],
                            pa.string())
        col = col.storage
        t = col.type
    for name, plural in _NESTED:
        check = getattr(pa.types, f"is_{name}", None)
        if check is not None and check(t):
            raise InputError.at(
                f"{what} takes a column of single values (strings, numbers, booleans, dates or times); "
                f"this one holds {plural} ({t})", source=source, column=column)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_string(t) \
            or pa.types.is_large_string(t):
        return col
    if pa.types.is_null(t):
        return pa.nulls(len(col), pa.float64())
    if pa.types.is_decimal(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return pc.cast(col, pa.string())
    if pa.types.is_timestamp(t):  # "2020-01-01 00:00:00.000000" → ISO 8601's "T"
        return pc.replace_substring(pc.cast(col, pa.string()), " ", "T", max_replacements=1)
    if pa.types.is_duration(t):
        return pc.binary_join_element_wise(pc.cast(pc.cast(col, pa.int64()), pa.string()), pa.scalar(t.unit), "")
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        vals = col.to_pylist()
        return pa.array([None if v is None else _bytes_text(v) for v in vals], pa.string())
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError.at(f"{what} cannot use values of type {t}", source=source, column=column) from None


def _bytes_text(v: bytes) -> str:
    """Bytes as their text when they are printable UTF-8, else as "0x" and hex digits."""
    try:
        text = v.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + v.hex()
    return text if text.isprintable() else "0x" + v.hex()


def _fill_value(t: Any) -> Any:
    """A placeholder for the nulls of a --by column of type ``t`` (replaced by None after)."""
    import pyarrow as pa

    if pa.types.is_boolean(t):
        return pa.scalar(False)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.scalar("", t)
    return pa.scalar(0, t)


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
    weight_total: float = 0.0


def options(plan: Plan) -> Options:
    req = plan.request
    return Options(grad=req.grad, ci=req.ci, bootstrap=req.bootstrap, seed=req.seed, reduction=req.reduction)


def accumulate(
    plan: Plan, row_offset: int = 0, progress: Callable[[int], None] | None = None, sample: bool = False,
    *, input_offset: int = 0, whole: bool = True,
) -> Accumulated:
    """Stream every batch through every state (and every slice's states).

    ``input_offset`` is the input rows before the first (a fragment's place in its dataset,
    for messages); ``whole=False`` leaves the checks that need every row to the caller
    (:func:`check_rows`), for a fragment of a larger run."""
    from lossctl.accumulate import RowSample

    opts = options(plan)
    sampler = RowSample() if sample and plan.jobs else None
    states = [_new_state(j, opts) for j in plan.jobs]
    kernels = [s.kernel for s in states if isinstance(s, DecomposableState)]
    feeder = _Feeder(plan, row_offset, input_offset)

    if any(k.needs_prepass for k in kernels):
        for jobs_b, _, _ in _Feeder(plan, row_offset, input_offset).batches():
            for s, b in zip(states, jobs_b):
                if isinstance(s, DecomposableState) and s.kernel.needs_prepass:
                    s.kernel.validate(b)
                    s.kernel.prepass(b)
        for k in kernels:
            if k.needs_prepass:
                k.end_prepass()
        plan.ctx.prepass_done = True  # type: ignore[attr-defined]

    slices = None
    if plan.by:
        from lossctl.slices import Slices

        slices = Slices(len(plan.by), states, [lambda j=j: _new_state(j, opts) for j in plan.jobs], opts)
    for jobs_b, by_vals, _ in feeder.batches():
        for s, b in zip(states, jobs_b):
            _validate(s, b)
            s.update(b)
        if progress is not None and jobs_b:
            progress(jobs_b[0].n)
        if sampler is not None and jobs_b and jobs_b[0].n:
            cols = _sample_cols(plan, jobs_b)
            if cols:
                sampler.update(cols, jobs_b[0].offset)
        if slices is not None:
            slices.update(jobs_b, by_vals)
    if any(s.two_pass for s in states) or (slices is not None and slices.two_pass):
        for jobs_b, by_vals, _ in _Feeder(plan, row_offset, input_offset).batches():
            for s, b in zip(states, jobs_b):
                if s.two_pass:
                    s.update2(b)
            if slices is not None:
                slices.update2(jobs_b, by_vals)
    used = feeder.rows - row_offset
    if whole:
        check_rows(plan, used, feeder.dropped, feeder.weight_total)
    group_states: Any = slices.view() if slices is not None else {}
    group_rows = slices.rows_view() if slices is not None else {}
    return Accumulated(states, group_states, group_rows, used, feeder.dropped, getattr(plan, "join_info", None),
                       sampler, feeder.weight_total)


def check_rows(plan: Plan, used: int, dropped: int, weight_total: float) -> None:
    """What only the whole data can tell: rows were left, and weights that are not all 0."""
    if plan.weight is not None and used and weight_total == 0:
        raise InputError.at("every weight is 0: there is nothing to average", source=plan.sources[plan.weight.src].name,
                            column=plan.weight.columns[0])
    if used == 0:
        raise InputError.at(
            f"no rows left: --nan drop dropped all {dropped}" if dropped else "no rows to evaluate",
            source=plan.sources[0].name,
        )


def run(plan: Plan) -> Report:
    return build_report(plan, accumulate(plan))


def build_report(plan: Plan, acc: Accumulated) -> Report:
    req = plan.request
    opts = options(plan)
    plan._boot = None  # type: ignore[attr-defined]
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
    report.warnings += run_notes(plan, acc.dropped, report.join, report.sources)
    return report


def _sample_cols(plan: Plan, jobs_b: list[Batch]) -> dict[str, np.ndarray]:
    """The columns the pictures sample from a batch: the target, and the prediction of each
    prediction set (the first loss's jobs: "pred", "pred.1", …)."""
    npred = max(1, len(plan.pred_labels))
    cols: dict[str, np.ndarray] = {}
    for pi, b in enumerate(jobs_b[:npred]):
        t, p = b.cols.get("target"), b.cols.get("pred")
        if t is None or p is None or t.dtype.kind != "f" or p.dtype.kind != "f":
            return cols if pi else {}
        cols.setdefault("target", t)
        cols["pred" if pi == 0 else f"pred.{pi}"] = p
    return cols


def run_notes(plan: Plan, dropped: int, join: dict[str, int] | None, sources: list[str]) -> list[str]:
    """What a run says about its rows: those --nan drop dropped, the keys --key left unmatched."""
    out = []
    if dropped:
        out.append(f"--nan drop: dropped {dropped} rows with missing or infinite values")
    keys = [k for k in ("only_in_data", "only_in_data2", "only_in_baseline") if k in (join or {})]
    if join and any(join[k] for k in keys):
        counts = [(join[k], src) for k, src in zip(keys, sources)]
        if len(counts) == 2:
            text = f"{counts[0][0]} keys only in {counts[0][1]}, {counts[1][0]} only in {counts[1][1]}"
        else:  # three files: a key is unmatched when any other file lacks it
            text = ", ".join(f"{n} keys of {src}" for n, src in counts) + " lack a match in another file"
        out.append(f"--key {plan.request.key}: {text}; {join['matched']} matched")
    return out


def _picture(plan: Plan, cols: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """What the terminal pictures need: each model's residuals and the loss curves, or each
    model's probabilities (from the sample of rows; the renderer labels it as one)."""
    from lossctl import pictures

    y = cols["target"]
    preds = [cols[k] for k in ["pred"] + [f"pred.{i}" for i in range(1, len(plan.pred_labels))] if k in cols]
    labels = list(plan.pred_labels[: len(preds)]) or ["pred"]
    if plan.task == "regression" and y.ndim == 1 and all(p.ndim == 1 for p in preds):
        residuals = [p - y for p in preds]
        xs = pictures.curve_grid(residuals)
        curves = []
        seen = set()
        for job in plan.jobs:
            if job.call.text in seen or not job.call.spec.row_mean or job.call.spec.roles[-1].name != "pred":
                continue
            seen.add(job.call.text)
            k = job.kernel_factory()
            b = Batch({"target": np.zeros_like(xs), "pred": xs}, xs.size)
            curves.append((job.call.text, k.per_row(b, False)[0]))
        return {"kind": "regression", "models": list(zip(labels, residuals)), "xs": xs, "curves": curves}
    if plan.task in ("binary", "multiclass"):
        models = []
        for pi, (label, p) in enumerate(zip(labels, preds)):
            prob = p
            if plan.jobs[pi].call.params.get("logits"):
                from lossctl.losses._numerics import sigmoid, softmax

                prob = softmax(p) if p.ndim == 2 else sigmoid(p)
            if (prob.ndim == 2) != (plan.task == "multiclass") or not np.all((prob >= 0) & (prob <= 1)):
                return None
            models.append((label, prob))
        return {"kind": "classification", "target": y, "models": models}
    return None


def _validate(s: State, b: Batch) -> None:
    k = getattr(s, "kernel", None)
    if k is not None:
        k.validate(b)
    elif hasattr(s, "validate"):
        s.validate(b)  # type: ignore[attr-defined]


def _result_for(job: Job, st: State, opts: Options, in_slice: bool = False) -> LossResult:
    try:
        r = st.result()
    except InputError as e:
        if not in_slice:
            raise
        # a slice where the loss is undefined (one class for mined triplets): say so there
        r = {"value": math.nan, "n": getattr(st, "n", 0), "notes": [f"undefined in this slice: {e}"]}
    gs = getattr(st, "grad", None)
    if (r.get("grad") or {}).get("top1_share_lower_bound") and hasattr(gs, "top1_note") \
            and gs.top1_note() not in r.get("notes", []):  # (states other than the decomposable one)
        r["notes"] = [*r.get("notes", []), gs.top1_note()]
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
    """Each result's percentile interval, from one resampling of the set's units (``plan._boot``),
    which ``_comparisons`` then reads for the paired deltas: drawn once for every job and delta."""
    mats: list[np.ndarray | None] = []
    fns: dict[int, Callable[[np.ndarray], np.ndarray]] = {}
    method = None
    for i, s in enumerate(states):
        mat = None
        if isinstance(s, DecomposableState) and s.boot is not None and s.boot.count:
            mat, method = s.boot.matrix()
            fns[i] = s.boot_fn()
        else:
            results[i].notes.append("no bootstrap interval: this loss is not a function of row sums")
        mats.append(mat)
    first = next((m for m in mats if m is not None), None)
    if first is None or first.shape[0] < 2:
        for i in fns:  # --ci was asked for: say why there is none
            results[i].notes.append("no bootstrap interval: it needs at least 2 rows")
        return
    boot = Resampling(mats, opts.bootstrap, opts.seed + seed_offset)
    for i, fn in fns.items():
        v = _replicates(lambda: fn(boot.totals(i)))
        results[i].ci = percentile_interval(v, opts.ci)
        results[i].ci_method = method
    plan._boot = (boot, fns)  # type: ignore[attr-defined]


def _replicates(fn: Callable[[], Any]) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # replicates of infinite sums: dropped
        return np.asarray(fn(), dtype=float).reshape(-1)


def _comparisons(plan: Plan, states: list[State], results: list[LossResult], opts: Options,
                 seed_offset: int = 0) -> list[Comparison]:
    """Each prediction set after the first against the first, loss by loss; with --ci the
    interval of the delta comes from a paired bootstrap: the resampling of the results' own
    intervals (``plan._boot``), the same resample of rows for both."""
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
                rs, fns = boot
                if base in fns and j in fns:
                    d = _replicates(lambda: fns[j](rs.totals(j)) - fns[base](rs.totals(base)))
                    c.ci = percentile_interval(d, opts.ci)
            out.append(c)
    return out


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
