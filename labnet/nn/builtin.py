"""The built-in layers, losses and optimizers, registered like any third-party plugin."""

from labnet import hookimpl
from labnet.nn.layers import BUILTIN_LAYERS
from labnet.nn.losses import BUILTIN_LOSSES
from labnet.nn.optimizers import BUILTIN_OPTIMIZERS


@hookimpl
def labnet_layers():
    return list(BUILTIN_LAYERS)


@hookimpl
def labnet_losses():
    return list(BUILTIN_LOSSES)


@hookimpl
def labnet_optimizers():
    return list(BUILTIN_OPTIMIZERS)
