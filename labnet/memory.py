"""A model too large for this machine is refused by the config keys that ask for it, before any of it is
allocated. NumPy's own MemoryError names a shape, not an option; and on Linux an allocation that fits the
overcommit heuristic succeeds, and the process is killed later, when the pages are touched."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from labnet.data.base import DataSplits
from labnet.errors import ConfigError, ShapeError
from labnet.nn.layer import Layer

#: copies of the parameters while ``Sequential.build`` runs: parameters and gradients, each in its layer
#: and in the flat buffer they are then moved to
BUILD_COPIES = 4
#: arrays of a layer's output size kept per batch: the output, the input gradient and one more cache
#: (a mask, a scratch buffer); a rough count, which is all a refusal needs
ACTIVATION_COPIES = 3


def available_memory() -> int | None:
    """Bytes this process can allocate now without swapping (Linux's MemAvailable), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def layer_sizes(layers: Sequence[Layer], input_shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """(parameters, outputs per sample) of each layer for samples of ``input_shape``, from shapes alone
    (0 parameters where a layer declares no ``parameter_shapes``); stops at a layer that does not fit,
    which ``Sequential.build`` then names."""
    sizes, shape = [], tuple(int(s) for s in input_shape)
    for layer in layers:
        try:
            shapes = layer.parameter_shapes(shape)
            shape = tuple(int(s) for s in layer.output_shape(shape))
        except ShapeError:
            break
        sizes.append((sum(math.prod(s) for s in (shapes or {}).values()), math.prod(shape)))
    return sizes


def largest_batches(data: DataSplits, batch_size: int, eval_batch_size: int) -> dict[str, int]:
    """The batches the trainer will run, keyed by the option setting them: training steps and evaluation."""
    splits = [s for s in (data.train, data.val, data.test) if s is not None]
    return {
        f"trainer.batch_size={batch_size}": min(batch_size, len(data.train)),
        f"trainer.eval_batch_size={eval_batch_size}": min(eval_batch_size, max(len(s) for s in splits)),
    }


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB"


def check_model_fits(
    layers: Sequence[Layer],
    origins: Sequence[str],
    input_shape: tuple[int, ...],
    dtype: np.dtype,
    batches: dict[str, int] | None = None,
    available: int | None = None,
) -> None:
    """ConfigError naming the options behind the largest layers (``origins[i]``: the config key layer i comes
    from) and the batch, when parameters and activations would take more than the ``available`` bytes
    (default: what the OS has free now)."""
    sizes = layer_sizes(layers, input_shape)
    itemsize = np.dtype(dtype).itemsize
    batch_key, batch = max((batches or {"": 0}).items(), key=lambda kv: kv[1])
    params = BUILD_COPIES * sum(p for p, _ in sizes) * itemsize
    activations = ACTIVATION_COPIES * batch * sum(o for _, o in sizes) * itemsize
    available = available_memory() if available is None else available
    if available is None or params + activations <= available:
        return
    cost = [BUILD_COPIES * p + ACTIVATION_COPIES * batch * o for p, o in sizes]
    largest = sorted(range(len(sizes)), key=lambda i: -cost[i])[:3]
    keys = list(dict.fromkeys(origins[i] for i in largest))
    if activations > params:
        keys.append(batch_key)
    layers_text = "; ".join(
        f"layer {i} ({layers[i].name}, from {origins[i]}): {sizes[i][0]:,} parameters, {sizes[i][1]:,} outputs"
        for i in largest
    )
    raise ConfigError(
        f"{' with '.join(keys)} asks for more memory than this machine has: about {gib(params + activations)} "
        f"in {np.dtype(dtype)} ({gib(params)} for the parameters and gradients while the model is built, "
        f"{gib(activations)} for the outputs and gradients of a batch of {batch:,}), and {gib(available)} are "
        f"available. Largest: {layers_text}. Make {' or '.join(k.split('=')[0] for k in keys)} smaller"
    )
