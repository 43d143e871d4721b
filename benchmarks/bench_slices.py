"""Slices: `lossctl eval --by COL` against pandas `groupby().agg`, and against itself without --by.

    python benchmarks/bench_slices.py [--cases 100000,1000,10] [--repeat 3] [--before DIR] [--json OUT]

Files: the regression data of _common (y, yhat float64; 2^20-row row groups) with a group
column `g` (int64, uniform over GROUPS values drawn from numpy.random.default_rng([SEED,
chunk, GROUPS])) and, at 10 groups, `s`, the same key as a dictionary-encoded string column.
Cases (issue 11):

  100000  1,000,000 rows, 100,000 groups   lossctl --by g  vs  pandas groupby().agg   target ≤ 1.0×
  1000    10,000,000 rows, 1,000 groups    lossctl --by g  vs  pandas groupby().agg   target ≤ 1.0×
  10      10,000,000 rows, 10 groups       lossctl --by g, --by s  vs  lossctl alone   target ≤ 1.3×

Competitors run in fresh processes, round robin, best of REPEAT after a warm-up round:
  lossctl --by     python -m lossctl eval FILE -t y -p yhat -l mse -l mae --by g -f csv
  pandas           pd.read_parquet(y, yhat, g); r = yhat − y; DataFrame(g, r², |r|)
                   .groupby(g).agg(mse=mean, mae=mean), written as CSV (this file's --worker)
  lossctl          the same lossctl command without --by (the 10-group case)
Every group's mse and mae are compared between lossctl and pandas (relative 1e-9).

--before DIR adds `lossctl --by g` imported from another checkout (e.g. the main branch's
work tree) as one more competitor, for before/after figures measured side by side; its
output must be the same bytes as this checkout's.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TOL = 1e-9
CASES = {  # groups → rows
    100_000: 1_000_000,
    1_000: 10_000_000,
    10: 10_000_000,
}


def slices_file(rows: int, groups: int) -> Path:
    """The cached regression file of ``rows`` rows with a group column of ``groups`` values."""
    path = C.DATA_DIR / f"slices_v{C.GEN_VERSION}_{rows}_{groups}.parquet"
    if path.exists():
        return path
    print(f"# generating {path.relative_to(C.REPO)} ({rows:,} rows, {groups:,} groups) ...", file=sys.stderr, flush=True)
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [("y", pa.float64()), ("yhat", pa.float64()), ("g", pa.int64())]
    if groups <= 100:
        fields.append(("s", pa.dictionary(pa.int32(), pa.string())))
    schema = pa.schema(fields)
    names = pa.array([f"group-{i:03d}" for i in range(groups)])

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as w:
            for i, start in enumerate(range(0, rows, C.CHUNK)):
                n = min(C.CHUNK, rows - start)
                y, yh = C.gen_chunk(i, n)
                g = np.random.default_rng([C.SEED, i, groups]).integers(0, groups, n)
                cols = {"y": y, "yhat": yh, "g": g}
                if groups <= 100:
                    cols["s"] = pa.DictionaryArray.from_arrays(pa.array(g.astype(np.int32)), names)
                w.write_table(pa.table(cols, schema=schema), row_group_size=C.ROW_GROUP)

    return C._atomic(path, write)


# ------------------------------------------------------------------ the pandas competitor


def pandas_worker(path: str, by: str) -> None:
    t0 = time.perf_counter()
    import pandas as pd

    t1 = time.perf_counter()
    df = pd.read_parquet(path, columns=["y", "yhat", by])
    t2 = time.perf_counter()
    r = df["yhat"] - df["y"]
    out = pd.DataFrame({by: df[by], "se": r * r, "ae": r.abs()}).groupby(by).agg(mse=("se", "mean"), mae=("ae", "mean"))
    buf = io.StringIO()
    out.to_csv(buf, float_format="%.17g")
    t3 = time.perf_counter()
    sys.stdout.write(buf.getvalue())
    print(f"# import {t1 - t0:.3f} read {t2 - t1:.3f} compute {t3 - t2:.3f}", file=sys.stderr)


def pandas_cmd(path: Path, by: str) -> list[str]:
    return [C.PYTHON, os.path.abspath(__file__), "--worker", str(path), by]


def lossctl_cmd(path: Path, by: str | None) -> list[str]:
    cmd = [C.PYTHON, "-m", "lossctl", "eval", str(path), "-t", "y", "-p", "yhat", "-l", "mse", "-l", "mae", "-f", "csv"]
    return cmd + (["--by", by] if by else [])


def pandas_values(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for row in csv.DictReader(io.StringIO(text)):
        key = next(iter(row.values()))
        out[(key, "mse")] = float(row["mse"])
        out[(key, "mae")] = float(row["mae"])
    return out


def lossctl_values(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for row in csv.DictReader(io.StringIO(text)):
        key = row.get("group", "(all)")
        if key != "(all)":
            out[(key, row["loss"])] = float(row["value"])
    return out


def agreement(label: str, ref: dict, got: dict) -> tuple[bool, str]:
    if set(ref) != set(got):
        return False, f"{label}: DIFFERENT groups ({len(ref) // 2:,} and {len(got) // 2:,})"
    worst = max((C.rel_diff(v, got[k]) for k, v in ref.items()), default=0.0)
    ok = worst <= TOL
    return ok, (f"{label}: {len(ref) // 2:,} groups × 2 losses {'agree' if ok else 'DISAGREE'} to {TOL:g} relative "
                f"(max relative difference {worst:.1e})")


def bench_case(groups: int, repeat: int, before: str | None = None) -> dict:
    rows = CASES[groups]
    path = slices_file(rows, groups)
    C.warm(path)
    comps = [C.Competitor("lossctl --by g", lossctl_cmd(path, "g"), "lossctl eval -l mse -l mae --by g -f csv")]
    if before:  # -P: python -m would put the working directory (this checkout) first on sys.path
        cmd = lossctl_cmd(path, "g")
        comps.append(C.Competitor("lossctl --by g before", [cmd[0], "-P"] + cmd[1:], f"the same, lossctl from {before}",
                                  env={"PYTHONPATH": os.path.abspath(before)}))
    if groups <= 100:
        comps += [C.Competitor("lossctl --by s", lossctl_cmd(path, "s"), "the same by the dictionary-encoded key"),
                  C.Competitor("lossctl", lossctl_cmd(path, None), "the same without --by")]
    comps.append(C.Competitor("pandas", pandas_cmd(path, "g"), "pd.read_parquet + groupby().agg(mean) + to_csv"))
    print(f"### {rows:,} rows, {groups:,} groups ({path.stat().st_size / 1e6:,.0f} MB, {path.relative_to(C.REPO)})\n")
    ms = C.measure(comps, repeat)
    print(C.time_table(ms, "pandas"))
    print()
    by_t = ms["lossctl --by g"].best
    targets = [C.target_line("lossctl --by g / pandas", by_t / ms["pandas"].best, "<=", 1.0, "#11")]
    ratios = {"by/pandas": by_t / ms["pandas"].best}
    if groups <= 100:
        base = ms["lossctl"].best
        targets.append(C.target_line("lossctl --by g / lossctl", by_t / base, "<=", 1.3, "#11"))
        targets.append(C.target_line("lossctl --by s / lossctl", ms["lossctl --by s"].best / base, "<=", 1.3, "#11"))
        ratios.update({"by_int/plain": by_t / base, "by_dict/plain": ms["lossctl --by s"].best / base})
    print(C.table(["ratio", "measured", "target", "issue", ""], targets, "lrrll"))
    print()
    if before:
        b = ms["lossctl --by g before"]
        same = b.last.stdout == ms["lossctl --by g"].last.stdout
        ratios["before/pandas"] = b.best / ms["pandas"].best
        line = f"- lossctl before ({before}): {b.best:.3f} s, {ratios['before/pandas']:.2f}× pandas"
        if groups <= 100:
            ratios["before/plain"] = b.best / ms["lossctl"].best
            line += f", {ratios['before/plain']:.2f}× the run without --by"
        print(line + f"; its CSV {'is the same bytes' if same else 'DIFFERS'}\n")
    ref = pandas_values(ms["pandas"].last.stdout)
    checks = [agreement("lossctl --by g vs pandas", ref, lossctl_values(ms["lossctl --by g"].last.stdout))]
    if groups <= 100:
        s_vals = {(f"group-{int(k):03d}", loss): v for (k, loss), v in ref.items()}
        checks.append(agreement("lossctl --by s vs pandas", s_vals, lossctl_values(ms["lossctl --by s"].last.stdout)))
    for ok, line in checks:
        print(f"- {line}")
    print()
    return {"rows": rows, "groups": groups,
            "competitors": {n: {"best_s": m.best, "median_s": m.median, "peak_mb": m.peak_mb} for n, m in ms.items()},
            "ratios": ratios, "values_agree": all(ok for ok, _ in checks)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        pandas_worker(argv[1], argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="100000,1000,10", help="comma list of group counts (100000, 1000, 10)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per competitor; the best counts (default 3)")
    ap.add_argument("--before", metavar="DIR", help="also run lossctl --by g from this checkout (before/after figures)")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT")
    a = ap.parse_args(argv)
    cases = [int(c) for c in a.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case {bad[0]}; cases: {', '.join(map(str, CASES))}")
    C.header(f"bench_slices: lossctl eval --by, mse + mae, best of {a.repeat}")
    return C.run_cases("bench_slices", [lambda g=g: bench_case(g, a.repeat, a.before) for g in cases], a.json)


if __name__ == "__main__":
    sys.exit(main())
