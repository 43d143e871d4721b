"""``lossctl recommend``: measure the evidence the selection guides turn on, rank the losses.

    import lossctl
    advice = lossctl.recommend(y, yhat)          # an Advice: .recommendations, .evidence, .ruled_out
    advice.top.spec                              # e.g. 'huber:delta=1.37'
    advice.to_dict()                             # the document `lossctl recommend -f json` prints

The package is itself callable (``lossctl.recommend(...)`` is ``lossctl.advice.recommend(...)``),
so the function and the package share one name.
"""
from __future__ import annotations

from typing import Any

from lossctl.advice.core import Advice, Recommendation

__all__ = ["recommend", "Advice", "Recommendation"]


def recommend(
    y: Any = None,
    yhat: Any = None,
    *,
    task: str | None = None,
    goal: str | None = None,
    coverage: float | None = None,
    weight: Any = None,
    logits: bool | None = None,
    batch_rows: int | None = None,
    check: bool = True,
    **roles: Any,
) -> Advice:
    """Rank the losses that fit the data, with reasons, derived parameters and (with predictions) values.

    ``y``/``yhat`` bind the target and prediction; other roles are keywords as in
    :func:`lossctl.evaluate` (``embedding=``, ``teacher=``, ``student=``, ``mu=``, ``logvar=``,
    ``group=`` for image ids …). ``goal`` is one of intervals, margin, boosting, quality,
    simple, small-objects, vae, distillation; ``coverage`` the central interval wanted
    (implies goal intervals). ``check=False`` skips evaluating the recommended losses.
    The ranking does not depend on row order or ``batch_rows``.
    """
    from lossctl.advice.sources import run_arrays

    return run_arrays(y, yhat, task=task, goal=goal, coverage=coverage, weight=weight, logits=logits,
                      batch_rows=batch_rows, check=check, **roles)
