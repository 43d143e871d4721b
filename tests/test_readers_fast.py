"""The fast readers read what the plain ones read.

CSV: large uncompressed files are memory-mapped and cut into byte ranges at line ends
(lossctl.io._csv_chunks); here the range size is made tiny (a few bytes) so that every
kind of cut happens, and the rows are compared with one-piece reading and with Python's
csv module (the oracle). Parquet: wide rows are read in batches capped by bytes, whatever
the file's row-group size.
"""
from __future__ import annotations

import csv
import json
import gzip
import io as _io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lossctl.io as lio

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read(path: str, numeric: set[str], batch_rows: int = 7) -> dict[str, list]:
    src = lio.open_source(path)
    try:
        cols = list(src.columns)
        out: dict[str, list] = {c: [] for c in cols}
        for b in lio.iter_batches(src, cols, numeric, batch_rows):
            assert b.num_rows <= batch_rows
            for c in cols:
                out[c].extend(b.column(c).to_pylist())
        return out
    finally:
        src.close()


def _oracle(text: str, numeric: set[str]) -> dict[str, list]:
    rows = [r for r in csv.reader(_io.StringIO(text, newline="")) if r]
    head, body = rows[0], rows[1:]
    return {c: [(float(r[i]) if c in numeric else r[i]) for r in body] for i, c in enumerate(head)}


@pytest.fixture
def ranges(monkeypatch):
    """Every uncompressed CSV through the range reader, cut into ranges of ``size`` bytes."""
    def cut(size: int, workers: int = 2) -> None:
        monkeypatch.setattr(lio, "PARALLEL_CSV_BYTES", 1)
        monkeypatch.setattr(lio, "CSV_CHUNK_BYTES", size)
        monkeypatch.setattr(lio, "CSV_WORKERS", workers)
    return cut


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


finite = st.floats(-1e9, 1e9, allow_nan=False)
note = st.lists(st.sampled_from(list('ab ,"\n\r') + ["\r\n", "é"]), max_size=8).map("".join)


@FAST
@given(rows=st.lists(st.tuples(finite, finite), min_size=1, max_size=60), eol=st.sampled_from(["\n", "\r\n"]),
       last_eol=st.booleans(), size=st.integers(1, 300), workers=st.sampled_from([1, 2]))
def test_numeric_csv_in_tiny_ranges_reads_as_one_piece(tmp_path, ranges, rows, eol, last_eol, size, workers):
    text = "y,yhat" + eol + eol.join(f"{a!r},{b!r}" for a, b in rows) + (eol if last_eol else "")
    path = _write(tmp_path, "num.csv", text)
    ranges(1 << 30)
    whole = _read(path, {"y", "yhat"})
    ranges(size, workers)
    cut = _read(path, {"y", "yhat"})
    assert cut == whole == _oracle(text, {"y", "yhat"})


@FAST
@given(rows=st.lists(st.tuples(finite, note), min_size=1, max_size=40), eol=st.sampled_from(["\n", "\r\n"]),
       size=st.integers(1, 200), workers=st.sampled_from([1, 2]), quoted_from=st.integers(0, 40))
def test_quoted_values_with_newlines_in_tiny_ranges(tmp_path, ranges, rows, eol, size, workers, quoted_from):
    """Quoted values (line ends, commas and doubled quotes inside) after quote-free rows:
    the ranges before the first quote are cut at line ends, the rest follows quoting."""
    def field(i: int, s: str) -> str:
        return '"' + s.replace('"', '""') + '"' if i >= quoted_from else f"plain{i}"
    text = "y,note" + eol + "".join(f"{a!r},{field(i, s)}{eol}" for i, (a, s) in enumerate(rows))
    path = _write(tmp_path, "q.csv", text)
    ranges(size, workers)
    got = _read(path, {"y"})
    assert got == _oracle(text, {"y"})


def test_quoted_newlines_across_range_and_block_boundaries(tmp_path, ranges):
    """Line ends inside quoted values, over many 1 MB blocks of pyarrow's own chunker (which
    without newlines_in_values cuts inside them) and over the range reader's cuts."""
    n = 60_000
    lines = ["y,note,yhat"] + [f'{i},"first line\nsecond, ""{i}""\r\nthird",{i / 4!r}' for i in range(n)]
    text = "\n".join(lines) + "\n"
    assert len(text) > 3_000_000
    expect = _oracle(text, {"y", "yhat"})
    assert len(expect["y"]) == n and expect["note"][7] == 'first line\nsecond, "7"\r\nthird'
    plain = _write(tmp_path, "q.csv", text)
    gz = tmp_path / "q.csv.gz"
    gz.write_bytes(gzip.compress(text.encode(), compresslevel=1))
    assert _read(str(gz), {"y", "yhat"}, 4096) == expect  # the streaming reader
    ranges(1 << 20)
    assert _read(plain, {"y", "yhat"}, 4096) == expect  # the range reader, handing over at the first quote


def test_quotes_late_in_a_file_hand_over_mid_file(tmp_path, ranges):
    lines = ["y,note"] + [f"{i},x{i}" for i in range(500)] + [f'{i},"a\n{i}"' for i in range(500, 520)]
    text = "\n".join(lines) + "\n"
    path = _write(tmp_path, "late.csv", text)
    ranges(100)
    assert _read(path, {"y"}) == _oracle(text, {"y"})


@pytest.mark.parametrize("size", [1, 5, 64])
def test_cr_only_text_avoids_the_range_reader(tmp_path, ranges, size):
    text = "y,yhat\r" + "".join(f"{i}.5,{i * 2}\r" for i in range(50))
    path = _write(tmp_path, "cr.csv", text)
    ranges(size)
    got = _read(path, {"y", "yhat"})
    assert got == {"y": [i + 0.5 for i in range(50)], "yhat": [float(2 * i) for i in range(50)]}


def test_bom_blank_lines_and_no_last_line_end(tmp_path, ranges):
    text = "\ufeffy,yhat\n1,2\n\n3,4\n\n\n5,6"
    path = _write(tmp_path, "b.csv", text)
    for size in (1, 3, 1 << 20):
        ranges(size)
        assert _read(path, {"y", "yhat"}) == {"y": [1.0, 3.0, 5.0], "yhat": [2.0, 4.0, 6.0]}


def test_bad_value_in_a_late_range_names_its_row(tmp_path, ranges, capsys):
    from lossctl.cli import main

    lines = ["y,yhat"] + [f"{i},{i + 1}" for i in range(2000)]
    lines[1500] = "1,oops"
    path = _write(tmp_path, "bad.csv", "\n".join(lines) + "\n")
    ranges(256)
    assert main(["eval", path, "-l", "mse"]) == 2
    err = capsys.readouterr().err
    assert "row 1500" in err and "oops" in err and "yhat" in err


def test_stdin_csv_goes_through_the_range_reader(tmp_path, ranges, monkeypatch):
    rng = np.random.default_rng(3)
    y, p = rng.normal(size=3000), rng.normal(size=3000)
    data = ("y,yhat\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(y, p))).encode()
    ranges(1000)
    seen = []
    real = lio._csv_chunks
    monkeypatch.setattr(lio, "_csv_chunks", lambda *a: seen.append(1) or real(*a))

    class Stdin:
        buffer = _io.BufferedReader(_io.BytesIO(data))

    monkeypatch.setattr("sys.stdin", Stdin)
    src = lio.open_source("-")
    try:
        got = np.concatenate([b.column("yhat").to_numpy() for b in lio.iter_batches(src, ["y", "yhat"], {"y", "yhat"})])
    finally:
        src.close()
    assert seen and np.array_equal(got, p)


def test_bad_value_after_quoted_line_breaks_names_its_row(tmp_path, ranges, capsys):
    """Rows are records, not lines: a quoted value's line breaks do not shift the row named."""
    from lossctl.cli import main

    lines = ["y,note,yhat"] + [f'{i},"a\nb",{i + 1}' for i in range(300)]
    lines[201] = '200,"a\nb",oops'
    path = _write(tmp_path, "qbad.csv", "\n".join(lines) + "\n")
    for size in (64, 1 << 20):
        ranges(size)
        assert main(["eval", path, "-t", "y", "-p", "yhat", "-l", "mse"]) == 2
        err = capsys.readouterr().err
        assert "row 201" in err and "oops" in err and "'yhat'" in err, err


# ---------------------------------------------------------------- wide rows


def _wide_parquet(path, rows: int, k: int, seed: int = 5):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, rows)
    z = rng.normal(0.0, 2.0, (rows, k)).astype(np.float32)
    table = pa.table({"y": y, **{f"logit_{j}": z[:, j] for j in range(k)}})
    pq.write_table(table, path, row_group_size=1 << 20)  # one row group, however many rows
    return y, z


def test_wide_parquet_batches_are_capped_by_bytes(tmp_path):
    """A row group is decoded in batches whose widened values take at most BATCH_BYTES,
    not --batch-rows rows of any width (1M × 100 float32 logits: 1,059 → about 370 MB peak)."""
    path = tmp_path / "wide.parquet"
    y, z = _wide_parquet(path, 30_000, 100)
    src = lio.open_source(str(path))
    cols = ["y"] + [f"logit_{j}" for j in range(100)]
    width = 8 * len(cols)  # float32 logits are widened to float64 per batch; int64 labels
    sizes, got = [], []
    for b in lio.iter_batches(src, cols, set(cols[1:]), batch_rows=1 << 17):
        sizes.append(b.num_rows)
        got.append(np.column_stack([b.column(c).to_numpy() for c in cols[1:]]))
    assert sum(sizes) == 30_000 and len(sizes) > 1
    assert max(sizes) * width <= lio.BATCH_BYTES
    assert np.array_equal(np.concatenate(got), z)
    # narrow rows keep --batch-rows
    assert lio.batch_rows_for(src, ["y", "logit_0"], 1 << 17) == 1 << 17
    assert lio.batch_rows_for(src, cols, 1000) == 1000


def test_wide_parquet_cross_entropy_through_the_pipeline(tmp_path, capsys, monkeypatch):
    """Float32 logits stacked straight into float64 per batch: the value is the numpy
    oracle's (log-sum-exp in float64), in byte-capped batches as in one piece."""
    from scipy.special import logsumexp

    from lossctl import feed
    from lossctl.cli import main

    path = tmp_path / "wide.parquet"
    y, z = _wide_parquet(path, 12_000, 40)
    z64 = z.astype(np.float64)
    expect = float(np.mean(logsumexp(z64, axis=1) - z64[np.arange(len(y)), y]))
    seen = []
    real = feed.to_matrix
    monkeypatch.setattr(feed, "to_matrix", lambda *a: seen.append(r := real(*a)) or r)
    values = []
    for batch_bytes in (lio.BATCH_BYTES, 1 << 30):
        monkeypatch.setattr(lio, "BATCH_BYTES", batch_bytes)
        seen.clear()
        assert main(["eval", str(path), "-t", "y", "-p", "logit_*", "--logits", "-l", "cross_entropy",
                     "-f", "json"]) == 0
        values.append(json.loads(capsys.readouterr().out)["results"][0]["value"])
        logits = [m for m in seen if m.ndim == 2]
        assert logits and all(m.dtype == np.float64 and m.shape[1] == 40 for m in logits)
        if batch_bytes == lio.BATCH_BYTES:
            assert max(m.shape[0] for m in logits) * 41 * 8 <= batch_bytes
    assert values[0] == pytest.approx(expect, rel=1e-12)
    assert values[1] == pytest.approx(expect, rel=1e-12)


def test_stacked_columns_match_column_by_column():
    """Integer, float32 and float64 columns with nulls, in one float64 array; booleans and
    text keep the column-by-column path (and its errors)."""
    import pyarrow as pa

    from lossctl.errors import InputError
    from lossctl.binding import Selector
    from lossctl.arrays import stacked, to_matrix

    big = 2**53 + 1
    arrays = [pa.array([1, None, big], pa.int64()), pa.array([0.5, 2.5, None], pa.float32()),
              pa.chunked_array([[1.25], [None, -3.0]], pa.float64()), pa.array([7, 8, 9], pa.uint8())]
    got = stacked(arrays)
    assert got.dtype == np.float64 and got.shape == (3, 4)
    expect = np.array([[1.0, 0.5, 1.25, 7.0], [np.nan, 2.5, np.nan, 8.0], [float(big), np.nan, -3.0, 9.0]])
    assert np.array_equal(got, expect, equal_nan=True)
    assert stacked([pa.array([True, False]), pa.array([1.0, 2.0])]) is None
    sel = Selector(text="p*", src=0, columns=["a", "b"], vector=True)
    with pytest.raises(InputError, match="not a number"):
        to_matrix([pa.array(["1", "x"]), pa.array([1.0, 2.0])], sel, "f.csv", 0)
    assert np.array_equal(to_matrix([pa.array([True, False]), pa.array([1.0, 2.0])], sel, "f.csv", 0),
                          [[1.0, 1.0], [0.0, 2.0]])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is read from Linux's /proc")
def test_wide_parquet_peak_memory_follows_batches_not_row_groups(tmp_path):
    """300,000 rows × 100 float32 logits in one row group (no dictionary pages, so pyarrow's
    fixed 2 MB a column is not in the way): a fresh process's peak RSS (VmHWM, which exec
    resets) measured 701 MB when whole 131,072-row batches were decoded and widened, 147 MB
    in byte-capped batches."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(8)
    n, k = 300_000, 100
    z = rng.normal(0.0, 2.0, (n, k)).astype(np.float32)
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"y": rng.integers(0, k, n), **{f"logit_{j}": z[:, j] for j in range(k)}}), path,
                   use_dictionary=False, row_group_size=1 << 20)
    del z
    code = ("import sys\nfrom lossctl.cli import main\n"
            f"rc = main(['eval', {str(path)!r}, '-t', 'y', '-p', 'logit_*', '--logits', '-l', 'cross_entropy', "
            "'-f', 'json'])\n"
            "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
            "print('HWM', hwm, file=sys.stderr)\nsys.exit(rc)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"] == n
    hwm_mb = int(r.stderr.split("HWM")[1].split()[0]) / 1024
    assert hwm_mb < 400, hwm_mb


@pytest.mark.parametrize("fmt", ["csv", "feather"])
def test_a_file_truncated_while_it_is_read_is_an_input_error_not_a_crash(tmp_path, fmt):
    """A memory-mapped page past the end of a file truncated meanwhile kills the process (SIGBUS):
    the CSV range reader and the Feather reader check the file's size before touching a range or
    a record batch, so a writer that cuts the file between two gets one clear line. (In a child
    process: without the check the child dies, not the test run.)"""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.feather as pf

    path = tmp_path / f"growing.{fmt}"
    if fmt == "csv":
        path.write_text("y,yhat\n" + "".join(f"{i % 7}.25,{i % 5}.5\n" for i in range(200_000)))
    else:
        x = np.arange(200_000) % 7 + 0.25
        pf.write_feather(pa.table({"y": x, "yhat": x + 0.5}), path, chunksize=1000, compression="uncompressed")
    script = f"""
import os
from lossctl import io as lio
from lossctl.errors import InputError
lio.PARALLEL_CSV_BYTES, lio.CSV_CHUNK_BYTES, lio.CSV_WORKERS = 1, 64 << 10, 1
src = lio.open_source({str(path)!r})
rows = 0
try:
    for i, b in enumerate(lio.iter_batches(src, ["y", "yhat"], {{"y", "yhat"}}, batch_rows=1000)):
        rows += b.num_rows
        if i == 0:
            os.truncate({str(path)!r}, 1 << 20)  # ranges 1 and 2 (the one in flight) stay whole
    print("read", rows)
except InputError as e:
    print("error", rows, e)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-500:])
    assert r.stdout.startswith("error"), r.stdout
    assert f"growing.{fmt}: the file was truncated while it was read" in r.stdout


@pytest.mark.parametrize("text, name, column, value", [
    ("y;yhat\n1,5;2\n2;2,5\n", "euro.csv", "y", "1,5"),  # a European file: ';' and decimal commas
    ('y,yhat\n1,"2,5"\n', "quoted.csv", "yhat", "2,5"),
    ("y\tyhat\n1\t2,5\n", "euro.tsv", "yhat", "2,5"),
])
@pytest.mark.parametrize("through_ranges", [False, True])
def test_a_decimal_comma_is_named_as_such(tmp_path, ranges, capsys, text, name, column, value, through_ranges):
    """'1,5' is not a number to lossctl: the error says a decimal comma is the likely cause (the
    plain 'not a number' left a European user guessing); 'abc' keeps the plain message."""
    from lossctl.cli import main

    if through_ranges:
        ranges(8)
    path = _write(tmp_path, name, text)
    assert main(["eval", path, "-l", "mse"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"lossctl: error: {path}, column '{column}', row 1: not a number: a decimal comma? lossctl reads "
                   f"'.' as the decimal point (got '{value}')"), err
    path = _write(tmp_path, "abc.csv", "y,yhat\n1,abc\n")
    assert main(["eval", path, "-l", "mse"]) == 2
    assert capsys.readouterr().err.strip().endswith("row 1: not a number (got 'abc')")
