"""Make the metric-learning sample files (fixed seed; rerun to regenerate them).

    python sample_data/make_metric.py

- pairs.csv: 2000 pairs of 8-d embeddings x1_0..x1_7, x2_0..x2_7 and `similar`
  (1: same class, 0: different classes), for `contrastive`.
- triplets.csv: 2000 rows anchor_0..7, positive_0..7, negative_0..7, for `triplet`.
- embeddings.parquet: 3000 rows, a list column `embedding` (16 float32 numbers) and an
  integer `label` (10 classes of unequal size), for `triplet_mined`.

Every embedding is a class centre plus noise, as a half-trained network gives: most
pairs and triplets are easy, some overlap, a few rows are mislabelled.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SEED = 20240611


def _centres(rng: np.random.Generator, k: int, dim: int, spread: float) -> np.ndarray:
    return rng.normal(0.0, spread, size=(k, dim))


def make_pairs(rng: np.random.Generator, n: int = 2000, dim: int = 8, k: int = 10) -> pd.DataFrame:
    centres = _centres(rng, k, dim, 0.6)
    c1 = rng.integers(0, k, n)
    similar = (rng.random(n) < 0.5).astype(np.int64)
    other = (c1 + rng.integers(1, k, n)) % k
    c2 = np.where(similar == 1, c1, other)
    noise = 0.25
    x1 = centres[c1] + rng.normal(0, noise, (n, dim))
    x2 = centres[c2] + rng.normal(0, noise, (n, dim))
    cols = {f"x1_{j}": x1[:, j].round(6) for j in range(dim)}
    cols.update({f"x2_{j}": x2[:, j].round(6) for j in range(dim)})
    cols["similar"] = similar
    return pd.DataFrame(cols)


def make_triplets(rng: np.random.Generator, n: int = 2000, dim: int = 8, k: int = 10) -> pd.DataFrame:
    centres = _centres(rng, k, dim, 0.5)
    ca = rng.integers(0, k, n)
    cn = (ca + rng.integers(1, k, n)) % k
    noise = 0.3
    a = centres[ca] + rng.normal(0, noise, (n, dim))
    p = centres[ca] + rng.normal(0, noise, (n, dim))
    neg = centres[cn] + rng.normal(0, noise, (n, dim))
    cols = {}
    for name, x in (("anchor", a), ("positive", p), ("negative", neg)):
        cols.update({f"{name}_{j}": x[:, j].round(6) for j in range(dim)})
    return pd.DataFrame(cols)


def make_embeddings(rng: np.random.Generator, n: int = 3000, dim: int = 16, k: int = 10) -> pa.Table:
    centres = _centres(rng, k, dim, 0.35)
    sizes = rng.dirichlet(np.full(k, 4.0))
    label = rng.choice(k, size=n, p=sizes)
    scale = rng.uniform(0.15, 0.3, k)  # some classes are tighter than others
    emb = centres[label] + rng.normal(0, 1, (n, dim)) * scale[label][:, None]
    # 2% mislabelled rows: hard mining will find them
    flip = rng.random(n) < 0.02
    label = np.where(flip, (label + rng.integers(1, k, n)) % k, label)
    values = pa.array(emb.astype(np.float32).reshape(-1))
    col = pa.ListArray.from_arrays(pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32)), values)
    return pa.table({"embedding": col, "label": pa.array(label.astype(np.int64))})


def main() -> None:
    rng = np.random.default_rng(SEED)
    make_pairs(rng).to_csv(HERE / "pairs.csv", index=False)
    make_triplets(rng).to_csv(HERE / "triplets.csv", index=False)
    pq.write_table(make_embeddings(rng), HERE / "embeddings.parquet")


if __name__ == "__main__":
    main()
