"""The fused trainer: a group's members trained as one stacked model, each reported as a run of its own.

The hot loop is the single trainer's (labnet.train.trainer): preallocated buffers, NumPy work only, per-member
figures kept in arrays. A member whose loss becomes non-finite is FAILED alone (its weights as they were before
that step are kept for its record, then it is zeroed and frozen while the others train on); a member that stops
early is frozen the same way with its state kept. Members sharing the data and the minibatch order (one seed)
share one gathered batch; the others gather their own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labnet.data.base import DataSplits, Split
from labnet.fused.losses import StackedLoss
from labnet.fused.model import StackedModel
from labnet.fused.optimizers import StackedOptimizer
from labnet.train.metrics import labels_of, predicted_labels
from labnet.train.objective import record_objective
from labnet.train.trainer import Run, TrainerConfig

#: ``on_epoch_end(member, run, epoch, metrics)``: called for each member still training, after each epoch
EpochCallback = Callable[[int, Run, int, dict[str, float]], None]
#: ``on_epoch_recorded(member, run, epoch)``: after the epoch is in the member's history and best objective
RecordedCallback = Callable[[int, Run, int], None]


@dataclass
class MemberStatus:
    """How a member's training ended (``RUNNING`` until it does) and its state when it stopped."""

    status: str = "RUNNING"
    error: str | None = None
    #: {"model": state_dict, "optim": optimizer state_dict} taken when a member failed or stopped early
    snapshot: dict[str, dict[str, np.ndarray]] | None = None
    #: the exception that failed it, when one did (a plugin's hook)
    exception: BaseException | None = None


class FusedTrainer:
    """Trains the k members of ``model`` together.

    :param data: each member's splits (the same object for members that share them).
    :param rngs: each member's generator, in the state its single run's trainer would start with.
    :param runs: each member's :class:`Run` (history, best objective, stop reason, step count).
    """

    def __init__(
        self,
        model: StackedModel,
        loss: StackedLoss,
        optimizer: StackedOptimizer,
        data: Sequence[DataSplits],
        config: TrainerConfig,
        rngs: Sequence[np.random.Generator],
        runs: Sequence[Run],
    ) -> None:
        self.model, self.loss, self.optimizer, self.config = model, loss, optimizer, config
        self.data, self.rngs, self.runs = list(data), list(rngs), list(runs)
        self.k = model.k
        if not (len(self.data) == len(self.rngs) == len(self.runs) == self.k):
            raise ValueError(f"{self.k} members need {self.k} data, rngs and runs")
        self.members = [MemberStatus() for _ in range(self.k)]
        self._park_after_step: list[int] = []
        self._failed_at: dict[int, int] = {}  # member -> the batches of this epoch it completed before failing
        self._stop = False

    # -- members ------------------------------------------------------------------------
    @property
    def active(self) -> list[int]:
        return [j for j, m in enumerate(self.members) if m.status == "RUNNING"]

    def member_state(self, j: int) -> dict[str, dict[str, np.ndarray]]:
        """Member j's ``{"model": state_dict, "optim": optimizer state_dict}`` in its single run's layout (its
        checkpoint and weights.npz); for a failed or stopped member, as it was then."""
        if self.members[j].snapshot is not None:
            return self.members[j].snapshot
        optim = {
            f"{slot}/params": self.model.member_flat(j, self.optimizer.state[slot])
            for slot in self.optimizer.member_slots(j)
        }
        optim["t"] = np.asarray(self.optimizer.t)
        return {"model": self.model.member_state_dict(j), "optim": optim}

    def _freeze(self, j: int, status: str, error: str | None = None) -> None:
        member = self.members[j]
        member.snapshot = self.member_state(j)
        member.status, member.error = status, error

    def fail(self, j: int, error: str) -> None:
        """Member j is FAILED now (between steps: a plugin's hook failed for it); the others train on."""
        if self.members[j].status == "RUNNING":
            self._freeze(j, "FAILED", error)
            self.model.zero_member(j)
            self.optimizer.park(j)

    # -- training -----------------------------------------------------------------------
    def fit(
        self, on_epoch_end: EpochCallback | None = None, on_epoch_recorded: RecordedCallback | None = None
    ) -> list[dict[str, float]]:
        """Train every member for ``config.epochs`` epochs or until it stops; returns each member's final
        metrics (as ``Trainer.fit`` does for one run; a failed member's are its last epoch's).

        ``on_epoch_end`` is where a single run calls its hooks (an exception fails that member alone);
        ``on_epoch_recorded`` comes after the epoch's history and objective are recorded, where a single run
        writes its checkpoint."""
        objective = self.begin()
        for epoch in range(1, self.config.epochs + 1):
            if not self.active:
                break
            self.record_epoch(epoch, self.compute_epoch(epoch), on_epoch_end, on_epoch_recorded)
        return self.finish(objective)

    # -- the phases of an epoch (labnet.fused.side_by_side runs several stacks' compute phases in threads) --
    def begin(self) -> str:
        """Each run's objective metric set; returns it."""
        cfg = self.config
        objective = cfg.objective if self.data[0].val is not None else cfg.objective.replace("val_", "train_")
        for run in self.runs:
            run.objective_metric = objective
        return objective

    def compute_epoch(self, epoch: int) -> dict[int, dict[str, float]]:
        """Train one epoch and evaluate it: each member's metrics (only NumPy work on this stack's arrays)."""
        trained = self._train_epoch(epoch)
        evaluated = self._evaluate()
        for j, metrics in trained.items():
            metrics.update(evaluated[j])
        return trained

    def stop(self) -> None:
        """Stop training at the next step (from another thread: the sweep was interrupted)."""
        self._stop = True

    def record_epoch(
        self,
        epoch: int,
        trained: dict[int, dict[str, float]],
        on_epoch_end: EpochCallback | None = None,
        on_epoch_recorded: RecordedCallback | None = None,
    ) -> None:
        """Hooks, history, objective and checkpoint of each member still training after ``epoch``."""
        cfg, objective = self.config, self.runs[0].objective_metric
        for j, metrics in trained.items():
            if self.members[j].status != "RUNNING":
                continue
            run = self.runs[j]
            run.epoch = epoch
            if on_epoch_end is not None:
                try:
                    on_epoch_end(j, run, epoch, metrics)
                except Exception as err:  # (a plugin's hook) this member fails, the others train on
                    self.fail(j, f"{type(err).__name__}: {err}" if not str(err) else str(err))
                    self.members[j].exception = err
                    continue
            run.history.append(metrics)
            record_objective(run, epoch, metrics[objective], cfg.patience)
            if on_epoch_recorded is not None:
                on_epoch_recorded(j, run, epoch)
            if run.stop_reason:
                self._freeze(j, "STOPPED")
                self.optimizer.park(j)

    def finish(self, objective: str) -> list[dict[str, float]]:
        """Each member's final metrics (its test split evaluated, stacked), its status FINISHED unless it failed."""
        for j, member in enumerate(self.members):
            if member.status == "STOPPED":  # (batch norm's running statistics moved while it was frozen)
                self.model.load_member_state_dict(j, member.snapshot["model"])
            if member.status in ("RUNNING", "STOPPED"):
                member.status = "FINISHED"
        finals = [dict(run.history[-1]) if run.history else {} for run in self.runs]
        tests = [d.test for d in self.data]
        if tests[0] is not None and "test_accuracy" not in finals[0]:
            test = evaluate_stacked(self.model, self.loss, tests, self.config.eval_batch_size)
            for j, member in enumerate(self.members):
                if member.status == "FINISHED":
                    finals[j]["test_loss"], finals[j]["test_accuracy"] = test[j]
        for final, run in zip(finals, self.runs, strict=True):
            final[f"best_{objective}"] = run.best_objective
        return finals

    def _train_epoch(self, epoch: int) -> dict[int, dict[str, float]]:
        model, loss, k, bs = self.model, self.loss, self.k, self.config.batch_size
        trains = [d.train for d in self.data]
        n = len(trains[0])
        orders = [rng.permutation(n) for rng in self.rngs]
        shared = all(t is trains[0] for t in trains) and all(np.array_equal(orders[0], o) for o in orders[1:])
        n_batches = -(-n // bs)
        lead = () if shared else (k,)
        x0, y0 = trains[0]
        # every per-step array is allocated here, once per epoch; the loop below only fills them
        xb = np.empty((*lead, bs, *x0.shape[1:]), x0.dtype)
        yb = np.empty((*lead, bs, *y0.shape[1:]), y0.dtype)
        labels_all = None if y0.ndim == 1 else [labels_of(t.y) for t in trains]
        lb = yb if labels_all is None else np.empty((*lead, bs), np.intp)
        argmax = len(model.output_shape or ()) == 1 and model.output_shape[0] > 1
        pred, hit, count = np.empty((k, bs), np.intp), np.empty((k, bs), np.bool_), np.empty(k, np.int64)
        correct = np.zeros(k, np.int64)
        losses = np.full((n_batches, k), np.nan)
        sizes = np.zeros(n_batches)
        forward, backward, step = model.forward, model.backward, self.optimizer.step
        loss_forward, loss_backward, reg = loss.forward, loss.backward, model.regularization_loss
        isfinite, add_reduce, equal = math.isfinite, np.add.reduce, np.equal
        training = self.active
        t0 = time.perf_counter()
        for b in range(n_batches):
            if self._stop:
                raise KeyboardInterrupt
            lo, hi = b * bs, min(n, (b + 1) * bs)
            m = hi - lo
            if shared:
                idx = orders[0][lo:hi]
                x, y, lab = xb[:m], yb[:m], lb[:m]
                trains[0].x.take(idx, axis=0, out=x, mode="clip")
                trains[0].y.take(idx, axis=0, out=y, mode="clip")
                if labels_all is not None:
                    labels_all[0].take(idx, out=lab, mode="clip")
            else:
                x, y, lab = xb[:, :m], yb[:, :m], lb[:, :m]
                for j, (train, order) in enumerate(zip(trains, orders, strict=True)):
                    train.x.take(order[lo:hi], axis=0, out=xb[j, :m], mode="clip")
                    train.y.take(order[lo:hi], axis=0, out=yb[j, :m], mode="clip")
                    if labels_all is not None:
                        labels_all[j].take(order[lo:hi], out=lb[j, :m], mode="clip")
            scores = forward(x, True, shared)
            p, h = (pred, hit) if m == bs else (pred[:, :m], hit[:, :m])
            if argmax:
                equal(scores.argmax(2, out=p), lab, out=h)
            else:
                equal(predicted_labels(scores.reshape(k * m, -1)).reshape(k, m), lab, out=h)
            correct += add_reduce(h, axis=1, dtype=np.int64, out=count)
            value = loss_forward(scores, y, not shared)
            penalty = reg()
            if penalty is not None:
                value = value + penalty
            if not isfinite(value.sum()):
                self._diverged(value, epoch, b, x, y, shared)
            losses[b] = value
            sizes[b] = m
            backward(loss_backward())
            step()
            if self._park_after_step:
                self._park()
        elapsed = time.perf_counter() - t0
        out = {}
        for j in training:
            run, done = self.runs[j], self._failed_at.pop(j, n_batches)
            run.step_numbers = run.step + np.arange(1, done + 1)
            run.step_losses = losses[:done, j].copy()
            run.step += done
            seen = sizes[:done].sum()
            if self.members[j].status == "RUNNING":
                train_loss = float(np.dot(losses[:done, j], sizes[:done]) / seen)
                out[j] = {
                    "train_loss": train_loss,
                    "train_accuracy": float(correct[j] / seen),
                    "epoch_seconds": elapsed,
                }
        return out

    def _diverged(self, value: np.ndarray, epoch: int, b: int, x, y, shared: bool) -> None:
        """Members whose loss is not finite fail now (with their weights before this step); the others go on."""
        from labnet.train.health import diagnose_non_finite

        for j in self.active:
            if math.isfinite(value[j]):
                continue
            run, opt = self.runs[j], self.optimizer.optimizers[j]
            xj, yj = (x, y) if shared else (x[j], y[j])
            try:
                why = diagnose_non_finite(self.model.member_model(j), self.loss.members[j], xj, yj)
            except Exception as err:  # the message must not be what stops the others
                why = f"(no diagnosis: {err})"
            self._freeze(
                j,
                "FAILED",
                f"the training loss became {value[j]} at step {run.step + 1 + b} (epoch {epoch}, batch {b + 1}) "
                f"with {opt.name} lr={opt.lr}: {why}; the run diverged: lower optimizer.lr",
            )
            self._park_after_step.append(j)
            self._failed_at[j] = b

    def _park(self) -> None:
        """Zero and freeze the members that failed this step (after it: their NaNs are in its update)."""
        for j in self._park_after_step:
            self.model.zero_member(j)
            self.optimizer.park(j)
        self._park_after_step.clear()

    # -- evaluation ---------------------------------------------------------------------
    def _evaluate(self) -> list[dict[str, float]]:
        cfg, out = self.config, [{} for _ in range(self.k)]
        for name, wanted in (("train", cfg.eval_train), ("val", True), ("test", cfg.eval_test)):
            splits = [getattr(d, name) for d in self.data]
            if wanted and splits[0] is not None:
                for j, (value, accuracy) in enumerate(
                    evaluate_stacked(self.model, self.loss, splits, cfg.eval_batch_size)
                ):
                    out[j][f"{name}_loss"], out[j][f"{name}_accuracy"] = value, accuracy
        return out


def evaluate_stacked(
    model: StackedModel, loss: StackedLoss, splits: Sequence[Split], batch_size: int = 10_000
) -> list[tuple[float, float]]:
    """Each member's mean loss and accuracy on its split, in evaluation mode (labnet.train.metrics.evaluate for a
    stack): a split shared by all members is one batch for all."""
    k, n = model.k, len(splits[0])
    if n == 0:
        return [(math.nan, math.nan)] * k
    shared = all(s is splits[0] for s in splits)
    chunk = batch_size if shared else max(1, batch_size // k)
    total, correct = np.zeros(k), np.zeros(k, np.int64)
    for i in range(0, n, chunk):
        if shared:
            x, y = splits[0].x[i : i + chunk], splits[0].y[i : i + chunk]
            labels = labels_of(y)[None, :]
        else:
            x, y = np.stack([s.x[i : i + chunk] for s in splits]), np.stack([s.y[i : i + chunk] for s in splits])
            labels = np.stack([labels_of(s.y[i : i + chunk]) for s in splits])
        m = x.shape[1] if not shared else x.shape[0]
        scores = model.forward(x, False, shared)
        predicted = predicted_labels(scores.reshape(k * m, -1)).reshape(k, m)
        correct += np.count_nonzero(predicted == labels, axis=1)
        total += loss.forward(scores, y, not shared) * m
    return [(float(total[j] / n), float(correct[j] / n)) for j in range(k)]


def describe(trainer: FusedTrainer) -> dict[str, Any]:
    """Each member's status and error, for a launcher's message."""
    return {j: (m.status, m.error) for j, m in enumerate(trainer.members)}
