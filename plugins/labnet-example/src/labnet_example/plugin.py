"""The module the entry point names: labnet calls the ``@hookimpl`` functions found here.

Registration hooks return classes; each class's ``name`` is what users type in configs
(``model.layers=[{type: swish}]``, ``optimizer=adamw``, ``dataset=moons``). Lifecycle hooks
observe a run. An implementation may take fewer arguments than the hook's spec
(``labnet_epoch_end`` below takes only ``epoch`` and ``model``).
"""

from __future__ import annotations

import warnings

import numpy as np
from labnet import hookimpl

from labnet_example.datasets import Moons
from labnet_example.layers import Swish
from labnet_example.optimizers import AdamW

#: warn when the gradient norm at the end of an epoch exceeds this
MAX_GRAD_NORM = 1e3


class GradientExplosionWarning(RuntimeWarning):
    """The model's gradient norm went above :data:`MAX_GRAD_NORM` (or became NaN / inf)."""


@hookimpl
def labnet_layers() -> list[type]:
    return [Swish]


@hookimpl
def labnet_optimizers() -> list[type]:
    return [AdamW]


@hookimpl
def labnet_datasets() -> list[type]:
    return [Moons]


@hookimpl
def labnet_epoch_end(epoch, model) -> None:
    """Warn when the gradient of the epoch's last minibatch explodes (a sign of a too large lr)."""
    norm = float(np.linalg.norm(model.flat_grads))
    if not norm <= MAX_GRAD_NORM:  # also catches NaN
        warnings.warn(
            f"epoch {epoch}: gradient norm {norm:.4g} is above {MAX_GRAD_NORM:g}; "
            "training may be diverging: lower optimizer.lr",
            GradientExplosionWarning,
            stacklevel=2,
        )
