"""States that travel (issue 10, items 3 and 7): every mergeable state pickles with the standard
``pickle`` as its data only and round-trips through the state file and through pickle exactly;
merging the states of random splits of a file, in a random order and tree, gives the numbers of
one run; a state that cannot merge says so through ``State.unmergeable_reason``, which every
driver reads.

The cases come from the registry (every loss, every task it takes) and a table of sample data
per task: a loss takes the first frame of its task whose columns bind its roles.
"""
from __future__ import annotations

import functools
import io
import json
import math
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as hs

from lossctl import registry, statefile
from lossctl.driver import run_shard, unmergeable
from lossctl.engine import DecomposableState, State
from lossctl.errors import LossctlError, UsageError

DATA = Path(__file__).resolve().parent.parent / "sample_data"
RTOL = 1e-12
ROWS = 240


def _frame(name: str, n: int = ROWS) -> pd.DataFrame:
    path = DATA / name
    df = (pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path)).iloc[:n].copy()
    df = df.drop(columns=[c for c in ("image_id", "weight") if c in df.columns])  # per-image dice does not merge
    rng = np.random.default_rng(len(name))
    df["w_"] = rng.uniform(0.2, 2.0, len(df))
    df["grp"] = rng.choice(["a", "b", "c"], len(df))
    return df


def _reg(n: int = ROWS) -> pd.DataFrame:
    df = _frame("regression.csv", n)
    rng = np.random.default_rng(7)
    df["yhat2"] = df["yhat"] + rng.normal(0, 30, len(df))
    df["yhat3"] = df["y"] * 1.01
    return df


def _binary(n: int = ROWS) -> pd.DataFrame:
    df = _frame("binary.csv", n)
    df["logit"] = np.log(df.prob / (1 - df.prob))
    df["logit2"] = 0.7 * df["logit"] + 0.1
    return df.drop(columns=["prob"])


# task → candidate frames: (name, builder, the request's arguments that bind it)
FRAMES: dict[str, list[tuple[str, object, dict]]] = {
    "regression": [("reg", _reg, {"target": "y", "preds": ["yhat", "yhat2", "yhat3"]}),
                   ("interval", lambda n=ROWS: _frame("interval.csv", n), {})],
    "binary": [("binary", _binary, {"target": "y", "preds": ["logit", "logit2"], "logits": True})],
    "multiclass": [("multiclass", lambda n=ROWS: _frame("multiclass.csv", n), {"logits": True})],
    "metric": [("pairs", lambda n=ROWS: _frame("pairs.csv", n), {"cols": {"target": "similar"}}),
               ("triplets", lambda n=ROWS: _frame("triplets.csv", n), {}),
               ("embeddings", lambda n=ROWS: _frame("embeddings.parquet", n), {})],
    "segmentation": [("seg", lambda n=ROWS: _frame("segmentation.parquet", 4 * n), {}),
                     ("seg-mc", lambda n=ROWS: _frame("segmentation_multiclass.parquet", 4 * n), {})],
    "distribution": [("dist", lambda n=ROWS: _frame("distributions.csv", n), {}),
                     ("vae", lambda n=ROWS: _frame("vae.parquet", n), {}),
                     ("distill", lambda n=ROWS: _frame("distill.parquet", n), {}),
                     ("w1", lambda n=ROWS: _frame("wasserstein.csv", n), {})],
}

_DIR = Path(tempfile.mkdtemp(prefix="lossctl-state-travel-"))


@functools.lru_cache(maxsize=None)
def _path(task: str, i: int) -> str:
    name, make, _ = FRAMES[task][i]
    p = _DIR / f"{name}.parquet"
    make().to_parquet(p, index=False)
    return str(p)


def _request(path: str, kw: dict, loss: str | None, task: str, grad=False, ci=False, weights=False, by=False,
             **more):
    from lossctl.plan import Request

    return Request(data=path, task=task, losses=[loss] if loss else [], grad=grad, ci=0.9 if ci else None,
                   bootstrap=50, seed=3, weight="w_" if weights else None, by=["grp"] if by else [], batch_rows=64,
                   **{k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                      for k, v in kw.items()}, **more)


@functools.lru_cache(maxsize=None)
def _binds(loss: str, task: str, i: int) -> bool:
    """Whether the columns of frame ``i`` of ``task`` bind ``loss`` (and it takes their rows)."""
    from lossctl.planner import prepare

    try:
        plan, inputs = prepare(_request(_path(task, i), FRAMES[task][i][2], loss, task))
        with inputs:
            run_shard(plan, inputs) if unmergeable(plan) is None else None
    except LossctlError:
        return False
    return True


def _frame_of(loss: str, task: str) -> int:
    """The first frame of ``task`` that binds ``loss``."""
    found = [i for i in range(len(FRAMES[task])) if _binds(loss, task, i)]
    assert found, f"no sample frame of task {task} binds {loss}"
    return found[0]


def _plan(loss: str | None, task: str, i: int | None = None, path: str | None = None, **opts):
    from lossctl.planner import prepare

    i = _frame_of(loss, task) if i is None else i
    plan, inputs = prepare(_request(path or _path(task, i), FRAMES[task][i][2], loss, task, **opts))
    return plan.with_context(top_keep=2), inputs  # (as --emit-state keeps)


CASES = [(s.name, t) for s in registry.all_losses() for t in s.all_tasks]
OPTIONS = [dict(grad=g, ci=c, weights=w, by=b) for g in (False, True) for c in (False, True)
           for w in (False, True) for b in (False, True)]


def _opt_id(o: dict) -> str:
    return "-".join(k for k, v in o.items() if v) or "plain"


# ------------------------------------------------------------------ comparing


def _same(a, b, path="") -> list[str]:
    """Exact equality of two results or to_dict documents, NaN equal to NaN, arrays bit for bit."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        ok = a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
        return [] if ok else [f"{path}: arrays differ"]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b), key=str)}"]
        return [e for k in a for e in _same(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [e for i, (x, y) in enumerate(zip(a, b)) for e in _same(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        same = (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
        return [] if same else [f"{path}: {a!r} vs {b!r}"]
    return [] if (a == b and type(a) is type(b)) else [f"{path}: {a!r} vs {b!r}"]


def _text(s: State) -> str:
    return statefile.encode(statefile._encode(s.to_dict()))


def _fresh(plan, job) -> State:
    from lossctl.driver import new_state
    from lossctl.plan import options

    return new_state(job, plan.ctx, options(plan))


ALLOWED_MODULES = ("lossctl.", "numpy", "builtins", "copyreg", "_codecs", "collections")


def _load(data: bytes) -> tuple[object, set[str]]:
    """The unpickled object, and the module.name of every class or function the pickle named."""
    seen: set[str] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            seen.add(f"{module}.{name}")
            return super().find_class(module, name)

    return Recorder(io.BytesIO(data)).load(), seen


def _states(acc):
    yield from acc.states
    for sts in acc.group_states.values():
        yield from sts


# ------------------------------------------------------------------ 2. round trips, every loss


@pytest.mark.parametrize("opts", OPTIONS, ids=_opt_id)
@pytest.mark.parametrize("loss,task", CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_every_state_round_trips_through_the_file_and_pickle(loss, task, opts):
    plan, inputs = _plan(loss, task, **opts)
    with inputs:
        found = unmergeable(plan)
        if found is not None:  # 4. the property says why; every driver refuses with it
            reason = found[1]
            with pytest.raises(UsageError, match="--emit-state: " + loss):
                run_shard(plan, inputs)
            from lossctl.driver import accumulate

            acc = accumulate(plan, inputs)
            assert all(not s.mergeable for s in acc.states)
            with pytest.raises(UsageError) as e:
                statefile.payload(plan, acc, 0)
            assert reason in str(e.value)
            return
        acc = run_shard(plan, inputs)
    checked = 0
    for st in _states(acc):
        job = plan.jobs[checked % len(plan.jobs)]
        assert st.mergeable and st.unmergeable_reason is None
        text = _text(st)
        # the state file: dump → JSON text → load, the same statistics bit for bit and the same results
        back = _fresh(plan, job).load(statefile._decode(json.loads(text)))
        assert _text(back) == text
        assert not _same(back.to_dict(), st.to_dict())
        assert not _same(back.result(), st.result()), _same(back.result(), st.result())
        # pickle: the standard module, the data only
        data = pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL)
        again, names = _load(data)
        bad = {g for g in names if not g.startswith(ALLOWED_MODULES)}
        assert not bad, bad
        assert str(_DIR).encode() not in data and tempfile.gettempdir().encode() not in data
        assert type(again) is type(st) and type(getattr(again, "kernel", None)) is type(getattr(st, "kernel", None))
        assert _text(again) == text
        errs = _same(again.result(), st.result())
        assert not errs, errs
        checked += 1
    assert checked >= len(plan.jobs)


# ------------------------------------------------------------------ 1. the pickle is the data


def test_a_pickled_state_is_no_larger_than_its_state_file(tmp_path):
    """100k rows with --grad and --ci: the pickle holds the statistics (the bootstrap's blocks,
    the gradient's candidates and sample), not the kernels' row-sized scratch buffers."""
    n = 100_000
    rng = np.random.default_rng(5)
    y = rng.normal(size=n)
    df = pd.DataFrame({"y": y, "yhat": y + rng.standard_t(3, n), "w_": rng.uniform(0.5, 2, n),
                       "grp": rng.choice(list("abcd"), n)})
    path = tmp_path / "big.parquet"
    df.to_parquet(path, index=False)
    from lossctl.plan import Request
    from lossctl.planner import prepare

    losses = [s.name for s in registry.losses_for_task("regression") if "lower" not in {r.name for r in s.roles}]
    plan, inputs = prepare(Request(data=str(path), target="y", preds=["yhat"], losses=losses, grad=True, ci=0.95,
                                   by=["grp"], task="regression"))
    plan = plan.with_context(top_keep=2)
    with inputs:
        acc = run_shard(plan, inputs)
    assert any(type(s.kernel).__name__ == "HuberKernel" for s in acc.states)
    for st in _states(acc):
        size, file_size = len(pickle.dumps(st)), len(_text(st))
        assert size <= 1.2 * file_size, (type(st.kernel).__name__, size, file_size)
    # the whole data's units are hashed blocks (past the exact-row limit), the slices' 25k rows each
    assert all(st.boot.buckets is not None for st in acc.states)
    assert all(st.boot.buckets is None for sts in acc.group_states.values() for st in sts)
    whole = pickle.dumps(statefile.payload(plan, acc, 0))
    assert len(whole) <= 1.2 * len(statefile.encode(statefile._encode(statefile.payload(plan, acc, 0))))


def test_the_states_of_many_slices_pickle_smaller_than_their_file(tmp_path):
    """500 slices without --grad or --ci: each slice's state is a few sums, which pickle as
    their raw bytes (bit for bit), not as arrays with their headers."""
    n = 20_000
    rng = np.random.default_rng(6)
    y = rng.normal(size=n)
    path = tmp_path / "slices.parquet"
    pd.DataFrame({"y": y, "yhat": y + rng.normal(size=n), "g": rng.integers(0, 500, n)}).to_parquet(path, index=False)
    from lossctl.plan import Request
    from lossctl.planner import prepare

    plan, inputs = prepare(Request(data=str(path), target="y", preds=["yhat"], by=["g"], task="regression"))
    with inputs:
        acc = run_shard(plan, inputs)
    states = (acc.states, dict(acc.group_states))
    data = pickle.dumps(states)
    ratio = len(data) / len(statefile.encode(statefile._encode(statefile.payload(plan, acc, 0))))
    assert ratio <= 0.7, ratio  # (numpy arrays with their headers: 0.9)
    back_states, back_groups = pickle.loads(data)
    for k, sts in acc.group_states.items():
        for a, b in zip(sts, back_groups[k]):
            assert a.totals.s.tobytes() == b.totals.s.tobytes() and a.totals.c.tobytes() == b.totals.c.tobytes()
            b.totals.add(np.ones(b.totals.s.size))  # (writable, its own arrays)


def test_the_huber_kernel_pickles_by_name():
    from lossctl.losses import regression

    from lossctl.engine import Batch

    k = registry.get("huber").factory({"delta": 1.5}, _ctx())
    assert type(k) is regression.HuberKernel and type(k).__module__ == "lossctl.losses.regression"
    y = np.linspace(-3, 3, 50_000)
    sums, _ = k.sums_and_grads(Batch({"target": y, "pred": y[::-1].copy()}, y.size))  # fills its buffers
    data = pickle.dumps(k)
    assert len(data) < 1000  # the class's name and the parameters, not 50,000-row buffers
    back, names = _load(data)
    assert "lossctl.losses.regression.HuberKernel" in names
    assert type(back) is type(k) and back.params == {"delta": 1.5} and back.kw == {"delta": 1.5}
    assert back.ctx == k.ctx and not back._buffer._arrays
    again, _ = back.sums_and_grads(Batch({"target": y, "pred": y[::-1].copy()}, y.size))
    assert again.tobytes() == sums.tobytes()


def _ctx():
    from lossctl.engine import Context

    return Context(task="regression")


def test_wasserstein_refuses_to_pickle_with_its_reason():
    st = registry.get("wasserstein").factory({}, _ctx())
    assert not st.mergeable
    with pytest.raises(TypeError, match="temporary folder"):
        pickle.dumps(st)


# ------------------------------------------------------------------ 4. one declared property


def test_drivers_read_the_declared_property(monkeypatch, tmp_path, capsys):
    """A state that declares itself unmergeable is refused by the shard driver, the state file
    and the CLI's --emit-state alike, with its reason; nothing else is consulted."""
    from lossctl import cli

    plan, inputs = _plan("mse", "regression")
    with inputs:
        assert unmergeable(plan) is None
        monkeypatch.setattr(DecomposableState, "unmergeable_reason", "a toy reason", raising=False)
        assert unmergeable(plan) == ("mse", "a toy reason")
        with pytest.raises(UsageError, match="--emit-state: mse: a toy reason"):
            run_shard(plan, inputs)
    state = tmp_path / "s.state"
    capsys.readouterr()
    code = cli.main(["eval", _path("regression", 0), "-l", "mse", "-t", "y", "-p", "yhat", "--emit-state",
                     str(state), "-q"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.strip() == "lossctl: error: --emit-state: mse: a toy reason", err
    assert not state.exists()


# ------------------------------------------------------------------ 3. random splits, random merges


def _close(a, b, path: str = "", scale: float | None = None) -> list[str]:
    """Differences beyond RTOL (counts and text exactly; grad.mean relative to abs_mean, since a
    mean of gradients that cancel is round-off however it is summed)."""
    errs: list[str] = []
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        sc = a.get("abs_mean") if {"mean", "abs_mean"} <= set(a) else None
        for k in a:
            errs += _close(a[k], b[k], f"{path}.{k}", sc if k == "mean" else None)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        for i, (x, y) in enumerate(zip(a, b)):
            errs += _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            return [f"{path}: {a!r} vs {b!r}"]
        if a == b or (math.isnan(a) and math.isnan(b)):
            return errs
        ref = max(abs(a), abs(b)) if scale is None else abs(scale)
        if not abs(a - b) <= RTOL * ref:
            errs.append(f"{path}: {a!r} vs {b!r}")
    elif a != b or type(a) is not type(b):
        errs.append(f"{path}: {a!r} vs {b!r}")
    return errs


def _report(plan, acc) -> dict:
    from lossctl.assemble import build_report

    doc = build_report(plan, acc).to_json()
    return json.loads(json.dumps(doc, default=str))


def _mergeable_losses(task: str, i: int, opts: dict) -> list[str]:
    """The losses of ``task`` that bind frame ``i`` and merge with these options (the registry's, not a list)."""
    out = []
    for spec in registry.losses_for_task(task):
        if not _binds(spec.name, task, i):
            continue
        plan, inputs = _plan(spec.name, task, i, **opts)
        inputs.close()
        if unmergeable(plan) is None:
            out.append(spec.name)
    return out


MERGES = [  # (task, frame, options): --ci, --grad, --by, weights, several -p between them
    ("regression", 0, dict(grad=True, ci=True, weights=True, by=True)),
    ("regression", 0, dict(grad=True, ci=True)),
    ("regression", 1, dict(grad=True, ci=True, by=True)),
    ("binary", 0, dict(grad=True, ci=True, by=True, weights=True)),
    ("multiclass", 0, dict(grad=True, ci=True, by=True)),
    ("metric", 0, dict(grad=True, ci=True, weights=True)),
    ("metric", 1, dict(grad=True, by=True)),
    ("segmentation", 0, dict(ci=True, weights=True, by=True)),
    ("segmentation", 1, dict(ci=True)),
    ("distribution", 0, dict(grad=True, ci=True, by=True)),
    ("distribution", 1, dict(grad=True, weights=True)),
    ("distribution", 2, dict(grad=True, ci=True)),
]


def _by_pickle(plan, p: dict) -> dict:
    """A payload whose states travelled as pickled state objects (not as the file's dicts)."""
    from lossctl.driver import Accumulated

    acc = statefile.from_payload(plan, p)
    states, groups = pickle.loads(pickle.dumps((acc.states, dict(acc.group_states))))
    assert all(type(a) is type(b) for a, b in zip(states, acc.states))
    back = Accumulated(states, groups, dict(acc.group_rows), acc.rows, acc.dropped, None, None, acc.weight_total)
    return statefile.payload(plan, back, p["row_offset"])


def _tree_merge(rng, plan, payloads: list[dict]) -> dict:
    """Merge in a random order and a random tree shape, any two pieces at a time, each piece
    travelling as a state file's dicts or (at random) as pickled states."""
    pieces = list(payloads)
    rng.shuffle(pieces)
    while len(pieces) > 1:
        i, j = rng.choice(len(pieces), 2, replace=False)
        merged = statefile.merge_payloads(plan, pieces[i], pieces[j])
        if rng.random() < 0.5:
            merged = _by_pickle(plan, merged)
        pieces = [p for k, p in enumerate(pieces) if k not in (i, j)] + [merged]
    return pieces[0]


@pytest.mark.parametrize("blocks", [False, True], ids=["row-units", "hashed-blocks"])
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("task,frame,opts", MERGES, ids=[f"{t}{f}-{_opt_id(o)}" for t, f, o in MERGES])
def test_random_splits_merged_in_any_order_give_one_run(tmp_path, monkeypatch, task, frame, opts, seed, blocks):
    from lossctl import engine

    if blocks:  # the bootstrap past its exact-row limit: rows hashed into blocks
        monkeypatch.setattr(engine, "ROW_UNITS_LIMIT", 64)
    losses = _mergeable_losses(task, frame, opts)
    assert losses
    rng = np.random.default_rng([seed, frame, len(task)])
    _, make, kw = FRAMES[task][frame]
    df = make(600 if task != "segmentation" else 2400)
    whole = tmp_path / "whole.parquet"
    df.to_parquet(whole, index=False)
    k = int(rng.integers(2, 7))
    cuts = sorted(rng.choice(np.arange(1, len(df)), k - 1, replace=False).tolist())
    bounds = [0, *cuts, len(df)]

    def with_losses(path):
        from lossctl.planner import prepare

        req = _request(str(path), kw, None, task, **opts)
        req.losses = list(losses)
        p, inputs = prepare(req)
        return p.with_context(top_keep=2), inputs

    from lossctl.driver import accumulate

    one, inputs = with_losses(whole)
    with inputs:
        ref = _report(one, accumulate(one, inputs))
    payloads = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        part = tmp_path / f"part{i}.parquet"
        df.iloc[a:b].to_parquet(part, index=False)
        shard, inputs = with_losses(part)
        with inputs:
            payloads.append(statefile.payload(shard, run_shard(shard, inputs, a), a))
    merged = _tree_merge(rng, one, payloads)
    got = _report(one, statefile.from_payload(one, merged))
    for doc in (ref, got):
        doc.pop("sources", None)
    lower = "top1_share is a lower bound: a merged shard pruned rows that may belong to the top 1%"
    assert lower not in json.dumps(got)
    errs = _close(ref, got)
    assert not errs, (cuts, errs[:10])


CLI_MERGES = {  # the command-line path: eval --emit-state --row-offset per shard, then merge in a random order
    "regression": (_reg, ["-t", "y", "-p", "yhat", "-p", "yhat2", "-p", "yhat3", "-l", "mse", "-l", "rmse",
                          "-l", "huber:delta=20", "-l", "quantile:tau=0.8", "-w", "w_", "--by", "grp", "--grad",
                          "--ci", "0.9", "--bootstrap", "40", "--seed", "2"]),
    "binary": (_binary, ["-t", "y", "-p", "logit", "-p", "logit2", "--logits", "-l", "bce", "-l", "focal",
                         "-l", "hinge", "--by", "grp", "-w", "w_", "--grad", "--ci", "0.8", "--bootstrap", "40"]),
}


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("case", list(CLI_MERGES))
def test_state_files_of_random_splits_merged_in_random_order_give_one_run(tmp_path, capsys, case, seed):
    from lossctl import cli

    def run(*args) -> str:
        capsys.readouterr()
        code = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    make, args = CLI_MERGES[case]
    rng = np.random.default_rng(seed)
    df = make(900)
    whole = tmp_path / "whole.parquet"
    df.to_parquet(whole, index=False)
    cuts = sorted(rng.choice(np.arange(1, len(df)), int(rng.integers(2, 6)), replace=False).tolist())
    states = []
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(df)])):
        part, state = tmp_path / f"p{i}.parquet", tmp_path / f"s{i}.state"
        df.iloc[a:b].to_parquet(part, index=False)
        run("eval", part, *args, "--emit-state", state, "--row-offset", a, "-f", "json", "-q")
        states.append(state)
    rng.shuffle(states)
    ref = json.loads(run("eval", whole, *args, "-f", "json", "-q"))
    got = json.loads(run("merge", *states, "-f", "json", "-q"))
    for doc in (ref, got):
        doc.pop("sources", None)
    errs = _close(ref, got)
    assert not errs, (cuts, errs[:10])


# ------------------------------------------------------------------ 3. the same, state by state (hypothesis)


@settings(max_examples=40, deadline=None)
@given(n=hs.integers(1, 300), k=hs.integers(1, 8), seed=hs.integers(0, 2**32 - 1),
       loss=hs.sampled_from([s.name for s in registry.losses_for_task("regression")
                             if {r.name for r in s.roles} == {"target", "pred"}]),
       weighted=hs.booleans())
def test_state_merges_are_associative(n, k, seed, loss, weighted):
    """States of the pieces of random cuts, merged in a random tree (each piece pickled on the
    way at random), give the single state's result: counts exactly, numbers to 1e-12, the
    bootstrap's unit matrix bit for bit."""
    from lossctl.engine import Batch, Context, Options

    rng = np.random.default_rng(seed)
    y = rng.normal(size=n) * 10
    p = y + rng.standard_t(2, n)
    w = rng.uniform(0.1, 3, n) if weighted else None
    call = registry.parse_spec(loss)
    ctx = Context(task="regression", grad=True, top_keep=2)
    opts = Options(grad=True, ci=0.9)

    def state(a: int, b: int):
        s = DecomposableState(call.spec.factory(dict(call.params), ctx), opts)
        s.update(Batch({"target": y[a:b], "pred": p[a:b]}, b - a, None if w is None else w[a:b], offset=a))
        return s

    one = state(0, n)
    cuts = sorted(set(rng.integers(1, n, size=k - 1).tolist())) if n > 1 else []
    pieces = [state(a, b) for a, b in zip([0, *cuts], [*cuts, n])]
    while len(pieces) > 1:
        i, j = rng.choice(len(pieces), 2, replace=False)
        a, b = (pickle.loads(pickle.dumps(x)) if rng.random() < 0.5 else x for x in (pieces[i], pieces[j]))
        a.merge(b)
        pieces = [x for m, x in enumerate(pieces) if m not in (i, j)] + [a]
    got, ref = pieces[0].result(), one.result()
    got.pop("notes", None), ref.pop("notes", None)
    for r in (got, ref):
        r["grad_sample"] = np.sort(r["grad_sample"]).tolist()
    assert got["n"] == ref["n"] == n and pieces[0].grad.rows == n and pieces[0].boot.count == n
    errs = _close(json.loads(json.dumps(ref)), json.loads(json.dumps(got)))
    assert not errs, errs
    assert pieces[0].boot.matrix()[0].tobytes() == one.boot.matrix()[0].tobytes()


def test_the_row_key_cache_is_per_thread():
    """The last batch's row keys are cached per thread, not per process: a Dask worker fills
    several tasks' states at once, and a key array from another thread's batch would be read
    between the check and the return."""
    import threading

    from lossctl import accumulate

    got = {}
    t = threading.Thread(target=lambda: got.update(other=accumulate.row_keys(7, 5)))
    t.start()
    t.join()
    mine = accumulate.row_keys(7, 5)
    assert mine is not got["other"] and mine.tobytes() == got["other"].tobytes()
    assert accumulate.row_keys(7, 5) is mine  # (cached within a thread)
    assert accumulate.row_keys(7, 5).tobytes() == accumulate.splitmix64(np.arange(7, 12, dtype=np.uint64)).tobytes()
