"""Shard workflow: ``eval SHARD --emit-state S --row-offset O`` per shard, then ``merge S...``.

The merged report must equal one ``eval`` over the whole file: values and gradient
summaries to ~1e-12 relative, bootstrap intervals exactly when every shard gave its
--row-offset (README "Shards: --emit-state and lossctl merge"), comparisons and groups
alike. Shards are uneven and include a 1-row shard. Mismatched, repeated, damaged or
unsaveable states give one clear line on stderr and exit 2 (or a documented note).
"""
from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lossctl import cli
from lossctl.engine import Context, DecomposableState, Options, RowMeanKernel, Batch

DATA = Path(__file__).resolve().parent.parent / "sample_data"
RTOL = 1e-12


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2, (code, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossctl: error: "), err
    assert "Traceback" not in err and "internal error" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def close(a, b, path: str = "", scale: float | None = None) -> list[str]:
    """Differences between two JSON documents beyond RTOL (grad.mean: relative to abs_mean,
    since a mean of gradients that cancel is round-off however it is summed)."""
    errs: list[str] = []
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            errs.append(f"{path}: keys {sorted(set(a) ^ set(b))}")
        sc = a.get("abs_mean") if {"mean", "abs_mean"} <= set(a) else None
        for k in set(a) & set(b):
            errs += close(a[k], b[k], f"{path}.{k}", sc if k == "mean" else None)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        for i, (x, y) in enumerate(zip(a, b)):
            errs += close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)) or isinstance(b, float) and isinstance(a, (int, float)):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return errs
        ref = max(abs(a), abs(b)) if scale is None else abs(scale)
        if not abs(a - b) <= RTOL * ref:
            errs.append(f"{path}: {a!r} vs {b!r}")
    elif a != b:
        errs.append(f"{path}: {a!r} vs {b!r}")
    return errs


def split(df: pd.DataFrame, cuts: list[int], d: Path) -> tuple[Path, list[tuple[Path, int]]]:
    bounds = [0, *cuts, len(df)]
    parts = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        p = d / f"part{i}.parquet"
        df.iloc[a:b].to_parquet(p, index=False)
        parts.append((p, a))
    whole = d / "whole.parquet"
    df.to_parquet(whole, index=False)
    return whole, parts


def emit(capsys, parts, args, d: Path, offsets: bool = True, tag: str = "s") -> list[Path]:
    states = []
    for i, (p, off) in enumerate(parts):
        s = d / f"{tag}{i}.state"
        extra = ["--row-offset", off] if offsets else []
        code, _, err = run(capsys, "eval", p, *args, "--emit-state", s, "-f", "json", "-q", *extra)
        assert code == 0, err
        states.append(s)
    return states


def single(capsys, path, args) -> dict:
    code, out, err = run(capsys, "eval", path, *args, "-f", "json", "-q")
    assert code == 0, err
    return json.loads(out)


def merged(capsys, states, *extra) -> tuple[dict, str]:
    code, out, err = run(capsys, "merge", *states, "-f", "json", *extra)
    assert code == 0, err
    return json.loads(out), err


LOWER = "top1_share is a lower bound: a merged shard pruned rows that may belong to the top 1%"


def comparable(doc: dict, ref: dict | None = None) -> dict:
    """``doc`` without what a merge reports differently by design: the list of files, and
    (README) top1_share where a shard pruned candidates, a lower bound with a note."""
    doc = copy.deepcopy(doc)
    for k in ("sources", "lossctl_version", "warnings"):  # the merge lists every shard's file
        doc.pop(k, None)
    if ref is not None:
        for r_ref, r_got in zip(ref["results"], doc["results"]):
            if LOWER in r_got.get("notes", []):
                assert r_got["grad"]["top1_share"] <= r_ref["grad"]["top1_share"]
                r_got["grad"]["top1_share"] = r_ref["grad"]["top1_share"]
                r_got["notes"].remove(LOWER)
                if not r_got["notes"]:
                    del r_got["notes"]
    return doc


# ------------------------------------------------------------------ data


def _reg(n: int = 600) -> pd.DataFrame:
    df = pd.read_csv(DATA / "regression.csv").iloc[:n].copy()
    rng = np.random.default_rng(0)
    df["yhat2"] = df["yhat"] + rng.normal(0, 30, len(df))
    df["yhat3"] = df["y"] * 1.01
    return df


def _binary(n: int = 700) -> pd.DataFrame:
    df = pd.read_csv(DATA / "binary.csv").iloc[:n].copy()
    df["logit"] = np.log(df.prob / (1 - df.prob))
    df["logit2"] = 0.8 * df["logit"]
    df["grp"] = np.random.default_rng(1).integers(0, 3, len(df))
    return df


def _seg(name: str) -> pd.DataFrame:  # without the image column: per-image states cannot be saved
    return pd.read_parquet(DATA / name).iloc[:3000].drop(columns=["image_id"])


CASES = {
    "regression-all-grad": (lambda: _reg(), ["-l", "mse", "-l", "rmse", "-l", "mae", "-l", "huber:delta=20",
                                             "-l", "smooth_l1", "-l", "quantile:tau=0.9", "-l", "log_cosh", "--grad"]),
    "regression-weights-by-compare-ci": (lambda: _reg(), [
        "-l", "mse", "-l", "rmse", "-l", "quantile:tau=0.2", "-p", "yhat", "-p", "yhat2", "-p", "yhat3",
        "-w", "weight", "--by", "region", "--grad", "--ci", "0.9", "--seed", "5", "--bootstrap", "60"]),
    "regression-sum": (lambda: _reg(), ["-l", "mse", "-l", "mae", "-l", "huber", "--reduction", "sum", "--grad",
                                        "-w", "weight"]),
    "interval-ci": (lambda: pd.read_csv(DATA / "interval.csv").iloc[:500],
                    ["-l", "interval", "--grad", "--ci", "0.95", "--seed", "3", "--bootstrap", "60"]),
    "binary-logits-compare-by-ci": (lambda: _binary(), [
        "-l", "bce:pos_weight=2", "-l", "focal:gamma=0.5,alpha=-1", "-l", "hinge", "-l", "squared_hinge",
        "-l", "exponential", "--logits", "-t", "y", "-p", "logit", "-p", "logit2", "--grad", "--by", "grp",
        "--ci", "0.8", "--seed", "9", "--bootstrap", "60"]),
    "binary-prob-sum": (lambda: _binary(), ["-l", "bce", "-l", "focal", "-t", "y", "-p", "prob", "--grad",
                                            "--reduction", "sum"]),
    "multiclass-by": (lambda: pd.read_csv(DATA / "multiclass.csv").iloc[:600], [
        "-l", "cross_entropy:weight=[1,2,3,4,5],label_smoothing=0.1", "-l", "multi_hinge",
        "-l", "multi_hinge:variant=cs", "-l", "focal", "--logits", "--grad", "--by", "label",
        "--ci", "0.9", "--bootstrap", "40"]),
    "pairs-triplets": (lambda: pd.concat([pd.read_csv(DATA / "pairs.csv").iloc[:400],
                                          pd.read_csv(DATA / "triplets.csv").iloc[:400]], axis=1),
                       ["-l", "contrastive", "-l", "triplet", "-l", "triplet:squared=false,normalize=true", "--grad",
                        "--task", "metric", "--col", "target=similar"]),
    "segmentation": (lambda: _seg("segmentation.parquet"), [
        "-l", "dice", "-l", "generalized_dice", "-l", "tversky:alpha=0.3,beta=0.7", "-l", "dice_bce",
        "--ci", "0.9", "--seed", "4", "--bootstrap", "40"]),
    "segmentation-multiclass": (lambda: _seg("segmentation_multiclass.parquet"), [
        "-l", "dice", "-l", "generalized_dice", "-l", "tversky", "-l", "dice_bce:include_background=false"]),
    "distributions": (lambda: pd.read_csv(DATA / "distributions.csv").iloc[:500],
                      ["-l", "kl", "-l", "js:base=2", "-l", "tv", "--grad"]),
    "vae": (lambda: pd.read_parquet(DATA / "vae.parquet").iloc[:400], ["-l", "vae_kl", "--grad"]),
    "distill-no-target": (lambda: pd.read_parquet(DATA / "distill.parquet").iloc[:400].drop(columns=["label"]),
                          ["-l", "distill:temperature=4,alpha=0.7", "--grad"]),
    "distill-with-target": (lambda: pd.read_parquet(DATA / "distill.parquet").iloc[:400],
                            ["-l", "distill:temperature=4,alpha=0.7", "--grad"]),  # has_target is in the state
}


def _case(v):
    return v if hasattr(v, "values") and hasattr(v, "marks") else pytest.param(*v)


@pytest.mark.parametrize("make,args", [_case(v) for v in CASES.values()], ids=list(CASES))
def test_merge_equals_single_run(tmp_path, capsys, make, args):
    df = make()
    n = len(df)
    whole, parts = split(df, [1, n // 3, n // 3 + n // 5], tmp_path)  # 1 row, then uneven shards
    ref = single(capsys, whole, args)
    states = emit(capsys, parts, args, tmp_path)
    got, err = merged(capsys, states)
    # no note (every shard gave its --row-offset) but the documented one on top1_share, and the
    # single run's on too few bootstrap replicates for the level (these cases use 40 or 60)
    boot = {line for line in err.splitlines() if "bootstrap replicate" in line}
    assert set(err.splitlines()) - boot <= {f"lossctl: note: {LOWER}"}
    if "--ci" in args:
        from lossctl.engine import bootstrap_notes

        level = float(args[args.index("--ci") + 1])
        reps = int(args[args.index("--bootstrap") + 1]) if "--bootstrap" in args else 1000
        assert boot == {f"lossctl: note: {n}" for n in bootstrap_notes(level, reps)}
    assert close(comparable(ref), comparable(got, ref)) == []
    # the order of the state files does not matter
    got2, _ = merged(capsys, [states[2], states[0], states[3], states[1]])
    assert close(comparable(ref), comparable(got2, ref)) == []
    assert got["rows"] == n and got["bindings"] == ref["bindings"]
    if "--ci" in args:
        assert all("ci" in r for r in got["results"])
        assert got["results"] and [r["ci"] for r in got["results"]] == [r["ci"] for r in ref["results"]]
    if args.count("-p") > 1:
        assert len(got["comparisons"]) == len(ref["comparisons"]) > 0


def test_bucket_bootstrap_and_top1_share(tmp_path, capsys):
    """Past 2**15 rows the bootstrap resamples hashed row blocks: still exact with offsets.
    A shard whose rows fill the merged top 1% makes top1_share a lower bound, with a note."""
    rng = np.random.default_rng(1)
    n = 33_000
    df = pd.DataFrame({"y": rng.normal(size=n)})
    df["yhat"] = df.y + rng.standard_t(3, size=n)
    df["yhat2"] = df.y + rng.normal(size=n)
    args = ["-l", "mse", "-p", "yhat", "-p", "yhat2", "--ci", "0.9", "--seed", "3", "--bootstrap", "30", "--grad"]
    whole, parts = split(df, [1, 30_000, 31_000], tmp_path)
    ref = single(capsys, whole, args)
    got, _ = merged(capsys, emit(capsys, parts, args, tmp_path))
    assert close(comparable(ref), comparable(got)) == []

    df.loc[:999, "yhat"] += 100  # the largest gradients all in the first shard
    whole, parts = split(df.iloc[:3000], [1000, 1001], tmp_path)
    args = ["-l", "mse", "--grad"]
    ref = single(capsys, whole, args)
    got, err = merged(capsys, emit(capsys, parts, args, tmp_path, tag="t"))
    # a shard's state keeps at least 1,024 candidates: small shards merge exactly
    assert "top1_share is a lower bound" not in err
    assert got["results"][0]["grad"]["top1_share"] == pytest.approx(ref["results"][0]["grad"]["top1_share"], rel=RTOL)

    m = 300_000  # the merged top 1% (3,000 rows) all in a shard that kept 2 × 1,000
    big = pd.DataFrame({"y": rng.normal(size=m)})
    big["yhat"] = big.y + rng.normal(size=m)
    big.loc[:99_999, "yhat"] += 100
    whole, parts = split(big, [100_000, 100_001], tmp_path)
    ref = single(capsys, whole, args)
    got, err = merged(capsys, emit(capsys, parts, args, tmp_path, tag="u"))
    assert "top1_share is a lower bound" in err
    assert got["results"][0]["grad"]["top1_share"] <= ref["results"][0]["grad"]["top1_share"]
    for k in ("mean", "l2", "abs_mean", "max", "min", "zero_frac"):
        assert got["results"][0]["grad"][k] == pytest.approx(ref["results"][0]["grad"][k], rel=RTOL)


# ------------------------------------------------------------------ offsets, repeats, order


@pytest.fixture()
def reg_shards(tmp_path, capsys):
    whole, parts = split(_reg(), [1, 250], tmp_path)
    return whole, parts, tmp_path


def test_offsets_gaps_overlaps_and_repeats(reg_shards, capsys):
    whole, parts, d = reg_shards
    args = ["-l", "mse", "--grad", "--ci", "0.9", "--bootstrap", "50"]
    ref = single(capsys, whole, args)
    good = emit(capsys, parts, args, d)
    # no --row-offset at all: values exact, the interval is not promised: a note says so
    plain = emit(capsys, parts, args, d, offsets=False, tag="n")
    got, err = merged(capsys, plain)
    assert got["results"][0]["value"] == pytest.approx(ref["results"][0]["value"], rel=RTOL)
    assert "--row-offset" in err
    # a gap (a shard left out) and an overlap (a wrong offset) also get the note
    _, err = merged(capsys, [good[0], good[2]])
    assert "--row-offset" in err
    code, _, _ = run(capsys, "eval", parts[2][0], *args, "--emit-state", d / "wrong", "-q", "-f", "json",
                     "--row-offset", "100")
    assert code == 0
    got, err = merged(capsys, [good[0], good[1], d / "wrong"])
    assert "--row-offset" in err
    assert got["results"][0]["value"] == pytest.approx(ref["results"][0]["value"], rel=RTOL)
    # the same shard twice would count its rows twice: refused, by path or by content
    one_line_error(*run(capsys, "merge", *good, good[2], "-f", "json"), "given twice")
    shutil.copy(good[1], d / "copy.state")
    one_line_error(*run(capsys, "merge", *good, d / "copy.state", "-f", "json"), "the same shard as")
    one_line_error(*run(capsys, "merge", *plain, plain[0], "-f", "json"), "given twice")


@pytest.mark.parametrize("other,needle", [
    (["-l", "mae", "--grad"], "losses, parameters or prediction sets differ"),
    (["-l", "mse", "-l", "mae", "--grad"], "losses, parameters or prediction sets differ"),
    (["-l", "huber:delta=2", "--grad"], "losses, parameters or prediction sets differ"),
    (["-l", "mse", "--grad", "-p", "yhat2"], "losses, parameters or prediction sets differ"),
    (["-l", "mse", "--grad", "-t", "yhat3"], "columns differ"),
    (["-l", "mse", "--grad", "-w", "weight"], "columns differ"),
    (["-l", "mse"], "options differ"),
    (["-l", "mse", "--grad", "--ci", "0.9"], "options differ"),
    (["-l", "mse", "--grad", "--reduction", "sum"], "options differ"),
    (["-l", "mse", "--grad", "--by", "region"], "--by columns differ"),
])
def test_shards_evaluated_differently_are_refused(reg_shards, capsys, other, needle):
    _, parts, d = reg_shards
    a = emit(capsys, parts[:1], ["-l", "mse", "--grad"], d, tag="a")
    b = emit(capsys, parts[1:2], other, d, tag="b")
    one_line_error(*run(capsys, "merge", a[0], b[0], "-f", "json"), needle, "shards must be evaluated alike")


def test_versions(reg_shards, capsys):
    whole, parts, d = reg_shards
    args = ["-l", "mse", "--grad"]
    ref = single(capsys, whole, args)
    states = emit(capsys, parts, args, d)
    doc = json.loads(states[1].read_text())
    doc["lossctl_version"] = "0.0.1"  # another release writing the same format: merged, with a note
    states[1].write_text(json.dumps(doc))
    got, err = merged(capsys, states)
    assert close(comparable(ref), comparable(got)) == []
    assert "written by lossctl 0.0.1" in err
    doc["version"] = 2
    states[1].write_text(json.dumps(doc))
    one_line_error(*run(capsys, "merge", *states, "-f", "json"), "version 2 is not 1")


# ------------------------------------------------------------------ damaged files


def _set(path, value):
    def edit(doc):
        x = doc
        for k in path[:-1]:
            x = x[k]
        x[path[-1]] = value
    return edit


def _drop(key):
    return lambda doc: doc.pop(key)


EDITS = {
    "rows-string": _set(["rows"], "12"),
    "rows-negative": _set(["rows"], -5),
    "offset-string": _set(["row_offset"], "x"),
    "sources-number": _set(["sources"], 3),
    "states-object": _set(["states"], {}),
    "states-empty": _set(["states"], []),
    "groups-string": _set(["groups"], "x"),
    "groups-item": _set(["groups"], [{"key": 1}]),
    "no-states": _drop("states"),
    "no-bindings": _drop("bindings"),
    "state-string": _set(["states", 0], "abc"),
    "kind": _set(["states", 0, "kind"], "other"),
    "n-string": _set(["states", 0, "n"], "abc"),
    "n-float": _set(["states", 0, "n"], 1.5),
    "no-n": lambda doc: doc["states"][0].pop("n"),
    "totals-string": _set(["states", 0, "totals"], "abc"),
    "totals-text": _set(["states", 0, "totals", "s"], ["a", "b"]),
    "totals-short": _set(["states", 0, "totals", "s"], [1.0]),
    "totals-long": _set(["states", 0, "totals", "s"], [1.0, 2.0, 3.0]),
    "grad-null": _set(["states", 0, "grad"], None),
    "grad-rows": _set(["states", 0, "grad", "rows"], "many"),
    "grad-top": _set(["states", 0, "grad", "top"], ["x"]),
    "grad-keys": _set(["states", 0, "grad", "sample_key"], [-1]),
    "boot-null": _set(["states", 0, "boot"], None),
    "boot-string": _set(["states", 0, "boot"], "x"),
    "boot-rows": _set(["states", 0, "boot", "rows"], [[["a", 1]]]),
    "boot-idx": _set(["states", 0, "boot", "idx"], [[-1]]),
    "boot-count": _set(["states", 0, "boot", "count"], 3),
    "param-type": _set(["jobs", 0, "params", "delta"], "abc"),
    "param-range": _set(["jobs", 0, "params", "delta"], -1),
    "unknown-loss": _set(["jobs", 0, "spec"], "nosuch"),
    "options": _set(["options", "reduction"], "median"),
    "context": _set(["context"], "x"),
}
TEXTS = {"bad-json": '{"format": "lossctl-state", ', "empty": "", "array": "[1, 2]", "not-utf8": "\udcff",
         "deep": "[" * 100_000 + "]" * 100_000}


@pytest.mark.parametrize("name", list(EDITS) + list(TEXTS))
def test_damaged_state_file(tmp_path, capsys, name):
    whole, parts = split(_reg(300), [1], tmp_path)
    args = ["-l", "huber:delta=20", "--grad", "--ci", "0.9", "--bootstrap", "20"]
    s0, s1 = emit(capsys, parts, args, tmp_path)
    if name in TEXTS:
        s1.write_bytes(TEXTS[name].encode("utf-8", "surrogateescape"))
    else:
        doc = json.loads(s1.read_text())
        EDITS[name](doc)
        s1.write_text(json.dumps(doc))
    code, out, err = run(capsys, "merge", s0, s1, "-f", "json")
    one_line_error(code, out, err, str(s1))
    assert any(w in err for w in ("damaged state file", "not a lossctl state file", "differ from those of"))
    # the damaged file first, alone: the same kind of answer
    code, out, err = run(capsys, "merge", s1, "-f", "json")
    one_line_error(code, out, err, str(s1))


def test_states_of_different_sizes_are_refused(tmp_path, capsys):
    """Two well-formed states whose sums do not line up (a different class layout) are not added."""
    _, parts = split(_reg(300), [100], tmp_path)
    s0, s1 = emit(capsys, parts, ["-l", "mse"], tmp_path)
    doc = json.loads(s1.read_text())
    doc["states"][0]["totals"] = {"s": [1.0, 2.0, 3.0], "c": [0.0, 0.0, 0.0]}
    s1.write_text(json.dumps(doc))
    one_line_error(*run(capsys, "merge", s0, s1, "-f", "json"), "cannot merge the state of mse")


# ------------------------------------------------------------------ states that cannot be saved


@pytest.mark.parametrize("path,args,needle", [
    ("embeddings.parquet", ["-l", "triplet_mined"], "triplet_mined: its state cannot be saved"),
    ("wasserstein.csv", ["-l", "wasserstein"], "wasserstein: its state cannot be saved"),
    ("multiclass.csv", ["-l", "cross_entropy:weight=balanced", "--logits"], "whole-data facts"),
    ("segmentation.parquet", ["-l", "dice"], "per-image segmentation states"),
])
def test_unsaveable_states_refuse_and_write_nothing(tmp_path, capsys, path, args, needle):
    state = tmp_path / "s.state"
    one_line_error(*run(capsys, "eval", DATA / path, *args, "--emit-state", state, "-f", "json", "-q"), needle)
    assert not state.exists()


@pytest.mark.parametrize("loss", ["dice", "dice_bce", "generalized_dice", "tversky"])
def test_two_pass_gradients_refuse(tmp_path, capsys, loss):
    df = _seg("segmentation.parquet").iloc[:500]
    df.to_parquet(tmp_path / "seg.parquet", index=False)
    state = tmp_path / "s.state"
    code, out, err = run(capsys, "eval", tmp_path / "seg.parquet", "-l", loss, "--grad", "--emit-state", state,
                         "-f", "json", "-q")
    one_line_error(code, out, err, "second pass")
    assert not state.exists()


# ------------------------------------------------------------------ the engine's state round trip


class _Learns(RowMeanKernel):
    """A toy kernel that learns a fact from the data, as distill learns whether a target is bound."""

    state_attrs = ("saw_target",)

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.saw_target = None

    def rows(self, b: Batch, grad: bool):
        self.saw_target = b.get("target") is not None
        return b["pred"] ** 2, ({"pred": 2 * b["pred"]} if grad else None), None

    def extra(self, totals):
        return {"saw_target": self.saw_target}


def test_state_attrs_survive_the_state_file():
    ctx = Context(task="regression", grad=True, top_keep=2)
    opts = Options(grad=True, ci=0.9)
    a, b = DecomposableState(_Learns({}, ctx), opts), DecomposableState(_Learns({}, ctx), opts)
    x = np.arange(5.0)
    a.update(Batch({"pred": x[:2], "target": x[:2]}, 2))
    b.update(Batch({"pred": x[2:], "target": x[2:]}, 3, offset=2))
    da, db = (json.loads(json.dumps(s.to_dict())) for s in (a, b))
    assert da["kernel"] == {"saw_target": True}
    la = DecomposableState(_Learns({}, ctx), opts).load(da)
    lb = DecomposableState(_Learns({}, ctx), opts).load(db)
    la.merge(lb)
    res = la.result()
    assert res["extra"] == {"saw_target": True}
    assert res["value"] == pytest.approx(np.mean(x ** 2), rel=RTOL)
    assert res["grad"]["l2"] == pytest.approx(np.linalg.norm(2 * x), rel=RTOL)
    # a fresh state that never saw data takes the fact from the one merged into it
    c = DecomposableState(_Learns({}, ctx), opts)
    c.merge(la)
    assert c.kernel.saw_target is True
    # shards that learnt different facts are not merged (one run would have refused the mix)
    other = DecomposableState(_Learns({}, ctx), opts).load(dict(db, kernel={"saw_target": False}))
    with pytest.raises(ValueError, match="disagree on saw_target"):
        DecomposableState(_Learns({}, ctx), opts).load(da).merge(other)
    bad = copy.deepcopy(da)
    bad["kernel"] = {"saw_target": [1]}
    with pytest.raises(TypeError):
        DecomposableState(_Learns({}, ctx), opts).load(bad)


def test_mixed_label_codings_across_shards_are_refused(tmp_path, capsys):
    df = _binary(200)
    a, b = df.iloc[:100], df.iloc[100:].copy()
    b["y"] = 2 * b["y"] - 1  # {0,1} in one shard, {-1,+1} in the other: one run refuses the mix
    a.to_parquet(tmp_path / "a.parquet", index=False)
    b.to_parquet(tmp_path / "b.parquet", index=False)
    args = ["-l", "hinge", "-t", "y", "-p", "logit"]
    sa = emit(capsys, [(tmp_path / "a.parquet", 0)], args, tmp_path, tag="a")
    sb = emit(capsys, [(tmp_path / "b.parquet", 100)], args, tmp_path, tag="b")
    one_line_error(*run(capsys, "merge", *sa, *sb, "-f", "json"), "disagree")


def test_text_that_reads_nan_stays_text_and_an_unknown_task_is_damage(cli, tmp_path):
    # only numbers decode "nan"/"inf": a column or group label named "nan" is text, and a
    # task of "nan" is a damaged file (exit 2), never a float reaching the merge (exit 3)
    data = tmp_path / "d.csv"
    data.write_text("y,yhat,nan\n1,2,a\n2,2.5,b\n3,3,a\n")
    state = tmp_path / "s.json"
    assert cli("eval", data, "-l", "mse", "--by", "nan", "--emit-state", state, "-f", "json").code == 0
    merged = cli("merge", state, "-f", "json")
    assert merged.code == 0 and merged.json()["groups"][0]["by"] == "nan"
    doc = json.loads(state.read_text())
    for field, value in (("task", "nan"), ("task", "inf"), ("by", ["inf"])):
        bad = tmp_path / f"bad-{field}.json"
        bad.write_text(json.dumps({**doc, field: value}))
        r = cli("merge", bad)
        if field == "task":
            assert r.code == 2 and "damaged state file" in r.err and r.out == ""
        else:  # a --by column named "inf" is a name: merge reads it as one
            assert r.code == 0, r.err
