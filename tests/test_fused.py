"""labnet.fused: stacked layers, losses and optimizers against the single ones and numerical gradients;
grouping; the fused trainer's per-member failure and early stopping; the member-by-member fallback."""

from __future__ import annotations

import math

import numpy as np
import pytest

import labnet
from labnet.data.base import DataSplits, Split
from labnet.fused import FusedTrainer, StackedModel, StackedOptimizer, fusible_groups, stacked_loss, why_alone
from labnet.fused.layers import stacked_form
from labnet.nn.gradcheck import numerical_gradient, relative_error
from labnet.nn.layers import Affine, BatchNorm, Dropout, Identity, ReLU, Sigmoid, Softmax, Tanh
from labnet.nn.losses import MeanSquaredError, SigmoidBinaryCrossEntropy, SoftmaxCrossEntropy
from labnet.nn.model import Sequential
from labnet.nn.optimizers import BUILTIN_OPTIMIZERS
from labnet.train.trainer import Run, Trainer, TrainerConfig

REGISTRY = labnet.get_registry()
K = 3


def members(make_layers, weight_decay=(0.0, 0.0, 0.0), input_shape=(6,)):
    """K built models of one architecture, each from its own seed (different init and dropout draws)."""
    return [
        Sequential(make_layers(j), weight_decay=weight_decay[j]).build(input_shape, np.random.default_rng(j), "float64")
        for j in range(K)
    ]


ARCHITECTURES = {
    "affine-relu-affine": lambda j: [Affine(7), ReLU(), Affine(4)],
    "sigmoid-tanh-identity": lambda j: [Affine(5, init="xavier"), Sigmoid(), Affine(5), Tanh(), Identity(), Affine(3)],
    "batchnorm-dropout": lambda j: [Affine(7), BatchNorm(momentum=0.8 + 0.05 * j), ReLU(), Dropout(0.2 * j), Affine(4)],
    "softmax-output": lambda j: [Affine(5), Softmax()],
    "batchnorm-first": lambda j: [BatchNorm(), Affine(4)],
}


@pytest.mark.parametrize("shared", [True, False], ids=["shared-batch", "own-batches"])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_stacked_forward_and_backward_equal_each_members_own(arch, shared):
    make = ARCHITECTURES[arch]
    singles, stacked = members(make, (0.0, 0.1, 0.3)), StackedModel(members(make, (0.0, 0.1, 0.3)))
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 6) if shared else (K, 5, 6))
    scores = stacked.forward(x, True, shared)
    dscores = rng.standard_normal(scores.shape)
    stacked.backward(dscores)
    for j, model in enumerate(singles):
        np.testing.assert_allclose(scores[j], model.forward(x if shared else x[j], True), rtol=1e-12, atol=1e-14)
        model.backward(dscores[j])
        np.testing.assert_allclose(
            stacked.member_flat(j, stacked.grad_segments), model.flat_grads, rtol=1e-10, atol=1e-13
        )
        np.testing.assert_allclose(stacked.member_flat(j, stacked.param_segments), model.flat_params)
        state = stacked.member_state_dict(j)
        for key, value in model.state_dict().items():  # (batch norm's running statistics moved alike)
            np.testing.assert_allclose(state[key], value, rtol=1e-12, err_msg=key)
    np.testing.assert_allclose(stacked.regularization_loss(), [m.regularization_loss() for m in singles], rtol=1e-12)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-batch", "own-batches"])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_stacked_gradients_match_numerical_ones(arch, shared):
    """The book's gradient check on the stack: f = Σ scores * R, against central differences of every
    stacked parameter (which also proves no member's gradient leaks into another's)."""
    stacked = StackedModel(members(ARCHITECTURES[arch]))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6) if shared else (K, 4, 6))
    projection = rng.standard_normal((K, 4, *stacked.output_shape))

    def f() -> float:
        for j, model in enumerate(stacked.members):  # the same dropout masks at every evaluation
            for layer in model.layers:
                layer.rng = np.random.default_rng(100 + j)
        return float(np.sum(stacked.forward(x, True, shared) * projection))

    f()
    stacked.backward(projection.copy())
    for (i, key), grad in stacked.views(stacked.grad_segments).items():
        param = stacked.layers[i].params[key]
        analytic, numeric = grad.copy(), numerical_gradient(f, param)
        vanishes = np.abs(analytic).max() < 1e-12 and np.abs(numeric).max() < 1e-9  # (a bias before batch norm)
        assert vanishes or relative_error(analytic, numeric) < 1e-6, (arch, i, key)


def test_every_builtin_layer_has_a_stacked_form_and_a_subclass_does_not_inherit_it():
    for cls in REGISTRY.list("layer"):
        if cls.cls.__module__ == "labnet.nn.layers":
            assert stacked_form(cls.cls) is not None, cls.name

    class Scaled(ReLU):  # changes the math: must not be stacked as a relu
        def forward(self, x, train=True):
            return 2 * super().forward(x, train)

    assert stacked_form(Scaled) is None


@pytest.mark.parametrize(
    "loss_cls, targets",
    [
        (SoftmaxCrossEntropy, "labels"),
        (SoftmaxCrossEntropy, "onehot"),
        (MeanSquaredError, "labels"),
        (SigmoidBinaryCrossEntropy, "onehot"),
    ],
)
@pytest.mark.parametrize("shared", [True, False], ids=["shared-targets", "own-targets"])
def test_stacked_losses_equal_each_members_loss(loss_cls, targets, shared):
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((K, 6, 4)) * 3
    labels = rng.integers(0, 4, (6,) if shared else (K, 6))
    t = labels if targets == "labels" else np.eye(4)[labels]
    stacked = stacked_loss([loss_cls() for _ in range(K)])
    values = stacked.forward(scores.copy(), t, per_member=not shared).copy()
    grads = stacked.backward().copy()
    for j in range(K):
        single = loss_cls()
        assert values[j] == pytest.approx(single.forward(scores[j].copy(), t if shared else t[j]), rel=1e-12)
        np.testing.assert_allclose(grads[j], single.backward(), rtol=1e-10, atol=1e-15)


# -- optimizers ---------------------------------------------------------------------------------------
HYPER = {
    "sgd": [{"lr": 0.1}, {"lr": 0.01, "weight_decay": 0.1}, {"lr": 0.5}],
    "momentum": [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.5}, {"lr": 0.2, "weight_decay": 0.01}],
    "nesterov": [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.5}, {"lr": 0.2}],
    "adagrad": [{"lr": 0.1}, {"lr": 0.3}, {"lr": 0.01, "weight_decay": 0.2}],
    "rmsprop": [{"lr": 0.01, "decay_rate": 0.9}, {"lr": 0.02}, {"lr": 0.001, "decay_rate": 0.5}],
    "adam": [{"lr": 0.001}, {"lr": 0.01, "beta1": 0.5, "beta2": 0.9}, {"lr": 0.1, "weight_decay": 0.05}],
}


def test_every_builtin_optimizer_is_covered():
    assert {cls.name for cls in BUILTIN_OPTIMIZERS} == set(HYPER)


@pytest.mark.parametrize("name", list(HYPER))
def test_stacked_optimizer_equals_each_members_single_optimizer(name):
    """Three members with their own hyperparameters, stepped as one, against the single optimizer run on each
    member's parameters alone; two segments, the second strided like the model's shared one."""
    cls = REGISTRY.get("optimizer", name)
    rng = np.random.default_rng(0)
    segments = [rng.standard_normal((K, 8)), rng.standard_normal((K, 5))]
    singles = [{"a": segments[0][j].copy(), "b": segments[1][j].copy()} for j in range(K)]
    grads = [np.zeros_like(s) for s in segments]
    stacked = StackedOptimizer([cls(**hp) for hp in HYPER[name]], segments, grads)
    optimizers = [cls(**hp) for hp in HYPER[name]]
    for _ in range(4):
        for g in grads:
            g[...] = rng.standard_normal(g.shape)
        stacked.step()
        for j, (params, opt) in enumerate(zip(singles, optimizers, strict=True)):
            opt.step(params, {"a": grads[0][j].copy(), "b": grads[1][j].copy()})
    for j, params in enumerate(singles):
        np.testing.assert_allclose(segments[0][j], params["a"], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(segments[1][j], params["b"], rtol=1e-13, atol=1e-15)


def test_stacked_optimizer_against_plain_per_element_formulas():
    """sgd, momentum and adam members in one stack, each element worked out in Python floats (the book's form)."""
    rng = np.random.default_rng(2)
    p0, grads_seen = rng.standard_normal((3, 4)), [rng.standard_normal((3, 4)) for _ in range(3)]
    segment, grad = p0.copy(), np.zeros((3, 4))
    make = REGISTRY.get
    opts = [make("optimizer", "sgd")(lr=0.1), make("optimizer", "momentum")(lr=0.05, momentum=0.8)]
    opts.append(make("optimizer", "adam")(lr=0.01, beta1=0.8, beta2=0.99))
    stacked = StackedOptimizer(opts, [segment], [grad])
    for g in grads_seen:
        grad[...] = g
        stacked.step()
    for e in range(4):
        p, v = p0[0, e], 0.0
        for g in grads_seen:
            p -= 0.1 * g[0, e]
        assert segment[0, e] == pytest.approx(p, rel=1e-12)
        p = p0[1, e]
        for g in grads_seen:
            v = 0.8 * v - 0.05 * g[1, e]
            p += v
        assert segment[1, e] == pytest.approx(p, rel=1e-12)
        p, m, v = p0[2, e], 0.0, 0.0
        for t, g in enumerate(grads_seen, start=1):
            m += 0.2 * (g[2, e] - m)
            v += 0.01 * (g[2, e] ** 2 - v)
            p -= 0.01 * math.sqrt(1 - 0.99**t) / (1 - 0.8**t) * m / (math.sqrt(v) + 1e-7)
        assert segment[2, e] == pytest.approx(p, rel=1e-9)


# -- grouping --------------------------------------------------------------------------------------------
def test_grouping_fuses_optimizer_seed_init_dropout_and_decay_but_nothing_else():
    base = {"seed": 0, "optimizer.name": "sgd", "optimizer.lr": 0.1, "model.init": "std", "model.dropout": 0.0,
            "model.weight_decay": 0.0, "model.hidden_sizes": [50], "trainer.batch_size": 100, "dataset.name": "mnist",
            "tracking.run_name": "a"}  # fmt: skip
    jobs = [
        base,
        {**base, "optimizer.name": "adam", "optimizer.lr": 0.001, "optimizer.beta1": 0.8, "seed": 3},
        {**base, "model.init": "he", "model.dropout": 0.5, "model.weight_decay": 0.1, "tracking.run_name": "b"},
        {**base, "model.hidden_sizes": [100]},
        {**base, "trainer.batch_size": 50},
        {**base, "dataset.name": "fashion_mnist", "optimizer.lr": 0.5},
    ]
    assert fusible_groups(jobs) == [[0, 1, 2], [3], [4], [5]]
    assert "model.hidden_sizes=[100] (job 0: [50])" in why_alone(jobs, 3)
    assert "trainer.batch_size" in why_alone(jobs, 4)
    assert "dataset.name" in why_alone(jobs, 5) and "optimizer" not in why_alone(jobs, 5)


# -- the fused trainer -------------------------------------------------------------------------------
def blobs(seed: int = 0, n: int = 120) -> DataSplits:
    """Three Gaussian blobs in 6-D: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 6)) * 0.5 + np.eye(3, 6)[labels] * 2
    split = lambda a, b: Split(x[a:b].copy(), labels[a:b].copy())  # noqa: E731
    return DataSplits(split(0, 80), split(80, 100), split(100, n), (6,), 3)


def fused_and_single(opt_hps, config, seeds=(0, 0, 0), layers=lambda: [Affine(8), ReLU(), Affine(3)]):
    data = blobs()

    def parts():
        rngs = [np.random.default_rng(s) for s in seeds]
        models = [Sequential(layers()).build((6,), rng, "float64") for rng in rngs]
        opts = [REGISTRY.get("optimizer", name)(**hp) for name, hp in opt_hps]
        return rngs, models, opts

    rngs, models, opts = parts()
    stacked = StackedModel(models)
    trainer = FusedTrainer(
        stacked,
        stacked_loss([SoftmaxCrossEntropy() for _ in opts]),
        StackedOptimizer(opts, stacked.param_segments, stacked.grad_segments),
        [data] * len(opts),
        config,
        rngs,
        [Run(f"m{j}", ".") for j in range(len(opts))],
    )
    seen = []
    finals = trainer.fit(lambda j, run, epoch, metrics: seen.append((j, epoch)))
    singles = []
    for rng, model, opt in zip(*parts(), strict=True):
        run = Run("single", ".")
        try:
            final, error = Trainer(model, SoftmaxCrossEntropy(), opt, data, config, rng).fit(run), None
        except labnet.errors.TrainingError as err:
            final, error = (dict(run.history[-1]) if run.history else {}), str(err)
        singles.append((final, error, run, model, opt))
    return trainer, finals, seen, singles


def assert_member_matches(trainer, j, final, single):
    s_final, s_error, s_run, s_model, s_opt = single
    state = trainer.member_state(j)
    for key, value in s_model.state_dict().items():
        # (atol: a bias before batch norm is rounding noise)
        np.testing.assert_allclose(state["model"][key], value, rtol=1e-9, atol=1e-10, err_msg=key)
    for key, value in s_opt.state_dict().items():
        np.testing.assert_allclose(state["optim"][key], value, rtol=1e-9, atol=1e-10, err_msg=key)
    for fused_epoch, single_epoch in zip(trainer.runs[j].history, s_run.history, strict=True):
        assert fused_epoch.keys() == single_epoch.keys()
        for key, value in single_epoch.items():
            assert key == "epoch_seconds" or fused_epoch[key] == pytest.approx(value, rel=1e-9), key
    for key, value in s_final.items():
        if key != "epoch_seconds":
            assert final[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
    assert trainer.runs[j].step == s_run.step and trainer.runs[j].best_epoch == s_run.best_epoch


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_one_members_divergence_fails_it_alone_and_the_others_train_on():
    config = TrainerConfig(epochs=3, batch_size=16, progress=False)
    opt_hps = [("sgd", {"lr": 0.1}), ("sgd", {"lr": 1e30}), ("adam", {"lr": 0.01})]  # (1e30: NaN in epoch 2)
    trainer, finals, seen, singles = fused_and_single(opt_hps, config)
    assert [m.status for m in trainer.members] == ["FINISHED", "FAILED", "FINISHED"]
    assert singles[1][1] is not None and "diverged" in trainer.members[1].error
    assert trainer.members[1].error.split(":")[0] == singles[1][1].split(":")[0]  # same step, epoch and batch
    for j in (0, 1, 2):
        assert_member_matches(trainer, j, finals[j], singles[j])
    assert finals[0]["val_accuracy"] > 0.8 and all(math.isfinite(v) for v in finals[2].values())
    assert (1, 1) in seen and (1, 2) not in seen and (0, 3) in seen and (2, 3) in seen


def test_early_stopping_stops_a_member_alone_with_its_weights_of_then():
    config = TrainerConfig(epochs=5, batch_size=16, patience=2, progress=False)
    opt_hps = [("sgd", {"lr": 0.3}), ("sgd", {"lr": 0.02}), ("momentum", {"lr": 0.2})]
    trainer, finals, seen, singles = fused_and_single(opt_hps, config, seeds=(0, 1, 2))
    assert [run.epoch for run in trainer.runs] == [4, 5, 3]  # (members 0 and 2 stop early, 1 trains on)
    assert (2, 3) in seen and (2, 4) not in seen and (1, 5) in seen
    for j in range(3):
        assert trainer.runs[j].stop_reason == singles[j][2].stop_reason
        assert_member_matches(trainer, j, finals[j], singles[j])


def test_members_with_different_seeds_and_dropout_match_their_single_runs():
    config = TrainerConfig(epochs=2, batch_size=16, progress=False)
    opt_hps = [("adam", {"lr": 0.01}), ("rmsprop", {"lr": 0.01}), ("nesterov", {"lr": 0.05})]
    trainer, finals, _, singles = fused_and_single(
        opt_hps, config, seeds=(0, 5, 5), layers=lambda: [Affine(8), BatchNorm(), ReLU(), Dropout(0.3), Affine(3)]
    )
    for j in range(3):
        assert_member_matches(trainer, j, finals[j], singles[j])
