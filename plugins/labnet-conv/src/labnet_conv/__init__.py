"""labnet-conv: convolution and pooling layers for labnet, with the book's SimpleConvNet config."""

from labnet_conv.layers import AvgPool2D, Conv2D, Flatten, MaxPool2D

__version__ = "0.1.0"

__all__ = ["Conv2D", "MaxPool2D", "AvgPool2D", "Flatten", "__version__"]
