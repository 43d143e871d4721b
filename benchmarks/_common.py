"""Shared helpers for lossctl's benchmarks: data, subprocess timing, tables.

Only the standard library is imported at module level, so a worker process that
imports this module pays for nothing it does not use. numpy and pyarrow are
imported inside the functions that make data.

Data: ``regression_file(rows, "parquet" | "csv")`` returns a cached file under
``benchmarks/_data/`` (git-ignored) with two float64 columns ``y`` and ``yhat``.
Rows come in chunks of 2**20 from ``numpy.random.default_rng([SEED, chunk])``, so a
file of N rows is a prefix of every larger one. Parquet row groups are 2**20 rows.

Timing: every competitor runs in its own fresh subprocess; ``measure`` interleaves
the competitors round-robin (A B C A B C ...) and keeps the best wall time of
``repeat`` runs. Peak memory is the child's ``ru_maxrss`` from ``os.wait4``, read by
a bare launcher process (see LAUNCHER): per process, unlike
``getrusage(RUSAGE_CHILDREN)``, which is a maximum over every child ever waited for.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
DATA_DIR = BENCH / "_data"
PYTHON = sys.executable

SEED = 20_240_601
GEN_VERSION = 1  # bump when the generator changes: cached files are named after it
CHUNK = 1 << 20
ROW_GROUP = 1 << 20
OUTLIER_SHARE = 0.002  # 0.2 % of rows get a gross error

LOSSES = ("mse", "mae", "huber", "quantile")
HUBER_DELTA = 1.0
TAU = 0.5


# ------------------------------------------------------------------ data


def gen_chunk(index: int, n: int):
    """Rows of chunk ``index`` (at most CHUNK of them): y, yhat float64 with a few outliers."""
    import numpy as np

    rng = np.random.default_rng([SEED, index])
    y = rng.normal(3.0, 2.0, CHUNK)[:n]
    noise = rng.normal(0.0, 0.8, CHUNK)[:n]
    out = rng.random(CHUNK)[:n] < OUTLIER_SHARE
    gross = rng.normal(0.0, 25.0, CHUNK)[:n]
    noise[out] += gross[out]
    return y, y + noise


def gen_arrays(rows: int):
    """The first ``rows`` rows as two float64 arrays."""
    import numpy as np

    ys, yhs = [], []
    for i, start in enumerate(range(0, rows, CHUNK)):
        y, yh = gen_chunk(i, min(CHUNK, rows - start))
        ys.append(y)
        yhs.append(yh)
    return np.concatenate(ys), np.concatenate(yhs)


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def regression_file(rows: int, fmt: str = "parquet", *, quiet: bool = False) -> Path:
    """A cached regression file of ``rows`` rows (columns y, yhat) in ``fmt`` (parquet or csv)."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be parquet or csv, not {fmt!r}")
    path = DATA_DIR / f"reg_v{GEN_VERSION}_{rows}.{fmt}"
    if path.exists():
        return path
    if not quiet:
        print(f"# generating {path.relative_to(REPO)} ({rows:,} rows) ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    import pyarrow as pa

    schema = pa.schema([("y", pa.float64()), ("yhat", pa.float64())])

    def chunks():
        for i, start in enumerate(range(0, rows, CHUNK)):
            y, yh = gen_chunk(i, min(CHUNK, rows - start))
            yield pa.table({"y": y, "yhat": yh}, schema=schema)

    def write_parquet(tmp: Path) -> None:
        import pyarrow.parquet as pq

        with pq.ParquetWriter(tmp, schema) as w:  # snappy, like pandas' and pyarrow's default
            for t in chunks():
                w.write_table(t, row_group_size=ROW_GROUP)

    def write_csv(tmp: Path) -> None:
        import pyarrow.csv as pacsv

        with open(tmp, "wb") as f:
            f.write(b"y,yhat\n")  # an unquoted header, as pandas' to_csv writes it
            opts = pacsv.WriteOptions(include_header=False)
            with pacsv.CSVWriter(f, schema, write_options=opts) as w:
                for t in chunks():
                    w.write_table(t)

    _atomic(path, write_parquet if fmt == "parquet" else write_csv)
    if not quiet:
        mb = path.stat().st_size / 1e6
        print(f"#   {mb:,.0f} MB in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return path


def warm(path: Path | str) -> None:
    """Read a file once so that every competitor finds it in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


# ------------------------------------------------------------------ subprocess timing


@dataclass
class Run:
    wall: float  # seconds, fork to exit
    peak_mb: float  # the child's peak resident set size, 10^6 bytes
    rc: int
    stdout: str
    stderr: str


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for every child: the work tree's lossctl first on sys.path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("PYTHONSTARTUP", None)
    # Compiled bytecode, as an installed package has it: with PYTHONDONTWRITEBYTECODE set
    # (as it is on the project's machines) every run would recompile lossctl's sources,
    # about 0.1 s. The cache lives under _data/, so nothing is written into the package.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(DATA_DIR / "pycache")
    env.setdefault("NO_COLOR", "1")
    if extra:
        env.update(extra)
    return env


# A launcher that forks and execs the command and reports wall time and the peak
# RSS from os.wait4. Why not wait4 on our own child: Linux carries the RSS high-water
# mark of the pre-exec image into ru_maxrss, so a child forked (or vforked) from this
# process would report at least this process's own RSS (hundreds of MB once pandas
# and the data are loaded). The launcher is a bare interpreter (-S -I, about 9 MB),
# and it times from fork to exit, so its own start-up is not counted.
LAUNCHER = r"""
import os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(out, "w") as f:
    f.write("%r %d %d" % (wall, ru.ru_maxrss, os.waitstatus_to_exitcode(status)))
"""


def run_once(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | str = REPO,
             timeout: float | None = None) -> Run:
    """Run ``cmd`` in a fresh process; return its wall time, peak RSS and output."""
    env = child_env() if env is None else env
    fd, res = tempfile.mkstemp(prefix="lossctl-bench-", suffix=".rusage")
    os.close(fd)
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            if hasattr(os, "fork") and hasattr(os, "wait4"):
                launcher = [sys.executable, "-S", "-I", "-c", LAUNCHER, res]
                p = subprocess.Popen(launcher + list(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                     cwd=cwd, env=env)
                try:
                    rc = p.wait(timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    raise BenchError(f"timed out after {timeout} s: {' '.join(cmd)}") from None
                if rc != 0:
                    raise BenchError(f"the launcher failed (exit {rc}) on: {' '.join(cmd)}")
                wall_s, rss_kb, code_s = Path(res).read_text().split()
                wall, maxrss_kb, code = float(wall_s), int(rss_kb), int(code_s)
            else:  # pragma: no cover - not Linux: RUSAGE_CHILDREN is a max over every child
                import resource

                t0 = time.perf_counter()
                p = subprocess.Popen(list(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
                code = p.wait(timeout)
                wall = time.perf_counter() - t0
                maxrss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                if sys.platform == "darwin":
                    maxrss_kb /= 1024
            out.seek(0)
            err.seek(0)
            return Run(wall, maxrss_kb * 1024 / 1e6, code,
                       out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"))
    finally:
        os.unlink(res)


@dataclass
class Competitor:
    name: str
    cmd: list[str]
    note: str = ""
    env: dict[str, str] | None = None


@dataclass
class Measurement:
    name: str
    walls: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)
    last: Run | None = None
    note: str = ""

    @property
    def best(self) -> float:
        return min(self.walls)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def peak_mb(self) -> float:
        return max(self.peaks)

    def json(self) -> Any:
        assert self.last is not None
        return json.loads(self.last.stdout)


class BenchError(RuntimeError):
    pass


def measure(competitors: Sequence[Competitor], repeat: int = 3, *, warmup: int = 1,
            verbose: bool = True) -> dict[str, Measurement]:
    """Best-of-``repeat`` wall time and peak RSS of each competitor, run round-robin.

    ``warmup`` untimed rounds come first (page cache, .pyc files). A competitor that
    exits non-zero stops the benchmark with its stderr.
    """
    res = {c.name: Measurement(c.name, note=c.note) for c in competitors}
    for rnd in range(warmup + repeat):
        for c in competitors:
            r = run_once(c.cmd, env=child_env(c.env))
            if r.rc != 0:
                raise BenchError(f"{c.name} failed (exit {r.rc}): {' '.join(c.cmd)}\n{r.stderr.strip()}")
            if rnd >= warmup:
                m = res[c.name]
                m.walls.append(r.wall)
                m.peaks.append(r.peak_mb)
                m.last = r
        if verbose:
            tag = "warm-up" if rnd < warmup else f"round {rnd - warmup + 1}/{repeat}"
            print(f"# {tag} done", file=sys.stderr, flush=True)
    return res


# ------------------------------------------------------------------ in-process timing


def best_of(fn: Callable[[], Any], repeat: int = 5, *, min_time: float = 0.0) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls of ``fn`` (at least ``min_time`` s in total); and its last result."""
    import gc

    best = float("inf")
    out = None
    spent = 0.0
    runs = 0
    gc_was = gc.isenabled()
    gc.disable()
    try:
        while runs < repeat or spent < min_time:
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
            best = min(best, dt)
            spent += dt
            runs += 1
    finally:
        if gc_was:
            gc.enable()
    return best, out


# ------------------------------------------------------------------ printing


def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.0f} ms" if s >= 0.1 else f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A plain-text table (also valid Markdown): ``align`` is one of l/r per column."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or ("l" + "r" * (len(headers) - 1))

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def time_table(ms: dict[str, Measurement], floor: str | None, order: Sequence[str] | None = None) -> str:
    """Competitors with best and median time, ratio to ``floor`` and peak memory."""
    rows = []
    base = ms[floor].best if floor and floor in ms else None
    for name in order or list(ms):
        if name not in ms:
            continue
        m = ms[name]
        rows.append([name, fmt_time(m.best), fmt_time(m.median),
                     fmt_ratio(m.best / base) if base else "—", f"{m.peak_mb:,.0f}", m.note])
    return table(["competitor", "best", "median", f"× {floor}" if floor else "ratio", "peak MB", "what it runs"],
                 rows, "lrrrrl")


def verdict(value: float | None, op: str, target: float) -> str:
    """PASS / MISS for ``value op target`` (op is '<=' or '>=')."""
    if value is None:
        return "n/a"
    ok = value <= target if op == "<=" else value >= target
    return "PASS" if ok else "MISS"


def target_line(label: str, value: float | None, op: str, target: float, issue: str) -> list[str]:
    return [label, fmt_ratio(value), f"{op} {target:g}×", issue, verdict(value, op, target)]


def rel_diff(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def machine_info() -> str:
    """One line: when, where and on what the figures were measured."""
    parts = [time.strftime("%Y-%m-%d %H:%M:%S %Z"), f"Python {platform.python_version()}"]
    for mod in ("numpy", "pyarrow", "pandas", "sklearn"):
        try:
            m = __import__(mod)
            parts.append(f"{mod} {m.__version__}")
        except Exception:  # noqa: BLE001 - informational only
            pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts.append(f"{cpu}, {os.cpu_count()} cores")
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        parts.append(f"{kb / 2**20:.0f} GiB RAM")
    except (OSError, ValueError, IndexError):
        pass
    try:
        la = os.getloadavg()
        parts.append(f"load average {la[0]:.1f} {la[1]:.1f} {la[2]:.1f} (other processes share the cores)"
                     if la[0] > 0.5 * (os.cpu_count() or 1) else f"load average {la[0]:.1f}")
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "lossctl"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()
        if rev:
            parts.append(f"lossctl @ {rev}{' + uncommitted changes' if dirty else ''}")
    except OSError:
        pass
    return "; ".join(parts)


def header(title: str) -> None:
    print(f"## {title}\n")
    print(f"_{machine_info()}_\n")


def run_cases(name: str, cases: Sequence[Callable[[], dict[str, Any]]], json_out: str | None) -> int:
    """Run each case (a dict with "values_agree"), write them to JSON_OUT if given; the exit
    status: 1 when a case failed to run or its values disagree, else 0."""
    out = []
    try:
        for case in cases:
            out.append(case())
    except BenchError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 1
    if json_out:
        Path(json_out).write_text(json.dumps({"machine": machine_info(), "results": out}, indent=1))
    return 0 if all(r["values_agree"] for r in out) else 1
