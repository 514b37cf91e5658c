"""The book's optimizers (common/optimizer.py), updating parameters in place, and the base class
plugin optimizers build on; ``nesterov`` is the published method rather than the book's code
(docs/numerics.md says where and why).

The contract of :class:`Optimizer` (what a subclass writes, what the base class does for it):

- a subclass declares ``name`` (what users type: ``optimizer=NAME``), the per-parameter state it keeps
  as ``slots = ("m", ...)``, and implements ``update(key, p, g)``, which changes ``p`` in place;
- ``step(params, grads)`` (called by the trainer once per minibatch) adds 1 to ``step_count`` and then,
  for every parameter ``key``, calls ``update(key, p, g)``. With ``weight_decay > 0`` the ``g`` it passes
  is ``grads[key] + weight_decay * p`` (coupled L2, as PyTorch's SGD and Adam do). A subclass that applies
  its decay itself (decoupled, ``p *= 1 - lr * weight_decay`` as AdamW and Lion do) sets
  ``decoupled_weight_decay = True`` and then gets the raw gradient: applying both is weight decay twice,
  which ``labnet plugins check`` reports;
- state: ``self.slot(slot, key, p)`` gives the slot's array for parameter ``key`` (zeros at first use) to
  update in place; ``opt.get_slot(slot, key)`` reads it back (tests); ``self.scratch(purpose, key, p)`` is a
  reusable temporary that is not state; ``step_count`` counts the steps taken (1 in the first ``update``);
- ``state_dict()`` is every declared slot's arrays plus the step count, ``{"slot/key": array, "t": n}``,
  and ``load_state_dict()`` restores them: checkpoints and resume need nothing more from a subclass, as long
  as all its state lives in slots (``labnet plugins check`` reports a declared slot that never changes);
- ``lr`` and ``weight_decay`` are plain attributes: ``optimizer.lr`` is the current learning rate (what an
  epoch hook reads).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from labnet.errors import ConfigError


def _sqrt(x):
    """math.sqrt of a float (a Python float stays a weak scalar: float32 arithmetic stays float32), np.sqrt of
    per-member hyperparameters (arrays, labnet.fused)."""
    return math.sqrt(x) if isinstance(x, float) else np.sqrt(x)


class Optimizer:
    """Base class: ``step()`` adds the weight decay (unless ``decoupled_weight_decay``) and calls ``update``."""

    name: ClassVar[str] = ""
    #: the state slots this optimizer keeps per parameter (each saved by ``state_dict``)
    slots: ClassVar[tuple[str, ...]] = ()
    #: True when ``update`` is elementwise and its arithmetic also holds with every float hyperparameter an
    #: array broadcast over a leading member axis: labnet.fused then steps a sweep's members as one stack
    stackable: ClassVar[bool] = False
    #: True: ``step()`` passes the raw gradient and ``update`` applies ``weight_decay`` itself
    decoupled_weight_decay: ClassVar[bool] = False

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0) -> None:
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"{self.name} lr={lr!r}: the learning rate must be a finite number > 0")
        if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
            raise ConfigError(f"{self.name} weight_decay={weight_decay!r}: must be a number >= 0")
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.step_count = 0
        self.state: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.slots}
        self._tmp: dict[str, np.ndarray] = {}

    @property
    def t(self) -> int:
        """The step counter under the book's name (same as ``step_count``)."""
        return self.step_count

    @t.setter
    def t(self, value: int) -> None:
        self.step_count = value

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update every ``params[k]`` in place from ``grads[k]`` (plus ``weight_decay * p`` unless decoupled)."""
        self.step_count += 1
        decay = self.weight_decay  # a float, or per-member values (an array, labnet.fused)
        coupled = (decay if type(decay) is float else bool(np.any(decay))) and not self.decoupled_weight_decay
        for key, p in params.items():
            g = grads[key]
            if coupled:  # g + weight_decay * p, in a kept buffer: no temporary per step
                decayed = np.multiply(p, self.weight_decay, out=self.scratch("wd", key, p))
                g = np.add(decayed, g, out=decayed)
            self.update(key, p, g)

    def update(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        """Change ``p`` (parameter ``key``) in place from its gradient ``g``: what a subclass writes."""
        raise NotImplementedError

    # -- state -------------------------------------------------------------------------
    def slot(self, slot: str, key: str, like: np.ndarray) -> np.ndarray:
        """The state array ``slot`` of parameter ``key``, created as zeros like ``like`` at first use."""
        arrays = self.state.get(slot)
        if arrays is None:
            raise KeyError(
                f"{type(self).__name__} has no state slot {slot!r}; declare it: slots = {self.slots + (slot,)}"
            )
        arr = arrays.get(key)
        if arr is None:
            arr = arrays[key] = np.zeros_like(like)
        return arr

    def get_slot(self, slot: str, key: str) -> np.ndarray:
        """The current state array ``slot`` of parameter ``key`` (after at least one step), to read."""
        if slot not in self.state:
            raise KeyError(f"{type(self).__name__} has no state slot {slot!r}; its slots: {list(self.slots)}")
        if key not in self.state[slot]:
            raise KeyError(f"slot {slot!r} has no entry for parameter {key!r} yet: it is created by the first step")
        return self.state[slot][key]

    def scratch(self, purpose: str, key: str, like: np.ndarray) -> np.ndarray:
        """A temporary array like ``like`` kept between steps (not state: not saved, contents undefined)."""
        buf = self._tmp.get(purpose + key)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = self._tmp[purpose + key] = np.empty_like(like)
        return buf

    _buffer = scratch  # the name plugins written before the contract was documented use

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat ``{"slot/key": array, "t": step_count}``, ready for ``np.savez``."""
        out = {f"{slot}/{key}": arr.copy() for slot, arrays in self.state.items() for key, arr in arrays.items()}
        out["t"] = np.asarray(self.step_count)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.step_count = int(state["t"])
        self.state = {slot: {} for slot in self.slots}
        for name, arr in state.items():
            if name == "t":
                continue
            slot, _, key = name.partition("/")
            if slot not in self.state:
                raise ConfigError(f"optimizer state has slot {slot!r}, but {self.name} keeps {list(self.slots)}")
            self.state[slot][key] = np.array(arr)

    def __repr__(self) -> str:
        hp = {k: v for k, v in vars(self).items() if isinstance(v, float)}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in hp.items())})"


class SGD(Optimizer):
    """p -= lr * g"""

    name = "sgd"
    stackable = True

    def update(self, key, p, g):
        tmp = np.multiply(g, self.lr, out=self.scratch("tmp", key, p))
        p -= tmp


class Momentum(Optimizer):
    """v = momentum * v - lr * g;  p += v"""

    name = "momentum"
    stackable = True
    slots = ("v",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.momentum = float(momentum)

    def update(self, key, p, g):
        v = self.slot("v", key, p)
        v *= self.momentum
        v -= np.multiply(g, self.lr, out=self.scratch("tmp", key, p))
        p += v


class Nesterov(Momentum):
    """Nesterov's accelerated gradient (Sutskever et al. 2013), as PyTorch and Keras implement it:
    v = m*v - lr*g;  p += m*v - lr*g, i.e. p += m²·v_old - (1+m)·lr·g

    Not the book's code (common/optimizer.py), which adds m²·v_new - (1+m)·lr·g: that is
    p += m³·v_old - (1+m+m²)·lr·g, a first step 1.43x the method's at m = 0.9 (docs/numerics.md).
    """

    name = "nesterov"
    stackable = True

    def update(self, key, p, g):
        v, m = self.slot("v", key, p), self.momentum
        tmp = self.scratch("tmp", key, p)
        v *= m
        v -= np.multiply(g, self.lr, out=tmp)
        p += np.multiply(v, m, out=tmp)
        p -= np.multiply(g, self.lr, out=tmp)


class AdaGrad(Optimizer):
    """h += g²;  p -= lr * g / (sqrt(h) + 1e-7)"""

    name = "adagrad"
    stackable = True
    slots = ("h",)
    eps = 1e-7

    def update(self, key, p, g):
        h, tmp = self.slot("h", key, p), self.scratch("tmp", key, p)
        h += np.multiply(g, g, out=tmp)
        np.sqrt(h, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        tmp *= self.lr
        p -= tmp


class RMSprop(Optimizer):
    """h = decay_rate * h + (1 - decay_rate) * g²;  p -= lr * g / (sqrt(h) + 1e-7)"""

    name = "rmsprop"
    stackable = True
    slots = ("h",)
    eps = 1e-7

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        if not 0.0 <= float(decay_rate) < 1.0:
            raise ConfigError(f"rmsprop decay_rate={decay_rate!r}: must be in [0, 1)")
        self.decay_rate = float(decay_rate)

    def update(self, key, p, g):
        h, tmp = self.slot("h", key, p), self.scratch("tmp", key, p)
        h *= self.decay_rate
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.decay_rate
        h += tmp
        np.sqrt(h, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        tmp *= self.lr
        p -= tmp


class Adam(Optimizer):
    """Adam with bias correction folded into the step size, as in the book:
    m += (1-b1)(g-m);  v += (1-b2)(g²-v);  p -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+1e-7)

    Its state is the moments' exponentially weighted sums, m_sum = m/(1-b1) and v_sum = v/(1-b2):
    m_sum = b1 m_sum + g and v_sum = b2 v_sum + g² take five passes over the parameters instead
    of seven, and the constants move into the step size and eps (ten NumPy passes a step instead
    of twelve: ~18% less time in Adam). Saved as they are, so a resumed run is bit-exact.
    """

    name = "adam"
    stackable = True
    slots = ("m_sum", "v_sum")
    eps = 1e-7

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= float(beta) < 1.0:
                raise ConfigError(f"adam {label}={beta!r}: must be in [0, 1)")
        self.beta1, self.beta2 = float(beta1), float(beta2)

    def update(self, key, p, g):
        m, v, tmp = self.slot("m_sum", key, p), self.slot("v_sum", key, p), self.scratch("tmp", key, p)
        root = _sqrt(1.0 - self.beta2)  # sqrt(v) = root * sqrt(v_sum)
        t = self.step_count
        lr_t = self.lr * _sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t) * (1.0 - self.beta1) / root
        m *= self.beta1
        m += g
        v *= self.beta2
        np.multiply(g, g, out=tmp)
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self.eps / root
        np.divide(m, tmp, out=tmp)
        tmp *= lr_t
        p -= tmp


BUILTIN_OPTIMIZERS = [SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam]
