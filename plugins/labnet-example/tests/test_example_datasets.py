"""The moons data set: shapes, labels, determinism, validation of its options."""

from __future__ import annotations

import numpy as np
import pytest
from labnet.errors import ConfigError
from labnet.testing import check_dataset

from labnet_example.datasets import Moons


def test_shapes_and_labels():
    data = Moons(num_samples=101, val_size=20, test_size=30).load(np.random.default_rng(0))
    assert data.input_shape == (2,) and data.num_classes == 2
    assert [len(s) for s in (data.train, data.val, data.test)] == [51, 20, 30]
    for split in (data.train, data.val, data.test):
        assert split.x.shape == (len(split), 2) and split.x.dtype == np.float32
        assert split.y.dtype == np.int64 and set(np.unique(split.y)) <= {0, 1}
    labels = np.concatenate([data.train.y, data.val.y, data.test.y])
    assert np.bincount(labels).tolist() == [51, 50]


def test_without_noise_points_lie_on_the_two_moons():
    data = Moons(num_samples=200, noise=0.0, val_size=0, test_size=0).load(np.random.default_rng(0))
    assert data.val is None and data.test is None
    x, y = data.train
    outer, inner = x[y == 0], x[y == 1] - np.array([1.0, 0.5], np.float32)
    np.testing.assert_allclose(np.hypot(*outer.T), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.hypot(*inner.T), 1.0, rtol=1e-6)
    assert (outer[:, 1] >= -1e-7).all() and (inner[:, 1] <= 1e-7).all()


@pytest.mark.parametrize("one_hot", [False, True])
def test_passes_labnet_testing_data_set_checks(one_hot):
    # same seed same data, another seed other data, split sizes, shapes, float32 / float64, labels
    check_dataset(
        Moons(num_samples=300, val_size=100, test_size=100, one_hot=one_hot),
        seed=3,
        sizes={"train": 100, "val": 100, "test": 100},
    )


def test_one_hot_and_dtype():
    data = Moons(num_samples=10, val_size=0, test_size=0, one_hot=True).load(np.random.default_rng(0), np.float64)
    assert data.train.x.dtype == np.float64 and data.train.y.shape == (10, 2)
    np.testing.assert_array_equal(data.train.y.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"num_samples": 1}, {"val_size": -1}, {"num_samples": 10, "val_size": 5, "test_size": 5}, {"noise": -0.1}],
)
def test_bad_options_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        Moons(**kwargs)
