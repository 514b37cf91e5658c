"""The trainer: epochs of shuffled minibatches, evaluation, checkpoints, hooks.

The hot loop does only NumPy work on preallocated buffers: no hook call, logging
call or Python allocation per step. Lifecycle hooks run once per epoch.

With ``eval_background`` an epoch's evaluation runs in a thread, on a copy of the
weights the epoch ended with, while the next epoch trains (NumPy's matrix products
release the GIL, so a free core does it). Everything that needs its figures (hooks,
history, early stopping, the checkpoint of that epoch) then happens when they are in,
at the end of the next epoch, with the state the evaluated epoch ended with: a run
trains, reports and stops exactly as with the evaluation in line.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labnet.config import check_flag, check_whole
from labnet.data.base import DataSplits
from labnet.errors import ConfigError, TrainingError
from labnet.hookspecs import Run
from labnet.nn.losses import Loss
from labnet.nn.model import Sequential
from labnet.nn.optimizers import Optimizer
from labnet.train import checkpoint as ckpt
from labnet.train.background import BackgroundEvaluation, _PendingEpoch
from labnet.train.metrics import evaluate, labels_of, predicted_labels
from labnet.train.objective import record_objective
from labnet.train.progress import progress_bar, progress_shown


class Interrupted(Exception):
    """Training stopped by SIGINT / SIGTERM after a final checkpoint was written."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        self.signum, self.checkpoint = signum, checkpoint
        where = f"; resume it with: labnet resume {checkpoint.parent}" if checkpoint else ""
        super().__init__(f"interrupted by {signal.Signals(signum).name}{where}")


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 100
    patience: int | None = None
    objective: str = "val_accuracy"
    eval_batch_size: int = 10_000
    #: evaluate the whole training split at each epoch's end (the book's train accuracy) instead of
    #: reporting the running loss and accuracy of the epoch's own steps
    eval_train: bool = False
    #: also evaluate the test split each epoch (the book's train/test accuracy curves); costs a forward pass
    eval_test: bool = False
    #: evaluate each epoch in a thread while the next one trains (see the module's docstring)
    eval_background: bool = False
    checkpoint_every: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("eval_train", "eval_test", "eval_background", "progress"):
            check_flag(f"trainer.{key}", getattr(self, key))
        for key in ("epochs", "batch_size", "eval_batch_size", "checkpoint_every"):
            check_whole(f"trainer.{key}", getattr(self, key), 0 if key == "checkpoint_every" else 1)
        if self.patience is not None:
            check_whole("trainer.patience", self.patience, 1, " or null")


PLUGIN_STATE = "plugin/"  # checkpoint entries of plugins (labnet_checkpoint / labnet_resume)


class Trainer(BackgroundEvaluation):
    """Trains ``model`` on ``data`` with ``loss`` and ``optimizer``, calling ``hook`` each epoch.

    :param hook: a pluggy hook relay (``manager.hook``) or ``None``.
    :param rng: the run's one generator: shuffling and dropout draw from it.
    """

    def __init__(
        self,
        model: Sequential,
        loss: Loss,
        optimizer: Optimizer,
        data: DataSplits,
        config: TrainerConfig,
        rng: np.random.Generator,
        hook=None,
        checkpoint_path: Path | None = None,
    ) -> None:
        self.model, self.loss, self.optimizer, self.data = model, loss, optimizer, data
        self.config, self.rng, self.hook = config, rng, hook
        self.checkpoint_path = checkpoint_path
        #: entries saved with every checkpoint beside the training state (what the run was configured with)
        self.checkpoint_meta: dict[str, np.ndarray] = {}
        n = len(data.train)
        if config.batch_size > n:
            raise ConfigError(
                f"trainer.batch_size={config.batch_size} is larger than the training split ({n} samples); "
                f"use a value from 1 to {n}"
            )
        splits = ("train", "val") if data.val is not None else ("train",)
        objectives = [f"{split}_{what}" for split in splits for what in ("accuracy", "loss")]
        if config.objective not in objectives and config.objective.replace("val_", "train_") not in objectives:
            raise ConfigError(f"trainer.objective={config.objective!r}: accepted are {', '.join(objectives)}")
        self._param_group = {"params": model.flat_params}
        self._grad_group = {"params": model.flat_grads}
        self._signal: int | None = None
        self._resume: dict[str, np.ndarray] | None = None
        self._pending: _PendingEpoch | None = None
        self._twin: tuple[Sequential, Loss] | None = None  # the model and loss the background evaluates with
        self._executor: ThreadPoolExecutor | None = None
        self._eval_seconds: float | None = None  # how long the last epoch's evaluation took

    # -- checkpoints --------------------------------------------------------------------
    def _training_state(self, epoch: int, batch_index: int, order, sums) -> dict[str, np.ndarray]:
        """Model, optimizer, RNG and position (copies): where training stands."""
        state = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        state.update({f"optim/{k}": v for k, v in self.optimizer.state_dict().items()})
        state["epoch"] = np.asarray(epoch)
        state["batch_index"] = np.asarray(batch_index)
        state["order"] = np.asarray(order if order is not None else [], np.int64)
        state["sums"] = np.asarray(sums, np.float64)
        state["rng"] = ckpt.encode_json(self.rng.bit_generator.state)
        return state

    def _run_state(self, run: Run) -> dict[str, np.ndarray]:
        """History, best objective and step count: what the run reported so far."""
        summary = {"best_objective": run.best_objective, "best_epoch": run.best_epoch, "step": run.step}
        # not the history: it is in the run's journal, and the checkpoint's cost must not grow with the epochs
        return {"run": ckpt.encode_json(summary), **self.checkpoint_meta}

    def save_checkpoint(self, run: Run, epoch: int, batch_index: int = 0, order=None, sums=(0, 0, 0), training=None):
        """Write the checkpoint; ``training`` is a :meth:`_training_state` taken earlier (an epoch evaluated
        in the background is saved as it ended)."""
        if self.checkpoint_path is None:
            return None
        training = training if training is not None else self._training_state(epoch, batch_index, order, sums)
        return ckpt.save_npz(self.checkpoint_path, {**training, **self._run_state(run), **self._plugin_state(run)})

    def _plugin_state(self, run: Run) -> dict[str, np.ndarray]:
        """What plugins need to continue exactly after a resume (``labnet_checkpoint``), under ``plugin/``."""
        hook = getattr(self.hook, "labnet_checkpoint", None)
        state: dict[str, np.ndarray] = {}
        for part in (hook(run=run) if hook is not None else None) or []:
            state.update({f"{PLUGIN_STATE}{key}": np.asarray(value) for key, value in (part or {}).items()})
        return state

    def resume_from(self, path: str | Path, state: dict[str, np.ndarray] | None = None) -> int:
        """Load model, optimizer, RNG and position from a checkpoint written by this trainer (``state``: its
        entries, when the caller read them already); returns its epoch."""
        state = state if state is not None else ckpt.load_checkpoint(path)
        epoch, mid_epoch = int(state["epoch"]), bool(state["order"].size)
        if epoch > self.config.epochs or (epoch == self.config.epochs and not mid_epoch):
            raise ConfigError(
                f"trainer.resume={path} was saved after epoch {epoch}, and trainer.epochs={self.config.epochs} "
                f"leaves nothing to train: resume with trainer.epochs greater than {epoch}"
            )
        self.model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model/")})
        self.optimizer.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("optim/")})
        self.rng.bit_generator.state = ckpt.decode_json(state["rng"])
        self._resume = state
        return int(state["epoch"])

    # -- signals ------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._signal = signum

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    # -- training -----------------------------------------------------------------------
    def fit(self, run: Run) -> dict[str, float]:
        """Train for ``config.epochs`` epochs (or until early stopping); returns final metrics."""
        cfg, data = self.config, self.data
        run.objective_metric = cfg.objective if data.val is not None else cfg.objective.replace("val_", "train_")
        start_epoch, start_batch, order, sums = 1, 0, None, (0.0, 0.0, 0.0)
        if self._resume is not None:
            st = self._resume
            resume_hook = getattr(self.hook, "labnet_resume", None)
            if resume_hook is not None:
                n = len(PLUGIN_STATE)
                resume_hook(run=run, state={k[n:]: v for k, v in st.items() if k.startswith(PLUGIN_STATE)})
            saved = ckpt.decode_json(st["run"])
            run.step = saved["step"]  # (the history before it comes from the run's journal)
            run.best_objective, run.best_epoch = saved["best_objective"], saved["best_epoch"]
            start_epoch, start_batch = int(st["epoch"]), int(st["batch_index"])
            order = st["order"] if st["order"].size else None
            sums = tuple(st["sums"])
            if order is None:  # saved at an epoch boundary: continue with the next epoch
                start_epoch += 1
        previous = self._install_signal_handlers()
        try:
            for epoch in range(start_epoch, cfg.epochs + 1):
                run.epoch = epoch
                metrics = self._train_epoch(run, epoch, start_batch, order, sums)
                start_batch, order, sums = 0, None, (0.0, 0.0, 0.0)
                if self._pending is not None:
                    pending = self._finish_pending(run)
                    if run.stop_reason:  # the epoch before stopped the run: undo this one's training
                        self._restore(run, pending)
                        break
                background = cfg.eval_background and epoch < cfg.epochs and self._evaluation_worth_a_thread()
                if background and self._evaluate_in_background(run, epoch, metrics):
                    continue
                metrics.update(self._evaluate(self.model, self.loss))
                self._end_epoch(run, epoch, metrics)
                if run.stop_reason:
                    break
        except BaseException:
            if self._pending is not None:  # what the evaluated epoch reported is kept (hooks, history, checkpoint)
                with contextlib.suppress(Exception):
                    self._finish_pending(run)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
        final = dict(run.history[-1]) if run.history else {}
        if data.test is not None and "test_accuracy" not in final:  # (eval_test: the last epoch measured it)
            final["test_loss"], final["test_accuracy"] = evaluate(self.model, self.loss, data.test, cfg.eval_batch_size)
        final[f"best_{run.objective_metric}"] = run.best_objective
        return final

    def _train_epoch(self, run: Run, epoch: int, start_batch: int, order, sums) -> dict[str, float]:
        model, loss, optimizer = self.model, self.loss, self.optimizer
        x_all, y_all = self.data.train
        n, bs = len(x_all), self.config.batch_size
        if order is None:
            order = self.rng.permutation(n)
        n_batches = -(-n // bs)
        # every per-step array is allocated here, once per epoch; the loop below only fills them
        xb = np.empty((bs, *x_all.shape[1:]), x_all.dtype)
        yb = np.empty((bs, *y_all.shape[1:]), y_all.dtype)
        if y_all.ndim == 1:  # integer labels: the gathered targets are the labels
            labels_all, lb = None, yb
        else:
            labels_all = labels_of(y_all)
            lb = np.empty(bs, labels_all.dtype)
        # argmax into a buffer for the usual (n, classes) scores; predicted_labels handles the rest
        out_shape = model.output_shape or ()
        argmax = len(out_shape) == 1 and out_shape[0] > 1
        pred, hit = np.empty(bs, np.intp), np.empty(bs, np.bool_)
        losses = np.full(n_batches, np.nan)
        loss_sum, correct, seen = sums
        forward, backward, step = model.forward, model.backward, optimizer.step
        loss_forward, loss_backward = loss.forward, loss.backward
        take_x, take_y, count_nonzero, isfinite = x_all.take, y_all.take, np.count_nonzero, math.isfinite
        params, grads = self._param_group, self._grad_group
        reg = model.regularization_loss if model.weight_decay else None
        bar = self._progress(epoch, n_batches, start_batch)
        t0 = time.perf_counter()
        for b in range(start_batch, n_batches):
            if self._signal is not None:
                if self._pending is not None:  # the epoch before first: its figures go into this checkpoint
                    self._finish_pending(run)
                path = self.save_checkpoint(run, epoch, b, order, (loss_sum, correct, seen))
                raise Interrupted(self._signal, path)
            idx = order[b * bs : (b + 1) * bs]
            k = len(idx)
            if k == bs:
                x, y, lab, p, h = xb, yb, lb, pred, hit
            else:
                x, y, lab, p, h = xb[:k], yb[:k], lb[:k], pred[:k], hit[:k]
            # mode="clip": the indices are valid, and the default mode="raise" gathers through a temporary
            take_x(idx, axis=0, out=x, mode="clip")
            take_y(idx, axis=0, out=y, mode="clip")
            if labels_all is not None:
                labels_all.take(idx, out=lab, mode="clip")
            scores = forward(x, True)
            if argmax:
                # the ndarray method, not np.argmax: no Python wrapper per step
                correct += count_nonzero(np.equal(scores.argmax(1, out=p), lab, out=h))
            else:
                correct += count_nonzero(predicted_labels(scores) == lab)
            value = loss_forward(scores, y)
            if reg is not None:
                value += reg()
            if not isfinite(value):
                from labnet.train.health import diagnose_non_finite

                raise TrainingError(
                    f"the training loss became {value} at step {run.step + 1} (epoch {epoch}, batch {b + 1}) "
                    f"with {optimizer.name} lr={optimizer.lr}: {diagnose_non_finite(model, loss, x, y)}; "
                    "the run diverged: lower optimizer.lr"
                )
            losses[b] = value
            loss_sum += value * k
            seen += k
            backward(loss_backward())
            step(params, grads)
            run.step += 1
            if bar is not None and b % 20 == 19:
                bar.update(20)
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t0
        done = np.arange(n_batches) >= start_batch
        run.step_numbers = run.step - np.count_nonzero(done) + np.arange(np.count_nonzero(done)) + 1
        run.step_losses = losses[done]
        return {"train_loss": loss_sum / seen, "train_accuracy": correct / seen, "epoch_seconds": elapsed}

    # -- evaluation ---------------------------------------------------------------------
    def _evaluate(self, model: Sequential, loss: Loss) -> dict[str, float]:
        """The epoch-end figures: the validation split, and the training and test splits if asked for."""
        cfg, data, out, start = self.config, self.data, {}, time.perf_counter()
        for name, split, wanted in (
            ("train", data.train, cfg.eval_train),
            ("val", data.val, True),
            ("test", data.test, cfg.eval_test),
        ):
            if wanted and split is not None:
                out[f"{name}_loss"], out[f"{name}_accuracy"] = evaluate(model, loss, split, cfg.eval_batch_size)
        self._eval_seconds = time.perf_counter() - start
        return out

    def _end_epoch(self, run: Run, epoch: int, metrics: dict[str, float], model=None, training=None) -> None:
        """Hooks, history, early stopping and checkpoint of an evaluated epoch (``model``: the weights it
        ended with, when the live model trains on; ``training``: its checkpoint entries)."""
        cfg = self.config
        if self.hook is not None:
            self.hook.labnet_epoch_end(
                run=run,
                epoch=epoch,
                metrics=metrics,
                model=self.model if model is None else model,
                optimizer=self.optimizer,
            )
        run.history.append(metrics)
        record_objective(run, epoch, metrics[run.objective_metric], cfg.patience)
        if cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0:
            self.save_checkpoint(run, epoch, training=training)
        if progress_shown(cfg.progress):
            shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "epoch_seconds" and "/" not in k)
            print(f"epoch {epoch}/{cfg.epochs}  {shown}", file=sys.stderr)

    def _progress(self, epoch: int, total: int, start: int):
        if not progress_shown(self.config.progress):
            return None
        return progress_bar(total, start, f"epoch {epoch}")
