"""Hostile inputs and outputs: each case is one line on stderr, exit 2, nothing on stdout.

Every test here failed before the fix it guards (see the audit against CLI.md's
exit-code table and input rules).
"""
from __future__ import annotations

import errno
import gzip
import json
import os
import stat
import subprocess
import sys
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import numpy as np
import pytest

from conftest import ROOT, run_subprocess

CSV = "y,yhat\n1,2\n2,2.5\n3,3\n4,5\n"


def one_line_error(r, *needles: str) -> None:
    assert r.code == 2, (r.code, r.out, r.err)
    assert r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert "Traceback" not in r.err and "internal error" not in r.err
    for n in needles:
        assert n in r.err, r.err


@pytest.fixture
def ok(write_csv):
    return write_csv("ok.csv", CSV)


# ------------------------------------------------------------------ -o / --emit-state


def test_output_into_a_fifo_writes_through_it_and_never_replaces_it(cli, ok, tmp_path):
    """-o onto anything not a regular file (/dev/null, /dev/stdout, a pipe) must not be
    renamed over: as root that replaced /dev/null with a regular file."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()), daemon=True)
    reader.start()
    try:
        r = cli("eval", ok, "-l", "mse", "-f", "csv", "-o", str(fifo))
    finally:
        if reader.is_alive():  # unblock the reader if lossctl never opened the pipe
            try:  # non-blocking: with no reader left this fails at once instead of hanging
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        reader.join(5)
    assert r.code == 0, r.err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert got and got[0].decode().startswith("loss,spec,pred,value,n\nmse,mse,yhat,")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".lossctl-")]


def test_output_to_dev_stdout_goes_through_our_own_descriptor(tmp_path, ok):
    """-o /dev/stdout with stdout redirected to a file: the results land in that file at
    the shell's offset. (A link in tmp_path stands in for /dev/stdout, so that a
    regression renames over the link, not over /dev/stdout.)"""
    link = tmp_path / "stdout"
    os.symlink("/proc/self/fd/1", link)
    out = tmp_path / "captured.txt"
    with open(out, "wb") as f:
        f.write(b"before\n")
        f.flush()
        p = subprocess.run([sys.executable, "-m", "lossctl", "eval", ok, "-l", "mse", "-f", "csv", "-o", str(link)],
                           stdout=f, stderr=subprocess.PIPE, cwd=ROOT)
        f.write(b"after\n")  # the shell's descriptor keeps writing after lossctl
    assert p.returncode == 0, p.stderr
    assert os.path.islink(link)
    lines = out.read_text().splitlines()
    assert lines[0] == "before" and lines[1] == "loss,spec,pred,value,n" and lines[-1] == "after"


def test_output_through_a_symlink_writes_its_target_and_keeps_modes(cli, ok, tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    link = tmp_path / "link.csv"
    os.symlink(target.name, link)
    r = cli("eval", ok, "-l", "mse", "-f", "csv", "-o", str(link))
    assert r.code == 0, r.err
    assert os.path.islink(link)
    assert target.read_text().startswith("loss,")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    new = tmp_path / "new.csv"
    assert cli("eval", ok, "-l", "mse", "-o", str(new)).code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_output_onto_a_directory_is_a_usage_error(cli, ok, tmp_path):
    d = tmp_path / "adir"
    d.mkdir()
    one_line_error(cli("eval", ok, "-l", "mse", "-o", str(d)), "cannot write", "directory")
    one_line_error(cli("eval", ok, "-l", "mse", "--emit-state", str(d)), "cannot write", "directory")
    assert os.listdir(d) == [] and not [p for p in os.listdir(tmp_path) if "tmp" in p]


def test_output_that_cannot_be_created_is_a_usage_error(cli, ok, tmp_path, monkeypatch):
    import tempfile

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    one_line_error(cli("eval", ok, "-l", "mse", "-o", str(tmp_path / "x.json")), "cannot write", "Permission denied")


def test_a_full_disk_leaves_no_half_file(cli, ok, tmp_path, monkeypatch):
    import lossctl.render

    def full(report, form, out, color=False):
        out.write("{\n  \"schema_version\": 1,")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lossctl.render, "render_report", full)
    dest = tmp_path / "out.json"
    one_line_error(cli("eval", ok, "-l", "mse", "-o", str(dest)), "cannot write", "No space left")
    assert os.listdir(tmp_path) == ["ok.csv"]


def test_emit_state_with_reduction_none_is_refused(cli, ok, tmp_path):
    state = tmp_path / "s.json"
    one_line_error(cli("eval", ok, "-l", "mse", "--reduction", "none", "-f", "csv", "--emit-state", str(state)),
                   "--emit-state")
    assert not state.exists()


# ------------------------------------------------------------------ merge


def test_merge_of_bad_state_files(cli, ok, tmp_path):
    d = tmp_path / "adir"
    d.mkdir()
    one_line_error(cli("merge", str(d)), "adir", "directory")
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"format": "lossctl-state", "version": 1}))
    one_line_error(cli("merge", str(partial)), "partial.json", "damaged state file")
    good = tmp_path / "s.json"
    assert cli("eval", ok, "-l", "mse", "--emit-state", str(good), "-q").code == 0
    doc = json.loads(good.read_text())
    doc["states"] = []
    short = tmp_path / "short.json"
    short.write_text(json.dumps(doc))
    one_line_error(cli("merge", str(good), str(short)), "short.json", "damaged state file")
    doc = json.loads(good.read_text())
    doc["states"] = [{}]
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(doc))
    one_line_error(cli("merge", str(empty)), "empty.json", "damaged state file")


# ------------------------------------------------------------------ standard input


@pytest.mark.parametrize("data", [
    b'{"y": 1, "yhat": 2}\n{"y": 2, "yhat": 2.5}\n',
    b"y\tyhat\n1\t2\n2\t2.5\n",
])
def test_stdin_text_format_comes_from_the_first_bytes(data):
    """Compressed stdin was sniffed for JSON Lines and TSV; plain stdin was always CSV."""
    for payload in (data, gzip.compress(data)):
        r = run_subprocess("eval", "-", "-l", "mse", "-f", "json", stdin=payload)
        assert r.code == 0, r.err
        assert r.json()["results"][0]["value"] == pytest.approx(0.625)


def test_closed_stdin_is_an_input_error(cli, monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)
    one_line_error(cli("eval", "-", "-l", "mse"), "<stdin>", "closed")


# ------------------------------------------------------------------ CSV


def test_header_names_equal_up_to_spaces_are_duplicates(cli, write_csv):
    """'y, yhat' binds ' yhat' as yhat, so 'yhat' and ' yhat' are one name given twice."""
    f = write_csv("d.csv", "y,yhat, yhat\n0,0.2,0.3\n1,0.7,0.6\n")
    one_line_error(cli("eval", f), "d.csv", "'yhat' twice")


@pytest.mark.parametrize("value", ["1_000", "\u0661"])
def test_values_python_reads_but_arrow_does_not_are_located(cli, write_csv, value):
    f = write_csv("u.csv", f"y,yhat\n1,2\n3,{value}\n")
    one_line_error(cli("eval", f, "-l", "mse"), "u.csv", "column 'yhat'", "row 2", "not a number", repr(value))


# ------------------------------------------------------------------ JSON Lines


@pytest.mark.parametrize("line, needles", [
    ('{"y": 2, "yhat": "abc"}', ["column 'yhat'", "row 2", "string", "'abc'"]),
    ('{"y": 2, "yhat": true}', ["column 'yhat'", "row 2", "boolean"]),
    ('{"y": 2, "yhat": [1, 2]}', ["column 'yhat'", "row 2", "array"]),
    ('{"y": 2,', ["row 2", "not valid JSON"]),
    ("[1, 2]", ["row 2", "not a JSON object"]),
])
def test_jsonl_errors_name_row_and_column(cli, write_csv, line, needles):
    f = write_csv("b.jsonl", '{"y": 1, "yhat": 2}\n\n' + line + "\n")  # a blank line is not a row
    one_line_error(cli("eval", f, "-l", "mse"), "b.jsonl", *needles)


# ------------------------------------------------------------------ Parquet


def test_glob_that_catches_a_non_parquet_file(cli, tmp_path):
    pq.write_table(pa.table({"y": [1.0, 2.0], "yhat": [1.5, 2.0]}), tmp_path / "a.parquet")
    (tmp_path / "notes.csv").write_text("y,yhat\n1,2\n")
    one_line_error(cli("eval", str(tmp_path / "*"), "-l", "mse"), "notes.csv", "not a Parquet file")


def test_string_list_column_names_the_right_row(cli, tmp_path):
    path = tmp_path / "l.parquet"
    p = pa.array([["0.2", "0.3", "0.5"], ["0.1", "0.8", "0.1"], ["0.3", "x", "0.4"]])
    pq.write_table(pa.table({"y": [0, 1, 2], "p": p}), path)
    one_line_error(cli("eval", str(path), "-l", "cross_entropy"), "column 'p'", "row 3", "'x'")


# ------------------------------------------------------------------ options


def test_by_with_a_comma_list_is_a_cross(cli, write_csv):
    f = write_csv("g.csv", "y,yhat,a,b\n1,2,x,u\n2,2,x,v\n3,3,y,u\n4,5,x,u\n")
    listed = cli("eval", f, "-l", "mae", "--by", "a,b", "-f", "json").json()["groups"]
    repeated = cli("eval", f, "-l", "mae", "--by", "a", "--by", "b", "-f", "json").json()["groups"]
    assert listed == repeated
    assert [g["value"] for g in listed] == [["x", "u"], ["x", "v"], ["y", "u"]]


def test_reduction_none_grad_column_only_for_one_number_per_row(cli, write_csv):
    f = write_csv("kl.csv", "p_0,p_1,q_0,q_1,y,yhat\n0.5,0.5,0.4,0.6,1,2\n0.2,0.8,0.5,0.5,2,2\n")
    r = cli("eval", f, "-l", "kl", "--col", "target=p_*", "-p", "q_*", "--reduction", "none", "-f", "csv", "--grad")
    assert r.code == 0, r.err
    assert r.out.splitlines()[0] == "kl"
    r = cli("eval", f, "-l", "mae", "-t", "y", "-p", "yhat", "--reduction", "none", "-f", "csv", "--grad")
    assert r.out.splitlines() == ["mae,mae.grad", "1.0,1.0", "0.0,0.0"]


def test_ci_on_one_row_says_why_there_is_no_interval(cli, write_csv):
    f = write_csv("one.csv", "y,yhat\n1,2\n")
    d = cli("eval", f, "-l", "mse", "--ci", "0.9", "-f", "json").json()
    assert "ci" not in d["results"][0]
    assert any("at least 2 rows" in n for n in d["results"][0]["notes"])


def test_stdin_given_twice_is_a_usage_error():
    r = run_subprocess("eval", "-", "-", "-l", "mse", stdin=CSV.encode())
    one_line_error(r, "standard input", "once")


def test_jsonl_true_false_columns_read_as_1_0(cli, tmp_path):
    # as CSV and Parquet booleans are: pandas writes bool labels as true/false
    f = tmp_path / "b.jsonl"
    f.write_text('{"label": true, "prob": 0.9}\n{"label": false, "prob": 0.2}\n{"label": true, "prob": 0.6}\n')
    r = cli("eval", str(f), "-l", "bce", "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["results"][0]["value"] == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.6)) / 3)
    g = tmp_path / "mixed.jsonl"
    g.write_text('{"label": true, "prob": 0.9}\n{"label": 0, "prob": 0.2}\n')
    r = cli("eval", str(g), "-l", "bce", "-f", "json")
    assert r.code == 2 and r.out == ""
    assert "column 'label', row 2" in r.err and "(got 0)" in r.err
