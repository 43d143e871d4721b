"""State files: the sufficient statistics of a shard, and their exact merge.

``lossctl eval SHARD --emit-state S`` writes a JSON document (never pickle):

    {"format": "lossctl-state", "version": 1, "lossctl_version": "...",
     "task": ..., "context": {...}, "options": {...}, "jobs": [{"spec", "params", "pred"}],
     "by": [...], "rows": n, "dropped_rows": d, "row_offset": o,
     "states": [<state>, ...], "groups": [{"key": [...], "rows": n, "states": [...]}]}

Numbers are JSON numbers written with Python's shortest round-trip repr, so every
float64 survives exactly; ±inf and NaN are written as the strings "inf", "-inf",
"nan". ``lossctl merge`` adds the states job by job and slice by slice and renders
the report a single run over all shards would give.
"""
from __future__ import annotations

import json
import math
from typing import Any

from lossctl import __version__, registry
from lossctl.engine import Context, State, bootstrap_notes
from lossctl.errors import InputError, UsageError, clip

FORMAT = "lossctl-state"
VERSION = 1


def _encode(x: Any) -> Any:
    if isinstance(x, float):
        if math.isfinite(x):
            return x
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _encode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_encode(v) for v in x]
    if hasattr(x, "item"):
        return _encode(x.item())
    return x


def _decode(x: Any) -> Any:
    if isinstance(x, str) and x in ("nan", "inf", "-inf"):
        return float(x)
    if isinstance(x, dict):
        return {k: _decode(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_decode(v) for v in x]
    return x


def _state_dict(s: State, spec: str) -> dict[str, Any]:
    reason = s.unmergeable_reason  # (the one property every driver reads: the loss is named here)
    if reason is not None:
        raise UsageError(f"--emit-state: {spec}: {reason}")
    return s.to_dict()


def dump(plan: Any, acc: Any, row_offset: int) -> dict[str, Any]:
    req = plan.request
    p = payload(plan, acc, row_offset)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "lossctl_version": __version__,
        "task": plan.task,
        "task_inferred": plan.task_inferred,
        "sources": list(plan.source_names),
        "context": {"n_classes": plan.ctx.n_classes, "target_kind": plan.ctx.target_kind},
        "options": {"grad": req.grad, "ci": req.ci, "bootstrap": req.bootstrap, "seed": req.seed,
                    "reduction": req.reduction, "min_rows": req.min_rows, "key": req.key},
        "jobs": [{"spec": j.call.text, "params": j.call.params, "pred": j.pred} for j in plan.jobs],
        "pred_labels": plan.pred_labels,
        "by": [s.text for s in plan.by],
        "bindings": dict(plan.bindings),
        "rows": p["rows"],
        "dropped_rows": p["dropped_rows"],
        "row_offset": row_offset,
        "states": p["states"],
        "groups": [{**_key_out(g["key"]), "rows": g["rows"], "states": g["states"]} for g in p["groups"]],
    }
    return _encode(doc)


# ------------------------------------------------------------------ states without files


def payload(plan: Any, acc: Any, row_offset: int) -> dict[str, Any]:
    """A shard's states as plain data: the state file's counts, states and slices, not encoded
    for JSON (what a distributed run sends between processes: no classes, no scratch buffers)."""
    return {
        "rows": acc.rows, "dropped_rows": acc.dropped, "row_offset": row_offset,
        "weight_total": float(getattr(acc, "weight_total", 0.0)),
        "states": [_state_dict(s, j.call.text) for s, j in zip(acc.states, plan.jobs)],
        "groups": [{"key": tuple(k), "rows": acc.group_rows[k],
                    "states": [_state_dict(s, j.call.text) for s, j in zip(sts, plan.jobs)]}
                   for k, sts in acc.group_states.items()],
    }


def from_payload(plan: Any, p: dict[str, Any]) -> Any:
    """The :class:`~lossctl.driver.Accumulated` a payload describes, its states built from ``plan``."""
    from lossctl.driver import Accumulated, new_state
    from lossctl.plan import options

    o = options(plan)

    def load(sd: list[dict[str, Any]]) -> list[State]:
        return [new_state(job, plan.ctx, o).load(d) for job, d in zip(plan.jobs, sd)]

    groups = {tuple(g["key"]): load(g["states"]) for g in p["groups"]}
    rows = {tuple(g["key"]): g["rows"] for g in p["groups"]}
    return Accumulated(load(p["states"]), groups, rows, p["rows"], p["dropped_rows"], None, None, p["weight_total"])


def merge_payloads(plan: Any, a: dict[str, Any], b: dict[str, Any], rows_bound: int | None = None) -> dict[str, Any]:
    """Two disjoint shards' payloads as one (``a`` before ``b`` in the data).

    ``rows_bound``: the whole data's rows, where each shard kept its top-1% gradient
    candidates for all of them (a distributed run): the union keeps candidates for that
    many rows too, not for the sum of the shards' bounds."""
    acc, other = from_payload(plan, a), from_payload(plan, b)

    def add(mine: State, theirs: State) -> None:
        if rows_bound is not None:
            for s, bound in ((mine, rows_bound), (theirs, 0)):  # GradSummary.merge adds the two bounds
                for g in (getattr(s, "grad", None), *getattr(s, "grad_by_role", {}).values()):
                    if g is not None and g.rows_bound is not None:
                        g.rows_bound = bound
        mine.merge(theirs)

    for mine, theirs in zip(acc.states, other.states):
        add(mine, theirs)
    for k, sts in other.group_states.items():
        if k in acc.group_states:
            for mine, theirs in zip(acc.group_states[k], sts):
                add(mine, theirs)
            acc.group_rows[k] += other.group_rows[k]
        else:
            acc.group_states[k] = sts
            acc.group_rows[k] = other.group_rows[k]
    acc.rows += other.rows
    acc.dropped += other.dropped
    acc.weight_total += other.weight_total
    return payload(plan, acc, min(a["row_offset"], b["row_offset"]))


def _key_out(k: tuple) -> dict[str, Any]:
    """A slice's key: its values (null for a missing one); ±inf, which JSON cannot hold,
    as "inf"/"-inf" with their places listed in "nonfinite" (a text value "inf" stays text)."""
    d: dict[str, Any] = {"key": list(k)}
    nonfinite = [i for i, v in enumerate(k) if isinstance(v, float) and not math.isfinite(v)]
    if nonfinite:
        d["nonfinite"] = nonfinite
    return d


def _key_in(raw: list[Any], nonfinite: Any) -> list[Any]:
    places = {i for i in nonfinite if isinstance(i, int)} if isinstance(nonfinite, list) else set()
    return [float(v) if i in places and v in ("inf", "-inf", "nan") else v for i, v in enumerate(raw)]


def encode(doc: dict[str, Any]) -> str:
    """The text of a state file (fails before anything is written)."""
    return json.dumps(doc, allow_nan=False, separators=(",", ":"))


def write(path: str, doc: dict[str, Any]) -> None:
    from lossctl.output import open_output

    text = encode(doc)
    with open_output(path) as f:
        f.write(text)


def read(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise InputError.at("no such file", source=path) from None
    except IsADirectoryError:
        raise InputError.at("a directory, not a state file", source=path) from None
    except OSError as e:
        raise InputError.at(f"cannot read the file ({e.strerror or e})", source=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise InputError.at(f"not a lossctl state file ({e})", source=path) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError.at("not a lossctl state file", source=path)
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        raise InputError.at(f"state file version {doc.get('version')!r} is not {VERSION}; re-emit it with this lossctl",
                            source=path)
    missing = [k for k in _KEYS if k not in doc]
    if missing:
        raise InputError.at(f"damaged state file: no {', '.join(repr(k) for k in missing)}", source=path)
    for key, ok, what in _TYPES:
        if not ok(doc[key]):
            raise InputError.at(f"damaged state file: {key!r} must be {what} (got {clip(json.dumps(doc[key]), 40)})",
                                source=path)
    for g in doc["groups"]:
        if not (isinstance(g, dict) and isinstance(g.get("key"), list) and len(g["key"]) == len(doc["by"])
                and all(v is None or isinstance(v, (str, int, float)) for v in g["key"])
                and _is_count(g.get("rows")) and isinstance(g.get("states"), list)):
            raise InputError.at("damaged state file: each of 'groups' must be an object with a 'key' array "
                                "(one value per --by column), a 'rows' count and a 'states' array", source=path)
    # only numbers are decoded ("nan", "inf" → float): a task, spec, column name or group label
    # that reads "nan" is text and stays text
    out = dict(doc)
    out["states"] = _decode(doc["states"])
    out["jobs"] = [{**j, "params": _decode(j["params"])} for j in doc["jobs"]]
    out["groups"] = [{**g, "key": _key_in(g["key"], g.get("nonfinite")), "states": _decode(g["states"])}
                     for g in doc["groups"]]
    return out


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _is_strs(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) for v in x)


_TYPES = (
    ("task", lambda x: isinstance(x, str) and x in registry.TASKS, "a task (" + ", ".join(registry.TASKS) + ")"),
    ("task_inferred", lambda x: isinstance(x, bool), "true or false"),
    ("sources", _is_strs, "an array of strings"),
    ("context", lambda x: isinstance(x, dict), "an object"),
    ("options", lambda x: isinstance(x, dict), "an object"),
    ("jobs", lambda x: isinstance(x, list) and all(
        isinstance(j, dict) and isinstance(j.get("spec"), str) and isinstance(j.get("params"), dict)
        and isinstance(j.get("pred"), str) for j in x), "an array of {spec, params, pred} objects"),
    ("pred_labels", _is_strs, "an array of strings"),
    ("by", _is_strs, "an array of strings"),
    ("bindings", lambda x: x is None or isinstance(x, dict), "an object"),
    ("rows", _is_count, "a whole number ≥ 0"),
    ("dropped_rows", _is_count, "a whole number ≥ 0"),
    ("row_offset", _is_count, "a whole number ≥ 0"),
    ("states", lambda x: isinstance(x, list), "an array"),
    ("groups", lambda x: isinstance(x, list), "an array"),
)


_KEYS = ("task", "task_inferred", "sources", "context", "options", "jobs", "pred_labels", "by", "bindings", "rows",
         "dropped_rows", "row_offset", "states", "groups")


_OPTION_KEYS = ("grad", "ci", "bootstrap", "seed", "reduction", "min_rows", "key")
_CONTEXT_KEYS = ("n_classes", "target_kind")


def merge(paths: list[str]):
    """Read state files, check they describe the same evaluation, merge them exactly."""
    from lossctl.driver import Accumulated
    from lossctl.binding import Binding, Selector
    from lossctl.plan import Job, Plan, Request

    if not paths:
        raise UsageError("merge needs at least one state file")
    docs = [read(p) for p in paths]
    first = docs[0]
    for p, d in zip(paths[1:], docs[1:]):
        for key, what in (("task", "task"), ("jobs", "losses, parameters or prediction sets"),
                          ("options", "options"), ("by", "--by columns"), ("pred_labels", "prediction sets"),
                          ("bindings", "columns"), ("context", "number of classes or target kind")):
            if d[key] != first[key]:
                raise InputError.at(f"its {what} differ from those of {paths[0]} ({_show(d[key])} vs "
                                    f"{_show(first[key])}): shards must be evaluated alike", source=p)
    seen: dict[str, str] = {}
    for p, d in zip(paths, docs):  # the same shard twice would count its rows twice
        ident = json.dumps(_encode({k: d[k] for k in ("sources", "row_offset", "rows", "dropped_rows", "states",
                                                      "groups")}), sort_keys=True)
        if ident in seen:
            same = ("given twice" if seen[ident] == p
                    else f"the same shard as {seen[ident]} (same source, rows and statistics)")
            raise InputError.at(f"{same}: each shard must be merged once", source=p)
        seen[ident] = p
    versions = sorted({str(d.get("lossctl_version")) for d in docs})
    opts = first["options"]
    for part, keys in (("options", _OPTION_KEYS), ("context", _CONTEXT_KEYS)):
        missing = [k for k in keys if k not in first[part]]
        if missing:
            raise InputError.at(f"damaged state file: {part} has no {', '.join(repr(k) for k in missing)}",
                                source=paths[0])
    ci = opts.get("ci")
    if not (isinstance(opts.get("key"), (str, type(None))) and isinstance(opts.get("grad"), bool)
            and (ci is None or (isinstance(ci, float) and 0 < ci < 1))
            and _is_count(opts.get("bootstrap")) and opts["bootstrap"] < 2**31 and _is_count(opts.get("seed"))
            and opts.get("reduction") in ("mean", "sum") and _is_count(opts.get("min_rows"))):
        raise InputError.at(f"damaged state file: options {clip(json.dumps(_encode(opts)), 80)}", source=paths[0])
    ctx_d = first["context"]
    if not ((ctx_d.get("n_classes") is None or _is_count(ctx_d.get("n_classes")))
            and ctx_d.get("target_kind") in ("scalar", "vector")):
        raise InputError.at(f"damaged state file: context {clip(json.dumps(_encode(ctx_d)), 80)}", source=paths[0])
    req = Request(data=paths[0], grad=opts["grad"], ci=opts["ci"], bootstrap=opts["bootstrap"], seed=opts["seed"],
                  reduction=opts["reduction"], min_rows=opts["min_rows"], key=opts["key"])
    ctx = Context(task=first["task"], grad=opts["grad"], n_classes=first["context"]["n_classes"],
                  target_kind=first["context"]["target_kind"])
    jobs = []
    for j in first["jobs"]:
        try:
            call = registry.parse_spec(j["spec"])
            params = dict(call.params)
            params.update({k: registry.coerce(call.spec, k, v) for k, v in j["params"].items()})
        except (UsageError, TypeError, ValueError) as e:
            raise InputError.at(f"damaged state file: loss {j['spec']!r}: {e}", source=paths[0]) from None
        call = registry.LossCall(call.spec, params, j["spec"])
        jobs.append(Job(call, Binding(), j["pred"]))
    notes = []
    if len(versions) > 1:
        notes.append(f"the shards were written by lossctl {', '.join(versions)} (state format {VERSION} is the same)")
    if req.ci:  # (as the single run says it)
        notes.extend(bootstrap_notes(req.ci, req.bootstrap))
    names = tuple(s for d in docs for s in d["sources"])
    plan = Plan(req, names, ("state",) * len(names), first["task"], first["task_inferred"], tuple(jobs),
                tuple(first["pred_labels"]), ctx, None, tuple(Selector(b, [b], vector=False) for b in first["by"]),
                None, first.get("bindings") or {}, tuple(notes))
    from lossctl.driver import new_state
    from lossctl.plan import options

    o = options(plan)

    def load(sd: list[dict[str, Any]], path: str) -> list[State]:
        if not isinstance(sd, list) or len(sd) != len(jobs):
            raise InputError.at(f"damaged state file: {len(jobs)} loss states expected", source=path)
        out = []
        for job, d in zip(jobs, sd):
            st = new_state(job, ctx, o)
            try:
                st.load(d)
            except KeyError as e:
                raise InputError.at(f"damaged state file: the state of {job.call.text} lacks {e}", source=path) from None
            except (TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
                raise InputError.at(f"damaged state file: the state of {job.call.text} is not valid: {e}",
                                    source=path) from None
            except InputError as e:
                raise InputError.at(f"damaged state file: the state of {job.call.text}: {e}", source=path) from None
            out.append(st)
        return out

    def add(mine: list[State], theirs: list[State], path: str) -> None:
        for job, s, other in zip(jobs, mine, theirs):
            try:
                s.merge(other)
            except (TypeError, ValueError, AssertionError) as e:
                raise InputError.at(f"cannot merge the state of {job.call.text} with that of {paths[0]}: {e}",
                                    source=path) from None

    states = load(first["states"], paths[0])
    groups: dict[tuple, list[State]] = {}
    group_rows: dict[tuple, int] = {}
    for g in first["groups"]:
        groups[tuple(g["key"])] = load(g["states"], paths[0])
        group_rows[tuple(g["key"])] = g["rows"]
    rows, dropped = first["rows"], first["dropped_rows"]
    for p, d in zip(paths[1:], docs[1:]):
        add(states, load(d["states"], p), p)
        for g in d["groups"]:
            k = tuple(g["key"])
            if k in groups:
                add(groups[k], load(g["states"], p), p)
                group_rows[k] += g["rows"]
            else:
                groups[k] = load(g["states"], p)
                group_rows[k] = g["rows"]
        rows += d["rows"]
        dropped += d["dropped_rows"]
    offsets = sorted((d["row_offset"], d["rows"]) for d in docs)
    contiguous = all(a[0] + a[1] == b[0] for a, b in zip(offsets, offsets[1:])) and offsets[0][0] == 0
    if opts["ci"] and not contiguous:
        plan = plan.with_notes("bootstrap intervals of merged shards equal a single run's only when each shard "
                               "was emitted with --row-offset set to its first row in the whole data")
    return plan, Accumulated(states, groups, group_rows, rows, dropped, None)


def _show(x: Any) -> str:
    text = json.dumps(_encode(x), separators=(",", ":"))
    return text if len(text) <= 60 else text[:57] + "…"
