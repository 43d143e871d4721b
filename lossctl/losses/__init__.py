"""The loss catalogue. Importing this package registers every loss."""
from lossctl.losses import regression  # noqa: F401
from lossctl.losses import classification  # noqa: F401
from lossctl.losses import metric_learning  # noqa: F401
from lossctl.losses import segmentation  # noqa: F401
from lossctl.losses import divergence  # noqa: F401
