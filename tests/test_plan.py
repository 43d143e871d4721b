"""The evaluation plan as data (issue 10): built once, frozen, comparable, serialisable; and
the package's layers, which import only downwards (sources → batches → states → report)."""
import ast
import dataclasses
import json
import os
import pickle

import pytest

from conftest import ROOT, SAMPLES
from lossctl.plan import Request, plan_from_wire, plan_wire
from lossctl.planner import prepare


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    with open(d / "preds.csv", "w") as f:
        f.write("id,p\n" + "".join(f"{i},{i * 0.5}\n" for i in range(3, 40)))
    return str(d)


def _request(kw, tmp):
    return Request(**{k: (v.format(tmp=tmp) if isinstance(v, str) else v) for k, v in kw.items()})


def _plan(**kw):
    plan, inputs = prepare(Request(**kw))
    inputs.close()
    return plan


REQUESTS = [
    dict(data=f"{SAMPLES}/regression.csv", losses=["mse", "huber:delta=2"], grad=True, by=["region"], ci=0.9,
         weight="weight", id="id"),
    dict(data=f"{SAMPLES}/regression.csv", preds=["yhat", "y"], target="y", losses=["mae"]),
    dict(data=f"{SAMPLES}/multiclass.csv", losses=["cross_entropy:weight=[1,2,1,1,1],label_smoothing=0.1", "focal"]),
    dict(data=f"{SAMPLES}/regression.csv", baseline=f"{SAMPLES}/regression_baseline.csv", losses=["mse"],
         target="y", preds=["yhat"]),
    dict(data=f"{SAMPLES}/regression.csv", data2="{tmp}/preds.csv", key="id", target="y", preds=["p"],
         losses=["mse"]),
    dict(data=f"{SAMPLES}/segmentation.csv", grad=True),
    dict(data=f"{SAMPLES}/binary.csv"),
]


@pytest.mark.parametrize("kw", REQUESTS, ids=range(len(REQUESTS)))
def test_a_plan_round_trips_through_json_and_pickle(kw, tmp):
    plan, inputs = prepare(_request(kw, tmp))
    inputs.close()
    wire = plan_wire(plan)
    text = json.dumps(wire)  # plain JSON: no objects
    assert plan_from_wire(json.loads(text)) == plan
    assert pickle.loads(pickle.dumps(wire)) == wire
    assert json.dumps(plan_wire(plan_from_wire(json.loads(text)))) == text


def test_a_plan_is_frozen():
    plan = _plan(**REQUESTS[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.task = "binary"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan._boot = None  # nothing is attached to a plan after it is built
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.ctx.grad = False
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.jobs[0].pred = "other"
    assert isinstance(plan.jobs, tuple) and isinstance(plan.notes, tuple) and isinstance(plan.by, tuple)


def test_plans_compare_by_what_they_evaluate():
    a, b = _plan(**REQUESTS[0]), _plan(**REQUESTS[0])
    assert a == b and a is not b
    assert a != _plan(**{**REQUESTS[0], "losses": ["mse", "huber:delta=3"]})
    assert a != _plan(**{**REQUESTS[0], "ci": 0.95})
    assert a.with_context(sample_grads=False) != a and a.with_context(sample_grads=True) == a


def test_a_run_leaves_the_plan_as_it_was(tmp):
    """The driver and the report read the plan: they never write to it (no _boot, no join
    counts, no notes appended)."""
    from lossctl.assemble import run

    for kw in REQUESTS[:5]:
        plan, inputs = prepare(_request(kw, tmp))
        before = plan_wire(plan)
        with inputs:
            run(plan, inputs)
        assert plan_wire(plan) == before


def test_rowwise_notes_do_not_change_the_plan():
    from lossctl.rowwise import iter_rows, rowwise_notes

    plan, inputs = prepare(Request(data=f"{SAMPLES}/multiclass.csv", losses=["cross_entropy"], grad=True,
                                   reduction="none"))
    with inputs:
        rows = list(iter_rows(plan, inputs))
    assert rows and not any("no per-row gradient" in n for n in plan.notes)
    assert any("no per-row gradient column" in n for n in rowwise_notes(plan))


# ------------------------------------------------------------------ layers

# data flows one way: sources → batches → states → report → renderer. A module may import
# those at its own level or below, never above (lazy imports inside functions included).
LAYERS = {
    "errors": 0, "options": 0, "runtime": 0, "spec": 1, "registry": 1, "binding": 2, "engine": 2, "accumulate": 2, "results": 2,
    "plan": 3, "io": 3, "output": 3, "arrays": 3, "planner": 4, "align": 4, "slices": 5, "feed": 5, "driver": 6,
    "statefile": 7, "outcome": 7, "slice_results": 7.5, "assemble": 8, "rowwise": 8,
}


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lossctl"):
            parts = node.module.split(".")
            if len(parts) == 1:
                yield from (a.name for a in node.names)
            else:
                yield parts[1]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("lossctl."):
                    yield a.name.split(".")[1]


@pytest.mark.parametrize("mod", sorted(LAYERS))
def test_no_module_imports_from_a_layer_above_it(mod):
    path = os.path.join(ROOT, "lossctl", f"{mod}.py")
    above = sorted({m for m in _imports(path) if m in LAYERS and LAYERS[m] > LAYERS[mod]})
    assert not above, f"lossctl/{mod}.py imports {above}, which sit above it"


def test_the_split_modules_are_each_readable_in_one_sitting():
    for mod in ("plan", "planner", "arrays", "align", "feed", "driver", "outcome", "slice_results", "assemble", "rowwise",
                "output"):
        with open(os.path.join(ROOT, "lossctl", f"{mod}.py"), encoding="utf-8") as f:
            assert sum(1 for _ in f) <= 650, mod
    assert not os.path.exists(os.path.join(ROOT, "lossctl", "pipeline.py"))


def test_the_reader_module_writes_nothing():
    """Results are written by lossctl/output.py; lossctl/io.py only reads."""
    src = open(os.path.join(ROOT, "lossctl", "io.py"), encoding="utf-8").read()
    for name in ("def open_output", "class StagedOutput", "def stdout_writer"):
        assert name not in src
    import lossctl.output as out

    assert callable(out.open_output) and callable(out.open_outputs) and callable(out.stdout_writer)
