"""The loss catalogue: each family module declares its losses as data (``LOSSES``, a
tuple of :class:`~lossctl.spec.LossSpec`); :data:`ALL` is every loss, in the order
``lossctl list`` shows them. :mod:`lossctl.registry` builds its name tables from ``ALL``;
nothing here imports the registry or registers anything."""
from lossctl.losses import classification, divergence, metric_learning, regression, segmentation
from lossctl.spec import LossSpec

ALL: tuple[LossSpec, ...] = (
    *regression.LOSSES,
    *classification.LOSSES,
    *metric_learning.LOSSES,
    *segmentation.LOSSES,
    *divergence.LOSSES,
)

__all__ = ["ALL"]
