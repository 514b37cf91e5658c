"""Truth tables of AND / NAND / OR / XOR: the four-row data sets of the perceptron chapter.

XOR is the classic case a single linear layer cannot learn and one hidden layer can; the
others are linearly separable. Useful as a seconds-long smoke test of a model or plugin.
"""

import numpy as np
from numpy.typing import DTypeLike

from labnet.data.base import DataSplits, Split
from labnet.errors import ConfigError

INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
TRUTH_TABLES = {
    "and": (0, 0, 0, 1),
    "nand": (1, 1, 1, 0),
    "or": (0, 1, 1, 1),
    "xor": (0, 1, 1, 0),
}


class LogicGates:
    """One logic gate's truth table as a 2-class data set.

    Parameters
    ----------
    gate : ``"and"``, ``"nand"``, ``"or"`` or ``"xor"`` (case-insensitive)
    one_hot : labels as float one-hot rows of shape (2,) instead of int64 class indices

    Train, val and test are all the same four rows: x (4, 2) of 0/1, y (4,).
    """

    name = "logic_gates"

    def __init__(self, gate: str = "xor", one_hot: bool = False) -> None:
        key = gate.lower() if isinstance(gate, str) else gate
        if key not in TRUTH_TABLES:
            raise ConfigError(f"dataset.gate={gate!r} is not a known gate; use one of: {', '.join(TRUTH_TABLES)}")
        self.gate = key
        self.one_hot = bool(one_hot)

    def load(self, rng: np.random.Generator, dtype: DTypeLike = np.float32) -> DataSplits:
        """The truth table; ``rng`` is unused (nothing is random here)."""
        y = np.array(TRUTH_TABLES[self.gate], dtype=np.int64)
        if self.one_hot:
            y = np.eye(2, dtype=dtype)[y]

        def split() -> Split:  # separate copies, so no split aliases another
            return Split(INPUTS.astype(dtype), y.copy())

        return DataSplits(train=split(), val=split(), test=split(), input_shape=(2,), num_classes=2)
