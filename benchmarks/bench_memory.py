"""Memory growth: does `lossctl eval` stream, whatever the file's size?

    python benchmarks/bench_memory.py [--rows 4000000] [--factors 1,8] [--sizes 4e6,8e6,16e6,32e6]
                                      [--formats parquet,csv] [--repeat 1] [--floor]

Peak RSS (and wall time) of `python -m lossctl eval FILE -l mse -l mae -l huber -l quantile
-f json`, and of the same with --grad, on regression files of several sizes (Parquet with
row groups of 2**20 rows, and CSV). By default ROWS and 8×ROWS: 4M and 32M rows (32M rows
× 2 float64 = 512 MB of numbers; the CSV is about 1.2 GB). Prints the ratio of the largest
file's peak to the smallest's against issue 5's target (32M rows ≤ ~1.1× of 4M).

--floor adds the in-memory floor (read_table + numpy, Parquet only) for contrast: it grows
with the file.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import _workers as W  # noqa: E402
from bench_eval import lossctl_cmd  # noqa: E402

TARGET = 1.1


def parse_sizes(a) -> list[int]:
    if a.sizes:
        return sorted({int(float(s)) for s in a.sizes.split(",") if s.strip()})
    return sorted({int(a.rows * float(f)) for f in a.factors.split(",") if f.strip()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=4_000_000, help="the smallest size (default 4,000,000)")
    ap.add_argument("--factors", default="1,8", help="sizes as multiples of --rows (default 1,8: 4M and 32M)")
    ap.add_argument("--sizes", help="explicit comma list of row counts instead, e.g. 4e6,8e6,16e6,32e6")
    ap.add_argument("--formats", default="parquet,csv", help="comma list of parquet, csv (default both)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell; the best time and the largest peak count")
    ap.add_argument("--floor", action="store_true", help="also measure the in-memory floor on Parquet")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT")
    a = ap.parse_args(argv)
    sizes = parse_sizes(a)
    formats = [f.strip() for f in a.formats.split(",") if f.strip()]
    C.header(f"bench_memory: peak RSS of lossctl eval (4 losses) on {', '.join(f'{n:,}' for n in sizes)} rows")

    results: dict[str, dict[int, dict[str, float]]] = {}
    table_rows = []
    for fmt in formats:
        variants = [("lossctl", False), ("lossctl --grad", True)]
        for n in sizes:
            path = C.regression_file(n, fmt)
            C.warm(path)
            comps = [C.Competitor(name, lossctl_cmd(path, grad)) for name, grad in variants]
            if a.floor and fmt == "parquet":
                comps.append(C.Competitor("floor", W.cmd("floor_parquet", path)))
            try:
                ms = C.measure(comps, a.repeat, warmup=0, verbose=False)
            except C.BenchError as e:
                print(f"bench_memory: {e}", file=sys.stderr)
                return 1
            for name, m in ms.items():
                results.setdefault(f"{fmt} {name}", {})[n] = {"peak_mb": m.peak_mb, "best_s": m.best}
            print(f"# {fmt} {n:,} rows done", file=sys.stderr, flush=True)

    lo, hi = sizes[0], sizes[-1]
    targets = []
    for key, by_n in results.items():
        row = [key] + [f"{by_n[n]['peak_mb']:,.0f} MB / {C.fmt_time(by_n[n]['best_s'])}" for n in sizes]
        ratio = by_n[hi]["peak_mb"] / by_n[lo]["peak_mb"] if len(sizes) > 1 else None
        row.append(C.fmt_ratio(ratio))
        table_rows.append(row)
        if ratio is not None and "floor" not in key:
            targets.append(C.target_line(f"{key}: peak {hi:,} / {lo:,} rows", ratio, "<=", TARGET, "#5"))
    print(C.table(["what"] + [f"{n:,} rows" for n in sizes] + [f"peak {hi // 10**6}M / {lo // 10**6}M"
                                                                if lo >= 10**6 else "peak largest / smallest"],
                  table_rows, "l" + "r" * (len(sizes) + 1)))
    print()
    print("Each cell: peak RSS / wall time of one fresh process (best time, largest peak of --repeat runs).\n")
    if targets:
        print(C.table(["ratio", "measured", "target", "issue", ""], targets, "lrrll"))
        print()
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": C.machine_info(), "sizes": sizes,
                                            "results": {k: {str(n): v for n, v in d.items()} for k, d in results.items()}},
                                           indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
