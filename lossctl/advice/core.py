"""Evidence + rules + derived parameters → a ranked advice, then the empirical check.

``advise`` is pure: it takes the evidence figures and returns the ranking with
reasons and derived parameters. ``check`` evaluates each recommendation (value and
gradient summary) through the ordinary engine and compares it with the task's
standard loss. The CLI and the library differ only in how batches are produced and
how the engine is driven (``lossctl.advice.sources``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from lossctl import registry
from lossctl.errors import UsageError
from lossctl.advice import derive
from lossctl.advice import rules as R

SCHEMA_VERSION = 1


@dataclass
class Recommendation:
    loss: str
    params: dict[str, Any]
    spec: str
    score: float
    reasons: list[str]
    derivation: dict[str, str] = field(default_factory=dict)
    eval_task: str = ""
    evaluable: bool = True
    value: float | None = None
    grad: dict[str, float] | None = None
    versus_standard: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"loss": self.loss, "params": _jsonable(self.params), "spec": self.spec,
                             "score": self.score, "reasons": list(self.reasons)}
        if self.derivation:
            d["derivation"] = dict(self.derivation)
        if self.value is not None:
            if math.isfinite(self.value):
                d["value"] = self.value
            else:
                d["value"], d["nonfinite"] = None, "inf" if self.value > 0 else ("-inf" if self.value < 0 else "nan")
        if self.grad:
            d["grad"] = {k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None) for k, v in self.grad.items()}
        if self.versus_standard:
            d["versus_standard"] = self.versus_standard
        if self.notes:
            d["notes"] = list(self.notes)
        return d


@dataclass
class Advice:
    task: str
    task_inferred: bool
    rows: int
    evidence: dict[str, Any]
    sampled: list[str]
    sample_size: int
    recommendations: list[Recommendation]
    ruled_out: list[dict[str, str]]
    rules_fired: list[str]
    goal: str | None = None
    coverage: float | None = None
    standard: str | None = None
    bindings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from lossctl import __version__

        ev = dict(self.evidence)
        ev["sampled"] = list(self.sampled)
        ev["sample_size"] = self.sample_size if self.sampled else None
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "lossctl_version": __version__,
            "task": self.task,
            "task_inferred": self.task_inferred,
            "rows": self.rows,
            "goal": self.goal,
            "evidence": _jsonable(ev),
            "recommendations": [r.to_dict() for r in self.recommendations],
            "ruled_out": list(self.ruled_out),
            "rules_fired": [_rule_text(r) for r in self.rules_fired],
            "scoring": R.SCORING,
        }
        if self.coverage is not None:
            out["coverage"] = self.coverage
        if self.standard:
            out["standard"] = self.standard
        if self.bindings:
            out["bindings"] = self.bindings
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    @property
    def top(self) -> Recommendation | None:
        return self.recommendations[0] if self.recommendations else None

    def __repr__(self) -> str:  # pragma: no cover - for the REPL
        ranked = ", ".join(r.spec for r in self.recommendations)
        return f"Advice(task={self.task!r}, ranking=[{ranked}])"


def _rule_text(rule_id: str) -> dict[str, str]:
    r = next(r for r in R.RULES if r.id == rule_id)
    return {"rule": r.id, "guide": r.guide, "explain": r.explain}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item"):
        return x.item()
    return x


# ------------------------------------------------------------------ options


def check_options(goal: str | None, coverage: float | None, task: str | None) -> None:
    """recommend's own options (the goals are the rules' data), and the task as every entry point checks it."""
    from lossctl.options import EvalOptions, check_level

    if goal is not None and goal not in R.GOALS:
        raise UsageError(f"unknown goal '{goal}'; valid goals: {', '.join(R.GOALS)}")
    check_level("--coverage", coverage, 0.9)
    EvalOptions.validated(task=task)
    if goal is not None and task is not None and task not in R.GOALS[goal]:
        valid = [g for g, ts in R.GOALS.items() if task in ts]
        raise UsageError(f"goal '{goal}' is for {'/'.join(R.GOALS[goal])} tasks, not {task}; "
                         f"goals for {task}: {', '.join(valid) or 'none'}")


def goal_task(goal: str | None) -> str | None:
    """The task a goal implies when it names one family only."""
    if goal is None:
        return None
    ts = R.GOALS[goal]
    return ts[0] if len(ts) == 1 else None


# ------------------------------------------------------------------ advising


def _figures(task: str, ev: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """The evidence figures under the generic names the rules use."""
    e = dict(ev)
    e.update(ctx)
    for k in ("kurtosis", "skewness", "median", "mad"):
        for pre in ("residual_", "target_"):
            if pre + k in ev:
                e[k] = ev[pre + k]
    if task == "segmentation":
        if "images" in ev:
            e["small_objects_text"] = (f"{ev.get('small_object_image_share', 0):.0%} of {ev['images']} images have "
                                       f"under 1% foreground (median image {ev.get('image_foreground_median', 0):.2%})")
        elif (ev.get("smallest_class_share") or 1) < R.SMALL_IMAGE_FG:
            e["small_objects_text"] = f"the smallest class covers {ev['smallest_class_share']:.2%} of the pixels"
        else:
            e["small_objects_text"] = f"{ev.get('foreground_share', 0):.2%} foreground overall"
        e.setdefault("class_counts", ev.get("class_pixels", {}))
    if task == "metric":
        lay = ev.get("layout")
        if ctx.get("goal") == "quality":
            e["metric_quality_text"] = "--goal quality"
        elif lay == "labelled":
            e["metric_quality_text"] = (f"labelled embeddings: {ev.get('classes')} classes, "
                                        f"{ev.get('positives_per_anchor', 0):.1f} positives per anchor on average")
        else:
            e["metric_quality_text"] = "anchor/positive/negative triplets"
        e["metric_simple_text"] = "--goal simple" if ctx.get("goal") == "simple" else "similar/dissimilar pairs"
        if "distance_gap" in ev:
            e["metric_quality_text"] += (f"; median distance {ev.get('pos_distance_median', 0):.3f} (same class) "
                                         f"vs {ev.get('neg_distance_median', 0):.3f} (other classes)")
    if task == "distribution" and ev.get("layout") == "vae":
        e["vae_text"] = f"{ev.get('kl_per_row', 0):.3g} nats per row, {ev.get('collapsed_dims')} of {ev.get('latent_dims')} latent dims collapsed"
    elif task == "distribution":
        e["vae_text"] = "--goal vae"
    return e


_CITE = {"robust": "robust to outliers", "minimiser": "minimiser", "imbalance": "built for class imbalance"}


def _tags(s: registry.LossSpec) -> tuple:
    p = s.properties
    return (p.takes, p.minimiser, p.imbalance)


def resolve(name: str, tasks: tuple[str, ...], roles: set[str]) -> registry.LossSpec | None:
    """The registered loss a guide line's name stands for in these tasks and data.

    The named loss if it fits the task, else its variant whose roles the data binds
    (triplet → triplet_mined on labelled rows), else the loss of this task with the
    same registry tags (cross-entropy on a binary task is bce).
    """
    spec = registry.get(name)
    forms = [spec, *registry.variants(spec)]
    fits = [s for s in forms if any(t in s.all_tasks for t in tasks)]
    if not fits:
        fits = [s for s in registry.all_losses() if any(t in s.all_tasks for t in tasks) and _tags(s) == _tags(spec)]
    if not fits:
        return None
    bound = [s for s in fits if all(r.name in roles for r in s.roles if r.required)]
    return (bound or fits)[0]


def _derive(spec: registry.LossSpec, e: dict[str, Any], task: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Parameters for ``spec`` from the evidence, chosen by the parameters it has."""
    names = {p.name for p in spec.params}
    params: dict[str, Any] = {}
    der: dict[str, str] = {}
    kind = e.get("score_kind")
    if "delta" in names:
        p, d = derive.huber(e, e)
        params.update(p)
        der.update(d)
    if "tau" in names:
        if e.get("goal") == "intervals":
            return derive.quantile_pair(derive.coverage_of(e))
        return [({}, {})]
    if {"lo", "hi"} <= names:
        p, d = derive.interval(derive.coverage_of(e))
        params.update(p)
        der.update(d)
    imbalanced = (e.get("imbalance_ratio") or 1) >= R.IMBALANCE
    if imbalanced and "pos_weight" in names and task == "binary" and spec.properties.imbalance == "weights":
        p, d = derive.pos_weight(e)
        params.update(p)
        der.update(d)
    if imbalanced and "weight" in names and task == "multiclass" and spec.properties.imbalance == "weights":
        p, d = derive.class_weights(e)
        params.update(p)
        der.update(d)
    if {"gamma", "alpha"} <= names and "class_counts" in e:
        p, d = derive.focal(e, task != "multiclass")
        params.update(p)
        der.update(d)
    if "logits" in names and kind in ("logit", "margin"):
        params["logits"] = True
        der["logits"] = (f"the scores are unbounded ([{e.get('score_min')}, {e.get('score_max')}]): read as "
                         "logits (sigmoid / softmax inside the loss)")
    if task == "metric":
        if "mining" in names or "normalize" in names:
            p, d = derive.triplet(e, "mining" in names)
            params.update({k: v for k, v in p.items() if k in names})
            der.update({k: v for k, v in d.items() if k in names})
        elif "margin" in names:
            p, d = derive.contrastive(e)
            params.update(p)
            der.update(d)
    if "temperature" in names:
        p, d = derive.temperature(e)
        params.update(p)
        der.update(d)
    return [(params, der)]


def pixel_task(ev: dict[str, Any]) -> str:
    return "multiclass" if (ev.get("mask_classes") or 2) > 2 else "binary"


def advise(task: str, result: dict[str, Any], roles: set[str], *, goal: str | None = None,
           coverage: float | None = None, task_inferred: bool = False, has_pred: bool = True) -> Advice:
    """Rank the losses for ``task`` from the evidence ``result`` (an evidence state's result())."""
    if coverage is not None and goal is None and task == "regression":
        goal = "intervals"
    ev = result["figures"]
    ctx = {"goal": goal, "coverage": derive.coverage_of({"coverage": coverage}), "task": task, "has_pred": has_pred,
           "has_interval": {"lower", "upper"} <= roles}
    e = _figures(task, ev, ctx)
    tasks = (task, pixel_task(ev)) if task == "segmentation" else (task,)
    fired = R.fired(task, e)
    order = {s.name: i for i, s in enumerate(registry.all_losses())}
    scores: dict[str, float] = {}
    reasons: dict[str, list[str]] = {}
    specs: dict[str, registry.LossSpec] = {}
    out: dict[str, str] = {}
    notes: list[str] = []
    # rules with points first, then the reason-only ones (0 points) on the losses already favoured
    for rule in sorted(fired, key=lambda r: not any(p for _, p in r.favours)):
        text = R.render(rule.reason, e) if rule.reason else ""
        for name, pts in rule.favours:
            spec = resolve(name, tasks, roles)
            if spec is None:
                notes.append(f"rule {rule.id}: no registered loss for '{name}' fits a {task} task")
                continue
            if "interval" in spec.properties.takes and not all(r.name in roles for r in spec.roles if r.required):
                continue  # an interval score needs the lower/upper columns the data lacks
            specs[spec.name] = spec
            if pts or spec.name in scores:
                scores[spec.name] = scores.get(spec.name, 0.0) + pts
                if text:
                    quoted = "; ".join(f"{_CITE.get(c, c)} = {getattr(spec.properties, c)}" for c in rule.cites)
                    reasons.setdefault(spec.name, []).append(text + (f" [{spec.name}: {quoted}]" if quoted else ""))
        if rule.rules_out is not None:
            cands = {s.name: s for s in registry.all_losses() if any(t in s.all_tasks for t in tasks)}
            cands.update(specs)
            for s in cands.values():
                if s.name not in out and rule.rules_out(s, e) and (s.name in scores or task in s.all_tasks):
                    out[s.name] = R.render(rule.trap, e, loss=s.name)
    ranked = sorted((n for n, v in scores.items() if v > 0 and n not in out), key=lambda n: (-scores[n], order[n]))
    recs: list[Recommendation] = []
    for name in ranked:
        spec = specs[name]
        eval_task = task if task in spec.all_tasks else tasks[-1]
        for params, der in _derive(spec, e, eval_task):
            full = spec.defaults()
            full.update(params)
            call_text = registry.format_call(spec, full)
            evaluable = all(r.name in roles for r in spec.roles if r.required) and has_pred
            rec = Recommendation(spec.name, full, call_text, scores[name], list(reasons.get(name, [])), der,
                                 eval_task, evaluable)
            if has_pred and not all(r.name in roles for r in spec.roles if r.required):
                need = [r.name for r in spec.roles if r.required and r.name not in roles]
                rec.notes.append(f"not evaluated on this data: {spec.name} needs columns for {', '.join(need)}")
            recs.append(rec)
    standard = None
    first = next((r for r in fired if r.standard), None)
    if first is not None and first.favours:
        s = resolve(first.favours[0][0], tasks, roles)
        if s is not None and s.name not in out:
            standard = s.name
    if task in ("binary", "multiclass") and ev.get("classes") == 1:
        notes.append("only one class occurs in the target: imbalance and separability cannot be judged")
    ruled = [{"loss": n, "reason": t} for n, t in sorted(out.items(), key=lambda kv: order.get(kv[0], 0))]
    return Advice(task, task_inferred, int(ev.get("n", 0)), ev, list(result.get("sampled", [])),
                  int(result.get("sample_size", 0)), recs, ruled, [r.id for r in fired], goal,
                  coverage if coverage is not None else (ctx["coverage"] if goal == "intervals" else None),
                  standard, notes=notes)


# ------------------------------------------------------------------ the empirical check

Evaluator = Callable[[str, list[str]], dict[str, Any]]


def check(advice: Advice, evaluate: Evaluator) -> None:
    """Evaluate every recommendation and the standard loss; compare them.

    ``evaluate(task, specs)`` returns {spec: LossResult or an error message}.
    """
    todo: dict[str, list[str]] = {}
    std_spec = None
    if advice.standard:
        spec = registry.get(advice.standard)
        task = advice.task if advice.task in spec.all_tasks else pixel_task(advice.evidence)
        std_rec = next((r for r in advice.recommendations if r.loss == advice.standard), None)
        # the standard loss as the guide states it: default parameters (no class weights), the scores'
        # kind kept (logits=true where the scores are logits)
        params = spec.defaults()
        if std_rec is not None and "logits" in params:
            params["logits"] = std_rec.params.get("logits", params["logits"])
        std_spec = registry.format_call(spec, params)
        if std_rec is None or std_rec.evaluable:
            todo.setdefault(task, []).append(std_spec)
    for r in advice.recommendations:
        if r.evaluable and r.spec not in todo.get(r.eval_task, []):
            todo.setdefault(r.eval_task, []).append(r.spec)
    results: dict[str, Any] = {}
    for task, specs in todo.items():
        results.update(evaluate(task, specs))
    std = results.get(std_spec) if std_spec else None
    for r in advice.recommendations:
        res = results.get(r.spec)
        if res is None:
            continue
        if isinstance(res, str):
            r.notes.append(f"not evaluated: {res}")
            continue
        r.value = res.value
        r.grad = dict(res.grad) if res.grad else None
        r.notes += [n for n in res.notes if n not in r.notes]
        if std is not None and not isinstance(std, str) and r.spec != std_spec:
            r.versus_standard = _versus(r, std, std_spec)


def _versus(r: Recommendation, std: Any, std_spec: str) -> dict[str, Any]:
    out: dict[str, Any] = {"standard": std_spec, "standard_value": std.value if math.isfinite(std.value) else None}
    g, gs = r.grad or {}, std.grad or {}
    if "top1_share" in g and "top1_share" in gs:
        out["top1_share"] = g["top1_share"]
        out["standard_top1_share"] = gs["top1_share"]
        out["text"] = (f"share of gradient mass on the worst 1% of rows: {gs['top1_share']:.1%} under "
                       f"{std_spec} → {g['top1_share']:.1%} under {r.spec}")
    if "zero_frac" in g and "zero_frac" in gs and abs(g["zero_frac"] - gs["zero_frac"]) > 0.01:
        out["zero_frac"] = g["zero_frac"]
        out["standard_zero_frac"] = gs["zero_frac"]
        extra = f"rows with a zero gradient: {gs['zero_frac']:.1%} → {g['zero_frac']:.1%}"
        out["text"] = (out.get("text", "") + "; " + extra).lstrip("; ")
    return out
