"""The chain rule on the book's computational graph (chapter 5), and its numerical gradient
example (chapter 4): the sanity checks every layer's backward rests on."""

from __future__ import annotations

import numpy as np
import pytest

from labnet.nn.gradcheck import numerical_gradient


class MulLayer:
    """out = x * y; backward swaps the inputs."""

    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, dout):
        return dout * self.y, dout * self.x


class AddLayer:
    """out = x + y; backward passes the gradient to both inputs."""

    def forward(self, x, y):
        return x + y

    def backward(self, dout):
        return dout, dout


def test_buying_apples_and_oranges():
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple, mul_orange, add, mul_tax = MulLayer(), MulLayer(), AddLayer(), MulLayer()

    apple_price = mul_apple.forward(apple, apple_num)
    orange_price = mul_orange.forward(orange, orange_num)
    all_price = add.forward(apple_price, orange_price)
    price = mul_tax.forward(all_price, tax)
    assert price == pytest.approx(715)

    dall_price, dtax = mul_tax.backward(1)
    dapple_price, dorange_price = add.backward(dall_price)
    dorange, dorange_num = mul_orange.backward(dorange_price)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    assert dapple == pytest.approx(2.2)
    assert dapple_num == pytest.approx(110)
    assert dorange == pytest.approx(3.3)
    assert dorange_num == pytest.approx(165)
    assert dtax == pytest.approx(650)


def test_the_graph_agrees_with_numerical_differentiation():
    def price(v):
        return (v[0] * v[1] + v[2] * v[3]) * v[4]

    v = np.array([100.0, 2.0, 150.0, 3.0, 1.1])
    grad = numerical_gradient(lambda: price(v), v, eps=1e-4)
    np.testing.assert_allclose(grad, [2.2, 110, 3.3, 165, 650], rtol=1e-6)
    np.testing.assert_array_equal(v, [100.0, 2.0, 150.0, 3.0, 1.1])  # every element restored


@pytest.mark.parametrize(
    ("point", "expected"), [((3.0, 4.0), (6.0, 8.0)), ((0.0, 2.0), (0.0, 4.0)), ((3.0, 0.0), (6.0, 0.0))]
)
def test_numerical_gradient_of_sum_of_squares(point, expected):
    x = np.array(point)
    grad = numerical_gradient(lambda: float(x[0] ** 2 + x[1] ** 2), x)
    assert grad == pytest.approx(expected, abs=1e-6)
    assert x.tolist() == list(point)


def test_numerical_gradient_walks_every_index_of_a_matrix():
    w = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
    x = np.array([0.3, -0.7])
    # f(W) = sum((x @ W)²) has df/dW[i, j] = 2 x[i] (x @ W)[j]
    grad = numerical_gradient(lambda: float(np.sum((x @ w) ** 2)), w)
    np.testing.assert_allclose(grad, 2 * np.outer(x, x @ w), rtol=1e-7, atol=1e-9)
