"""Slices held as columns (lossctl.results.SliceGroups): the columnar CSV and JSON writers
write the same bytes as the object path (every slice made into a Group and written one
by one, what the writers did before), on random data with several kinds of keys, missing
keys, hidden slices, intervals, gradients and several prediction sets.

Reference: the same report with its slices as a list of :class:`Group` (``list(groups)``
of a fresh run), written by the writers' object path.
"""
from __future__ import annotations

import gc
import math
import io
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossctl.assemble import run
from lossctl.plan import Request
from lossctl.planner import prepare
from lossctl.render import render_report
from lossctl.results import Report, SliceGroups
from lossctl.slice_results import _slice_order, _sort_key
from lossctl.slices import Factor, Keys

COLUMNAR = ("csv", "tsv", "json")  # the writers that read the columns
VIEWS = ("jsonl", "markdown", "table")  # the others, which read Groups


def data_file(path, n: int = 3000, seed: int = 0, huge: bool = False) -> str:
    rng = np.random.default_rng(seed)
    y = rng.normal(3, 2, n)
    yhat = y + rng.normal(0, 0.7, n)
    if huge:  # some slices' sums leave the double range (every term finite): results from a state
        big = rng.random(n) < 0.2
        y = np.where(big, y * 1e153, y)
        yhat = np.where(big, -y, yhat)
    text = rng.choice(["a", "b,c", 'q"x', "line\nbreak", "é", "", None], n).tolist()
    t = pa.table({
        "y": y, "yhat": yhat, "yhat2": y + rng.normal(0.2, 1.0, n), "w": rng.random(n),
        "i": pa.array(np.where(rng.random(n) < 0.05, -1, rng.integers(-40, 400, n)).tolist(), pa.int64()),
        "im": pa.array([None if v < 0.03 else int(v * 1000) for v in rng.random(n)], pa.int64()),
        "s": pa.array(text), "d": pa.array(text).dictionary_encode(),
        "f": rng.choice([0.5, -2.0, np.inf, -np.inf, np.nan, 7.0], n),
        "b": pa.array(rng.random(n) < 0.4),
    })
    pq.write_table(t, path, row_group_size=max(n // 3, 1))
    return str(path)


def _run(**kw) -> Report:
    plan, inputs = prepare(Request(**kw))
    try:
        return run(plan, inputs)
    finally:
        inputs.close()


def _write(report: Report, fmt: str) -> str:
    out = io.StringIO()
    render_report(report, fmt, out, width=120)
    return out.getvalue()


def _as_objects(report: Report) -> Report:
    """The report with its slices made into a list of Groups (the writers' object path)."""
    assert isinstance(report.groups, SliceGroups)
    return Report(**{**report.__dict__, "groups": list(report.groups)})


def assert_same_bytes(objects: bool = False, **kw) -> Report:
    """The report of ``kw`` in every format, with slices as columns and as Groups; unless
    every result is an object anyway (``objects``: intervals, gradients, comparisons, extras),
    the CSV and JSON writers read the columns without making a Group."""
    rep = _run(**kw)
    assert isinstance(rep.groups, SliceGroups)
    got = {}
    for fmt in COLUMNAR:
        got[fmt] = _write(rep, fmt)
        assert objects or not rep.groups._made, f"{fmt} made Groups"  # it read the columns
    ref = _as_objects(_run(**kw))
    for fmt in COLUMNAR + VIEWS:
        want = _write(ref, fmt)
        assert (got[fmt] if fmt in got else _write(rep, fmt)) == want, fmt
    return rep


KEYS = [["i"], ["im"], ["s"], ["d"], ["f"], ["b"], ["i", "s"], ["d", "b", "im"]]


@pytest.mark.parametrize("by", KEYS, ids=[",".join(k) for k in KEYS])
def test_columnar_writers_write_the_object_paths_bytes(tmp_path, by):
    path = data_file(tmp_path / "d.parquet", seed=len(by) * 7 + len(by[0]))
    rep = assert_same_bytes(data=path, target="y", preds=["yhat"], losses=["mse", "mae", "huber:delta=0.5"], by=by,
                            batch_rows=700)
    assert len(rep.groups) >= 2


@pytest.mark.parametrize("opt", ["min_rows", "weight", "ci", "grad", "preds", "preds-ci", "huge", "sum", "interval"])
def test_columnar_writers_with_options(tmp_path, opt):
    path = data_file(tmp_path / "d.parquet", seed=3, huge=opt == "huge")
    kw = dict(data=path, target="y", preds=["yhat"], losses=["mse", "rmse"], by=["i"], batch_rows=900)
    if opt == "min_rows":
        kw["min_rows"] = 9
    if opt == "weight":
        kw["weight"] = "w"
    if "ci" in opt:
        kw.update(ci=0.9, bootstrap=30, seed=5, by=["s"])
    if opt == "grad":
        kw.update(grad=True, by=["im"])
    if "preds" in opt:
        kw["preds"] = ["yhat", "yhat2"]
    if opt == "huge":  # (one batch: a table's sum overflowing across batches is another matter)
        kw["batch_rows"] = 4096
    if opt == "sum":
        kw.update(reduction="sum", losses=["mse", "mae"])
    if opt == "interval":
        kw.update(losses=["interval"], preds=[], cols={"lower": "yhat", "upper": "yhat2"})
    rep = assert_same_bytes(opt in ("ci", "grad", "preds", "preds-ci", "sum", "interval"), **kw)
    if opt == "min_rows":
        assert rep.hidden_groups > 0
    if opt == "huge":
        values = [r.value for g in rep.groups for r in g.results]
        assert any(v > 1e300 for v in values)
        assert any(c.full for c in rep.groups.columns)


def test_a_group_read_and_changed_is_written_as_changed(tmp_path):
    """A library caller may change a slice it has read: the writers write what it holds."""
    path = data_file(tmp_path / "d.parquet", seed=4)
    rep = _run(data=path, target="y", preds=["yhat"], losses=["mse", "mae"], by=["i"], batch_rows=800)
    g = rep.groups[2]
    g.results[1].value = 123.5
    g.results[0].worst = True
    g.rows = 77
    ref = _as_objects(rep)
    for fmt in COLUMNAR:
        assert _write(rep, fmt) == _write(ref, fmt), fmt
    assert f"i,{g.value},77,mae,mae,yhat,123.5," in _write(rep, "csv")


def test_reading_slices_makes_groups_on_access_only(tmp_path):
    path = data_file(tmp_path / "d.parquet", seed=5)
    rep = _run(data=path, target="y", preds=["yhat"], losses=["mse", "mae"], by=["i"], batch_rows=800)
    groups = rep.groups
    assert isinstance(groups, SliceGroups) and not groups._made
    n = len(groups)
    assert groups[-1] is groups[n - 1] and groups[0] is groups[0]  # made once, then kept
    assert [g.value for g in groups[:3]] == sorted(g.value for g in groups[:3])
    with pytest.raises(IndexError):
        groups[n]
    assert groups == list(groups)
    worst = [i for i, g in enumerate(groups) if g.results[0].worst]
    assert len(worst) == 1 and groups[worst[0]].results[0].value == max(g.results[0].value for g in groups)
    assert rep.all_results()[:2] == rep.results


def test_building_slice_results_leaves_the_collector_alone(tmp_path):
    """No gc.freeze (which moved every object of the caller into the oldest generation)."""
    path = data_file(tmp_path / "d.parquet", seed=6)
    enabled = gc.isenabled()
    gc.disable()
    try:
        marker = [object()]
        rep = _run(data=path, target="y", preds=["yhat"], losses=["mse"], by=["i"], batch_rows=800)
        assert any(o is marker for o in gc.get_objects(generation=0))
        assert not gc.isenabled()
    finally:
        if enabled:
            gc.enable()
    assert len(rep.groups) > 3


def test_integer_keys_beside_a_missing_value_go_through_the_sorted_table():
    """Integers that come with a missing value (a list of uniques) are looked up in the
    sorted table like any int64 column, so the slice order needs no Python sort."""
    keys = Keys(1)
    keys.batch([Factor(np.array([0, 1, 2, 3], dtype=np.intp), [30, None, -2, 7])])
    keys.batch([Factor(np.array([0, 1, 2], dtype=np.intp), np.array([5, 30, 1000], dtype=np.int64))])
    ki = keys.cols[0]
    assert sorted(ki._ik.tolist()) == [-2, 5, 7, 30, 1000] and not ki.mixed
    sl = SimpleNamespace(keys=keys, size=keys.size)
    order = _slice_order(sl)
    assert [ki.values[g] for g in order] == [-2, 5, 7, 30, 1000, None]


def test_an_integer_whose_slice_holds_true_is_sorted_as_the_boolean():
    """1 and True are one slice (Python equality); a slice first seen as True sorts among the
    booleans, after the numbers, although the integer table holds 1."""
    keys = Keys(1)
    keys.batch([Factor(np.array([0, 1], dtype=np.intp), [True, False])])
    keys.batch([Factor(np.array([0, 1, 2], dtype=np.intp), np.array([1, 4, -3], dtype=np.int64))])
    ki = keys.cols[0]
    assert ki.mixed
    order = _slice_order(SimpleNamespace(keys=keys, size=keys.size))
    assert [ki.values[g] for g in order] == sorted(ki.values, key=lambda v: _sort_key((v,)))
    assert [ki.values[g] for g in order] == [-3, 4, False, True]


@pytest.mark.parametrize("cross", [False, True])
def test_non_finite_values_and_keys_that_need_quoting(cross):
    """Values nan, ±inf, −0.0, 1e-300; keys with delimiters, quotes, newlines, empty, None,
    floats, booleans, ±inf, crosses: the columns write what the Groups write."""
    from lossctl.results import LossColumn, LossResult

    keys: list = ["a,b", 'q"x', "l\nb", "", None, 2.5, True, -3, math.inf, "\t", "é"]
    if cross:
        keys = [[k, i % 3 if i % 4 else None] for i, k in enumerate(keys)]
    m = len(keys)
    vals = np.array([math.nan, math.inf, -math.inf, -0.0, 1e-300, 3.0, 0.1, 2.0, 5.0, 1e16, 7.25])[:m]

    def make() -> Report:
        cols = [LossColumn("mse", "mse", {}, "p", "mean", vals.copy(), np.arange(m, dtype=np.int64) + 1),
                LossColumn("huber", "huber:delta=0.5", {"delta": 0.5}, "p", "mean", -vals[::-1].copy(),
                           np.arange(m, dtype=np.int64) + 2)]
        cols[0].worst, cols[1].worst = 1, 4
        g = SliceGroups("k,j" if cross else "k", list(keys), np.arange(m, dtype=np.int64) * 10, cols)
        return Report(task="regression", task_inferred=False, rows=500, dropped_rows=0,
                      results=[LossResult("mse", "mse", {}, "p", 1.0, 500)], groups=g)

    rep = make()
    got = {fmt: _write(rep, fmt) for fmt in COLUMNAR}
    assert not rep.groups._made
    ref = _as_objects(make())
    for fmt in COLUMNAR:
        assert got[fmt] == _write(ref, fmt), fmt
    assert rep.to_json() == ref.to_json()


def test_integer_keys_are_read_without_importing_pyarrow_compute(tmp_path):
    """An int64 --by column is read from its buffer: Array.cast would import pyarrow.compute
    (15-25 ms of every run's start-up; the run without --by does not import it)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    n = 50
    t = pa.table({"y": np.arange(n, dtype=float), "yhat": np.arange(n, dtype=float) + 0.5,
                  "g": pa.array(np.arange(n) % 4, pa.int64())})
    path = tmp_path / "g.parquet"
    pq.write_table(t, path)
    code = ("import sys, io, contextlib\nfrom lossctl.cli import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    try:\n"
            f"        main(['eval', {str(path)!r}, '-t', 'y', '-p', 'yhat', '-l', 'mse', '--by', 'g', '-f', 'csv'])\n"
            "    except SystemExit:\n        pass\n"
            "print(out.getvalue().count(',mse,'), 'pyarrow.compute' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                       env=dict(os.environ, PYTHONPATH=root))
    assert p.stdout.strip().splitlines()[-1] == "5 False", p.stdout + p.stderr


@pytest.mark.parametrize("typ", [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
                                 pa.uint64()])
def test_integer_keys_of_every_width_read_from_their_buffers(typ):
    from lossctl.arrays import labels_view

    vals = [0, 3, 7, 100, 5, 3]
    if typ.bit_width > 8:
        vals.append(1000 if typ != pa.int16() and typ != pa.uint16() else 30000)
    if pa.types.is_signed_integer(typ):
        vals += [-1, -(2 ** (typ.bit_width - 1))]
    arr = pa.array(vals, typ)
    got = labels_view(arr)
    assert got.dtype == np.int64 and got.tolist() == vals
    assert labels_view(arr.slice(2, 3)).tolist() == vals[2:5]  # (an offset into the buffer)
    assert labels_view(arr.slice(0, 0)).tolist() == []
    assert labels_view(pa.chunked_array([arr[:2], arr[2:]])).tolist() == vals
