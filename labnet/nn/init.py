"""Weight initialisers (the book's std 0.01, Xavier and He), chosen per model in config."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from labnet.errors import ConfigError


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output unit: rows of an affine weight, C*kh*kw of a conv filter."""
    return int(np.prod(shape[1:])) if len(shape) == 4 else int(shape[0])


def std_scale(shape: tuple[int, ...], std: float = 0.01) -> float:
    return std


def xavier_scale(shape: tuple[int, ...]) -> float:
    """The book's Xavier: std = sqrt(1 / n) for n inputs (suits sigmoid and tanh)."""
    return math.sqrt(1.0 / fan_in(shape))


def he_scale(shape: tuple[int, ...]) -> float:
    """He: std = sqrt(2 / n) for n inputs (suits ReLU)."""
    return math.sqrt(2.0 / fan_in(shape))


INITIALIZERS: dict[str, Callable[[tuple[int, ...]], float]] = {
    "std": std_scale,
    "xavier": xavier_scale,
    "sigmoid": xavier_scale,
    "he": he_scale,
    "relu": he_scale,
}


def init_weight(
    shape: tuple[int, ...], init: str | float, rng: np.random.Generator, dtype: np.dtype = np.float32
) -> np.ndarray:
    """Draw a weight of ``shape`` from N(0, scale²); ``init`` is a name or a float std."""
    if isinstance(init, (int, float)) and not isinstance(init, bool):
        if init <= 0:
            raise ConfigError(f"init={init!r}: a numeric init is a standard deviation and must be > 0")
        scale = float(init)
    elif isinstance(init, str) and init in INITIALIZERS:
        scale = INITIALIZERS[init](shape)
    else:
        raise ConfigError(
            f"unknown init {init!r}: accepted are {', '.join(sorted(INITIALIZERS))} or a positive float std"
        )
    return _scaled_normal(shape, scale, rng, np.dtype(dtype))


#: draws per chunk of a weight in a narrower dtype: bounds the float64 scratch memory to 8 MiB
CHUNK = 1 << 20


def _scaled_normal(shape: tuple[int, ...], scale: float, rng: np.random.Generator, dtype: np.dtype) -> np.ndarray:
    """N(0, scale²) draws allocated in ``dtype`` (no float64 copy of a float32 weight), drawn in float64
    chunks: the generator's stream and the rounding are those of one float64 draw cast at the end."""
    out = np.empty(shape, dtype)
    flat = out.reshape(-1)
    for start in range(0, flat.size, CHUNK):
        draws = rng.standard_normal(min(CHUNK, flat.size - start))
        draws *= scale
        flat[start : start + draws.size] = draws
    return out
