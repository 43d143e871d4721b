"""An interleaved A/B of two commits: the end-to-end and kernel cases, before and after.

    python benchmarks/bench_ab.py --before REV [--after REV] [--repeat 5] [--rows 10000000] [--json OUT]

Each revision is checked out in a temporary git worktree and run from it (PYTHONPATH, and
``python -P`` so that the working directory's lossctl is not the one imported),
on the same cached data, in the same sitting. End-to-end cases are fresh `lossctl eval`
processes, run round-robin (A B A B …, after one untimed round each); the best of
``--repeat`` counts. Kernel cases time ``lossctl.evaluate`` in a worker process per
revision (best of ``--repeat`` calls and 0.2 s per cell), the workers themselves
alternating A B A B ``--rounds`` times, the best cell over the rounds counting. Every
case prints before, after and after/before; a ratio above 1.05 is flagged. The values
of every end-to-end case must agree between the revisions to 1e-12.

``--after`` defaults to the working tree (uncommitted changes included).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import bench_intervals  # noqa: E402
import bench_slices  # noqa: E402

SLOWER = 1.05

KERNEL_WORKER = r"""
import json, sys, time
import numpy as np
import lossctl
n = int(sys.argv[1]); repeat = int(sys.argv[2])
rng = np.random.default_rng(7)
y = rng.normal(size=n); p = y + rng.normal(scale=0.5, size=n)
yb = (rng.random(n) < 0.3).astype(float); pb = np.clip(rng.random(n), 1e-6, 1 - 1e-6)
yc = rng.integers(0, 10, n // 4); zc = rng.normal(size=(n // 4, 10))
cases = {"mse": (y, p), "mae": (y, p), "huber": (y, p), "quantile": (y, p), "log_cosh": (y, p),
         "bce": (yb, pb), "focal": (yb, pb), "cross_entropy:logits=true": (yc, zc)}
out = {}
for name, (a, b) in cases.items():
    for grad in (False, True):
        lossctl.evaluate(a, b, name, grad=grad)
        best, spent, k = float("inf"), 0.0, 0
        while k < repeat or spent < 0.2:
            t0 = time.perf_counter(); lossctl.evaluate(a, b, name, grad=grad); dt = time.perf_counter() - t0
            best, spent, k = min(best, dt), spent + dt, k + 1
        out[f"{name}{' --grad' if grad else ''}"] = best
print(json.dumps(out))
"""


def worktree(rev: str | None, into: Path) -> Path:
    if rev is None:
        return C.REPO
    path = into / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(C.REPO), "worktree", "add", "--detach", "-f", str(path), rev],
                   check=True, capture_output=True)
    return path


def e2e_cases(rows: int) -> list[tuple[str, list[str]]]:
    pq = str(C.regression_file(rows, "parquet"))
    csv = str(C.regression_file(rows, "csv"))
    four = ["-l", "mse", "-l", "mae", "-l", "huber", "-l", "quantile"]
    sl10 = str(bench_slices.slices_file(rows, 10))
    sl1k = str(bench_slices.slices_file(rows // 10, 1000))
    preds = str(bench_intervals.preds_file(rows // 2))
    return [
        ("parquet 4 losses", [pq, *four]),
        ("parquet 4 losses --grad", [pq, *four, "--grad"]),
        ("csv 4 losses", [csv, *four]),
        ("parquet mse --ci 0.95", [pq, "-l", "mse", "--ci", "0.95"]),
        ("--by 10 groups", [sl10, "-t", "y", "-p", "yhat", "-l", "mse", "-l", "mae", "--by", "g"]),
        ("--by 1,000 groups (1/10 rows)", [sl1k, "-t", "y", "-p", "yhat", "-l", "mse", "-l", "mae", "--by", "g"]),
        ("8 sets --ci (1/2 rows)", [preds, "-t", "y", *(a for i in range(8) for a in ("-p", f"p{i}")), "-l", "mse",
                                    "--ci", "0.95"]),
    ]


def values(doc: dict) -> list[float]:
    out = [r["value"] for r in doc.get("results", [])]
    for g in doc.get("groups") or []:
        out += [r["value"] for r in g["results"]]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the revision before (e.g. a commit, main~3)")
    ap.add_argument("--after", help="the revision after (default: the working tree)")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--kernel-rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="kernel worker rounds per revision (default 3)")
    ap.add_argument("--only", choices=("e2e", "kernels"))
    ap.add_argument("--json", metavar="OUT")
    a = ap.parse_args(argv)
    if sys.version_info < (3, 11):
        raise SystemExit("bench_ab.py needs Python 3.11 or later (python -P)")
    rows_out: list[tuple[str, float, float]] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="lossctl-ab-") as tmp:
        trees = {"before": worktree(a.before, Path(tmp)), "after": worktree(a.after, Path(tmp))}
        try:
            if a.only != "kernels":
                for name, args in e2e_cases(a.rows):
                    comps = [C.Competitor(f"{side}: {name}", [C.PYTHON, "-P", "-m", "lossctl", "eval", *args, "-f", "json", "-q"],
                                          env={"PYTHONPATH": str(tree)}) for side, tree in trees.items()]
                    ms = C.measure(comps, a.repeat, verbose=False)
                    b, f = (ms[c.name] for c in comps)
                    vb, vf = values(b.json()), values(f.json())
                    if len(vb) != len(vf) or any(C.rel_diff(x, y) > 1e-12 for x, y in zip(vb, vf)):
                        print(f"{name}: values differ between the revisions", file=sys.stderr)
                        ok = False
                    rows_out.append((name, b.best, f.best))
                    print(f"  {name}: {b.best:.3f} s → {f.best:.3f} s ({f.best / b.best:.3f}×)", file=sys.stderr)
            if a.only != "e2e":
                best: dict[str, dict[str, float]] = {"before": {}, "after": {}}
                for _ in range(a.rounds):
                    for side, tree in trees.items():
                        p = subprocess.run([C.PYTHON, "-P", "-c", KERNEL_WORKER, str(a.kernel_rows), str(a.repeat)],
                                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)})
                        if p.returncode:
                            raise C.BenchError(p.stderr)
                        for k, v in json.loads(p.stdout).items():
                            best[side][k] = min(v, best[side].get(k, float("inf")))
                for k in best["before"]:
                    rows_out.append((f"evaluate {k} ({a.kernel_rows:,} rows)", best["before"][k], best["after"][k]))
        finally:
            for side, tree in trees.items():
                if tree != C.REPO:
                    subprocess.run(["git", "-C", str(C.REPO), "worktree", "remove", "--force", str(tree)],
                                   capture_output=True)
    slower = [r for r in rows_out if r[2] / r[1] > SLOWER]
    print(C.table(["case", "before (s)", "after (s)", "after/before"],
                  [(n, f"{b:.4f}", f"{f:.4f}", f"{f / b:.3f}" + (" !" if f / b > SLOWER else "")) for n, b, f in rows_out]))
    print(f"\n{len(slower)} of {len(rows_out)} cases slower by more than {SLOWER - 1:.0%}"
          f" (before {a.before}, after {a.after or 'the working tree'}; load {os.getloadavg()[0]:.2f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump([{"case": n, "before": b, "after": x} for n, b, x in rows_out], f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
