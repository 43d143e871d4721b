"""lossctl: evaluate machine-learning losses and their gradients.

The library and the command line share one core::

    import lossctl
    lossctl.evaluate(y, yhat, "huber:delta=1.5").value
    lossctl.evaluate(y, p, ["bce", "focal:gamma=2"], grad=True)
    losses, grads = lossctl.per_row(y, yhat, "huber")
    lossctl.recommend(y, yhat).recommendations     # the selection guides applied to the data

Per-loss functions live in :mod:`lossctl.losses` (``lossctl.losses.regression.huber``).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__", "evaluate", "evaluate_arrays", "per_row", "get_loss", "list_losses",
    "LossResult", "LossctlError", "InputError", "UsageError", "recommend",
]

# submodules reachable as attributes after a bare `import lossctl` (lossctl.api.per_row,
# lossctl.errors.InputError), imported on first use
_SUBMODULES = ("api", "errors", "results", "registry", "losses", "engine", "accumulate", "options")


def __getattr__(name: str) -> Any:
    # keep `import lossctl` (and so `lossctl --help`) free of numpy and pyarrow
    if name in ("evaluate", "evaluate_arrays", "per_row"):
        from lossctl import api

        return getattr(api, name)
    if name == "get_loss":
        from lossctl.registry import get

        return get
    if name == "list_losses":
        from lossctl.registry import all_losses

        return all_losses
    if name == "LossResult":
        from lossctl.results import LossResult

        return LossResult
    if name in ("LossctlError", "InputError", "UsageError"):
        from lossctl import errors

        return getattr(errors, name)
    if name == "recommend":
        from lossctl.advice import recommend

        return recommend
    if name in _SUBMODULES:
        return importlib.import_module(f"lossctl.{name}")
    raise AttributeError(f"module 'lossctl' has no attribute {name!r}")


def __dir__() -> list[str]:
    # what a notebook's tab completion offers: the API and the submodules, not this module's imports
    return sorted(set(__all__) | set(_SUBMODULES))
