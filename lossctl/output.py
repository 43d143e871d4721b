"""Results → stdout or a file: atomic (a file appears whole or not at all), pipe-aware.

A file is staged in its folder and renamed into place once complete; stdout is held
until the results are whole (or streamed batch by batch where asked), and a closed
stdout or a full disk is one line and exit 2, never a traceback or a partial file.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import sys
import tempfile
from typing import Any, Iterator


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
