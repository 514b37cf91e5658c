"""The layer protocol every built-in and plugin layer follows."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np


class Layer:
    """Base class of layers: explicit ``forward`` / ``backward`` as in the book.

    ``params`` and ``grads`` are dicts of arrays with the same keys. ``backward``
    *overwrites* ``grads`` (it does not accumulate) and returns the gradient with
    respect to the layer's input; it never modifies ``dout`` unless the layer says so.
    Buffers that are state but not trained (batch-norm running statistics) live in
    ``buffers`` so checkpoints can save them.

    A layer that draws random numbers keeps its generator in ``self.rng`` (set by
    ``build``) so :func:`labnet.gradcheck` can replay the same draws.
    """

    name: ClassVar[str] = ""
    #: input shape (without the batch axis) used by ``labnet plugins check`` when the layer
    #: cannot take the default (a layer for images declares e.g. ``(3, 8, 8)``).
    example_input_shape: ClassVar[tuple[int, ...]] = (6,)
    #: constructor arguments for those checks, for a layer that cannot be built without any
    example_args: ClassVar[dict] = {}

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        #: False for the first layer: its input gradient is never used, so skip computing it.
        self.needs_input_grad: bool = True
        self._workspace: dict[tuple, np.ndarray] = {}

    # -- shape inference and parameters -------------------------------------------------
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one output sample for one input sample of ``input_shape``; raises ShapeError."""
        return tuple(input_shape)

    def parameter_shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]] | None:
        """The shapes ``build`` will give ``params`` for ``input_shape``, known before allocating (a model too
        large for the machine is refused by name); None: not declared, left out of that estimate."""
        return None

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype) -> tuple[int, ...]:
        """Create parameters for ``input_shape`` and return the output shape."""
        self.rng = rng
        self.dtype = np.dtype(dtype)
        return self.output_shape(tuple(input_shape))

    # -- computation -------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------
    def workspace(self, key: str, shape: tuple[int, ...], dtype: np.dtype | None = None) -> np.ndarray:
        """A preallocated array reused across steps of the same batch shape (no per-step churn)."""
        dtype = np.dtype(dtype or self.dtype)
        slot = (key, shape, dtype)
        buf = self._workspace.get(slot)
        if buf is None:
            buf = self._workspace[slot] = np.empty(shape, dtype=dtype)
        return buf

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments that describe this layer (for repr, summaries, tracking)."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{type(self).__name__}({args})"
