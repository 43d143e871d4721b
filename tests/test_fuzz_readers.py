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


# ------------------------------------------------------------------ reading (item 22)


@FUZZ
@given(ys=st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=20), unsigned=st.booleans(),
       fmt=st.sampled_from(["parquet", "feather"]), data=st.data())
def test_integers_beyond_2_53_in_a_float_role(ys, unsigned, fmt, data):
    # the nearest double, as Python's float(int) gives it (correctly rounded), and as the
    # same integer written as text reads
    if unsigned:
        ys = [y + 2**63 for y in ys]
    ps = data.draw(st.lists(st.floats(-1e6, 1e6), min_size=len(ys), max_size=len(ys)))
    y = pa.array(ys, pa.uint64() if unsigned else pa.int64())
    with workdir() as d:
        path = os.path.join(d, f"big.{fmt}")
        table = pa.table({"y": y, "yhat": pa.array(ps, pa.float64()), "g": y})
        (pq.write_table if fmt == "parquet" else feather.write_feather)(table, path)
        r = run("eval", path, "-l", "mae", "--by", "g", "-f", "json")
    assert r.code == 0, r.err
    want = np.mean(np.abs(np.array(ps) - np.array([float(v) for v in ys])))
    out = r.json()
    assert out["results"][0]["value"] == pytest.approx(want, rel=1e-15)
    assert {g["value"] for g in out["groups"]} == set(ys)  # group values stay exact integers


def _text(rows: list[tuple[float, float]], fmt: str, eol: str, bad: int | None) -> str:
    def val(i: int, v: float) -> str:
        return "oops" if i == bad else repr(v)
    if fmt == "jsonl":
        return "".join(('{"y": %s, "yhat": %s}' % (('"oops"' if i == bad else repr(a)), repr(b))) + eol
                       for i, (a, b) in enumerate(rows))
    sep = "," if fmt == "csv" else "\t"
    return f"y{sep}yhat{eol}" + "".join(f"{val(i, a)}{sep}{b!r}{eol}" for i, (a, b) in enumerate(rows))


finite = st.floats(-1e6, 1e6, allow_nan=False)


@FUZZ
@given(rows=st.lists(st.tuples(finite, finite), min_size=1, max_size=40), fmt=st.sampled_from(["csv", "tsv", "jsonl"]),
       eol=st.sampled_from(["\r", "\n", "\r\n"]), data=st.data(), parallel=st.booleans())
def test_line_endings_cr_only_lf_crlf(rows, fmt, eol, data, parallel):
    bad = data.draw(st.one_of(st.none(), st.integers(0, len(rows) - 1)))
    import lossctl.io

    with workdir() as d, pytest.MonkeyPatch.context() as mp:
        if parallel:  # the byte-range reader of large CSV files cuts at line ends: CR-only files must not reach it
            mp.setattr(lossctl.io, "PARALLEL_CSV_BYTES", 1)
            mp.setattr(lossctl.io, "CSV_CHUNK_BYTES", 64)
        path = os.path.join(d, f"data.{fmt}")
        with open(path, "w", newline="") as f:
            f.write(_text(rows, fmt, eol, bad))
        r = run("eval", path, "-l", "mse", "-f", "json")
    if bad is None:
        assert r.code == 0, (eol, r.err)
        y, p = np.array(rows).T
        assert r.json()["rows"] == len(rows)
        assert r.json()["results"][0]["value"] == pytest.approx(float(np.mean((p - y) ** 2)), rel=1e-12, abs=1e-300)
    else:
        assert_input_error(r, "data.", "'y'", f"row {bad + 1}")


@FUZZ
@given(length=st.integers(131_073, 600_000), where=st.integers(0, 5), n=st.integers(1, 6), quoted=st.booleans(),
       data=st.data())
def test_csv_fields_over_131072_characters(length, where, n, quoted, data):
    bad = data.draw(st.one_of(st.none(), st.integers(0, n - 1)))
    rng = np.random.default_rng(length)
    y, p = rng.normal(size=n), rng.normal(size=n)
    long = "x" * length
    note = f'"{long}"' if quoted else long
    lines = ["y,note,yhat"] + [f"{'oops' if i == bad else repr(float(y[i]))},{note if i == min(where, n - 1) else 'a'},"
                               f"{float(p[i])!r}" for i in range(n)]
    with workdir() as d:
        path = os.path.join(d, "long.csv")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = run("eval", path, "-l", "mse", "-f", "json")
    if bad is None:
        assert r.code == 0, r.err
        assert r.json()["results"][0]["value"] == pytest.approx(float(np.mean((p - y) ** 2)), rel=1e-12)
    else:
        assert_input_error(r, "long.csv", "'y'", f"row {bad + 1}", "'oops'")


_PLAIN: dict[str, bytes] = {}


def _compressed(codec: str) -> tuple[bytes, bytes]:
    """A CSV of about 2 MB (its plain bytes, its compressed bytes), made once."""
    import bz2
    import gzip

    if "plain" not in _PLAIN:
        rng = np.random.default_rng(22)
        a = rng.normal(size=(60_000, 2))
        _PLAIN["plain"] = ("y,yhat\n" + "".join(f"{u!r},{v!r}\n" for u, v in a.tolist())).encode()
    if codec not in _PLAIN:
        _PLAIN[codec] = (gzip.compress if codec == "gzip" else bz2.compress)(_PLAIN["plain"])
    return _PLAIN["plain"], _PLAIN[codec]


@settings(max_examples=12, deadline=None)
@given(codec=st.sampled_from(["gzip", "bz2"]), how=st.sampled_from(["flip", "cut", "zero"]), frac=st.floats(0, 1))
def test_damage_in_gzip_or_bz2_past_the_first_64_kb(codec, how, frac):
    plain, packed = _compressed(codec)
    at = (1 << 16) + int(frac * (len(packed) - (1 << 16) - 1))
    if how == "cut":
        damaged = packed[:at]
    elif how == "flip":
        damaged = packed[:at] + bytes([packed[at] ^ 0xFF]) + packed[at + 1:]
    else:
        damaged = packed[:at] + b"\x00" * 256 + packed[at + 256:]
    with workdir() as d:
        path = os.path.join(d, "data.csv" + (".gz" if codec == "gzip" else ".bz2"))
        with open(path, "wb") as f:
            f.write(damaged)
        r = run("eval", path, "-l", "mse", "-f", "json")
    if r.code == 0:  # only when the damage changed nothing that was read: then the numbers are right
        a = np.loadtxt(io.BytesIO(plain), delimiter=",", skiprows=1)
        assert r.json()["results"][0]["value"] == pytest.approx(float(np.mean((a[:, 1] - a[:, 0]) ** 2)), rel=1e-12)
    else:
        assert_input_error(r, "data.csv")


def _dataset(d: str, n: int = 3) -> tuple[str, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    y, p = rng.normal(size=10 * n), rng.normal(size=10 * n)
    root = os.path.join(d, "ds")
    os.makedirs(root)
    for i in range(n):
        pq.write_table(pa.table({"y": y[10 * i:10 * i + 10], "yhat": p[10 * i:10 * i + 10]}),
                       os.path.join(root, f"part-{i}.parquet"))
    return root, y, p


@pytest.mark.parametrize("how", ["dangling-link", "deleted-after-open", "unreadable-after-open", "unreadable",
                                 "directory-named-parquet", "not-parquet"])
def test_a_file_deleted_or_unreadable_inside_a_dataset(how, tmp_path, monkeypatch):
    import pyarrow.parquet

    from lossctl.errors import InputError
    from lossctl.plan import Request
    from lossctl.planner import prepare
    from lossctl.assemble import run as run_plan

    root, _, _ = _dataset(str(tmp_path))
    victim = os.path.join(root, "part-1.parquet")
    if how == "dangling-link":
        os.remove(victim)
        os.symlink(os.path.join(str(tmp_path), "gone.parquet"), victim)
    elif how == "unreadable":
        real = open  # an unreadable file (root reads through chmod 000, so the refusal is simulated)

        def deny(path, *a, **k):
            if str(path) == victim:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *a, **k)

        monkeypatch.setattr("builtins.open", deny)
    elif how == "directory-named-parquet":
        os.remove(victim)
        os.mkdir(victim)
        pq.write_table(pa.table({"y": [1.0], "yhat": [2.0]}), os.path.join(victim, "inner.parquet"))
    elif how == "not-parquet":
        with open(victim, "wb") as f:
            f.write(b"y,yhat\n1,2\n")
    if how in ("deleted-after-open", "unreadable-after-open"):
        plan, inputs = prepare(Request(data=root, losses=["mse"]))
        try:
            if how == "deleted-after-open":
                os.remove(victim)
            else:
                real_pf = pyarrow.parquet.ParquetFile

                def deny_pf(source, *a, **k):
                    if str(source) == victim:
                        raise PermissionError(13, "Permission denied", str(source))
                    return real_pf(source, *a, **k)

                monkeypatch.setattr(pyarrow.parquet, "ParquetFile", deny_pf)
            with pytest.raises(InputError) as e:
                run_plan(plan, inputs)
        finally:
            inputs.close()
        assert victim in str(e.value) and len(str(e.value).splitlines()) == 1
        return
    r = run("eval", root, "-l", "mse", "-f", "json")
    if how == "directory-named-parquet":  # a directory is walked into: its file is one more part
        assert r.code == 0, r.err
        assert r.json()["rows"] == 21
        return
    assert_input_error(r, victim)


@pytest.mark.parametrize("stdin", ["write-only file", "write end of a pipe", "closed"])
def test_a_write_only_stdin_leaves_no_temporary_file(stdin, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "lossctl", "eval", "-", "-l", "mse"]
    if stdin == "write-only file":
        with open(tmp_path / "sink.txt", "w") as wo:
            p = subprocess.run(cmd, stdin=wo, capture_output=True, cwd=ROOT, env=env)
    elif stdin == "write end of a pipe":
        r, w = os.pipe()
        try:
            p = subprocess.run(cmd, stdin=w, capture_output=True, cwd=ROOT, env=env)
        finally:
            os.close(r)
            os.close(w)
    else:
        p = subprocess.run(["bash", "-c", 'exec "$@" <&-', "-", *cmd], capture_output=True, cwd=ROOT, env=env)
    err = p.stderr.decode()
    assert p.returncode == 2, err
    assert p.stdout == b"" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "standard input" in err
    assert list(tmpdir.iterdir()) == []


label_values = st.one_of(
    st.lists(st.integers(-2**62, 2**62), min_size=1, max_size=15),
    st.lists(st.integers(0, 3), min_size=1, max_size=15),
    st.lists(st.floats(-1e3, 1e3, allow_nan=False).map(lambda v: round(v, 2)), min_size=1, max_size=15),
    st.lists(st.sampled_from(["a", "b", "7", ""]), min_size=1, max_size=15),
)


@FUZZ
@given(labels=label_values, how=st.sampled_from(["by", "id", "key"]), data=st.data())
def test_json_lines_columns_used_as_keys_groups_or_ids(labels, how, data):
    import json

    n = len(labels)
    if how == "key":
        labels = list(dict.fromkeys(labels))
        n = len(labels)
    ys = data.draw(st.lists(finite, min_size=n, max_size=n))
    ps = data.draw(st.lists(finite, min_size=n, max_size=n))
    with workdir() as d:
        path = os.path.join(d, "data.jsonl")
        with open(path, "w") as f:
            for g, y, p in zip(labels, ys, ps):
                f.write(json.dumps({"y": y, "g": g, "yhat": p} if how != "key" else {"y": y, "g": g}) + "\n")
        if how == "by":
            r = run("eval", path, "-l", "mae", "--by", "g", "-f", "json")
        elif how == "id":
            r = run("eval", path, "-l", "mae", "--id", "g", "--reduction", "none", "-f", "jsonl")
        else:
            other = os.path.join(d, "preds.jsonl")
            with open(other, "w") as f:
                for g, p in reversed(list(zip(labels, ps))):
                    f.write(json.dumps({"g": g, "yhat": p}) + "\n")
            r = run("eval", path, other, "--key", "g", "-l", "mae", "-f", "json")
    assert r.code == 0, (labels, how, r.err)
    err = np.abs(np.array(ps) - np.array(ys))
    if how == "by":
        got = {(g["value"] if g["value"] is not None else ""): g for g in r.json()["groups"]}
        assert set(got) == set(labels)
        for v, g in got.items():
            m = np.array([lab == v for lab in labels])
            assert g["rows"] == int(m.sum())
            assert g["results"][0]["value"] == pytest.approx(float(err[m].mean()), rel=1e-12, abs=1e-12)
    elif how == "id":
        rows = [json.loads(line) for line in r.out.splitlines()]
        assert [row["g"] if row["g"] is not None else "" for row in rows] == labels
    else:
        assert r.json()["results"][0]["value"] == pytest.approx(float(err.mean()), rel=1e-12, abs=1e-12)
