"""The registry as explicit data (issue 10, item 5): each family module exports its
losses (``LOSSES``), the registry is built from ``lossctl.losses.ALL`` with no import
side effect and no import cycle, and what a spec declares (the passes it needs, whether
its state merges, its roles' domains) is checked against what its kernel does."""
from __future__ import annotations

import ast
import importlib
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
    # and the declaration types import nothing of lossctl
    assert edges["lossctl.spec"] == set()


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
