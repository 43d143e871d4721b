"""A progress bar on stderr for long reads: only on a terminal, only after a second."""
from __future__ import annotations

import os
import sys
import time
from typing import Any

DELAY = 1.0  # seconds before a bar appears: short runs never flash one


def wanted(quiet: bool, stream: Any = None) -> bool:
    """A bar only when stderr is a terminal, not -q, not in CI logs, not TERM=dumb."""
    stream = stream or sys.stderr
    if quiet or os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Rows (and, where the size is known, bytes) done, rate and ETA."""

    def __init__(self, total_rows: int | None, total_bytes: int | None, label: str) -> None:
        self.total_rows = total_rows
        self.total_bytes = total_bytes
        self.label = label
        self.start = time.monotonic()
        self.rows = 0
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, rows: int) -> None:
        self.rows += rows
        if self._bar is None:
            if time.monotonic() - self.start < DELAY:
                return
            self._open()
        self._bar.update(self._task, completed=self.rows, bytes=self._bytes(), rate=self._rate())

    def _rate(self) -> str:
        elapsed = time.monotonic() - self.start
        return f"{self.rows / elapsed:,.0f} rows/s" if elapsed > 0 else ""

    def _bytes(self) -> str:
        if not self.total_bytes or not self.total_rows:
            return ""
        done = self.total_bytes * min(1.0, self.rows / self.total_rows)
        return f"{done / 1e6:,.0f}/{self.total_bytes / 1e6:,.0f} MB"

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        columns = [TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.completed:,.0f}" + (f"/{self.total_rows:,}" if self.total_rows else "") + " rows"),
                   TextColumn("{task.fields[bytes]}"), TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
        self._bar = Bar(*columns, console=Console(file=sys.stderr), transient=True)
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=self.total_rows, bytes=self._bytes(), rate=self._rate())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
