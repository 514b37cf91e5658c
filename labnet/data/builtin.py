"""labnet's built-in data sets, registered exactly like a third-party plugin's."""

from __future__ import annotations

from labnet import hookimpl
from labnet.data.logic_gates import LogicGates
from labnet.data.mnist import FashionMnist, Mnist
from labnet.data.spiral import Spiral


@hookimpl
def labnet_datasets() -> list[type]:
    return [Spiral, LogicGates, Mnist, FashionMnist]
