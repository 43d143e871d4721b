"""Numerics at the edges: the top-1% gradient share without a known row count (ties,
compressed input, stdin), sums of squares beyond the float range, bootstrap keys that
do not depend on batch boundaries, and no Python warning on stderr.

Every figure is checked against an independent numpy (or exact rational) oracle.
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import math
import sys
from fractions import Fraction

import numpy as np
import pytest

from lossctl import io as lio
from lossctl.accumulate import GradSummary

N_BIG = 300_000  # above the 102,400 rows where the top-1% search without a bound starts pruning


def top1_oracle(l1: np.ndarray) -> float:
    """CLI.md: the share of Σ‖g‖₁ held by the ceil(1%) rows with the largest ‖g‖₁ (numpy sort)."""
    k = max(1, math.ceil(0.01 * l1.size))
    return float(np.sort(l1)[-k:].sum() / l1.sum())


# ------------------------------------------------------------------ item 4: top1_share


def _feed(g: np.ndarray, step: int, bound: int | None, keep_factor: int = 1) -> GradSummary:
    s = GradSummary(rows_bound=bound, keep_factor=keep_factor)
    for i in range(0, g.size, step):
        s.update(g[i:i + step], i)
    return s


@pytest.mark.parametrize("bound", [None, N_BIG, 1000])  # none, exact, a hint that falls short
@pytest.mark.parametrize("step", [4096, 65_536, 131_072])
def test_top1_share_keeps_rows_tied_with_the_floor(bound, step):
    # MAE: every |g| = 1 (and some 0): the top 1% is 1% of the rows, all tied at the floor
    rng = np.random.default_rng(4)
    g = rng.choice([-1.0, 1.0], N_BIG)
    g[rng.random(N_BIG) < 0.05] = 0.0
    s = _feed(g, step, bound)
    assert s.top1_exact()
    got = s.result()
    assert "top1_share_lower_bound" not in got
    assert got["top1_share"] == pytest.approx(top1_oracle(np.abs(g)), rel=1e-12)


@pytest.mark.parametrize("order", ["random", "ascending", "descending"])
def test_top1_share_with_few_distinct_values_matches_numpy(order):
    # ties at every level (0, 1, 2, 3): the floor lands inside a block of ties each time it moves
    rng = np.random.default_rng(5)
    g = rng.integers(0, 4, N_BIG).astype(float)
    if order != "random":
        g = np.sort(g)[:: 1 if order == "ascending" else -1]
    s = _feed(g, 10_000, None)
    assert s.top1_exact()
    assert s.result()["top1_share"] == pytest.approx(top1_oracle(g), rel=1e-12)


def test_top1_share_without_a_bound_is_exact_or_flagged_as_a_lower_bound():
    rng = np.random.default_rng(6)
    g = np.abs(rng.standard_t(2, N_BIG))
    ref = top1_oracle(g)
    s = _feed(g, 8192, None)  # random order: what is kept holds the top 1%
    assert s.top1_exact() and s.result()["top1_share"] == pytest.approx(ref, rel=1e-12)
    desc = np.sort(g)[::-1]  # the largest rows first, no bound: pruned too early, and it says so
    s = _feed(desc, 8192, None)
    got = s.result()
    assert not s.top1_exact() and got["top1_share_lower_bound"] is True
    assert got["top1_share"] <= ref * (1 + 1e-12)
    assert _feed(desc, 8192, N_BIG).result()["top1_share"] == pytest.approx(ref, rel=1e-12)  # a bound: exact


def test_merged_summaries_keep_ties_and_state_files_round_trip():
    rng = np.random.default_rng(7)
    g = rng.choice([0.0, 1.0, 2.0], N_BIG, p=[0.2, 0.795, 0.005])
    parts = [_feed(g[a:b], 7000, b - a, keep_factor=2) for a, b in ((0, 100_000), (100_000, 250_000), (250_000, N_BIG))]
    merged = GradSummary.from_dict(json.loads(json.dumps(parts[0].to_dict())))
    for p in parts[1:]:
        merged.merge(GradSummary.from_dict(json.loads(json.dumps(p.to_dict()))))
    assert merged.top1_exact()
    assert merged.result()["top1_share"] == pytest.approx(top1_oracle(g), rel=1e-12)


def _regression(n: int, tied: bool, order: str = "random") -> tuple[np.ndarray, np.ndarray, bytes]:
    rng = np.random.default_rng(11)
    y = np.round(rng.normal(0, 3, n), 3)
    r = rng.choice([-0.5, 0.5], n) if tied else np.round(rng.standard_t(3, n), 4)
    if order == "descending":
        r = r[np.argsort(-np.abs(r), kind="stable")]
    yhat = y + r
    text = "y,yhat\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(y.tolist(), yhat.tolist()))
    return y, yhat, text.encode()


def _grad_json(cli, *args):
    r = cli("eval", *args, "--grad", "-f", "json")
    assert r.code == 0, r.err
    return r.json()["results"][0], r.err


@pytest.mark.parametrize("tied", [True, False], ids=["mae-tied", "continuous"])
@pytest.mark.parametrize("how", ["gz", "zst", "stdin-gz", "stdin"])
def test_cli_top1_share_on_compressed_and_piped_input_matches_numpy(cli, tmp_path, monkeypatch, tied, how):
    y, yhat, raw = _regression(N_BIG, tied)
    loss = "mae" if tied else "mse"
    l1 = np.abs(np.sign(yhat - y)) if tied else np.abs(2 * (yhat - y))
    if how.endswith("gz"):
        data = gzip.compress(raw, compresslevel=1)
    elif how == "zst":
        zstandard = pytest.importorskip("zstandard")
        data = zstandard.ZstdCompressor().compress(raw)
    else:
        data = raw
    if how.startswith("stdin"):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        path = "-"
    else:
        path = tmp_path / f"d.csv.{how}"
        path.write_bytes(data)
    res, err = _grad_json(cli, path, "-l", loss)
    assert res["grad"]["top1_share"] == pytest.approx(top1_oracle(l1), rel=1e-9)
    assert "top1_share_lower_bound" not in res["grad"] and "lower bound" not in err


def test_cli_top1_share_without_any_bound_is_flagged_on_stderr_and_in_json(cli, tmp_path):
    # bz2 records no size; rows sorted by |residual|, largest first: the one order the search
    # without a bound cannot follow. The share is then a lower bound and says so.
    y, yhat, raw = _regression(N_BIG, False, order="descending")
    ref = top1_oracle(np.abs(2 * (yhat - y)))
    path = tmp_path / "d.csv.bz2"
    path.write_bytes(bz2.compress(raw, 1))
    res, err = _grad_json(cli, path, "-l", "mse")
    assert res["grad"]["top1_share_lower_bound"] is True
    assert res["grad"]["top1_share"] <= ref * (1 + 1e-12)
    assert any("top1_share is a lower bound" in n for n in res["notes"])
    assert "top1_share is a lower bound" in err
    gz = tmp_path / "d.csv.gz"  # the same rows gzipped: the trailer's size bounds the rows, exact
    gz.write_bytes(gzip.compress(raw, 1))
    res, err = _grad_json(cli, gz, "-l", "mse")
    assert res["grad"]["top1_share"] == pytest.approx(ref, rel=1e-9) and "lower bound" not in err


@pytest.mark.parametrize("ending", [b"\r", b"\r\n", b"\n"])
def test_row_bound_counts_every_line_ending(tmp_path, ending):
    rows = [b"%d,%d" % (i, i + (i % 3)) for i in range(500)]
    path = tmp_path / "d.csv"
    path.write_bytes(ending.join([b"y,yhat", *rows]) + ending)
    src = lio.open_source(str(path))
    assert 500 <= lio.rows_upper_bound(src) <= 501


def test_zstd_size_bound_holds_with_and_without_a_recorded_content_size(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    raw = _regression(50_000, False)[2]
    with_size = zstandard.ZstdCompressor().compress(raw)
    buf = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(buf, closefd=False) as w:  # no content size in the header
        for i in range(0, len(raw), 100_000):
            w.write(raw[i:i + 100_000])
    both = with_size + buf.getvalue()  # two frames
    for name, data, size in (("a", with_size, len(raw)), ("b", buf.getvalue(), len(raw)), ("c", both, 2 * len(raw))):
        p = tmp_path / f"{name}.csv.zst"
        p.write_bytes(data)
        got = lio._zstd_content_size(str(p))
        assert got is not None and size <= got <= size + (1 << 18), name
        if name == "a":
            assert got == size


# ------------------------------------------------------------------ item 5: sums of squares


def exact_sumsq(x) -> Fraction:
    return sum((Fraction(float(v)) ** 2 for v in x), Fraction(0))


def exact_sqrt(q: Fraction) -> float:
    """√q to a double for any positive rational (scaled by 4ᵏ so that float() neither overflows nor underflows)."""
    k = (q.numerator.bit_length() - q.denominator.bit_length()) // 2
    return math.ldexp(math.sqrt(float(q / Fraction(2) ** (2 * k))), k)


def _residuals(scale: float, n: int = 1000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.5, 1.5, n) * rng.choice([-1.0, 1.0], n) * scale
    y = np.zeros(n)
    return y, y + r


@pytest.mark.parametrize("scale", [1e154, 3e153, 1e-170, 4e-200])
@pytest.mark.parametrize("batch_rows", [1000, 97])
def test_mse_rmse_and_gradient_norms_beyond_the_double_range_match_exact_rationals(scale, batch_rows):
    import lossctl

    y, yhat = _residuals(scale)
    r = yhat - y
    n = r.size
    ssq = exact_sumsq(r)
    mse = float(ssq / n) if ssq / n > Fraction(2) ** -1074 else 0.0  # below the least subnormal: 0 is right
    rmse = exact_sqrt(ssq / n)
    l2_mse = exact_sqrt(4 * ssq)  # g = 2r
    got = lossctl.evaluate(y, yhat, "mse", grad=True, batch_rows=batch_rows)
    assert got.value == pytest.approx(mse, rel=1e-13, abs=0)
    assert got.grad["l2"] == pytest.approx(l2_mse, rel=1e-13)
    mean = float(2 * sum(Fraction(float(v)) for v in r) / n)
    var = exact_sumsq(2 * r) / n - Fraction(mean) ** 2
    assert got.grad["std"] == pytest.approx(exact_sqrt(var), rel=1e-10)
    got = lossctl.evaluate(y, yhat, "rmse", grad=True, batch_rows=batch_rows)
    assert got.value == pytest.approx(rmse, rel=1e-13)
    # g = N·rᵢ/(N·RMSE) = rᵢ/RMSE: Σg² = N exactly, none of them 0 (hand-derived)
    assert got.grad["l2"] == pytest.approx(math.sqrt(n), rel=1e-12)
    assert got.grad["zero_frac"] == 0.0 and math.isfinite(got.grad["std"])
    w = np.linspace(0.5, 2.0, n)
    wsum = sum(Fraction(float(v)) for v in w)
    wssq = sum((Fraction(float(a)) * Fraction(float(b)) ** 2 for a, b in zip(w, r)), Fraction(0))
    got = lossctl.evaluate(y, yhat, "rmse", weight=w, batch_rows=batch_rows)
    assert got.value == pytest.approx(exact_sqrt(wssq / wsum), rel=1e-13)
    if scale > 1:
        got = lossctl.evaluate(y, yhat, "mse", weight=w, batch_rows=batch_rows)
        assert got.value == pytest.approx(float(wssq / wsum), rel=1e-13)


def test_sums_of_squares_beyond_the_range_in_the_cli_and_through_state_files(cli, tmp_path):
    y, yhat = _residuals(1e154, n=600)
    r = yhat - y
    path = tmp_path / "big.csv"
    path.write_text("y,yhat\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(y.tolist(), yhat.tolist())))
    one = cli("eval", path, "-l", "mse", "-l", "rmse", "--grad", "-f", "json")
    assert one.code == 0 and "Warning" not in one.err, one.err
    res = {x["loss"]: x for x in one.json()["results"]}
    ssq = exact_sumsq(r)
    assert res["mse"]["value"] == pytest.approx(float(ssq / r.size), rel=1e-13)
    assert res["mse"]["grad"]["l2"] == pytest.approx(exact_sqrt(4 * ssq), rel=1e-13)
    assert res["rmse"]["value"] == pytest.approx(exact_sqrt(ssq / r.size), rel=1e-13)
    # two shards whose states hold scaled sums, merged: the single run's numbers
    lines = path.read_text().splitlines(keepends=True)
    states = []
    for i, (a, b) in enumerate(((1, 250), (250, 601))):
        part = tmp_path / f"p{i}.csv"
        part.write_text(lines[0] + "".join(lines[a:b]))
        st = tmp_path / f"p{i}.state"
        run = cli("eval", part, "-l", "mse", "-l", "rmse", "--grad", "--emit-state", st, "--row-offset", a - 1, "-q")
        assert run.code == 0, run.err
        states.append(st)
    merged = cli("merge", *states, "-f", "json")
    assert merged.code == 0, merged.err
    for got, ref in zip(merged.json()["results"], one.json()["results"]):
        assert got["value"] == pytest.approx(ref["value"], rel=1e-13)
        assert got["grad"]["l2"] == pytest.approx(ref["grad"]["l2"], rel=1e-13)


def test_ordinary_sums_carry_no_exponent():
    import lossctl
    from lossctl.accumulate import Sum

    y, yhat = _residuals(1.0)
    s = Sum(2)
    s.add(np.array([1.0, 2.0]))
    assert s.e is None and "e" not in s.to_dict()
    r = lossctl.evaluate(y, yhat, "mse", grad=True)
    assert r.value == pytest.approx(float(exact_sumsq(yhat - y) / y.size), rel=1e-14)


@pytest.mark.parametrize("by", [False, True])
def test_sums_that_leave_the_range_across_batches(cli, tmp_path, by):
    """Every batch's Σr² is finite (10 rows of r² up to 1.2e307), the file's is not (about 3e309):
    the totals take a binary exponent where they leave the double range, so the means are finite
    and exact (mse and rmse were null: the sum across batches overflowed to inf); slices as well."""
    y, yhat = _residuals(2.3e153, n=400, seed=8)
    r = yhat - y
    g = np.arange(r.size) % 3
    path = tmp_path / "big.csv"
    path.write_text("y,yhat,g\n" + "".join(f"{a!r},{b!r},{k}\n" for a, b, k in zip(y.tolist(), yhat.tolist(), g)))
    args = ["eval", path, "-l", "mse", "-l", "rmse", "-l", "mae", "--batch-rows", 10, "-f", "json"]
    out = cli(*args, *(["--by", "g"] if by else []))
    assert out.code == 0, out.err
    doc = out.json()
    parts = [(None, doc["results"])] + [(int(grp["value"]), grp["results"]) for grp in doc.get("groups", [])]
    assert len(parts) == (4 if by else 1)
    for key, results in parts:
        rr = r if key is None else r[g == key]
        res = {x["loss"]: x["value"] for x in results}
        ssq = exact_sumsq(rr)
        assert res["mse"] == pytest.approx(float(ssq / rr.size), rel=1e-13)
        assert res["rmse"] == pytest.approx(exact_sqrt(ssq / rr.size), rel=1e-13)
        assert res["mae"] == pytest.approx(math.fsum(np.abs(rr).tolist()) / rr.size, rel=1e-13)


@pytest.mark.parametrize("size", [2, 6])
def test_compensated_sums_take_an_exponent_where_they_leave_the_range(size):
    """Sum (a few totals as Python floats, more as numpy) and the slices' GroupSums: adding
    finite sums whose total passes the double range gives that total as mant·2ᵉ, exactly as
    far as doubles go; infinite terms stay infinite (no exponent)."""
    from lossctl.accumulate import Sum
    from lossctl.slices import GroupSums

    big = np.full(size, 1.5e308)
    s = Sum(size)
    for _ in range(5):
        s.add(big)
    mant, exp = s.parts()
    assert s.scaled and np.all(np.isfinite(mant))
    assert [Fraction(float(m)) * Fraction(2) ** int(e) for m, e in zip(mant, exp)] == [5 * Fraction(1.5e308)] * size
    other = Sum(size)
    other.add(big)
    other.merge(s)  # merging states whose sums are both near the top of the range
    mant, exp = other.parts()
    assert [Fraction(float(m)) * Fraction(2) ** int(e) for m, e in zip(mant, exp)] == [6 * Fraction(1.5e308)] * size
    t = Sum(size)
    t.add(np.full(size, np.inf))
    t.add(big)
    assert not t.scaled and np.all(t.value == np.inf)
    table = GroupSums(size)
    rows = np.array([0, 2])
    for _ in range(3):
        table.add(rows, np.full((2, size), 1.5e308))
    for gi in rows:
        mant, exp = table.row(int(gi)).parts()
        assert [Fraction(float(m)) * Fraction(2) ** int(e) for m, e in zip(mant, exp)] == [3 * Fraction(1.5e308)] * size


# ------------------------------------------------------------------ item 7: slices keep their rows' indices


def _slice_cis(doc: dict) -> list:
    return [(g["value"], r["pred"], r["ci"]) for g in doc["groups"] for r in g["results"]]


def _assert_same_cis(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (va, pa, ca), (vb, pb, cb) in zip(a, b):
        assert (va, pa) == (vb, pb)
        assert ca == pytest.approx(cb, rel=1e-12, abs=1e-12), (va, pa)


@pytest.fixture(scope="module")
def sliced_csv(tmp_path_factory):
    def make(n: int, groups: int = 4) -> str:
        rng = np.random.default_rng(12)
        g = rng.integers(0, groups, n)
        y = rng.normal(size=n)
        cols = {"y": y, "m1": y + rng.normal(size=n) * (1 + 0.2 * g), "m2": y + rng.normal(size=n),
                "m3": y + 0.1 * rng.standard_t(2, n), "g": g}
        path = tmp_path_factory.mktemp("slices") / f"s{n}-{groups}.csv"
        import pandas as pd

        pd.DataFrame(cols).to_csv(path, index=False)
        return str(path)

    return make


@pytest.mark.parametrize("n,groups", [(6_000, 4), (70_000, 2)])  # slices bootstrapped by rows, by hashed row blocks
def test_slice_intervals_do_not_depend_on_the_batch_size(cli, sliced_csv, n, groups):
    path = sliced_csv(n, groups)
    args = ("eval", path, "-t", "y", "-p", "m1", "-p", "m2", "-p", "m3", "-l", "mse", "-l", "mae",
            "--by", "g", "--ci", "0.95", "--bootstrap", "200", "-f", "json", "-q")
    ref = None
    for batch_rows in (131_072, 50_000 if n > 50_000 else 2_500, 997):
        run = cli(*args, "--batch-rows", batch_rows)
        assert run.code == 0, run.err
        doc = run.json()
        got = _slice_cis(doc) + [(c["loss"], c["pred"], c["ci"]) for c in doc["comparisons"]]  # + paired deltas
        assert all(ci is not None for _, _, ci in got)
        if ref is None:
            ref = got
        else:
            _assert_same_cis(got, ref)


def test_slice_intervals_from_shards_equal_one_run(cli, sliced_csv, tmp_path):
    path = sliced_csv(70_000, groups=2)  # slices of 35,000 rows: hashed row blocks, keyed by each row's index
    common = ("-t", "y", "-p", "m1", "-p", "m2", "-l", "mse", "--by", "g", "--ci", "0.95", "--bootstrap", "200")
    one = cli("eval", path, *common, "-f", "json", "-q")
    assert one.code == 0, one.err
    lines = open(path).read().splitlines(keepends=True)
    states = []
    for i, (a, b) in enumerate(((1, 23_000), (23_000, 52_001), (52_001, 70_001))):
        part = tmp_path / f"p{i}.csv"
        part.write_text(lines[0] + "".join(lines[a:b]))
        st = tmp_path / f"p{i}.state"
        run = cli("eval", part, *common, "--batch-rows", 10_000, "--emit-state", st, "--row-offset", a - 1, "-q")
        assert run.code == 0, run.err
        states.append(st)
    merged = cli("merge", *states, "-f", "json")
    assert merged.code == 0, merged.err
    _assert_same_cis(_slice_cis(merged.json()), _slice_cis(one.json()))


# ------------------------------------------------------------------ item 11: no Python warning on stderr

NUMPY_NOTE = "numpy reported"


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("column", ["y", "yhat"])
@pytest.mark.parametrize("nan", ["error", "drop"])
def test_a_column_holding_both_infinities_warns_nothing(cli, write_csv, column, nan):
    vals = {"y": "0.5,1.5,2,3", "yhat": "1,2,2,4"}
    vals[column] = "inf,-inf,2,3"
    ys, ps = (v.split(",") for v in (vals["y"], vals["yhat"]))
    path = write_csv("inf.csv", "y,yhat\n" + "".join(f"{a},{b}\n" for a, b in zip(ys, ps)))
    run = cli("eval", path, "-l", "mse", "-l", "mae", "--grad", "--nan", nan, "-f", "json")
    assert run.code == (2 if nan == "error" else 0), run.err
    assert "Warning" not in run.err and NUMPY_NOTE not in run.err
    if nan == "error":
        assert len(run.err.strip().splitlines()) == 1 and "infinite value" in run.err
    else:
        assert run.json()["rows"] == 2


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("opts", [[], ["--grad"], ["-w", "w", "--grad"], ["--ci", "0.9", "--bootstrap", "50"],
                                  ["--by", "g", "--grad"], ["--reduction", "sum"]])
@pytest.mark.parametrize("scale", ["1e200", "1e-200", "1e308"])
def test_regression_losses_beyond_the_range_warn_nothing(cli, write_csv, opts, scale):
    # overflowing products and dots (r², w·ℓ, bootstrap replicates) are intended there: no warning
    rows = "".join(f"0,{'-' if i % 2 else ''}{scale},{i % 3},{1e200 if i % 4 else 0.5}\n" for i in range(40))
    path = write_csv("x.csv", "y,yhat,g,w\n" + rows)
    specs = ("mse", "rmse", "mae", "huber", "smooth_l1", "quantile:tau=0.9", "log_cosh")
    for spec in specs:
        if spec == "rmse" and "--reduction" in opts:
            continue  # (not a mean over rows: a usage error)
        run = cli("eval", path, "-t", "y", "-p", "yhat", "-l", spec, *opts, "-f", "json")
        assert run.code == 0, (spec, run.err)
        assert "Warning" not in run.err and NUMPY_NOTE not in run.err, (spec, run.err)


def test_a_warning_that_escapes_becomes_one_note(cli, monkeypatch):
    import warnings

    from conftest import SAMPLES
    from lossctl import registry
    from lossctl.engine import Context
    from lossctl.losses import regression

    def noisy(*a, **k):  # a loss whose arithmetic warns (as a numpy overflow would)
        warnings.warn("overflow encountered in something", RuntimeWarning)
        return regression._fz_mae(*a, **k)

    kernel = type(registry.get("mae").factory({}, Context(task="regression")))
    monkeypatch.setattr(kernel, "fused", staticmethod(noisy))
    run = cli("eval", f"{SAMPLES}/regression.csv", "-l", "mae", "-f", "json")
    assert run.code == 0
    assert "Warning" not in run.err and "warnings.warn" not in run.err
    notes = [line for line in run.err.splitlines() if NUMPY_NOTE in line]
    assert notes == ["lossctl: note: numpy reported 'overflow encountered in something': "
                     "a figure it touched may be inf or nan"]
    quiet = cli("eval", f"{SAMPLES}/regression.csv", "-l", "mae", "-f", "json", "-q")
    assert quiet.code == 0 and quiet.err == ""


def test_python_dash_W_error_sees_no_warning(tmp_path):
    from conftest import run_subprocess

    path = tmp_path / "inf.csv"
    path.write_text("y,yhat\n1,inf\n2,-inf\n3,3\n4,4.5\n")
    big = tmp_path / "big.csv"
    big.write_text("y,yhat\n0,1e154\n0,-1.2e154\n0,2e153\n")
    for args in (("eval", path, "--nan", "drop", "--grad"), ("eval", big, "-l", "mse", "-l", "rmse", "--grad")):
        run = run_subprocess(*args, "-f", "json", env={"PYTHONWARNINGS": "error"})
        assert run.code == 0, run.err
        assert "Warning" not in run.err and NUMPY_NOTE not in run.err, run.err


def test_a_lower_bound_from_any_state_is_noted():
    # states other than the decomposable one (mined triplets, Wasserstein) report their gradient
    # summary as it is; the note is added where results are assembled
    from types import SimpleNamespace

    from lossctl import outcome, registry
    from lossctl.engine import Options

    desc = np.sort(np.abs(np.random.default_rng(9).standard_t(2, N_BIG)))[::-1]
    gs = _feed(desc, 8192, None)
    st = SimpleNamespace(grad=gs, result=lambda: {"value": 1.0, "n": N_BIG, "grad": gs.result()})
    spec = registry.get("mse")
    job = SimpleNamespace(call=registry.LossCall(spec, {}, "mse"), pred="p")
    res = outcome.result_for(job, st, Options(grad=True))
    assert res.grad["top1_share_lower_bound"] is True
    assert res.notes == [gs.top1_note()] and "lower bound" in res.notes[0]


def test_state_files_written_before_ties_were_counted_still_load():
    # an older state file has no floor: it holds exactly the norms above dropped_max
    g = np.abs(np.random.default_rng(10).normal(size=50_000))
    s = _feed(g, 5000, 50_000, keep_factor=2)
    d = json.loads(json.dumps(s.to_dict()))
    for key in ("floor", "at_floor", "exp", "merged"):
        d.pop(key)
    d["top"] = [v for v in d["top"] if v > d["dropped_max"]]
    old = GradSummary.from_dict(d)
    assert old.top1_exact()
    assert old.result()["top1_share"] == pytest.approx(top1_oracle(g), rel=1e-12)


@pytest.mark.parametrize("scale", [1e154, 1e-170])
def test_with_ci_the_value_stays_exact_and_the_interval_is_withheld_beyond_the_range(scale):
    import lossctl

    y, yhat = _residuals(scale, n=500)
    ssq = exact_sumsq(yhat - y)
    for spec, want in (("rmse", exact_sqrt(ssq / 500)), ("mse", float(ssq / 500) if scale > 1 else 0.0)):
        got = lossctl.evaluate(y, yhat, spec, ci=0.9, bootstrap=50, batch_rows=128)
        assert got.value == pytest.approx(want, rel=1e-13, abs=0), spec
        assert got.ci is None or all(math.isnan(v) for v in got.ci), (spec, got.ci)  # never an interval beside the value
        assert any("no bootstrap interval" in n for n in got.notes), spec


def test_a_gzip_trailer_that_understates_the_size_is_exact_or_flagged(cli, tmp_path):
    # two gzip members (as cat a.gz b.gz or bgzip write): the trailer records the last one's size only,
    # so the row bound is a hint that falls short; the share is then exact or flagged, never silently wrong
    y, yhat, raw = _regression(N_BIG, False, order="descending")
    ref = top1_oracle(np.abs(2 * (yhat - y)))
    cut = raw.index(b"\n", len(raw) - 2000) + 1
    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress(raw[:cut], 1) + gzip.compress(raw[cut:], 1))
    assert lio.rows_upper_bound(lio.open_source(str(path))) is None  # the trailer is implausible: no bound
    res, err = _grad_json(cli, path, "-l", "mse")
    assert res["n"] == N_BIG
    if res["grad"].get("top1_share_lower_bound"):
        assert res["grad"]["top1_share"] <= ref * (1 + 1e-12) and "lower bound" in err
    else:
        assert res["grad"]["top1_share"] == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("cut", [4, 5, 9, 40])  # inside the frame header, the first block header, the first block
def test_a_damaged_zstd_file_has_no_row_bound_and_fails_as_bad_input(cli, tmp_path, cut):
    zstandard = pytest.importorskip("zstandard")
    raw = _regression(20_000, False)[2]
    data = zstandard.ZstdCompressor().compress(raw)
    path = tmp_path / "d.csv.zst"
    path.write_bytes(data[:cut])
    assert lio.rows_upper_bound(lio.Source(name="d", path=str(path), fmt="csv", compression="zstd")) is None
    run = cli("eval", path, "-l", "mse", "--grad", "-f", "json")
    assert run.code == 2, run.err
    assert run.out == "" and "Traceback" not in run.err and "internal error" not in run.err
