"""Training health (labnet.train.health): per-layer metrics in each epoch's metrics, dead ReLU
units on a probe batch, activation histograms, and the diagnosis naming where a NaN appears."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

import labnet
from labnet.data.base import DataSplits, Split
from labnet.errors import ConfigError, TrainingError
from labnet.nn.layer import Layer
from labnet.nn.layers import Affine, ReLU, Sigmoid
from labnet.nn.losses import SoftmaxCrossEntropy
from labnet.nn.model import Sequential
from labnet.plugins import DEFAULT_PLUGINS, Provider
from labnet.train import health
from labnet.train.trainer import Run

HEALTH = re.compile(r"^health/layer(\d+)_(\w+)/(grad_norm|update_ratio|dead_fraction)$")


@pytest.fixture
def hydra_compose():
    """Hydra's compose API on labnet's conf/; clears GlobalHydra afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from labnet.config import config_dirs

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dirs()[0]), version_base=None):
        yield lambda overrides: compose("config", overrides=["tracking=none", *overrides])
    GlobalHydra.instance().clear()


class Recorder:
    """Keeps what a run leaves: its history and info."""

    def __init__(self) -> None:
        self.run = None

    @labnet.hookimpl(trylast=True)
    def labnet_run_end(self, run):
        self.run = run


def train(cfg, tmp_path: Path, monkeypatch) -> Run:
    from labnet.run_policy import plugin_manager_for
    from labnet.runner import run_experiment

    tmp_path.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path)
    manager = plugin_manager_for(cfg)
    recorder = Recorder()
    manager.register(recorder, "recorder", Provider("recorder", "tests", "0"))
    run_experiment(cfg, manager=manager)
    return recorder.run


# --------------------------------------------------------------------------- through the app


def test_health_is_a_default_plugin_and_on_by_default(hydra_compose):
    assert "labnet.train.health" in DEFAULT_PLUGINS
    cfg = hydra_compose([])
    assert cfg.health.enabled is True and cfg.health.histograms is False
    assert hydra_compose(["health=off"]).health.enabled is False


def test_epoch_metrics_hold_health_entries_per_layer(hydra_compose, tmp_path, monkeypatch):
    run = train(hydra_compose(["trainer.epochs=2"]), tmp_path, monkeypatch)
    assert len(run.history) == 2
    for metrics in run.history:
        found = {m.groups() for m in map(HEALTH.match, metrics) if m}
        # the default model: affine(50) -> relu -> affine(3)
        assert found == {
            ("0", "affine", "grad_norm"),
            ("0", "affine", "update_ratio"),
            ("1", "relu", "dead_fraction"),
            ("2", "affine", "grad_norm"),
            ("2", "affine", "update_ratio"),
        }, sorted(metrics)
        for key, value in metrics.items():
            if key.startswith("health/"):
                assert type(value) is float and math.isfinite(value), (key, value)
        assert metrics["health/layer0_affine/grad_norm"] > 0
        assert 0 < metrics["health/layer2_affine/update_ratio"] < 1
        assert 0 <= metrics["health/layer1_relu/dead_fraction"] < 1


def test_health_off_adds_nothing_and_on_changes_no_training_number(hydra_compose, tmp_path, monkeypatch):
    on = train(hydra_compose(["trainer.epochs=2"]), tmp_path / "on", monkeypatch)
    off = train(hydra_compose(["trainer.epochs=2", "health=off"]), tmp_path / "off", monkeypatch)
    assert "health" not in off.info
    for with_health, without in zip(on.history, off.history, strict=True):
        assert not [k for k in without if k.startswith("health/")]
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert with_health[key] == without[key], key  # bit for bit: the probe pass draws no random numbers


def test_update_ratio_is_the_epochs_parameter_change_over_the_weights(tmp_path):
    model = Sequential([Affine(3), ReLU(), Affine(2)]).build((4,), np.random.default_rng(0), np.float64)
    run = Run(name="t", output_dir=tmp_path)
    health.labnet_run_start(run=run, cfg=None, model=model)
    w0 = model.layers[0].params["W"].copy()
    b0 = model.layers[0].params["b"].copy()
    model.layers[0].params["W"] += 0.5
    model.grads["2.W"][...] = 2.0
    metrics: dict[str, float] = {}
    health.labnet_epoch_end(run=run, epoch=1, metrics=metrics, model=model)
    start_norm = math.sqrt(np.sum(w0**2) + np.sum(b0**2))
    assert metrics["health/layer0_affine/update_ratio"] == pytest.approx(math.sqrt(12 * 0.25) / start_norm)
    assert metrics["health/layer2_affine/update_ratio"] == 0.0
    assert metrics["health/layer2_affine/grad_norm"] == pytest.approx(math.sqrt(6 * 4.0))
    assert "health/layer1_relu/dead_fraction" not in metrics  # no data, no probe batch
    metrics = {}
    health.labnet_epoch_end(run=run, epoch=2, metrics=metrics, model=model)  # measured from the new epoch's start
    assert metrics["health/layer0_affine/update_ratio"] == 0.0


def test_norms_of_huge_float32_weights_do_not_overflow(tmp_path):
    model = Sequential([Affine(3), ReLU(), Affine(2)]).build((4,), np.random.default_rng(0), np.float32)
    model.layers[0].params["W"][...] = 1e30  # its squares overflow float32
    model.grads["0.W"][...] = 1e30
    run = Run(name="t", output_dir=tmp_path)
    health.labnet_run_start(run=run, cfg=None, model=model)
    model.layers[0].params["W"][...] = 2e30
    metrics: dict[str, float] = {}
    with np.errstate(all="raise"):
        health.labnet_epoch_end(run=run, epoch=1, metrics=metrics, model=model)
    assert metrics["health/layer0_affine/grad_norm"] == pytest.approx(1e30 * math.sqrt(12), rel=1e-6)
    assert metrics["health/layer0_affine/update_ratio"] == pytest.approx(1.0, rel=1e-6)


# --------------------------------------------------------------------------- dead units


def hand_built(dead_units: list[int]) -> tuple[Sequential, DataSplits]:
    """affine(4) -> relu -> affine(3) on 2-d inputs; the listed hidden units get zero weights and bias."""
    rng = np.random.default_rng(0)
    model = Sequential([Affine(4), ReLU(), Affine(3)]).build((2,), rng, np.float64)
    W, b = model.layers[0].params["W"], model.layers[0].params["b"]
    W[...] = [[1.0, -1.0, 0.5, 2.0], [1.0, 1.0, -0.5, 0.0]]
    b[...] = 0.0
    for unit in dead_units:
        W[:, unit] = 0.0
    x = rng.standard_normal((300, 2))
    y = rng.integers(0, 3, 300)
    data = DataSplits(train=Split(x, y), val=None, test=None, input_shape=(2,), num_classes=3)
    return model, data


@pytest.mark.parametrize("dead_units", [[], [1], [0, 3], [0, 1, 2, 3]])
def test_dead_relu_fraction_counts_units_zero_for_every_probe_sample(dead_units, tmp_path):
    model, data = hand_built(dead_units)
    assert health.dead_fractions(model, data.train.x[:256]) == {1: len(dead_units) / 4}
    run = Run(name="t", output_dir=tmp_path)
    run.data = data
    health.labnet_run_start(run=run, cfg=None, model=model)
    metrics: dict[str, float] = {}
    health.labnet_epoch_end(run=run, epoch=1, metrics=metrics, model=model)
    assert metrics["health/layer1_relu/dead_fraction"] == len(dead_units) / 4


def test_a_unit_alive_for_one_probe_sample_is_not_dead():
    model, data = hand_built([])
    model.layers[0].params["W"][:, 2] = [1.0, 0.0]
    model.layers[0].params["b"][2] = -100.0  # positive only where x0 > 100
    x = data.train.x[:256].copy()
    assert health.dead_fractions(model, x) == {1: 0.25}
    x[7] = [200.0, 0.0]
    assert health.dead_fractions(model, x) == {1: 0.0}
    x[:] = 0.0
    assert health.dead_fractions(model, x) == {1: 1.0}  # every pre-activation is <= 0


# --------------------------------------------------------------------------- histograms


def test_histograms_are_written_at_the_chosen_and_the_last_epoch(hydra_compose, tmp_path, monkeypatch):
    cfg = hydra_compose(["trainer.epochs=3", "health.histograms=true", "model.hidden_sizes=[8,8]"])
    run = train(cfg, tmp_path, monkeypatch)
    folder = tmp_path / "health"
    assert sorted(p.name for p in folder.iterdir()) == ["activations_epoch1.png", "activations_epoch3.png"]
    assert [Path(p) for p in run.info["artifacts"]] == [
        folder / "activations_epoch1.png",
        folder / "activations_epoch3.png",
    ]
    for path in run.info["artifacts"]:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_histograms_by_default(hydra_compose, tmp_path, monkeypatch):
    run = train(hydra_compose(["trainer.epochs=1"]), tmp_path, monkeypatch)
    assert not (tmp_path / "health").exists() and not run.info.get("artifacts")


def test_histograms_cover_each_hidden_activation_layer(tmp_path):
    model = Sequential([Affine(5), Sigmoid(), Affine(5), ReLU(), Affine(3)]).build(
        (2,), np.random.default_rng(0), np.float64
    )
    run = Run(name="t", output_dir=tmp_path, epoch=4)
    x = np.random.default_rng(1).standard_normal((50, 2))
    run.data = DataSplits(Split(x, np.arange(50) % 3), None, None, (2,), 3)
    cfg = {"health": {"enabled": True, "histograms": True, "histogram_epochs": [2], "probe_size": 256}}
    health.labnet_run_start(run=run, cfg=cfg, model=model)
    monitor = run.info["health"]
    assert monitor.activations == [1, 3]
    health.labnet_epoch_end(run=run, epoch=1, metrics={}, model=model)
    assert not (tmp_path / "health").exists()
    health.labnet_epoch_end(run=run, epoch=2, metrics={}, model=model)
    health.labnet_run_end(run=run, status="FINISHED")  # the last epoch, 4, drawn at the end
    assert sorted(p.name for p in (tmp_path / "health").iterdir()) == [
        "activations_epoch2.png",
        "activations_epoch4.png",
    ]


# --------------------------------------------------------------------------- config


def test_health_config_is_validated():
    with pytest.raises(ConfigError, match=r"health\.histogram_epoch\b.*valid keys: enabled, probe_size"):
        health.HealthOptions.from_cfg({"health": {"histogram_epoch": [1]}})
    with pytest.raises(ConfigError, match="probe_size"):
        health.HealthOptions.from_cfg({"health": {"probe_size": 0}})
    with pytest.raises(ConfigError, match="histogram_epochs"):
        health.HealthOptions.from_cfg({"health": {"histogram_epochs": 3}})
    assert health.HealthOptions.from_cfg({}) == health.HealthOptions()  # no health node: on, defaults
    assert health.HealthOptions.from_cfg(None).enabled


def test_a_typo_in_a_health_key_fails_the_run(hydra_compose, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    cfg = hydra_compose(["trainer.epochs=1"])
    OmegaConf.set_struct(cfg, False)
    cfg.health.probe_sise = 10
    with pytest.raises(ConfigError, match="probe_sise"):
        train(cfg, tmp_path, monkeypatch)


# --------------------------------------------------------------------------- non-finite values


class NanBackward(Layer):
    """Identity forward, NaN gradient: a layer whose backward is broken."""

    name = "nan_backward"

    def forward(self, x, train=True):
        return x

    def backward(self, dout):
        return np.full_like(dout, np.nan)


def mlp(*extra: Layer) -> Sequential:
    layers = [Affine(6), ReLU(), *extra, Affine(5), ReLU(), Affine(3)]
    return Sequential(layers).build((4,), np.random.default_rng(0), np.float64)


def batch():
    rng = np.random.default_rng(1)
    return rng.standard_normal((8, 4)), rng.integers(0, 3, 8)


def test_diagnosis_names_the_layer_whose_forward_is_not_finite():
    model = mlp()
    model.layers[2].params["W"][1, 2] = np.nan
    x, y = batch()
    x_before = x.copy()
    message = health.diagnose_non_finite(model, SoftmaxCrossEntropy(), x, y)
    assert message.startswith("layer 2 (affine) produced a non-finite value in forward"), message
    assert "the first layer with non-finite parameters is layer 2 (affine): W has 1 non-finite of 30 values" in message
    np.testing.assert_array_equal(x, x_before)


def test_diagnosis_names_the_layer_whose_backward_is_not_finite():
    model = mlp(NanBackward())
    x, y = batch()
    message = health.diagnose_non_finite(model, SoftmaxCrossEntropy(), x, y)
    assert message.startswith("layer 2 (nan_backward) produced a non-finite value in backward"), message
    assert "all parameters are finite (largest magnitude" in message, message


def test_diagnosis_of_an_overflow_names_the_layer_although_its_parameters_are_finite():
    model = mlp()
    model.layers[2].params["W"][...] = 1e308
    message = health.diagnose_non_finite(model, SoftmaxCrossEntropy(), *batch())
    assert message.startswith("layer 2 (affine) produced a non-finite value in forward"), message
    assert "all parameters are finite (largest magnitude 1e+308 in layer 2 (affine) W)" in message, message


def test_diagnosis_restores_random_state_and_buffers_and_never_raises():
    from labnet.nn.layers import BatchNorm, Dropout

    model = Sequential([Affine(6), BatchNorm(), ReLU(), Dropout(0.5), Affine(3)]).build(
        (4,), np.random.default_rng(0), np.float64
    )
    rng_state = model.layers[3].rng.bit_generator.state
    running = model.layers[1].buffers["running_mean"].copy()
    x, y = batch()
    health.diagnose_non_finite(model, SoftmaxCrossEntropy(), x, y)
    assert model.layers[3].rng.bit_generator.state == rng_state
    np.testing.assert_array_equal(model.layers[1].buffers["running_mean"], running)
    message = health.diagnose_non_finite(model, SoftmaxCrossEntropy(), x[:, :2], y)  # wrong shape: no raise
    assert message.startswith("the diagnosis failed (ValueError"), message


def test_non_finite_parameters_at_an_epochs_end_stop_the_run_naming_the_layer(tmp_path):
    from labnet.nn.optimizers import SGD

    model, data = hand_built([])
    run = Run(name="t", output_dir=tmp_path, step=42)
    run.data, run.loss, run.optimizer = data, SoftmaxCrossEntropy(), SGD(lr=3.0)
    health.labnet_run_start(run=run, cfg=None, model=model)
    model.layers[2].params["b"][0] = np.inf
    with pytest.raises(TrainingError) as info:
        health.labnet_epoch_end(run=run, epoch=5, metrics={}, model=model)
    msg = str(info.value)
    assert "epoch 5" in msg and "step 42" in msg and "sgd lr=3.0" in msg, msg
    assert "layer 2 (affine) produced a non-finite value in forward" in msg, msg
    assert "first layer with non-finite parameters is layer 2 (affine): b has 1 non-finite" in msg, msg
