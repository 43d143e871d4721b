"""Exceptions and exit codes: one place maps every failure to what the shell sees."""
from __future__ import annotations

from bisect import bisect_right
from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    CHECK_FAILED = 1
    INPUT_ERROR = 2
    INTERNAL_ERROR = 3


class LossctlError(ValueError):
    """Base class of the errors lossctl reports to the user (exit code 2)."""

    exit_status = ExitStatus.INPUT_ERROR


class UsageError(LossctlError):
    """A bad option, loss name, parameter or value on the command line."""


class OutputError(UsageError):
    """Results could not be written: a full device, a closed standard output, a bad -o path.

    ``stdout`` says the failed stream was standard output, whose buffer the command
    line then discards (the interpreter's last flush must not fail a second time).
    """

    def __init__(self, message: str, *, stdout: bool = False) -> None:
        super().__init__(message)
        self.stdout = stdout


class InputError(LossctlError):
    """Unreadable data or invalid values in it.

    The message names the file, the column, the first offending row and its value
    where there is one; ``InputError.at`` builds that message uniformly.
    """

    @classmethod
    def at(
        cls,
        message: str,
        *,
        source: str | None = None,
        column: str | None = None,
        row: int | None = None,
        value: object = None,
        count: int | None = None,
    ) -> "InputError":
        where = []
        dataset = None
        if source is not None and row is not None and source in _PARTS:
            names, starts, local = _PARTS[source]
            i = bisect_right(starts, row - 1) - 1
            if 0 <= i < len(names) and row >= 1:  # the part file and its own row, then the dataset's row
                dataset = f"row {row} of the dataset {source}"
                source, row = names[i], row - starts[i] + local[i]
        if source is not None:
            where.append(source)
        if column is not None:
            where.append(f"column '{column}'")
        if row is not None:
            where.append(f"row {row}")
        if dataset is not None:
            where[-1] += f" ({dataset})"
        text = ", ".join(where)
        text = f"{text}: {message}" if text else message
        if value is not None:
            text += f" (got {_show(value)})"
        if count is not None and count > 1:
            text += f"; {count} rows like this found so far"  # counted so far, not the file's size
        return cls(text)


# a dataset's part files and the dataset row each starts at (0-based), by dataset name:
# an error at a row of the dataset names the part file and its row (lossctl.io registers them)
_PARTS: dict[str, tuple[list[str], list[int], list[int]]] = {}


def register_parts(dataset: str, parts: list[str], rows: list[int], first: int = 0,
                   local: list[int] | None = None) -> None:
    """The files of ``dataset`` read so far, with their rows read: from the dataset's row
    ``first`` (0-based), each file from its row ``local[i]`` (a fragment of a distributed run)."""
    starts, at = [], first
    for n in rows:
        starts.append(at)
        at += n
    _PARTS[dataset] = (list(parts), starts, list(local or [0] * len(parts))[:len(parts)])


def clip(text: str, limit: int = 60) -> str:
    """``text`` cut to about ``limit`` characters at a word or item boundary, marked with "…"."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    edge = max(cut.rfind(" "), cut.rfind(","), cut.rfind(";"))
    if edge >= limit // 2:
        cut = cut[:edge]
    return cut.rstrip(" ,;:") + "…"


def _show(value: object) -> str:
    if isinstance(value, float):
        return repr(value) if value == value else "nan"
    if isinstance(value, str):
        return repr(clip(value))
    return clip(str(value))
