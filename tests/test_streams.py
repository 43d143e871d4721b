"""Standard streams and the run's boundary (CLI.md, Output and Exit codes).

A closed pipe is a quiet exit 0 whatever the output's size; a full or closed stdout
is exit 2 with one line; a closed stderr never sends messages to stdout; Ctrl-C is
exit 130 with one line and no partial file; per-row output streams; --emit-state
and -o are put in place together or not at all. Most of these need a real process
(its descriptors are what is tested), so they run lossctl as a subprocess.
"""
from __future__ import annotations

import array
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, run_subprocess


def _write(path, n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    y = np.round(rng.normal(size=n), 6)
    p = np.round(y + rng.normal(size=n), 6)
    with open(path, "w") as f:
        f.write("id,g,y,yhat\n")
        f.write("".join(f"{i},{i % 7},{a},{b}\n" for i, (a, b) in enumerate(zip(y, p))))
    return str(path)


def _env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


def _popen(args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lossctl", *map(str, args)], env=kw.pop("env", _env()),
                            cwd=kw.pop("cwd", ROOT), **kw)


def _shell(cmd: str, cwd) -> subprocess.CompletedProcess:
    """Run lossctl under bash, for redirections (>&-, 2>&-) that subprocess cannot spell."""
    script = f'lossctl() {{ "{sys.executable}" -m lossctl "$@"; }}\n{cmd}'
    return subprocess.run(["bash", "-c", script], capture_output=True, env=_env(), cwd=cwd)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """Rows enough that every output below is many times a pipe's 64 KiB buffer."""
    return _write(tmp_path_factory.mktemp("streams") / "big.csv", 30_000)


# ---------------------------------------------------------------- a closed pipe (item 9)


def _read_then_close(args, nbytes: int) -> tuple[int, bytes]:
    p = _popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if nbytes:
        p.stdout.read(nbytes)
    p.stdout.close()  # the reader goes away, as `| head` does
    err = p.stderr.read()
    p.stderr.close()
    return p.wait(), err


@pytest.mark.parametrize("args", [
    ["--reduction", "none", "-f", "csv"],
    ["--reduction", "none", "-f", "jsonl", "--id", "id", "--grad"],
    ["--by", "id", "-f", "json", "-l", "mse"],
    ["--by", "id", "-f", "csv", "-l", "mse"],
])
def test_a_closed_pipe_exits_0_quietly(big, args):
    """`lossctl eval … | head -1` with output far larger than the pipe buffer."""
    code, err = _read_then_close(["eval", big, *args], 1)
    assert (code, err) == (0, b"")


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.integers(1, 6000), nbytes=st.integers(0, 300_000),
       fmt=st.sampled_from(["csv", "tsv", "jsonl"]), reduced=st.booleans())
def test_a_closed_pipe_after_any_amount_of_output_exits_0(tmp_path_factory, rows, nbytes, fmt, reduced):
    data = _write(tmp_path_factory.mktemp("pipe") / "d.csv", rows, seed=rows)
    args = ["--by", "id", "-l", "mse"] if reduced else ["--reduction", "none", "--grad"]
    code, err = _read_then_close(["eval", data, "-f", fmt, *args], nbytes)
    assert (code, err) == (0, b"")


# ---------------------------------------------------------------- a full or closed stdout (item 24)


@pytest.mark.parametrize("args", [["-l", "mse", "-f", "json"], ["--reduction", "none", "-f", "csv"]])
def test_stdout_on_a_full_device_is_exit_2_with_one_line(big, args):
    with open("/dev/full", "w") as full:
        p = _popen(["eval", big, *args], stdout=full, stderr=subprocess.PIPE)
        err = p.communicate()[1].decode()
    assert p.returncode == 2
    assert err.count("\n") == 1 and err.startswith("lossctl: error: cannot write standard output: No space left")


def test_emit_state_is_not_written_when_stdout_fails(big, tmp_path):
    state = tmp_path / "s.json"
    with open("/dev/full", "w") as full:
        p = _popen(["eval", big, "-l", "mse", "-f", "json", "--emit-state", state], stdout=full,
                   stderr=subprocess.PIPE)
        err = p.communicate()[1].decode()
    assert p.returncode == 2 and "cannot write standard output" in err
    assert not state.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize("output", ["/dev/full", "{tmp}/no/such/dir/out.json"])
def test_emit_state_is_not_written_when_output_fails(big, tmp_path, output):
    state = tmp_path / "s.json"
    r = run_subprocess("eval", big, "-l", "mse", "--emit-state", state, "-o", output.format(tmp=tmp_path))
    assert r.code == 2 and r.out == "" and r.err.count("\n") == 1 and "cannot write" in r.err
    assert os.listdir(tmp_path) == []


def test_emit_state_and_output_both_written_on_success(big, tmp_path):
    r = run_subprocess("eval", big, "-l", "mse", "--emit-state", tmp_path / "s.json", "-o", tmp_path / "r.json")
    assert r.code == 0, r.err
    assert sorted(os.listdir(tmp_path)) == ["r.json", "s.json"]
    assert json.loads((tmp_path / "s.json").read_text())["format"] == "lossctl-state"


@pytest.mark.parametrize("args", [["-l", "mse"], ["--reduction", "none", "-f", "csv"], ["-l", "mse", "-f", "table"]])
def test_closed_stdout_is_exit_2_with_one_line_on_stderr(big, tmp_path, args):
    r = _shell(f"lossctl eval {big} {' '.join(args)} >&-", tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert err == "lossctl: error: cannot write standard output: it is closed\n"
    assert os.listdir(tmp_path) == []  # no file took descriptor 1's place


def test_closed_stdout_is_fine_with_output_file(big, tmp_path):
    r = _shell(f"lossctl eval {big} -l mse -o out.json >&-", tmp_path)
    assert r.returncode == 0 and r.stderr == b""
    assert json.loads((tmp_path / "out.json").read_text())["results"][0]["loss"] == "mse"


@pytest.mark.parametrize("args", [["nope.csv"], ["{big}", "-l", "nope"], ["{big}", "-l", "mse", "-f", "json"],
                                  ["{big}", "-l", "mse", "--reduction", "none", "-f", "csv", "--by", "g"]])
def test_closed_stderr_sends_nothing_to_stdout(big, tmp_path, args):
    cmd = " ".join(a.format(big=big) for a in args)
    r = _shell(f"lossctl eval {cmd} 2>&-", tmp_path)
    if r.returncode == 0:
        assert json.loads(r.stdout)["results"][0]["loss"] == "mse"  # the results and nothing else
    else:
        assert r.returncode == 2 and r.stdout == b""


# what a run may be asked to write: the reduced formats, per-row output, slices, a table
RUNS = st.sampled_from([
    ["-l", "mse", "-f", "json"], ["-l", "mse", "-l", "mae", "-f", "csv", "--grad"], ["-l", "huber", "-f", "markdown"],
    ["-l", "mse", "-f", "table"], ["--reduction", "none", "-f", "csv"], ["--reduction", "none", "-f", "jsonl", "--grad"],
    ["--by", "g", "-l", "mse", "-f", "jsonl"], ["--by", "id", "-l", "mse", "-f", "tsv"],
])


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=RUNS, rows=st.integers(1, 5000))
def test_any_output_onto_a_full_device_is_exit_2_and_leaves_no_state(tmp_path_factory, args, rows):
    d = tmp_path_factory.mktemp("full")
    data = _write(d / "d.csv", rows, seed=rows)
    state = ["--emit-state", d / "s.json"] if "none" not in args else []
    with open("/dev/full", "w") as full:
        p = _popen(["eval", data, *args, *state], stdout=full, stderr=subprocess.PIPE)
        err = p.communicate()[1].decode()
    assert p.returncode == 2 and err.count("\n") == 1 and "cannot write standard output" in err, err
    assert os.listdir(d) == ["d.csv"]


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=RUNS, rows=st.integers(1, 3000))
def test_any_output_onto_a_closed_stdout_is_exit_2_with_one_line(tmp_path_factory, args, rows):
    d = tmp_path_factory.mktemp("closed")
    data = _write(d / "d.csv", rows, seed=rows)
    r = _shell(f"lossctl eval {data} {' '.join(args)} >&-", d)
    assert r.returncode == 2 and r.stderr == b"lossctl: error: cannot write standard output: it is closed\n"
    assert os.listdir(d) == ["d.csv"]


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=st.one_of(RUNS, st.sampled_from([
    ["-l", "nope"], ["-l", "mse", "--by", "nope"], ["-t", "nope"], ["--reduction", "none", "-f", "json"],
    ["-l", "mse", "--seed", "-3"], ["--reduction", "none", "-f", "csv", "--ci", "0.9"]])),
    bad=st.booleans())
def test_with_stderr_closed_stdout_carries_results_only(tmp_path_factory, args, bad):
    d = tmp_path_factory.mktemp("noerr")
    data = d / "d.csv"
    if bad:  # an input error found while reading
        data.write_text("id,g,y,yhat\n" + "1,1,1,2\n" * 30 + "2,1,1,nan\n")
    else:
        _write(data, 50)
    clean = run_subprocess("eval", data, *args)
    r = _shell(f"lossctl eval {data} {' '.join(args)} 2>&-", d)
    assert r.returncode == clean.code
    assert r.stdout.decode() == clean.out  # the results, or the rows streamed before an error; never a message
    assert "lossctl:" not in r.stdout.decode()


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(output=st.sampled_from(["/dev/full", "{d}/no/such/dir/out.json", "{d}", "{d}/ro/out.json"]),
       args=st.sampled_from([["-l", "mse"], ["-l", "mse", "--by", "g", "-f", "csv"], ["-f", "markdown"]]))
def test_emit_state_never_survives_a_failed_output(tmp_path_factory, output, args):
    d = tmp_path_factory.mktemp("state")
    data = _write(d / "d.csv", 40)
    (d / "ro").mkdir()
    (d / "ro").chmod(0o555)
    try:
        r = run_subprocess("eval", data, *args, "--emit-state", d / "s.json", "-o", output.format(d=d))
    finally:
        (d / "ro").chmod(0o755)
    if os.access(d / "ro", os.W_OK) and output.endswith("ro/out.json") and os.geteuid() == 0:
        return  # root writes into a read-only directory: that case cannot fail here
    assert r.code == 2 and r.out == "" and r.err.count("\n") == 1, r.err
    assert sorted(os.listdir(d)) == ["d.csv", "ro"] and os.listdir(d / "ro") == []


# ---------------------------------------------------------------- Ctrl-C (item 24)


def _fionread(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.integers(0, 20_000), per_row=st.booleans())
def test_sigint_exits_130_with_one_line_and_leaves_nothing(tmp_path_factory, rows, per_row):
    """Interrupted while reading stdin: the spool file and the -o file are not left behind."""
    tmp_path = tmp_path_factory.mktemp("sigint")
    spool = tmp_path / "tmp"
    spool.mkdir()
    args = ["--reduction", "none", "-f", "csv"] if per_row else ["-l", "mse", "--emit-state", tmp_path / "s.json"]
    p = _popen(["eval", "-", "-o", tmp_path / "out.csv", *args],
               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(TMPDIR=str(spool)))
    p.stdin.write(b"y,yhat\n" + b"1,2\n" * rows)
    p.stdin.flush()
    while _fionread(p.stdin.fileno()) and p.poll() is None:  # wait until lossctl has taken what we wrote
        os.sched_yield()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate()
    assert (p.returncode, out, err) == (130, b"", b"lossctl: interrupted\n")
    assert sorted(os.listdir(tmp_path)) == ["tmp"] and os.listdir(spool) == []


def test_interrupt_while_writing_leaves_no_partial_output(cli, tmp_path, monkeypatch):
    import lossctl.render

    def interrupted(chunks, fmt, out):
        for _header, _cols in chunks:
            out.write("some,rows\n" * 1000)
            raise KeyboardInterrupt

    monkeypatch.setattr(lossctl.render, "write_rows", interrupted)
    data = _write(tmp_path / "d.csv", 50)
    r = cli("eval", data, "--reduction", "none", "-f", "csv", "-o", tmp_path / "out.csv")
    assert (r.code, r.out, r.err) == (130, "", "lossctl: interrupted\n")
    assert os.listdir(tmp_path) == ["d.csv"]


# ---------------------------------------------------------------- streaming rows (item 10)


def test_rows_reach_stdout_batch_by_batch(tmp_path, monkeypatch):
    """Before the second batch is computed, the first batch's rows have left lossctl (written and flushed)."""
    import io

    import lossctl.rowwise
    from lossctl.cli import main

    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="utf-8", newline="", line_buffering=False)  # block-buffered, as a pipe
    monkeypatch.setattr(sys, "stdout", stdout)
    seen: list[bytes] = []
    original = lossctl.rowwise.iter_rows

    def spy(plan, inputs):
        for i, chunk in enumerate(original(plan, inputs)):
            if i == 1:
                seen.append(raw.getvalue())
            yield chunk

    monkeypatch.setattr(lossctl.rowwise, "iter_rows", spy)
    data = _write(tmp_path / "d.csv", 250)
    code = main(["eval", data, "--reduction", "none", "-f", "csv", "-l", "mse", "--batch-rows", "100", "-q"])
    stdout.flush()
    assert code == 0 and raw.getvalue().count(b"\n") == 251
    assert len(seen) == 1 and seen[0].count(b"\n") == 101  # the header and the first batch
    assert not any(n.startswith(".lossctl-") for n in os.listdir(tmp_path))


def test_rows_streamed_before_a_late_error_stand(tmp_path):
    data = tmp_path / "late.csv"
    data.write_text("y,yhat\n" + "1,2\n" * 500 + "1,nan\n" + "1,2\n" * 10)
    r = run_subprocess("eval", data, "--reduction", "none", "-f", "csv", "-l", "mse", "--batch-rows", "100")
    assert r.code == 2 and r.err.count("\n") == 1 and "row 501" in r.err
    assert r.out.splitlines()[0] == "mse" and r.out.count("\n") == 501  # five whole batches stand
    out = tmp_path / "out.csv"
    r = run_subprocess("eval", data, "--reduction", "none", "-f", "csv", "-l", "mse", "--batch-rows", "100", "-o", out)
    assert r.code == 2 and not out.exists() and sorted(os.listdir(tmp_path)) == ["late.csv"]


# ---------------------------------------------------------------- options and messages (items 19, 23)


def test_output_naming_an_input_is_refused(cli, tmp_path):
    data = _write(tmp_path / "d.csv", 20)
    before = open(data).read()
    for opt in ("-o", "--emit-state"):
        r = cli("eval", data, "-l", "mse", opt, data)
        assert r.code == 2 and r.out == "" and "is an input file" in r.err and r.err.count("\n") == 1
        assert open(data).read() == before
    link = tmp_path / "link.csv"
    link.symlink_to(data)  # the same file by another name
    r = cli("eval", data, "-l", "mse", "-o", link)
    assert r.code == 2 and open(data).read() == before
    state = tmp_path / "s.json"
    assert cli("eval", data, "-l", "mse", "--emit-state", state, "-o", tmp_path / "r.json").code == 0
    r = cli("merge", state, "-o", state)
    assert r.code == 2 and "is an input file" in r.err
    assert json.loads(state.read_text())["format"] == "lossctl-state"


@pytest.mark.parametrize("extra", [["--by", "g"], ["--ci", "0.9"]])
def test_reduction_none_refuses_summaries(cli, tmp_path, extra):
    data = _write(tmp_path / "d.csv", 20)
    r = cli("eval", data, "--reduction", "none", "-f", "csv", *extra)
    assert r.code == 2 and r.out == "" and extra[0] in r.err and "--reduction none" in r.err


def test_reduction_none_grad_says_vector_gradients_get_no_column(cli, tmp_path):
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(3), size=12)
    y = rng.integers(0, 3, size=12)
    path = tmp_path / "m.csv"
    path.write_text("y,p_0,p_1,p_2\n" + "".join(f"{a},{b[0]},{b[1]},{b[2]}\n" for a, b in zip(y, p)))
    r = cli("eval", path, "-p", "p_0,p_1,p_2", "-l", "cross_entropy", "--reduction", "none", "--grad", "-f", "csv")
    assert r.code == 0, r.err
    rows = r.out.splitlines()
    assert rows[0] == "cross_entropy" and len(rows) == 13
    # independent oracle: −log p_y
    assert np.allclose([float(v) for v in rows[1:]], -np.log(p[np.arange(12), y]), rtol=1e-12)
    assert "cross_entropy: no per-row gradient column" in r.err


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(mask=st.lists(st.booleans(), min_size=1, max_size=60).filter(lambda m: not all(m)),
       batch=st.integers(1, 16))
def test_nan_drop_numbers_the_rows_it_keeps(cli, tmp_path_factory, mask, batch):
    n = len(mask)
    rng = np.random.default_rng(n)
    y, p = rng.normal(size=n).tolist(), rng.normal(size=n).tolist()
    path = tmp_path_factory.mktemp("drop") / "d.csv"
    path.write_text("y,yhat\n" + "".join(f"{'nan' if bad else repr(a)},{b!r}\n" for a, b, bad in zip(y, p, mask)))
    r = cli("eval", path, "--nan", "drop", "--reduction", "none", "-f", "csv", "-l", "mse", "--batch-rows", batch)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "row,mse"
    kept = np.flatnonzero(~np.array(mask))
    got = np.array([[float(x) for x in ln.split(",")] for ln in lines[1:]])
    assert got[:, 0].astype(int).tolist() == (kept + 1).tolist()
    assert np.allclose(got[:, 1], (np.array(y)[kept] - np.array(p)[kept]) ** 2, rtol=1e-15)


def test_min_rows_says_how_many_slices_it_hid(cli, tmp_path):
    data = _write(tmp_path / "d.csv", 40)  # g = i % 7: slices 0..4 have 6 rows, 5 and 6 have 5
    r = cli("eval", data, "-l", "mse", "--by", "g", "--min-rows", "6", "-f", "json")
    assert r.code == 0
    assert len(r.json()["groups"]) == 5
    assert "2 slices with fewer than --min-rows rows hidden" in r.err


def _commands():
    import typer

    from lossctl.cli import app

    command = typer.main.get_command(app)
    return [[]] + [[name] for name in command.commands]


@pytest.mark.parametrize("command", _commands(), ids=lambda c: c[0] if c else "lossctl")
def test_help_documents_debug_and_reads_plainly(cli, command):
    r = cli(*command, "--help")
    assert r.code == 0
    assert "--debug" in r.out and "traceback" in r.out
    assert "<list[" not in r.out and "<str>" not in r.out and "<int>" not in r.out and "<float>" not in r.out


def test_stdin_on_a_terminal_says_it_is_reading(tmp_path):
    import pty

    master, slave = pty.openpty()
    try:
        p = _popen(["eval", "-", "-l", "mse", "-f", "json"], stdin=slave, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE)
        os.write(master, b"y,yhat\n1,2\n3,3\n\x04")  # Ctrl-D at the start of a line: end of input
        out, err = p.communicate(timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 0, err
    assert b"reading standard input" in err and b"Ctrl-D" in err
    assert json.loads(out)["results"][0]["value"] == pytest.approx(0.5)


def test_stdin_from_a_pipe_says_nothing():
    r = run_subprocess("eval", "-", "-l", "mse", "-f", "json", stdin=b"y,yhat\n1,2\n3,3\n")
    assert r.code == 0 and r.err == ""


def test_xz_input_is_read(cli, tmp_path):
    import lzma

    data = _write(tmp_path / "d.csv", 300)
    text = open(data, "rb").read()
    (tmp_path / "d.csv.xz").write_bytes(lzma.compress(text))
    (tmp_path / "noext").write_bytes(lzma.compress(text))  # found by its magic bytes
    want = cli("eval", data, "-l", "mse", "-f", "json").json()["results"][0]["value"]
    for name in ("d.csv.xz", "noext"):
        r = cli("eval", tmp_path / name, "-l", "mse", "-f", "json")
        assert r.code == 0, r.err
        assert r.json()["results"][0]["value"] == want
    (tmp_path / "cut.csv.xz").write_bytes(lzma.compress(text)[:200])
    r = cli("eval", tmp_path / "cut.csv.xz", "-l", "mse")
    assert r.code == 2 and "xz" in r.err and r.err.count("\n") == 1
    assert not [f for f in os.listdir(tmp_path) if f.startswith("lossctl-")]


def test_long_values_in_messages_are_cut_at_a_boundary(cli, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"y": 1, "yhat": 2}\n{"y": 1, "yhat": [' + ", ".join(str(1000 + i) for i in range(40)) + "]}\n")
    r = cli("eval", path, "-l", "mse")
    assert r.code == 2
    shown = r.err.split("(got '")[1].split("')")[0]
    assert shown.endswith("…") and shown[:-1].endswith(tuple(str(1000 + i) for i in range(40)))


def test_error_counts_do_not_read_like_the_file_size(cli, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y,yhat\n1,2\n1,nan\n1,nan\n2,nan\n" + "1,1\n" * 50)
    r = cli("eval", path, "-l", "mse")
    assert r.code == 2 and "row 2" in r.err
    assert "3 rows like this found so far" in r.err and "in all" not in r.err


def test_csv_ids_that_are_numbers_come_out_as_numbers(cli, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,y,yhat\n7,1,2\n-12,1,3\n")
    r = cli("eval", path, "-l", "mse", "--reduction", "none", "--id", "id", "-f", "jsonl")
    assert [json.loads(ln)["id"] for ln in r.out.splitlines()] == [7, -12]
    path.write_text("id,y,yhat\n007,1,2\nx1,1,3\n12,1,1\n")  # text that is not a canonical number stays text
    r = cli("eval", path, "-l", "mse", "--reduction", "none", "--id", "id", "-f", "jsonl")
    assert [json.loads(ln)["id"] for ln in r.out.splitlines()] == ["007", "x1", 12]


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("formats")
    t = pa.table({"y": [1.0, 2.0, 3.0], "yhat": [1.5, 2.0, 2.0]})
    pq.write_table(t, d / "d.parquet")
    feather.write_feather(t, d / "d.feather")
    (d / "d.csv").write_text("y,yhat\n1,1.5\n2,2\n3,2\n")
    (d / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in t.to_pylist()))
    return [str(d / f) for f in ("d.parquet", "d.feather", "d.csv", "d.jsonl")]


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.one_of(st.integers(-3, 10), st.integers(2**31 - 2, 2**31 + 2), st.integers(2**62, 2**80)),
       fmt=st.integers(0, 3), none=st.booleans())
def test_batch_rows_of_any_size_is_never_an_internal_error(cli, formats, rows, fmt, none):
    extra = ["--reduction", "none", "-f", "csv"] if none else ["-f", "json"]
    r = cli("eval", formats[fmt], "-l", "mae", "--batch-rows", rows, *extra)
    if rows < 1:
        assert r.code == 2 and "--batch-rows" in r.err
    else:
        assert r.code == 0, r.err
        values = [float(v) for v in r.out.splitlines()[1:]] if none else [r.json()["results"][0]["value"]]
        assert values == ([0.5, 0.0, 1.0] if none else [0.5])


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.one_of(st.integers(-(2**70), 2**70), st.integers(-2, 2)))
def test_seed_of_any_size_is_never_an_internal_error(cli, formats, seed):
    r = cli("eval", formats[0], "-l", "mae", "--ci", "0.9", "--bootstrap", "20", "--seed", seed, "-f", "json")
    assert r.code == (2 if seed < 0 else 0), r.err
    if seed < 0:
        assert "--seed" in r.err and r.err.count("\n") == 1


@pytest.fixture(scope="module")
def state_doc(tmp_path_factory):
    d = tmp_path_factory.mktemp("state")
    data = _write(d / "d.csv", 60)
    r = run_subprocess("eval", data, "-l", "mse", "-l", "huber", "--by", "g", "--ci", "0.9", "--bootstrap", "10",
                       "--grad", "--emit-state", d / "s.json", "-o", d / "r.json")
    assert r.code == 0, r.err
    return json.loads((d / "s.json").read_text())


def _paths(x, prefix=()):
    if isinstance(x, dict):
        for k, v in x.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(x, list):
        for i, v in enumerate(x[:2]):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_damaged_state_file_is_an_input_error(cli, tmp_path_factory, state_doc, data):
    """Any field taken away or replaced: exit 2 naming a damaged state file, never an internal error."""
    import copy

    paths = sorted(_paths(state_doc), key=repr)
    path = data.draw(st.sampled_from(paths))
    junk = data.draw(st.sampled_from(["<delete>", None, "x", [], {}, True, [None], {"a": 1}]))
    doc = copy.deepcopy(state_doc)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if junk == "<delete>":
        if isinstance(parent, list):
            parent.pop(path[-1])
        else:
            del parent[path[-1]]
    else:
        parent[path[-1]] = junk
    f = tmp_path_factory.mktemp("damaged") / "s.json"
    f.write_text(json.dumps(doc))
    r = cli("merge", f, "-f", "json")
    assert r.code in (0, 2), (path, junk, r.err)
    if r.code == 2:
        assert r.out == "" and r.err.count("\n") == 1 and r.err.startswith("lossctl: error: ")


@pytest.mark.parametrize("part,key,value", [("options", "ci", 1.5), ("options", "bootstrap", 10**30),
                                            ("options", "seed", -1)])
def test_a_state_file_with_an_option_out_of_range_is_damaged(cli, tmp_path, state_doc, part, key, value):
    doc = json.loads(json.dumps(state_doc))
    doc[part][key] = value
    f = tmp_path / "s.json"
    f.write_text(json.dumps(doc))
    r = cli("merge", f)
    assert r.code == 2 and "damaged state file" in r.err and r.err.count("\n") == 1


@pytest.mark.parametrize("part,key", [("options", "ci"), ("options", "key"), ("context", "n_classes")])
def test_a_state_file_missing_a_field_is_damaged(cli, tmp_path, state_doc, part, key):
    doc = json.loads(json.dumps(state_doc))
    del doc[part][key]
    f = tmp_path / "s.json"
    f.write_text(json.dumps(doc))
    r = cli("merge", f)
    assert r.code == 2 and "damaged state file" in r.err and repr(key) in r.err
