"""labnet.testing's HookRecorder and fresh_manager on a real Trainer: epoch hooks get the optimizer (and so its
learning rate), a hook's added metric reaches the run's history, the recorder sees every lifecycle call."""

from __future__ import annotations

import types

import numpy as np
import pytest

import labnet
from labnet.data.base import DataSplits, Split
from labnet.nn.layers import Affine, ReLU
from labnet.nn.model import Sequential
from labnet.nn.optimizers import Momentum
from labnet.plugins import Registry
from labnet.testing import HookRecorder, fresh_manager, provider_of
from labnet.train.trainer import Run, Trainer, TrainerConfig


def lr_plugin() -> types.ModuleType:
    """A plugin module (as an entry point would name) whose epoch hook logs the learning rate."""
    module = types.ModuleType("labnet_lrlog.plugin")

    @labnet.hookimpl
    def labnet_epoch_end(metrics, optimizer):
        metrics["lr"] = optimizer.lr
        metrics["steps"] = float(optimizer.step_count)

    module.labnet_epoch_end = labnet_epoch_end
    return module


def data() -> DataSplits:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((120, 2))
    y = (x[:, 0] > 0).astype(np.int64)
    return DataSplits(
        train=Split(x[:100], y[:100]), val=Split(x[100:], y[100:]), test=None, input_shape=(2,), num_classes=2
    )


@pytest.mark.parametrize("background", [False, True])
def test_epoch_hooks_read_the_optimizer_and_the_recorder_sees_each_call(tmp_path, background, monkeypatch):
    from labnet.train import background as background_module

    monkeypatch.setattr(background_module, "BACKGROUND_MIN_SECONDS", 0.0)
    manager = fresh_manager(lr_plugin(), builtins=False)
    assert manager.providers["labnet_lrlog"].dist == "labnet-lrlog"  # not installed: named after its package
    rng = np.random.default_rng(0)
    model = Sequential([Affine(4), ReLU(), Affine(2)]).build((2,), rng, np.float64)
    optimizer = Momentum(lr=0.05)
    loss = Registry(fresh_manager()).get("loss", "softmax_cross_entropy")()
    config = TrainerConfig(epochs=3, batch_size=25, progress=False, eval_background=background)
    trainer = Trainer(model, loss, optimizer, data(), config, rng, hook=manager.hook, checkpoint_path=tmp_path / "c")
    run = Run(name="t", output_dir=tmp_path)
    with HookRecorder(manager) as recorder:
        trainer.fit(run)
    calls = recorder.of("labnet_epoch_end")
    assert [c["epoch"] for c in calls] == [1, 2, 3]
    assert all(c["optimizer"] is optimizer for c in calls)
    assert [m["lr"] for m in run.history] == [0.05] * 3
    if not background:  # in the background, epoch k's hooks run while epoch k+1 trains
        assert [m["steps"] for m in run.history] == [4.0, 8.0, 12.0]
    assert recorder.calls[0].plugins == ["labnet_lrlog"] and recorder.calls[0].results == []


def test_the_recorder_keeps_errors_and_stops_recording_on_exit():
    class Raises:
        @labnet.hookimpl
        def labnet_run_end(self, status):
            raise RuntimeError(status)

    manager = fresh_manager(builtins=False)
    manager.register(Raises(), "raises", provider_of(types.ModuleType("raises")))
    with HookRecorder(manager) as recorder, pytest.raises(RuntimeError):
        manager.hook.labnet_run_end(run=None, status="FAILED", metrics={}, model=None, error=None)
    (call,) = recorder.calls
    assert call.hook == "labnet_run_end" and isinstance(call.error, RuntimeError) and call.results is None
    manager.hook.labnet_layers()
    assert recorder.names() == ["labnet_run_end"]


def test_the_plugin_manager_fixture_is_fresh(plugin_manager):
    assert "labnet.nn.builtin" in plugin_manager.providers
    assert all(p.dist == "labnet" for p in plugin_manager.providers.values()), "no installed plugin in it"
