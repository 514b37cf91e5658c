"""Evaluating an epoch in a thread while the next one trains (``trainer.eval_background``).

NumPy's matrix products release the GIL, so a free core evaluates a copy of the weights an epoch ended
with while the training goes on; the epoch's hooks, history, early stopping and checkpoint then happen
when its figures are in, with the state it ended with (see :mod:`labnet.train.trainer`).
"""

from __future__ import annotations

import copy
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from labnet.hookspecs import Run
from labnet.train import checkpoint as ckpt

#: an epoch evaluation quicker than this stays in line: copying the weights and handing the work to a
#: thread cost ~0.3 ms (the spiral run's 150 validation samples take 0.05 ms; MNIST's 5,000 take ~8 ms)
BACKGROUND_MIN_SECONDS = 0.002

@dataclass
class _PendingEpoch:
    """An epoch whose evaluation runs in the background, and what the run was when it ended."""

    epoch: int
    metrics: dict[str, float]
    state: dict[str, np.ndarray]  # model, optimizer, RNG and position at the epoch's end (checkpoint entries)
    step: int
    step_numbers: np.ndarray
    step_losses: np.ndarray
    evaluation: Future



class BackgroundEvaluation:
    """The part of :class:`labnet.train.trainer.Trainer` that evaluates epochs in the background."""

    def _evaluation_worth_a_thread(self) -> bool:
        """Something to evaluate, and (once measured) enough of it to pay for the copy and the thread."""
        cfg, data = self.config, self.data
        if not (data.val is not None or cfg.eval_train or (cfg.eval_test and data.test is not None)):
            return False
        return self._eval_seconds is None or self._eval_seconds >= BACKGROUND_MIN_SECONDS

    def _evaluate_in_background(self, run: Run, epoch: int, metrics: dict[str, float]) -> bool:
        """Start evaluating this epoch's weights in a thread; False if this model cannot be copied for it."""
        if self._twin is None:
            try:
                self._twin = (self.model.clone(), copy.deepcopy(self.loss))
            except Exception as err:  # (a plugin layer holding something that cannot be copied)
                print(
                    f"labnet: warning: trainer.eval_background: the model cannot be copied ({err}); "
                    "evaluating each epoch in line",
                    file=sys.stderr,
                )
                self.config.eval_background = False
                return False
        if self._executor is None:  # (one per fit: its end shuts it down)
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="labnet-eval")
        twin, twin_loss = self._twin
        state = self._training_state(epoch, 0, None, (0.0, 0.0, 0.0))
        twin.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model/")})
        np.copyto(twin.flat_grads, self.model.flat_grads)  # (the last step's gradients, for the hooks)
        self._pending = _PendingEpoch(
            epoch,
            metrics,
            state,
            run.step,
            run.step_numbers,
            run.step_losses,
            self._executor.submit(self._evaluate, twin, twin_loss),
        )
        return True

    def _finish_pending(self, run: Run) -> _PendingEpoch:
        """Wait for the background evaluation and end its epoch as the run stood then."""
        pending, self._pending = self._pending, None
        current = (run.epoch, run.step, run.step_numbers, run.step_losses)
        run.epoch, run.step, run.step_numbers, run.step_losses = (
            pending.epoch,
            pending.step,
            pending.step_numbers,
            pending.step_losses,
        )
        try:
            pending.metrics.update(pending.evaluation.result())
            self._end_epoch(run, pending.epoch, pending.metrics, model=self._twin[0], training=pending.state)
        finally:
            run.epoch, run.step, run.step_numbers, run.step_losses = current
        return pending

    def _restore(self, run: Run, pending: _PendingEpoch) -> None:
        """Back to the end of the pending epoch: the run stopped there."""
        state = pending.state
        self.model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model/")})
        self.optimizer.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("optim/")})
        self.rng.bit_generator.state = ckpt.decode_json(state["rng"])
        run.epoch, run.step, run.step_numbers, run.step_losses = (
            pending.epoch,
            pending.step,
            pending.step_numbers,
            pending.step_losses,
        )

