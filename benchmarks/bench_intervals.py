"""Bootstrap intervals of several prediction sets, and the cost of --grad for focal and bce.

    python benchmarks/bench_intervals.py [--rows 10000000] [--repeat 3] [--json OUT]

1. Intervals (issue 11, item 2). Data: ROWS rows of y and 8 prediction sets p0…p7 (p0 the
   cached regression file's yhat, the others yhat plus N(0, (0.15k)²) noise: worse models),
   float64 Parquet in 2²⁰-row groups. Competitors, each a fresh process, round robin, best of
   REPEAT after one untimed warm-up round:

     numpy block bootstrap  pyarrow read_table + numpy as a user writes it (_workers.py
                            intervals_numpy): set by set, r = p − y and the sums of r² and |r|
                            over 4,096 contiguous row blocks; one multinomial draw of 1,000
                            replicates; percentile intervals of each set and of each set's
                            delta to p0 (paired: the same replicates)
     lossctl --ci           lossctl eval FILE -t y -p p0 … -p p7 -l mse -l mae --ci 0.95 -f json
     lossctl                the same without --ci (what the intervals cost)

   Target: lossctl --ci no slower than the numpy block bootstrap. The values must agree to
   1e-9; the intervals come from other blocks (hashed rows, not contiguous ones) and another
   draw, so their widths are only checked to agree within 20%.

2. --grad overhead (issue 11, item 5): lossctl eval of ROWS rows of binary labels and
   probabilities with -l focal and -l bce, with and without --grad (fresh processes, as above).
   No competitor: the ratio --grad / value-only is the figure (1.57× and 1.30× before).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import _workers as W  # noqa: E402

SETS = 8
LOSSES = ("mse", "mae")


def preds_file(rows: int) -> Path:
    """y and SETS prediction sets (cached under _data/)."""
    path = C.DATA_DIR / f"preds{SETS}_v{C.GEN_VERSION}_{rows}.parquet"
    if path.exists():
        return path
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    print(f"# generating {path.name} ...", file=sys.stderr, flush=True)
    schema = pa.schema([("y", pa.float64())] + [(f"p{k}", pa.float64()) for k in range(SETS)])

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as w:
            for i, start in enumerate(range(0, rows, C.CHUNK)):
                y, yh = C.gen_chunk(i, min(C.CHUNK, rows - start))
                rng = np.random.default_rng([C.SEED, 11, i])
                cols = {"y": y, "p0": yh}
                for k in range(1, SETS):
                    cols[f"p{k}"] = yh + rng.normal(0.0, 0.15 * k, y.size)
                w.write_table(pa.table(cols, schema=schema), row_group_size=C.ROW_GROUP)

    C._atomic(path, write)
    return path


def binary_file(rows: int) -> Path:
    """Binary labels y (30% positive) and probabilities p of a fair model (cached under _data/)."""
    path = C.DATA_DIR / f"binary_v{C.GEN_VERSION}_{rows}.parquet"
    if path.exists():
        return path
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    print(f"# generating {path.name} ...", file=sys.stderr, flush=True)
    schema = pa.schema([("y", pa.float64()), ("p", pa.float64())])

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as w:
            for i, start in enumerate(range(0, rows, C.CHUNK)):
                m = min(C.CHUNK, rows - start)
                rng = np.random.default_rng([C.SEED, 12, i])
                y = (rng.random(m) < 0.3).astype(float)
                z = (2 * y - 1) * 1.2 + rng.normal(0.0, 1.5, m)
                w.write_table(pa.table({"y": y, "p": 1 / (1 + np.exp(-z))}, schema=schema),
                              row_group_size=C.ROW_GROUP)

    C._atomic(path, write)
    return path


def check_values(lc: dict, ref: dict) -> tuple[bool, list[str]]:
    """lossctl's values against the numpy competitor's (1e-9), interval widths within 20%."""
    lines, ok = [], True
    preds = ref["preds"]
    worst_v, worst_w, worst_d = 0.0, 0.0, 0.0
    for r in lc["results"]:
        k = preds.index(r["pred"])
        worst_v = max(worst_v, C.rel_diff(r["value"], ref["values"][r["loss"]][k]))
        lo, hi = ref["ci"][r["loss"]][k]
        worst_w = max(worst_w, C.rel_diff(r["ci"][1] - r["ci"][0], hi - lo))
    for c in lc["comparisons"]:
        k = preds.index(c["pred"]) - 1
        lo, hi = ref["delta_ci"][c["loss"]][k]
        worst_d = max(worst_d, C.rel_diff(c["ci"][1] - c["ci"][0], hi - lo))
    ok = worst_v <= 1e-9 and worst_w <= 0.2 and worst_d <= 0.2
    lines.append(f"- lossctl values vs numpy: max relative difference {worst_v:.1e} (must be ≤ 1e-9)")
    lines.append(f"- interval widths (hashed blocks vs contiguous ones, other draws): max relative difference "
                 f"{worst_w:.1%} for the sets, {worst_d:.1%} for the paired deltas (must be ≤ 20%)")
    return ok, lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows (default 10,000,000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per competitor; the best counts (default 3)")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT")
    a = ap.parse_args(argv)
    C.header(f"bench_intervals: {SETS} prediction sets with --ci 0.95, and --grad of focal and bce, "
             f"{a.rows:,} rows, best of {a.repeat}")
    lc = [C.PYTHON, "-m", "lossctl", "eval"]
    path = preds_file(a.rows)
    binary = binary_file(a.rows)
    for p in (path, binary):
        C.warm(p)
    sets = [x for k in range(SETS) for x in ("-p", f"p{k}")]
    losses = [x for loss in LOSSES for x in ("-l", loss)]
    comps = [
        C.Competitor("numpy block bootstrap", W.cmd("intervals_numpy", str(path)),
                     "read_table + numpy: 4,096 blocks, 1,000 replicates, paired deltas"),
        C.Competitor("lossctl --ci", lc + [str(path), "-t", "y", *sets, *losses, "--ci", "0.95", "-f", "json"],
                     f"lossctl eval -p p0 … -p p{SETS - 1} -l mse -l mae --ci 0.95"),
        C.Competitor("lossctl", lc + [str(path), "-t", "y", *sets, *losses, "-f", "json"], "the same without --ci"),
    ]
    grads = []
    for loss in ("focal", "bce"):
        base = lc + [str(binary), "-t", "y", "-p", "p", "-l", loss, "-f", "json"]
        grads += [C.Competitor(f"{loss}", base, f"lossctl eval -l {loss}"),
                  C.Competitor(f"{loss} --grad", base + ["--grad"], "the same with --grad")]
    print(f"files: {path.name} {path.stat().st_size / 1e6:,.0f} MB; {binary.name} {binary.stat().st_size / 1e6:,.0f} MB\n")
    try:
        ms = C.measure(comps, a.repeat)
        gs = C.measure(grads, a.repeat)
    except C.BenchError as e:
        print(f"bench_intervals: {e}", file=sys.stderr)
        return 1

    print(f"### {SETS} prediction sets, mse and mae, --ci 0.95 (1,000 replicates)\n")
    print(C.time_table(ms, "numpy block bootstrap"))
    print()
    print("Inside the numpy competitor's process (last run): "
          + ", ".join(f"{k} {C.fmt_time(v)}" for k, v in ms["numpy block bootstrap"].json()["t"].items()) + "\n")
    r_ci = ms["lossctl --ci"].best / ms["numpy block bootstrap"].best
    r_cost = ms["lossctl --ci"].best / ms["lossctl"].best
    print(C.table(["ratio", "measured", "target", "issue", ""], [
        C.target_line("lossctl --ci / numpy block bootstrap", r_ci, "<=", 1.0, "11 #2"),
        ["lossctl --ci / lossctl", C.fmt_ratio(r_cost), "(no target)", "", ""],
    ], "lrrll"))
    print()
    ok, lines = check_values(ms["lossctl --ci"].json(), ms["numpy block bootstrap"].json())
    print("\n".join(lines))
    plain = {(r["loss"], r["pred"]): r["value"] for r in ms["lossctl"].json()["results"]}
    same = all(plain[(r["loss"], r["pred"])] == r["value"] for r in ms["lossctl --ci"].json()["results"])
    print(f"- lossctl values with --ci identical to those without: {'yes' if same else 'NO'}")
    ok &= same
    print()

    print("### --grad overhead: binary labels and probabilities, one loss\n")
    print(C.time_table(gs, None))
    print()
    rows = []
    ratios = {}
    for loss, before in (("focal", 1.57), ("bce", 1.30)):
        ratios[loss] = gs[f"{loss} --grad"].best / gs[loss].best
        rows.append([f"{loss} --grad / {loss}", C.fmt_ratio(ratios[loss]), f"{before:.2f}× before", "11 #5", ""])
        v, g = gs[loss].json()["results"][0]["value"], gs[f"{loss} --grad"].json()["results"][0]["value"]
        if C.rel_diff(v, g) > 1e-12:
            print(f"- {loss}: the value with --grad ({g!r}) differs from the value without ({v!r})")
            ok = False
    print(C.table(["ratio", "measured", "reference", "issue", ""], rows, "lrrll"))
    print()
    if a.json:
        Path(a.json).write_text(json.dumps({
            "machine": C.machine_info(), "rows": a.rows,
            "competitors": {n: {"best_s": m.best, "median_s": m.median, "walls_s": m.walls, "peak_mb": m.peak_mb}
                            for n, m in {**ms, **gs}.items()},
            "ratios": {"lossctl_ci/numpy": r_ci, "lossctl_ci/lossctl": r_cost,
                       **{f"{k}_grad/{k}": v for k, v in ratios.items()}},
        }, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
