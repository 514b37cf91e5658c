"""Conv2D, MaxPool2D, AvgPool2D and Flatten: gradients, shapes, and agreement with naive loops."""

from __future__ import annotations

import numpy as np
import pytest
from labnet.errors import ConfigError, ShapeError
from labnet.nn.layers import Affine, ReLU
from labnet.nn.model import Sequential
from labnet.testing import gradcheck

from labnet_conv.im2col import col2im, im2col
from labnet_conv.layers import CONV_LAYERS, AvgPool2D, Conv2D, Flatten, MaxPool2D

TOL = 1e-6


# -- naive references ----------------------------------------------------------------------


def naive_conv(x, W, b, stride, pad):
    n, c, h, w = x.shape
    f, _, k, _ = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    out = np.zeros((n, f, oh, ow))
    for i in range(n):
        for fi in range(f):
            for r in range(oh):
                for q in range(ow):
                    window = xp[i, :, r * stride : r * stride + k, q * stride : q * stride + k]
                    out[i, fi, r, q] = np.sum(window * W[fi]) + b[fi]
    return out


def naive_pool(x, size, stride, pad, kind):
    """Pooled output and the input gradient of sum(out * dout), by explicit loops."""
    n, c, h, w = x.shape
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    oh, ow = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
    out = np.zeros((n, c, oh, ow))
    dout = np.random.default_rng(7).standard_normal(out.shape)
    dxp = np.zeros_like(xp)
    for i in range(n):
        for ch in range(c):
            for r in range(oh):
                for q in range(ow):
                    rs, qs = r * stride, q * stride
                    window = xp[i, ch, rs : rs + size, qs : qs + size]
                    if kind == "max":
                        out[i, ch, r, q] = window.max()
                        a = int(np.argmax(window))  # first maximum in row-major order
                        dxp[i, ch, rs + a // size, qs + a % size] += dout[i, ch, r, q]
                    else:
                        out[i, ch, r, q] = window.mean()
                        dxp[i, ch, rs : rs + size, qs : qs + size] += dout[i, ch, r, q] / size**2
    dx = dxp[:, :, pad : pad + h, pad : pad + w]
    return out, dout, dx


def built(layer, input_shape, dtype=np.float64, seed=0):
    layer.build(input_shape, np.random.default_rng(seed), dtype)
    return layer


# -- gradients -----------------------------------------------------------------------------

CONV_CASES = [  # (kernel_size, stride, pad, input (C, H, W))
    (3, 1, 0, (2, 6, 6)),
    (3, 1, 1, (2, 6, 6)),
    (3, 2, 1, (3, 7, 7)),
    (2, 2, 0, (2, 6, 6)),
    (3, 3, 0, (2, 7, 5)),  # strides that leave a remainder, non-square input
    (5, 1, 2, (1, 5, 5)),
    (1, 1, 0, (3, 4, 4)),
    (4, 1, 3, (1, 3, 3)),  # kernel larger than the unpadded input, pad beyond the kernel centre
]


@pytest.mark.parametrize("k,s,p,shape", CONV_CASES)
def test_conv2d_gradcheck(k, s, p, shape):
    layer = Conv2D(filters=3, kernel_size=k, stride=s, pad=p)
    x = np.random.default_rng(1).standard_normal((2, *shape))
    errors = gradcheck(layer, x)
    assert set(errors) == {"input", "W", "b"}
    assert max(errors.values()) < TOL, errors


POOL_CASES = [  # (size, stride, pad, input (C, H, W))
    (2, None, 0, (2, 6, 6)),
    (2, 1, 0, (2, 5, 5)),  # overlapping windows
    (3, 2, 1, (2, 7, 7)),  # overlapping and padded
    (3, None, 0, (1, 7, 8)),  # rows and columns left over
    (2, 2, 1, (2, 5, 5)),
    (2, 3, 0, (1, 8, 8)),  # gaps between windows
    (3, 1, 2, (1, 4, 4)),
]


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("size,stride,pad,shape", POOL_CASES)
def test_pool_gradcheck(cls, size, stride, pad, shape):
    layer = cls(size=size, stride=stride, pad=pad)
    x = np.random.default_rng(2).standard_normal((2, *shape))
    errors = gradcheck(layer, x)
    assert errors["input"] < TOL, errors


def test_flatten_gradcheck():
    x = np.random.default_rng(3).standard_normal((3, 2, 4, 5))
    assert gradcheck(Flatten(), x)["input"] < TOL


@pytest.mark.parametrize("cls", CONV_LAYERS)
def test_every_layer_passes_gradcheck_on_its_example_input(cls):
    layer = cls(**getattr(cls, "example_args", {}))
    x = np.random.default_rng(4).standard_normal((2, *cls.example_input_shape))
    errors = gradcheck(layer, x)
    assert max(errors.values()) < TOL, errors


# -- agreement with naive loops ---------------------------------------------------------------


@pytest.mark.parametrize("k,s,p,shape", CONV_CASES)
def test_conv2d_matches_naive_loop(k, s, p, shape):
    layer = built(Conv2D(filters=4, kernel_size=k, stride=s, pad=p), shape)
    layer.params["b"][...] = np.arange(4) * 0.1
    x = np.random.default_rng(5).standard_normal((3, *shape))
    np.testing.assert_allclose(
        layer.forward(x), naive_conv(x, layer.params["W"], layer.params["b"], s, p), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("kind,cls", [("max", MaxPool2D), ("avg", AvgPool2D)])
@pytest.mark.parametrize("size,stride,pad,shape", POOL_CASES)
def test_pool_matches_naive_loop(kind, cls, size, stride, pad, shape):
    layer = built(cls(size=size, stride=stride, pad=pad), shape)
    x = np.random.default_rng(6).standard_normal((2, *shape))
    out, dout, dx = naive_pool(x, size, layer.stride, pad, kind)
    np.testing.assert_allclose(layer.forward(x), out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(dout), dx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size,stride,pad,shape", POOL_CASES)
def test_max_pool_routes_ties_to_the_first_maximum_once(size, stride, pad, shape):
    # after a ReLU whole windows are 0: the gradient must go to one element, as argmax picks it
    x = np.maximum(np.random.default_rng(8).integers(-3, 2, (2, *shape)), 0).astype(np.float64)
    layer = built(MaxPool2D(size=size, stride=stride, pad=pad), shape)
    out, dout, dx = naive_pool(x, size, layer.stride, pad, "max")
    np.testing.assert_array_equal(layer.forward(x), out)
    np.testing.assert_allclose(layer.backward(dout), dx, rtol=1e-12, atol=1e-12)


def test_im2col_and_col2im_are_adjoint():
    # <im2col(x), c> == <x, col2im(c)> for every x and c: col2im is im2col's transpose
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 9, 8))
    col = im2col(x, 3, 2, 2)
    c = rng.standard_normal(col.shape)
    back = col2im(c, 2, np.empty_like(x))
    assert np.isclose(np.sum(col * c), np.sum(x * back), rtol=1e-12)


# -- shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer,input_shape,expected",
    [
        (Conv2D(30, kernel_size=5), (1, 28, 28), (30, 24, 24)),
        (Conv2D(8, kernel_size=3, pad=1), (3, 32, 32), (8, 32, 32)),
        (Conv2D(8, kernel_size=3, stride=2, pad=1), (3, 32, 31), (8, 16, 16)),
        (Conv2D(4, kernel_size=7, stride=1, pad=3), (2, 5, 5), (4, 5, 5)),
        (MaxPool2D(2), (30, 24, 24), (30, 12, 12)),
        (MaxPool2D(3, stride=2), (4, 7, 7), (4, 3, 3)),
        (AvgPool2D(2, pad=1), (4, 5, 5), (4, 3, 3)),
        (AvgPool2D(3), (4, 7, 8), (4, 2, 2)),
        (Flatten(), (30, 12, 12), (4320,)),
        (Flatten(), (7,), (7,)),
    ],
)
def test_output_shapes(layer, input_shape, expected):
    assert layer.output_shape(input_shape) == expected
    assert layer.build(input_shape, np.random.default_rng(0), np.float32) == expected
    y = layer.forward(np.zeros((3, *input_shape), np.float32))
    assert y.shape == (3, *expected)
    assert y.dtype == np.float32


def test_conv2d_parameter_shapes_and_he_init():
    layer = built(Conv2D(64, kernel_size=3), (16, 10, 10), np.float32, seed=0)
    assert layer.params["W"].shape == (64, 16, 3, 3) and layer.params["W"].dtype == np.float32
    assert layer.params["b"].shape == (64,) and not layer.params["b"].any()
    assert {k: g.shape for k, g in layer.grads.items()} == {k: p.shape for k, p in layer.params.items()}
    # He: std = sqrt(2 / fan_in) with fan_in = C*kh*kw = 144
    assert layer.params["W"].std() == pytest.approx(np.sqrt(2 / 144), rel=0.05)


@pytest.mark.parametrize(
    "layer,input_shape",
    [
        (Conv2D(4, kernel_size=5), (1, 4, 4)),
        (Conv2D(4, kernel_size=5), (1, 28, 3)),
        (Conv2D(4, kernel_size=7, pad=1), (1, 4, 4)),
        (MaxPool2D(3), (2, 2, 2)),
        (AvgPool2D(4, pad=1), (2, 1, 1)),
    ],
)
def test_kernel_larger_than_input_raises_shape_error(layer, input_shape):
    with pytest.raises(ShapeError, match="does not fit"):
        layer.output_shape(input_shape)
    with pytest.raises(ShapeError, match="does not fit"):
        layer.build(input_shape, np.random.default_rng(0), np.float32)


@pytest.mark.parametrize("cls", [Conv2D, MaxPool2D, AvgPool2D])
def test_flat_input_raises_shape_error_with_a_hint(cls):
    layer = cls(4) if cls is Conv2D else cls()
    with pytest.raises(ShapeError, match="flatten=false"):
        layer.output_shape((784,))


def test_sequential_reports_which_layer_does_not_fit():
    model = Sequential([Conv2D(4, kernel_size=5), ReLU(), MaxPool2D(2), Conv2D(4, kernel_size=5)])
    with pytest.raises(ShapeError, match=r"layer 3 \(conv2d\)"):
        model.build((1, 10, 10), np.random.default_rng(0))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Conv2D(0),
        lambda: Conv2D(4, kernel_size=0),
        lambda: Conv2D(4, stride=0),
        lambda: Conv2D(4, pad=-1),
        lambda: Conv2D(4.5),
        lambda: MaxPool2D(0),
        lambda: MaxPool2D(2, stride=0),
        lambda: AvgPool2D(2, pad=2),
    ],
)
def test_bad_hyperparameters_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_repr_and_hyperparameters():
    assert repr(Conv2D(30, kernel_size=5)) == "Conv2D(filters=30, kernel_size=5, stride=1, pad=0, init='he')"
    assert MaxPool2D(2).hyperparameters == {"size": 2, "stride": 2, "pad": 0}


# -- training and evaluation modes, float32, workspaces --------------------------------------------


def test_small_convnet_float32_train_and_eval_agree_and_match_float64():
    def net():
        return [Conv2D(4, kernel_size=3, pad=1), ReLU(), MaxPool2D(2), Conv2D(3, 3), AvgPool2D(2), Flatten(), Affine(5)]

    m32 = Sequential(net()).build((2, 8, 8), np.random.default_rng(0), np.float32)
    m64 = Sequential(net()).build((2, 8, 8), np.random.default_rng(0), np.float64)
    x = np.random.default_rng(1).standard_normal((6, 2, 8, 8))
    train_out = m32.forward(x.astype(np.float32), train=True).copy()
    assert train_out.dtype == np.float32
    np.testing.assert_allclose(train_out, m64.forward(x, train=True), rtol=1e-4, atol=1e-5)
    dout = np.random.default_rng(2).standard_normal(train_out.shape)
    m32.backward(dout.astype(np.float32))  # backward belongs to the latest forward, which was train=True
    m64.backward(dout)
    assert m32.flat_grads.dtype == np.float32
    np.testing.assert_allclose(m32.flat_grads, m64.flat_grads, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(m32.forward(x.astype(np.float32), train=False), train_out)
    # a batch of another size (the last batch of an epoch, evaluation) gets its own buffers
    assert m32.predict(x[:5].astype(np.float32), batch_size=2).shape == (5, 5)


def test_first_conv_layer_skips_the_input_gradient():
    model = Sequential([Conv2D(2, kernel_size=3), Flatten(), Affine(3)]).build((1, 5, 5), np.random.default_rng(0))
    conv = model.layers[0]
    assert conv.needs_input_grad is False
    conv.forward(np.ones((2, 1, 5, 5), np.float32))
    assert conv.backward(np.ones((2, 2, 3, 3), np.float32)) is None
    assert conv.grads["b"].tolist() == [18.0, 18.0]


def test_backward_overwrites_gradients():
    layer = built(Conv2D(2, kernel_size=3), (1, 4, 4))
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4))
    dout = np.ones((2, 2, 2, 2))
    layer.forward(x)
    layer.backward(dout)
    first = {k: g.copy() for k, g in layer.grads.items()}
    layer.forward(x)
    layer.backward(dout)
    for key, g in layer.grads.items():
        np.testing.assert_array_equal(g, first[key])


@pytest.mark.parametrize("size,stride,pad,shape", POOL_CASES)
def test_max_pool_backward_after_evaluation_routes_like_after_training(size, stride, pad, shape):
    """Input gradients of a trained net: backward after forward(x, train=False) finds the winners itself."""
    rng = np.random.default_rng(5)
    x, other = rng.standard_normal((2, *shape)), rng.standard_normal((2, *shape))
    layer = built(MaxPool2D(size, stride, pad), shape)
    out = layer.forward(x, train=True).copy()
    expected = layer.backward(np.ones_like(out)).copy()
    layer.forward(other, train=True)  # stale winners the evaluation backward must not use
    np.testing.assert_array_equal(layer.forward(x, train=False), out)
    np.testing.assert_array_equal(layer.backward(np.ones_like(out)), expected)
