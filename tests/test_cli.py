"""The command-line contract of CLI.md: formats, exit codes, every bad input."""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error

from conftest import ROOT, SAMPLES, run_subprocess

Y = [1.0, 2.0, 3.5, -1.0, 0.25]
P = [1.5, 1.0, 3.0, 0.0, 0.25]
CSV = "y,yhat\n" + "".join(f"{a},{b}\n" for a, b in zip(Y, P))


@pytest.fixture
def reg(write_csv):
    return write_csv("reg.csv", CSV)


def test_json_shape_and_values(cli, reg):
    r = cli("eval", reg, "-f", "json", "-l", "mse", "-l", "huber:delta=0.5")
    assert r.code == 0 and r.err == ""
    d = r.json()
    assert d["schema_version"] == 1 and d["lossctl_version"]
    assert d["task"] == "regression" and d["rows"] == 5 and d["dropped_rows"] == 0
    mse, hub = d["results"]
    assert mse["loss"] == "mse" and mse["params"] == {} and mse["pred"] == "yhat" and mse["n"] == 5
    assert mse["value"] == pytest.approx(mean_squared_error(Y, P), rel=1e-15)
    assert hub["params"] == {"delta": 0.5} and hub["spec"] == "huber:delta=0.5"


def test_default_losses_for_regression(cli, reg):
    d = cli("eval", reg, "-f", "json").json()
    assert [r["loss"] for r in d["results"]] == ["mse", "mae", "huber", "quantile"]
    assert d["results"][1]["value"] == pytest.approx(mean_absolute_error(Y, P))


def test_grad_summary_keys(cli, reg):
    d = cli("eval", reg, "-f", "json", "-l", "mse", "--grad").json()
    g = d["results"][0]["grad"]
    assert set(g) == {"mean", "std", "min", "max", "abs_mean", "l2", "zero_frac", "top1_share"}
    grads = 2 * (np.array(P) - np.array(Y))
    assert g["mean"] == pytest.approx(grads.mean())
    assert g["std"] == pytest.approx(grads.std())
    assert g["l2"] == pytest.approx(np.linalg.norm(grads))
    assert g["zero_frac"] == pytest.approx(0.2)  # the last row is exact
    assert g["top1_share"] == pytest.approx(np.abs(grads).max() / np.abs(grads).sum())


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "tsv", "markdown", "table"])
def test_every_format(cli, reg, fmt):
    r = cli("eval", reg, "-l", "mse", "-l", "mae", "-f", fmt)
    assert r.code == 0 and r.out
    if fmt == "jsonl":
        rows = [json.loads(x) for x in r.out.splitlines()]
        assert [x["loss"] for x in rows] == ["mse", "mae"]
    elif fmt in ("csv", "tsv"):
        rows = list(csv.DictReader(io.StringIO(r.out), delimiter="," if fmt == "csv" else "\t"))
        assert float(rows[0]["value"]) == pytest.approx(mean_squared_error(Y, P), rel=1e-15)
    elif fmt == "markdown":
        assert "| `mse` |" in r.out
    elif fmt == "table":
        assert "mse" in r.out and "\x1b[" not in r.out  # no colour off a terminal


def test_json_is_the_default_off_a_terminal(cli, reg):
    assert cli("eval", reg, "-l", "mse").json()["results"][0]["loss"] == "mse"


def test_output_file_is_written_atomically(cli, reg, tmp_path):
    out = tmp_path / "res.json"
    r = cli("eval", reg, "-l", "mse", "-o", str(out))
    assert r.code == 0 and r.out == ""
    assert json.loads(out.read_text())["results"][0]["loss"] == "mse"
    # a failing run leaves the previous file untouched and no temporary behind
    r = cli("eval", reg, "-l", "nope", "-o", str(out))
    assert r.code == 2
    assert json.loads(out.read_text())["results"][0]["loss"] == "mse"
    assert sorted(os.listdir(tmp_path)) == ["reg.csv", "res.json"]


def test_reduction_sum_and_none(cli, reg, tmp_path):
    d = cli("eval", reg, "-l", "mae", "--reduction", "sum", "-f", "json").json()
    assert d["results"][0]["value"] == pytest.approx(np.abs(np.array(P) - Y).sum())
    r = cli("eval", reg, "-l", "mae", "-l", "huber:delta=1.5", "--reduction", "none", "--grad", "-f", "csv")
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert list(rows[0]) == ["mae", "mae.grad", "huber:delta=1.5", "huber:delta=1.5.grad"]
    assert [float(x["mae"]) for x in rows] == pytest.approx(np.abs(np.array(P) - Y))
    assert [float(x["mae.grad"]) for x in rows] == pytest.approx(np.sign(np.array(P) - Y))
    assert cli("eval", reg, "-l", "rmse", "--reduction", "none", "-f", "csv").code == 2


def test_weights(cli, write_csv):
    path = write_csv("w.csv", "y,yhat,w\n1,2,1\n1,3,3\n")
    d = cli("eval", path, "-l", "mse", "-w", "w", "-f", "json").json()
    assert d["results"][0]["value"] == pytest.approx((1 * 1 + 3 * 4) / 4)


def test_several_predictions_give_comparisons(cli, write_csv):
    path = write_csv("m.csv", "y,a,b\n1,1.5,1\n2,2.5,2.1\n3,2,3\n")
    d = cli("eval", path, "-t", "y", "-p", "a", "-p", "b", "-l", "mse", "-f", "json").json()
    assert [(r["loss"], r["pred"]) for r in d["results"]] == [("mse", "a"), ("mse", "b")]
    (c,) = d["comparisons"]
    assert c["pred"] == "b" and c["baseline"] == "a"
    assert c["delta"] == pytest.approx(d["results"][1]["value"] - d["results"][0]["value"])


def test_stdin(reg):
    with open(reg, "rb") as f:
        r = run_subprocess("eval", "-", "-l", "mse", "-f", "json", stdin=f.read())
    assert r.code == 0, r.err
    assert r.json()["results"][0]["value"] == pytest.approx(mean_squared_error(Y, P))


@pytest.mark.parametrize("kind", ["gz", "bz2", "zst", "parquet", "feather", "jsonl", "tsv", "noext"])
def test_input_formats(cli, tmp_path, kind):
    table = pa.table({"y": Y, "yhat": P})
    path = tmp_path / f"data.{kind}"
    if kind == "gz":
        path.write_bytes(gzip.compress(CSV.encode()))
        path = tmp_path / "data.csv.gz"
        path.write_bytes(gzip.compress(CSV.encode()))
    elif kind == "bz2":
        path = tmp_path / "data.csv.bz2"
        path.write_bytes(bz2.compress(CSV.encode()))
    elif kind == "zst":
        zstandard = pytest.importorskip("zstandard")
        path = tmp_path / "data.csv.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(CSV.encode()))
    elif kind == "parquet":
        pq.write_table(table, path)
    elif kind == "feather":
        import pyarrow.feather as feather

        feather.write_feather(table, str(path))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({"y": a, "yhat": b}) + "\n" for a, b in zip(Y, P)))
    elif kind == "tsv":
        path.write_text(CSV.replace(",", "\t"))
    elif kind == "noext":
        path = tmp_path / "data"
        pq.write_table(table, path)
    r = cli("eval", str(path), "-l", "mse", "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["results"][0]["value"] == pytest.approx(mean_squared_error(Y, P))


def test_parquet_directory_and_list_column(cli, tmp_path):
    d = tmp_path / "ds"
    (d / "part=a").mkdir(parents=True)
    (d / "part=b").mkdir(parents=True)
    pq.write_table(pa.table({"y": Y[:2], "yhat": P[:2]}), d / "part=a" / "0.parquet")
    pq.write_table(pa.table({"y": Y[2:], "yhat": P[2:]}), d / "part=b" / "0.parquet")
    r = cli("eval", str(d), "-l", "mse", "-f", "json", "--by", "part")
    assert r.code == 0, r.err
    out = r.json()
    assert out["results"][0]["value"] == pytest.approx(mean_squared_error(Y, P))
    assert [g["value"] for g in out["groups"]] == ["a", "b"]
    assert out["groups"][0]["rows"] == 2


def test_two_files_by_position_and_by_key(cli, write_csv):
    t = write_csv("t.csv", "id,y\n1,1\n2,2\n3,5\n")
    p = write_csv("p.csv", "id,yhat\n1,1.5\n2,2\n3,4\n")
    d = cli("eval", t, p, "-l", "mae", "-f", "json").json()
    assert d["results"][0]["value"] == pytest.approx((0.5 + 0 + 1) / 3)
    p2 = write_csv("p2.csv", "id,yhat\n3,4\n1,1.5\n9,9\n")
    r = cli("eval", t, p2, "--key", "id", "-l", "mae", "-f", "json")
    d = r.json()
    assert d["rows"] == 2 and d["results"][0]["value"] == pytest.approx((0.5 + 1) / 2)
    assert d["join"] == {"matched": 2, "only_in_data": 1, "only_in_data2": 1}
    assert "1 keys only in" in r.err


def test_nan_drop(cli, write_csv):
    path = write_csv("n.csv", "y,yhat\n1,2\n2,\n3,3\nnan,1\n")
    r = cli("eval", path, "-l", "mae", "--nan", "drop", "-f", "json")
    d = r.json()
    assert d["rows"] == 2 and d["dropped_rows"] == 2
    assert d["results"][0]["value"] == pytest.approx(0.5)
    assert "dropped 2 rows" in r.err


def test_nonfinite_values_are_null_in_json():
    from lossctl.results import LossResult

    d = LossResult("kl", "kl", {}, "q", float("inf"), 3).to_json()
    assert d["value"] is None and d["nonfinite"] == "inf"
    json.dumps(d, allow_nan=False)



def test_nonfinite_gradient_statistics_carry_a_marker(cli, write_csv):
    # exp(−y·f) at y·f = 800 overflows: the gradient summary's inf/nan statistics are null
    # with "<stat>_nonfinite" beside them, the finite ones stay numbers
    path = write_csv("exp.csv", "label,f\n1,-800\n0,3\n1,2\n")
    r = cli("eval", path, "-p", "f", "-l", "exponential", "--grad", "-f", "json")
    assert r.code == 0, r.err
    g = r.json()["results"][0]["grad"]
    assert g["min"] is None and g["min_nonfinite"] == "-inf"
    assert g["l2"] is None and g["l2_nonfinite"] == "inf"
    assert g["max"] == pytest.approx(np.exp(3)) and "max_nonfinite" not in g
    assert g["zero_frac"] == 0.0


# ------------------------------------------------------------------ bad input: exit 2, one line, no stdout

BAD = {
    "missing file": (None, ["eval", "{tmp}/nope.csv"], "no such file"),
    "empty file": ("", ["eval", "{f}"], "empty"),
    "header only": ("y,yhat\n", ["eval", "{f}"], "no data rows"),
    "ragged": ("y,yhat\n1,2\n3,4,5\n", ["eval", "{f}"], "row 2"),
    "non-numeric": ("y,yhat\n1,2\n3,abc\n", ["eval", "{f}"], "row 2"),
    "nan": ("y,yhat\n1,2\n3,nan\n", ["eval", "{f}"], "row 2"),
    "inf": ("y,yhat\n1,2\n3,-inf\n", ["eval", "{f}"], "row 2"),
    "non-utf8": (b"y,yhat\n1,2\n3,\xff\xfe\n", ["eval", "{f}"], "UTF-8"),
    "binary": (bytes(range(256)) * 4, ["eval", "{f}"], "binary"),
    "unknown loss": (CSV, ["eval", "{f}", "-l", "hubre"], "did you mean huber"),
    "unknown param": (CSV, ["eval", "{f}", "-l", "huber:detla=1"], "unknown parameter 'detla'"),
    "param out of range": (CSV, ["eval", "{f}", "-l", "huber:delta=-1"], "(0, inf)"),
    "param not a number": (CSV, ["eval", "{f}", "-l", "quantile:tau=high"], "must be a number"),
    "empty after colon": (CSV, ["eval", "{f}", "-l", "huber:"], "nothing after the colon"),
    "unknown format": (CSV, ["eval", "{f}", "-f", "xml"], "unknown format"),
    "unknown task": (CSV, ["eval", "{f}", "--task", "ranking"], "unknown task"),
    "negative weight": ("y,yhat,w\n1,2,1\n3,4,-2\n", ["eval", "{f}", "-w", "w"], "row 2"),
    "zero weights": ("y,yhat,w\n1,2,0\n3,4,0\n", ["eval", "{f}", "-w", "w"], "every weight is 0"),
    "all dropped": ("y,yhat\nnan,1\n2,nan\n", ["eval", "{f}", "--nan", "drop"], "dropped all 2"),
    "missing column": (CSV, ["eval", "{f}", "-p", "score"], "no column 'score'"),
    "no conventional names": ("a,b\n1,2\n", ["eval", "{f}"], "Columns: a, b"),
    "bad option": (CSV, ["eval", "{f}", "--frobnicate"], "No such option"),
    "bad reduction": (CSV, ["eval", "{f}", "--reduction", "median"], "reduction"),
    "wrong task for loss": (CSV, ["eval", "{f}", "-l", "mse", "--task", "binary"], "not binary"),
    "lo above hi": ("y,lower,upper\n1,0,2\n", ["eval", "{f}", "-l", "interval:lo=0.9,hi=0.1"], "below"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_exits_2_with_one_line(cli, tmp_path, name):
    content, args, needle = BAD[name]
    f = tmp_path / "bad.csv"
    if content is not None:
        f.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = cli(*[a.format(f=f, tmp=tmp_path) for a in args])
    assert r.code == 2, (r.out, r.err)
    assert r.out == ""
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert needle.lower() in r.err.lower()
    assert "Traceback" not in r.err


def test_bad_parquet_files(cli, tmp_path):
    good = tmp_path / "g.parquet"
    pq.write_table(pa.table({"y": Y, "yhat": P}), good)
    data = good.read_bytes()
    (tmp_path / "trunc.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.parquet").write_bytes(data[:4] + b"\x00" * (len(data) - 8) + data[-4:])
    for name in ("trunc.parquet", "corrupt.parquet"):
        r = cli("eval", str(tmp_path / name))
        assert r.code == 2 and r.out == "" and "parquet" in r.err.lower(), r.err
    (tmp_path / "emptydir").mkdir()
    r = cli("eval", str(tmp_path / "emptydir"))
    assert r.code == 2 and "no Parquet files" in r.err


def test_row_counts_that_differ(cli, write_csv):
    a = write_csv("a.csv", "y\n1\n2\n")
    b = write_csv("b.csv", "yhat\n1\n2\n3\n")
    r = cli("eval", a, b)
    assert r.code == 2 and "2 in" in r.err and "3 in" in r.err


def test_schemas_that_differ_in_a_dataset(cli, tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    pq.write_table(pa.table({"y": Y, "yhat": P}), d / "a.parquet")
    pq.write_table(pa.table({"y": Y, "other": P}), d / "b.parquet")
    r = cli("eval", str(d))
    assert r.code == 2 and "b.parquet" in r.err and "schema" in r.err


def test_internal_error_exits_3(cli, reg, monkeypatch):
    import lossctl.driver

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(lossctl.driver, "accumulate", boom)
    r = cli("eval", reg)
    assert r.code == 3 and "internal error" in r.err and "kaboom" in r.err and "Traceback" not in r.err
    with pytest.raises(RuntimeError):
        cli("eval", reg, "--debug")


# ------------------------------------------------------------------ real processes


def test_closed_pipe_exits_quietly(tmp_path):
    n = 200_000
    path = tmp_path / "big.parquet"
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"y": rng.normal(size=n), "yhat": rng.normal(size=n)}), path)
    cmd = f"{sys.executable} -m lossctl eval {path} -l mae --reduction none -f csv | head -1"
    p = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, cwd=ROOT)
    assert p.stdout.decode().strip() == "mae"
    assert p.stderr.decode() == ""


def test_version_and_help():
    r = run_subprocess("--version")
    assert r.code == 0 and r.out.startswith("lossctl ")
    r = run_subprocess("eval", "--help")
    assert r.code == 0 and "--loss" in r.out


def test_help_imports_neither_pandas_nor_pyarrow():
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "lossctl", "--help"], capture_output=True, cwd=ROOT)
    modules = {line.split("|")[-1].strip() for line in p.stderr.decode().splitlines() if "|" in line}
    assert "lossctl.cli" in modules
    assert not {m for m in modules if m.split(".")[0] in ("pandas", "pyarrow")}


def test_eval_imports_no_pandas():
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "lossctl", "eval", os.path.join(SAMPLES, "regression.csv"), "-f", "json"],
                       capture_output=True, cwd=ROOT)
    assert p.returncode == 0
    modules = {line.split("|")[-1].strip() for line in p.stderr.decode().splitlines() if "|" in line}
    assert "pandas" not in modules
    # nor what a float CSV does not need: pyarrow.compute (nulls, casts) and numpy.ma (np.unique)
    assert "pyarrow.compute" not in modules and "numpy.ma" not in modules


def test_no_colour_when_not_a_terminal(tmp_path, reg):
    r = run_subprocess("eval", reg, "-f", "table")
    assert r.code == 0 and "\x1b[" not in r.out


@pytest.mark.parametrize("name", ["regression.csv", "regression.parquet", "interval.csv", "interval.parquet"])
def test_sample_files_work_without_options(name):
    r = run_subprocess("eval", os.path.join(SAMPLES, name), "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["task"] == "regression"


def test_parallel_csv_chunks_give_the_same_numbers(cli, tmp_path, monkeypatch):
    import lossctl.io

    rng = np.random.default_rng(9)
    y, p = rng.normal(size=20000), rng.normal(size=20000)
    path = tmp_path / "big.csv"
    path.write_text("y,yhat\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(y, p)))
    serial = cli("eval", str(path), "-l", "mse", "-l", "mae", "-f", "json").json()
    monkeypatch.setattr(lossctl.io, "PARALLEL_CSV_BYTES", 1)
    monkeypatch.setattr(lossctl.io, "CSV_CHUNK_BYTES", 50_000)  # ~14 chunks, cut mid-line and re-aligned
    par = cli("eval", str(path), "-l", "mse", "-l", "mae", "-f", "json").json()
    assert par["rows"] == 20000
    for a, b in zip(serial["results"], par["results"]):
        assert a["value"] == pytest.approx(b["value"], rel=1e-13)
    assert par["results"][0]["value"] == pytest.approx(mean_squared_error(y, p), rel=1e-12)
    lines = path.read_text().splitlines()
    lines[15000] = "1.0,oops"
    path.write_text("\n".join(lines) + "\n")
    r = cli("eval", str(path), "-l", "mse")
    assert r.code == 2 and "row 15000" in r.err and "oops" in r.err


def test_unknown_role_and_ambiguous_columns(cli, write_csv):
    f = write_csv("a.csv", "y,yhat\n1,2\n")
    r = cli("eval", f, "-l", "mse", "--col", "anchor=y")
    assert r.code == 2 and "no selected loss has a role 'anchor'" in r.err
    g = write_csv("b.csv", "y,pred,yhat\n1,2,3\n")
    r = cli("eval", g, "-l", "mse")
    assert r.code == 2 and "ambiguous" in r.err and "'pred'" in r.err and "'yhat'" in r.err
    assert cli("eval", g, "-l", "mse", "-p", "yhat").code == 0


@pytest.mark.parametrize("text", [
    b"\xef\xbb\xbfy,yhat\r\n1,2\r\n3,5\r\n",  # a byte-order mark and Windows line ends
    b"y, yhat\n1,2\n3,5\n",  # a space after the comma in the header
    b'"y","yhat"\n"1","2"\n3,5\n',  # quoted fields
    b"y;yhat\n1;2\n3;5\n",  # the semicolon dialect
    b"y,yhat\n1,2\n3,5\n\n\n",  # blank lines at the end
])
def test_real_world_csv_dialects(cli, tmp_path, text):
    path = tmp_path / "d.csv"
    path.write_bytes(text)
    r = cli("eval", str(path), "-l", "mse", "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["results"][0]["value"] == pytest.approx(2.5)


def test_label_2_against_a_probability_column_is_a_binary_label_error(cli, write_csv):
    r = cli("eval", write_csv("b.csv", "y,prob\n0,0.2\n2,0.7\n1,0.4\n"))
    assert r.code == 2 and "row 2" in r.err and "2" in r.err and r.out == ""


def test_explicit_columns_with_conventional_names_still_say_the_task(cli):
    path = os.path.join(SAMPLES, "segmentation.parquet")
    d = cli("eval", path, "-t", "mask", "-p", "prob", "-p", "prob", "-f", "json")
    assert d.code == 2  # the same prediction set twice
    d = cli("eval", path, "-t", "mask", "-p", "prob", "-f", "json").json()
    assert d["task"] == "segmentation"


def test_numeric_options_are_checked_and_typers_pydantic_layer_is_not_loaded():
    r = run_subprocess("eval", os.path.join(SAMPLES, "regression.csv"), "--seed", "abc")
    assert r.code == 2 and "'abc' is not a valid int" in r.err and len(r.err.splitlines()) == 1
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "lossctl", "eval", os.path.join(SAMPLES, "regression.csv"),
                        "-l", "mse", "--ci", "0.9", "--bootstrap", "20", "--seed", "4", "-f", "json"],
                       capture_output=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr.decode()[-500:]
    assert json.loads(p.stdout)["results"][0]["ci"]
    modules = {line.split("|")[-1].strip() for line in p.stderr.decode().splitlines() if "|" in line}
    assert "pydantic" not in modules


def test_hive_tree_read_file_by_file_with_partition_columns(cli, tmp_path):
    # two partition levels (an integer and a string), several files per leaf, row order kept
    rng = np.random.default_rng(12)
    d = tmp_path / "tree"
    parts, ys, ps = [], [], []
    for year in (2023, 2024):
        for region in ("eu", "us"):
            leaf = d / f"year={year}" / f"region={region}"
            leaf.mkdir(parents=True)
            for k in range(2):
                y, p = rng.normal(size=50), rng.normal(size=50)
                pq.write_table(pa.table({"y": y, "yhat": p}), leaf / f"{k}.parquet")
                ys.append(y)
                ps.append(p)
                parts += [(year, region)] * 50
    y, p = np.concatenate(ys), np.concatenate(ps)
    r = cli("eval", str(d), "-l", "mse", "--by", "year", "--by", "region", "-f", "json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["rows"] == 400
    assert out["results"][0]["value"] == pytest.approx(mean_squared_error(y, p), rel=1e-14)
    got = {(g["value"][0], g["value"][1]) if isinstance(g["value"], list) else g["value"]: g for g in out["groups"]}
    assert len(got) == 4
    for (year, region), g in got.items():
        m = np.array([pr == (int(year), region) for pr in parts])
        assert g["rows"] == 100
        assert g["results"][0]["value"] == pytest.approx(mean_squared_error(y[m], p[m]), rel=1e-14)
    # row order: per-row output follows the files in path order
    r = cli("eval", str(d), "-l", "mse", "--reduction", "none", "-f", "csv")
    rows = np.loadtxt(io.StringIO(r.out), delimiter=",", skiprows=1, usecols=-1)
    np.testing.assert_allclose(rows, (p - y) ** 2, rtol=1e-15)


def test_the_same_loss_twice_is_evaluated_once(cli):
    r = cli("eval", os.path.join(SAMPLES, "regression.csv"), "-l", "huber", "-l", "mse", "-l", "huber:delta=1",
            "-l", "l2", "-f", "json")
    assert r.code == 0, r.err
    assert [x["spec"] for x in r.json()["results"]] == ["huber", "mse"]
