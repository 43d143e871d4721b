"""Planning: a request and its sources' schemas → a Plan (task inference, default loss sets, column binding)."""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from lossctl import registry
from lossctl.binding import Binding, Selector, binary_set, bind_roles, generic_matches, logits_hinted, select, task_from_values
from lossctl.engine import Context, bootstrap_notes
from lossctl.errors import InputError, UsageError
from lossctl.align import needed_columns
from lossctl.arrays import to_matrix
from lossctl.plan import BASELINE, Inputs, Job, Plan, Request, pred_role


def _spaces(sources: Sequence[Any]):
    spaces = [(i, s.columns, s.types) for i, s in enumerate(sources)]

    def spaces_for(role: registry.Role):
        if len(spaces) == 1:
            return spaces
        return list(reversed(spaces)) if role.name in ("pred",) or not _is_target_side(role) else spaces

    return spaces_for


def _is_target_side(role: registry.Role) -> bool:
    return role.name in ("target", "group", "weight")


def select_in(text: str, sources: Sequence[Any], prefer: int, role: str = "selector") -> Selector:
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


def prepare(req: Request) -> tuple[Plan, Inputs]:
    """Open the request's inputs and plan the evaluation: the plan, and the opened inputs it
    reads (close them when done: ``plan, inputs = prepare(req)``; ``with inputs: ...``)."""
    from lossctl import io
    from lossctl.options import CLI, EvalOptions

    # the request's options, checked as the command line's (check's config values were checked as read)
    EvalOptions.validated(CLI, reduction=req.reduction, nan=req.nan, task=req.task, grad=req.grad, logits=req.logits,
                          ci=req.ci, bootstrap=req.bootstrap, seed=req.seed, min_rows=req.min_rows,
                          batch_rows=req.batch_rows, input_format=req.input_format)
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
        plan, planned = _plan_sources(req, sources[:len(paths)], calls, want_all, base)
        return plan, Inputs(planned)
    except BaseException:
        for s in sources:
            s.close()
        raise


def _plan_sources(req: Request, sources: list[Any], calls: list[registry.LossCall], want_all: bool,
                  base: Any = None) -> tuple[Plan, list[Any]]:
    """Several paths are one dataset when each holds every bound column; two between which
    the bound columns are split are targets and predictions. A bound column both of two
    such files hold is an error: it is never silently taken from one of them. A baseline file
    (lossctl check) comes last, whatever the paths make."""
    extra = [base] if base is not None else []

    def on(srcs: list[Any]) -> tuple[Plan, list[Any]]:
        return plan_on(req, srcs, list(calls), want_all), srcs

    if len(sources) == 1:
        return on(sources + extra)
    if len(sources) > 2 or (not req.key and set(sources[0].columns) == set(sources[1].columns)):
        return on([_as_dataset(sources)] + extra)
    plan = plan_on(req, sources + extra, list(calls), want_all)  # as targets and predictions
    bound = [(s, c) for (s, c) in needed_columns(plan) if c != req.key and s < 2]
    both = list(dict.fromkeys(c for s, c in bound if c in sources[1 - s].columns))
    if not both:
        return plan, sources + extra
    if not req.key and len(both) == len({c for _, c in bound}):
        return on([_as_dataset(sources)] + extra)
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


def plan_on(req: Request, sources: list[Any], calls: list[registry.LossCall], want_all: bool) -> Plan:
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
        explicit["target"] = select_in(req.target, sources, 0, "-t/--target")
    for role, text in req.cols.items():
        explicit[role] = select_in(text, sources, pred_src if role != "target" else 0, f"--col {role}")
    pred_sels = [select_in(p, sources, pred_src, "-p/--pred") for p in req.preds]
    weight = select_in(req.weight, sources, 0, "-w/--weight") if req.weight else None  # never guessed by name
    by = []
    for b in req.by:  # a comma list or glob of columns is a cross of them, like --by repeated
        sel = select_in(b, sources, 0, "--by")
        by += [Selector(c, [c], vector=False, src=sel.src) for c in sel.columns]
    idsel = select_in(req.id, sources, 0, "--id") if req.id is not None else None  # --id "" is an error, not ignored

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
    peeks: dict = {}
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
                if spec.task == "distribution" and not _divergence_file(spec, b, pred_sels, spaces_for, sources,
                                                                         peeks):
                    continue
                specific.append(spec)
        if task is None and specific:
            task = specific[0].default_for[0] if specific[0].task not in specific[0].default_for else specific[0].task
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
        elif task == "multiclass":
            chosen = _multiclass_defaults(chosen, req, sources, spaces_for, explicit, pred_sels, name, peeks)
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
                ex[pred_role(call.spec)] = psel
            b = bind_roles(call.spec, spaces_for, ex, name)
            assert b is not None
            prole = pred_role(call.spec)
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
            jobs.append(Job(job_call, b, label))
    equal: list[tuple[Selector, Selector, bool]] = []
    if req.baseline or req.baseline_pred:
        jobs, labels, equal = _with_baseline(req, all_sources, sources, jobs, labels, len(calls))
    if len(set(labels)) != len(labels):
        raise UsageError("the same prediction set is given twice with -p")

    rows_bound = None
    if req.grad:
        from lossctl import io

        rows_bound = io.rows_upper_bound(sources[0])  # exact top-1% gradient shares in one pass
    n_classes, target_kind = _shape(jobs, all_sources)
    ctx = Context(task=task, grad=req.grad, n_classes=n_classes, target_kind=target_kind, rows_bound=rows_bound)
    if signed_note:
        notes.append(signed_note)
    if req.losses:
        notes.extend(_margin_on_probabilities(req, jobs, all_sources, peeks))
    if logits_by_name:
        notes.append(f"read '{logits_by_name}' as logits (named like logits; --logits/--no-logits to say so)")
    if req.ci:
        notes.extend(bootstrap_notes(req.ci, req.bootstrap))
    plan = Plan(req, tuple(s.name for s in all_sources), tuple(s.fmt for s in all_sources), task, inferred,
                tuple(jobs), tuple(labels), ctx, weight, tuple(by), idsel, bindings_of(jobs, labels, weight),
                tuple(notes), tuple(equal))
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
        prole = pred_role(first.call.spec)
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
            sel = select_in(req.baseline_pred, sources, len(sources) - 1, "--baseline-pred")
        if cand is not None and sel.src == cand.src and sel.columns == cand.columns:
            raise UsageError(f"--baseline-pred {req.baseline_pred}: the candidate's own prediction column(s)")
        roles = dict(first.binding.roles)
        roles[prole] = sel
        out.append(Job(first.call, Binding(roles), BASELINE))
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
        ex.setdefault(pred_role(margin[0]), pred_sels[0])
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


def _divergence_file(spec: registry.LossSpec, b: Any, pred_sels: list, spaces_for: Any, sources: Sequence[Any],
                     peeks: dict) -> bool:
    """Whether a divergence bound by its roles' names (p_*, q_*) says what the file holds: not
    predict_proba's p_* beside class labels y, Q found by a generic name (logits); nor a Q given
    with -p that holds no distributions (-p logit_*). Values decide only for this family, whose
    losses read distributions (a segmentation's prediction may be logits, which its losses take)."""
    prole = _p_role(spec)
    by_names = all(r.name in b.roles and (_by_own_name(r, b.roles[r.name]) or (pred_sels and r.name == prole))
                   for r in spec.roles if r.required)
    if not by_names and generic_matches("target", spaces_for(registry.Role("target")), set()):
        return False
    sel = b.roles.get(prole) if pred_sels and prole else None
    r = next((r for r in spec.roles if r.name == prole), None)
    if sel is not None and r is not None and r.domain.kind in ("probability", "distribution"):
        return _probabilities(_peek_cached(peeks, sources, sel), empty=True)
    return True


def _probabilities(v: Any, empty: bool = False) -> bool:
    """Whether the peeked values, the finite ones, all lie in [0, 1] (``empty`` where there are none)."""
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    return bool(v.min() >= 0 and v.max() <= 1) if v.size else empty


def _scores_only(spec: registry.LossSpec) -> bool:
    """A multi-class margin loss (multi_hinge): it reads class scores as given, never probabilities."""
    return spec.task == "multiclass" and "probability" not in spec.properties.takes


def _multiclass_defaults(specs, req, sources, spaces_for, explicit, pred_sels, name, peeks):
    """The default multi-class set, by what the prediction holds (as the binary one): on
    probabilities (values in [0, 1], not logits) the losses that read probabilities; the
    margin loss multi_hinge would read them as scores. Logits and other scores: every loss."""
    margin = [s for s in specs if _scores_only(s)]
    proba = [s for s in specs if not _scores_only(s)]
    if not margin or not proba:
        return specs
    ex = dict(explicit)
    if pred_sels:
        ex.setdefault(pred_role(margin[0]), pred_sels[0])
    b = bind_roles(margin[0], spaces_for, ex, name, required=False)
    p = b.roles.get(pred_role(margin[0])) if b is not None else None
    if p is None or _reads_logits(req, p, ()):
        return specs
    return proba if _probabilities(_peek_cached(peeks, sources, p)) else specs


def _margin_on_probabilities(req: Request, jobs: list[Job], sources: Sequence[Any], peeks: dict) -> list[str]:
    """A note for each prediction set that margin losses asked for by name read as scores
    although it holds probabilities: the number is a hinge of a probability, not of a margin."""
    if req.logits:
        return []
    by_pred: dict[str, list[str]] = {}
    sels: dict[str, Selector] = {}
    for job in jobs:
        multi = _scores_only(job.call.spec)
        if not (_is_margin(job.call.spec) or multi):
            continue
        p = job.binding.roles.get(pred_role(job.call.spec))
        if p is None or (p.vector and not multi) or (req.logits is None and logits_hinted(p)):
            continue
        by_pred.setdefault(job.pred, [])
        if job.call.spec.name not in by_pred[job.pred]:
            by_pred[job.pred].append(job.call.spec.name)
        sels[job.pred] = p
    out = []
    for pred, names in by_pred.items():
        if _probabilities(_peek_cached(peeks, sources, sels[pred])):
            multi = all(_scores_only(registry.get(n)) for n in names)
            proba = " and ".join(s.name for s in registry.default_losses("multiclass" if multi else "binary")
                                 if not (_scores_only(s) or _is_margin(s)))  # (the standard set's, by the registry)
            how = "class scores as given" if multi else "margin scores f as given (0/1 labels read as −1/+1)"
            out.append(f"{', '.join(names)} computed on '{pred}' as {how}, but its values lie in [0, 1] like "
                       f"probabilities: a margin loss is meant for decision values or logits ({proba} score probabilities)")
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
    return None if spec.task == "metric" else pred_role(spec)


def _variant_that_binds(call: registry.LossCall, spaces_for, explicit, pred_sels, name) -> registry.LossCall:
    """``call`` itself, or the form of its loss with other roles (``-l triplet`` on a file of
    labelled embeddings is the mined triplet) when only that form's roles bind."""
    if _binds(call.spec, spaces_for, explicit, pred_sels, name):
        return call
    for v in registry.variants(call.spec):
        if _binds(v, spaces_for, explicit, pred_sels, name):
            return registry.parse_spec(v.name + call.text[len(call.spec.name):])
    return call



def _binds(spec, spaces_for, explicit, pred_sels, name) -> bool:
    ex = dict(explicit)
    if pred_sels and _p_role(spec):
        ex.setdefault(_p_role(spec), pred_sels[0])
    return bind_roles(spec, spaces_for, ex, name, required=False) is not None


def _explicit_param(call: registry.LossCall, key: str) -> bool:
    return f"{key}=" in call.text




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
        return to_matrix([rb.column(c) for c in sel.columns], sel, src.name, 0)
    return np.empty(0)


def _shape(jobs: list[Job], sources: Sequence[Any]) -> tuple[int | None, str]:
    """Number of classes and target kind, from the bound columns' widths."""
    n_classes, target_kind = None, "scalar"
    for job in jobs:
        t = job.binding.roles.get("target")
        p = job.binding.roles.get(pred_role(job.call.spec))
        if p is not None and p.vector:
            w = p.width_hint
            if w is None:
                w = _peek(sources[p.src], p).shape[1]
            n_classes = w
        if t is not None and t.vector:
            target_kind = "vector"
    return n_classes, target_kind


def bindings_of(jobs: Sequence[Job], pred_labels: Sequence[str], weight: Selector | None) -> dict[str, Any]:
    """Role → the column(s) bound to it, as a report shows them (every prediction set's label)."""
    out: dict[str, Any] = {}
    for job in jobs:
        for role, sel in job.binding.roles.items():
            if role in ("pred",) and len(pred_labels) > 1:
                continue
            out.setdefault(role, sel.columns if sel.vector else sel.columns[0])
    if len(pred_labels) > 1:
        out["pred"] = list(pred_labels)
    if weight:
        out["weight"] = weight.columns[0]
    return out
