"""``--engine dask``: a Parquet dataset evaluated on a Dask cluster equals the local engine.

One LocalCluster for the module (2 single-threaded worker processes on 127.0.0.1); the
datasets have uneven files (one of a single row, some of several row groups), so the
engine both sends whole files and splits them by row groups. Numbers are checked against
the local engine's on the same files (itself checked against numpy/scipy oracles
elsewhere) to 1e-12; refusals and errors are one line on stderr, exit 2.
"""
from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lossctl import cli
from test_shards import CASES, DATA, close, one_line_error

try:
    import distributed  # noqa: F401

    HAVE_DASK = True
except ImportError:  # the extra is not installed: these tests skip
    HAVE_DASK = False

needs_dask = pytest.mark.skipif(not HAVE_DASK, reason="needs the lossctl[dask] extra")


def run(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def ok_json(capsys, *args) -> dict:
    code, out, err = run(capsys, *args, "-f", "json", "-q")
    assert code == 0, err
    return json.loads(out)


def write_dataset(df: pd.DataFrame, d: Path) -> Path:
    """``df`` as a directory of uneven Parquet files: 1 row; a third in row groups of a ninth;
    a fifth; the rest in row groups of 50 rows."""
    d.mkdir(parents=True, exist_ok=True)
    n = len(df)
    bounds = [0, 1, n // 3, n // 3 + n // 5, n]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        t = pa.Table.from_pandas(df.iloc[a:b], preserve_index=False)
        rg = {1: max(1, n // 9), 3: 50}.get(i)
        pq.write_table(t, d / f"part-{i}.parquet", row_group_size=rg)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    if not HAVE_DASK:
        pytest.skip("needs the lossctl[dask] extra")
    import logging

    import dask
    from distributed import LocalCluster

    # a worker that dies fails its task at once (the death test), instead of three retries
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                         silence_logs=logging.CRITICAL)
    yield c
    c.close()


@pytest.fixture(scope="module")
def address(cluster) -> str:
    return cluster.scheduler_address


@pytest.fixture
def client(cluster):
    from distributed import Client

    with Client(cluster, set_as_default=False) as c:
        yield c


# ------------------------------------------------------------------ equality with the local engine


@needs_dask
@pytest.mark.parametrize("make,args", [pytest.param(*v) for v in CASES.values()], ids=list(CASES))
def test_equals_local_engine(tmp_path, capsys, address, make, args):
    d = write_dataset(make(), tmp_path / "ds")
    ref = ok_json(capsys, "eval", d, *args)
    got = ok_json(capsys, "eval", d, *args, "--engine", "dask", "--scheduler", address)
    assert close(ref, got) == []
    assert got["sources"] == ref["sources"] and got.get("warnings") == ref.get("warnings")
    if "--ci" in args:
        assert [r["ci"] for r in got["results"]] == [r["ci"] for r in ref["results"]]


def _reg_df(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    return pd.DataFrame({"y": y, "p": y + rng.normal(0, 0.3, n), "q": 1.1 * y, "w": rng.uniform(0, 2, n),
                         "g": rng.choice(["a", "b", "c"], n), "h": rng.integers(0, 2, n)})


@needs_dask
def test_slice_intervals_do_not_depend_on_batches_or_the_split(tmp_path, capsys, address, monkeypatch):
    """--by --ci intervals: the same with --batch-rows 997, with a task per worker (runs of files, split by
    row groups) and a task per file."""
    from lossctl.engines import dask as engine

    df = _reg_df(40_000)  # past 2**15 rows: hashed bootstrap blocks
    d = write_dataset(df, tmp_path / "ds")
    many = tmp_path / "many"  # 8 files: a task per file with ROWS_PER_TASK = 1
    many.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(df)), 8)):
        pq.write_table(pa.Table.from_pandas(df.iloc[part], preserve_index=False), many / f"f{i}.parquet")
    args = ["-t", "y", "-p", "p", "-p", "q", "-w", "w", "--by", "g", "--by", "h", "--ci", "0.9",
            "--bootstrap", "50", "--grad", "-l", "mse", "-l", "mae"]
    ref = ok_json(capsys, "eval", d, *args)
    small = ok_json(capsys, "eval", d, *args, "--batch-rows", "997")
    split = ok_json(capsys, "eval", d, *args, "--engine", "dask", "--scheduler", address)
    monkeypatch.setattr(engine, "ROWS_PER_TASK", 1)
    files = ok_json(capsys, "eval", many, *args, "--engine", "dask", "--scheduler", address)
    for doc in (small, split):
        assert close(ref, doc) == []
    ref.pop("sources"), files.pop("sources")
    assert close(ref, files) == []
    cis = [r["ci"] for g in ref["groups"] for r in g["results"]]
    assert len(cis) == 2 * 2 * 6 and cis == [r["ci"] for g in split["groups"] for r in g["results"]]


@needs_dask
def test_top1_share_exact_when_every_outlier_is_in_one_file(tmp_path, capsys, address):
    """Each task keeps top-1% candidates for the whole dataset's rows: the share stays exact."""
    d = tmp_path / "ds"
    d.mkdir()
    rng = np.random.default_rng(3)
    n = 60_000
    for i in range(3):
        y = rng.normal(size=n)
        p = y + rng.normal(0, 0.1, n)
        if i == 2:
            p = p + rng.choice([0.0, 50.0], n, p=[0.9, 0.1])  # every large error is here
        pq.write_table(pa.table({"y": y, "p": p}), d / f"f{i}.parquet", row_group_size=20_000)
    args = ["-t", "y", "-p", "p", "-l", "mse", "-l", "mae", "--grad"]
    ref = ok_json(capsys, "eval", d, *args)
    got = ok_json(capsys, "eval", d, *args, "--engine", "dask", "--scheduler", address)
    assert close(ref, got) == []
    for r in got["results"]:
        assert "top1_share_lower_bound" not in r["grad"] and not r.get("notes")


# ------------------------------------------------------------------ refusals, before any task runs


@pytest.fixture(scope="module")
def reg_dir(tmp_path_factory) -> Path:
    return write_dataset(_reg_df(300), tmp_path_factory.mktemp("reg") / "ds")


REFUSALS = {
    "mined-triplets": (lambda: pd.read_parquet(DATA / "embeddings.parquet").iloc[:60], ["-l", "triplet_mined"],
                       "cannot evaluate triplet_mined"),
    "wasserstein": (lambda: pd.read_csv(DATA / "wasserstein.csv").iloc[:60], ["-l", "wasserstein"],
                    "cannot evaluate wasserstein"),
    "dice-grad": (lambda: pd.read_parquet(DATA / "segmentation.parquet").iloc[:300].drop(columns=["image_id"]),
                  ["-l", "dice", "--grad"], "cannot evaluate dice"),
    "per-image-dice": (lambda: pd.read_parquet(DATA / "segmentation.parquet").iloc[:300], ["-l", "dice"],
                       "per-image segmentation states"),
    "balanced": (lambda: pd.read_csv(DATA / "multiclass.csv").iloc[:100], ["-l", "cross_entropy:weight=balanced", "--logits"],
                 "balanced class weights"),
}


@needs_dask
@pytest.mark.parametrize("make,args,needle", [pytest.param(*v) for v in REFUSALS.values()], ids=list(REFUSALS))
def test_unmergeable_losses_are_refused_before_any_task(tmp_path, capsys, make, args, needle):
    d = write_dataset(make(), tmp_path / "ds")
    # an address where nothing listens: a refusal that came after connecting would say so
    one_line_error(*run(capsys, "eval", d, *args, "--engine", "dask", "--scheduler", f"tcp://127.0.0.1:{free_port()}",
                        "-f", "json"), needle, "--engine local")


@needs_dask
@pytest.mark.parametrize("args,needle", [
    (["-", "-t", "y"], "not standard input"),
    (["{d}", "-t", "y", "-p", "p", "--reduction", "none", "-f", "csv"], "--reduction none"),
    (["{d}", "-t", "y", "-p", "p", "--nan", "drop", "--ci", "0.9"], "--nan drop with --ci"),
    (["{d}", "-t", "y", "-p", "p", "--emit-state", "{tmp}/s.state"], "--emit-state"),
    (["{d}/part-0.parquet", "{tmp}/preds.parquet", "-t", "y", "-p", "p2"], "a second data file"),
    (["{d}/part-0.parquet", "{tmp}/preds.parquet", "--key", "k", "-t", "y", "-p", "p"], "--key"),
    (["{tmp}/r.csv", "-t", "y", "-p", "p"], "reads Parquet"),
], ids=["stdin", "reduction-none", "nan-drop-ci", "emit-state", "second-file", "key", "csv"])
def test_inputs_the_engine_does_not_take(tmp_path, capsys, reg_dir, args, needle):
    pq.write_table(pa.table({"k": [0], "p2": [1.0]}), tmp_path / "preds.parquet")
    (tmp_path / "r.csv").write_text("y,p\n1,2\n")
    args = [a.format(d=reg_dir, tmp=tmp_path) for a in args]
    fmt = [] if "-f" in args else ["-f", "json"]
    one_line_error(*run(capsys, "eval", *args, *fmt, "--engine", "dask", "--scheduler",
                        f"tcp://127.0.0.1:{free_port()}"), needle)
    assert not (tmp_path / "s.state").exists()


def test_scheduler_without_dask_engine(capsys, reg_dir):
    one_line_error(*run(capsys, "eval", reg_dir, "-t", "y", "-p", "p", "--scheduler", "tcp://127.0.0.1:8786"),
                   "--scheduler", "--engine dask")
    one_line_error(*run(capsys, "eval", reg_dir, "-t", "y", "-p", "p", "--engine", "spark"), "unknown engine 'spark'")


def test_missing_extra_says_how_to_install(capsys, reg_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)  # import dask → ImportError, as without the extra
    monkeypatch.setitem(sys.modules, "distributed", None)
    one_line_error(*run(capsys, "eval", reg_dir, "-t", "y", "-p", "p", "--engine", "dask"),
                   "pip install 'lossctl[dask]'")


def test_help_does_not_import_dask():
    code = ("import sys; from lossctl.cli import main; main(['--help']); main(['eval', '--help']); "
            "bad = [m for m in ('dask', 'distributed') if m in sys.modules]; assert not bad, bad")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env)
    assert p.returncode == 0, p.stderr.decode()


@needs_dask
def test_unreachable_scheduler_answers_within_the_timeout(capsys, reg_dir, monkeypatch):
    from lossctl.engines import dask as engine

    monkeypatch.setattr(engine, "CONNECT_TIMEOUT", 1.0)  # the same path as 10 s, sooner
    one_line_error(*run(capsys, "eval", reg_dir, "-t", "y", "-p", "p", "-f", "json", "--engine", "dask",
                        "--scheduler", f"tcp://127.0.0.1:{free_port()}"), "no Dask scheduler answered within 1 s")


# ------------------------------------------------------------------ errors on the workers


@needs_dask
def test_input_error_is_the_local_engines_earliest(tmp_path, capsys, address):
    """Bad values in files 1 and 3: the message is the local engine's (file 1, its global row)."""
    d = tmp_path / "ds"
    d.mkdir()
    for i in range(5):
        df = _reg_df(200, seed=i)
        if i in (1, 3):
            df.loc[17 + i, "p"] = np.nan
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), d / f"f{i}.parquet", row_group_size=64)
    args = ["eval", d, "-t", "y", "-p", "p", "-f", "json"]
    local = run(capsys, *args)
    one_line_error(*local, f"{d / 'f1.parquet'}, column 'p', row 19 (row 219 of the dataset", "missing value")
    assert run(capsys, *args, "--engine", "dask", "--scheduler", address) == local


@needs_dask
def test_an_error_in_a_task_that_starts_inside_a_file_names_the_files_row(tmp_path, capsys, address, monkeypatch):
    """Tasks of about 100 rows cut files of 200 rows at their 64-row groups: a bad value in the
    third row group of f3 is named by its row in f3, as the local engine names it."""
    from lossctl.engines import dask as engine

    monkeypatch.setattr(engine, "ROWS_PER_TASK", 100)
    d = tmp_path / "ds"
    d.mkdir()
    for i in range(5):
        df = _reg_df(200, seed=i)
        if i == 3:
            df.loc[150, "p"] = np.inf
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), d / f"f{i}.parquet", row_group_size=64)
    args = ["eval", d, "-t", "y", "-p", "p", "-f", "json"]
    local = run(capsys, *args)
    one_line_error(*local, f"{d / 'f3.parquet'}, column 'p', row 151 (row 751 of the dataset")
    assert run(capsys, *args, "--engine", "dask", "--scheduler", address) == local


@needs_dask
def test_file_changed_since_planning(tmp_path, client):
    from lossctl.plan import plan_wire
    from lossctl.engines import dask as engine
    from lossctl.errors import InputError
    from lossctl.plan import Request
    from lossctl.planner import prepare

    d = write_dataset(_reg_df(300), tmp_path / "ds")
    plan, inputs = prepare(Request(data=str(d), target="y", preds=["p"]))
    frags = engine.fragments(plan, inputs, 2)
    st = os.stat(d / "part-2.parquet")
    os.utime(d / "part-2.parquet", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with client.as_current():
        with pytest.raises(InputError, match="part-2.parquet: the file changed after the run was planned"):
            engine._run(client, plan_wire(plan), frags, plan.source_names[0])
    inputs.close()


@needs_dask
def test_no_pandas_on_the_workers(client, reg_dir):
    """A task reads its fragment with lossctl's Arrow reader: with pandas made unimportable on
    the workers (whatever else loaded it there before), every task still runs."""
    from lossctl.plan import plan_wire
    from lossctl.engines import dask as engine
    from lossctl.plan import Request
    from lossctl.planner import prepare

    plan, inputs = prepare(Request(data=str(reg_dir), target="y", preds=["p"], grad=True, by=["g"], ci=0.9, bootstrap=20))
    wire, frags = plan_wire(plan), engine.fragments(plan, inputs, 2)
    inputs.close()

    def without_pandas(wire, frags):
        import sys

        saved = {m: sys.modules.pop(m) for m in list(sys.modules) if m == "pandas" or m.startswith("pandas.")}
        sys.modules["pandas"] = None  # import pandas → ImportError
        try:
            return [engine._task(wire, f)["rows"] for f in frags]
        finally:
            del sys.modules["pandas"]
            sys.modules.update(saved)

    # an earlier test's cancelled task may still run on a worker (a thread cannot be stopped), and
    # pyarrow imports pandas there on a column with nulls (pa.scalar): wait until the workers are idle
    import time

    deadline = time.monotonic() + 60
    while any(client.run(lambda dask_worker: len(dask_worker.active_threads)).values()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    rows = client.run(without_pandas, wire, frags)
    assert len(rows) == 2 and all(r == [f.rows for f in frags] for r in rows.values())
    assert sum(f.rows for f in frags) == 300


def test_payload_pickled_is_no_larger_than_the_state_file(tmp_path):
    """States travel as the state file's data: pickled, at most 1.2× the JSON state file."""
    from lossctl import statefile
    from lossctl.driver import run_shard
    from lossctl.plan import Request
    from lossctl.planner import prepare

    pq.write_table(pa.Table.from_pandas(_reg_df(36_000), preserve_index=False), tmp_path / "f.parquet")
    req = Request(data=str(tmp_path / "f.parquet"), target="y", preds=["p", "q"], grad=True, ci=0.9, by=["g"],
                  losses=["mse", "mae", "huber"])
    plan, inputs = prepare(req)
    acc = run_shard(plan, inputs, 0)
    sent = len(pickle.dumps(statefile.payload(plan, acc, 0), protocol=pickle.HIGHEST_PROTOCOL))
    on_file = len(json.dumps(statefile.dump(plan, acc, 0), separators=(",", ":")))
    inputs.close()
    assert sent <= 1.2 * on_file, (sent, on_file)
    assert on_file > 100_000  # the states hold row candidates and bootstrap blocks, not just sums


def test_emit_state_refuses_before_reading(tmp_path, capsys):
    """The shard driver refuses a state that would not merge before it reads a row (the bad row is not reached)."""
    df = pd.read_parquet(DATA / "embeddings.parquet").iloc[:50]
    df.iloc[40, 1] = np.nan
    df.to_parquet(tmp_path / "t.parquet", index=False)
    one_line_error(*run(capsys, "eval", tmp_path / "t.parquet", "-l", "triplet_mined", "--emit-state",
                        tmp_path / "s.state", "-f", "json"), "triplet_mined: its state cannot be saved")


@needs_dask
def test_local_cluster_for_the_run_is_loopback_and_leaves_nothing(tmp_path, reg_dir):
    """Without --scheduler: a LocalCluster on 127.0.0.1, gone with its folder when lossctl exits,
    also after an input error; nothing but results on stdout, nothing on stderr."""
    import time
    import uuid

    import psutil

    mark = uuid.uuid4().hex
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), TMPDIR=str(tmp_path),
               LOSSCTL_TEST_MARK=mark)
    base = [sys.executable, "-m", "lossctl", "eval", str(reg_dir), "-t", "y", "-p", "p", "-f", "json", "--grad"]
    p = subprocess.run([*base, "--engine", "dask"], capture_output=True, env=env)
    ref = subprocess.run(base, capture_output=True, env=env)
    assert p.returncode == 0 and p.stderr == b"" and close(json.loads(ref.stdout), json.loads(p.stdout)) == []
    bad = tmp_path / "bad"
    bad.mkdir()
    df = _reg_df(100)
    df.loc[50, "p"] = np.inf
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), bad / "f.parquet")
    p = subprocess.run([*base[:4], str(bad), *base[5:], "--engine", "dask"], capture_output=True, env=env)
    one_line_error(p.returncode, p.stdout.decode(), p.stderr.decode(), "row 51", "infinite value")

    def ours() -> list:
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("LOSSCTL_TEST_MARK") == mark:
                    found.append(proc)
            except (psutil.Error, OSError):
                pass
        return found

    deadline = time.monotonic() + 10
    while ours() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ours() == []
    assert [x.name for x in tmp_path.iterdir() if x.name.startswith("lossctl-dask")] == []


@needs_dask
def test_sockets_of_the_run_cluster_are_on_loopback():
    import psutil

    from lossctl.engines import dask as engine

    with engine.client_for(None) as client:
        me = psutil.Process()
        listening = [c.laddr.ip for p in (me, *me.children(recursive=True))
                     for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        env = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        dirs = [w["local_directory"] for w in client.scheduler_info()["workers"].values()]
        nworkers = len(dirs)
    assert listening and set(listening) == {"127.0.0.1"}, listening
    assert set(env.values()) == {os.environ.get("MALLOC_TRIM_THRESHOLD_")}  # distributed's 65536 is not set
    assert nworkers == (os.cpu_count() or 1)
    assert all("lossctl-dask-" in d and not os.path.exists(d) for d in dirs)


@needs_dask
@pytest.mark.parametrize("rows_per_task,needle", [
    (1, "f1.parquet: a Dask worker died while evaluating this file ("),
    (None, "f2.parquet: a Dask worker died while evaluating this file or the 2 after it, up to {d}/f4.parquet ("),
], ids=["a-task-per-file", "a-task-per-worker"])
def test_a_worker_that_dies_names_its_file(tmp_path, capsys, cluster, client, monkeypatch, rows_per_task, needle):
    """The worker reading the second fragment dies (as from the OOM killer): one line naming its file, or
    the files of its run (5 files of 100 rows on 2 workers: f0–f1 and f2–f4). (The module's cluster allows
    no retries; the nanny starts a fresh worker.)"""
    from distributed.diagnostics.plugin import WorkerPlugin

    from lossctl.engines import dask as engine

    class DieOnSecondFragment(WorkerPlugin):
        name = "lossctl-test-die"

        def transition(self, key, start, finish, **kwargs):
            if finish == "executing" and str(key).startswith("lossctl-read-1-"):
                os._exit(1)

    d = tmp_path / "ds"
    d.mkdir()
    for i in range(5):
        pq.write_table(pa.Table.from_pandas(_reg_df(100, seed=i), preserve_index=False), d / f"f{i}.parquet")
    if rows_per_task:
        monkeypatch.setattr(engine, "ROWS_PER_TASK", rows_per_task)
    client.register_plugin(DieOnSecondFragment())
    try:
        one_line_error(*run(capsys, "eval", d, "-t", "y", "-p", "p", "-f", "json", "--engine", "dask", "--scheduler",
                            cluster.scheduler_address), f"{d}/{needle.format(d=d)}")
    finally:
        client.unregister_worker_plugin(DieOnSecondFragment.name)
    client.wait_for_workers(2, timeout=60)


@needs_dask
def test_check_with_a_baseline_column_equals_the_local_engine(tmp_path, capsys, address, reg_dir):
    args = ["check", reg_dir, "-t", "y", "-p", "p", "--baseline-pred", "q", "--assert", "mse <= baseline",
            "--assert", "mae < 0.5", "--by", "g", "--ci", "0.9", "--bootstrap", "50", "-f", "json"]
    code, out, err = run(capsys, *args)
    code2, out2, err2 = run(capsys, *args, "--engine", "dask", "--scheduler", address)
    ref, got = json.loads(out), json.loads(out2)
    for doc in (ref, got):
        doc.pop("elapsed", None)
    assert (code2, err2) == (code, err) and close(ref, got) == []
    one_line_error(*run(capsys, "check", reg_dir, "-t", "y", "-p", "p", "--baseline", reg_dir / "part-1.parquet",
                        "--baseline-pred", "q", "--assert", "mse <= baseline", "--engine", "dask", "--scheduler",
                        address), "--baseline-pred COL without --baseline FILE")


RECOMMEND = {
    "regression": (lambda: _reg_df(900), ["-t", "y", "-p", "p"]),
    "binary": (lambda: pd.read_csv(DATA / "binary.csv"), []),
    "multiclass": (lambda: pd.read_parquet(DATA / "multiclass.parquet"), []),
    "segmentation": (lambda: pd.read_parquet(DATA / "segmentation.parquet"), ["--id", "image_id"]),
    "metric": (lambda: pd.read_parquet(DATA / "embeddings.parquet"), []),
    "distribution": (lambda: pd.read_csv(DATA / "distributions.csv"), []),
}


@needs_dask
@pytest.mark.parametrize("name", list(RECOMMEND))
def test_recommend_equals_the_local_engine(tmp_path, capsys, address, name):
    """The evidence measured file by file on the workers (rows keyed by their place in the
    dataset) and merged there, and the empirical check's states: the same advice."""
    make, args = RECOMMEND[name]
    d = write_dataset(make(), tmp_path / "ds")
    ref = ok_json(capsys, "recommend", d, *args)
    got = ok_json(capsys, "recommend", d, *args, "--engine", "dask", "--scheduler", address)
    assert [r["loss"] for r in got["recommendations"]] == [r["loss"] for r in ref["recommendations"]]
    # a loss whose state does not merge across files (per-image Dice, mined triplets) is not
    # checked on the cluster, and says so; everything else is the local engine's
    unchecked = 0
    for r, g in zip(ref["recommendations"], got["recommendations"]):
        if any(n.startswith("not evaluated: --engine dask cannot evaluate") for n in g.get("notes") or []):
            unchecked += 1
            kept = {k: r[k] for k in ("loss", "spec", "params", "reasons") if k in r}
            r.clear()
            r.update({**g, **kept})
    assert close(ref, got) == []
    assert unchecked == {"segmentation": 2, "metric": 1}.get(name, 0)


@needs_dask
def test_recommend_on_dask_refuses_what_it_cannot_do_exactly(tmp_path, capsys, reg_dir, address):
    one_line_error(*run(capsys, "recommend", reg_dir, "-t", "y", "-p", "p", "--nan", "drop", "--engine", "dask",
                        "--scheduler", address), "recommend --engine dask does not take --nan drop")
    targets = write_dataset(_reg_df(300)[["y", "g"]], tmp_path / "targets")
    one_line_error(*run(capsys, "recommend", targets, "-t", "y", "--engine", "dask", "--scheduler", address),
                   "give -p")


# ------------------------------------------------------------------ URLs


@needs_dask
def test_file_url_equals_the_local_path(capsys, reg_dir, address):
    args = ["-t", "y", "-p", "p", "-w", "w", "--grad", "--by", "g", "--ci", "0.9", "--bootstrap", "30"]
    ref = ok_json(capsys, "eval", reg_dir, *args)
    url = f"file://{reg_dir}"
    for extra in ([], ["--engine", "dask", "--scheduler", address]):
        got = ok_json(capsys, "eval", url, *args, *extra)
        assert got.pop("sources") == [url]
        ref_ = {k: v for k, v in ref.items() if k != "sources"}
        assert close(ref_, got) == []
    one_line_error(*run(capsys, "eval", f"file://{reg_dir}/nothing-here", "-t", "y", "-f", "json"), "no such file")


@needs_dask
def test_fsspec_memory_filesystem(capsys, reg_dir):
    """memory:// (fsspec's, as pyarrow has none) with the local engine and with in-process Dask workers."""
    import logging

    import fsspec
    from distributed import LocalCluster

    mem = fsspec.filesystem("memory")
    for f in sorted(reg_dir.iterdir()):
        mem.pipe(f"/lossctl-test/ds/{f.name}", f.read_bytes())
    try:
        args = ["-t", "y", "-p", "p", "--grad", "--by", "g"]
        ref = ok_json(capsys, "eval", reg_dir, *args)
        ref.pop("sources")
        got = ok_json(capsys, "eval", "memory:///lossctl-test/ds", *args)
        assert got.pop("sources") == ["memory:///lossctl-test/ds"] and close(ref, got) == []
        with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
                          scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.CRITICAL) as local:
            got = ok_json(capsys, "eval", "memory:///lossctl-test/ds", *args, "--engine", "dask", "--scheduler",
                          local.scheduler_address)
        got.pop("sources")
        assert close(ref, got) == []
    finally:
        mem.rm("/lossctl-test", recursive=True)


@needs_dask
def test_hive_partitions_and_a_file_lacking_a_column(tmp_path, capsys, address):
    """Partition values (region=…) are columns in every fragment; a file lacking a bound column
    is the local engine's error, found before any task runs."""
    d = tmp_path / "hive"
    for i, region in enumerate(["east", "north", "west"]):
        (d / f"region={region}").mkdir(parents=True)
        df = _reg_df(150 + 40 * i, seed=i)
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), d / f"region={region}" / "f.parquet",
                       row_group_size=60)
    args = ["eval", d, "-t", "y", "-p", "p", "--by", "region", "--grad", "--ci", "0.9", "--bootstrap", "30",
            "-f", "json", "-q"]
    code, ref, err = run(capsys, *args)
    assert code == 0, err
    code2, got, err2 = run(capsys, *args, "--engine", "dask", "--scheduler", address)
    assert (code2, err2) == (0, err) and close(json.loads(ref), json.loads(got)) == []
    assert [g["value"] for g in json.loads(ref)["groups"]] == ["east", "north", "west"]
    pq.write_table(pa.table({"y": [1.0, 2.0]}), d / "region=west" / "g.parquet")
    local = run(capsys, *args)
    one_line_error(*local, "g.parquet", "lacks column 'p'")
    assert run(capsys, *args, "--engine", "dask", "--scheduler", f"tcp://127.0.0.1:{free_port()}") == local


@needs_dask
def test_one_file_split_by_row_groups_and_nan_drop(tmp_path, capsys, address):
    """A single Parquet file is split by its row groups; --nan drop (without --ci) equals the local engine."""
    df = _reg_df(3000, seed=7)
    df.loc[[5, 1700, 2999], "p"] = [np.nan, np.inf, np.nan]
    f = tmp_path / "one.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), f, row_group_size=400)
    args = ["eval", f, "-t", "y", "-p", "p", "-p", "q", "-w", "w", "--nan", "drop", "--grad", "--by", "g", "-l", "mse",
            "-l", "huber", "-l", "quantile:tau=0.8", "-f", "json", "-q"]
    code, ref, err = run(capsys, *args)
    code2, got, err2 = run(capsys, *args, "--engine", "dask", "--scheduler", address)
    assert (code, code2, err2) == (0, 0, err)
    ref, got = json.loads(ref), json.loads(got)
    assert got["dropped_rows"] == 3 and close(ref, got) == []


@needs_dask
@pytest.mark.parametrize("change,args,needle", [
    ({"w": 0.0}, ["-w", "w"], "every weight is 0"),
    ({"p": np.nan}, ["--nan", "drop"], "no rows left: --nan drop dropped all 300"),
], ids=["zero-weights", "all-dropped"])
def test_whole_data_checks_are_made_on_the_total(tmp_path, capsys, address, change, args, needle):
    """Checks that need every row (some weight not 0, some row left) are the local engine's, made once on the
    merged total (a fragment whose weights are all 0 is fine when another's are not)."""
    df = _reg_df(300)
    df.loc[:150, "w"] = 0.0  # the first fragments have only zero weights
    d = write_dataset(df, tmp_path / "ok")
    cmd = ["eval", d, "-t", "y", "-p", "p", "-w", "w", "-f", "json", "-q"]
    code, ref, _ = run(capsys, *cmd)
    code2, got, _ = run(capsys, *cmd, "--engine", "dask", "--scheduler", address)
    assert code == code2 == 0 and close(json.loads(ref), json.loads(got)) == []
    for col, v in change.items():
        df[col] = v
    d = write_dataset(df, tmp_path / "bad")
    cmd = ["eval", d, "-t", "y", "-p", "p", *args, "-f", "json"]
    local = run(capsys, *cmd)
    one_line_error(*local, needle)
    assert run(capsys, *cmd, "--engine", "dask", "--scheduler", address) == local


def test_merged_states_keep_candidates_for_the_whole_data_only(tmp_path):
    """Each fragment keeps top-1% candidates for the whole dataset's rows; their union keeps
    as many, not the sum of the fragments' (which would double at each level of the tree)."""
    from lossctl.plan import plan_wire
    from lossctl.engines import dask as engine
    from lossctl.plan import Request
    from lossctl.planner import prepare

    d = tmp_path / "ds"
    d.mkdir()
    for i in range(4):
        pq.write_table(pa.Table.from_pandas(_reg_df(60_000, seed=i), preserve_index=False), d / f"f{i}.parquet")
    plan, inputs = prepare(Request(data=str(d), target="y", preds=["p"], grad=True, losses=["mse"]))
    wire, frags = plan_wire(plan), engine.fragments(plan, inputs, 2, rows_per_task=1)  # a task per file
    inputs.close()
    assert len(frags) == 4
    n = 240_000
    parts = [engine._task(wire, f) for f in frags]
    assert all(p["states"][0]["grad"]["rows_bound"] == n for p in parts)
    while len(parts) > 1:
        parts = [engine._merge(wire, parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]
    g = parts[0]["states"][0]["grad"]
    assert g["rows_bound"] == n and len(g["top"]) <= n // 100 + n // 400 + 1024


def test_fragments_are_contiguous_runs_of_about_equal_rows(tmp_path):
    """A task per worker (fixed costs paid once per run, not per file), cut at row-group boundaries;
    a multiple of the workers when the runs would pass ROWS_PER_TASK; every row once, in order."""
    from lossctl.engines import dask as engine
    from lossctl.plan import Request
    from lossctl.planner import prepare

    d = tmp_path / "ds"
    d.mkdir()
    for i in range(8):  # 8 files of 1,000 rows in row groups of 300
        pq.write_table(pa.Table.from_pandas(_reg_df(1000, seed=i), preserve_index=False), d / f"f{i}.parquet",
                       row_group_size=300)
    one = tmp_path / "one.parquet"
    pq.write_table(pa.Table.from_pandas(_reg_df(1000), preserve_index=False), one, row_group_size=100)

    def cut(path, workers, rows_per_task=None):
        plan, inputs = prepare(Request(data=str(path), target="y", preds=["p"]))
        try:
            frags = engine.fragments(plan, inputs, workers, rows_per_task)
        finally:
            inputs.close()
        assert [f.index for f in frags] == list(range(len(frags)))
        assert [f.row_offset for f in frags] == [sum(g.rows for g in frags[:i]) for i in range(len(frags))]
        return frags

    two = cut(d, 2)
    assert [f.rows for f in two] == [4000, 4000]
    assert [[Path(n).name for n, _, _ in f.files] for f in two] == [[f"f{i}.parquet" for i in r] for r in
                                                                       (range(4), range(4, 8))]
    assert all(p.row_groups is None for f in two for p in f.src.parts)  # whole files
    three = cut(d, 3)  # runs cut inside files, at row groups
    assert sum(f.rows for f in three) == 8000 and max(f.rows for f in three) - min(f.rows for f in three) <= 600
    assert [p.row_groups for p in three[1].src.parts][0] is not None
    assert len(cut(d, 2, rows_per_task=1500)) == 6  # 2 × ⌈8000 / 3000⌉
    assert len(cut(d, 2, rows_per_task=1)) == 8 * 4  # every row group (300, 300, 300, 100)
    halves = cut(one, 2)  # one file: its row groups in two runs
    assert [(f.rows, f.src.row_groups) for f in halves] == [(500, (0, 5)), (500, (5, 10))]
    assert [(f.rows, f.src.row_groups) for f in cut(one, 1)] == [(1000, None)]


@needs_dask
def test_preload_warms_a_worker_before_its_first_task():
    """`dask worker ADDR --preload lossctl.engines.dask`: the worker imports lossctl's reader, driver and
    losses and sets lossctl's malloc thresholds when it starts (the first run on a fresh cluster would
    pay for them), without importing pandas."""
    import logging

    from distributed import Client, LocalCluster

    def imported():
        import sys

        return {m: m in sys.modules for m in ("lossctl.losses", "lossctl.driver", "lossctl.statefile", "pyarrow.parquet",
                                               "pandas")}

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.CRITICAL,
                      preload=["lossctl.engines.dask"]) as cluster, Client(cluster, set_as_default=False) as client:
        (found,) = client.run(imported).values()
        warm = client.run(lambda: __import__("lossctl.engines.dask", fromlist=["_WARM"])._WARM)
    assert found == {"lossctl.losses": True, "lossctl.driver": True, "lossctl.statefile": True,
                     "pyarrow.parquet": True, "pandas": False}
    assert list(warm.values()) == [True]


@needs_dask
def test_objects_are_frozen_at_exit_only(reg_dir, address):
    """Once distributed is imported, the collector's passes at interpreter exit take 0.1–0.4 s: the command
    freezes every object at exit (not before: a process that runs the command in-process keeps collecting)."""
    code = (f"import atexit, gc, json, sys; from lossctl.cli import main\n"
            f"atexit.register(lambda: print('at exit', gc.get_freeze_count() > 0))\n"
            f"main(['eval', {str(reg_dir)!r}, '-t', 'y', '-p', 'p', '-f', 'json', '-q', '--engine', 'dask', "
            f"'--scheduler', {address!r}])\n"
            f"print('after the run', gc.get_freeze_count() > 0)\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-2:] == ["after the run False", "at exit True"]


# ------------------------------------------------------------------ workers running other code


def _set_on_workers(client, code=None, version=None, old=False):
    """Make every worker look like another lossctl: its code fingerprint, its version, or (old)
    a lossctl from before the check (no _checked, no code_fingerprint in its engine module)."""
    def setup(code, version, old):
        import lossctl
        from lossctl.engines import dask as mod

        if "_test_saved" not in mod.__dict__:
            mod._test_saved = {"version": lossctl.__version__, "checked": mod._checked,
                               "fingerprint": mod.code_fingerprint}
        saved = mod._test_saved
        mod._CODE = code
        lossctl.__version__ = version or saved["version"]
        if old:  # (its tasks fail: here, as they would on an old worker, in a way that says nothing)
            def _checked(fn, code, *args):
                raise KeyError("a field this lossctl does not know")
            mod._checked = _checked
            del mod.code_fingerprint
        else:
            mod._checked, mod.code_fingerprint = saved["checked"], saved["fingerprint"]
    client.run(setup, code, version, old)


@needs_dask
@pytest.mark.parametrize("case", ["other version", "other files", "older lossctl"])
def test_a_worker_with_other_code_is_refused_with_one_line(tmp_path, capsys, client, address, case):
    """A worker left running across an upgrade (or started from another checkout) would compute
    with other code or fail with an internal error: the run stops with one line that says so."""
    from lossctl.engines import dask as engine

    d = write_dataset(_reg_df(600, seed=2), tmp_path / "ds")
    args = ["eval", d, "-t", "y", "-p", "p", "-l", "mse", "--engine", "dask", "--scheduler", address]
    mine = engine.code_fingerprint()
    version = mine.split("+")[0]
    try:
        if case == "other version":
            _set_on_workers(client, code="0.0.1+0123456789abcdef")
            needle = f"runs lossctl 0.0.1 where the client runs {version}"
        elif case == "other files":
            _set_on_workers(client, code=f"{version}+0123456789abcdef")
            needle = f"runs lossctl {version} with other files than the client's"
        else:
            _set_on_workers(client, version="0.0.9", old=True)
            needle = f"runs lossctl 0.0.9 where this client runs {version}"
        one_line_error(*run(capsys, *args), needle, "restart the workers")
    finally:
        _set_on_workers(client)
    assert run(capsys, *args)[0] == 0  # the workers restored: the run goes through
