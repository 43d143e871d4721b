"""lossctl: evaluate machine-learning losses and their gradients.

The library and the command line share one core::

    import lossctl
    lossctl.evaluate(y, yhat, "huber:delta=1.5").value
    lossctl.evaluate(y, p, ["bce", "focal:gamma=2"], grad=True)

Per-loss functions live in :mod:`lossctl.losses` (``lossctl.losses.regression.huber``).
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate", "evaluate_arrays", "get_loss", "list_losses"]


def __getattr__(name: str) -> Any:
    # keep `import lossctl` (and so `lossctl --help`) free of numpy and pyarrow
    if name in ("evaluate", "evaluate_arrays"):
        from lossctl import api

        return getattr(api, name)
    if name == "get_loss":
        from lossctl.registry import get

        return get
    if name == "list_losses":
        from lossctl.registry import all_losses

        return all_losses
    raise AttributeError(f"module 'lossctl' has no attribute {name!r}")
