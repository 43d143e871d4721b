"""Settings of the process a run lives in (the CLI's, a Dask worker's)."""
from __future__ import annotations

import sys


def tune_malloc() -> None:
    """Let glibc reuse freed batch-sized buffers instead of mapping fresh pages.

    Every batch allocates and frees temporaries of about 1 MB; above glibc's mmap
    threshold each comes straight from the kernel and is page-faulted anew, which
    costs more than the arithmetic. Raising the mmap and trim thresholds keeps them
    on the heap (about 30% faster end to end; memory stays bounded by the batch size).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 4 << 20)
        libc.mallopt(m_trim_threshold, 64 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass
