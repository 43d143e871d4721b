"""Generate the classification sample files (fixed seed, so the files are reproducible).

    python sample_data/make_classification.py

binary.csv / binary.parquet
    4000 rows from an imbalanced binary problem (about 8% positives): ``y`` the label
    (0/1) and ``prob`` a classifier's predicted probability of the positive class. The
    classifier is informative but slightly over-confident, as boosted trees often are.
multiclass.csv / multiclass.parquet
    3000 rows from a 5-class problem with unequal class frequencies: ``label`` the class
    index 0..4 and ``logit_0..logit_4`` the classifier's logits (lossctl reads columns
    named ``logit_*`` as logits).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SEED = 20240611


def binary(rng: np.random.Generator, n: int = 4000) -> pd.DataFrame:
    y = (rng.random(n) < 0.08).astype(np.int64)
    # true log-odds: base rate plus a signal the model partly sees
    signal = rng.normal(size=n) + 2.2 * y
    noise = rng.normal(scale=0.8, size=n)
    z = -3.6 + 1.35 * (signal + noise)  # a little over-confident
    prob = 1.0 / (1.0 + np.exp(-z))
    prob = np.clip(np.round(prob, 6), 1e-6, 1 - 1e-6)
    return pd.DataFrame({"y": y, "prob": prob})


def multiclass(rng: np.random.Generator, n: int = 3000) -> pd.DataFrame:
    priors = np.array([0.38, 0.25, 0.17, 0.12, 0.08])
    label = rng.choice(5, size=n, p=priors)
    # class means on a 5-d score space; classes 2 and 3 overlap the most
    means = np.eye(5) * 2.4
    means[2, 3] = means[3, 2] = 1.1
    scores = means[label] + rng.normal(scale=1.0, size=(n, 5))
    logits = 1.2 * scores + np.log(priors)  # a prior shift, as a trained model learns
    logits -= logits.mean(axis=1, keepdims=True)
    df = pd.DataFrame({"label": label.astype(np.int64)})
    for c in range(5):
        df[f"logit_{c}"] = np.round(logits[:, c], 4)
    return df


def main() -> None:
    rng = np.random.default_rng(SEED)
    for name, df in (("binary", binary(rng)), ("multiclass", multiclass(rng))):
        df.to_csv(HERE / f"{name}.csv", index=False)
        df.to_parquet(HERE / f"{name}.parquet", index=False)
        print(f"wrote {name}.csv and {name}.parquet: {len(df)} rows, columns {', '.join(df.columns)}")


if __name__ == "__main__":
    main()
