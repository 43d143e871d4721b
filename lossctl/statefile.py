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
from lossctl.engine import Context, DecomposableState, State
from lossctl.errors import InputError, UsageError

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


def _state_dict(s: State) -> dict[str, Any]:
    d = s.to_dict()
    if isinstance(s, DecomposableState) and s.kernel.needs_prepass:
        raise UsageError(
            "--emit-state: this loss needs whole-data facts (balanced class weights): give the weights explicitly"
        )
    return d


def dump(plan: Any, acc: Any, row_offset: int) -> dict[str, Any]:
    req = plan.request
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "lossctl_version": __version__,
        "task": plan.task,
        "task_inferred": plan.task_inferred,
        "sources": [s.name for s in plan.sources],
        "context": {"n_classes": plan.ctx.n_classes, "target_kind": plan.ctx.target_kind},
        "options": {"grad": req.grad, "ci": req.ci, "bootstrap": req.bootstrap, "seed": req.seed,
                    "reduction": req.reduction, "min_rows": req.min_rows, "key": req.key},
        "jobs": [{"spec": j.call.text, "params": j.call.params, "pred": j.pred} for j in plan.jobs],
        "pred_labels": plan.pred_labels,
        "by": [s.text for s in plan.by],
        "bindings": plan.bindings if getattr(plan, "bindings", None) else None,
        "rows": acc.rows,
        "dropped_rows": acc.dropped,
        "row_offset": row_offset,
        "states": [_state_dict(s) for s in acc.states],
        "groups": [
            {"key": list(k), "rows": acc.group_rows[k], "states": [_state_dict(s) for s in sts]}
            for k, sts in acc.group_states.items()
        ],
    }
    return _encode(doc)


def write(path: str, doc: dict[str, Any]) -> None:
    from lossctl.io import open_output

    text = json.dumps(doc, allow_nan=False, separators=(",", ":"))  # fails before anything is written
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
    if doc.get("version") != VERSION:
        raise InputError.at(f"state file version {doc.get('version')} is not {VERSION}; re-emit it with this lossctl", source=path)
    missing = [k for k in _KEYS if k not in doc]
    if missing:
        raise InputError.at(f"damaged state file: no {', '.join(repr(k) for k in missing)}", source=path)
    return _decode(doc)


_KEYS = ("task", "task_inferred", "sources", "context", "options", "jobs", "pred_labels", "by", "rows",
         "dropped_rows", "row_offset", "states", "groups")


def merge(paths: list[str]):
    """Read state files, check they describe the same evaluation, merge them exactly."""
    from lossctl.pipeline import Accumulated, Job, Plan, Request
    from lossctl.binding import Binding

    if not paths:
        raise UsageError("merge needs at least one state file")
    docs = [read(p) for p in paths]
    first = docs[0]
    for p, d in zip(paths[1:], docs[1:]):
        for key in ("task", "jobs", "options", "by", "pred_labels"):
            if d[key] != first[key]:
                raise InputError.at(f"its {key} differ from those of {paths[0]}: shards must be evaluated alike", source=p)
    opts = first["options"]
    req = Request(data=paths[0], grad=opts["grad"], ci=opts["ci"], bootstrap=opts["bootstrap"], seed=opts["seed"],
                  reduction=opts["reduction"], min_rows=opts["min_rows"], key=opts["key"])
    ctx = Context(task=first["task"], grad=opts["grad"], n_classes=first["context"]["n_classes"],
                  target_kind=first["context"]["target_kind"])
    jobs = []
    for j in first["jobs"]:
        call = registry.parse_spec(j["spec"])
        params = dict(call.params)
        params.update({k: tuple(v) if isinstance(v, list) else v for k, v in j["params"].items()})
        call = registry.LossCall(call.spec, params, j["spec"])
        jobs.append(Job(call, Binding(), j["pred"], lambda s=call.spec, p=params: s.factory(p, ctx)))
    plan = Plan(req, [], first["task"], first["task_inferred"], jobs, first["pred_labels"], ctx, None,
                [_Label(b) for b in first["by"]], None)
    plan.source_names = [s for d in docs for s in d["sources"]]  # type: ignore[attr-defined]
    plan.bindings = first.get("bindings") or {}  # type: ignore[attr-defined]
    from lossctl.pipeline import _new_state, options

    o = options(plan)

    def load(sd: list[dict[str, Any]], path: str) -> list[State]:
        if not isinstance(sd, list) or len(sd) != len(jobs):
            raise InputError.at(f"damaged state file: {len(jobs)} loss states expected", source=path)
        out = []
        for job, d in zip(jobs, sd):
            st = _new_state(job, o)
            try:
                st.load(d)
            except (KeyError, TypeError, IndexError, AttributeError) as e:
                raise InputError.at(f"damaged state file: the state of {job.call.text} lacks {e}", source=path) from None
            out.append(st)
        return out

    states = load(first["states"], paths[0])
    groups: dict[tuple, list[State]] = {}
    group_rows: dict[tuple, int] = {}
    for g in first["groups"]:
        groups[tuple(g["key"])] = load(g["states"], paths[0])
        group_rows[tuple(g["key"])] = g["rows"]
    rows, dropped = first["rows"], first["dropped_rows"]
    for p, d in zip(paths[1:], docs[1:]):
        for s, other in zip(states, load(d["states"], p)):
            s.merge(other)
        for g in d["groups"]:
            k = tuple(g["key"])
            if k in groups:
                for s, other in zip(groups[k], load(g["states"], p)):
                    s.merge(other)
                group_rows[k] += g["rows"]
            else:
                groups[k] = load(g["states"], p)
                group_rows[k] = g["rows"]
        rows += d["rows"]
        dropped += d["dropped_rows"]
    offsets = sorted((d["row_offset"], d["rows"]) for d in docs)
    contiguous = all(a[0] + a[1] == b[0] for a, b in zip(offsets, offsets[1:])) and offsets[0][0] == 0
    if opts["ci"] and not contiguous:
        plan.notes.append("bootstrap intervals of merged shards equal a single run's only when each shard was "
                          "emitted with --row-offset set to its first row in the whole data")
    return plan, Accumulated(states, groups, group_rows, rows, dropped, None)


class _Label:
    """Stands in for a --by selector when the plan comes from state files."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.columns = [text]
