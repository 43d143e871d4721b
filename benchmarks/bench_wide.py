"""Wide inputs: many columns of CSV, many float32 columns of Parquet.

    python benchmarks/bench_wide.py [--rows 10000000] [--wide-rows 1000000] [--repeat 3]
                                    [--cases csv,parquet] [--before DIR] [--json OUT]

csv      a CSV of ROWS rows: target ``y`` and 8 prediction columns ``m1`` … ``m8`` (float64,
         9 columns, ≈ 1.7 GB at 10M rows); ``lossctl eval FILE -t y -p m1 … -p m8 -l mse -l mae``
         against ``pandas.read_csv(engine="c", usecols, dtype=float64)`` + numpy computing the
         same 16 values. Target (issue 11, item 3): lossctl ≤ 1.0× pandas' C engine.
parquet  a Parquet file of WIDE_ROWS rows: class label ``y`` (int64, 100 classes) and 100
         float32 logits ``logit_0`` … ``logit_99``, written as one 2**20-row group;
         ``lossctl eval FILE -t y -p 'logit_*' --logits -l cross_entropy`` against
         ``pyarrow.parquet.read_table`` + numpy (log-sum-exp in float64). Target (issue 11,
         item 4): lossctl's peak RSS ≤ 400 MB (the floor's is shown for contrast).

--before DIR adds lossctl imported from another checkout (e.g. the main branch's work tree)
as one more competitor, for before/after figures measured side by side.

Each competitor runs in a fresh process, round robin, best of REPEAT after a warm-up round
(see _common.py); lossctl's values are checked against the competitor's to 1e-9 relative.
The competitors run through this script's own worker mode:
``python benchmarks/bench_wide.py --worker KIND FILE``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TOL = 1e-9
MODELS = 8
CLASSES = 100
CSV_TARGET = 1.0
PARQUET_PEAK_MB = 400.0
NOISE = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5)  # each model's error scale


# ------------------------------------------------------------------ data


def models_csv(rows: int, *, quiet: bool = False) -> Path:
    """A cached CSV: y (as in _common.gen_chunk) and m1..m8 = y + N(0, NOISE[k]²)."""
    path = C.DATA_DIR / f"wide_v{C.GEN_VERSION}_{rows}_{MODELS}models.csv"
    if path.exists():
        return path
    if not quiet:
        print(f"# generating {path.relative_to(C.REPO)} ({rows:,} rows) ...", file=sys.stderr, flush=True)
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = ["y"] + [f"m{k + 1}" for k in range(MODELS)]
    schema = pa.schema([(n, pa.float64()) for n in names])

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write((",".join(names) + "\n").encode())
            with pacsv.CSVWriter(f, schema, write_options=pacsv.WriteOptions(include_header=False)) as w:
                for i, start in enumerate(range(0, rows, C.CHUNK)):
                    n = min(C.CHUNK, rows - start)
                    y, _ = C.gen_chunk(i, n)
                    rng = np.random.default_rng([C.SEED, i, 7])
                    cols = [y] + [y + rng.normal(0.0, s, n) for s in NOISE[:MODELS]]
                    w.write_table(pa.table(cols, schema=schema))

    C._atomic(path, write)
    return path


def logits_parquet(rows: int, *, quiet: bool = False) -> Path:
    """A cached Parquet file: y (int64 labels in 0..99) and 100 float32 logits, one 2**20-row group."""
    path = C.DATA_DIR / f"wide_v{C.GEN_VERSION}_{rows}_{CLASSES}logits.parquet"
    if path.exists():
        return path
    if not quiet:
        print(f"# generating {path.relative_to(C.REPO)} ({rows:,} rows) ...", file=sys.stderr, flush=True)
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("y", pa.int64())] + [(f"logit_{k}", pa.float32()) for k in range(CLASSES)])

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as w:
            cols: list[list] = [[] for _ in range(CLASSES + 1)]
            for i, start in enumerate(range(0, rows, C.CHUNK)):
                n = min(C.CHUNK, rows - start)
                rng = np.random.default_rng([C.SEED, i, 11])
                y = rng.integers(0, CLASSES, n)
                z = rng.normal(0.0, 2.0, (n, CLASSES)).astype(np.float32)
                z[np.arange(n), y] += 3.0
                cols[0].append(pa.array(y))
                for k in range(CLASSES):
                    cols[k + 1].append(pa.array(z[:, k]))
            table = pa.table([pa.chunked_array(c) for c in cols], schema=schema)
            w.write_table(table, row_group_size=C.ROW_GROUP)

    C._atomic(path, write)
    return path


# ------------------------------------------------------------------ the competitors (worker mode)


def _finish(values: dict, t0: float, t1: float, t2: float, t3: float) -> None:
    json.dump({"values": values, "t": {"import": t1 - t0, "read": t2 - t1, "compute": t3 - t2}}, sys.stdout)
    sys.stdout.write("\n")


def pandas_models(path: str) -> None:
    """pandas' C engine + numpy: mse and mae of each model."""
    t0 = time.perf_counter()
    import numpy as np
    import pandas as pd

    t1 = time.perf_counter()
    names = ["y"] + [f"m{k + 1}" for k in range(MODELS)]
    df = pd.read_csv(path, engine="c", usecols=names, dtype={c: np.float64 for c in names})
    t2 = time.perf_counter()
    y = df["y"].to_numpy()
    values = {}
    for c in names[1:]:
        r = df[c].to_numpy() - y
        values[f"mse {c}"] = float(np.mean(r * r))
        values[f"mae {c}"] = float(np.mean(np.abs(r)))
    _finish(values, t0, t1, t2, time.perf_counter())


def floor_logits(path: str) -> None:
    """read_table + numpy: mean cross-entropy from float32 logits, log-sum-exp in float64."""
    t0 = time.perf_counter()
    import numpy as np
    import pyarrow.parquet as pq

    t1 = time.perf_counter()
    names = [f"logit_{k}" for k in range(CLASSES)]
    t = pq.read_table(path, columns=["y"] + names)
    y = t.column("y").to_numpy()
    z = np.column_stack([t.column(c).to_numpy() for c in names])
    t2 = time.perf_counter()
    total = 0.0
    for s in range(0, len(y), 1 << 16):  # blocked, so that float64 temporaries stay small
        zb = z[s:s + (1 << 16)].astype(np.float64)
        m = zb.max(axis=1)
        lse = m + np.log(np.exp(zb - m[:, None]).sum(axis=1))
        total += float(np.sum(lse - zb[np.arange(len(zb)), y[s:s + (1 << 16)]]))
    values = {"cross_entropy": total / len(y)}
    _finish(values, t0, t1, t2, time.perf_counter())


WORKERS = {"pandas_models": pandas_models, "floor_logits": floor_logits}


def worker_cmd(kind: str, path: Path) -> list[str]:
    return [C.PYTHON, str(Path(__file__).resolve()), "--worker", kind, str(path)]


# ------------------------------------------------------------------ the cases


def csv_cmd(path: Path) -> list[str]:
    cmd = [C.PYTHON, "-m", "lossctl", "eval", str(path), "-t", "y"]
    for k in range(MODELS):
        cmd += ["-p", f"m{k + 1}"]
    return cmd + ["-l", "mse", "-l", "mae", "-f", "json"]


def parquet_cmd(path: Path) -> list[str]:
    return [C.PYTHON, "-m", "lossctl", "eval", str(path), "-t", "y", "-p", "logit_*", "--logits",
            "-l", "cross_entropy", "-f", "json"]


def lossctl_values(doc: dict) -> dict[str, float]:
    out = {}
    for r in doc["results"]:
        pred = r.get("pred")
        key = r["loss"] if pred is None or pred.startswith("logit") else f"{r['loss']} {pred}"
        out[key] = r["value"]
    return out


def agreement(ref: dict[str, float], got: dict[str, float]) -> tuple[bool, str]:
    missing = sorted(set(ref) - set(got))
    if missing:
        return False, f"values missing from lossctl's output: {', '.join(missing)}"
    worst = max(C.rel_diff(v, got[k]) for k, v in ref.items())
    ok = worst <= TOL
    return ok, f"{len(ref)} values {'agree' if ok else 'DISAGREE'} to {TOL:g} relative (max difference {worst:.1e})"


def _before(cmd: list[str], before: str | None) -> list[C.Competitor]:
    if not before:
        return []
    # -P: python -m would put the working directory (this checkout) first on sys.path
    return [C.Competitor("lossctl before", [cmd[0], "-P"] + cmd[1:], f"the same, lossctl from {before}",
                         env={"PYTHONPATH": os.path.abspath(before)})]


def _before_figures(fig: dict, ms: dict) -> None:
    if "lossctl before" in ms:
        b = ms["lossctl before"]
        fig.update(before_s=b.best, before_mb=b.peak_mb)
        ok, text = agreement(lossctl_values(b.json()), lossctl_values(ms["lossctl"].json()))
        print(f"- lossctl before: {text}\n")


def case_csv(rows: int, repeat: int, before: str | None = None) -> tuple[dict, list, bool]:
    path = models_csv(rows)
    C.warm(path)
    comps = [C.Competitor("pandas C + numpy", worker_cmd("pandas_models", path),
                          'pd.read_csv(engine="c", float64) + numpy'),
             C.Competitor("lossctl", csv_cmd(path), f"eval -t y -p m1 … -p m{MODELS} -l mse -l mae")]
    comps += _before(csv_cmd(path), before)
    ms = C.measure(comps, repeat)
    print(f"### CSV: {rows:,} rows × {MODELS + 1} columns ({path.stat().st_size / 1e6:,.0f} MB)\n")
    print(C.time_table(ms, "pandas C + numpy"))
    print()
    ok, text = agreement(ms["pandas C + numpy"].json()["values"], lossctl_values(ms["lossctl"].json()))
    print(f"- {text}\n")
    ratio = ms["lossctl"].best / ms["pandas C + numpy"].best
    fig = {"rows": rows, "lossctl_s": ms["lossctl"].best, "pandas_s": ms["pandas C + numpy"].best, "ratio": ratio,
           "lossctl_mb": ms["lossctl"].peak_mb, "pandas_mb": ms["pandas C + numpy"].peak_mb}
    _before_figures(fig, ms)
    return fig, [C.target_line(f"CSV {MODELS + 1} columns: lossctl / pandas C", ratio, "<=", CSV_TARGET, "11 #3")], ok


def case_parquet(rows: int, repeat: int, before: str | None = None) -> tuple[dict, list, bool]:
    path = logits_parquet(rows)
    C.warm(path)
    comps = [C.Competitor("read_table + numpy", worker_cmd("floor_logits", path),
                          "whole table, then blocked float64 log-sum-exp"),
             C.Competitor("lossctl", parquet_cmd(path), "eval -t y -p 'logit_*' --logits -l cross_entropy")]
    comps += _before(parquet_cmd(path), before)
    ms = C.measure(comps, repeat)
    print(f"### Parquet: {rows:,} rows × {CLASSES} float32 logits, 2**20-row groups "
          f"({path.stat().st_size / 1e6:,.0f} MB)\n")
    print(C.time_table(ms, "read_table + numpy"))
    print()
    ok, text = agreement(ms["read_table + numpy"].json()["values"], lossctl_values(ms["lossctl"].json()))
    print(f"- {text}\n")
    peak = ms["lossctl"].peak_mb
    fig = {"rows": rows, "lossctl_s": ms["lossctl"].best, "floor_s": ms["read_table + numpy"].best,
           "lossctl_mb": peak, "floor_mb": ms["read_table + numpy"].peak_mb}
    _before_figures(fig, ms)
    line = [f"Parquet {rows:,} × {CLASSES} float32: lossctl peak RSS", f"{peak:,.0f} MB",
            f"<= {PARQUET_PEAK_MB:,.0f} MB", "11 #4", "PASS" if peak <= PARQUET_PEAK_MB else "MISS"]
    return fig, [line], ok


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        if len(argv) != 3 or argv[1] not in WORKERS:
            sys.exit(f"usage: bench_wide.py --worker {{{'|'.join(WORKERS)}}} FILE")
        WORKERS[argv[1]](argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="CSV rows (default 10,000,000)")
    ap.add_argument("--wide-rows", type=int, default=1_000_000, help="Parquet rows (default 1,000,000)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cases", default="csv,parquet", help="comma list of csv, parquet")
    ap.add_argument("--before", metavar="DIR", help="also run lossctl from this checkout (before/after figures)")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT")
    a = ap.parse_args(argv)
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    C.header("bench_wide: many-column CSV, wide float32 Parquet")
    figures: dict = {}
    targets: list = []
    all_ok = True
    try:
        if "csv" in cases:
            figures["csv"], t, ok = case_csv(a.rows, a.repeat, a.before)
            targets += t
            all_ok &= ok
        if "parquet" in cases:
            figures["parquet"], t, ok = case_parquet(a.wide_rows, a.repeat, a.before)
            targets += t
            all_ok &= ok
    except C.BenchError as e:
        print(f"bench_wide: {e}", file=sys.stderr)
        return 1
    print(C.table(["target", "measured", "target", "issue", ""], targets, "lrrll"))
    print()
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": C.machine_info(), "figures": figures}, indent=1))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
