"""Sample data for the divergences and distributions family, from a fixed seed.

Regenerate from the repository root:
    python sample_data/make_divergence.py
Writes, next to this script:
  distributions.csv  a 6-class classifier's predicted distributions q_0..q_5 against soft
                     targets p_0..p_5 (2000 rows; 40 rows have exact zeros in P)
  vae.parquet        an encoder's mu_0..mu_7 and logvar_0..logvar_7 (2000 rows)
  distill.parquet    teacher_0..teacher_9 and student_0..student_9 logits, and the label (2000 rows)
  wasserstein.csv    target_sample, pred_sample and a sample weight (5000 rows)
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20240611


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _round_rows(x: np.ndarray, decimals: int = 10) -> np.ndarray:
    """Round to `decimals` places and put the rounding error on each row's largest entry,
    so every row sums to 1 in decimal and to within 1e-15 in float64."""
    r = np.round(x, decimals)
    j = np.argmax(r, axis=1)
    idx = np.arange(r.shape[0])
    r[idx, j] = 0.0
    r[idx, j] = np.round(1.0 - r.sum(axis=1), decimals)
    return r


def distributions(rng: np.random.Generator, n: int = 2000, c: int = 6) -> pa.Table:
    label = rng.integers(0, c, n)
    # soft targets: label smoothing of varying strength plus a little Dirichlet noise
    eps = rng.uniform(0.02, 0.3, n)[:, None]
    p = (1 - eps) * np.eye(c)[label] + eps * rng.dirichlet(np.ones(c), n)
    # a few rows of exact zeros: hard one-hot or two-class targets
    hard = rng.choice(n, 40, replace=False)
    for k, i in enumerate(hard):
        row = np.zeros(c)
        if k % 2 == 0:
            row[label[i]] = 1.0
        else:
            other = (label[i] + 1 + rng.integers(0, c - 1)) % c
            row[label[i]], row[other] = 0.7, 0.3
        p[i] = row
    # the classifier: logits that point at the label, with noise; Q > 0 everywhere
    z = 2.5 * np.eye(c)[label] + rng.normal(0, 1.0, (n, c))
    q = _softmax(z)
    p, q = _round_rows(p), _round_rows(q)
    cols = {f"p_{j}": p[:, j] for j in range(c)}
    cols.update({f"q_{j}": q[:, j] for j in range(c)})
    return pa.table(cols)


def vae(rng: np.random.Generator, n: int = 2000, j: int = 8) -> pa.Table:
    mu = rng.normal(0, 0.8, (n, j))
    logvar = rng.normal(-1.0, 0.6, (n, j))
    cols = {f"mu_{k}": mu[:, k] for k in range(j)}
    cols.update({f"logvar_{k}": logvar[:, k] for k in range(j)})
    return pa.table(cols)


def distill(rng: np.random.Generator, n: int = 2000, c: int = 10) -> pa.Table:
    label = rng.integers(0, c, n)
    onehot = np.eye(c)[label]
    teacher = 4.0 * onehot + rng.normal(0, 1.2, (n, c))
    student = 0.6 * teacher + 1.0 * onehot + rng.normal(0, 1.0, (n, c))
    cols = {f"teacher_{k}": teacher[:, k] for k in range(c)}
    cols.update({f"student_{k}": student[:, k] for k in range(c)})
    cols["label"] = label.astype(np.int64)
    return pa.table(cols)


def wasserstein(rng: np.random.Generator, n: int = 5000) -> pa.Table:
    target = rng.gamma(2.0, 1.5, n)
    pred = np.exp(rng.normal(0.9, 0.55, n))  # a log-normal that misses the gamma's shape
    weight = rng.uniform(0.5, 2.0, n)
    return pa.table({
        "target_sample": np.round(target, 6),
        "pred_sample": np.round(pred, 6),
        "weight": np.round(weight, 4),
    })


def main() -> None:
    rng = np.random.default_rng(SEED)
    pacsv.write_csv(distributions(rng), os.path.join(HERE, "distributions.csv"))
    pq.write_table(vae(rng), os.path.join(HERE, "vae.parquet"))
    pq.write_table(distill(rng), os.path.join(HERE, "distill.parquet"))
    pacsv.write_csv(wasserstein(rng), os.path.join(HERE, "wasserstein.csv"))


if __name__ == "__main__":
    main()
