"""A fused group trained as several stacks side by side (labnet.fused.side_by_side): each member still trains,
fails and stops exactly as its single run; the hooks run in the calling thread; each job is composed once."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from omegaconf import OmegaConf

import labnet
from labnet.errors import ConfigError
from labnet.fused import FusedTrainer, StackedModel, StackedOptimizer, stacked_loss
from labnet.fused.compose_once import ComposeOnce, compose_once, launching
from labnet.fused.side_by_side import fit_side_by_side, split_members, stack_count
from labnet.nn.layers import Affine, ReLU
from labnet.nn.losses import SoftmaxCrossEntropy
from labnet.nn.model import Sequential
from labnet.train.trainer import Run, Trainer, TrainerConfig
from tests.test_fused import assert_member_matches, blobs

REGISTRY = labnet.get_registry()
OPTIMIZERS = [
    ("sgd", {"lr": 0.3}),
    ("sgd", {"lr": 1e30}),  # (diverges in epoch 2)
    ("momentum", {"lr": 0.2}),
    ("adam", {"lr": 0.01}),
    ("sgd", {"lr": 0.02}),
]


def build(j: int):
    rng = np.random.default_rng(j)
    model = Sequential([Affine(8), ReLU(), Affine(3)]).build((6,), rng, "float64")
    name, hp = OPTIMIZERS[j]
    return rng, model, REGISTRY.get("optimizer", name)(**hp)


def stack(members, data, config) -> FusedTrainer:
    rngs, models, opts = zip(*(build(j) for j in members), strict=True)
    model = StackedModel(models)
    return FusedTrainer(
        model,
        stacked_loss([SoftmaxCrossEntropy() for _ in members]),
        StackedOptimizer(opts, model.param_segments, model.grad_segments),
        [data] * len(members),
        config,
        rngs,
        [Run(f"m{j}", ".") for j in members],
    )


def single(j: int, data, config):
    rng, model, opt = build(j)
    run = Run("single", ".")
    try:
        final, error = Trainer(model, SoftmaxCrossEntropy(), opt, data, config, rng).fit(run), None
    except labnet.errors.TrainingError as err:
        final, error = dict(run.history[-1]), str(err)
    return final, error, run, model, opt


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_stacks_side_by_side_train_fail_and_stop_each_member_as_its_single_run():
    config = TrainerConfig(epochs=5, batch_size=16, patience=2, progress=False)
    data = blobs()
    stacks = split_members(range(len(OPTIMIZERS)), 2)
    assert stacks == [[0, 2, 4], [1, 3]]
    trainers = [stack(members, data, config) for members in stacks]
    calls, main = [], threading.get_ident()

    def on_epoch_end(i):
        return lambda s, run, epoch, metrics: calls.append((stacks[i][s], epoch, threading.get_ident()))

    finals = fit_side_by_side(trainers, on_epoch_end, lambda i: None)
    assert {ident for *_, ident in calls} == {main}  # (hooks, journal, checkpoints: never in a stack's thread)
    for i, members in enumerate(stacks):
        for s, j in enumerate(members):
            expected = single(j, data, config)
            assert_member_matches(trainers[i], s, finals[i][s], expected)
            assert trainers[i].runs[s].stop_reason == expected[2].stop_reason
    assert trainers[1].members[0].status == "FAILED" and (1, 2) not in [(j, e) for j, e, _ in calls]
    assert max(e for j, e, _ in calls if j == 0) < 5  # (member 0 stopped early, alone)


def test_a_stack_that_raises_stops_the_others_and_the_error_reaches_the_caller():
    config = TrainerConfig(epochs=3, batch_size=16, progress=False)
    data = blobs()
    trainers = [stack([0], data, config), stack([2, 3], data, config)]

    def broken(epoch):
        raise KeyboardInterrupt

    trainers[0].compute_epoch = broken
    with pytest.raises(KeyboardInterrupt):
        fit_side_by_side(trainers, lambda i: None, lambda i: None)
    assert trainers[1]._stop  # (its thread stops at its next step instead of finishing the epoch)


def test_stack_count_is_one_per_core_by_default_at_most_one_per_member_and_checked(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert stack_count(None, 12) == 4 and stack_count(None, 3) == 3 and stack_count(2, 12) == 2
    for bad in (0, "two", 1.5):
        with pytest.raises(ConfigError, match=r"hydra\.launcher\.stacks=.*whole number >= 1 or null"):
            stack_count(bad, 12)


class CountingLoader:
    def __init__(self):
        self.calls = 0

    def load_sweep_config(self, master_config, sweep_overrides):
        self.calls += 1
        return OmegaConf.create({"overrides": list(sweep_overrides), "hydra": {"job": {"num": 0}}})

    def other(self):
        return "delegated"


def test_each_job_is_composed_once_for_the_sweepers_check_and_the_launcher():
    context = type("Context", (), {})()
    context.config_loader = loader = CountingLoader()
    compose_once(context)
    compose_once(context)  # (not wrapped twice)
    assert isinstance(context.config_loader, ComposeOnce) and context.config_loader._loader is loader
    master = OmegaConf.create({})
    for overrides in (["a=1"], ["a=2"]):  # the sweeper's check of its batch
        checked = context.config_loader.load_sweep_config(master, overrides)
        checked.hydra.job.num = 7  # the checker's changes do not reach the launcher
    assert loader.calls == 2
    with launching(context):
        launched = context.config_loader.load_sweep_config(master, ["a=1"])
        assert loader.calls == 2 and launched.hydra.job.num == 0 and launched.overrides == ["a=1"]
        context.config_loader.load_sweep_config(master, ["a=1"])  # a second launch of it composes anew
        context.config_loader.load_sweep_config(master, ["a=3"])  # one the sweeper did not check (Optuna)
        assert loader.calls == 4 and len(context.config_loader._kept) == 1  # (a=2: kept, not launched)
    assert context.config_loader._kept == {}  # (what the launch did not take is dropped with it)
    with launching(context):
        context.config_loader.load_sweep_config(master, ["a=2"])
    assert loader.calls == 5 and context.config_loader.other() == "delegated"
