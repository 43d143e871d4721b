"""Start-up: how long lossctl takes before it does any real work.

    python benchmarks/bench_startup.py [--repeat 10] [--rows 1000]

Times, each in a fresh process, round robin, best of REPEAT (after one warm-up round):

  python -c "import numpy"                    the yardstick
  python -m lossctl --help
  python -m lossctl list -f json
  python -m lossctl eval small.csv -f json    a ROWS-row regression CSV (default 1,000), default losses

and prints each one's ratio to the numpy import against issue 5's targets (--help ≤ 1.5×,
list ≤ 2.5×, eval ≤ 4×). Then it runs `python -X importtime -m lossctl --help` (and the
same for list) and reports whether pandas or pyarrow are imported (issue 2: --help must
import neither), with the slowest imports.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

HEAVY = ("pandas", "pyarrow", "numpy", "rich", "scipy", "sklearn")


def small_csv(rows: int) -> Path:
    return C.regression_file(rows, "csv", quiet=True)


def importtime(args: list[str]) -> list[tuple[str, int, int, int]]:
    """(module, self µs, cumulative µs, depth) for every module `python -X importtime ARGS` imports.

    Python prints a module after the modules it imports, one level deeper each.
    """
    r = C.run_once([C.PYTHON, "-X", "importtime", *args])
    out = []
    for ln in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S.*)$", ln)
        if m:
            out.append((m.group(4).strip(), int(m.group(1)), int(m.group(2)), (len(m.group(3)) - 1) // 2))
    return out


def chain(mods: list[tuple[str, int, int, int]], name: str) -> str:
    """Who imports ``name`` first: "name ← parent ← grandparent …" up to the top level."""
    for i, (m, _, _, d) in enumerate(mods):
        if m == name:
            links = [m]
            for m2, _, _, d2 in mods[i + 1:]:
                if d2 < d:
                    links.append(m2)
                    d = d2
                    if d == 0:
                        break
            return " ← ".join(links)
    return ""


WATCH = ("pandas", "pyarrow", "numpy", "pydantic", "rich", "asyncio")


def report_imports(label: str, args: list[str], top: int) -> dict:
    mods = importtime(args)
    names = {m for m, _, _, _ in mods}
    roots = {m.split(".")[0] for m in names}
    heavy = {h: (h in roots) for h in HEAVY}
    total = sum(s for _, s, _, _ in mods)
    bad = [h for h in ("pandas", "pyarrow") if heavy[h]]
    verdict = "PASS" if not bad else "MISS"
    print(f"`{label}`: {len(names)} modules, {total / 1e3:.0f} ms of import time in all; "
          + ", ".join(f"{h} {'yes' if v else 'no'}" for h, v in heavy.items()))
    if label.endswith("--help"):
        print(f"- imports neither pandas nor pyarrow (issue 2): {verdict}"
              + (f" (imports {', '.join(bad)})" if bad else ""))
    # the top-level packages that cost the most (cumulative time of their first import)
    firsts: dict[str, int] = {}
    for m, _, cum, _ in mods:
        if "." not in m:
            firsts[m] = max(firsts.get(m, 0), cum)
    worst = sorted(firsts.items(), key=lambda kv: -kv[1])[:top]
    print("- slowest top-level imports (cumulative): " + ", ".join(f"{m} {us / 1e3:.1f} ms" for m, us in worst))
    for w in WATCH:
        if w in names:
            print(f"- {w} ({firsts.get(w, 0) / 1e3:.1f} ms) comes in through: {chain(mods, w)}")
    print()
    return {"modules": len(names), "heavy": heavy, "slowest": worst}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=10, help="timed runs per command; the best counts (default 10)")
    ap.add_argument("--rows", type=int, default=1000, help="rows of the small CSV for eval (default 1,000)")
    ap.add_argument("--top", type=int, default=8, help="how many slow imports to list")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT")
    a = ap.parse_args(argv)
    C.header(f"bench_startup: best of {a.repeat}")
    csv = small_csv(a.rows)
    py = C.PYTHON
    comps = [
        C.Competitor("python -c pass", [py, "-c", "pass"], "the interpreter alone (for reference)"),
        C.Competitor("import numpy", [py, "-c", "import numpy"], "the yardstick"),
        C.Competitor("lossctl --help", [py, "-m", "lossctl", "--help"]),
        C.Competitor("lossctl list", [py, "-m", "lossctl", "list", "-f", "json"]),
        C.Competitor(f"lossctl eval ({a.rows:,} rows)", [py, "-m", "lossctl", "eval", str(csv), "-f", "json"],
                     f"{csv.relative_to(C.REPO)}, default losses"),
    ]
    try:
        ms = C.measure(comps, a.repeat)
    except C.BenchError as e:
        print(f"bench_startup: {e}", file=sys.stderr)
        return 1
    print(C.time_table(ms, "import numpy"))
    print()
    base = ms["import numpy"].best
    eval_name = comps[-1].name
    targets = [
        C.target_line("lossctl --help / import numpy", ms["lossctl --help"].best / base, "<=", 1.5, "#5"),
        C.target_line("lossctl list / import numpy", ms["lossctl list"].best / base, "<=", 2.5, "#5"),
        C.target_line(f"{eval_name} / import numpy", ms[eval_name].best / base, "<=", 4, "#5"),
    ]
    print(C.table(["ratio", "measured", "target", "issue", ""], targets, "lrrll"))
    print()
    imports = {
        "help": report_imports("python -X importtime -m lossctl --help", ["-m", "lossctl", "--help"], a.top),
        "list": report_imports("python -X importtime -m lossctl list -f json", ["-m", "lossctl", "list", "-f", "json"],
                               a.top),
        "eval": report_imports(f"python -X importtime -m lossctl eval {csv.name} -f json",
                               ["-m", "lossctl", "eval", str(csv), "-f", "json"], a.top),
    }
    if a.json:
        Path(a.json).write_text(json.dumps({
            "machine": C.machine_info(),
            "times": {n: {"best_s": m.best, "median_s": m.median, "peak_mb": m.peak_mb} for n, m in ms.items()},
            "imports": imports,
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
