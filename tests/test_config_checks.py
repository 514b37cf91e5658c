"""The checks behind config mistakes the CLI refuses (tests/test_failures.py runs them through the CLI): the
memory estimate of a model, the weight initialiser's dtype, and the top-level check against every shipped
experiment."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import labnet.nn.init
from labnet.config_checks import check_top_level
from labnet.errors import ConfigError
from labnet.memory import check_model_fits
from labnet.nn.init import init_weight
from labnet.nn.layers import Affine, BatchNorm, ReLU


def test_the_memory_check_names_the_explicit_layer_and_counts_in_the_runs_dtype():
    layers = [Affine(1000), ReLU(), BatchNorm(), Affine(10)]
    origins = [f"model.layers[{i}]" for i in range(4)]
    params = 20 * 1000 + 1000 + 2 * 1000 + 1000 * 10 + 10  # W and b, gamma and beta, W and b
    need32 = 4 * params * 4  # parameters and gradients, twice each while built, 4 bytes each
    check_model_fits(layers, origins, (20,), np.float32, available=need32)
    with pytest.raises(ConfigError, match=r"^model\.layers\[0\]") as info:
        check_model_fits(layers, origins, (20,), np.float32, available=need32 - 1)
    assert f"{20 * 1000 + 1000:,} parameters" in str(info.value)
    with pytest.raises(ConfigError, match="float64"):
        check_model_fits(layers, origins, (20,), np.float64, available=need32)  # twice the bytes
    # the activations of the largest batch count too, and name the option setting that batch
    batches = {"trainer.batch_size=100": 100, "trainer.eval_batch_size=5000": 5000}
    outputs = 1000 * 3 + 10  # per sample: affine, relu, batchnorm, affine
    with pytest.raises(ConfigError, match=r"trainer\.eval_batch_size smaller"):
        check_model_fits(layers, origins, (20,), np.float32, batches, available=need32 + 3 * 5000 * outputs * 4 - 1)


def test_weights_are_drawn_into_the_runs_dtype_with_the_same_numbers(monkeypatch):
    """A float32 weight is never held in float64 as a whole (the run's dtype), and its values are the float64
    draws rounded, as before."""
    monkeypatch.setattr(labnet.nn.init, "CHUNK", 4096)
    shape = (500, 400)
    rng = np.random.default_rng(3)
    tracemalloc.start()
    try:
        w = init_weight(shape, "he", rng, np.float32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert w.dtype == np.float32
    assert peak < w.nbytes + 3 * 4096 * 8, (peak, w.nbytes)  # a float64 copy would add 2 * w.nbytes
    expected = (np.random.default_rng(3).standard_normal(shape) * np.sqrt(2 / 500)).astype(np.float32)
    np.testing.assert_array_equal(w, expected)


def test_every_shipped_experiment_passes_the_top_level_check():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from labnet.config import config_dirs, plugin_config_dirs, register_component_configs
    from labnet.plugins import get_registry

    conf, experiments = config_dirs()
    register_component_configs(get_registry(), [conf, *plugin_config_dirs()])  # as `python -m labnet` does
    names = sorted(p.stem for p in experiments.glob("*.yaml"))
    assert len(names) >= 10
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base=None):
            for name in names:
                check_top_level(compose("config", overrides=[f"+experiment={name}"]))
    finally:
        GlobalHydra.instance().clear()
