"""Make the segmentation sample files (fixed seed): python sample_data/make_segmentation.py

segmentation.{parquet,csv}: 8 images of 48×48 pixels, one row per pixel: `image_id`
(img01..img08), `mask` (0/1: one or two small blobs, about 3% foreground) and `prob`, a
plausible predicted probability map (a blurred, slightly shifted copy of the mask seen
through noise and a sigmoid). One image has a missed object, one a false alarm.
segmentation_multiclass.parquet: 8 images of 48×48, integer `image_id` 1..8, `mask` with
classes 0 (background) and 1..3 (three small structures of different sizes), and
`prob_0..prob_3`, softmax probabilities of noisy class scores.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 48
IMAGES = 8


def _blob(h: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:h]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _blur(a: np.ndarray, passes: int = 2) -> np.ndarray:
    """A cheap box blur (3×3, repeated), edges clamped."""
    out = a.astype(float)
    for _ in range(passes):
        p = np.pad(out, 1, mode="edge")
        out = sum(p[i:i + out.shape[0], j:j + out.shape[1]] for i in range(3) for j in range(3)) / 9.0
    return out


def binary(rng: np.random.Generator) -> pd.DataFrame:
    frames = []
    for k in range(IMAGES):
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        blobs = 1 if k % 3 else 2
        for _ in range(blobs):
            cy, cx = rng.uniform(8, SIZE - 8, 2)
            r = rng.uniform(4.0, 6.0) / np.sqrt(blobs)
            mask |= _blob(SIZE, cy, cx, r * rng.uniform(0.8, 1.2), r * rng.uniform(0.8, 1.2))
        seen = np.roll(mask, (int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), axis=(0, 1))
        if k == 5:  # a missed object
            seen = np.zeros_like(seen)
        if k == 6:  # a false alarm next to the true object
            seen = seen | _blob(SIZE, 10, 38, 3, 3)
        score = 9.0 * _blur(seen) - 4.5 + rng.normal(0, 0.9, (SIZE, SIZE))
        prob = 1.0 / (1.0 + np.exp(-score))
        frames.append(pd.DataFrame({
            "image_id": f"img{k + 1:02d}",
            "mask": mask.reshape(-1).astype(np.int64),
            "prob": np.round(prob.reshape(-1), 6),
        }))
    return pd.concat(frames, ignore_index=True)


def multiclass(rng: np.random.Generator) -> pd.DataFrame:
    frames = []
    radii = {1: 6.0, 2: 4.0, 3: 2.5}  # three structures of very different areas
    for k in range(IMAGES):
        mask = np.zeros((SIZE, SIZE), dtype=np.int64)
        for c, r in radii.items():
            if k == 4 and c == 3:  # class 3 absent from one image
                continue
            cy, cx = rng.uniform(r + 2, SIZE - r - 2, 2)
            mask[_blob(SIZE, cy, cx, r, r * rng.uniform(0.8, 1.2))] = c
        scores = np.stack([6.0 * _blur(mask == c) for c in range(4)], axis=-1)
        scores[..., 0] += 1.5
        scores += rng.normal(0, 0.8, scores.shape)
        z = scores - scores.max(axis=-1, keepdims=True)
        prob = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
        prob = prob.reshape(-1, 4)
        df = pd.DataFrame({"image_id": k + 1, "mask": mask.reshape(-1)})
        for c in range(4):
            df[f"prob_{c}"] = prob[:, c]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    rng = np.random.default_rng(20261125)
    seg = binary(rng)
    seg.to_parquet(os.path.join(HERE, "segmentation.parquet"), index=False)
    seg.to_csv(os.path.join(HERE, "segmentation.csv"), index=False)
    multiclass(rng).to_parquet(os.path.join(HERE, "segmentation_multiclass.parquet"), index=False)


if __name__ == "__main__":
    main()
