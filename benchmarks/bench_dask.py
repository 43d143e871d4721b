"""`--engine dask` vs the local engine on an 8-file Parquet dataset.

    python benchmarks/bench_dask.py [--rows 20000000] [--repeat 3] [--only grad|ci-by] [--json OUT]

Data: ROWS rows (default 20M) of y, yhat (the generator of _common.py) and a slice column
g (8 values), in 8 Parquet files of ROWS/8 rows (row groups of 2**20), cached under
benchmarks/_data/. Losses mse, mae, huber, quantile. Every competitor runs in its own
fresh process, round robin, best of REPEAT after one untimed round:

  local            lossctl eval DIR ... (the local engine: one process, a reader thread)
  dask, new        ... --engine dask (a LocalCluster of one worker per core, started and
                   closed by the run)
  dask, running    ... --engine dask --scheduler ADDR: a scheduler and one single-threaded
                   worker per core started once by this script (`python -m dask scheduler`,
                   `python -m dask worker --preload lossctl.engines.dask`), all on 127.0.0.1,
                   kept running (warm) across the rounds

for two workloads: `--grad`, and `--grad --ci 0.95 --by g` (the work that splits).
Target (issue 14, on a 2-core machine): dask, running ≤ 1.5× local for `--grad`; the
`--grad --ci --by` ratios are reported. The script checks that the JSON reports of the
engines agree (largest relative difference of any number), and prints the machine's load
average before and after (the cases share the machine with whatever else runs on it).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

FILES = 8
LOSS_ARGS = [a for loss in C.LOSSES for a in ("-l", loss)]
WORKLOADS = {"--grad": ["--grad"], "--grad --ci --by": ["--grad", "--ci", "0.95", "--by", "g"]}


def dataset(rows: int) -> Path:
    """DIR/part-i.parquet, i < 8: the generator's rows in order, and g = row index mod 8."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = C.DATA_DIR / f"dask_v{C.GEN_VERSION}_{rows}"
    if (d / "done").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    y, yhat = C.gen_arrays(rows)
    g = (np.arange(rows) % 8).astype(np.int64)
    bounds = np.linspace(0, rows, FILES + 1).astype(int)
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        t = pa.table({"y": y[a:b], "yhat": yhat[a:b], "g": g[a:b]})
        pq.write_table(t, d / f"part-{i}.parquet", row_group_size=C.ROW_GROUP)
    (d / "done").write_text("")
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_cluster(workers: int):
    """A scheduler and ``workers`` single-threaded workers, as separate processes on 127.0.0.1."""
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = C.child_env()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([C.PYTHON, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, **quiet)]
    try:
        procs.append(subprocess.Popen([C.PYTHON, "-m", "dask", "worker", addr, "--nworkers", str(workers),
                                       "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                                       "--preload", "lossctl.engines.dask"], env=env, **quiet))
        from distributed import Client

        with Client(addr, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=60)
        yield addr
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
            if p.poll() is None:
                p.kill()


def numbers(doc, path=""):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(doc, float):
        yield path, doc


def agreement(a: str, b: str) -> float:
    da, db = dict(numbers(json.loads(a))), dict(numbers(json.loads(b)))
    if da.keys() != db.keys():
        return float("inf")
    return max((C.rel_diff(x, db[k]) for k, x in da.items() if x == x), default=0.0)


def load() -> str:
    try:
        return " / ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:  # not Linux
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--only", choices=["grad", "ci-by"], help="run one workload only")
    args = ap.parse_args()
    workers = os.cpu_count() or 1
    d = dataset(args.rows)
    for f in sorted(d.glob("*.parquet")):
        C.warm(f)
    base = [C.PYTHON, "-m", "lossctl", "eval", str(d), "-t", "y", "-p", "yhat", *LOSS_ARGS, "-f", "json", "-q"]
    print(f"# {C.machine_info()}; {args.rows:,} rows in {FILES} files; {workers} workers", file=sys.stderr)
    before = load()
    out: dict = {"rows": args.rows, "files": FILES, "workers": workers, "workloads": {}}
    lines = []
    with running_cluster(workers) as addr:
        for label, extra in WORKLOADS.items():
            if args.only and (args.only == "grad") != (label == "--grad"):
                continue
            comps = [
                C.Competitor("local", [*base, *extra]),
                C.Competitor("dask, new", [*base, *extra, "--engine", "dask"]),
                C.Competitor("dask, running", [*base, *extra, "--engine", "dask", "--scheduler", addr]),
            ]
            ms = C.measure(comps, args.repeat)
            agree = max(agreement(ms["local"].last.stdout, ms[n].last.stdout) for n in ("dask, new", "dask, running"))
            lines.append(f"\n## eval {label}\n")
            lines.append(C.time_table(ms, "local"))
            new, run = (ms[n].best / ms["local"].best for n in ("dask, new", "dask, running"))
            lines.append(f"\ndask, running / local = {C.fmt_ratio(run)}; dask, new / local = {C.fmt_ratio(new)}; "
                         f"largest relative difference between the engines' numbers: {agree:.1e}")
            if label == "--grad":
                lines.append(C.table(["target", "value", "bound", "issue", "verdict"],
                                     [C.target_line("dask, running / local (--grad)", run, "<=", 1.5, "14")]))
            out["workloads"][label] = {"seconds": {n: m.best for n, m in ms.items()}, "running_over_local": run,
                                       "new_over_local": new, "max_rel_diff": agree}
    lines.append(f"\nload average (1 / 5 / 15 min): {before} before, {load()} after")
    out["load_average"] = {"before": before, "after": load()}
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
