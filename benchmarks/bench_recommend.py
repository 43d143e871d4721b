"""`lossctl recommend` against `lossctl eval --grad` with the default losses, same file.

    python benchmarks/bench_recommend.py [--rows 10000000] [--repeat 3] [--json OUT]

The regression Parquet file of bench_eval (two float64 columns y, yhat; 0.2 % gross
outliers). Competitors, each in its own fresh process, round robin, best of REPEAT:

  eval --grad       python -m lossctl eval FILE --grad -f json   (the default set: mse, mae,
                    huber, quantile, one pass)
  recommend         python -m lossctl recommend FILE -f json     (the evidence pass, then the
                    empirical check: a second pass evaluating every recommendation and MSE
                    with gradient summaries)
  recommend --no-check   the evidence pass alone

Target (issue 12): recommend ≤ 1.5× eval --grad, in bounded memory (the peak RSS is
printed beside the time, and for a file of half the rows, which must be about the same).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def cmds(path: Path) -> list[C.Competitor]:
    base = [C.PYTHON, "-m", "lossctl"]
    return [
        C.Competitor("eval --grad", base + ["eval", str(path), "--grad", "-f", "json"], "mse, mae, huber, quantile"),
        C.Competitor("recommend", base + ["recommend", str(path), "-f", "json"], "evidence + check pass"),
        C.Competitor("recommend --no-check", base + ["recommend", str(path), "-f", "json", "--no-check"],
                     "evidence pass only"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    C.header(f"bench_recommend: lossctl recommend vs eval --grad, {a.rows:,} rows, best of {a.repeat}")
    path = C.regression_file(a.rows, "parquet")
    ms = C.measure(cmds(path), a.repeat)
    print(C.time_table(ms, "eval --grad"))
    print()
    half = C.regression_file(a.rows // 2, "parquet")
    mh = C.measure(cmds(half)[1:2], 1, verbose=False)
    doc = ms["recommend"].json()
    top = doc["recommendations"][0]
    print(f"Top recommendation: `{top['spec']}`; sampled figures: {', '.join(doc['evidence']['sampled']) or 'none'}.")
    ratio = ms["recommend"].best / ms["eval --grad"].best
    mem_growth = ms["recommend"].peak_mb / mh["recommend"].peak_mb
    print()
    print(C.table(["ratio", "measured", "target", "issue", ""], [
        C.target_line("recommend / eval --grad (time)", ratio, "<=", 1.5, "12"),
        C.target_line(f"peak RSS {a.rows:,} rows / {a.rows // 2:,} rows", mem_growth, "<=", 1.2, "12 (bounded memory)"),
    ], "lrrll"))
    if a.json:
        Path(a.json).write_text(json.dumps({
            "rows": a.rows,
            "best": {k: m.best for k, m in ms.items()},
            "peak_mb": {k: m.peak_mb for k, m in ms.items()},
            "ratio": ratio, "half_rows_peak_mb": mh["recommend"].peak_mb,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
