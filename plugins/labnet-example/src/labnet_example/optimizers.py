"""An optimizer: subclass labnet's Optimizer, declare the state ``slots``, write ``update`` (docs/plugins.md)."""

from __future__ import annotations

import math

import numpy as np
from labnet.errors import ConfigError
from labnet.nn.optimizers import Optimizer


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as in PyTorch's ``AdamW``:

    p -= lr * weight_decay * p;  m += (1-b1)(g-m);  v += (1-b2)(g²-v);
    p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)

    The decay shrinks the weights directly and never enters the moments, unlike Adam with
    ``weight_decay`` (an L2 term added to the gradient). It applies to every parameter the
    optimizer is given. ``state_dict()`` holds ``m/<key>``, ``v/<key>`` and ``t``.
    """

    name = "adamw"
    slots = ("m", "v")
    decoupled_weight_decay = True  # step() passes the raw gradient: update() applies the decay itself

    def __init__(
        self,
        lr: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(lr, weight_decay)  # checks lr and weight_decay, creates the slots
        for key, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= float(beta) < 1.0:
                raise ConfigError(f"adamw {key}={beta!r}: must be in [0, 1)")
        if not float(eps) > 0:
            raise ConfigError(f"adamw eps={eps!r}: must be > 0")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def update(self, key, p, g):
        m, v, tmp = self.slot("m", key, p), self.slot("v", key, p), self.scratch("tmp", key, p)
        if self.weight_decay:
            p *= 1.0 - self.lr * self.weight_decay
        np.subtract(g, m, out=tmp)
        tmp *= 1.0 - self.beta1
        m += tmp
        np.multiply(g, g, out=tmp)
        tmp -= v
        tmp *= 1.0 - self.beta2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / math.sqrt(1.0 - self.beta2**self.step_count)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr / (1.0 - self.beta1**self.step_count)
        p -= tmp
