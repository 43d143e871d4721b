"""Arrow columns → numpy arrays: numeric views (float32 kept, never doubled), labels, dictionary codes."""
from __future__ import annotations

from typing import Any

import numpy as np

from lossctl.binding import Selector
from lossctl.errors import InputError


def to_matrix(arrays: list[Any], sel: Selector, source: str, offset: int) -> np.ndarray:
    """Arrow columns bound to one role → float array (n,) or (n, k)."""
    import pyarrow as pa

    if sel.list_column:
        arr = arrays[0]
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.null_count:
            i = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
            raise InputError.at("missing value", source=source, column=sel.columns[0], row=offset + i + 1)
        if pa.types.is_fixed_size_list(arr.type):
            width = arr.type.list_size
            flat = arr.flatten()
        else:
            lengths = np.asarray(arr.value_lengths())
            width = int(lengths[0]) if lengths.size else 0
            if lengths.size and (lengths != width).any():
                i = int(np.flatnonzero(lengths != width)[0])
                raise InputError.at(
                    f"list lengths differ: {int(lengths[i])} here, {width} in the first row",
                    source=source, column=sel.columns[0], row=offset + i + 1,
                )
            flat = arr.flatten()
        vals = numeric(flat, sel.columns[0], source, offset, width=max(width, 1))
        return vals.reshape(-1, width) if width else vals.reshape(len(arr), 0)
    if sel.vector and len(arrays) > 1:
        m = stacked(arrays)
        if m is not None:
            return m
    cols = [numeric(a, c, source, offset) for a, c in zip(arrays, sel.columns)]
    if not sel.vector:
        return cols[0]
    return np.column_stack(cols) if cols else np.empty((0, 0))


def stacked(arrays: list[Any]) -> np.ndarray | None:
    """Integer and float columns straight into one (n, k) float64 array: each value read
    once and written once, widened as it is copied (no float32 stack to widen again),
    nulls as NaN. None for other types (booleans, decimals, text): column by column."""
    import pyarrow as pa

    arrays = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays]
    if not all((pa.types.is_floating(a.type) and not pa.types.is_float16(a.type)) or pa.types.is_integer(a.type)
               for a in arrays):
        return None
    out = np.empty((len(arrays[0]), len(arrays)))
    for j, a in enumerate(arrays):
        out[:, j] = float_view(a)
    return out


def numeric(arr: Any, column: str, source: str, offset: int, width: int = 1) -> np.ndarray:
    """A column (or a list column's flattened values, ``width`` per row) as floats."""
    import pyarrow as pa

    t = arr.type
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return float_view(arr)
    if pa.types.is_null(t):
        return np.full(len(arr), np.nan)
    # strings and anything else: find the first value that is not a number
    vals = arr.to_pylist()
    for i, v in enumerate(vals):
        if v is None:
            continue
        try:
            float(v)
        except (TypeError, ValueError):
            raise InputError.at("not a number", source=source, column=column, row=offset + i // width + 1,
                                value=v) from None
    return np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)


def float_view(arr: Any) -> np.ndarray:
    """An Arrow numeric array as float64 (float32 stays float32), nulls as NaN.

    Reads the data buffer directly: zero-copy for float columns without nulls, and
    never through pyarrow's pandas bridge (importing pandas costs 0.2 s).
    """
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_float64(arr.type) or pa.types.is_float32(arr.type)):
        # integers beyond 2**53 (and decimals) round to the nearest double, as the same number read from text does
        arr = arr.cast(pa.float64(), safe=False)
    dtype = np.float32 if pa.types.is_float32(arr.type) else np.float64
    buf = arr.buffers()[1]
    if buf is None:
        return np.empty(0, dtype=dtype)
    values = np.frombuffer(buf, dtype=dtype, count=len(arr), offset=arr.offset * dtype().itemsize)
    if arr.null_count:  # NaN where the validity bitmap says null (pyarrow's fill_null imports pandas: 0.2 s)
        bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
        valid = np.unpackbits(bits, bitorder="little")[arr.offset:arr.offset + len(arr)].view(bool)
        values = values.copy()
        values[~valid] = np.nan
    return values


def labels_view(arr: Any) -> np.ndarray:
    """An Arrow column of labels (ids, group values) as a numpy array."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_uint64(t) and len(arr) and arr.null_count == 0 and \
            int(np.asarray(arr, dtype=np.uint64).max()) > np.iinfo(np.int64).max:
        return np.asarray(arr, dtype=np.uint64)  # beyond int64: as they are
    if pa.types.is_integer(t):  # from the buffer (Array.cast would import pyarrow.compute: 15-25 ms of start-up)
        if not len(arr):
            return np.empty(0, dtype=np.int64)
        dt = np.dtype(("i" if pa.types.is_signed_integer(t) else "u") + str(t.bit_width // 8))
        v = np.frombuffer(arr.buffers()[1], dtype=dt, count=len(arr), offset=arr.offset * dt.itemsize)
        return v if dt == np.int64 else v.astype(np.int64)
    if pa.types.is_floating(t):
        return float_view(arr)
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
    enc = arr.dictionary_encode()
    codes = np.asarray(enc.indices.to_pylist() if enc.indices.null_count else
                       np.frombuffer(enc.indices.buffers()[1], dtype=np.int32, count=len(enc), offset=enc.indices.offset * 4))
    values = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    return values[codes]


def index_codes(idx: Any) -> np.ndarray:
    """A dictionary's integer indices as a fresh intp array, read from the buffer (Arrow's
    to_numpy goes through its pandas bridge: importing pandas costs 0.2 s)."""
    n = len(idx)
    if n == 0:
        return np.empty(0, dtype=np.intp)
    dtype = np.dtype(str(idx.type))
    return np.frombuffer(idx.buffers()[1], dtype=dtype, count=n, offset=idx.offset * dtype.itemsize).astype(np.intp)


def valid_mask(arr: Any) -> np.ndarray:
    """Which values of an Arrow array are not null, from its validity bitmap."""
    bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little")[arr.offset:arr.offset + len(arr)].astype(bool)


_NESTED = (("list", "lists"), ("large_list", "lists"), ("fixed_size_list", "lists"), ("list_view", "lists"),
           ("large_list_view", "lists"), ("struct", "structs"), ("map", "maps"), ("union", "unions"))


def label_array(col: Any, what: str, source: str, column: str) -> Any:
    """An Arrow column of labels as one that :func:`labels_view` reads and JSON can hold:
    numbers, booleans and strings stay; decimals, timestamps, dates and times become their
    exact text (ISO 8601), durations a count with its unit ("1500ms"), bytes their UTF-8
    text or else "0x…" hex. Nested values (lists, structs, maps) are an input error."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if isinstance(t, pa.BaseExtensionType):  # a UUID, a JSON string …: its stored values
        if t.extension_name == "arrow.uuid":
            import uuid

            return pa.array([None if v is None else str(uuid.UUID(bytes=v)) for v in col.storage.to_pylist()],
                            pa.string())
        col = col.storage
        t = col.type
    for name, plural in _NESTED:
        check = getattr(pa.types, f"is_{name}", None)
        if check is not None and check(t):
            raise InputError.at(
                f"{what} takes a column of single values (strings, numbers, booleans, dates or times); "
                f"this one holds {plural} ({t})", source=source, column=column)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_string(t) \
            or pa.types.is_large_string(t):
        return col
    if pa.types.is_null(t):
        return pa.nulls(len(col), pa.float64())
    if pa.types.is_decimal(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return pc.cast(col, pa.string())
    if pa.types.is_timestamp(t):  # "2020-01-01 00:00:00.000000" → ISO 8601's "T"
        return pc.replace_substring(pc.cast(col, pa.string()), " ", "T", max_replacements=1)
    if pa.types.is_duration(t):
        return pc.binary_join_element_wise(pc.cast(pc.cast(col, pa.int64()), pa.string()), pa.scalar(t.unit), "")
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        vals = col.to_pylist()
        return pa.array([None if v is None else _bytes_text(v) for v in vals], pa.string())
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError.at(f"{what} cannot use values of type {t}", source=source, column=column) from None


def _bytes_text(v: bytes) -> str:
    """Bytes as their text when they are printable UTF-8, else as "0x" and hex digits."""
    try:
        text = v.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + v.hex()
    return text if text.isprintable() else "0x" + v.hex()


def fill_value(t: Any) -> Any:
    """A placeholder for the nulls of a --by column of type ``t`` (replaced by None after)."""
    import pyarrow as pa

    if pa.types.is_boolean(t):
        return pa.scalar(False)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.scalar("", t)
    return pa.scalar(0, t)
