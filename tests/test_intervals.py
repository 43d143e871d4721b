"""Bootstrap intervals (issue 11, item 2): one resampling per set of states, shared by every
job and every paired delta, rows hashed once per batch, the fused sums kept with ``--ci``.

The intervals are pinned to the figures the engine gave before this work
(``fixtures/intervals_golden.json``, written by ``python tests/test_intervals.py`` at
commit 3f0f6f7, where every delta redrew its own resampling): the same method and seed
must give them to rtol 1e-12 in all three regimes of the units — rows with a multinomial
draw (≤ 4,096 rows), rows with one bincount per replicate (4,097–32,768 rows), and
4,096 hashed row blocks (more rows) — with several prediction sets, several losses,
weights, ``--by`` slices and ``lossctl check``. A plain numpy oracle checks the method
itself on the hashed blocks.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "fixtures", "intervals_golden.json")


def _data(path: str, n: int, seed: int, *, binary: bool = False) -> str:
    """n rows: y, three prediction sets, weights, a 3-valued slice column (lopsided)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    g = np.where(rng.random(n) < 0.7, "a", np.where(rng.random(n) < 0.5, "b", "c"))
    w = 0.25 + rng.random(n) * 2
    if binary:
        y = (rng.random(n) < 0.4).astype(float)
        cols = {"y": y}
        for k in range(3):
            z = (2 * y - 1) * (0.5 + 0.3 * k) + rng.normal(size=n)
            cols[f"p{k}"] = 1 / (1 + np.exp(-z))
    else:
        y = rng.normal(3, 2, n)
        cols = {"y": y}
        for k in range(3):
            e = rng.normal(0, 0.8 + 0.2 * k, n)
            e[rng.random(n) < 0.01] *= 20  # a few gross errors
            cols[f"p{k}"] = y + e
    cols.update(w=w, g=g)
    pq.write_table(pa.table(cols), path)
    return path


PREDS = ["-t", "y", "-p", "p0", "-p", "p1", "-p", "p2"]

# name → (rows, data seed, binary, arguments after the file)
CASES = {
    # rows ≤ 4,096 overall and per slice: a multinomial draw over rows
    "multinomial": (3000, 1, False, [*PREDS, "-l", "mse", "-l", "mae", "-l", "huber:delta=0.5", "-w", "w",
                                     "--by", "g", "--ci", "0.9", "--bootstrap", "300", "--seed", "3"]),
    # 4,096 < rows ≤ 32,768: one bincount of drawn rows per replicate (slice "a" too)
    "row-draws": (9000, 2, False, [*PREDS, "-l", "mse", "-l", "quantile:tau=0.3", "-l", "rmse", "--by", "g", "--ci", "0.95",
                                   "--bootstrap", "120", "--seed", "11", "--batch-rows", "4000"]),
    # past 32,768 rows: 4,096 hashed row blocks (slice "a" too; batches cross the switch)
    "blocks": (50000, 3, False, [*PREDS, "-l", "mse", "-l", "mae", "-w", "w", "--by", "g", "--ci", "0.95",
                                 "--bootstrap", "150", "--seed", "0", "--batch-rows", "7000"]),
    "blocks-sum": (40000, 4, False, [*PREDS, "-l", "mae", "-l", "log_cosh", "--reduction", "sum", "--ci", "0.8",
                                     "--bootstrap", "100", "--seed", "2"]),
    "binary": (6000, 5, True, [*PREDS, "-l", "bce", "-l", "focal", "--by", "g", "--ci", "0.9",
                               "--bootstrap", "200", "--seed", "4"]),
    "binary-blocks": (40000, 6, True, [*PREDS, "-l", "bce", "-l", "focal:gamma=1.5", "-w", "w", "--ci", "0.9",
                                       "--bootstrap", "100", "--seed", "9"]),
}

# name → (data case, arguments after the file): check's paired intervals, overall and per slice
CHECKS = {
    "check-rows": ("multinomial", ["-p", "p2", "--baseline-pred", "p0", "-t", "y", "-w", "w", "--by", "g",
                                   "--assert", "mse <= baseline * 1.5", "--assert", "mae <= baseline + 0.1",
                                   "--assert", "huber:delta=0.5 < 2", "--ci", "0.9", "--bootstrap", "300",
                                   "--seed", "3"]),
    "check-blocks": ("blocks", ["-p", "p1", "--baseline-pred", "p0", "-t", "y", "--by", "g",
                                "--assert", "mse <= baseline * 1.2", "--assert", "mae <= baseline",
                                "--ci", "0.95", "--bootstrap", "150", "--seed", "0", "--batch-rows", "7000"]),
}


def _intervals(doc: dict) -> dict[str, list[float]]:
    """Every interval of an eval or check document, by a name that says where it is."""
    out: dict[str, list[float]] = {}

    def results(prefix: str, d: dict) -> None:
        for r in d.get("results", []):
            if r.get("ci") is not None:
                out[f"{prefix}{r['spec']}|{r['pred']}|ci"] = r["ci"]
        for c in d.get("comparisons", []):
            if c.get("ci") is not None:
                out[f"{prefix}{c['spec']}|{c['pred']}-{c['baseline']}|delta_ci"] = c["ci"]

    results("", doc)
    for g in doc.get("groups") or []:
        results(f"[{g['value']}]", g)
    for c in doc.get("checks", []):
        for k in ("ci", "delta_ci", "excess_ci"):
            if c.get(k) is not None:
                out[f"[{c.get('group')}]{c['check']}|{k}"] = c[k]
    return out


def _run(tmp, name: str) -> dict[str, list[float]]:
    from lossctl.cli import main

    if name in CHECKS:
        data, args = CHECKS[name]
        cmd = ["check"]
    else:
        data, args, cmd = name, CASES[name][3], ["eval"]
    n, seed, binary, _ = CASES[data]
    path = _data(os.path.join(tmp, f"{data}.parquet"), n, seed, binary=binary)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([*cmd, path, *args, "-f", "json"])
    assert code in (0, 1), f"{name}: exit {code}"
    return _intervals(json.loads(buf.getvalue()))


def _golden() -> dict:
    with open(GOLDEN) as f:
        return json.load(f)


@pytest.mark.parametrize("name", [*CASES, *CHECKS])
def test_intervals_are_todays_to_1e12(tmp_path, name):
    got = _run(str(tmp_path), name)
    want = _golden()[name]
    assert sorted(got) == sorted(want)
    assert len(want) >= 4
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-300), k


def test_golden_covers_every_regime():
    g = _golden()
    assert any("|delta_ci" in k and k.startswith("[") for k in g["multinomial"])  # per-slice deltas
    assert any("|delta_ci" in k and k.startswith("[") for k in g["blocks"])
    assert any(k.endswith("excess_ci") for k in g["check-blocks"])


def test_the_blocks_are_the_documented_method(tmp_path):
    """An independent oracle of the hashed-block bootstrap: rows hashed by splitmix64 of their
    index into 4,096 blocks, block sums resampled by one multinomial draw (the seed's
    Generator), paired deltas from the same draw, percentile intervals."""
    from lossctl.cli import main

    n = 40000
    path = _data(str(tmp_path / "d.parquet"), n, 7)
    import contextlib
    import io

    import pyarrow.parquet as pq

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["eval", path, "-t", "y", "-p", "p0", "-p", "p2", "-l", "mae", "-w", "w", "--ci", "0.9",
                     "--bootstrap", "200", "--seed", "6", "-f", "json"]) == 0
    doc = json.loads(buf.getvalue())
    t = pq.read_table(path).to_pandas()
    z = np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)  # splitmix64 (Steele et al. 2014)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    block = ((z ^ (z >> np.uint64(31))) % np.uint64(4096)).astype(np.intp)
    w = t.w.to_numpy()
    sw = np.bincount(block, weights=w, minlength=4096)
    counts = np.random.default_rng(6).multinomial(4096, np.full(4096, 1 / 4096), size=200).astype(float)
    reps = []
    for p in ("p0", "p2"):
        swl = np.bincount(block, weights=w * np.abs(t[p].to_numpy() - t.y.to_numpy()), minlength=4096)
        reps.append(counts @ swl / (counts @ sw))
    q = [5, 95]
    assert doc["results"][0]["ci"] == pytest.approx(np.percentile(reps[0], q), rel=1e-11)
    assert doc["results"][1]["ci"] == pytest.approx(np.percentile(reps[1], q), rel=1e-11)
    assert doc["comparisons"][0]["ci"] == pytest.approx(np.percentile(reps[1] - reps[0], q), rel=1e-10)


def _count_draws(monkeypatch) -> list[int]:
    """Count the bootstrap's resamplings: each one starts a Generator from the seed."""
    seeds: list[int] = []
    real = np.random.default_rng

    def counting(seed=None):
        seeds.append(seed)
        return real(seed)

    monkeypatch.setattr(np.random, "default_rng", counting)
    return seeds


@pytest.mark.parametrize("by", [False, True])
def test_one_resampling_per_set_shared_by_every_job_and_delta(cli, tmp_path, monkeypatch, by):
    path = _data(str(tmp_path / "d.parquet"), 5000, 8)
    args = ["eval", path, *PREDS, "-l", "mse", "-l", "mae", "--ci", "0.9", "--bootstrap", "50", "--seed", "4",
            "-f", "json", *(["--by", "g"] if by else [])]
    seeds = _count_draws(monkeypatch)
    doc = cli(*args).json()
    assert len(doc["comparisons"]) == 4 and all(c["ci"] for c in doc["comparisons"])
    # the whole data, then each of the 3 slices (seed + 1, + 2, + 3): never one draw per delta
    assert seeds == ([4, 5, 6, 7] if by else [4])


def test_check_draws_once_per_set_of_states(cli, tmp_path, monkeypatch):
    path = _data(str(tmp_path / "d.parquet"), 5000, 8)
    seeds = _count_draws(monkeypatch)
    r = cli("check", path, "-p", "p1", "--baseline-pred", "p0", "-t", "y", "--by", "g", "--assert",
            "mse <= baseline * 2", "--assert", "mae <= baseline * 2", "--ci", "0.9", "--bootstrap", "50",
            "--seed", "4", "-f", "json")
    assert len(r.json()["checks"]) == 2 + 2 * 3
    assert seeds == [4, 5, 6, 7]  # the whole data and the 3 slices, each read by both assertions


def test_rows_are_hashed_once_per_batch_for_every_state(cli, tmp_path, monkeypatch):
    """Past 32,768 rows each batch's rows are hashed into blocks once, whatever the number of
    (loss, prediction set) states; the rows held until then once per state."""
    import lossctl.accumulate as acc

    path = _data(str(tmp_path / "d.parquet"), 100_000, 9)
    hashed: list[int] = []
    real = acc.splitmix64

    def counting(x):
        hashed.append(np.size(x))
        return real(x)

    monkeypatch.setattr(acc, "splitmix64", counting)
    import threading

    monkeypatch.setattr(acc, "_LAST", threading.local())  # (no row keys cached from an earlier test)
    import lossctl.engine as engine

    monkeypatch.setattr(engine, "splitmix64", counting)
    doc = cli("eval", path, *PREDS, "-l", "mse", "-l", "mae", "-l", "huber", "-w", "w", "--ci", "0.9",
              "--bootstrap", "20", "--batch-rows", "10000", "-f", "json").json()
    states = len(doc["results"])
    assert states == 9
    # 10 batches: every row once, and (at the switch to blocks) the rows held, once per state
    assert sum(hashed) <= 100_000 + states * 40_000
    assert len(hashed) <= 10 + states


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "quantile:tau=0.3", "log_cosh", "bce", "focal"])
@pytest.mark.parametrize("grad", [False, True])
def test_values_with_ci_are_the_values_without(loss, grad):
    """--ci keeps the fused sums: the value (and gradient summary) is the very same double."""
    import lossctl

    rng = np.random.default_rng(10)
    n = 70_000
    if loss in ("bce", "focal"):
        y = (rng.random(n) < 0.3).astype(float)
        p = np.clip(rng.random(n), 1e-3, 1 - 1e-3)
    else:
        y = rng.normal(size=n)
        p = y + rng.standard_t(3, n)
    a = lossctl.evaluate(y, p, loss, grad=grad, batch_rows=20_000)
    b = lossctl.evaluate(y, p, loss, grad=grad, batch_rows=20_000, ci=0.9, bootstrap=20)
    assert b.ci is not None and b.value == a.value
    assert b.grad == a.grad


@pytest.mark.parametrize("replicates", [300, 2000])
def test_a_resampling_drawn_ahead_in_a_thread_is_the_same(replicates):
    """The first chunk of counts drawn ahead (in a thread, while batches stream) and the
    Generator continued from it give the counts of a draw made on the spot."""
    from lossctl import engine

    mat = np.random.default_rng(1).random((4096, 3))
    plain = engine.Resampling([mat], replicates, 5).totals(0)
    engine.draw_ahead(4096, replicates, 5)
    assert (4096, replicates, 5) in engine._AHEAD
    ahead = engine.Resampling([mat], replicates, 5).totals(0)
    assert (4096, replicates, 5) not in engine._AHEAD  # taken
    assert np.array_equal(ahead, plain)


def test_the_whole_datas_draw_starts_once_the_rows_are_blocks(cli, tmp_path, monkeypatch):
    from lossctl import engine

    path = _data(str(tmp_path / "d.parquet"), 50_000, 3)
    started = []
    real = engine.draw_ahead
    monkeypatch.setattr(engine, "draw_ahead", lambda *a: started.append(a) or real(*a))
    doc = cli("eval", path, *PREDS, "-l", "mse", "--ci", "0.9", "--bootstrap", "77", "--seed", "8",
              "--batch-rows", "10000", "-f", "json").json()
    assert set(started) == {(4096, 77, 8)} and len(started) >= 3  # each state asks; one draw
    assert not engine._AHEAD  # and the intervals took it
    assert all("hashed row blocks" in r["ci_method"] for r in doc["results"])


# ---------------------------------------------------------------- --grad of focal (item 5)


@pytest.mark.parametrize("logits", [False, True])
@pytest.mark.parametrize("alpha", [0.25, -1.0])
def test_focal_gradient_shares_the_loss_logs_and_gives_the_same_numbers(monkeypatch, logits, alpha):
    """The binary focal kernel computes its loss and gradient from one set of logs per block:
    the very numbers of focal_prob / focal_prob_grad (sigmoid_focal / sigmoid_focal_grad)."""
    from lossctl.engine import Batch, Context
    from lossctl.losses import classification as C

    rng = np.random.default_rng(12)
    n = 150_000  # three blocks of 2¹⁶ rows
    y = (rng.random(n) < 0.3).astype(float)
    z = rng.normal(0, 3, n)
    p = z if logits else 1 / (1 + np.exp(-z))
    k = C.FocalKernel({"gamma": 1.5, "alpha": alpha, "logits": logits, "eps": 1e-7}, Context("binary"))
    calls = []
    for name in ("_prob_logs", "log_sigmoid"):
        real = getattr(C, name)
        monkeypatch.setattr(C, name, lambda *a, _real=real, _name=name, **kw: calls.append(_name) or _real(*a, **kw))
    loss, grads, _ = k.rows(Batch({"target": y, "pred": p}, n), True)
    # one set of logs per block (log σ(±z): two calls), not one for the loss and one for the gradient
    assert len(calls) == 3 * (2 if logits else 1)
    monkeypatch.undo()
    if logits:
        want_l = C.sigmoid_focal(y, z, gamma=1.5, alpha=alpha)
        want_g = C.sigmoid_focal_grad(y, z, gamma=1.5, alpha=alpha)
    else:
        want_l = C.focal_prob(y, p, gamma=1.5, alpha=alpha, eps=1e-7)
        want_g = C.focal_prob_grad(y, p, gamma=1.5, alpha=alpha, eps=1e-7)
    assert np.array_equal(loss, want_l) and np.array_equal(grads["pred"], want_g)


if __name__ == "__main__":  # (re)write the golden figures from the engine as it stands
    import tempfile

    sys.path.insert(0, os.path.dirname(HERE))
    with tempfile.TemporaryDirectory() as tmp:
        gold = {name: _run(tmp, name) for name in [*CASES, *CHECKS]}
    with open(GOLDEN, "w") as f:
        json.dump(gold, f, indent=1, sort_keys=True)
        f.write("\n")
    print({k: len(v) for k, v in gold.items()})


@pytest.mark.parametrize("level, replicates, note", [
    (0.9, 1, "give --bootstrap 100 or more"),
    (0.999, 1000, "give --bootstrap 10,000 or more"),
    (0.99, 1000, None),  # 5 replicates beyond each end: enough
    (0.95, 1000, None),
])
def test_too_few_replicates_for_the_level_get_a_note(cli, tmp_path, level, replicates, note):
    """A percentile interval's ends are order statistics of the replicates: with fewer than 5
    beyond an end, resampling noise moves the end itself (--bootstrap 1 gave [x, x], not even
    around the value). The interval is still computed as asked, with a note on stderr, in the
    report's warnings and, from the library, in each result's notes."""
    import pandas as pd

    import lossctl

    rng = np.random.default_rng(3)
    y = rng.normal(size=300)
    path = tmp_path / "r.csv"
    pd.DataFrame({"y": y, "yhat": y + rng.normal(size=300)}).to_csv(path, index=False)
    r = cli("eval", path, "-l", "mse", "--ci", level, "--bootstrap", replicates, "-f", "json")
    assert r.code == 0, r.err
    assert r.json()["results"][0]["ci"] is not None
    lib = lossctl.evaluate(y, pd.read_csv(path)["yhat"].to_numpy(), "mse", ci=level, bootstrap=replicates)
    if note is None:
        assert "bootstrap replicate" not in r.err and not lib.notes
    else:
        assert note in r.err and any(note in w for w in r.json()["warnings"])
        assert any(f"give bootstrap={note.split()[2].replace(',', '')} or more" in n for n in lib.notes), lib.notes
