"""Several files as one input: datasets (directories, globs, several paths), targets and
predictions in two files, joins on --key (CLI.md, Input; issue 9, items 3, 8, 13, 14).

Expected values come from numpy on the concatenated (or hand-joined) arrays.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT


def _mse(y, p) -> float:
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    return float(np.mean((p - y) ** 2))


def _one_line_error(r, *needles: str) -> None:
    assert r.code == 2, (r.code, r.out, r.err)
    assert r.out == ""
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert "Traceback" not in r.err
    for n in needles:
        assert n in r.err, r.err


@pytest.fixture
def parts(tmp_path):
    """Two Parquet files with the same columns, and their concatenated values."""
    rng = np.random.default_rng(3)
    y, p = rng.normal(size=40), rng.normal(size=40)
    a, b = tmp_path / "part-0.parquet", tmp_path / "part-1.parquet"
    pq.write_table(pa.table({"y": y[:25], "yhat": p[:25]}), a)
    pq.write_table(pa.table({"y": y[25:], "yhat": p[25:]}), b)
    return a, b, y, p


# ------------------------------------------------------------------ item 3: several paths


def test_two_paths_with_one_schema_are_one_dataset(cli, parts):
    # what `lossctl eval part-*.parquet` is after the shell expands the glob
    a, b, y, p = parts
    r = cli("eval", a, b, "-l", "mse", "-f", "json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["rows"] == 40
    assert d["results"][0]["value"] == pytest.approx(_mse(y, p), rel=1e-14)


def test_many_paths_are_one_dataset_in_path_order(cli, tmp_path):
    rng = np.random.default_rng(4)
    y, p = rng.normal(size=70), rng.normal(size=70)
    paths = []
    for i, (lo, hi) in enumerate([(0, 10), (10, 35), (35, 36), (36, 70)]):
        f = tmp_path / f"part-{i}.parquet"
        pq.write_table(pa.table({"y": y[lo:hi], "yhat": p[lo:hi]}), f)
        paths.append(f)
    r = cli("eval", *paths, "-l", "mae", "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["rows"] == 70
    assert r.json()["results"][0]["value"] == pytest.approx(float(np.mean(np.abs(p - y))), rel=1e-14)
    r = cli("eval", *paths, "-l", "mse", "--reduction", "none", "-f", "csv")
    got = np.loadtxt(r.out.splitlines()[1:], delimiter=",")
    np.testing.assert_allclose(got, (p - y) ** 2, rtol=1e-15)


def test_several_csv_paths_are_one_dataset(cli, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("y,yhat\n1,2\n3,3\n")
    b.write_text("yhat,y\n0,4\n")  # column order may differ
    r = cli("eval", a, b, "-l", "mse", "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["results"][0]["value"] == pytest.approx(_mse([1, 3, 4], [2, 3, 0]))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("batch_rows", [None, 4])
def test_a_bad_value_inside_a_dataset_names_its_file_and_row_there(cli, tmp_path, fmt, batch_rows):
    """A missing prediction and a probability of 1.7 in the third file: the error names that
    file and the value's row in it (as a reader of that file counts), then the dataset's row."""
    d = tmp_path / "ds"
    d.mkdir()
    sizes = [7, 5, 9]
    for i, n in enumerate(sizes):
        p = np.linspace(0.1, 0.9, n)
        if i == 2:
            p[5] = np.nan
            p[6] = 1.7
        t = pa.table({"y": (np.arange(n) % 2).astype(float), "p": p})
        if fmt == "parquet":
            pq.write_table(t, d / f"part-{i}.parquet")
        else:
            (d / f"part-{i}.csv").write_text("y,p\n" + "".join(f"{a},{b!r}\n" for a, b in zip(t["y"].to_pylist(), p.tolist())))
    paths = [d] if fmt == "parquet" else sorted(d.glob("*.csv"))
    extra = [] if batch_rows is None else ["--batch-rows", batch_rows]
    third = d / f"part-2.{fmt}"
    r = cli("eval", *paths, "-t", "y", "-p", "p", "-l", "bce", *extra)
    _one_line_error(r, f"{third}, column 'p', row 6 (row 18 of the dataset ", "missing value")
    r = cli("eval", *paths, "-t", "y", "-p", "p", "-l", "bce", "--nan", "drop", *extra)
    _one_line_error(r, f"{third}, column 'p', row 7 (row 19 of the dataset ", "got 1.7")
    # a file read alone names its own rows only
    r = cli("eval", third, "-t", "y", "-p", "p", "-l", "bce")
    _one_line_error(r, f"{third}, column 'p', row 6: missing value")


def test_a_dataset_that_only_some_files_complete_names_the_one_lacking(cli, tmp_path):
    a, b, c = (tmp_path / f"p{i}.parquet" for i in range(3))
    pq.write_table(pa.table({"y": [1.0], "yhat": [2.0]}), a)
    pq.write_table(pa.table({"y": [1.0], "yhat": [2.0]}), b)
    pq.write_table(pa.table({"y": [1.0], "other": [2.0]}), c)
    r = cli("eval", a, b, c, "-l", "mse")
    _one_line_error(r, str(c), "'yhat'")


def test_targets_and_predictions_in_two_files_still_align(cli, tmp_path):
    a, b = tmp_path / "t.csv", tmp_path / "p.parquet"
    a.write_text("y\n1\n2\n3\n")
    pq.write_table(pa.table({"yhat": [1.5, 2.0, 2.0]}), b)
    r = cli("eval", a, b, "-l", "mse", "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["results"][0]["value"] == pytest.approx(_mse([1, 2, 3], [1.5, 2, 2]))


@pytest.mark.parametrize("first,second", [
    ({"y": [1.0, 2.0], "x": [0.0, 0.0]}, {"y": [5.0, 6.0], "yhat": [1.0, 2.0]}),  # y in both, yhat in the second
    ({"y": [1.0, 2.0], "yhat": [0.0, 0.0]}, {"y": [5.0, 6.0]}),  # y in both, yhat in the first only
    ({"id": [1, 2], "y": [1.0, 2.0]}, {"id": [1, 2], "yhat": [1.0, 2.0], "y": [9.0, 9.0]}),
])
def test_a_bound_column_both_files_hold_is_an_error_naming_both(cli, tmp_path, first, second):
    a, b = tmp_path / "first.parquet", tmp_path / "second.parquet"
    pq.write_table(pa.table(first), a)
    pq.write_table(pa.table(second), b)
    r = cli("eval", a, b, "-l", "mse")
    _one_line_error(r, str(a), str(b), "'y'")


def test_a_bound_column_in_both_files_of_a_key_join_is_an_error(cli, tmp_path):
    a, b = tmp_path / "t.csv", tmp_path / "p.csv"
    a.write_text("id,y\n1,1\n2,2\n")
    b.write_text("id,y,yhat\n2,9,2\n1,9,1\n")
    r = cli("eval", a, b, "--key", "id", "-t", "y", "-p", "yhat", "-l", "mse")
    _one_line_error(r, str(a), str(b), "'y'")


def test_key_with_more_than_two_paths_is_a_usage_error(cli, parts):
    a, b, _, _ = parts
    r = cli("eval", a, b, a, "--key", "y")
    _one_line_error(r, "--key")


# ------------------------------------------------------------------ item 14: unify, ignore unused


def test_int64_and_double_unify_and_unused_columns_may_differ(cli, tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    pq.write_table(pa.table({"y": pa.array([1, 2, 3], pa.int64()), "yhat": [1.5, 2.5, 2.0]}), d / "a.parquet")
    pq.write_table(pa.table({"y": [4.5, 5.0], "yhat": pa.array([4, 6], pa.int32()), "note": ["x", "y"]}),
                   d / "b.parquet")
    pq.write_table(pa.table({"yhat": [0.0], "y": pa.array([1], pa.int16()), "other": [True]}), d / "c.parquet")
    y, p = [1, 2, 3, 4.5, 5, 1], [1.5, 2.5, 2, 4, 6, 0]
    for args in ([d], [d / "a.parquet", d / "b.parquet", d / "c.parquet"], [str(d / "*.parquet")]):
        r = cli("eval", *args, "-l", "mse", "-f", "json")
        assert r.code == 0, r.err
        assert r.json()["rows"] == 6
        assert r.json()["results"][0]["value"] == pytest.approx(_mse(y, p), rel=1e-15)


def test_a_by_column_int_in_one_file_and_double_in_another_is_one_column(cli, tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    pq.write_table(pa.table({"y": [1.0, 2.0], "yhat": [1.0, 1.0], "g": pa.array([1, 2], pa.int64())}), d / "a.parquet")
    pq.write_table(pa.table({"y": [3.0], "yhat": [1.0], "g": [1.0]}), d / "b.parquet")
    r = cli("eval", d, "-l", "mse", "--by", "g", "-f", "json")
    assert r.code == 0, r.err
    groups = {g["value"]: g for g in r.json()["groups"]}
    assert set(groups) == {1, 2}
    assert groups[1]["rows"] == 2 and groups[1]["results"][0]["value"] == pytest.approx(_mse([1, 3], [1, 1]))


def test_a_column_whose_types_conflict_is_an_error_only_when_used(cli, tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    pq.write_table(pa.table({"y": [1.0, 2.0], "yhat": [1.0, 1.0], "tag": [1, 2]}), d / "a.parquet")
    pq.write_table(pa.table({"y": [3.0], "yhat": [1.0], "tag": ["x"]}), d / "b.parquet")
    r = cli("eval", d, "-l", "mse", "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["results"][0]["value"] == pytest.approx(_mse([1, 2, 3], [1, 1, 1]))
    r = cli("eval", d, "-l", "mse", "--by", "tag")
    _one_line_error(r, "b.parquet", "'tag'")


def test_an_empty_file_in_a_dataset_is_no_error(cli, tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    pq.write_table(pa.table({"y": [1.0, 2.0], "yhat": [1.0, 1.0]}), d / "a.parquet")
    pq.write_table(pa.table({"y": pa.array([], pa.float64()), "yhat": pa.array([], pa.float64())}), d / "b.parquet")
    r = cli("eval", d, "-l", "mse", "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["rows"] == 2


@pytest.mark.parametrize("pattern", ["*/*.parquet", "year=202*/*.parquet"])
def test_a_glob_over_a_hive_tree_keeps_its_partition_columns(cli, tmp_path, pattern):
    d = tmp_path / "tree"
    (d / "year=2023").mkdir(parents=True)
    (d / "year=2024").mkdir()
    pq.write_table(pa.table({"y": [1.0, 2.0], "yhat": [1.0, 1.0]}), d / "year=2023" / "a.parquet")
    pq.write_table(pa.table({"y": [3.0], "yhat": [1.0]}), d / "year=2024" / "b.parquet")
    r = cli("eval", str(d / pattern), "-l", "mse", "--by", "year", "-f", "json")
    assert r.code == 0, r.err
    groups = {g["value"]: g["results"][0]["value"] for g in r.json()["groups"]}
    assert groups == {2023: pytest.approx(_mse([1, 2], [1, 1])), 2024: pytest.approx(_mse([3], [1]))}


# ------------------------------------------------------------------ item 13: one file at a time


def test_a_directory_is_read_without_pyarrow_dataset(tmp_path):
    # importing pyarrow.dataset alone costs about 50 MB of resident memory, which made a
    # directory need 35% more than one file of the same rows (bench_memory.py --dataset)
    d = tmp_path / "ds"
    (d / "k=1").mkdir(parents=True)
    (d / "k=2").mkdir()
    pq.write_table(pa.table({"y": [1.0, 2.0], "yhat": [1.0, 1.0]}), d / "k=1" / "a.parquet")
    pq.write_table(pa.table({"y": [3.0], "yhat": [1.0]}), d / "k=2" / "b.parquet")
    code = (
        "import sys\n"
        "from lossctl.cli import main\n"
        f"rc = main(['eval', {str(d)!r}, '-l', 'mse', '--by', 'k', '-f', 'json', '-q'])\n"
        "assert rc == 0, rc\n"
        "assert 'pyarrow.dataset' not in sys.modules, 'pyarrow.dataset was imported'\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert p.returncode == 0, p.stderr.decode()[-2000:]


# ------------------------------------------------------------------ item 8: keys compare by value


@pytest.mark.parametrize("left,right", [
    ("csv", pa.array([3, 1, 2], pa.int64())),        # CSV text against Parquet int64
    (pa.array([1, 2, 3], pa.int64()), pa.array([3.0, 1.0, 2.0])),  # int64 against double
    ("csv-zeros", pa.array(["3", "1", "2"])),        # digit strings: 001 is 1
    (pa.array([1.0, 2.0, 3.0]), pa.array(["3", "1", "2"]).dictionary_encode()),
])
def test_keys_of_differing_types_compare_by_value(cli, tmp_path, left, right):
    if isinstance(left, str):
        a = tmp_path / "t.csv"
        key = "{:03d}" if left == "csv-zeros" else "{}"
        a.write_text("id,y\n" + "".join(f"{key.format(k)},{float(k)}\n" for k in (1, 2, 3)))
    else:
        a = tmp_path / "t.parquet"
        pq.write_table(pa.table({"id": left, "y": [1.0, 2.0, 3.0]}), a)
    b = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": right, "yhat": [2.5, 1.0, 2.5]}), b)  # keys 3, 1, 2
    r = cli("eval", a, b, "--key", "id", "-l", "mse", "-f", "json")
    assert r.code == 0, r.err
    d = r.json()
    assert d["join"] == {"matched": 3, "only_in_data": 0, "only_in_data2": 0}
    assert d["results"][0]["value"] == pytest.approx(_mse([1, 2, 3], [1.0, 2.5, 2.5]), rel=1e-15)


def test_a_key_repeated_after_normalising_is_a_duplicate(cli, tmp_path):
    a, b = tmp_path / "t.csv", tmp_path / "p.csv"
    a.write_text("id,y\n7,1\n007,2\n")
    b.write_text("id,yhat\n7,1\n")
    r = cli("eval", a, b, "--key", "id", "-l", "mse")
    _one_line_error(r, str(a), "'id'", "row 1", "2 times")


# ------------------------------------------------------------------ generative: datasets of varying files


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_fuzz_readers import run  # noqa: E402  (in-process, without capsys: hypothesis runs many examples)

NUMERIC_TYPES = {"int8": pa.int8(), "int32": pa.int32(), "int64": pa.int64(), "uint16": pa.uint16(),
                 "float32": pa.float32(), "float64": pa.float64()}


@st.composite
def dataset_files(draw):
    files = []
    for _ in range(draw(st.integers(1, 5))):
        n = draw(st.integers(0, 8))
        y = draw(st.lists(st.integers(0, 100), min_size=n, max_size=n))
        p = draw(st.lists(st.integers(0, 100), min_size=n, max_size=n))
        extra = draw(st.lists(st.sampled_from(["note", "k", "z"]), unique=True, max_size=2))
        files.append({
            "y": (y, draw(st.sampled_from(sorted(NUMERIC_TYPES)))),
            "yhat": (p, draw(st.sampled_from(sorted(NUMERIC_TYPES)))),
            "extra": {c: draw(st.sampled_from(["string", "int64", "bool"])) for c in extra},
            "order": draw(st.booleans()),
        })
    if sum(len(f["y"][0]) for f in files) == 0:
        files[0]["y"], files[0]["yhat"] = ([1], files[0]["y"][1]), ([3], files[0]["yhat"][1])
    return files, draw(st.sampled_from(["directory", "paths", "glob"]))


@settings(max_examples=40, deadline=None)
@given(case=dataset_files())
def test_files_that_differ_by_widening_or_unused_columns_are_one_dataset(case):
    # values are small integers, exact in every type drawn, so that the oracle is exact
    import tempfile

    files, how = case
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, f in enumerate(files):
            n = len(f["y"][0])
            cols = {"y": pa.array(f["y"][0], NUMERIC_TYPES[f["y"][1]]),
                    "yhat": pa.array(f["yhat"][0], NUMERIC_TYPES[f["yhat"][1]])}
            for c, t in f["extra"].items():
                cols[c] = {"string": pa.array(["s"] * n), "int64": pa.array(range(n), pa.int64()),
                           "bool": pa.array([True] * n)}[t]
            names = list(cols) if f["order"] else list(reversed(cols))
            path = os.path.join(d, f"part-{i:02d}.parquet")
            pq.write_table(pa.table({c: cols[c] for c in names}), path)
            paths.append(path)
        args = {"directory": [d], "paths": paths, "glob": [os.path.join(d, "part-*.parquet")]}[how]
        if how == "paths" and len(paths) == 1:
            args = paths
        r = run("eval", *args, "-t", "y", "-p", "yhat", "-l", "mse", "-f", "json")
    y = [v for f in files for v in f["y"][0]]
    p = [v for f in files for v in f["yhat"][0]]
    assert r.code == 0, (how, r.err)
    assert r.json()["rows"] == len(y)
    assert r.json()["results"][0]["value"] == pytest.approx(_mse(y, p), rel=1e-15)
