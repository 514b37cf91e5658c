"""The labnet plugin module of labnet-conv (entry point ``conv`` in group ``labnet``)."""

from __future__ import annotations

from pathlib import Path

from labnet import hookimpl

from labnet_conv.layers import CONV_LAYERS

#: Hydra config groups shipped with this package: model/simple_convnet, experiment/mnist_convnet
CONFIG_DIR = Path(__file__).resolve().parent / "conf"


@hookimpl
def labnet_layers() -> list[type]:
    return list(CONV_LAYERS)


@hookimpl
def labnet_config_dirs() -> list[str]:
    return [str(CONFIG_DIR)]
