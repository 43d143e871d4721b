"""End to end: `lossctl eval` against the floor and against pandas + scikit-learn.

    python benchmarks/bench_eval.py [--rows 10000000] [--repeat 3] [--formats parquet,csv] [--json OUT]

Four losses (mse, mae, huber δ=1, quantile τ=0.5) on a file of ROWS rows with two
float64 columns, y and yhat. Every competitor runs in its own fresh process, round
robin, best of REPEAT (after one untimed warm-up round); time is the process's wall
time (interpreter start, imports, read, compute, output), memory its peak RSS.

Competitors (see _workers.py for their code):
  floor            one process: pyarrow.parquet.read_table(columns) + hand-written numpy
  floor pyarrow    CSV: pyarrow.csv.read_csv(float64 columns) + the same numpy
  floor pandas-C   CSV: pandas.read_csv(engine="c", float64 columns) + the same numpy
  pandas+sklearn   pd.read_parquet / pd.read_csv + mean_squared_error, mean_absolute_error,
                   mean_pinball_loss(alpha=0.5); scikit-learn has no Huber loss, so its
                   huber is numpy on the DataFrame's columns
  lossctl          python -m lossctl eval FILE -l mse -l mae -l huber -l quantile -f json
  floor+grad       the floor plus each loss's per-row gradient and its 8 summary statistics
  lossctl --grad   the same lossctl command with --grad

Targets: issue 2 (lossctl ≤ 1.3× floor, ≥ 4× faster than pandas+sklearn on Parquet) and
issue 5 (≤ 1.1× floor, ≥ 5× faster on Parquet; CSV ≤ 1.2× the fastest floor).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import _workers as W  # noqa: E402

TOL = 1e-9


def lossctl_cmd(path: Path, grad: bool = False) -> list[str]:
    cmd = [C.PYTHON, "-m", "lossctl", "eval", str(path)]
    for loss in C.LOSSES:
        cmd += ["-l", loss]
    cmd += ["-f", "json"]
    if grad:
        cmd.append("--grad")
    return cmd


def lossctl_values(m: C.Measurement) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    doc = m.json()
    vals = {r["loss"]: r["value"] for r in doc["results"]}
    grads = {r["loss"]: r["grad"] for r in doc["results"] if r.get("grad")}
    return vals, grads


def agreement(label: str, ref: dict[str, float], got: dict[str, float]) -> tuple[bool, str]:
    worst, where = 0.0, ""
    for k, v in ref.items():
        if k not in got:
            return False, f"{label}: {k} missing"
        d = C.rel_diff(v, got[k])
        if d >= worst:
            worst, where = d, k
    ok = worst <= TOL
    return ok, f"{label}: {'agree' if ok else 'DISAGREE'} to {TOL:g} relative (max relative difference {worst:.1e}, {where})"


def flat_grads(g: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{loss}.{stat}": v for loss, stats in g.items() for stat, v in stats.items()}


def bench_format(fmt: str, rows: int, repeat: int, grad: bool) -> dict:
    path = C.regression_file(rows, fmt)
    C.warm(path)
    if fmt == "parquet":
        floors = [C.Competitor("floor", W.cmd("floor_parquet", path), "read_table + numpy")]
        sk = C.Competitor("pandas+sklearn", W.cmd("pandas_sklearn_parquet", path),
                          "pd.read_parquet + sklearn.metrics (huber: numpy)")
        fg = C.Competitor("floor+grad", W.cmd("floor_parquet_grad", path), "floor + gradients and their summaries")
    else:
        floors = [
            C.Competitor("floor pyarrow", W.cmd("floor_csv_arrow", path), "pyarrow.csv.read_csv + numpy"),
            C.Competitor("floor pandas-C", W.cmd("floor_csv_pandas", path), "pd.read_csv(engine='c') + numpy"),
        ]
        sk = C.Competitor("pandas+sklearn", W.cmd("pandas_sklearn_csv", path),
                          "pd.read_csv + sklearn.metrics (huber: numpy)")
        fg = C.Competitor("floor+grad", W.cmd("floor_csv_arrow_grad", path), "floor pyarrow + gradient summaries")
    lc = C.Competitor("lossctl", lossctl_cmd(path), "lossctl eval -l mse -l mae -l huber -l quantile -f json")
    comps = floors + [sk, lc]
    if grad:
        comps += [fg, C.Competitor("lossctl --grad", lossctl_cmd(path, grad=True), "the same with --grad")]
    print(f"### {fmt}: {rows:,} rows, {path.stat().st_size / 1e6:,.0f} MB ({path.relative_to(C.REPO)})\n")
    ms = C.measure(comps, repeat)
    fastest_floor = min((f.name for f in floors), key=lambda n: ms[n].best)
    print(C.time_table(ms, fastest_floor))
    print()

    # where the competitors' own time goes (measured inside each process)
    rows_t = []
    for c in comps:
        if c.name.startswith("lossctl"):
            continue
        t = ms[c.name].json()["t"]
        rows_t.append([c.name, C.fmt_time(t["import"]), C.fmt_time(t["read"]), C.fmt_time(t["compute"])])
    print("Inside the competitors' processes (last run): time to import, read and compute.\n")
    print(C.table(["competitor", "import", "read", "compute"], rows_t))
    print()

    lc_t = ms["lossctl"].best
    floor_t = ms[fastest_floor].best
    sk_t = ms["pandas+sklearn"].best
    r_floor = lc_t / floor_t
    r_sk = sk_t / lc_t
    targets = []
    if fmt == "parquet":
        targets += [
            C.target_line("lossctl / floor", r_floor, "<=", 1.3, "#2"),
            C.target_line("lossctl / floor", r_floor, "<=", 1.1, "#5"),
            C.target_line("(pandas+sklearn) / lossctl", r_sk, ">=", 4, "#2"),
            C.target_line("(pandas+sklearn) / lossctl", r_sk, ">=", 5, "#5"),
        ]
    else:
        targets += [
            C.target_line(f"lossctl / fastest floor ({fastest_floor})", r_floor, "<=", 1.2, "#5"),
            [f"(pandas+sklearn) / lossctl", C.fmt_ratio(r_sk), "(no target)", "", ""],
        ]
    if grad:
        r_g = ms["lossctl --grad"].best / ms["floor+grad"].best
        targets.append(["lossctl --grad / floor+grad", C.fmt_ratio(r_g), "(no target)", "", ""])
        targets.append(["lossctl --grad / lossctl", C.fmt_ratio(ms["lossctl --grad"].best / lc_t), "(no target)", "", ""])
    print(C.table(["ratio", "measured", "target", "issue", ""], targets, "lrrll"))
    print()

    # the numbers themselves must agree
    ref = ms[floors[0].name].json()["values"]
    vals, grads = lossctl_values(ms["lossctl"])
    checks = [agreement("lossctl values vs floor", ref, vals)]
    for f in floors[1:]:
        checks.append(agreement(f"{f.name} values vs {floors[0].name}", ref, ms[f.name].json()["values"]))
    checks.append(agreement("pandas+sklearn values vs floor", ref, ms["pandas+sklearn"].json()["values"]))
    if grad:
        gv, gg = lossctl_values(ms["lossctl --grad"])
        checks.append(agreement("lossctl --grad values vs floor", ref, gv))
        checks.append(agreement("lossctl --grad gradient summaries vs floor+grad",
                                flat_grads(ms["floor+grad"].json()["grad"]), flat_grads(gg)))
    for ok, line in checks:
        print(f"- {line}")
    print()
    return {
        "format": fmt, "rows": rows, "file_mb": path.stat().st_size / 1e6,
        "competitors": {n: {"best_s": m.best, "median_s": m.median, "walls_s": m.walls, "peak_mb": m.peak_mb}
                        for n, m in ms.items()},
        "ratios": {"lossctl/floor": r_floor, "pandas_sklearn/lossctl": r_sk, "floor": fastest_floor},
        "values_agree": all(ok for ok, _ in checks),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows in the file (default 10,000,000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per competitor; the best counts (default 3)")
    ap.add_argument("--formats", default="parquet,csv", help="comma list of parquet, csv (default both)")
    ap.add_argument("--no-grad", action="store_true", help="skip the --grad variants")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT")
    a = ap.parse_args(argv)
    C.header(f"bench_eval: lossctl eval, 4 losses, {a.rows:,} rows, best of {a.repeat}")
    formats = [f.strip() for f in a.formats.split(",") if f.strip()]
    return C.run_cases("bench_eval", [lambda f=f: bench_format(f, a.rows, a.repeat, not a.no_grad) for f in formats],
                       a.json)


if __name__ == "__main__":
    sys.exit(main())
