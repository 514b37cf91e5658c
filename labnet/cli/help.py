"""`labnet --help`: what a user can type, answered without composing a Hydra config.

Hydra's own help formats every config group (its own included) and takes seconds;
this lists labnet's groups and options from the config folders and the registry.
Hydra's help stays available as ``--hydra-help``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

USAGE = """labnet: deep-learning experiments in NumPy (Hydra app, MLflow tracking, pluggy plugins)

usage:
  labnet [GROUP=OPTION | KEY=VALUE ...]          train one run, e.g. optimizer=sgd optimizer.lr=0.1
  labnet +experiment=NAME [...]                  run an experiment (a run or a whole sweep)
  labnet -m KEY=A,B,C [...]                      sweep: one job per combination (hydra/launcher=joblib: parallel)
  labnet plugins [--json]                        every component and the distribution providing it
  labnet plugins check [NAME ...] [--json]       gradient and consistency checks of installed components
  labnet compare [--sweep ID] [--format F]       a sweep's runs side by side from the tracking store
  labnet --cfg job [...]                         print the composed config without running
  labnet --hydra-help                            Hydra's own options (launchers, sweepers, logging)
"""


def _defaults(conf: Path) -> dict[str, str]:
    config = yaml.safe_load((conf / "config.yaml").read_text())
    out = {}
    for entry in config.get("defaults", []):
        if isinstance(entry, dict):
            out.update({str(k): str(v) for k, v in entry.items()})
    return out


def help_text() -> str:
    from labnet.config import COMPONENT_GROUPS, config_dirs, plugin_config_dirs
    from labnet.plugins import get_registry

    conf, experiments = config_dirs()
    folders = [conf, *plugin_config_dirs()]
    registry = get_registry()
    defaults = _defaults(conf)
    groups: dict[str, set[str]] = {}
    for folder in folders:
        for group in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in ("hydra", "experiment")):
            groups.setdefault(group.name, set()).update(p.stem for p in group.glob("*.yaml"))
    for kind, group in COMPONENT_GROUPS.items():
        groups.setdefault(group, set()).update(c.name for c in registry.list(kind))
    lines = [USAGE, "config groups (default in brackets):"]
    for group in sorted(groups):
        options = ", ".join(f"[{o}]" if o == defaults.get(group) else o for o in sorted(groups[group]))
        lines.append(f"  {group}: {options}")
    names = {p.stem for p in experiments.glob("*.yaml")}
    names |= {p.stem for folder in folders for p in (folder / "experiment").glob("*.yaml")}
    lines.append(f"  +experiment: {', '.join(sorted(names))}")
    layers = ", ".join(c.name for c in registry.list("layer"))
    lines += [
        f"  layers for model.layers=[{{type: NAME, ...}}]: {layers}",
        "",
        "common keys: seed, optimizer.lr, trainer.epochs, trainer.batch_size, trainer.patience, trainer.resume,",
        "  model.hidden_sizes, model.activation, model.init, tracking.uri, tracking=none, sweep.replicates",
        "docs: README.md, docs/plugins.md",
    ]
    return "\n".join(lines)
