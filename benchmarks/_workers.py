"""The competitors of bench_eval / bench_memory, each run as its own process.

    python benchmarks/_workers.py KIND FILE

KIND is one of the names in WORKERS. Each prints one JSON object on stdout:
``{"values": {loss: value}, "grad": {loss: {stat: value}}?, "t": {"import", "read", "compute"}}``.
Only what the competitor itself would import is imported (the time to import
pyarrow, pandas or scikit-learn is part of what a user pays, and is reported
separately as ``t.import``).

The losses (LOSSES.md): r = ŷ − y; mse r², mae |r|, huber δ=1 (½r² for |r| ≤ δ,
δ(|r| − ½δ) beyond), quantile τ=0.5 (pinball max(τd, (τ−1)d), d = y − ŷ).
"""
from __future__ import annotations

import json
import os
import sys
import time

T0 = time.perf_counter()
DELTA = 1.0
TAU = 0.5
COLUMNS = ["y", "yhat"]


def four_losses(y, yh) -> dict[str, float]:
    """Hand-written numpy: the residual once, then each loss as one would write it."""
    import numpy as np

    r = yh - y
    a = np.abs(r)
    d = -r  # y − ŷ
    return {
        "mse": float(np.mean(r * r)),
        "mae": float(np.mean(a)),
        "huber": float(np.mean(np.where(a <= DELTA, 0.5 * a * a, DELTA * (a - 0.5 * DELTA)))),
        "quantile": float(np.mean(np.maximum(TAU * d, (TAU - 1.0) * d))),
    }


def grad_summary(g) -> dict[str, float]:
    """The 8 statistics of CLI.md's gradient summary, for one (n,) gradient."""
    import math

    import numpy as np

    n = g.size
    a = np.abs(g)
    abs_sum = float(a.sum())
    k = max(1, math.ceil(0.01 * n))
    top = float(np.partition(a, n - k)[n - k:].sum())
    return {
        "mean": float(g.mean()), "std": float(g.std()), "min": float(g.min()), "max": float(g.max()),
        "abs_mean": abs_sum / n, "l2": float(np.sqrt(np.dot(g, g))),
        "zero_frac": float(np.count_nonzero(g == 0)) / n, "top1_share": top / abs_sum if abs_sum > 0 else 0.0,
    }


def four_grads(y, yh) -> dict[str, dict[str, float]]:
    """Per-sample gradients ∂ℓᵢ/∂ŷᵢ of the four losses, summarised."""
    import numpy as np

    r = yh - y
    return {
        "mse": grad_summary(2.0 * r),
        "mae": grad_summary(np.sign(r)),
        "huber": grad_summary(np.clip(r, -DELTA, DELTA)),
        "quantile": grad_summary(np.where(r < 0, -TAU, np.where(r > 0, 1.0 - TAU, 0.0))),
    }


def _finish(values, t_import, t_read, t_compute, grad=None) -> None:
    out = {"values": values, "t": {"import": t_import, "read": t_read, "compute": t_compute}}
    if grad is not None:
        out["grad"] = grad
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


# ------------------------------------------------------------------ the floors


def floor_parquet(path: str, grad: bool = False) -> None:
    import numpy as np  # noqa: F401
    import pyarrow.parquet as pq

    t1 = time.perf_counter()
    t = pq.read_table(path, columns=COLUMNS)
    y = t.column("y").to_numpy()
    yh = t.column("yhat").to_numpy()
    t2 = time.perf_counter()
    values = four_losses(y, yh)
    g = four_grads(y, yh) if grad else None
    t3 = time.perf_counter()
    _finish(values, t1 - T0, t2 - t1, t3 - t2, g)


def floor_parquet_grad(path: str) -> None:
    floor_parquet(path, grad=True)


def floor_csv_arrow(path: str, grad: bool = False) -> None:
    import numpy as np  # noqa: F401
    import pyarrow as pa
    import pyarrow.csv as pacsv

    t1 = time.perf_counter()
    t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        include_columns=COLUMNS, column_types={c: pa.float64() for c in COLUMNS}))
    y = t.column("y").to_numpy()
    yh = t.column("yhat").to_numpy()
    t2 = time.perf_counter()
    values = four_losses(y, yh)
    g = four_grads(y, yh) if grad else None
    t3 = time.perf_counter()
    _finish(values, t1 - T0, t2 - t1, t3 - t2, g)


def floor_csv_arrow_grad(path: str) -> None:
    floor_csv_arrow(path, grad=True)


def floor_csv_pandas(path: str) -> None:
    import numpy as np
    import pandas as pd

    t1 = time.perf_counter()
    df = pd.read_csv(path, engine="c", usecols=COLUMNS, dtype={c: np.float64 for c in COLUMNS})
    y = df["y"].to_numpy()
    yh = df["yhat"].to_numpy()
    t2 = time.perf_counter()
    values = four_losses(y, yh)
    t3 = time.perf_counter()
    _finish(values, t1 - T0, t2 - t1, t3 - t2)


# ------------------------------------------------------------------ what a user would write


def _sklearn_losses(df) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_pinball_loss, mean_squared_error

    y, yh = df["y"], df["yhat"]
    # scikit-learn has no Huber loss (HuberRegressor is an estimator): numpy on the columns
    a = np.abs(yh.to_numpy() - y.to_numpy())
    huber = float(np.mean(np.where(a <= DELTA, 0.5 * a * a, DELTA * (a - 0.5 * DELTA))))
    return {
        "mse": float(mean_squared_error(y, yh)),
        "mae": float(mean_absolute_error(y, yh)),
        "huber": huber,
        "quantile": float(mean_pinball_loss(y, yh, alpha=TAU)),
    }


def pandas_sklearn_parquet(path: str) -> None:
    import pandas as pd
    import sklearn.metrics  # noqa: F401

    t1 = time.perf_counter()
    df = pd.read_parquet(path, columns=COLUMNS)
    t2 = time.perf_counter()
    values = _sklearn_losses(df)
    t3 = time.perf_counter()
    _finish(values, t1 - T0, t2 - t1, t3 - t2)


def pandas_sklearn_csv(path: str) -> None:
    import pandas as pd
    import sklearn.metrics  # noqa: F401

    t1 = time.perf_counter()
    df = pd.read_csv(path, usecols=COLUMNS)
    t2 = time.perf_counter()
    values = _sklearn_losses(df)
    t3 = time.perf_counter()
    _finish(values, t1 - T0, t2 - t1, t3 - t2)


# ------------------------------------------------------------------ bench_intervals: a block bootstrap by hand

BLOCKS = 4096
REPLICATES = 1000
LEVEL = 0.95


def intervals_numpy(path: str) -> None:
    """mse and mae of every prediction column against y, with a 95% block-bootstrap interval of
    each and paired intervals of each set's delta to the first, as a user writes it in numpy:
    the table read whole, then set by set the block sums of r² and |r| over 4,096 contiguous
    blocks of rows; block sums resampled 1,000 times (one multinomial draw) for every set."""
    import numpy as np
    import pyarrow.parquet as pq

    t1 = time.perf_counter()
    t = pq.read_table(path)
    preds = [c for c in t.column_names if c != "y"]
    y = t.column("y").to_numpy()
    t2 = time.perf_counter()
    n = len(y)
    starts = np.arange(BLOCKS) * n // BLOCKS
    size = np.diff(np.append(starts, n))
    sums = {"mse": np.empty((BLOCKS, len(preds))), "mae": np.empty((BLOCKS, len(preds)))}
    for k, c in enumerate(preds):  # one set at a time: block sums of r² and |r|
        r = t.column(c).to_numpy() - y
        sums["mse"][:, k] = np.add.reduceat(r * r, starts)
        sums["mae"][:, k] = np.add.reduceat(np.abs(r), starts)
    counts = np.random.default_rng(0).multinomial(BLOCKS, np.full(BLOCKS, 1 / BLOCKS), size=REPLICATES)
    q = [50 * (1 - LEVEL), 50 * (1 + LEVEL)]
    values, ci, delta_ci = {}, {}, {}
    for loss, s in sums.items():
        boot = (counts @ s) / (counts @ size)[:, None]  # replicates × sets
        values[loss] = (s.sum(axis=0) / n).tolist()
        ci[loss] = np.percentile(boot, q, axis=0).T.tolist()
        delta_ci[loss] = np.percentile(boot[:, 1:] - boot[:, :1], q, axis=0).T.tolist()
    t3 = time.perf_counter()
    json.dump({"preds": preds, "values": values, "ci": ci, "delta_ci": delta_ci,
               "t": {"import": t1 - T0, "read": t2 - t1, "compute": t3 - t2}}, sys.stdout)
    sys.stdout.write("\n")


WORKERS = {
    "floor_parquet": floor_parquet,
    "floor_parquet_grad": floor_parquet_grad,
    "floor_csv_arrow": floor_csv_arrow,
    "floor_csv_arrow_grad": floor_csv_arrow_grad,
    "floor_csv_pandas": floor_csv_pandas,
    "pandas_sklearn_parquet": pandas_sklearn_parquet,
    "pandas_sklearn_csv": pandas_sklearn_csv,
    "intervals_numpy": intervals_numpy,
}


def cmd(kind: str, path: str) -> list[str]:
    """The command line that runs worker ``kind`` on ``path``."""
    if kind not in WORKERS:
        raise KeyError(kind)
    return [sys.executable, os.path.abspath(__file__), kind, str(path)]


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in WORKERS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(WORKERS)}}} FILE")
    WORKERS[sys.argv[1]](sys.argv[2])
