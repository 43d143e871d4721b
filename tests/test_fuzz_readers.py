"""Generative tests of the readers and joins (issue 9, items 20 and 22): every class of
malformed or unusual input ends with the right numbers, or with exit 2 and one line on
standard error naming the file (and column, row where there is one): never exit 3, a
traceback, or output on the wrong stream.

Expected values are computed here with numpy on the rows as written.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=30, deadline=None)


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self):
        import json

        return json.loads(self.out)


def run(*args) -> Run:
    """lossctl in-process (hypothesis cannot use function-scoped fixtures such as capsys)."""
    from lossctl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return Run(code, out.getvalue(), err.getvalue())


def assert_input_error(r: Run, *needles: str) -> None:
    assert r.code == 2, (r.code, r.out, r.err)
    assert r.out == ""
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    for n in needles:
        assert n in r.err, r.err


@contextlib.contextmanager
def workdir():
    d = tempfile.mkdtemp(prefix="lossctl-fuzz-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ joins (item 20)

# how one side writes its integer keys
KEY_FORMS = ["csv", "csv-zeros", "csv-float", "int64", "int32", "uint16", "double", "string", "dict-string",
             "dict-int", "jsonl", "feather-int"]


def write_side(d: str, name: str, form: str, keys: list[int], cols: dict[str, list[float]]) -> str:
    """A file whose key column 'id' holds ``keys`` written the way ``form`` says."""
    if form.startswith("csv"):
        text = {"csv": str, "csv-zeros": lambda k: f"{k:04d}" if k >= 0 else str(k), "csv-float": lambda k: f"{k}.0"}[form]
        path = os.path.join(d, name + ".csv")
        with open(path, "w") as f:
            f.write(",".join(["id", *cols]) + "\n")
            for i, k in enumerate(keys):
                f.write(",".join([text(k), *(repr(v[i]) for v in cols.values())]) + "\n")
        return path
    if form == "jsonl":
        import json

        path = os.path.join(d, name + ".jsonl")
        with open(path, "w") as f:
            for i, k in enumerate(keys):
                f.write(json.dumps({"id": k, **{c: v[i] for c, v in cols.items()}}) + "\n")
        return path
    arr = {
        "int64": lambda: pa.array(keys, pa.int64()),
        "int32": lambda: pa.array(keys, pa.int32()),
        "uint16": lambda: pa.array(keys, pa.uint16()),
        "double": lambda: pa.array([float(k) for k in keys], pa.float64()),
        "string": lambda: pa.array([str(k) for k in keys]),
        "dict-string": lambda: pa.array([str(k) for k in keys]).dictionary_encode(),
        "dict-int": lambda: pa.array(keys, pa.int64()).dictionary_encode(),
        "feather-int": lambda: pa.array(keys, pa.int64()),
    }[form]()
    table = pa.table({"id": arr, **{c: pa.array(v, pa.float64()) for c, v in cols.items()}})
    if form == "feather-int":
        path = os.path.join(d, name + ".feather")
        feather.write_feather(table, path)
    else:
        path = os.path.join(d, name + ".parquet")
        pq.write_table(table, path)
    return path


@st.composite
def two_sides(draw):
    universe = draw(st.lists(st.integers(0, 5000), min_size=2, max_size=30, unique=True))
    left = draw(st.lists(st.sampled_from(universe), min_size=1, unique=True))
    right = draw(st.lists(st.sampled_from(universe), min_size=1, unique=True))
    if not set(left) & set(right):
        right.append(left[0])
    form0 = draw(st.sampled_from(KEY_FORMS))
    form1 = draw(st.sampled_from(KEY_FORMS))
    if form0 == "uint16" or form1 == "uint16":
        left, right = [k % 65536 for k in left], [k % 65536 for k in right]
    return left, right, form0, form1


def _values(keys: list[int], salt: int) -> list[float]:
    return [((k * 7919 + salt) % 1000) / 100.0 for k in keys]


@FUZZ
@given(sides=two_sides())
def test_keys_of_differing_types_join_by_value(sides):
    left, right, form0, form1 = sides
    y, p = _values(left, 1), _values(right, 2)
    with workdir() as d:
        a = write_side(d, "targets", form0, left, {"y": y})
        b = write_side(d, "preds", form1, right, {"yhat": p})
        r = run("eval", a, b, "--key", "id", "-l", "mse", "-f", "json", "-q")
    assert r.code == 0, (form0, form1, r.err)
    common = sorted(set(left) & set(right))
    yv = np.array([y[left.index(k)] for k in common])
    pv = np.array([p[right.index(k)] for k in common])
    out = r.json()
    assert out["rows"] == len(common)
    assert out["results"][0]["value"] == pytest.approx(float(np.mean((pv - yv) ** 2)), rel=1e-12, abs=1e-15)
    assert out["join"] == {"matched": len(common), "only_in_data": len(left) - len(common),
                           "only_in_data2": len(right) - len(common)}


LIST_KEYS = {
    "list": lambda n: pa.array([[i] for i in range(n)]),
    "large_list": lambda n: pa.array([[i] for i in range(n)], pa.large_list(pa.int64())),
    "fixed_size_list": lambda n: pa.array([[i, i] for i in range(n)], pa.list_(pa.int64(), 2)),
    "struct": lambda n: pa.array([{"a": i} for i in range(n)]),
    "map": lambda n: pa.array([[("a", i)] for i in range(n)], pa.map_(pa.string(), pa.int64())),
}


@FUZZ
@given(kind=st.sampled_from(sorted(LIST_KEYS)), side=st.integers(0, 1), n=st.integers(1, 20),
       other=st.sampled_from(["csv", "int64", "string"]))
def test_list_and_nested_keys_are_an_input_error(kind, side, n, other):
    keys = list(range(n))
    with workdir() as d:
        nested = os.path.join(d, "nested.parquet")
        pq.write_table(pa.table({"id": LIST_KEYS[kind](n), ("y" if side == 0 else "yhat"): np.arange(n, dtype=float)}),
                       nested)
        plain = write_side(d, "plain", other, keys, {("yhat" if side == 0 else "y"): _values(keys, 3)})
        paths = (nested, plain) if side == 0 else (plain, nested)
        r = run("eval", *paths, "--key", "id", "-l", "mse", "-f", "json")
    assert_input_error(r, "nested.parquet", "'id'")


@FUZZ
@given(sides=two_sides(), how=st.sampled_from(["by", "id", "target"]))
def test_a_key_column_that_is_also_bound(sides, how):
    left, right, form0, form1 = sides
    y, p = _values(left, 4), _values(right, 5)
    with workdir() as d:
        a = write_side(d, "targets", form0, left, {"y": y})
        b = write_side(d, "preds", form1, right, {"yhat": p})
        common = sorted(set(left) & set(right))
        if how == "by":
            r = run("eval", a, b, "--key", "id", "-t", "y", "-p", "yhat", "-l", "mae", "--by", "id", "-f", "json")
        elif how == "id":
            r = run("eval", a, b, "--key", "id", "-t", "y", "-p", "yhat", "-l", "mae", "--id", "id",
                    "--reduction", "none", "-f", "csv")
        else:  # the key is the target itself
            r = run("eval", a, b, "--key", "id", "-t", "id", "-p", "yhat", "-l", "mae", "-f", "json")
    assert r.code == 0, (form0, form1, how, r.err)
    if how == "by":
        groups = r.json()["groups"]
        assert sorted(int(float(g["value"])) for g in groups) == common
        for g in groups:
            k = int(float(g["value"]))
            assert g["rows"] == 1
            assert g["results"][0]["value"] == pytest.approx(abs(p[right.index(k)] - y[left.index(k)]), abs=1e-12)
    elif how == "id":
        lines = r.out.strip().splitlines()[1:]
        got = {int(float(line.split(",")[0])): float(line.split(",")[1]) for line in lines}
        assert sorted(got) == common
        for k, v in got.items():
            assert v == pytest.approx(abs(p[right.index(k)] - y[left.index(k)]), abs=1e-12)
    else:
        want = np.mean([abs(p[right.index(k)] - k) for k in common])
        assert r.json()["results"][0]["value"] == pytest.approx(want, rel=1e-12)


@FUZZ
@given(fmt=st.sampled_from(["parquet", "feather"]), dup=st.sampled_from(["y", "yhat", "extra", "id"]),
       side=st.integers(0, 1), keyed=st.booleans(), n=st.integers(1, 12))
def test_duplicate_column_names(fmt, dup, side, keyed, n):
    rng = np.random.default_rng(n)
    y, p = rng.normal(size=n), rng.normal(size=n)
    cols = [("id", pa.array(np.arange(n))), ("y" if side == 0 else "yhat", pa.array(y if side == 0 else p)),
            ("extra", pa.array(np.zeros(n)))]
    cols.append((dup, pa.array(np.ones(n))))
    table = pa.Table.from_arrays([c for _, c in cols], names=[name for name, _ in cols])
    with workdir() as d:
        path = os.path.join(d, f"dup.{fmt}")
        (pq.write_table if fmt == "parquet" else feather.write_feather)(table, path)
        other = os.path.join(d, "other.csv")
        with open(other, "w") as f:
            f.write(f"id,{'yhat' if side == 0 else 'y'}\n")
            f.writelines(f"{i},{float((p if side == 0 else y)[i])!r}\n" for i in range(n))
        paths = (path, other) if side == 0 else (other, path)
        r = run("eval", *paths, *(["--key", "id"] if keyed else []), "-t", "y", "-p", "yhat", "-l", "mse", "-f", "json")
    own, others = ("y", "yhat") if side == 0 else ("yhat", "y")
    if dup == own or (dup == "id" and keyed):
        assert_input_error(r, path, f"'{dup}'", "two columns")
    elif dup == others:  # then both files hold it
        assert_input_error(r, path, other, f"'{dup}'", "in both")
    else:
        assert r.code == 0, r.err
        assert r.json()["results"][0]["value"] == pytest.approx(float(np.mean((p - y) ** 2)), rel=1e-12)
