"""The registry as explicit data (issue 10, item 5): each family module exports its
losses (``LOSSES``), the registry is built from ``lossctl.losses.ALL`` with no import
side effect and no import cycle, and what a spec declares (the passes it needs, whether
its state merges, its roles' domains) is checked against what its kernel does."""
from __future__ import annotations

import ast
import importlib
import math
import pathlib

import pytest

import lossctl

PACKAGE = pathlib.Path(lossctl.__file__).parent
FAMILIES = ("regression", "classification", "metric_learning", "segmentation", "divergence")


# ------------------------------------------------------------------ imports


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _import_graph() -> dict[str, set[str]]:
    """lossctl module → the lossctl modules it imports, anywhere in its text (an import
    inside a function runs too, later: registry's lazy import of the losses is an edge)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges[m].update(a.name for a in node.names if a.name in mods)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in mods:
                        edges[m].add(sub)  # from lossctl import registry: the submodule
                    elif base in mods:
                        edges[m].add(base)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1 or v in edges[v]:
                        out.append(sorted(comp))
    return out


def _catalogue(module: str) -> bool:
    return module in ("lossctl.registry", "lossctl.spec") or module == "lossctl.losses" or module.startswith("lossctl.losses.")


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_through_the_registry_or_the_losses():
    edges = _import_graph()
    assert "lossctl.registry" in edges and "lossctl.losses.regression" in edges
    bad = [c for c in _cycles(edges) if any(_catalogue(m) for m in c)]
    assert bad == [], f"import cycles through the loss catalogue: {bad}"


def test_no_loss_module_imports_the_registry():
    edges = _import_graph()
    offenders = {m: sorted(e) for m, e in edges.items()
                 if m.startswith("lossctl.losses") and "lossctl.registry" in e}
    assert offenders == {}
    # and the declaration types reach neither the registry nor a loss, however indirectly
    reach, todo = set(), ["lossctl.spec"]
    while todo:
        for m in edges[todo.pop()] - reach:
            reach.add(m)
            todo.append(m)
    assert not any(_catalogue(m) for m in reach), sorted(reach)


# ------------------------------------------------------------------ the tables


def test_each_family_exports_its_losses_and_all_is_their_union():
    from lossctl import losses, registry
    from lossctl.spec import LossSpec

    seen = []
    for fam in FAMILIES:
        mod = importlib.import_module(f"lossctl.losses.{fam}")
        assert isinstance(mod.LOSSES, tuple) and mod.LOSSES, fam
        assert all(isinstance(s, LossSpec) for s in mod.LOSSES), fam
        seen += mod.LOSSES
    assert list(losses.ALL) == seen
    assert registry.all_losses() == seen  # the registry's order is ALL's
    for spec in seen:
        assert registry.get(spec.name) is spec
        for alias in spec.aliases:
            assert registry.get(alias) is spec


def test_no_module_calls_a_register_function():
    for fam in FAMILIES:
        text = (PACKAGE / "losses" / f"{fam}.py").read_text(encoding="utf-8")
        calls = [n for n in ast.walk(ast.parse(text))
                 if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) == "register"]
        assert calls == [], fam


def test_a_name_declared_twice_is_refused():
    from lossctl import losses, registry

    a, b = losses.ALL[0], losses.ALL[1]
    with pytest.raises(ValueError, match=f"loss name '{a.name}' registered twice"):
        registry.build((a, b, a))
    alias_clash = registry.LossSpec(**{**b.__dict__, "aliases": (a.name,)})
    with pytest.raises(ValueError, match=f"loss name '{a.name}' registered twice"):
        registry.build((a, alias_clash))
    names, aliases = registry.build(losses.ALL)
    assert list(names) == [s.name for s in losses.ALL]
    assert len(aliases) == sum(len(s.aliases) for s in losses.ALL)


def test_the_old_names_are_still_importable_from_the_registry():
    from lossctl import registry, spec

    for name in ("Interval", "Param", "Role", "Properties", "LossSpec", "LossCall", "TASKS", "heredoc"):
        assert getattr(registry, name) is getattr(spec, name)


# ------------------------------------------------------------------ passes and merging, declared


def _param_cases(spec) -> list[dict]:
    """The defaults, and each keyword of a list-valued parameter (weight=balanced) and each
    flipped bool: the values that can switch a pass on."""
    base = spec.defaults()
    out = [base]
    for p in spec.params:
        for kw in p.keywords:
            out.append({**base, p.name: kw})
        if p.kind == "bool":
            out.append({**base, p.name: not p.default})
    return out


def _built(spec, params, task, grad, outputs):
    """What the engine drives for this spec: its state, and the kernel inside it (if any)."""
    from lossctl.engine import Context, DecomposableState, Kernel, Options

    ctx = Context(task=task, grad=grad, n_classes=outputs)
    obj = spec.factory(params, ctx)
    if isinstance(obj, Kernel):
        return DecomposableState(obj, Options(grad=grad)), obj
    return obj, getattr(obj, "kernel", None)


def _cases():
    from lossctl import registry

    for spec in registry.all_losses():
        for task in spec.all_tasks:
            for params in _param_cases(spec):
                for grad in (False, True):
                    for outputs in (1, 3):
                        yield spec, task, params, grad, outputs


@pytest.mark.parametrize("name", [s.name for s in __import__("lossctl.losses", fromlist=["ALL"]).ALL])
def test_declared_passes_are_what_the_kernel_does(name):
    from lossctl import registry

    spec = registry.get(name)
    checked = 0
    for s, task, params, grad, outputs in _cases():
        if s is not spec:
            continue
        state, kernel = _built(spec, params, task, grad, outputs)
        prepass = bool(getattr(kernel, "needs_prepass", False))
        second = bool(state.two_pass)
        case = f"{spec.name} {params} grad={grad} outputs={outputs}"
        assert spec.needs("prepass", params, grad=grad, outputs=outputs) == prepass, case
        assert spec.needs("second", params, grad=grad, outputs=outputs) == second, case
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("name", [s.name for s in __import__("lossctl.losses", fromlist=["ALL"]).ALL])
def test_declared_merging_is_what_the_state_file_does(name):
    """A state travels (``--emit-state``, the shard driver) exactly when the spec says: it
    merges, it needs no pre-pass and no second pass for this run, and (per-image states)
    no group is bound where the spec says grouped states do not travel."""
    from lossctl import registry, statefile
    from lossctl.errors import UsageError

    spec = registry.get(name)
    assert spec.merges or spec.merge_note, "a loss whose state does not merge says why"
    assert spec.merges_grouped or spec.merge_note
    has_group = any(r.name == "group" for r in spec.roles)
    for s, task, params, grad, outputs in _cases():
        if s is not spec:
            continue
        for grouped in (False, True) if has_group else (False,):
            state, _ = _built(spec, params, task, grad, outputs)
            if hasattr(state, "grouped"):
                state.grouped = grouped
            expect = (spec.merges and (spec.merges_grouped or not grouped)
                      and not spec.needs("prepass", params, grad=grad, outputs=outputs)
                      and not spec.needs("second", params, grad=grad, outputs=outputs))
            try:
                statefile._state_dict(state, spec.name)
                travels = True
            except UsageError:
                travels = False
            assert travels == expect, f"{spec.name} {params} grad={grad} outputs={outputs} grouped={grouped}"


def test_pass_conditions():
    from lossctl.spec import Pass

    p = Pass("prepass", param=("weight", "balanced"))
    assert p.needed({"weight": "balanced"}, grad=False) and not p.needed({"weight": None}, grad=True)
    q = Pass("second", grad=True, multioutput=True)
    assert q.needed({}, grad=True, outputs=2)
    assert not q.needed({}, grad=True, outputs=1) and not q.needed({}, grad=False, outputs=2)


# ------------------------------------------------------------------ role domains, declared and enforced


def test_every_role_declares_its_domain():
    from lossctl import losses
    from lossctl.spec import Domain

    for spec in losses.ALL:
        names = {p.name for p in spec.params}
        for role in spec.roles:
            assert isinstance(role.domain, Domain), (spec.name, role.name)
            if role.logit_domain is not None:  # only where a logits parameter can switch it
                assert "logits" in names, (spec.name, role.name)


def _outside(domain, classes: int) -> float:
    """A value just outside ``domain`` (None where every number is inside)."""
    if domain.values:
        return 2.0 if 2.0 not in domain.values else 0.5
    if domain.whole:
        return float(classes)  # one past the last class index
    iv = domain.interval
    if iv is None:
        return None
    return iv.high + 0.25 if iv.high < math.inf else iv.low - 0.25


@pytest.mark.parametrize("name", [s.name for s in __import__("lossctl.losses", fromlist=["ALL"]).ALL])
def test_validation_refuses_a_value_outside_each_declared_domain(name):
    """Inputs drawn from every role's declared domain validate; one value outside a role's
    domain is refused with an input error naming that role's column: a declaration cannot
    drift from what the kernel checks."""
    from test_fd_registry import _context, _inputs, _widths

    from lossctl import registry
    from lossctl.engine import Batch, Kernel
    from lossctl.errors import InputError

    spec = registry.get(name)
    params = spec.defaults()
    task = spec.task
    width = _widths(spec, task)[-1]
    base = _inputs(spec, task, width, True, params, seed=7)

    def validator():
        obj = spec.factory(params, _context(spec, task, base, False))
        k = obj if isinstance(obj, Kernel) else getattr(obj, "kernel", obj)
        return k.validate

    n = len(next(iter(base.values())))
    validator()(Batch(dict(base), n, columns={r: f"col_{r}" for r in base}))
    refused = 0
    for role in spec.roles:
        if role.name not in base:
            continue
        bad_value = _outside(role.domain_for(params), width if width > 1 else 2)
        if bad_value is None:
            continue
        x = base[role.name].copy()
        x.reshape(n, -1)[3, 0] = bad_value
        with pytest.raises(InputError) as e:
            validator()(Batch({**base, role.name: x}, n, columns={r: f"col_{r}" for r in base}))
        assert f"col_{role.name}" in str(e.value) and "row 4" in str(e.value), str(e.value)
        refused += 1
    kinds = {r.domain_for(params).kind for r in spec.roles if r.name in base}
    assert refused or kinds <= {"real", "categorical"}


def test_domain_membership():
    import numpy as np

    from lossctl.spec import BINARY, CLASS, DISTRIBUTION, POSITIVE, PROBABILITY, REAL, SIGNED

    nan = float("nan")
    # NaN: outside a label set, inside an interval, as the kernels' own checks have it
    assert PROBABILITY.outside(np.array([-0.1, 0, 1, 1.1, nan])).tolist() == [True, False, False, True, False]
    assert DISTRIBUTION.outside(np.array([[0.2, 1.2]])).tolist() == [[False, True]]
    assert BINARY.outside(np.array([0, 1, 2, nan, -1])).tolist() == [False, False, True, True, True]
    assert SIGNED.outside(np.array([-1, 0, 1, 2])).tolist() == [False, False, False, True]
    assert POSITIVE.outside(np.array([0, 1e-300, 1])).tolist() == [True, False, False]
    assert CLASS.outside(np.array([0, 2, -1, 1.5])).tolist() == [False, False, True, True]
    assert REAL.outside(np.array([1.0, -1e300, nan])).tolist() == [False, False, True]


# ------------------------------------------------------------------ the checks that read the domains keep their words

# every moved check, failing on row 3; the messages as main printed them before the checks
# read the roles' domains (commit 1f1cda6, run with this same table)
P3 = [[0.2, 0.3, 0.5]] * 4
S3 = [[0.1, 0.2, 0.3]] * 4
MESSAGE_CASES = {
 "bce_target_2": ("bce", {"target": [0, 1, 2, 1], "pred": [0.5] * 4}),
 "bce_target_-1": ("bce", {"target": [0, 1, -1, 1], "pred": [0.5] * 4}),
 "bce_pred": ("bce", {"target": [0, 1, 0, 1], "pred": [0.5, 0.5, 1.5, 0.5]}),
 "focal_target_2": ("focal", {"target": [0, 1, 2, 1], "pred": [0.5] * 4}),
 "focal_target_-1": ("focal", {"target": [0, 1, -1, 1], "pred": [0.5] * 4}),
 "hinge_target": ("hinge", {"target": [1, -1, 2, 1], "pred": [0.5] * 4}),
 "ce_whole": ("cross_entropy", {"target": [0, 1, 1.5, 2], "pred": P3}),
 "ce_negative": ("cross_entropy", {"target": [0, 1, -1, 2], "pred": P3}),
 "ce_big": ("cross_entropy", {"target": [0, 1, 3, 2], "pred": P3}),
 "ce_pred": ("cross_entropy", {"target": [0, 1, 1, 2], "pred": [[0.2, 0.3, 0.5]] * 2 + [[-0.2, 0.7, 0.5]] * 2}),
 "focal_mc_big": ("focal", {"target": [0, 1, 3, 2], "pred": P3}, None, "multiclass"),
 "contrastive": ("contrastive", {"x1": [[0, 1]] * 4, "x2": [[1, 0]] * 4, "target": [0, 1, 2, 1]}),
 "dice_pred": ("dice", {"target": [0, 1, 0, 1], "pred": [0.5, 0.5, 1.5, 0.5]}),
 "dice_mask_binary": ("dice", {"target": [0, 1, 2, 1], "pred": [0.5] * 4}),
 "dice_mask_classes": ("dice", {"target": [0, 1, 3, 2], "pred": P3}),
 "dice_mask_whole": ("dice", {"target": [0, 1, 0.5, 2], "pred": P3}),
 "dice_onehot": ("dice", {"target": [[1, 0, 0], [0, 1, 0], [0, 2, 0], [0, 0, 1]], "pred": P3}),
 "distill_big": ("distill", {"teacher": S3, "student": S3, "target": [0, 1, 3, 2]}),
 "distill_whole": ("distill", {"teacher": S3, "student": S3, "target": [0, 1, 0.5, 2]}),
}
EXPECTED_MESSAGES = {
    'bce_target_2': "f.csv, column 'c_target', row 3: bce needs labels in [0, 1] (0/1, or soft labels) (got 2.0)",
    'bce_target_-1': "f.csv, column 'c_target', row 3: bce needs labels in [0, 1] (0/1, or soft labels); for −1/+1 labels use the margin losses (-l hinge -l exponential) (got -1.0)",
    'bce_pred': "f.csv, column 'c_pred', row 3: bce reads probabilities, which must lie in [0, 1] (for logits pass logits=true or --logits) (got 1.5)",
    'focal_target_2': "f.csv, column 'c_target', row 3: focal needs labels 0 or 1 (got 2.0)",
    'focal_target_-1': "f.csv, column 'c_target', row 3: focal needs labels 0 or 1; for −1/+1 labels use the margin losses (-l hinge -l exponential) (got -1.0)",
    'hinge_target': "f.csv, column 'c_target', row 3: hinge needs labels −1/+1 (or 0/1, 0 read as −1) (got 2.0)",
    'ce_whole': "f.csv, column 'c_target', row 3: class index must be a whole number in 0..2; if the 3 prediction columns are 3 models' predictions, give one -p per model (and --task regression) (got 1.5)",
    'ce_negative': "f.csv, column 'c_target', row 3: class index must be a whole number in 0..2; if the 3 prediction columns are 3 models' predictions, give one -p per model (and --task regression) (got -1.0)",
    'ce_big': "f.csv, column 'c_target', row 3: class index ≥ number of prediction columns (3); if the 3 prediction columns are 3 models' predictions, give one -p per model (and --task regression) (got 3.0)",
    'ce_pred': "f.csv, column 'c_pred[0]', row 3: cross_entropy reads probabilities, which must lie in [0, 1] (for logits pass logits=true or --logits) (got -0.2); 2 rows like this found so far",
    'focal_mc_big': "f.csv, column 'c_target', row 3: class index ≥ number of prediction columns (3); if the 3 prediction columns are 3 models' predictions, give one -p per model (and --task regression) (got 3.0)",
    'contrastive': "f.csv, column 'c_target', row 3: contrastive targets are 1 (similar) or 0 (dissimilar) (got 2.0)",
    'dice_pred': "f.csv, column 'c_pred', row 3: probabilities must lie in [0, 1] (logits=true, or --logits, reads logits) (got 1.5)",
    'dice_mask_binary': "f.csv, column 'c_target', row 3: mask values must be 0 or 1 (a one-channel prediction is binary) (got 2.0)",
    'dice_mask_classes': "f.csv, column 'c_target', row 3: mask values must be class indices 0..2 (the prediction has 3 columns) (got 3.0)",
    'dice_mask_whole': "f.csv, column 'c_target', row 3: mask values must be class indices 0..2 (the prediction has 3 columns) (got 0.5)",
    'dice_onehot': "f.csv, column 'c_target[1]', row 3: one-hot mask values must be 0 or 1 (got 2.0)",
    'distill_big': "f.csv, column 'c_target', row 3: class label outside 0..2 (got 3.0)",
    'distill_whole': "f.csv, column 'c_target', row 3: class label outside 0..2 (got 0.5)",
}


@pytest.mark.parametrize("case", sorted(MESSAGE_CASES))
def test_the_checks_that_read_the_domains_keep_their_messages(case):
    import numpy as np

    from lossctl import registry
    from lossctl.engine import Batch, Context, Kernel
    from lossctl.errors import InputError

    name, cols, *rest = MESSAGE_CASES[case]
    params = {**registry.get(name).defaults(), **((rest[0] if rest else None) or {})}
    task = rest[1] if len(rest) > 1 else registry.get(name).task
    cols = {r: np.asarray(v, dtype=float) for r, v in cols.items()}
    pred = cols.get("pred", cols.get("student"))
    ctx = Context(task=task, n_classes=pred.shape[1] if pred is not None and pred.ndim == 2 else None)
    obj = registry.get(name).factory(params, ctx)
    k = obj if isinstance(obj, Kernel) else getattr(obj, "kernel", obj)
    with pytest.raises(InputError) as e:
        k.validate(Batch(cols, 4, source="f.csv", columns={r: f"c_{r}" for r in cols}))
    assert str(e.value) == EXPECTED_MESSAGES[case]
