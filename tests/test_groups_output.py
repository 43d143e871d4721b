"""Slices and comparisons in every format: every model, per-slice deltas with their paired
intervals, group values of any Arrow type as strict JSON, missing group values as a group
of their own, and numbers printed so that people read them right.

Oracles: per-slice values and deltas from numpy on the file's own columns; the paired
bootstrap re-drawn with numpy (the same multinomial resample of the slice's rows for both
models, the definition in CLI.md); strict JSON parsed by the standard library with
NaN/Infinity rejected.
"""
from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
import re
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossctl.render import fmt_num, markdown, render_report
from lossctl.results import GRAD_KEYS, Comparison, Group, LossResult, Report

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HYP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _reject(name: str):
    raise ValueError(f"not strict JSON: {name}")


def strict(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity (what JSON does not hold)."""
    return json.loads(text, parse_constant=_reject)


def strict_lines(text: str) -> list:
    return [strict(line) for line in text.splitlines()]


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Two regression models, a slice column, 300 rows."""
    rng = np.random.default_rng(3)
    n = 300
    y = rng.normal(size=n)
    df = pd.DataFrame({"g": rng.choice(["a", "b", "c"], n), "y": y,
                       "m1": y + rng.normal(0, 0.3, n), "m2": y + rng.normal(0, 0.5, n)})
    path = tmp_path_factory.mktemp("two") / "two.csv"
    df.to_csv(path, index=False)
    return str(path), df


# ---------------------------------------------------------------- item 15: every model, per-slice deltas


def test_every_format_shows_every_models_slices_with_per_slice_deltas(cli, two):
    path, df = two
    args = ("eval", path, "-t", "y", "-p", "m1", "-p", "m2", "-l", "mse", "-l", "mae", "--by", "g")
    doc = strict(cli(*args, "-f", "json").out)
    mse = {(g, m): float(np.mean((d[m] - d.y) ** 2)) for g, d in df.groupby("g") for m in ("m1", "m2")}
    mae = {(g, m): float(np.mean(np.abs(d[m] - d.y))) for g, d in df.groupby("g") for m in ("m1", "m2")}
    oracle = {"mse": mse, "mae": mae}
    assert [g["value"] for g in doc["groups"]] == ["a", "b", "c"]
    for g in doc["groups"]:
        got = {(r["spec"], r["pred"]): r["value"] for r in g["results"]}
        assert set(got) == {(s, m) for s in ("mse", "mae") for m in ("m1", "m2")}
        for (s, m), v in got.items():
            assert v == pytest.approx(oracle[s][(g["value"], m)], rel=1e-12)
        cmp = {c["spec"]: c for c in g["comparisons"]}
        assert set(cmp) == {"mse", "mae"}
        for s, c in cmp.items():
            assert c["pred"] == "m2" and c["baseline"] == "m1" and "ci" not in c
            assert c["delta"] == pytest.approx(oracle[s][(g["value"], "m2")] - oracle[s][(g["value"], "m1")], rel=1e-12)
    # csv: a delta on every m2 row of every slice, equal to the json's
    rows = csv_rows(cli(*args, "-f", "csv").out)
    deltas = {(r["group"], r["spec"]): float(r["delta"]) for r in rows if r["pred"] == "m2" and r["group"] != "(all)"}
    assert deltas == {(g["value"], c["spec"]): c["delta"] for g in doc["groups"] for c in g["comparisons"]}
    assert all(r["baseline"] == "m1" for r in rows if r["pred"] == "m2")
    # jsonl: one comparison line per slice and loss
    lines = strict_lines(cli(*args, "-f", "jsonl").out)
    got = {(x["group"], x["spec"]): x["delta"] for x in lines if x.get("comparison") and "group" in x}
    assert got == deltas
    # markdown and table: m2's slice values and deltas are there, not only m1's
    md = cli(*args, "-f", "markdown").out
    tb = cli(*args, "-f", "table").out
    for g in doc["groups"]:
        for r in g["results"]:
            assert fmt_num(r["value"]) in md and fmt_num(r["value"]) in tb
        for c in g["comparisons"]:
            assert f"Δ {fmt_num(c['delta'], 3, signed=True)}" in md
            assert f"Δ {fmt_num(c['delta'], 3, signed=True)}" in tb


def _paired_oracle(e1: np.ndarray, e2: np.ndarray, level: float, reps: int, seed: int):
    """Percentile intervals of m1's mean, m2's mean and their difference, from one
    multinomial resample of the rows per replicate (numpy's Generator, as documented)."""
    m = e1.size
    counts = np.random.default_rng(seed).multinomial(m, np.full(m, 1.0 / m), size=reps).astype(float)
    q = [50 * (1 - level), 50 * (1 + level)]
    v1, v2 = counts @ e1 / m, counts @ e2 / m
    return [tuple(np.percentile(v, q)) for v in (v1, v2, v2 - v1)]


def test_per_slice_delta_intervals_are_the_paired_bootstrap(cli, two):
    path, df = two
    doc = strict(cli("eval", path, "-t", "y", "-p", "m1", "-p", "m2", "-l", "mse", "--by", "g", "--ci", "0.9",
                     "--bootstrap", "300", "--seed", "5", "-f", "json").out)
    for gi, g in enumerate(doc["groups"]):
        d = df[df.g == g["value"]]
        ci1, ci2, cid = _paired_oracle(((d.m1 - d.y) ** 2).to_numpy(), ((d.m2 - d.y) ** 2).to_numpy(), 0.9, 300,
                                       5 + gi + 1)
        r1, r2 = g["results"]
        # the slice's own intervals come from the same resamples: the oracle draws as the engine does
        assert r1["ci"] == pytest.approx(list(ci1), rel=1e-9) and r2["ci"] == pytest.approx(list(ci2), rel=1e-9)
        (c,) = g["comparisons"]
        assert c["ci"] == pytest.approx(list(cid), rel=1e-9, abs=1e-12)
        assert c["ci"][0] <= c["delta"] <= c["ci"][1]
        # pairing: the delta's interval is narrower than the two intervals side by side
        assert c["ci"][1] - c["ci"][0] < (r1["ci"][1] - r1["ci"][0]) + (r2["ci"][1] - r2["ci"][0])
    rows = csv_rows(cli("eval", path, "-t", "y", "-p", "m1", "-p", "m2", "-l", "mse", "--by", "g", "--ci", "0.9",
                        "--bootstrap", "300", "--seed", "5", "-f", "csv").out)
    for g in doc["groups"]:
        (row,) = [r for r in rows if r["group"] == g["value"] and r["pred"] == "m2"]
        assert [float(row["delta_ci_lo"]), float(row["delta_ci_hi"])] == g["comparisons"][0]["ci"]


def test_gradients_of_every_model_in_table_and_markdown(cli, two):
    path, _ = two
    args = ("eval", path, "-t", "y", "-p", "m1", "-p", "m2", "-l", "mse", "-l", "mae", "--grad")
    doc = strict(cli(*args, "-f", "json").out)
    md = cli(*args, "-f", "markdown").out
    for width in ("200", "80", "60"):
        from conftest import run_subprocess

        tb = run_subprocess(*args, "-f", "table", env={"COLUMNS": width}).out
        assert max(len(line) for line in tb.splitlines()) <= int(width)
        flat = re.sub(r"[\s│┃]", "", tb)
        for r in doc["results"]:
            assert fmt_num(r["grad"]["std"], 4) in flat and fmt_num(r["grad"]["l2"], 4) in flat
    for r in doc["results"]:
        line = next(x for x in md.splitlines() if x.startswith(f"| `{r['spec']}` | {r['pred']} |"))
        assert fmt_num(r["grad"]["std"], 4) in line and fmt_num(r["grad"]["l2"], 4) in line


# ---------------------------------------------------------------- item 14: a missing group value is a group


@pytest.mark.parametrize("nan", ["error", "drop"])
def test_a_missing_by_value_is_its_own_group(cli, write_csv, nan):
    path = write_csv("m.csv", "g,y,yhat\na,1,2\n,2,2\nb,3,1\n,2,4\na,0,0\n")
    doc = strict(cli("eval", path, "-l", "mse", "--by", "g", "--nan", nan, "-f", "json").out)
    groups = {json.dumps(g["value"]): g for g in doc["groups"]}
    assert list(groups) == ['"a"', '"b"', "null"]  # the missing slice comes last
    miss = groups["null"]
    assert miss["missing"] is True and miss["rows"] == 2 and miss["results"][0]["value"] == pytest.approx((0 + 4) / 2)
    assert "missing" not in groups['"a"']
    rows = csv_rows(cli("eval", path, "-l", "mse", "--by", "g", "--nan", nan, "-f", "csv").out)
    (row,) = [r for r in rows if r["missing"] == "true"]
    assert row["group"] == "" and row["group_rows"] == "2"
    lines = strict_lines(cli("eval", path, "-l", "mse", "--by", "g", "--nan", nan, "-f", "jsonl").out)
    (line,) = [x for x in lines if x.get("missing")]
    assert line["group"] is None and line["group_rows"] == 2
    assert "(missing)" in cli("eval", path, "-l", "mse", "--by", "g", "-f", "table").out


def test_nan_in_a_float_by_column_is_one_missing_group_and_drop_still_drops_loss_inputs(cli, tmp_path):
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"f": [1.0, float("nan"), None, float("nan"), 1.0, 2.0],
                             "y": [1.0, 2, 3, 4, 5, 6], "yhat": [1.0, 2, 3, float("nan"), 5, 8]}), path)
    doc = strict(cli("eval", path, "-t", "y", "-p", "yhat", "-l", "mse", "--by", "f", "--nan", "drop",
                     "-f", "json").out)
    assert [(g["value"], g["rows"], g.get("missing", False)) for g in doc["groups"]] == [
        (1.0, 2, False), (2.0, 1, False), (None, 2, True)]  # row 4 (yhat NaN) dropped by --nan drop


# ---------------------------------------------------------------- item 21: values JSON cannot hold


def _scalar_columns() -> list[tuple[pa.DataType, st.SearchStrategy]]:
    """(arrow type, strategy of its values) for each class of scalar --by/--id values."""
    stamps = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1))
    seconds = st.timedeltas(min_value=dt.timedelta(days=-999), max_value=dt.timedelta(days=999)) \
        .map(lambda d: dt.timedelta(seconds=int(d.total_seconds())))
    out = [(pa.decimal128(9, 3), st.decimals(min_value=-999, max_value=999, places=3, allow_nan=False,
                                             allow_infinity=False))]
    out += [(pa.timestamp(u, tz=z), stamps) for u in ("s", "ms", "us", "ns") for z in (None, "UTC", "Europe/Paris")]
    out += [(pa.date32(), st.dates()), (pa.date64(), st.dates())]
    out += [(t, st.times().map(lambda x: x.replace(microsecond=0)))
            for t in (pa.time32("s"), pa.time32("ms"), pa.time64("us"), pa.time64("ns"))]
    out += [(pa.duration(u), seconds) for u in ("s", "ms", "us", "ns")]
    out += [(pa.binary(), st.binary(max_size=6)), (pa.large_binary(), st.binary(max_size=6)),
            (pa.binary(2), st.binary(min_size=2, max_size=2)), (pa.uuid(), st.uuids().map(lambda u: u.bytes))]
    out += [(pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
            (pa.int64(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
            (pa.bool_(), st.booleans()), (pa.string(), st.text(max_size=5)), (pa.large_string(), st.text(max_size=5))]
    return out


@st.composite
def labelled_tables(draw):
    typ, values = draw(st.sampled_from(_scalar_columns()))
    n = draw(st.integers(min_value=2, max_value=12))
    vals = draw(st.lists(st.one_of(st.none(), values), min_size=n, max_size=n))
    vals[0] = vals[0] if vals[0] is not None else draw(values)  # at least one value
    col = pa.array(vals, typ)
    if draw(st.booleans()):
        col = col.dictionary_encode() if not (pa.types.is_fixed_size_binary(typ) or typ == pa.uuid()) else col
    y = np.arange(n, dtype=float)
    plain = col.cast(typ) if pa.types.is_dictionary(col.type) else col
    return pa.table({"c": col, "y": y, "yhat": y + 0.5}), plain.to_pylist()  # the values as Arrow holds them


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _json_value(v):
    return v is None or isinstance(v, (str, int, float, bool))


@HYP
@given(labelled_tables())
def test_group_and_id_values_of_any_arrow_type_are_strict_json(cli, tmp_path, data):
    table, vals = data
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    base = ("eval", str(path), "-t", "y", "-p", "yhat", "-l", "mse", "--by", "c")
    state = tmp_path / "s.json"
    r = cli(*base, "-f", "json", "--emit-state", str(state))
    assert r.code == 0 and r.err == "", r.err
    doc = strict(r.out)
    values = [g["value"] for g in doc["groups"]]
    strict(state.read_text())  # the state file is strict JSON too, and merges to the same slices
    merged = strict(cli("merge", str(state), "-f", "json").out)
    assert [(g["value"], g["rows"], g.get("missing")) for g in merged["groups"]] == \
        [(g["value"], g["rows"], g.get("missing")) for g in doc["groups"]]
    assert all(_json_value(v) for v in values)
    assert sum(g["rows"] for g in doc["groups"]) == len(vals)
    distinct = {repr(v + 0.0 if isinstance(v, float) else v) for v in vals if not _is_missing(v)}  # -0.0 == 0.0
    assert len(values) == len(distinct) + any(_is_missing(v) for v in vals)
    assert [g.get("missing", False) for g in doc["groups"]] == [v is None for v in values]
    assert len(set(json.dumps(v) for v in values)) == len(values)  # distinct values stay distinct
    for fmt in ("jsonl", "csv"):
        r = cli(*base, "-f", fmt)
        assert r.code == 0 and r.err == ""
        if fmt == "jsonl":
            assert [x["group"] for x in strict_lines(r.out) if "group" in x] == values
    # --id carries the same values, one per row
    if all(not _is_missing(v) for v in vals):
        r = cli("eval", str(path), "-t", "y", "-p", "yhat", "-l", "mse", "--reduction", "none", "--id", "c",
                "-f", "jsonl")
        assert r.code == 0 and r.err == "", r.err
        ids = [x["c"] for x in strict_lines(r.out)]
        assert len(ids) == len(vals) and all(_json_value(v) for v in ids)
        assert len(set(map(json.dumps, ids))) == len(distinct)


def test_group_values_read_as_people_write_them(cli, tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({
        "dec": pa.array([decimal.Decimal("1.10"), decimal.Decimal("-2.5")], pa.decimal128(5, 2)),
        "ts": pa.array([dt.datetime(2020, 1, 2, 3, 4, 5), dt.datetime(2021, 1, 1)], pa.timestamp("ms", tz="UTC")),
        "day": pa.array([dt.date(2020, 1, 2), dt.date(1999, 12, 31)], pa.date32()),
        "tm": pa.array([dt.time(1, 2, 3), dt.time(23, 0)], pa.time64("us")),
        "du": pa.array([dt.timedelta(seconds=1.5), dt.timedelta(days=1)], pa.duration("ms")),
        "bin": pa.array([b"ab", b"\xff\x00"], pa.binary()),
        "ctl": pa.array([b"\x00\x01", b"ok"], pa.binary()),
        "u": pa.array([uuid.UUID(int=2).bytes, uuid.UUID(int=1).bytes], pa.uuid()),
        "y": [1.0, 2.0], "yhat": [1.0, 3.0]}), path)
    want = {"dec": ["-2.50", "1.10"], "ts": ["2020-01-02T03:04:05.000Z", "2021-01-01T00:00:00.000Z"],
            "day": ["1999-12-31", "2020-01-02"], "tm": ["01:02:03.000000", "23:00:00.000000"],
            "du": ["1500ms", "86400000ms"], "bin": ["0xff00", "ab"], "ctl": ["0x0001", "ok"],
            "u": ["00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"]}
    for col, values in want.items():
        doc = strict(cli("eval", path, "-t", "y", "-p", "yhat", "-l", "mse", "--by", col, "-f", "json").out)
        assert [g["value"] for g in doc["groups"]] == values, col


@HYP
@given(st.lists(st.tuples(st.sampled_from([float("inf"), float("-inf"), float("nan"), 0.5, None]),
                          st.sampled_from(["inf", "nan", "-inf", "x"])), min_size=2, max_size=10))
def test_nonfinite_values_in_a_cross_and_their_merge(cli, tmp_path, pairs):
    path = tmp_path / "x.parquet"
    n = len(pairs)
    pq.write_table(pa.table({"f": pa.array([p[0] for p in pairs], pa.float64()), "s": [p[1] for p in pairs],
                             "y": np.arange(n, dtype=float), "yhat": np.arange(n, dtype=float) * 1.5}), path)
    base = ("eval", str(path), "-t", "y", "-p", "yhat", "-l", "mse", "--by", "f", "--by", "s")
    state = tmp_path / "s.json"
    r = cli(*base, "-f", "json", "--emit-state", str(state))
    assert r.code == 0, r.err
    doc = strict(r.out)
    values = [g["value"] for g in doc["groups"]]
    assert all(isinstance(v, list) and len(v) == 2 and all(_json_value(x) for x in v) for v in values)
    assert all(isinstance(v[1], str) for v in values)  # text labels "inf"/"nan" stay text
    expect = {(None if f is None or f != f else f, s) for f, s in pairs}
    assert len(values) == len(expect)
    csv_groups = [json.loads(r["group"], parse_constant=_reject) for r in csv_rows(cli(*base, "-f", "csv").out)
                  if r["group"] != "(all)"]
    assert csv_groups == values
    assert [x["group"] for x in strict_lines(cli(*base, "-f", "jsonl").out) if "group" in x] == values
    merged = strict(cli("merge", str(state), "-f", "json").out)
    assert [(g["value"], g["rows"], g.get("missing")) for g in merged["groups"]] == \
        [(g["value"], g["rows"], g.get("missing")) for g in doc["groups"]]


def test_merge_keeps_text_labels_inf_and_nan(cli, tmp_path):
    path = tmp_path / "l.parquet"
    pq.write_table(pa.table({"s": ["inf", "nan", "-inf", "inf"], "y": [1.0, 2, 3, 4], "yhat": [1.0, 2, 3, 5]}), path)
    state = tmp_path / "s.json"
    single = strict(cli("eval", path, "-t", "y", "-p", "yhat", "-l", "mse", "--by", "s", "-f", "json",
                        "--emit-state", state).out)
    merged = strict(cli("merge", state, "-f", "json").out)
    assert [g["value"] for g in merged["groups"]] == [g["value"] for g in single["groups"]] == ["-inf", "inf", "nan"]


@HYP
@given(st.sampled_from(["by", "id"]),
       st.sampled_from([pa.list_(pa.int64()), pa.large_list(pa.float64()), pa.list_(pa.int64(), 2),
                        pa.struct([("a", pa.int64())]), pa.map_(pa.string(), pa.int64())]),
       st.integers(min_value=1, max_value=5))
def test_by_or_id_on_nested_columns_is_one_line_input_error(cli, tmp_path, option, typ, n):
    if pa.types.is_struct(typ):
        vals = [{"a": i} for i in range(n)]
    elif pa.types.is_map(typ):
        vals = [[("k", i)] for i in range(n)]
    else:
        vals = [[i, i] for i in range(n)]
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"c": pa.array(vals, typ), "y": np.arange(n, dtype=float),
                             "yhat": np.arange(n, dtype=float)}), path)
    extra = ("--by", "c", "-f", "json") if option == "by" else ("--id", "c", "--reduction", "none", "-f", "csv")
    r = cli("eval", str(path), "-t", "y", "-p", "yhat", "-l", "mse", *extra)
    assert r.code == 2 and r.out == ""
    assert len(r.err.strip().splitlines()) == 1 and "'c'" in r.err and f"--{option}" in r.err
    assert "Traceback" not in r.err


# ---------------------------------------------------------------- item 19: numbers people read right


def _res(spec="mse", pred="yhat", value=1.0, **kw) -> LossResult:
    return LossResult(loss=spec.split(":")[0], spec=spec, params={}, pred=pred, value=value, n=10, **kw)


def _report(**kw) -> Report:
    return Report(task="regression", task_inferred=False, rows=10, dropped_rows=0, **kw)


def _table(rep: Report, width: int = 160) -> str:
    out = io.StringIO()
    render_report(rep, "table", out, width=width, pictures=False)
    return out.getvalue()


def test_interval_ends_that_differ_print_differently():
    from lossctl.render import fmt_interval

    assert fmt_interval(1.1000001, 1.1000004, 3) == "[1.1000001, 1.1000004]"
    assert fmt_interval(1.1, 1.1, 3) == "[1.1, 1.1]"  # equal ends stay equal
    lo, hi = 1.1000001, 1.1000004
    rep = _report(results=[_res(value=1.1000002, ci=(lo, hi))],
                  groups=[Group(by="g", value="a", rows=5, results=[_res(value=1.1000002, ci=(lo, hi))])])
    for text in (_table(rep), markdown(rep)):
        ends = re.findall(r"\[(1\.1\d*), (1\.1\d*)\]", text)
        assert ends and all(a != b for a, b in ends), text


def test_rounding_noise_prints_as_zero_but_json_keeps_it():
    grad = dict(zip(GRAD_KEYS, [8.65e-20, 0.9, -2.0, 2.0, 0.75, 12.0, 0.0, 0.02]))
    rep = _report(results=[_res(value=0.5, grad=grad), _res(pred="b", value=0.5 + 1e-17, grad=grad)],
                  comparisons=[Comparison(loss="mse", spec="mse", params={}, pred="b", baseline="yhat",
                                          value=0.5 + 1e-17, baseline_value=0.5)])
    for text in (_table(rep), markdown(rep)):
        assert "e-20" not in text and "e-17" not in text and "e-18" not in text
        assert "Δ 0" in text
    assert rep.to_json()["results"][0]["grad"]["mean"] == 8.65e-20
    assert fmt_num(8.65e-20) == "8.6500e-20"  # alone, a small number is a number
    assert fmt_num(8.65e-20, scale=0.75) == "0"


@pytest.mark.parametrize("width", [60, 80, 120])
def test_list_reads_on_a_narrow_terminal(width):
    from conftest import run_subprocess

    from lossctl import registry

    r = run_subprocess("list", "-f", "table", env={"COLUMNS": str(width)})
    assert r.code == 0
    lines = r.out.splitlines()
    assert max(len(line) for line in lines) <= width
    flat = " ".join(" ".join(lines).split())
    for spec in registry.all_losses():
        assert any(line.startswith(spec.name + " ") for line in lines), spec.name  # a heading per loss
        assert " ".join(spec.properties.formula.split()) in flat  # nothing cut or folded mid-word
    wide = run_subprocess("list", "-f", "table", env={"COLUMNS": "200"})
    assert "┃ loss" in wide.out  # a wide terminal keeps the table


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_keys_holding_unicode_line_breaks_stay_one_record_a_line(cli, tmp_path, fmt):
    """U+0085, U+2028 and U+2029 are line breaks to str.splitlines (and JavaScript): written
    escaped, so that every JSON Lines reader sees one record a line (found by hypothesis)."""
    path = tmp_path / "nel.parquet"
    keys = ["\x85", "a\u2028b", "\u2029", None]
    pq.write_table(pa.table({"c": keys, "y": [0.0, 1.0, 2.0, 3.0], "yhat": [0.5, 1.5, 2.0, 3.0]}), path)
    r = cli("eval", str(path), "-t", "y", "-p", "yhat", "-l", "mse", "--by", "c", "-f", fmt)
    assert r.code == 0, r.err
    assert not any(ch in r.out for ch in ("\x85", "\u2028", "\u2029"))
    if fmt == "jsonl":
        rows = strict_lines(r.out)
        assert sorted(str(x["group"]) for x in rows if "group" in x) == sorted(str(k) for k in keys)
    else:
        assert sorted(str(g["value"]) for g in strict(r.out)["groups"]) == sorted(str(k) for k in keys)
