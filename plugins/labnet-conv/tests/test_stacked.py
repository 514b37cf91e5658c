"""The conv layers stacked for fused sweeps (labnet_conv.stacked): equal to each member's own layers, gradient
checked, and a fused group of the plugin's SimpleConvNet ending an epoch with its separate runs' weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from labnet.data.base import DataSplits, Split
from labnet.errors import DataError
from labnet.fused import FusedGroup, StackedModel
from labnet.nn.gradcheck import numerical_gradient, relative_error
from labnet.nn.layers import Affine, ReLU
from labnet.nn.model import Sequential
from threadpoolctl import threadpool_limits

from labnet_conv.layers import AvgPool2D, Conv2D, Flatten, MaxPool2D
from labnet_conv.stacked import StackedConv2D

K = 3
INPUT = (2, 7, 7)
CONV_CASES = [(3, 1, 0), (3, 1, 1), (3, 2, 1), (2, 2, 0), (5, 1, 2)]  # (kernel_size, stride, pad)


def net(kernel: int, stride: int, pad: int):
    """Two convolutions (the first over the input, the second over per-member activations), both pools."""
    return lambda: [
        Conv2D(3, kernel, stride, pad),
        ReLU(),
        MaxPool2D(2, stride=1),
        Conv2D(2, kernel, stride, pad),
        AvgPool2D(2, stride=1, pad=1),
        Flatten(),
        Affine(4),
    ]


def members(make_layers, dtype="float64"):
    """K built models of one architecture, each from its own seed."""
    return [Sequential(make_layers()).build(INPUT, np.random.default_rng(j), dtype) for j in range(K)]


def batch(shared: bool, n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.standard_normal((n, *INPUT) if shared else (K, n, *INPUT))


def full_backward(layers, dout):
    """Every layer's backward in turn: the input gradient of the first (the model's backward drops it)."""
    for layer in reversed(layers):
        dout = layer.backward(dout)
    return dout


def pool_first():
    """Pooling over the members' input as it is given (not a convolution's layout), a convolution after it."""
    return [MaxPool2D(2, stride=1, pad=1), Conv2D(3, 3, stride=2), ReLU(), AvgPool2D(2), Flatten(), Affine(4)]


NETS = [net(*case) for case in CONV_CASES] + [pool_first]
NET_IDS = [f"k{k}s{s}p{p}" for k, s, p in CONV_CASES] + ["pool-first"]


@pytest.mark.parametrize("shared", [True, False], ids=["shared-batch", "own-batches"])
@pytest.mark.parametrize("make", NETS, ids=NET_IDS)
def test_stacked_conv_net_equals_each_members_own_layers(make, shared):
    singles, stacked = members(make), StackedModel(members(make))
    for model in (*singles, stacked):  # the first layer's input gradient too
        model.layers[0].needs_input_grad = True
    x = batch(shared)
    scores = stacked.forward(x, True, shared).copy()
    dscores = np.random.default_rng(8).standard_normal(scores.shape)
    stacked.layers[0].shared_input = shared
    dx = full_backward(stacked.layers, dscores.copy())
    for j, model in enumerate(singles):
        xj = x if shared else x[j]
        np.testing.assert_allclose(scores[j], model.forward(xj, True), rtol=1e-10, atol=1e-12)
        dxj = full_backward(model.layers, dscores[j].copy())
        np.testing.assert_allclose(dx[j], dxj, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(
            stacked.member_flat(j, stacked.grad_segments), model.flat_grads, rtol=1e-10, atol=1e-12
        )


@pytest.mark.parametrize("shared", [True, False], ids=["shared-batch", "own-batches"])
def test_first_convolution_over_a_shared_batch_copies_its_windows_once_and_skips_its_input_gradient(shared):
    stacked = StackedModel(members(net(3, 1, 1)))
    x = batch(shared)
    stacked.backward(np.ones_like(stacked.forward(x, True, shared)))
    conv = stacked.layers[0]
    assert isinstance(conv, StackedConv2D) and conv.needs_input_grad is False
    # columns (C, kh, kw, n, OH, OW): one set for all members over a shared batch, one per member otherwise
    assert conv.col.shape == ((2, 3, 3, 4, 7, 7) if shared else (K, 2, 3, 3, 4, 7, 7))
    assert conv.backward(np.ones((K, 4, 3, 7, 7))) is None
    assert not any(key == "dcol" for key, _, _ in conv._workspace)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-batch", "own-batches"])
def test_stacked_conv_gradients_match_numerical_ones(shared):
    """The book's gradient check on the stack: f = sum(scores * R) against central differences of every stacked
    parameter (which also proves no member's gradient leaks into another's)."""
    stacked = StackedModel(members(net(3, 2, 1)))
    x = batch(shared, n=3)
    projection = np.random.default_rng(3).standard_normal((K, 3, *stacked.output_shape))

    def f() -> float:
        return float(np.sum(stacked.forward(x, True, shared) * projection))

    f()
    stacked.backward(projection.copy())
    for (i, key), grad in stacked.views(stacked.grad_segments).items():
        analytic, numeric = grad.copy(), numerical_gradient(f, stacked.layers[i].params[key])
        assert relative_error(analytic, numeric) < 1e-6, (i, key)


def test_members_with_other_layer_settings_are_refused():
    models = members(net(3, 1, 0))
    models[1] = Sequential(net(3, 1, 1)()).build(INPUT, np.random.default_rng(1), "float64")
    with pytest.raises(ValueError, match="member 1's Conv2D.*pad=1.*cannot be stacked"):
        StackedModel(models)


# -- a fused group of the plugin's SimpleConvNet (mnist_convnet) --------------------------------------------

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


@pytest.fixture
def compose(monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from labnet.config import config_dirs

    monkeypatch.setenv("LABNET_DATA_DIR", os.environ.get("LABNET_DATA_DIR") or str(SHARED_DATA))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dirs()[0]), version_base=None):
        yield lambda *overrides: compose(
            "config",
            overrides=["tracking=none", "health=off", "+experiment=mnist_convnet", "trainer.epochs=1", *overrides],
        )
    GlobalHydra.instance().clear()


def small_group(cfgs) -> FusedGroup:
    """The group with 1,000 training, 200 validation and 200 test images (the same objects for members that
    share them), so that an epoch of a few members takes seconds."""
    try:
        group = FusedGroup(cfgs)
    except DataError as err:
        pytest.skip(f"MNIST files not available: {err}")
    cut: dict[int, DataSplits] = {}
    for j, data in enumerate(group.data):
        if id(data) not in cut:
            train, val, test = (
                Split(s.x[:m], s.y[:m]) for s, m in ((data.train, 1000), (data.val, 200), (data.test, 200))
            )
            cut[id(data)] = DataSplits(train, val, test, data.input_shape, data.num_classes)
        group.data[j] = cut[id(data)]
    return group


def relative_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(b[k]), 1e-300)) for k in b)


def trained(cfgs) -> tuple[str | None, list, list, list]:
    """(why it trained member by member, each member's state, status and final metrics) of the small group;
    the group and its data are released before the next one loads its own."""
    with threadpool_limits(limits=1):
        group = small_group(cfgs)
        finals = group.fit()
    n = len(cfgs)
    return (
        group.why_member_by_member,
        [group.member_state(j) for j in range(n)],
        [group.status(j) for j in range(n)],
        finals,
    )


@pytest.mark.parametrize("seeds", [(0, 0, 0), (0, 1, 1)], ids=["one-seed", "two-seeds"])
def test_a_fused_convnet_group_trains_stacked_with_the_weights_of_its_separate_runs(compose, monkeypatch, seeds):
    """mnist_convnet with three optimizers, one epoch in float64: the group trains stacked (not member by member,
    as it did before the conv layers opted in), and every member ends with the weights, optimizer state and
    metrics of its own single-run trainer (the group's member-by-member path, forced by taking conv2d's stacked
    form away). With two seeds the members' minibatches differ: each gathers its own."""
    settings = [("adam", 0.001), ("sgd", 0.1), ("momentum", 0.01)]
    cfgs = [
        compose(f"optimizer={name}", f"optimizer.lr={lr}", f"seed={seed}", "trainer.dtype=float64")
        for (name, lr), seed in zip(settings, seeds, strict=True)
    ]
    why, fused_states, fused_status, fused_finals = trained(cfgs)
    assert why is None
    monkeypatch.delattr(Conv2D, "stacked")
    why, single_states, single_status, single_finals = trained(cfgs)
    assert "no stacked form for layer 0 (conv2d" in why
    for j in range(len(cfgs)):
        assert fused_status[j] == single_status[j] == ("FINISHED", None)
        a, b = fused_states[j], single_states[j]
        assert relative_difference(a["model"], b["model"]) < 1e-6, settings[j]
        assert relative_difference(a["optim"], b["optim"]) < 1e-6, settings[j]
        for metric in ("train_loss", "val_accuracy", "test_accuracy"):
            assert fused_finals[j][metric] == pytest.approx(single_finals[j][metric], rel=1e-9), (settings[j], metric)
    assert fused_finals[0]["val_accuracy"] > 0.5  # (it learned: the comparison is not between two no-ops)
