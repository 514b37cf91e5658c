"""trainer.eval_background: each epoch is evaluated in a thread, on a copy of its weights, while the
next one trains; the run must report, checkpoint, stop, fail and resume exactly as with the
evaluation in line."""

from __future__ import annotations

import signal
import threading

import numpy as np
import pytest

from labnet.data.base import DataSplits, Split
from labnet.errors import ConfigError, TrainingError
from labnet.nn.layers import Affine, BatchNorm, Dropout, ReLU
from labnet.nn.model import Sequential
from labnet.plugins import Registry, get_plugin_manager
from labnet.train import checkpoint as ckpt
from labnet.train.trainer import Interrupted, Run, Trainer, TrainerConfig


@pytest.fixture(autouse=True)
def always_in_the_background(monkeypatch):
    """These data sets evaluate in well under BACKGROUND_MIN_SECONDS: every epoch goes to the thread anyway."""
    from labnet.train import background

    monkeypatch.setattr(background, "BACKGROUND_MIN_SECONDS", 0.0)


def blobs() -> DataSplits:
    """Three overlapping Gaussian blobs in 2-d: learnable, never perfectly (so early stopping can trigger)."""
    rng = np.random.default_rng(7)
    centers = np.array([[0.0, 0.0], [1.5, 0.5], [0.5, 1.5]])

    def split(n: int) -> Split:
        y = rng.integers(0, 3, n)
        return Split(centers[y] + rng.normal(0, 0.8, (n, 2)), y)

    return DataSplits(train=split(600), val=split(150), test=split(150), input_shape=(2,), num_classes=3)


class Tripwire(ReLU):
    """A ReLU that, at its ``at``-th training forward pass, calls ``action`` (a signal, a NaN)."""

    def __init__(self, at: int, action) -> None:
        super().__init__()
        self.at, self.action, self.calls = at, action, 0

    def forward(self, x, train=True):
        out = super().forward(x, train)
        if train:
            self.calls += 1
            if self.calls == self.at:
                self.action(out)
        return out


def make_trainer(tmp_path, background: bool, relu: ReLU | None = None, **options):
    data, rng = blobs(), np.random.default_rng(0)
    layers = [Affine(16), BatchNorm(), relu or ReLU(), Dropout(0.2), Affine(3)]
    model = Sequential(layers).build((2,), rng, np.float64)
    manager = get_plugin_manager(block=["mlflow_tracker"])  # the health hooks read the model each epoch
    registry = Registry(manager)
    loss = registry.get("loss", "softmax_cross_entropy")()
    optimizer = registry.get("optimizer", "adam")(lr=0.01)
    config = TrainerConfig(
        epochs=options.pop("epochs", 6),
        batch_size=50,
        progress=False,
        eval_background=background,
        **{"eval_train": True, "eval_test": True, **options},
    )
    folder = tmp_path / ("background" if background else "inline")
    trainer = Trainer(model, loss, optimizer, data, config, rng, hook=manager.hook, checkpoint_path=folder / "c.npz")
    run = Run(name="t", output_dir=folder)
    run.data, run.loss, run.optimizer = data, loss, optimizer
    manager.hook.labnet_run_start(run=run, cfg=None, model=model)
    return trainer, run


def reported(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in metrics.items() if k != "epoch_seconds"} for metrics in history]


def assert_same_run(a: tuple[Trainer, Run], b: tuple[Trainer, Run]) -> None:
    (ta, ra), (tb, rb) = a, b
    assert reported(ra.history) == reported(rb.history)  # bit for bit, health/... entries included
    assert (ra.epoch, ra.step, ra.best_epoch, ra.stop_reason) == (rb.epoch, rb.step, rb.best_epoch, rb.stop_reason)
    for key, value in ta.model.state_dict().items():
        np.testing.assert_array_equal(value, tb.model.state_dict()[key], err_msg=key)
    assert ta.rng.bit_generator.state == tb.rng.bit_generator.state
    saved_a, saved_b = ckpt.load_npz(ta.checkpoint_path), ckpt.load_npz(tb.checkpoint_path)
    assert sorted(saved_a) == sorted(saved_b)
    for key in saved_a:
        np.testing.assert_array_equal(saved_a[key], saved_b[key], err_msg=key)


def test_a_background_run_reports_and_checkpoints_every_epoch_exactly_as_inline(tmp_path):
    inline, background = make_trainer(tmp_path, False), make_trainer(tmp_path, True)
    final_inline, final_background = inline[0].fit(inline[1]), background[0].fit(background[1])
    assert background[0]._twin is not None  # it did evaluate on the copy
    assert_same_run(inline, background)
    assert final_inline == {**final_background, "epoch_seconds": final_inline["epoch_seconds"]}
    history = background[1].history
    assert len(history) == 6 and {"train_accuracy", "val_accuracy", "test_accuracy"} <= set(history[0])
    assert any(key.startswith("health/") for key in history[0])


def test_the_evaluation_runs_in_another_thread_on_the_epochs_weights(tmp_path, monkeypatch):
    from labnet.train import trainer as trainer_module

    seen = []
    original = trainer_module.evaluate

    def spy(model, loss, split, batch_size):
        seen.append((threading.current_thread().name, model.layers[0].params["W"].copy()))
        return original(model, loss, split, batch_size)

    monkeypatch.setattr(trainer_module, "evaluate", spy)
    trainer, run = make_trainer(tmp_path, True, epochs=3)
    trainer.fit(run)
    threads = [name for name, _ in seen]
    # epochs 1 and 2 in the background (train, val, test each), the last one in line
    assert threads[:6] == ["labnet-eval_0"] * 6 and threads[6:] == ["MainThread"] * 3
    assert not np.array_equal(seen[0][1], seen[3][1])  # epoch 2's weights, not epoch 1's again
    np.testing.assert_array_equal(seen[6][1], trainer.model.layers[0].params["W"])


def test_early_stopping_undoes_the_epoch_trained_meanwhile(tmp_path):
    inline = make_trainer(tmp_path, False, epochs=60, patience=2, objective="val_loss")
    background = make_trainer(tmp_path, True, epochs=60, patience=2, objective="val_loss")
    inline[0].fit(inline[1])
    background[0].fit(background[1])
    assert inline[1].stop_reason and inline[1].epoch < 60  # it did stop early
    assert_same_run(inline, background)


def test_a_failure_in_the_next_epoch_keeps_the_evaluated_one(tmp_path):
    def diverge(out):
        out[...] = np.nan

    # 12 batches an epoch: the 15th training pass is in epoch 2, while epoch 1 is evaluated
    trainer, run = make_trainer(tmp_path, True, relu=Tripwire(15, diverge))
    with pytest.raises(TrainingError, match="epoch 2"):
        trainer.fit(run)
    assert len(run.history) == 1 and "val_accuracy" in run.history[0]
    assert int(ckpt.load_npz(trainer.checkpoint_path)["epoch"]) == 1  # the evaluated epoch's checkpoint


def test_an_interrupt_checkpoints_both_epochs_and_resumes_bit_exact(tmp_path):
    holder: dict[str, Trainer] = {}

    def interrupt(out):
        holder["trainer"]._signal = signal.SIGINT

    trainer, run = make_trainer(tmp_path, True, relu=Tripwire(40, interrupt))  # epoch 4, batch 4
    holder["trainer"] = trainer
    with pytest.raises(Interrupted):
        trainer.fit(run)
    saved = ckpt.load_npz(trainer.checkpoint_path)
    assert int(saved["epoch"]) == 4 and int(saved["batch_index"]) == 4  # (checked before the next batch)
    assert len(run.history) == 3  # epoch 3, evaluated meanwhile, was reported before the checkpoint

    resumed, resumed_run = make_trainer(tmp_path / "again", True)
    resumed.resume_from(trainer.checkpoint_path)
    resumed_run.history = list(run.history)  # (labnet.runner reads it from the run's journal)
    resumed.fit(resumed_run)
    straight = make_trainer(tmp_path / "straight", False)
    straight[0].fit(straight[1])
    assert reported(run.history) == reported(straight[1].history)[:3]
    # the health figures too: the checkpoint kept the weights the interrupted epoch started with
    assert reported(resumed_run.history) == reported(straight[1].history)
    for key, value in straight[0].model.state_dict().items():
        np.testing.assert_array_equal(value, resumed.model.state_dict()[key], err_msg=key)


@pytest.mark.parametrize(
    ("value", "cores", "jobs", "threads", "ray", "expected"),
    [
        ("auto", 2, 1, None, None, True),  # a single run: one BLAS thread, one core free
        ("auto", 2, 1, 2, None, False),  # trainer.threads=2 takes both
        ("auto", 2, 2, None, None, False),  # joblib n_jobs=2: a job per core
        ("auto", 8, 2, None, None, False),  # 2 jobs x 8 // 2 threads: all 8 cores taken
        ("auto", 1, 1, None, None, False),
        ("auto", 8, 1, None, 2, False),  # a Ray task owns only its CPUs
        (True, 2, 2, None, None, True),
        (False, 8, 1, None, None, False),
    ],
)
def test_auto_evaluates_in_the_background_only_on_a_free_core(monkeypatch, value, cores, jobs, threads, ray, expected):
    from omegaconf import OmegaConf

    from labnet import run_policy as app

    monkeypatch.setattr(app.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(app, "parallel_jobs", lambda: jobs)
    monkeypatch.setattr(app, "_ray_cpus", lambda: ray)
    cfg = OmegaConf.create({"trainer": {"eval_background": value, "threads": threads}})
    assert app.eval_background(cfg) is expected


def test_a_bad_eval_background_value_names_the_choices():
    from omegaconf import OmegaConf

    from labnet import run_policy as app

    with pytest.raises(ConfigError, match=r"trainer.eval_background='sometimes'.*auto, true, false"):
        app.eval_background(OmegaConf.create({"trainer": {"eval_background": "sometimes"}}))


def test_nothing_to_evaluate_needs_no_copy_and_no_thread(tmp_path):
    trainer, run = make_trainer(tmp_path, True, epochs=3, eval_train=False, eval_test=False)
    trainer.data = DataSplits(trainer.data.train, None, None, (2,), 3)
    trainer.fit(run)
    assert trainer._twin is None and len(run.history) == 3


def test_an_evaluation_too_quick_for_a_thread_stays_in_line(tmp_path, monkeypatch):
    from labnet.train import trainer as trainer_module

    threads = []
    original = trainer_module.evaluate

    def spy(model, loss, split, batch_size):
        threads.append(threading.current_thread().name)
        return original(model, loss, split, batch_size)

    monkeypatch.setattr(trainer_module, "evaluate", spy)
    from labnet.train import background

    monkeypatch.setattr(background, "BACKGROUND_MIN_SECONDS", 60.0)
    trainer, run = make_trainer(tmp_path, True, epochs=4, eval_train=False, eval_test=False)
    trainer.fit(run)
    # epoch 1 in the background (measured), epochs 2-4 in line, then the final test evaluation
    assert threads == ["labnet-eval_0"] + ["MainThread"] * 4


def test_a_second_fit_evaluates_in_the_background_again(tmp_path):
    trainer, run = make_trainer(tmp_path, True, epochs=3)
    trainer.fit(run)
    trainer.config.epochs = 5  # train on: the second fit starts a new evaluation thread
    more = Run(name="t", output_dir=tmp_path / "more")
    trainer.fit(more)
    assert len(more.history) == 5 and "val_accuracy" in more.history[0]


class Locked(ReLU):
    """A layer holding something deepcopy refuses (a lock): the model cannot be copied."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


def test_a_model_that_cannot_be_copied_is_evaluated_in_line_with_a_warning(tmp_path, capsys):
    trainer, run = make_trainer(tmp_path, True, relu=Locked(), epochs=3)
    inline, inline_run = make_trainer(tmp_path / "inline", False, relu=Locked(), epochs=3)
    trainer.fit(run)
    inline.fit(inline_run)
    assert "the model cannot be copied" in capsys.readouterr().err
    assert reported(run.history) == reported(inline_run.history)


class FailsInEvaluation(ReLU):
    """A layer that fails in the evaluation thread from the 2nd epoch's evaluation on."""

    def __init__(self) -> None:
        super().__init__()
        self.evaluations = 0

    def forward(self, x, train=True):
        if threading.current_thread().name.startswith("labnet-eval"):
            self.evaluations += 1
            if self.evaluations > 3:  # epoch 1 evaluates train, val and test (a batch each)
                raise ValueError("broken in evaluation")
        return super().forward(x, train)


def test_an_error_in_the_background_evaluation_reaches_the_run(tmp_path):
    trainer, run = make_trainer(tmp_path, True, relu=FailsInEvaluation())
    with pytest.raises(ValueError, match="broken in evaluation"):
        trainer.fit(run)
    assert len(run.history) == 1  # epoch 1 is kept; epoch 2's evaluation failed in the thread
    assert trainer._executor is None  # and the thread was shut down
