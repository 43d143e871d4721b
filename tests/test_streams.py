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


# ---------------------------------------------------------------- Ctrl-C (item 24)


def _fionread(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def test_sigint_exits_130_with_one_line_and_leaves_nothing(tmp_path):
    """Interrupted while reading stdin: the spool file and the -o file are not left behind."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    p = _popen(["eval", "-", "-o", tmp_path / "out.csv", "-f", "csv", "--reduction", "none"],
               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(TMPDIR=str(spool)))
    p.stdin.write(b"y,yhat\n" + b"1,2\n" * 1000)
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


def test_rows_reach_stdout_batch_by_batch(cli, tmp_path, monkeypatch, capsys):
    """Before the second batch is computed, the first batch's rows are already on stdout."""
    import lossctl.pipeline

    seen: list[str] = []
    original = lossctl.pipeline.iter_rows

    def spy(plan):
        for i, chunk in enumerate(original(plan)):
            if i == 1:
                seen.append(sys.stdout.getvalue())
            yield chunk

    monkeypatch.setattr(lossctl.pipeline, "iter_rows", spy)
    data = _write(tmp_path / "d.csv", 250)
    r = cli("eval", data, "--reduction", "none", "-f", "csv", "-l", "mse", "--batch-rows", "100")
    assert r.code == 0 and r.out.count("\n") == 251
    assert len(seen) == 1 and seen[0].count("\n") == 101  # the header and the first batch
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
