"""Inside a sweep's launch (labnet.per_launch.launch_scope) MNIST's float splits are made once for the jobs that
ask for the same ones, read-only, equal to what a run outside a launch gets; outside, every load is fresh."""

from __future__ import annotations

import numpy as np
import pytest

from labnet.data.mnist import Mnist
from labnet.per_launch import launch_scope


def load(seed: int):
    rng = np.random.default_rng(seed)
    data = Mnist(val_size=500).load(rng)
    return data, rng.random()  # (what the generator gives next: the load drew the same from it)


def splits(data):
    return {"train": data.train, "val": data.val, "test": data.test}


def test_a_launch_converts_each_split_once_and_shares_it_read_only():
    fresh, fresh_next = load(3)
    assert all(s.x.flags.writeable for s in splits(fresh).values())
    with launch_scope():
        first, first_next = load(3)
        again, _ = load(3)
        other_seed, _ = load(4)
        float64 = Mnist(val_size=500).load(np.random.default_rng(3), dtype=np.float64)
    assert first_next == fresh_next  # the generator is where a run outside a launch leaves it
    for name, split in splits(first).items():
        assert np.array_equal(split.x, splits(fresh)[name].x) and np.array_equal(split.y, splits(fresh)[name].y)
        assert split.x.dtype == np.float32 and not split.x.flags.writeable and not split.y.flags.writeable
        assert splits(again)[name].x is split.x  # made once
        with pytest.raises(ValueError, match="read-only"):
            split.x[0, 0] = 1.0
    assert other_seed.test.x is first.test.x  # the test split does not depend on the carve
    assert not np.array_equal(other_seed.val.y, first.val.y)  # another seed carves another validation split
    assert float64.train.x.dtype == np.float64 and np.allclose(float64.train.x, first.train.x)
    after, _ = load(3)
    assert after.train.x is not first.train.x and after.train.x.flags.writeable  # nothing kept after the launch


def test_options_that_change_the_arrays_are_not_shared():
    with launch_scope():
        plain, _ = load(0)
        raw = Mnist(val_size=500, normalize=False).load(np.random.default_rng(0))
        one_hot = Mnist(val_size=500, one_hot=True).load(np.random.default_rng(0))
    assert raw.train.x.max() == 255 and plain.train.x.max() == 1.0
    assert one_hot.train.y.shape == (len(plain.train.y), 10) and plain.train.y.ndim == 1
    assert np.array_equal(one_hot.train.y.argmax(1), plain.train.y)
