"""Files → Arrow record batches.

Every reader streams: CSV/TSV and JSON Lines through pyarrow's incremental readers,
Parquet by row groups, Arrow IPC by record batches. pyarrow is imported here, lazily,
never at start-up. Every failure of a reader becomes an InputError naming the file
(and, where it can be found, the row and value) at this one boundary.
"""
from __future__ import annotations

import contextlib
import csv
import glob as globmod
import io
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator

from lossctl.errors import InputError, register_parts

from lossctl.options import INPUT_FORMATS as FORMATS  # noqa: E402 - declared once, in lossctl.options
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
    # a dataset (fmt "dataset"): its files, their hive partition values, and the columns
    # that cannot be read as one (column → (message, file); column → (file lacking it, file having it))
    parts: list[Source] = field(default_factory=list)
    part_keys: list[dict[str, Any]] = field(default_factory=list)
    conflicts: dict[str, tuple[str, str]] = field(default_factory=dict)
    lacking: dict[str, tuple[str, str]] = field(default_factory=dict)
    duplicates: set[str] = field(default_factory=set)  # names that two columns of the file share
    json_kinds: dict[str, str] = field(default_factory=dict)  # JSON Lines: int, float, bool, str… per column
    cr_only: bool = False  # text whose lines end in a lone carriage return
    row_groups: tuple[int, int] | None = None  # Parquet: only row groups [a, b) (a fragment of a distributed run)
    first_row: int = 0  # the row, of the file or dataset this names, that its first row read is (0-based; a fragment's)
    _tmp: str | None = None

    def close(self) -> None:
        for p in self.parts:
            p.close()
        if self._tmp:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None


def _pa():
    import pyarrow as pa

    return pa


def open_source(name: str, input_format: str | None = None, *, allow_empty: bool = False) -> Source:
    """Find the format of ``name`` and read its column names (not its data).

    ``allow_empty``: a file with columns but no rows is no error (one of several paths)."""
    if input_format is not None and input_format not in FORMATS:
        from lossctl.errors import UsageError

        raise UsageError(f"unknown input format '{input_format}'; valid formats: {', '.join(FORMATS)}")
    if name == "-":
        return _open_stdin(input_format)
    if is_url(name):
        return _open_url(name)
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
    _read_schema(src, allow_empty)
    return src


def _open_stdin(input_format: str | None) -> Source:
    stdin = getattr(sys.stdin, "buffer", None)
    if stdin is None:
        raise InputError.at("standard input is closed", source="<stdin>")
    terminal = _is_terminal(sys.stdin)
    if terminal and sys.stderr is not None:  # else the user sees a command that waits without a word
        print("lossctl: reading standard input (end it with Ctrl-D)", file=sys.stderr, flush=True)
    # the spool file first: a Ctrl-C during tempfile's first probe of the temporary folder would
    # leave the probe's file behind once stdin has been read from
    fd, tmp = tempfile.mkstemp(prefix="lossctl-stdin-")
    try:
        with os.fdopen(fd, "wb") as out:
            stdin.peek(1) if hasattr(stdin, "peek") else None  # a write-only or closed stdin fails here
            if terminal:  # one Ctrl-D ends it: read1 returns at the first empty read, read() waits for a second
                while chunk := stdin.read1(1 << 20):
                    out.write(chunk)
            else:
                shutil.copyfileobj(stdin, out, 1 << 20)
    except BaseException as e:  # Ctrl-C or a read error: leave no spool file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, (OSError, ValueError)):
            raise InputError.at(f"cannot read standard input ({_errtext(e)})", source="<stdin>") from None
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


def _errtext(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


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


def _read_schema(src: Source, allow_empty: bool = False) -> None:
    if src.fmt in ("csv", "tsv"):
        _csv_schema(src, allow_empty)
    elif src.fmt == "jsonl":
        _jsonl_schema(src)
    elif src.fmt == "parquet":
        _parquet_schema(src, allow_empty)
    elif src.fmt == "feather":
        _feather_schema(src, allow_empty)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    from lossctl.errors import clip

    return clip(text, 200)


# ---------------------------------------------------------------- CSV / TSV

def _csv_schema(src: Source, allow_empty: bool = False) -> None:
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
    src.cr_only = "\r" in text and "\n" not in text
    data_lines = [ln for ln in lines[1:] if ln.strip()]
    if not data_lines and not allow_empty:
        raise InputError.at("the file has a header but no data rows", source=src.name)
    src.columns = header


def _csv_reader(src: Source, columns: list[str], numeric: set[str], batch_rows: int):
    """pyarrow's streaming reader: compressed text, CR-only line ends, small files."""
    pa = _pa()
    import pyarrow.csv as pacsv

    parse, convert = _csv_options(src, columns, numeric)
    stream = pa.input_stream(src.path, compression=src.compression)
    return pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(block_size=max(1 << 20, batch_rows * 24), use_threads=True),
        parse_options=parse,
        convert_options=convert,
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
CSV_CHUNK_BYTES = 16 << 20  # bytes per range (a module constant: tests cut files into tiny ranges)
# ranges parsed at once, each on one thread; 1: one range at a time on pyarrow's own threads
# (one level of parallelism either way: never two ranges each on several threads)
CSV_WORKERS = 2


def _csv_options(src: Source, columns: list[str], numeric: set[str]) -> tuple[Any, Any]:
    """Parse and convert options shared by the CSV readers: newlines_in_values, because a
    quoted value may hold line ends (pyarrow's chunker otherwise cuts inside it; quote-free
    text reads as fast either way)."""
    import pyarrow.csv as pacsv

    parse = pacsv.ParseOptions(delimiter=src.delimiter, newlines_in_values=True)
    convert = pacsv.ConvertOptions(column_types=_csv_types(src, columns, numeric), include_columns=columns,
                                   strings_can_be_null=True, quoted_strings_can_be_null=False)
    return parse, convert


def _still_holds(src: Source, fd: int, size: int, upto: int) -> None:
    """A memory-mapped file whose bytes up to ``upto`` are still there: reading a page of the
    mapping past the end of a file truncated meanwhile would kill the process (SIGBUS). (A
    writer that truncates it while a range is being read can still do that; one that replaces
    the file by renaming leaves the mapped one whole.)"""
    now = os.fstat(fd).st_size
    if now < upto:
        raise InputError.at(f"the file was truncated while it was read (from {size:,} to {now:,} bytes); "
                            "read it once it is written", source=src.name)


def _csv_chunks(src: Source, columns: list[str], numeric: set[str]) -> Iterator[Any]:
    """An uncompressed CSV memory-mapped and read as byte ranges cut at line ends.

    Each ~16 MB range is a zero-copy slice of the mapping handed to pyarrow's ``read_csv``
    (the header's names given, not prepended); ``CSV_WORKERS`` ranges are parsed at once,
    each on one thread, so that both cores parse, memory stays bounded and no byte passes
    through Python. The pages of a parsed range leave the process's resident set (they stay
    in the page cache), so memory does not grow with the file. A range is cut at the first
    line end after its size, which is a row's end only outside quotes: from the first range
    that holds a quote character on, the rest of the file goes to pyarrow's streaming
    reader, whose chunker follows quoting.
    """
    import concurrent.futures as cf
    import mmap

    pa = _pa()
    import pyarrow.csv as pacsv

    parse, convert = _csv_options(src, columns, numeric)
    names = list(src.columns)
    f = open(src.path, "rb")  # (kept open: its size is checked before each range is touched)
    try:
        if os.fstat(f.fileno()).st_size == 0:
            f.close()
            return
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except BaseException:
        f.close()
        raise
    size = len(mm)
    data = pa.py_buffer(mm)
    quoted_from = [size]  # where the first range holding a quote starts

    def intact(upto: int) -> None:
        _still_holds(src, f.fileno(), size, upto)

    def ranges() -> Iterator[tuple[int, int]]:
        intact(min(size, HEAD_BYTES))
        nl = mm.find(b"\n")
        pos = size if nl < 0 else nl + 1  # after the header
        while pos < size:
            intact(size)
            cut = min(size, pos + CSV_CHUNK_BYTES)
            if cut < size:
                nl = mm.find(b"\n", cut)
                cut = size if nl < 0 else nl + 1
            if mm.find(b'"', pos, cut) >= 0:
                quoted_from[0] = pos
                return
            yield pos, cut
            pos = cut

    def read(rng: tuple[int, int]) -> Any:
        a, b = rng
        intact(b)
        if b - a < 4096 and not mm[a:b].strip():
            return None
        threads = CSV_WORKERS == 1
        block = (4 << 20) if threads else min(max(b - a + 1, 1 << 20), 2**31 - 1)
        opts = pacsv.ReadOptions(use_threads=threads, block_size=block, column_names=names)
        table = pacsv.read_csv(pa.BufferReader(data.slice(a, b - a)), read_options=opts, parse_options=parse,
                               convert_options=convert)
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):  # the values are parsed: the text's pages may go
            lo = a // mmap.PAGESIZE * mmap.PAGESIZE
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap.MADV_DONTNEED, lo, b - lo)
        return table

    try:
        with cf.ThreadPoolExecutor(max_workers=CSV_WORKERS, thread_name_prefix="lossctl-csv") as pool:
            pending: list[Any] = []
            it = ranges()
            try:
                for rng in it:
                    pending.append(pool.submit(read, rng))
                    if len(pending) >= CSV_WORKERS:
                        break
                while pending:
                    table = pending.pop(0).result()
                    nxt = next(it, None)
                    if nxt is not None:
                        pending.append(pool.submit(read, nxt))
                    if table is not None:
                        yield from table.to_batches()
            finally:
                for p in pending:
                    p.cancel()
    finally:
        del data
        with contextlib.suppress(BufferError):
            mm.close()
        f.close()
    if quoted_from[0] < size:
        with pa.OSFile(src.path) as f:
            f.seek(quoted_from[0])
            opts = pacsv.ReadOptions(use_threads=True, block_size=4 << 20, column_names=names)
            yield from pacsv.open_csv(f, read_options=opts, parse_options=parse, convert_options=convert)


def _csv_locate(src: Source, column: str | None, check) -> InputError | None:
    """Slow path after a reader error: find the first bad row with Python's csv module."""
    pa = _pa()
    try:
        with pa.input_stream(src.path, compression=src.compression) as raw:
            data = raw.read()
    except (OSError, pa.ArrowException):
        return None  # the reader's own error says what is wrong (damaged compressed data, a vanished file)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") or data[: e.start].count(b"\r")
        return InputError.at(
            f"not UTF-8 text: byte 0x{data[e.start]:02x}", source=src.name, row=max(line, 1)
        )
    with _field_size_limit():
        return _csv_scan(src, text, column, check)


@contextlib.contextmanager
def _field_size_limit() -> Iterator[None]:
    """Python's csv module refuses fields over 131,072 characters; pyarrow reads them."""
    old = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _csv_scan(src: Source, text: str, column: str | None, check) -> InputError | None:
    lineno = 0
    # newline="": rows end in \n, \r\n or a lone \r, as pyarrow reads them
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=src.delimiter)
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
    if _NUMBER.fullmatch(s):
        return None
    if _NUMBER.fullmatch(s.replace(",", ".", 1)) and s.count(",") == 1:  # 1,5: a decimal comma
        return "not a number: a decimal comma? lossctl reads '.' as the decimal point"
    return "not a number"


# ---------------------------------------------------------------- JSON Lines

def _jsonl_schema(src: Source) -> None:
    text = _head_text(src)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first:
        raise InputError.at("the file is empty", source=src.name)
    try:
        pairs = json.loads(first, object_pairs_hook=lambda kv: kv)
    except json.JSONDecodeError as e:
        raise InputError.at(f"not JSON Lines: {e.msg}", source=src.name, row=1) from None
    if isinstance(pairs, list) and pairs and all(isinstance(p, tuple) for p in pairs):
        names = [k for k, _ in pairs]
        dup = next((k for k in names if names.count(k) > 1), None)
        if dup is not None:
            raise InputError.at(f"the first line names '{dup}' twice", source=src.name, row=1)
    obj = json.loads(first)
    if not isinstance(obj, dict):
        raise InputError.at("not JSON Lines: each line must be a JSON object", source=src.name, row=1)
    src.columns = list(obj)
    src.bool_columns = {c for c, v in obj.items() if isinstance(v, bool)}  # true/false read as 1/0, as in CSV
    # the kind of value each column holds in the first lines: how a column read as labels
    # (a key, a group, an id) is typed, so that numbers stay numbers
    kinds: dict[str, set[str]] = {}
    lines = text.splitlines()
    if len(text.encode("utf-8")) >= HEAD_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    for line in lines[:2000]:
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            break
        if not isinstance(row, dict):
            break
        for c, v in row.items():
            if v is not None:
                kinds.setdefault(c, set()).add(_json_kind(v))
    src.json_kinds = {c: (k.pop() if len(k) == 1 else "float" if k == {"int", "float"} else "mixed")
                      for c, k in kinds.items()}


def _json_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    return "nested"


def _json_label_type(src: Source, column: str) -> Any:
    """How a JSON Lines column read as labels is typed: as its first lines' values are."""
    pa = _pa()
    return {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}.get(src.json_kinds.get(column, "str"),
                                                                            pa.string())


def _jsonl_locate(src: Source, columns: list[str], numeric: set[str]) -> InputError | None:
    """Slow path after a reader error: the first line that is not an object of numbers."""
    pa = _pa()
    try:
        return _jsonl_scan(src, columns, numeric)
    except (OSError, pa.ArrowException):
        return None  # the reader's own error says what is wrong (damaged compressed data, a vanished file)


def _jsonl_scan(src: Source, columns: list[str], numeric: set[str]) -> InputError | None:
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
                what = {str: "a string", bool: "a boolean", list: "an array", dict: "an object", int: "an integer",
                        float: "a number"}.get(type(v), "not a number")
                shown = v if isinstance(v, (str, bool, int, float)) else json.dumps(v)
                if c in numeric and v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    return InputError.at(f"{what}, not a number", source=src.name, column=c, row=row, value=shown)
                if c not in numeric and v is not None:
                    want = src.json_kinds.get(c, "str")
                    kind = _json_kind(v)
                    if want == "mixed":
                        return InputError.at(f"{what}, and other rows hold values of another kind: a column read "
                                             "as labels holds one kind (numbers or strings)", source=src.name,
                                             column=c, row=row, value=shown)
                    if kind != want and not (want == "float" and kind == "int"):
                        first = {"int": "integers", "float": "numbers", "bool": "true/false", "str": "strings"}.get(
                            want, "values of several kinds")
                        return InputError.at(f"{what} where the first lines hold {first}", source=src.name,
                                             column=c, row=row, value=shown)
    return None


def _jsonl_reader(src: Source, columns: list[str], numeric: set[str], batch_rows: int):
    pa = _pa()
    import pyarrow.json as pajson

    fields = [pa.field(c, (pa.bool_() if c in src.bool_columns else pa.float64()) if c in numeric
                       else _json_label_type(src, c)) for c in columns]
    stream = pa.input_stream(src.path, compression=src.compression)
    return pajson.open_json(
        stream,
        read_options=pajson.ReadOptions(block_size=max(1 << 20, batch_rows * 32)),
        parse_options=pajson.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore"),
    )


# ---------------------------------------------------------------- Parquet / Feather

def _parquet_schema(src: Source, allow_empty: bool = False) -> None:
    pa = _pa()
    try:
        pf = parquet_file(src.path)
    except (OSError, pa.ArrowException) as e:
        raise InputError.at(f"not a valid Parquet file ({_short(e)})", source=src.name) from None
    schema = pf.schema_arrow
    src.columns = list(dict.fromkeys(schema.names))
    src.duplicates = {n for n in schema.names if schema.names.count(n) > 1}
    src.types = {f.name: f.type for f in schema}
    src.num_rows = src.rows_bound = pf.metadata.num_rows
    if src.num_rows == 0 and not allow_empty:
        raise InputError.at("the file has no rows", source=src.name)


def _feather_schema(src: Source, allow_empty: bool = False) -> None:
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
    src.columns = list(dict.fromkeys(schema.names))
    src.duplicates = {n for n in schema.names if schema.names.count(n) > 1}
    src.types = {f.name: f.type for f in schema}
    if src.num_rows == 0 and not allow_empty:
        raise InputError.at("the file has no rows", source=src.name)


# ---------------------------------------------------------------- URLs (pyarrow's or fsspec's filesystems)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(name: Any) -> bool:
    return isinstance(name, str) and bool(_URL.match(name))


def filesystem(url: str) -> tuple[Any, str]:
    """(filesystem, path) for a URL: pyarrow's own (file://, s3://, gs://, hdfs://), else fsspec's
    (memory://, and whatever its installed plugins know) wrapped for pyarrow. lossctl adds no storage code."""
    pa = _pa()
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(url)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass
    try:
        import fsspec
    except ImportError:
        raise InputError.at("pyarrow has no filesystem for this URL, and fsspec (which may) is not installed",
                            source=url) from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError, OSError) as e:
        raise InputError.at(f"no filesystem for this URL ({_short(e)})", source=url) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def parquet_file(path: str, **kw: Any) -> Any:
    """pyarrow's ParquetFile of a local path or a URL."""
    import pyarrow.parquet as pq

    if is_url(path):
        fs, p = filesystem(path)
        return pq.ParquetFile(fs.open_input_file(p), **kw)
    return pq.ParquetFile(path, **kw)


def file_stat(path: str) -> tuple[int, int | None]:
    """(size, modification time in ns or None) of a local path or a URL."""
    if is_url(path):
        fs, p = filesystem(path)
        info = fs.get_file_info(p)
        if info.type.name == "NotFound":
            raise FileNotFoundError(path)
        return info.size, info.mtime_ns
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _open_url(name: str) -> Source:
    """A Parquet file or a directory of them (a hive tree) at a URL, read through its filesystem."""
    pa = _pa()
    import pyarrow.fs as pafs

    fs, path = filesystem(name)
    scheme = name.split("://", 1)[0]
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise InputError.at("no such file", source=name)
        if info.type == pafs.FileType.Directory:
            found = [f for f in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                     if f.type == pafs.FileType.File and f.path.lower().endswith((".parquet", ".pq", ".parq"))]
            root = path.rstrip("/")
            found = [f for f in found if not any(seg.startswith((".", "_"))
                                                 for seg in f.path[len(root):].strip("/").split("/"))]
            if not found:
                raise InputError.at("the directory holds no Parquet files", source=name)
            parts, keys = [], []
            for f in sorted(found, key=lambda f: f.path):
                url = f"{scheme}://{f.path}"
                part = Source(name=url, path=url, fmt="parquet", size_bytes=f.size)
                _parquet_schema(part, allow_empty=True)
                parts.append(part)
                keys.append(_hive_keys(root, f.path))
            return dataset_of(name, parts, keys)
    except (OSError, pa.ArrowException) as e:
        raise InputError.at(f"cannot read it ({_short(e)})", source=name) from None
    src = Source(name=name, path=name, fmt="parquet", size_bytes=info.size)
    _parquet_schema(src)
    return src


def _open_dataset(name: str, paths: str | list[str]) -> Source:
    """A directory (a hive tree) or glob of Parquet files as one dataset, read file by file."""
    if isinstance(paths, str):
        files, root = [], paths
        for d, dirs, fs in os.walk(paths):
            dirs[:] = sorted(x for x in dirs if not x.startswith((".", "_")))  # _temporary, .spark-staging…
            files += [os.path.join(d, f) for f in fs
                      if not f.startswith((".", "_")) and f.lower().endswith((".parquet", ".pq", ".parq"))]
        files.sort()
    else:  # a glob: partition directories below the part of the pattern without wildcards
        fixed = re.split(r"[*?\[]", name, maxsplit=1)[0]
        files, root = paths, os.path.dirname(fixed) or "."
    if not files:
        raise InputError.at("the directory holds no Parquet files", source=name)
    parts, keys = [], []
    for f in files:  # a glob may catch other files: say which one is not Parquet
        try:
            with open(f, "rb") as fh:
                magic = fh.read(4)
        except OSError as e:
            raise InputError.at(f"cannot read it ({e.strerror or e}): one of the files of {name}", source=f) from None
        if magic != b"PAR1":
            raise InputError.at(
                f"not a Parquet file (a directory or glob is read as one Parquet dataset: {name})", source=f
            )
        part = Source(name=f, path=f, fmt="parquet", size_bytes=os.path.getsize(f))
        _parquet_schema(part, allow_empty=True)
        parts.append(part)
        keys.append(_hive_keys(root, f) if root is not None else {})
    return dataset_of(name, parts, keys)


def _hive_keys(root: str, path: str) -> dict[str, str | None]:
    """Partition values from the directories between ``root`` and ``path`` (``year=2024``)."""
    from urllib.parse import unquote

    out: dict[str, str | None] = {}
    rel = os.path.relpath(os.path.dirname(path), root)
    for seg in rel.split(os.sep):
        k, eq, v = seg.partition("=")
        if eq and k:
            out[unquote(k)] = None if v == "__HIVE_DEFAULT_PARTITION__" else unquote(v)
    return out


def dataset_of(name: str, parts: list[Source], keys: list[dict[str, Any]] | None = None) -> Source:
    """Several sources with one schema as one dataset: its rows are theirs, in order.

    Columns that differ only by a safe widening (integer widths, int and double, string
    and large string, dictionary-encoded values, a column of nulls) unify; a column some
    files lack or whose types conflict is an error only when it is read (when a role
    uses it), naming the file.
    """
    pa = _pa()
    keys = keys if keys is not None else [{} for _ in parts]
    columns: list[str] = []
    types: dict[str, Any] = {}
    origin: dict[str, str] = {}
    conflicts: dict[str, str] = {}
    for part in parts:
        for c in part.columns:
            if c not in columns:
                columns.append(c)
        for c, t in part.types.items():
            if c in conflicts:
                continue
            if c not in types:
                types[c], origin[c] = t, part.name
                continue
            u = _unify(types[c], t)
            if u is None:
                conflicts[c] = (f"column '{c}' is {_type_name(t)} here but {_type_name(types[c])} in {origin[c]}; "
                                "only safe widenings (int and double) unify in a dataset", part.name)
            else:
                types[c] = u
    key_names = list(dict.fromkeys(k for ks in keys for k in ks))
    for k in key_names:
        vals = [ks[k] for ks in keys if ks.get(k) is not None]
        columns = [c for c in columns if c != k] + [k]  # a partition value wins over a column of the file
        types[k] = pa.int64() if vals and all(re.fullmatch(r"-?\d{1,18}", v) for v in vals) else pa.string()
        conflicts.pop(k, None)
    lacking: dict[str, tuple[str, str]] = {}
    for c in columns:
        if c in key_names:
            continue
        have = next(p.name for p in parts if c in p.columns)
        miss = next((p.name for p in parts if c not in p.columns), None)
        if miss is not None:
            lacking[c] = (miss, have)
    src = Source(name=name, path=[p.name for p in parts], fmt="dataset")
    src.parts, src.part_keys = parts, keys
    src.columns, src.types = columns, types
    src.conflicts, src.lacking = conflicts, lacking
    src.bool_columns = set().union(*(p.bool_columns for p in parts)) if parts else set()
    sizes = [p.size_bytes for p in parts]
    src.size_bytes = sum(sizes) if all(s is not None for s in sizes) else None
    rows = [p.num_rows for p in parts]
    if all(r is not None for r in rows):
        src.num_rows = src.rows_bound = sum(rows)  # type: ignore[arg-type]
        if src.num_rows == 0:
            raise InputError.at("the dataset has no rows", source=name)
    return src


def _type_name(t: Any) -> str:
    return str(t)


def _unify(a: Any, b: Any) -> Any:
    """The type both ``a`` and ``b`` widen to safely, or None."""
    pa = _pa()
    if a.equals(b):
        return a
    if pa.types.is_dictionary(a):
        return _unify(a.value_type, b)
    if pa.types.is_dictionary(b):
        return _unify(a, b.value_type)
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    ints = pa.types.is_integer
    if ints(a) and ints(b):
        return pa.int64()
    if (ints(a) or pa.types.is_floating(a)) and (ints(b) or pa.types.is_floating(b)):
        return pa.float64()
    texts = (pa.string(), pa.large_string())
    if a in texts and b in texts:
        return pa.large_string()
    return None


def _check_dataset_columns(src: Source, columns: list[str]) -> None:
    for c in columns:
        if c in src.conflicts:
            message, part = src.conflicts[c]
            raise InputError.at(message, source=part)
        if c in src.lacking:
            miss, have = src.lacking[c]
            raise InputError.at(
                f"its schema lacks column '{c}', which {have} has and a role uses "
                f"(every file of the dataset {src.name} must hold every column in use)",
                source=miss,
            )


def rows_upper_bound(src: Source) -> int | None:
    """A bound on the data rows, to size the exact top-1% gradient search (None: none known).

    Exact for binary formats; for uncompressed text (a file or a spooled stdin) the line
    count, where a line ends at LF, CRLF or a lone CR (about 0.1 s per 400 MB); for
    compressed text the decompressed size (zstd frames record it, or bound it by their
    blocks; gzip's trailer records it modulo 2³², so that one is a hint) over the
    shortest possible row. A bound that proves too small costs exactness only where
    GradSummary says so (top1_share_lower_bound); bz2 records no size.
    """
    if src.rows_bound is not None:
        return src.rows_bound
    if src.fmt not in ("csv", "tsv", "jsonl") or not isinstance(src.path, str):
        return None
    if src.compression is None:
        src.rows_bound = _count_lines(src.path)
        return src.rows_bound
    try:
        size = {"gzip": _gzip_size_hint, "zstd": _zstd_content_size}.get(src.compression, lambda p: None)(src.path)
    except (OSError, ValueError, IndexError):  # a damaged file: the reader says what is wrong with it
        return None
    if size is None:
        return None
    # a row holds at least its delimiters and a line end (a lone field: one character and the end);
    # a JSON Lines row at least "{}" and the end
    shortest = 3 if src.fmt == "jsonl" else max(2, len(src.columns))
    return size // shortest + 1


def _count_lines(path: str) -> int:
    """Lines ending in LF, CRLF or a lone CR, plus an unterminated last one."""
    lines = crs = crlfs = 0
    prev_cr = False
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            lines += chunk.count(b"\n")
            c = chunk.count(b"\r")
            if c:  # CR-only or CRLF line ends (a CRLF split across chunks counts once)
                crs += c
                crlfs += chunk.count(b"\r\n") + (prev_cr and chunk[:1] == b"\n")
            elif prev_cr and chunk[:1] == b"\n":
                crlfs += 1
            prev_cr = chunk[-1:] == b"\r"
            last = chunk[-1:]
    return lines + crs - crlfs + (last not in (b"\n", b"\r"))


def _gzip_size_hint(path: str) -> int | None:
    """The decompressed size from the gzip trailer (ISIZE), a hint: it records the last member's
    size only (bgzip and concatenated files have several) and modulo 2³². Where it is smaller than
    the compressed file (deflate expands data by at most 5 bytes per 64 KB stored block), it is
    one of those cases and says nothing: None."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        csize = f.tell()
        if csize < 18:
            return None
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    return isize if isize >= csize - csize // 1000 - 64 else None


_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_BLOCK_MAX = 128 * 1024


def _zstd_content_size(path: str) -> int | None:
    """An upper bound on the decompressed size of a zstd file: each frame's recorded content
    size, or where a frame has none, its raw and RLE blocks' sizes and 128 KiB per compressed
    block (RFC 8878: a block never decompresses to more). None if the file is not well formed."""
    total = 0
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.seek(0)
        while f.tell() < end:
            head = f.read(4)
            if len(head) < 4:
                return None
            magic = int.from_bytes(head, "little")
            if 0x184D2A50 <= magic <= 0x184D2A5F:  # a skippable frame
                n = int.from_bytes(f.read(4), "little")
                f.seek(n, os.SEEK_CUR)
                continue
            if magic != _ZSTD_MAGIC:
                return None
            fhd = f.read(1)[0]
            fcs_flag, single, checksum, dict_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
            f.seek((0 if single else 1) + (0, 1, 2, 4)[dict_flag], os.SEEK_CUR)
            fcs_size = (1 if single else 0) if fcs_flag == 0 else (1, 2, 4, 8)[fcs_flag]
            fcs = None
            if fcs_size:
                fcs = int.from_bytes(f.read(fcs_size), "little") + (256 if fcs_size == 2 else 0)
            blocks = 0
            while True:
                h = f.read(3)
                if len(h) < 3:
                    return None
                h = int.from_bytes(h, "little")
                last, btype, bsize = h & 1, (h >> 1) & 3, h >> 3
                if btype == 3:
                    return None
                blocks += bsize if btype in (0, 1) else _ZSTD_BLOCK_MAX
                f.seek(1 if btype == 1 else bsize, os.SEEK_CUR)
                if last:
                    break
            if checksum:
                f.seek(4, os.SEEK_CUR)
            total += fcs if fcs is not None else blocks
    return total


# ---------------------------------------------------------------- batches

def iter_batches(
    src: Source, columns: list[str], numeric: set[str], batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[Any]:
    """Record batches of ``columns`` (numeric ones as float64 where the format is text)."""
    pa = _pa()
    columns = list(dict.fromkeys(columns))
    dup = next((c for c in columns if c in src.duplicates), None)
    if dup is not None:
        raise InputError.at("two columns of the file have this name: rename one of them", source=src.name, column=dup)
    batch_rows = batch_rows_for(src, columns, batch_rows)
    rows = 0
    try:
        for b in _batches(src, columns, numeric, batch_rows):
            rows += b.num_rows
            yield b
    except (pa.ArrowInvalid, pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise _explain_reader_error(src, e, columns, numeric, rows) from None
    finally:
        if len(columns) > WIDE_COLUMNS:  # a wide reader's pages and dictionaries (2 MB a column) go back to the OS
            pa.default_memory_pool().release_unused()


BATCH_BYTES = 2 << 20  # a batch's values, widened to float64, stay within this (as in a default batch of two columns)


WIDE_COLUMNS = 16  # Parquet columns beyond which one thread decodes them


def _value_bytes(t: Any) -> int:
    """Bytes per row that a column of arrow type ``t`` takes once read and widened to float64."""
    pa = _pa()
    if t is None:
        return 8
    if pa.types.is_dictionary(t):
        return _value_bytes(t.value_type)
    if pa.types.is_fixed_size_list(t):
        return max(1, t.list_size) * _value_bytes(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or getattr(pa.types, "is_list_view", lambda _: False)(t):
        return 64 * _value_bytes(t.value_type)  # width unknown until read: a guess
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        return 16
    try:
        return max(8, t.bit_width // 8)
    except ValueError:
        return 8


def batch_rows_for(src: Source, columns: list[str], batch_rows: int) -> int:
    """``batch_rows``, lowered for wide rows so that a batch's values take at most BATCH_BYTES
    (100 float columns and a label: 2,595 rows). Results never depend on the batch size."""
    width = sum(_value_bytes(src.types.get(c)) for c in dict.fromkeys(columns))
    return max(1, min(batch_rows, BATCH_BYTES // max(width, 1)))


def _batches(src: Source, columns: list[str], numeric: set[str], batch_rows: int) -> Iterator[Any]:
    if src.fmt in ("csv", "tsv"):
        if src.compression is None and (src.size_bytes or 0) >= PARALLEL_CSV_BYTES and not src.cr_only:
            yield from _rechunk(_csv_chunks(src, columns, numeric), batch_rows)
        else:
            yield from _rechunk(_csv_reader(src, columns, numeric, batch_rows), batch_rows)
    elif src.fmt == "jsonl":
        reader = _jsonl_reader(src, columns, numeric, batch_rows)
        yield from _rechunk(reader, batch_rows)
    elif src.fmt == "parquet":
        # pre_buffer=False: reading ahead whole row groups would make memory grow with the file;
        # buffer_size: column chunks stream through buffers instead of being read whole
        # (peak RSS at 32M rows 185 → 150 MB, and a little faster): 1 MB each for a few
        # columns, less for many (8 MB in all, at least 64 KB each), since every column
        # read also holds its page and dictionary (about 2 MB at pyarrow's default sizes)
        buffer = min(1 << 20, max(64 << 10, (8 << 20) // max(1, len(columns))))
        pf = parquet_file(src.path, pre_buffer=False, buffer_size=buffer)
        groups = range(*src.row_groups) if src.row_groups is not None else None
        # batches of batch_rows rows decoded from each row group piece by piece; many columns
        # are decoded on the reader's thread alone, while the batch before is computed (pyarrow's
        # threads would each hold pages: 1M rows × 100 float32 columns, peak about 30 MB more)
        wide = len(columns) > WIDE_COLUMNS
        yield from _rechunk(pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns,
                                            use_threads=not wide), batch_rows)
    elif src.fmt == "feather":
        yield from _feather_batches(src, columns, batch_rows)
    elif src.fmt == "dataset":
        yield from _dataset_batches(src, columns, numeric, batch_rows)
    else:  # pragma: no cover - formats are checked when the source opens
        raise InputError.at(f"unknown format {src.fmt}", source=src.name)


def _feather_batches(src: Source, columns: list[str], batch_rows: int) -> Iterator[Any]:
    pa = _pa()
    if src.compression is None:
        try:
            mm = pa.memory_map(src.path)
            reader = pa.ipc.open_file(mm)
        except pa.ArrowInvalid:
            pass
        else:
            size = mm.size()

            def batches() -> Iterator[Any]:
                for i in range(reader.num_record_batches):
                    _still_holds(src, mm.fileno(), size, size)  # (the batches are views of the mapping)
                    yield reader.get_batch(i).select(columns)

            yield from _rechunk(batches(), batch_rows)
            return
    stream = pa.ipc.open_stream(pa.input_stream(src.path, compression=src.compression))
    yield from _rechunk((b.select(columns) for b in stream), batch_rows)


def _dataset_batches(src: Source, columns: list[str], numeric: set[str], batch_rows: int) -> Iterator[Any]:
    """A dataset file by file, each read as that file alone is (so memory stays near one
    file's), cast to the dataset's unified types, with hive partition values as constant
    columns. (pyarrow.dataset is not used: importing it alone costs 50 MB, and its scanner
    reads 4 files and 16 batches ahead.)"""
    pa = _pa()
    _check_dataset_columns(src, columns)
    names: list[str] = []
    rows: list[int] = []
    for part, keys in zip(src.parts, src.part_keys):
        in_file = [c for c in columns if c not in keys and c in part.columns]
        names.append(part.name)
        rows.append(0)
        # an error at a row of the dataset names this file and the row in it
        register_parts(src.name, names, rows, src.first_row, [p.first_row for p in src.parts])
        for b in iter_batches(part, in_file or part.columns[:1], numeric & set(in_file), batch_rows):
            rows[-1] += b.num_rows
            arrays = []
            for c in columns:
                t = src.types.get(c)
                if c in in_file:
                    a = b.column(c)
                    if t is not None and not a.type.equals(t) and _unify(a.type, t) == t:
                        # int → double may round beyond 2**53, as reading the number from text does
                        a = a.cast(t, safe=not (pa.types.is_integer(a.type) and pa.types.is_floating(t)))
                else:  # a partition value (null for hive's default partition) as a constant column
                    v = keys.get(c)
                    t = t or pa.string()
                    a = pa.nulls(b.num_rows, t) if v is None else \
                        pa.repeat(pa.scalar(int(v) if pa.types.is_integer(t) else v, type=t), b.num_rows)
                arrays.append(a)
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


_DAMAGED = re.compile(r"inflate|deflate|zlib|gzip|bz2|zstd|lz4|compress|truncated", re.I)


def _explain_reader_error(src: Source, e: BaseException, columns: list[str], numeric: set[str],
                          rows: int = 0) -> InputError:
    text = str(e)
    if isinstance(e, FileNotFoundError):
        return InputError.at("the file was removed while it was read", source=src.name)
    if isinstance(e, PermissionError):
        return InputError.at("permission denied", source=src.name)
    if src.compression and _DAMAGED.search(text):
        where = f"after data row {rows:,}" if rows else "within its first block of rows"
        return InputError.at(f"the {src.compression} data is damaged or cut short {where} ({_short(e)})",
                             source=src.name)
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
            check = (lambda s, b=bad.group(1), c=check: (_non_numeric(s) or "not a number") if s == b else c(s))
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
