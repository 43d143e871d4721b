"""The CI gate: `lossctl check` of a candidate against a baseline vs `lossctl eval` of both.

    python benchmarks/bench_check.py [--rows 10000000] [--repeat 3] [--json OUT]

Data: ROWS rows of y and a candidate's yhat (the cached file of _common.py) and a
baseline's predictions (the candidate's plus noise N(0, 0.5²): a worse model), as
  cand.parquet  y, yhat          base.parquet  y, yhat (the baseline's, same names)
  both.parquet  y, yhat, yhat_base
Every competitor runs in its own fresh process, round robin, best of REPEAT (after one
untimed warm-up round), with --ci 0.95 (1,000 paired resamples) and two losses (mse, mae):

  eval 2 preds        lossctl eval both.parquet -l mse -l mae -p yhat_base -p yhat --ci 0.95
  check column        lossctl check both.parquet -p yhat --baseline-pred yhat_base
                        --assert "mse <= baseline" --assert "mae <= baseline * 1.01" --ci 0.95
  check file          lossctl check cand.parquet --baseline base.parquet (the same asserts;
                        the baseline's y is read too and compared with DATA's row by row)

Target (issue 13): check ≤ 1.3× eval of the two prediction sets, each file read once.
The script also counts, in this process, the rows that a check reads from each file.
The deltas and intervals of check and eval must agree (same paired resamples).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

ASSERTS = ["--assert", "mse <= baseline", "--assert", "mae <= baseline * 1.01"]


def files(rows: int) -> tuple[Path, Path, Path]:
    """cand (the cached regression file), base and both: written once, cached under _data/."""
    cand = C.regression_file(rows, "parquet")
    base = C.DATA_DIR / f"check_base_v{C.GEN_VERSION}.2_{rows}.parquet"
    both = C.DATA_DIR / f"check_both_v{C.GEN_VERSION}.2_{rows}.parquet"
    if base.exists() and both.exists():
        return cand, base, both
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    print(f"# generating the baseline files ({rows:,} rows) ...", file=sys.stderr, flush=True)
    src = pq.ParquetFile(cand)

    def write(path: Path, make) -> None:
        def w(tmp: Path) -> None:
            writer = None
            for i in range(src.num_row_groups):
                t = make(i, src.read_row_group(i))
                writer = writer or pq.ParquetWriter(tmp, t.schema)
                writer.write_table(t, row_group_size=C.ROW_GROUP)
            writer.close()
        C._atomic(path, w)

    def base_pred(i: int, t: pa.Table) -> np.ndarray:  # the candidate's errors and more noise: a worse model
        yhat = t.column("yhat").to_numpy()
        return yhat + np.random.default_rng([C.SEED, 13, i]).normal(0.0, 0.5, len(yhat))

    write(base, lambda i, t: pa.table({"y": t.column("y"), "yhat": base_pred(i, t)}))
    write(both, lambda i, t: pa.table({"y": t.column("y"), "yhat": t.column("yhat"), "yhat_base": base_pred(i, t)}))
    return cand, base, both


def rows_read(cmd_args: list[str]) -> dict[str, int]:
    """Run a check in this process and count the rows read from each file (a full pass
    per file is ROWS rows; task inference peeks at the first 4,096 of one column)."""
    from lossctl import check, io

    counts: dict[str, int] = {}
    original = io.iter_batches

    def counting(src, *a, **k):
        for rb in original(src, *a, **k):
            counts[src.name] = counts.get(src.name, 0) + rb.num_rows
            yield rb

    io.iter_batches = counting
    try:
        data, flags, asserts = cmd_args[0], {}, []
        it = iter(cmd_args[1:])
        for a in it:
            v = next(it)
            if a == "--assert":
                asserts.append(v)
            else:
                flags[{"-p": "pred", "--baseline-pred": "baseline_pred", "--baseline": "baseline", "--ci": "ci"}[a]] = \
                    float(v) if a == "--ci" else v
        check.run(check.settings(None, {"data": data, **flags}, asserts))
    finally:
        io.iter_batches = original
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows in each file (default 10,000,000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per competitor; the best counts (default 3)")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT")
    a = ap.parse_args(argv)
    C.header(f"bench_check: lossctl check vs eval of two prediction sets, {a.rows:,} rows, --ci 0.95, best of {a.repeat}")
    cand, base, both = files(a.rows)
    for p in (cand, base, both):
        C.warm(p)
    lc = [C.PYTHON, "-m", "lossctl"]
    comps = [
        C.Competitor("eval 2 preds", lc + ["eval", str(both), "-l", "mse", "-l", "mae", "-p", "yhat_base", "-p", "yhat",
                                           "--ci", "0.95", "-f", "json"], "eval, one file, two -p"),
        C.Competitor("check column", lc + ["check", str(both), "-p", "yhat", "--baseline-pred", "yhat_base", *ASSERTS,
                                           "--ci", "0.95", "-f", "json"], "check --baseline-pred, one file"),
        C.Competitor("check file", lc + ["check", str(cand), "--baseline", str(base), *ASSERTS, "--ci", "0.95",
                                         "-f", "json"], "check --baseline FILE, two files"),
    ]
    print(f"files: {cand.name} {cand.stat().st_size / 1e6:,.0f} MB, {base.name} {base.stat().st_size / 1e6:,.0f} MB, "
          f"{both.name} {both.stat().st_size / 1e6:,.0f} MB\n")
    try:
        ms = C.measure(comps, a.repeat)
    except C.BenchError as e:
        print(f"bench_check: {e}", file=sys.stderr)
        return 1
    print(C.time_table(ms, "eval 2 preds"))
    print()
    ev = ms["eval 2 preds"].best
    r_col, r_file = ms["check column"].best / ev, ms["check file"].best / ev
    print(C.table(["ratio", "measured", "target", "issue", ""], [
        C.target_line("check column / eval 2 preds", r_col, "<=", 1.3, "#13"),
        C.target_line("check file / eval 2 preds", r_file, "<=", 1.3, "#13"),
    ], "lrrll"))
    print()

    # the same numbers: check's deltas and intervals are eval's comparisons
    evd = ms["eval 2 preds"].json()
    ok = True
    for name in ("check column", "check file"):
        doc = ms[name].json()
        for c in doc["checks"]:
            cmp_ = next(x for x in evd["comparisons"] if x["loss"] == c["loss"])
            d_delta = C.rel_diff(c["delta"], cmp_["delta"])
            d_ci = max(C.rel_diff(x, y) for x, y in zip(c["delta_ci"], cmp_["ci"]))
            good = d_delta <= 1e-9 and d_ci <= 1e-9
            ok &= good
            print(f"- {name}: {c['check']}: {c['verdict']}, delta {c['delta']:+.6g} (eval {cmp_['delta']:+.6g}, "
                  f"rel. diff {d_delta:.1e}), delta CI rel. diff {d_ci:.1e}, mdd {c['mdd']:.3g}")

    counts = rows_read([str(cand), "--baseline", str(base), *ASSERTS, "--ci", "0.95"])
    print()
    for f, n in counts.items():
        print(f"- rows read from {Path(f).name}: {n:,} ({n / a.rows:.4f} × the file)")
    once = all(n <= a.rows + 4096 for n in counts.values())
    print(f"- each file read once: {'yes' if once else 'NO'}")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "machine": C.machine_info(), "rows": a.rows,
            "competitors": {n: {"best_s": m.best, "median_s": m.median, "walls_s": m.walls, "peak_mb": m.peak_mb}
                            for n, m in ms.items()},
            "ratios": {"check_column/eval": r_col, "check_file/eval": r_file}, "rows_read": counts,
        }, indent=1))
    return 0 if ok and once else 1


if __name__ == "__main__":
    sys.exit(main())
