"""A short training run through the pure API (no Hydra app): the conv layers learn MNIST."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from labnet.errors import DataError
from labnet.nn.layers import Affine, ReLU
from labnet.nn.losses import SoftmaxCrossEntropy
from labnet.nn.model import Sequential
from labnet.nn.optimizers import Adam
from labnet.plugins import get_plugin_manager, get_registry
from threadpoolctl import threadpool_limits

from labnet_conv.layers import Conv2D, Flatten, MaxPool2D

# plugins/labnet-conv/tests/ -> the repository's sibling shared/data, as labnet's own tests use
SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


@pytest.fixture
def mnist(monkeypatch):
    monkeypatch.setenv("LABNET_DATA_DIR", os.environ.get("LABNET_DATA_DIR") or str(SHARED_DATA))
    registry = get_registry(get_plugin_manager(entry_points=False))
    if "mnist" not in {c.name for c in registry.list("dataset")}:
        pytest.skip("labnet has no mnist data set yet")
    try:
        return registry.get("dataset", "mnist")(flatten=False, val_size=0, download=False).load(
            np.random.default_rng(0)
        )
    except DataError as err:
        pytest.skip(f"MNIST files not available: {err}")


def test_simple_convnet_learns_mnist_subset(mnist):
    rng = np.random.default_rng(0)
    x_train, y_train = mnist.train.x[:10_000], mnist.train.y[:10_000]
    x_test, y_test = mnist.test.x[:1000], mnist.test.y[:1000]
    assert x_train.shape[1:] == mnist.input_shape == (1, 28, 28) and x_train.dtype == np.float32
    model = Sequential(
        [Conv2D(8, kernel_size=5), ReLU(), MaxPool2D(2, stride=2), Flatten(), Affine(100), ReLU(), Affine(10)]
    ).build((1, 28, 28), rng)
    loss, optimizer = SoftmaxCrossEntropy(), Adam(lr=0.001)
    start, batch = time.perf_counter(), 100
    with threadpool_limits(limits=1):  # small matrices: one BLAS thread is faster, and steady on shared cores
        train(model, loss, optimizer, x_train, y_train, rng, steps=300, batch=batch)
    accuracy = float(np.mean(model.predict(x_test, batch_size=500).argmax(axis=1) == y_test))
    print(f"300 steps in {time.perf_counter() - start:.1f} s, test accuracy {accuracy:.4f}")
    assert accuracy > 0.9


def train(model, loss, optimizer, x_train, y_train, rng, steps, batch):
    """Plain minibatch training with the model's and optimizer's own API."""
    per_epoch = len(x_train) // batch
    for step in range(steps):
        if step % per_epoch == 0:
            order = rng.permutation(len(x_train))
        idx = order[(step % per_epoch) * batch :][:batch]
        loss.forward(model.forward(x_train[idx], train=True), y_train[idx])
        model.backward(loss.backward())
        optimizer.step(model.params, model.grads)
