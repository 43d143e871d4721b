"""Make the regression sample files (fixed seed): python sample_data/make_regression.py

regression.{csv,parquet}: a house-price-like target in $1000s, a model's prediction
with Gaussian noise, and a few gross outliers (data-entry errors) — the case where
MSE and Huber/MAE disagree. A `region` column for slicing, a `weight` column.
interval.{csv,parquet}: the same target with a 5% and a 95% quantile prediction.
regression_baseline.csv: an older model's predictions `yhat` for the same rows (with `id`
and `y`), for `lossctl check --baseline`: noisier overall, but without the new model's bias
in the west.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))


def regression(rng: np.random.Generator, n: int = 2000) -> pd.DataFrame:
    size = rng.gamma(4.0, 30.0, n)  # m²
    region = rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1])
    base = 50 + 2.1 * size + np.select([region == "north", region == "south", region == "east"], [40, 0, 20], -10)
    y = base + rng.normal(0, 25, n)
    yhat = base + rng.normal(0, 8, n) + (region == "west") * 15  # the model is biased in the west
    out = rng.choice(n, 12, replace=False)
    y[out] *= rng.choice([10.0, 0.1], 12)  # gross data-entry errors: a zero added or lost
    return pd.DataFrame({
        "id": np.arange(1, n + 1),
        "region": region,
        "y": np.round(y, 2),
        "yhat": np.round(yhat, 2),
        "weight": np.round(rng.uniform(0.5, 2.0, n), 3),
    })


def interval(rng: np.random.Generator, n: int = 1500) -> pd.DataFrame:
    x = rng.uniform(0, 10, n)
    scale = 1 + 0.3 * x  # heteroscedastic noise
    y = 3 + 2 * x + rng.normal(0, 1, n) * scale
    z = 1.6448536269514722  # Φ⁻¹(0.95)
    mid = 3 + 2 * x + rng.normal(0, 0.3, n)
    # a slightly over-confident model: its intervals are 15% too narrow
    lower = mid - 0.85 * z * scale
    upper = mid + 0.85 * z * scale
    return pd.DataFrame({"x": np.round(x, 3), "y": np.round(y, 4), "lower": np.round(lower, 4), "upper": np.round(upper, 4)})


def baseline(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    west = (df["region"] == "west").to_numpy()
    yhat = df["yhat"].to_numpy() - 15 * west + rng.normal(0, 12, len(df))
    return pd.DataFrame({"id": df["id"], "y": df["y"], "yhat": np.round(yhat, 2)})


def main() -> None:
    rng = np.random.default_rng(20261124)
    for name, df in (("regression", regression(rng)), ("interval", interval(rng))):
        df.to_csv(os.path.join(HERE, f"{name}.csv"), index=False)
        df.to_parquet(os.path.join(HERE, f"{name}.parquet"), index=False)
        if name == "regression":  # its own seed: the files above stay as they were
            baseline(df, np.random.default_rng(20261207)).to_csv(os.path.join(HERE, "regression_baseline.csv"), index=False)


if __name__ == "__main__":
    main()
