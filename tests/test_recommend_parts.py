"""recommend's evidence is a mergeable state: the evidence of a file's parts, each read with
its rows' place in the whole file and merged in any order, is the evidence of one pass
over the file (what lets a Dask cluster measure it file by file)."""
import dataclasses
import math
import random

import pandas as pd
import pytest

from conftest import SAMPLES
from lossctl import io
from lossctl.advice.sources import evidence_pass, evidence_spec
from lossctl.plan import Request
from lossctl.planner import prepare

FILES = [
    ("regression.csv", dict(target="y", preds=["yhat"])),
    ("binary.csv", {}),
    ("multiclass.csv", {}),
    ("segmentation.csv", dict(cols={"group": "image_id"})),
    ("embeddings.parquet", {}),
    ("distributions.csv", {}),
    ("interval.csv", {}),
]


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-15), (path, a, b)
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("name,kw", FILES, ids=[f for f, _ in FILES])
def test_parts_merged_in_any_order_give_the_whole_files_evidence(tmp_path, name, kw):
    path = f"{SAMPLES}/{name}"
    plan, inputs = prepare(Request(data=path, **kw))
    with inputs:
        spec, _ = evidence_spec(plan, None)
        whole, feeder = evidence_pass(plan, inputs, spec)
    df = pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path)
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, len(df)), 3))
    parts = []
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(df)])):
        p = tmp_path / f"part{i}.parquet"
        df.iloc[a:b].to_parquet(p, index=False)
        src = io.open_source(str(p))
        try:
            part_plan = dataclasses.replace(plan, source_names=(str(p),), source_formats=("parquet",))
            st, f = evidence_pass(part_plan, [src], spec, row_offset=a, input_offset=a)
        finally:
            src.close()
        assert f.rows == b
        parts.append(st)
    rng.shuffle(parts)
    merged = parts[0]
    for other in parts[1:]:
        merged.merge(other)
    _close(merged.result(), whole.result())
