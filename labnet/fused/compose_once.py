"""Each sweep job's config composed once, not twice.

Hydra's sweepers compose every job of a batch to check it (``Sweeper.validate_batch_is_legal``) and throw the
result away; the launcher then composes the same job again. Composing is pure Python (OmegaConf) and cost about
a third of a whole 12-job command (profiled: 24 compositions of ~0.45-0.7 s each on a loaded machine, beside
~45-60 s of training). :class:`ComposeOnce` stands in for the config loader: the sweeper's check keeps what it
composed, and the launcher's call for the same job (inside :func:`launching`) takes it. labnet's launchers
(``labnet_basic`` and ``labnet_fused``) install it.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

from omegaconf import DictConfig


class ComposeOnce:
    """A Hydra ``ConfigLoader`` whose ``load_sweep_config`` composes each job once: outside a launch (the
    sweeper's check) it keeps what it composed and hands out a copy; inside one (:func:`launching`) it hands
    out the kept config, or composes anew (a sweeper that checks nothing, such as Optuna's), keeping nothing."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._kept: dict[tuple[int, tuple[str, ...]], DictConfig] = {}
        self.launching = False

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> DictConfig:
        key = (id(master_config), tuple(sweep_overrides))
        if self.launching:
            kept = self._kept.pop(key, None)
            if kept is not None:
                return kept
        config = self._loader.load_sweep_config(master_config=master_config, sweep_overrides=list(sweep_overrides))
        if self.launching:
            return config
        self._kept[key] = config
        return copy.deepcopy(config)  # (the checker may change its copy: ~4% of composing it)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def compose_once(hydra_context: Any) -> None:
    """Make ``hydra_context``'s config loader a :class:`ComposeOnce` (the sweeper shares the context object)."""
    if not isinstance(hydra_context.config_loader, ComposeOnce):
        hydra_context.config_loader = ComposeOnce(hydra_context.config_loader)


@contextlib.contextmanager
def launching(hydra_context: Any) -> Iterator[None]:
    """A launcher's ``launch``: its compositions take what the sweeper's check kept; what is left (jobs the
    launcher did not compose) is dropped at the end."""
    loader = hydra_context.config_loader
    if not isinstance(loader, ComposeOnce):
        yield
        return
    loader.launching = True
    try:
        yield
    finally:
        loader.launching = False
        loader._kept.clear()
