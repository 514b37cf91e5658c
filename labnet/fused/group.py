"""A fused group from composed configs: each member built exactly as its single run would be, then trained as
one stacked model, or member by member when a layer or optimizer has no stacked form.

What a launcher calls::

    group = FusedGroup(members=[cfg_1, ..., cfg_k])      # composed labnet configs of jobs that fuse
    finals = group.fit(on_epoch_end=callback)             # callback(member, run, epoch, metrics)
    group.member_state(j)   # {"model": state_dict, "optim": optimizer state_dict}: checkpoint, weights.npz
    group.status(j)         # ("FINISHED" | "FAILED", error message or None)

With ``checkpoint_meta`` (one dict per member) ``fit`` writes each member's ``checkpoint.npz`` into its run's
folder every ``trainer.checkpoint_every`` epochs, in a single run's layout (``labnet resume`` continues it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from labnet.build import build_model
from labnet.config import build_component, flatten_config
from labnet.errors import ConfigError
from labnet.fused.grouping import differing_keys, fusible_groups
from labnet.fused.losses import stacked_loss
from labnet.fused.model import StackedModel, unstackable_layers
from labnet.fused.optimizers import StackedOptimizer, stackable
from labnet.fused.side_by_side import fit_side_by_side, split_members
from labnet.fused.trainer import EpochCallback, FusedTrainer
from labnet.plugins import Registry
from labnet.train.trainer import Run, Trainer


class FusedGroup:
    """The members of one fused group, built and ready to train.

    :param members: composed configs (OmegaConf) of jobs that :func:`fusible_groups` puts in one group.
    :param output_dirs: each member's run folder (for its :class:`Run`); the current folder by default.
    :param stacks: the members are trained as this many stacked models side by side, one thread each
        (labnet.fused.side_by_side).
    """

    def __init__(
        self,
        members: Sequence[DictConfig],
        manager=None,
        output_dirs: Sequence[Path] | None = None,
        stacks: int = 1,
    ) -> None:
        from labnet.run_policy import plugin_manager_for, trainer_config
        from labnet.runner import _dtype, _rng, default_run_name

        self.cfgs = list(members)
        flats = [flatten_config(cfg) for cfg in self.cfgs]
        if len(fusible_groups(flats)) != 1:
            odd = next(i for i in range(1, len(flats)) if differing_keys(flats[0], flats[i]))
            raise ConfigError(
                f"jobs 0 and {odd} cannot be fused: they differ in {', '.join(differing_keys(flats[0], flats[odd]))}"
            )
        self.manager = manager or plugin_manager_for(self.cfgs[0])
        registry = Registry(self.manager)
        section = lambda cfg, name: OmegaConf.to_container(cfg[name], resolve=True)  # noqa: E731
        cfg0, self.dtype = self.cfgs[0], _dtype(self.cfgs[0])
        self.config = trainer_config(cfg0)
        self.registry = registry
        self.dataset = dataset = build_component(
            registry.get("dataset", cfg0.dataset.name), "dataset", section(cfg0, "dataset")
        )
        self.losses, self.optimizers, self.rngs, self.data, self.models, self.runs = [], [], [], [], [], []
        loaded: dict[int, tuple] = {}  # seed -> (splits, generator state after loading them)
        for j, cfg in enumerate(self.cfgs):
            self.losses.append(build_component(registry.get("loss", cfg.loss.name), "loss", section(cfg, "loss")))
            optimizer_cls = registry.get("optimizer", cfg.optimizer.name)
            self.optimizers.append(build_component(optimizer_cls, "optimizer", section(cfg, "optimizer")))
            rng = _rng(cfg)
            if cfg.seed in loaded:  # the same seed carves the same split: load once, continue the same stream
                data, state = loaded[cfg.seed]
                rng.bit_generator.state = state
            else:
                data = dataset.load(rng, dtype=self.dtype)
                loaded[cfg.seed] = (data, rng.bit_generator.state)
            self.rngs.append(rng)
            self.data.append(data)
            self.models.append(build_model(section(cfg, "model"), data, registry, rng, self.dtype))
            out = Path(output_dirs[j]) if output_dirs else Path.cwd()
            self.runs.append(Run(name=cfg.tracking.get("run_name") or default_run_name(cfg), output_dir=out, cfg=cfg))
        # the checks a single run makes of its trainer options against its data (batch size, objective)
        Trainer(self.models[0], self.losses[0], self.optimizers[0], self.data[0], self.config, self.rngs[0])
        self.why_member_by_member = self._why_not_stacked()
        self.stacks = stacks
        self._trainers: list[FusedTrainer] = []
        self._where: dict[int, tuple[FusedTrainer, int]] = {}  # member -> (its stack's trainer, its position)
        self._results: list[tuple[str, str | None]] | None = None
        self._exceptions: dict[int, BaseException] = {}
        self._failed_before: dict[int, BaseException] = {}  # members failed before training (fail())
        self._checkpointers: list[Trainer] = []

    def _why_not_stacked(self) -> str | None:
        """Why this group cannot train as one stacked model (None: it can)."""
        layers = unstackable_layers(self.models[0])
        if layers:
            return f"no stacked form for {', '.join(layers)}"
        odd = sorted({o.name for o in self.optimizers if not stackable(type(o))})
        if odd:
            return f"optimizer {', '.join(odd)} does not declare stackable = True"
        return None

    # -- training -----------------------------------------------------------------------
    def fail(self, j: int, error: BaseException) -> None:
        """Member j fails before training (e.g. a plugin's ``labnet_run_start``): it is not trained."""
        self._failed_before[j] = error

    def fit(
        self, on_epoch_end: EpochCallback | None = None, checkpoint_meta: Sequence[dict] | None = None
    ) -> list[dict[str, float]]:
        """Train every member; each one's final metrics, in member order."""
        self._checkpointers = [
            Trainer(
                self.models[j],
                self.losses[j],
                self.optimizers[j],
                self.data[j],
                self.config,
                self.rngs[j],
                checkpoint_path=self.runs[j].output_dir / "checkpoint.npz" if checkpoint_meta else None,
            )
            for j in range(len(self.cfgs))
        ]
        for trainer, meta in zip(self._checkpointers, checkpoint_meta or [], strict=False):
            trainer.checkpoint_meta = dict(meta)
        if self.why_member_by_member is not None:
            print(
                f"labnet: fused group of {len(self.cfgs)} jobs: trained member by member in this process "
                f"(one start-up, one data load): {self.why_member_by_member}",
                flush=True,
            )
            return self._fit_member_by_member(on_epoch_end)
        # members of one optimizer class next to each other: each class is one run of the stacked optimizer
        order = sorted(range(len(self.cfgs)), key=lambda j: type(self.optimizers[j]).__name__)
        stacks = split_members(order, self.stacks)
        for members in stacks:
            model = StackedModel([self.models[j] for j in members])
            optimizer = StackedOptimizer(
                [self.optimizers[j] for j in members], model.param_segments, model.grad_segments
            )
            trainer = FusedTrainer(
                model,
                stacked_loss([self.losses[j] for j in members]),
                optimizer,
                [self.data[j] for j in members],
                self.config,
                [self.rngs[j] for j in members],
                [self.runs[j] for j in members],
            )
            self._trainers.append(trainer)
            self._where.update({j: (trainer, s) for s, j in enumerate(members)})
        for j, error in self._failed_before.items():
            trainer, s = self._where[j]
            trainer.fail(s, str(error))
            trainer.members[s].exception = error

        def epoch_end(i: int):
            members = stacks[i]
            if on_epoch_end is None:
                return None
            return lambda s, run, epoch, m: on_epoch_end(members[s], run, epoch, m)

        def recorded(i: int):
            return lambda s, run, epoch: self._save_checkpoint(stacks[i][s], epoch)

        finals = fit_side_by_side(self._trainers, epoch_end, recorded)
        by_member: list[dict[str, float]] = [{}] * len(order)
        for members, stack_finals in zip(stacks, finals, strict=True):
            for s, j in enumerate(members):
                by_member[j] = stack_finals[s]
        return by_member

    def _fit_member_by_member(self, on_epoch_end: EpochCallback | None) -> list[dict[str, float]]:
        """One single-run trainer per member, in this process (one start-up, one data load)."""
        from labnet.train.trainer import Interrupted

        finals, self._results = [], []
        for j in range(len(self.cfgs)):
            trainer = self._checkpointers[j]
            trainer.hook = None if on_epoch_end is None else _EpochRelay(j, on_epoch_end)
            try:
                if j in self._failed_before:
                    raise self._failed_before[j]
                finals.append(trainer.fit(self.runs[j]))
                self._results.append(("FINISHED", None))
            except Interrupted:
                raise
            except Exception as err:  # (a diverged member, a plugin's hook failing) the others train on
                finals.append(dict(self.runs[j].history[-1]) if self.runs[j].history else {})
                self._results.append(("FAILED", str(err)))
                self._exceptions[j] = err
        return finals

    def _save_checkpoint(self, j: int, epoch: int) -> None:
        """Member j's checkpoint as its single run would write it after ``epoch``."""
        trainer, every = self._checkpointers[j], self.config.checkpoint_every
        if trainer.checkpoint_path is None or not every or epoch % every:
            return
        state = self.member_state(j)
        self.models[j].load_state_dict(state["model"])
        self.optimizers[j].load_state_dict(state["optim"])
        trainer.save_checkpoint(self.runs[j], epoch)

    # -- members ------------------------------------------------------------------------
    def member_state(self, j: int) -> dict[str, dict[str, np.ndarray]]:
        """Member j's ``{"model": state_dict, "optim": optimizer state_dict}``, as its single run would save."""
        if j not in self._where:
            return {"model": self.models[j].state_dict(), "optim": self.optimizers[j].state_dict()}
        trainer, s = self._where[j]
        return trainer.member_state(s)

    def status(self, j: int) -> tuple[str, str | None]:
        """(``FINISHED`` or ``FAILED``, the error) of member j after :meth:`fit`."""
        if j not in self._where:
            return self._results[j]
        trainer, s = self._where[j]
        return trainer.members[s].status, trainer.members[s].error

    def exception(self, j: int) -> BaseException | None:
        """The exception that failed member j, when one did (a plugin's hook; a divergence has only a message)."""
        if j not in self._where:
            return self._exceptions.get(j)
        trainer, s = self._where[j]
        return trainer.members[s].exception

    def member_model(self, j: int):
        """Member j's own ``Sequential`` holding its weights now and its last step's gradients (for its hooks)."""
        if j not in self._where:
            return self.models[j]
        trainer, s = self._where[j]
        stacked = trainer.model
        model = stacked.member_model(s)
        np.copyto(model.flat_grads, stacked.member_flat(s, stacked.grad_segments))
        return model


class _EpochRelay:
    """The single trainer's hook relay, forwarding epoch ends to a fused group's callback."""

    def __init__(self, member: int, callback: EpochCallback) -> None:
        self.member, self.callback = member, callback

    def labnet_epoch_end(self, run, epoch, metrics, model=None, optimizer=None):
        self.callback(self.member, run, epoch, metrics)
