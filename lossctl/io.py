"""Files → Arrow record batches.

Every reader streams: CSV/TSV and JSON Lines through pyarrow's incremental readers,
Parquet by row groups, Arrow IPC by record batches. pyarrow is imported here, lazily,
never at start-up. Every failure of a reader becomes an InputError naming the file
(and, where it can be found, the row and value) at this one boundary.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import glob as globmod
import io
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator

from lossctl.errors import InputError

FORMATS = ("csv", "tsv", "parquet", "feather", "jsonl")
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}
_EXT = {
    ".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".tab": "tsv",
    ".parquet": "parquet", ".pq": "parquet", ".parq": "parquet",
    ".feather": "feather", ".arrow": "feather", ".ipc": "feather", ".arrows": "feather",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}
_MAGIC = [
    (b"PAR1", "parquet", None),
    (b"ARROW1", "feather", None),
    (b"\x1f\x8b", None, "gzip"),
    (b"BZh", None, "bz2"),
    (b"\x28\xb5\x2f\xfd", None, "zstd"),
]
HEAD_BYTES = 1 << 16
DEFAULT_BATCH_ROWS = 1 << 17


@dataclass
class Source:
    """One input: a file, a directory or glob of Parquet files, or standard input."""

    name: str  # as the user wrote it; used in every message
    path: str | list[str]
    fmt: str
    compression: str | None = None
    columns: list[str] = field(default_factory=list)
    types: dict[str, Any] = field(default_factory=dict)  # column → arrow type, where known
    num_rows: int | None = None  # exact, where the format stores it
    rows_bound: int | None = None  # an upper bound, where one is cheap
    size_bytes: int | None = None
    delimiter: str = ","
    bool_columns: set[str] = field(default_factory=set)  # CSV / JSON Lines columns of True/False read as 1/0
    _tmp: str | None = None

    def close(self) -> None:
        if self._tmp:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None


def _pa():
    import pyarrow as pa

    return pa


def open_source(name: str, input_format: str | None = None) -> Source:
    """Find the format of ``name`` and read its column names (not its data)."""
    if input_format is not None and input_format not in FORMATS:
        from lossctl.errors import UsageError

        raise UsageError(f"unknown input format '{input_format}'; valid formats: {', '.join(FORMATS)}")
    if name == "-":
        return _open_stdin(input_format)
    if any(ch in name for ch in "*?[") and not os.path.exists(name):
        files = sorted(globmod.glob(name, recursive=True))
        files = [f for f in files if os.path.isfile(f)]
        if not files:
            raise InputError.at("no file matches this pattern", source=name)
        return _open_dataset(name, files)
    if os.path.isdir(name):
        return _open_dataset(name, name)
    if not os.path.exists(name):
        raise InputError.at("no such file", source=name)
    if not os.access(name, os.R_OK):
        raise InputError.at("permission denied", source=name)
    size = os.path.getsize(name)
    if size == 0:
        raise InputError.at("the file is empty", source=name)
    if _is_xz(name):
        return _open_xz(name, name, input_format)
    fmt, comp = _detect(name, input_format)
    src = Source(name=name, path=name, fmt=fmt, compression=comp, size_bytes=size)
    _read_schema(src)
    return src


def _open_stdin(input_format: str | None) -> Source:
    stdin = getattr(sys.stdin, "buffer", None)
    if stdin is None:
        raise InputError.at("standard input is closed", source="<stdin>")
    terminal = _is_terminal(sys.stdin)
    if terminal and sys.stderr is not None:  # else the user sees a command that waits without a word
        print("lossctl: reading standard input (end it with Ctrl-D)", file=sys.stderr, flush=True)
    fd, tmp = tempfile.mkstemp(prefix="lossctl-stdin-")
    try:
        with os.fdopen(fd, "wb") as out:
            if terminal:  # one Ctrl-D ends it: read1 returns at the first empty read, read() waits for a second
                while chunk := stdin.read1(1 << 20):
                    out.write(chunk)
            else:
                shutil.copyfileobj(stdin, out, 1 << 20)
    except BaseException:  # Ctrl-C or a read error: leave no spool file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    size = os.path.getsize(tmp)
    if size == 0:
        os.unlink(tmp)
        raise InputError.at("standard input is empty", source="<stdin>")
    if _is_xz(tmp):
        try:
            return _open_xz("<stdin>", tmp, input_format)
        finally:
            os.unlink(tmp)
    with open(tmp, "rb") as f:
        head = f.read(16)
    fmt, comp = input_format or "csv", None
    for magic, mfmt, mcomp in _MAGIC:
        if head.startswith(magic):
            fmt, comp = (mfmt or fmt), mcomp
            if mfmt and input_format is None:
                fmt = mfmt
    src = Source(name="<stdin>", path=tmp, fmt=fmt, compression=comp, size_bytes=size, _tmp=tmp)
    try:
        if input_format is None and fmt == "csv":
            # text: CSV unless the first bytes say JSON Lines or TSV, as for a file without an extension
            src.fmt = _sniff_text(_head_text(src), src)
        _read_schema(src)
    except BaseException:
        src.close()
        raise
    return src


_XZ_MAGIC = b"\xfd7zXZ\x00"


def _is_xz(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(len(_XZ_MAGIC)) == _XZ_MAGIC


def _open_xz(name: str, path: str, input_format: str | None) -> Source:
    """xz (LZMA) text, which pyarrow cannot decompress: read through Python's lzma into a spool file."""
    import lzma

    fd, tmp = tempfile.mkstemp(prefix="lossctl-xz-")
    try:
        with os.fdopen(fd, "wb") as out, lzma.open(path, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        size = os.path.getsize(tmp)
        if size == 0:
            raise InputError.at("the file is empty (after xz decompression)", source=name)
        base = name[:-3] if name.lower().endswith(".xz") else name
        ext = os.path.splitext(base.lower())[1]
        src = Source(name=name, path=tmp, fmt=input_format or _EXT.get(ext, "csv"), size_bytes=size, _tmp=tmp)
        if input_format is None and ext not in _EXT:
            src.fmt = _sniff_text(_head_text(src), src)
        _read_schema(src)
        return src
    except (lzma.LZMAError, EOFError) as e:  # EOFError: the stream ends early (a truncated file)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InputError.at(f"damaged xz data ({e})", source=name) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _detect(path: str, input_format: str | None) -> tuple[str, str | None]:
    base = path.lower()
    comp = None
    for ext, c in COMPRESSIONS.items():
        if base.endswith(ext):
            comp = c
            base = base[: -len(ext)]
            break
    with open(path, "rb") as f:
        head = f.read(16)
    if comp is None:
        for magic, mfmt, mcomp in _MAGIC:
            if head.startswith(magic) and mcomp:
                comp = mcomp
    if input_format:
        return input_format, comp
    ext = os.path.splitext(base)[1]
    if ext in _EXT:
        return _EXT[ext], comp
    if comp is None:
        for magic, mfmt, _ in _MAGIC:
            if mfmt and head.startswith(magic):
                return mfmt, None
    probe = Source(name=path, path=path, fmt="csv", compression=comp)
    return _sniff_text(_head_text(probe), probe), comp


def _head_bytes(src: Source, n: int = HEAD_BYTES) -> bytes:
    pa = _pa()
    try:
        with pa.input_stream(src.path, compression=src.compression) as f:
            return f.read(n)
    except (OSError, pa.ArrowException) as e:
        raise InputError.at(f"cannot read the file ({_short(e)})", source=src.name) from None


def _head_text(src: Source) -> str:
    head = _head_bytes(src)
    if b"\x00" in head:
        raise InputError.at("binary data, not CSV, TSV, JSON Lines, Parquet or Feather", source=src.name)
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start >= len(head) - 4 and len(head) == HEAD_BYTES:
            return head[: e.start].decode("utf-8")
        row = head[: e.start].count(b"\n")  # the header is line 1, so data row = line − 1
        raise InputError.at(
            f"not UTF-8 text: byte 0x{head[e.start]:02x}", source=src.name, row=row if row >= 1 else None
        ) from None


def _sniff_text(text: str, src: Source) -> str:
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return "jsonl"
    first = text.split("\n", 1)[0]
    return "tsv" if first.count("\t") > first.count(",") else "csv"


def _read_schema(src: Source) -> None:
    if src.fmt in ("csv", "tsv"):
        _csv_schema(src)
    elif src.fmt == "jsonl":
        _jsonl_schema(src)
    elif src.fmt == "parquet":
        _parquet_schema(src)
    elif src.fmt == "feather":
        _feather_schema(src)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    from lossctl.errors import clip

    return clip(text, 200)


# ---------------------------------------------------------------- CSV / TSV

def _csv_schema(src: Source) -> None:
    src.delimiter = "\t" if src.fmt == "tsv" else ","
    text = _head_text(src).lstrip("\ufeff")  # a UTF-8 byte-order mark is not part of the first name
    if not text.strip():
        raise InputError.at("the file is empty", source=src.name)
    lines = text.splitlines()
    if src.fmt == "csv" and "," not in lines[0] and ";" in lines[0]:
        src.delimiter = ";"  # the European CSV dialect
    header = next(csv.reader([lines[0]], delimiter=src.delimiter))
    if not any(header):
        raise InputError.at("the first line (the header) is empty", source=src.name)
    names = [h.strip() for h in header]  # " yhat" binds as yhat, so it is the same name
    if len(set(names)) != len(names):
        dup = next(h for h in names if names.count(h) > 1)
        raise InputError.at(f"the header names column '{dup}' twice", source=src.name)
    data_lines = [ln for ln in lines[1:] if ln.strip()]
    if not data_lines:
        raise InputError.at("the file has a header but no data rows", source=src.name)
    src.columns = header


def _csv_reader(src: Source, columns: list[str], numeric: set[str], batch_rows: int):
    pa = _pa()
    import pyarrow.csv as pacsv

    types = _csv_types(src, columns, numeric)
    stream = pa.input_stream(src.path, compression=src.compression)
    return pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(block_size=max(1 << 20, batch_rows * 24), use_threads=True),
        parse_options=pacsv.ParseOptions(delimiter=src.delimiter),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            include_columns=columns,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


_BOOL_TEXT = {"true", "false"}


def _csv_types(src: Source, columns: list[str], numeric: set[str]) -> dict[str, Any]:
    """float64 for numeric columns, string for the rest; but a numeric column whose first
    rows read True/False (pandas writes bool columns so: labels, pd.get_dummies one-hot
    targets) is read as booleans, 1 and 0, as a Parquet bool column is."""
    pa = _pa()
    types = {c: (pa.float64() if c in numeric else pa.string()) for c in columns}
    if not numeric:
        return types
    head = _head_text(src).lstrip("\ufeff")
    lines = head.splitlines()
    if len(head.encode("utf-8")) >= HEAD_BYTES and len(lines) > 2:
        lines = lines[:-1]  # the last line may be cut
    rows = list(csv.reader(lines, delimiter=src.delimiter))
    if len(rows) < 2:
        return types
    index = {name: i for i, name in enumerate(rows[0])}
    for c in columns:
        i = index.get(c)
        if c not in numeric or i is None:
            continue
        vals = [r[i].strip().lower() for r in rows[1:] if i < len(r) and r[i].strip()]
        if vals and all(v in _BOOL_TEXT for v in vals):
            types[c] = pa.bool_()
            src.bool_columns.add(c)
    return types


PARALLEL_CSV_BYTES = 8 << 20
CSV_CHUNK_BYTES = 16 << 20


def _csv_chunks(src: Source, columns: list[str], numeric: set[str]) -> Iterator[Any]:
    """A large uncompressed CSV read as byte ranges cut at line ends, parsed in parallel.

    pyarrow's multi-threaded ``read_csv`` parses each ~16 MB range (with the header's
    names given); two ranges are in flight at a time, so memory stays bounded while both
    cores parse. Like pyarrow's own block splitting, this assumes no newline inside a
    quoted value (pyarrow's default, newlines_in_values=False).
    """
    import concurrent.futures as cf

    pa = _pa()
    import pyarrow.csv as pacsv

    types = _csv_types(src, columns, numeric)
    parse = pacsv.ParseOptions(delimiter=src.delimiter)
    convert = pacsv.ConvertOptions(column_types=types, include_columns=columns, strings_can_be_null=True,
                                   quoted_strings_can_be_null=False)
    with open(src.path, "rb") as f:
        f.readline()  # the header
        start = f.tell()
    names = list(src.columns)
    size = os.path.getsize(src.path)

    def ranges() -> Iterator[tuple[int, int]]:
        pos = start
        with open(src.path, "rb") as f:
            while pos < size:
                end = min(size, pos + CSV_CHUNK_BYTES)
                if end < size:
                    f.seek(end)
                    tail = f.readline()
                    end += len(tail)
                yield pos, end
                pos = end

    def read(rng: tuple[int, int]) -> Any:
        a, b = rng
        with open(src.path, "rb") as f:
            f.seek(a)
            body = f.read(b - a)
        if not body.strip():
            return None
        # the header's names are given, not prepended: no copy of the chunk
        opts = pacsv.ReadOptions(use_threads=True, block_size=4 << 20, column_names=names)
        return pacsv.read_csv(pa.BufferReader(pa.py_buffer(body)), read_options=opts,
                              parse_options=parse, convert_options=convert)

    with cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="lossctl-csv") as pool:
        pending: list[Any] = []
        it = ranges()
        for rng in it:
            pending.append(pool.submit(read, rng))
            if len(pending) >= 2:
                break
        while pending:
            table = pending.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(read, nxt))
            if table is not None:
                yield from table.to_batches()


def _csv_locate(src: Source, column: str | None, check) -> InputError | None:
    """Slow path after a reader error: find the first bad row with Python's csv module."""
    pa = _pa()
    with pa.input_stream(src.path, compression=src.compression) as raw:
        data = raw.read()
    lineno = 0
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n")
        return InputError.at(
            f"not UTF-8 text: byte 0x{data[e.start]:02x}", source=src.name, row=max(line, 1)
        )
    reader = csv.reader(io.StringIO(text), delimiter=src.delimiter)
    header = next(reader, [])
    idx = header.index(column) if column in header else None
    for lineno, fields in enumerate(reader, start=1):
        if not fields:
            continue
        if len(fields) != len(header):
            return InputError.at(
                f"expected {len(header)} fields like the header, found {len(fields)}",
                source=src.name,
                row=lineno,
            )
        if idx is not None:
            err = check(fields[idx])
            if err:
                return InputError.at(err, source=src.name, column=column, row=lineno, value=fields[idx])
    return None


_NUMBER = None


def _non_numeric(s: str) -> str | None:
    """Whether pyarrow's CSV reader rejects ``s`` as a float64 (Python's float()
    accepts more: '1_000', non-ASCII digits)."""
    global _NUMBER
    import re

    if _NUMBER is None:
        _NUMBER = re.compile(
            r"\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|nan|inf|infinity)\s*", re.I | re.ASCII
        )
    if s.strip() == "":
        return None
    return None if _NUMBER.fullmatch(s) else "not a number"


# ---------------------------------------------------------------- JSON Lines

def _jsonl_schema(src: Source) -> None:
    text = _head_text(src)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first:
        raise InputError.at("the file is empty", source=src.name)
    try:
        obj = json.loads(first)
    except json.JSONDecodeError as e:
        raise InputError.at(f"not JSON Lines: {e.msg}", source=src.name, row=1) from None
    if not isinstance(obj, dict):
        raise InputError.at("not JSON Lines: each line must be a JSON object", source=src.name, row=1)
    src.columns = list(obj)
    src.bool_columns = {c for c, v in obj.items() if isinstance(v, bool)}  # true/false read as 1/0, as in CSV


def _jsonl_locate(src: Source, columns: list[str], numeric: set[str]) -> InputError | None:
    """Slow path after a reader error: the first line that is not an object of numbers."""
    pa = _pa()
    row = 0
    with pa.input_stream(src.path, compression=src.compression) as raw:
        for line in io.TextIOWrapper(raw, encoding="utf-8", errors="replace"):
            if not line.strip():
                continue  # pyarrow skips blank lines: they are not rows
            row += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                return InputError.at(f"not valid JSON: {e.msg}", source=src.name, row=row)
            if not isinstance(obj, dict):
                return InputError.at("not a JSON object", source=src.name, row=row, value=line.strip())
            for c in columns:
                v = obj.get(c)
                if c in src.bool_columns and c in numeric:
                    if v is not None and not isinstance(v, bool):
                        return InputError.at("not true/false like the column's first row", source=src.name,
                                             column=c, row=row, value=v if isinstance(v, (str, int, float)) else
                                             json.dumps(v))
                    continue
                if c in numeric and v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    what = {str: "a string", bool: "a boolean", list: "an array", dict: "an object"}.get(type(v), "not a number")
                    return InputError.at(
                        f"{what}, not a number", source=src.name, column=c, row=row,
                        value=v if isinstance(v, (str, bool)) else json.dumps(v),
                    )
    return None


def _jsonl_reader(src: Source, columns: list[str], numeric: set[str], batch_rows: int):
    pa = _pa()
    import pyarrow.json as pajson

    fields = [pa.field(c, (pa.bool_() if c in src.bool_columns else pa.float64()) if c in numeric else pa.string())
              for c in columns]
    stream = pa.input_stream(src.path, compression=src.compression)
    return pajson.open_json(
        stream,
        read_options=pajson.ReadOptions(block_size=max(1 << 20, batch_rows * 32)),
        parse_options=pajson.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore"),
    )


# ---------------------------------------------------------------- Parquet / Feather

def _parquet_schema(src: Source) -> None:
    pa = _pa()
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(src.path)
    except (OSError, pa.ArrowException) as e:
        raise InputError.at(f"not a valid Parquet file ({_short(e)})", source=src.name) from None
    schema = pf.schema_arrow
    src.columns = list(schema.names)
    src.types = {f.name: f.type for f in schema}
    src.num_rows = src.rows_bound = pf.metadata.num_rows
    if src.num_rows == 0:
        raise InputError.at("the file has no rows", source=src.name)


def _feather_schema(src: Source) -> None:
    pa = _pa()
    try:
        reader = pa.ipc.open_file(pa.memory_map(src.path)) if src.compression is None else None
    except (OSError, pa.ArrowException):
        reader = None
    try:
        if reader is None:
            reader = pa.ipc.open_stream(pa.input_stream(src.path, compression=src.compression))
            schema = reader.schema
        else:
            schema = reader.schema
            src.num_rows = src.rows_bound = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    except (OSError, pa.ArrowException) as e:
        raise InputError.at(f"not a valid Feather/Arrow file ({_short(e)})", source=src.name) from None
    src.columns = list(schema.names)
    src.types = {f.name: f.type for f in schema}
    if src.num_rows == 0:
        raise InputError.at("the file has no rows", source=src.name)


def _open_dataset(name: str, paths: str | list[str]) -> Source:
    pa = _pa()
    import pyarrow.dataset as ds

    files = paths if isinstance(paths, list) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(paths) for f in fs
        if not f.startswith((".", "_")) and f.lower().endswith((".parquet", ".pq", ".parq"))
    )
    if not files:
        raise InputError.at("the directory holds no Parquet files", source=name)
    for f in files:  # a glob may catch other files: say which one is not Parquet
        with open(f, "rb") as fh:
            if fh.read(4) != b"PAR1":
                raise InputError.at(
                    f"not a Parquet file (a directory or glob is read as one Parquet dataset: {name})", source=f
                )
    try:
        dataset = ds.dataset(
            paths if isinstance(paths, str) else files,
            format="parquet",
            partitioning="hive",
            exclude_invalid_files=False,
        )
    except (OSError, pa.ArrowException) as e:
        raise InputError.at(f"cannot read the dataset ({_short(e)})", source=name) from None
    first = None
    total = 0
    for frag in dataset.get_fragments():
        try:
            phys = frag.physical_schema
            total += frag.metadata.num_rows
        except (OSError, pa.ArrowException) as e:
            raise InputError.at(f"not a valid Parquet file ({_short(e)})", source=frag.path) from None
        if first is None:
            first = (frag.path, phys)
        elif not phys.equals(first[1]):
            raise InputError.at(
                f"its schema differs from {first[0]}'s: {_schema_diff(first[1], phys)}", source=frag.path
            )
    src = Source(name=name, path=paths if isinstance(paths, str) else files, fmt="dataset")
    src.columns = list(dataset.schema.names)
    src.types = {f.name: f.type for f in dataset.schema}
    src.num_rows = src.rows_bound = total
    if total == 0:
        raise InputError.at("the dataset has no rows", source=name)
    return src


def _schema_diff(a, b) -> str:
    an, bn = set(a.names), set(b.names)
    if an != bn:
        miss, more = sorted(an - bn), sorted(bn - an)
        parts = []
        if miss:
            parts.append("missing " + ", ".join(miss))
        if more:
            parts.append("extra " + ", ".join(more))
        return "; ".join(parts)
    for f in a:
        g = b.field(f.name)
        if not f.type.equals(g.type):
            return f"column '{f.name}' is {g.type}, not {f.type}"
    return "column order differs"


def rows_upper_bound(src: Source) -> int | None:
    """An upper bound on the data rows: exact for binary formats, the line count for
    uncompressed text (about 0.1 s per 400 MB), None for compressed text."""
    if src.rows_bound is not None:
        return src.rows_bound
    if src.fmt in ("csv", "tsv", "jsonl") and src.compression is None:
        lines = 0
        last = b"\n"
        with open(src.path, "rb") as f:
            while chunk := f.read(1 << 24):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        src.rows_bound = lines + (last != b"\n")
        return src.rows_bound
    return None


# ---------------------------------------------------------------- batches

def iter_batches(
    src: Source, columns: list[str], numeric: set[str], batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[Any]:
    """Record batches of ``columns`` (numeric ones as float64 where the format is text)."""
    pa = _pa()
    columns = list(dict.fromkeys(columns))
    try:
        if src.fmt in ("csv", "tsv"):
            if src.compression is None and (src.size_bytes or 0) >= PARALLEL_CSV_BYTES:
                yield from _rechunk(_csv_chunks(src, columns, numeric), batch_rows)
            else:
                yield from _rechunk(_csv_reader(src, columns, numeric, batch_rows), batch_rows)
        elif src.fmt == "jsonl":
            reader = _jsonl_reader(src, columns, numeric, batch_rows)
            yield from _rechunk(reader, batch_rows)
        elif src.fmt == "parquet":
            import pyarrow.parquet as pq

            # pre_buffer=False: reading ahead whole row groups would make memory grow with the file;
            # buffer_size: column chunks stream through 1 MB buffers instead of being read whole
            # (peak RSS at 32M rows 185 → 150 MB, and a little faster)
            pf = pq.ParquetFile(src.path, pre_buffer=False, buffer_size=1 << 20)
            yield from pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True)
        elif src.fmt == "feather":
            yield from _feather_batches(src, columns, batch_rows)
        elif src.fmt == "dataset":
            yield from _dataset_batches(src, columns, batch_rows)
        else:  # pragma: no cover - formats are checked when the source opens
            raise InputError.at(f"unknown format {src.fmt}", source=src.name)
    except (pa.ArrowInvalid, pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise _explain_reader_error(src, e, columns, numeric) from None


def _feather_batches(src: Source, columns: list[str], batch_rows: int) -> Iterator[Any]:
    pa = _pa()
    if src.compression is None:
        try:
            reader = pa.ipc.open_file(pa.memory_map(src.path))
            batches = (reader.get_batch(i).select(columns) for i in range(reader.num_record_batches))
            yield from _rechunk(batches, batch_rows)
            return
        except pa.ArrowInvalid:
            pass
    stream = pa.ipc.open_stream(pa.input_stream(src.path, compression=src.compression))
    yield from _rechunk((b.select(columns) for b in stream), batch_rows)


def _dataset_batches(src: Source, columns: list[str], batch_rows: int) -> Iterator[Any]:
    """A Parquet dataset file by file, each read as a single Parquet file is, with the hive
    partition values as constant columns. (pyarrow's dataset scanner reads 4 files and 16
    batches ahead with whole row groups pre-buffered: 280 MB at 4M rows, 900 MB at 32M;
    this reader stays near a single file's 150 MB.)"""
    pa = _pa()
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    dataset = ds.dataset(src.path, format="parquet", partitioning="hive")
    for frag in dataset.get_fragments():
        keys = ds.get_partition_keys(frag.partition_expression) or {}
        pf = pq.ParquetFile(frag.path, pre_buffer=False, buffer_size=1 << 20)
        in_file = [c for c in columns if c in pf.schema_arrow.names and c not in keys]
        if in_file == columns:
            yield from pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True)
            continue
        for b in pf.iter_batches(batch_size=batch_rows, columns=in_file, use_threads=True):
            # a partition value (null for hive's default partition) as a constant column
            arrays = [b.column(c) if c in in_file else pa.repeat(pa.scalar(keys.get(c), type=src.types[c]), b.num_rows)
                      for c in columns]
            yield pa.RecordBatch.from_arrays(arrays, names=columns)


def _rechunk(batches, batch_rows: int) -> Iterator[Any]:
    """Split large batches so that no batch has more than ``batch_rows`` rows."""
    for b in batches:
        if b.num_rows <= batch_rows:
            if b.num_rows:
                yield b
            continue
        for start in range(0, b.num_rows, batch_rows):
            yield b.slice(start, batch_rows)


def _explain_reader_error(src: Source, e: BaseException, columns: list[str], numeric: set[str]) -> InputError:
    text = str(e)
    if src.fmt in ("csv", "tsv"):
        col = None
        import re

        m = re.search(r"In CSV column #(\d+)", text)
        if m:
            i = int(m.group(1))  # pyarrow counts the file's columns, not the ones read
            col = src.columns[i] if i < len(src.columns) else None
        if "UTF8" in text or "UTF-8" in text or isinstance(e, UnicodeDecodeError):
            found = _csv_locate(src, None, lambda s: None)
            if found:
                return found
        bad = re.search(r"invalid value '(.*)'$", text.splitlines()[0] if text else "")
        check = _non_numeric if col in numeric else (lambda s: None)
        if col in src.bool_columns:
            check = (lambda s: None if s.strip().lower() in ("true", "false", "1", "0", "")
                     else "not True/False (or 1/0) like the column's first rows")
        elif bad and col in numeric:
            check = (lambda s, b=bad.group(1), c=check: "not a number" if s == b else c(s))
        found = _csv_locate(src, col, check)
        if found:
            return found
        if "Expected" in text and "columns" in text:
            return InputError.at(f"ragged rows ({_short(e)})", source=src.name)
    if src.fmt == "jsonl":
        found = _jsonl_locate(src, columns, numeric)
        if found:
            return found
        return InputError.at(f"cannot read JSON Lines ({_short(e)})", source=src.name)
    if src.fmt in ("parquet", "dataset"):
        return InputError.at(f"truncated or corrupt Parquet data ({_short(e)})", source=src.name)
    return InputError.at(f"cannot read the file ({_short(e)})", source=src.name)


# ---------------------------------------------------------------- output

def _std_stream(path: str) -> Any:
    """sys.stdout or sys.stderr when ``path`` names the same file (/dev/stdout), else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and os.path.samestat(st, os.fstat(stream.fileno())):
                return stream
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            continue
    return None


_WRITE_ERRNOS = {getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EIO", "EROFS", "EBADF", "EINVAL")
                 if hasattr(errno, n)}


class StdoutClosed(OSError):
    """Standard output was closed when lossctl started (``>&-``)."""

    def __init__(self) -> None:
        super().__init__(errno.EBADF, "standard output is closed")


class _Writer:
    """A text stream for results whose failed writes are errors naming it (exit 2).

    On standard output a closed pipe stays a BrokenPipeError: the command line's top
    level turns it into a quiet exit 0. Every other failure (a full device, a closed
    descriptor, a full disk under a temporary file) is one line and exit 2.
    """

    def __init__(self, stream: Any, name: str = "standard output") -> None:
        self._stream = stream
        self._name = name
        self._stdout = name == "standard output"

    def _call(self, fn: Any, *args: Any) -> Any:
        from lossctl.errors import OutputError

        try:
            return fn(*args)
        except BrokenPipeError:
            if self._stdout:
                raise
            raise OutputError(f"cannot write {self._name}: the reader went away") from None
        except (OSError, ValueError) as e:  # ValueError: "I/O operation on closed file"
            text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise OutputError(f"cannot write {self._name}: {text}", stdout=self._stdout) from None

    def write(self, text: str) -> int:
        return self._call(self._stream.write, text)

    def flush(self) -> None:
        self._call(self._stream.flush)

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (AttributeError, ValueError, OSError):
            return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def stdout_writer() -> Any:
    """sys.stdout behind the error mapping of ``_Stdout``; an error if it is closed."""
    if sys.stdout is None or getattr(sys.stdout, "lossctl_closed", False):
        from lossctl.errors import OutputError

        raise OutputError("cannot write standard output: it is closed", stdout=True)
    return _Writer(sys.stdout)


class StagedOutput:
    """A text file for results that reaches ``path`` (or standard output) whole, or not at all.

    A regular file (or a new one) is written to a temporary file beside it and renamed
    onto it by ``commit()``, through a symbolic link to its target, keeping an existing
    file's mode. Anything else (``/dev/stdout``, ``/dev/null``, a named pipe, whatever
    lies under /dev or /proc) is never renamed over: the results are staged in a private
    temporary file and copied into it by ``commit()``. Without a path the results go to
    standard output: held in memory until ``commit()``, or with ``stream=True`` written
    as they come (rows already written stand if the run fails later). ``discard()``
    removes whatever was staged. Failures to write are errors naming ``path``.
    """

    def __init__(self, path: str | None, *, stream: bool = False) -> None:
        import stat

        from lossctl.errors import UsageError

        self.path = path
        self._final: str | None = None  # the file to rename onto; None: copy into path (or stdout)
        self._mode: int | None = None
        self._tmp: str | None = None
        self._done = False
        if not path:
            out = stdout_writer()
            self.file: Any = out if stream else io.StringIO(newline="")
            self._stdout = out
            return
        try:
            st = os.stat(path)  # follows symbolic links
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise self._fail(e) from None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise UsageError(f"cannot write {path}: it is a directory")
        special = any(p == d or p.startswith(d + os.sep) for p in (os.path.abspath(path), os.path.realpath(path))
                      for d in ("/dev", "/proc"))
        if (st is None or stat.S_ISREG(st.st_mode)) and not special and _std_stream(path) is None:
            self._final = os.path.realpath(path)
            if not os.path.isdir(os.path.dirname(self._final)):
                raise UsageError(f"cannot write {path}: no such directory")
            if st is not None:
                self._mode = stat.S_IMODE(st.st_mode)
            else:
                umask = os.umask(0)
                os.umask(umask)
                self._mode = 0o666 & ~umask
        try:
            fd, self._tmp = tempfile.mkstemp(prefix=".lossctl-", suffix=".tmp",
                                             dir=os.path.dirname(self._final) if self._final else None)
        except OSError as e:
            raise self._fail(e) from None
        try:
            self._raw = os.fdopen(fd, "w", encoding="utf-8", newline="")
        except BaseException:
            os.close(fd)
            self.discard()
            raise
        self.file = _Writer(self._raw, path)

    def _fail(self, e: OSError) -> Exception:
        from lossctl.errors import OutputError

        return OutputError(f"cannot write {self.path}: {e.strerror or e}")

    def commit(self) -> None:
        """Put the results in place; after a failure nothing is left but what was streamed."""
        if self._done:
            return
        self._done = True
        if not self.path:
            if isinstance(self.file, io.StringIO):
                self._stdout.write(self.file.getvalue())
                self.file = io.StringIO()
            self._stdout.flush()
            return
        try:
            try:
                self._raw.close()  # flushes the temporary file
            except OSError as e:
                raise self._fail(e) from None
            if self._final:
                os.chmod(self._tmp, self._mode)
                os.replace(self._tmp, self._final)
                self._tmp = None
            else:
                std = _std_stream(self.path)  # /dev/stdout: through our own descriptor, at its offset
                with open(self._tmp, "rb") as src:
                    if std is not None:
                        std.flush()
                        shutil.copyfileobj(src, std.buffer, 1 << 20)
                        std.flush()
                    else:
                        with open(self.path, "ab") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
        except BrokenPipeError:
            raise  # the reader went away: the command line exits quietly
        except OSError as e:
            raise self._fail(e) from None
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the staged results (nothing happens to what was committed)."""
        self._done = True
        f = getattr(self, "_raw", None)
        if f is not None and not f.closed:
            with contextlib.suppress(OSError, ValueError):
                f.close()
        if self._tmp:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None


@contextlib.contextmanager
def open_output(path: str | None, *, stream: bool = False) -> Iterator[Any]:
    """A text file for results: all of them reach ``path`` (or standard output), or none.

    See ``StagedOutput``; with ``stream=True`` and no path, results reach standard
    output as they are written (a pipe or a terminal answers at once).
    """
    with open_outputs((path, stream)) as (f,):
        yield f


@contextlib.contextmanager
def open_outputs(*targets: tuple[str | None, bool]) -> Iterator[list[Any]]:
    """Several outputs (results, a state file) staged together: all are put in place, or none.

    Each target is ``(path, stream)``. They are committed in the order given, only
    after the body succeeded, the riskiest first (standard output, a device): when
    one fails, those after it are never written.
    """
    outs: list[StagedOutput] = []
    try:
        for path, stream in targets:
            outs.append(StagedOutput(path, stream=stream))
        try:
            yield [o.file for o in outs]
        except OSError as e:  # a write that went around the mapping of _Writer
            if e.errno not in _WRITE_ERRNOS or isinstance(e, BrokenPipeError) or not outs:
                raise
            if outs[0].path:
                raise outs[0]._fail(e) from None
            from lossctl.errors import OutputError

            raise OutputError(f"cannot write standard output: {e.strerror or e}", stdout=True) from None
        for o in outs:
            o.commit()
    finally:
        for o in outs:
            o.discard()
