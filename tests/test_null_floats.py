"""Float columns with nulls read as NaN without pyarrow's pandas bridge (importing pandas
costs 0.2 s, on every Dask worker too); the values are pyarrow's own to_pylist."""
import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from conftest import ROOT
from lossctl.arrays import float_view


@pytest.mark.parametrize("t", [pa.float64(), pa.float32()])
@pytest.mark.parametrize("offset", [0, 1, 7, 9])
def test_nulls_are_nan_at_every_offset(t, offset):
    vals = [1.5, None, -2.0, None, None, 3.25, 0.0, None, 8.0, 9.5, None, 11.0, -0.5]
    arr = pa.array(vals, type=t).slice(offset)
    got = float_view(arr)
    want = arr.to_pylist()
    assert got.dtype == (np.float32 if t == pa.float32() else np.float64) and len(got) == len(want)
    for g, w in zip(got.tolist(), want):
        assert (w is None and math.isnan(g)) or g == w


def test_a_parquet_float_column_with_nulls_does_not_import_pandas(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"y": pa.array([1.0, 2.0, None, 4.0]), "yhat": pa.array([1.5, None, 3.0, 4.0])}), path)
    code = (
        "import sys\nfrom lossctl.cli import main\n"
        f"rc = main(['eval', {str(path)!r}, '-l', 'mse', '--nan', 'drop', '-f', 'json', '-q'])\n"
        "assert rc == 0, rc\nassert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert '"value": 0.125' in r.stdout  # rows 1 and 4 kept: (0.5² + 0²) / 2
