"""Provides an optimizer named ``sgd``, the name of a built-in: labnet must refuse the clash."""

from __future__ import annotations

import labnet
from labnet.nn.optimizers import Optimizer


class OtherSgd(Optimizer):
    name = "sgd"

    def update(self, key, p, g):
        p -= self.lr * g


@labnet.hookimpl
def labnet_optimizers():
    return [OtherSgd]
