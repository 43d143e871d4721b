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

--dataset FILES instead compares one Parquet file of --rows rows with the same rows split
into FILES files (a directory, read as one dataset): issue 9 wants the directory within
1.1× of the single file's peak (it needed 1.35× while pyarrow.dataset was imported).
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
    ap.add_argument("--dataset", type=int, metavar="FILES",
                    help="compare one Parquet file of --rows rows with a directory of FILES files of the same rows")
    a = ap.parse_args(argv)
    if a.dataset:
        return dataset_case(a.rows, a.dataset, a.repeat)
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


DATASET_TARGET = 1.1


def dataset_dir(rows: int, files: int) -> Path:
    """The rows of ``regression_file(rows)`` split into ``files`` Parquet files in one directory (cached)."""
    one = C.regression_file(rows, "parquet")
    d = C.DATA_DIR / f"reg_v{C.GEN_VERSION}_{rows}_in_{files}"
    if (d / "_done").exists():
        return d
    import pyarrow.parquet as pq

    d.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(one)
    step = -(-rows // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), d / f"part-{i:03d}.parquet", row_group_size=C.ROW_GROUP)
    (d / "_done").write_text("")
    return d


def dataset_case(rows: int, files: int, repeat: int) -> int:
    C.header(f"bench_memory --dataset: {rows:,} rows in one Parquet file vs in {files} files")
    one, many = C.regression_file(rows, "parquet"), dataset_dir(rows, files)
    C.warm(one)
    for f in many.glob("*.parquet"):
        C.warm(f)
    comps = [C.Competitor("one file", lossctl_cmd(one)), C.Competitor(f"{files} files (directory)", lossctl_cmd(many))]
    try:
        ms = C.measure(comps, repeat, warmup=0, verbose=False)
    except C.BenchError as e:
        print(f"bench_memory: {e}", file=sys.stderr)
        return 1
    peaks = [ms[c.name].peak_mb for c in comps]
    print(C.table(["what", "peak RSS", "best time"],
                  [[c.name, f"{ms[c.name].peak_mb:,.0f} MB", C.fmt_time(ms[c.name].best)] for c in comps], "lrr"))
    print()
    print(C.table(["ratio", "measured", "target", "issue", ""],
                  [C.target_line("directory peak / one file's", peaks[1] / peaks[0], "<=", DATASET_TARGET, "9 #13")],
                  "lrrll"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
