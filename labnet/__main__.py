"""`python -m labnet` / `labnet`: the Hydra app, plus the `plugins` command.

Errors a user can fix (a config typo, an unknown name, a corrupt file) are printed as
one paragraph without a traceback; ``LABNET_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from labnet.errors import LabnetError

    debug = os.environ.get("LABNET_DEBUG") == "1"
    if argv and argv[0] == "plugins":
        from labnet.cli.plugins import plugins_command

        return plugins_command(argv[1:])
    if argv and argv[0] == "plugin":  # `labnet plugin new NAME`
        from labnet.cli.plugin_new import plugin_command

        return plugin_command(argv[1:])
    if argv and argv[0] == "compare":  # before --help: `labnet compare --help` is compare's own
        from labnet.cli.compare.command import compare_command

        return compare_command(argv[1:])
    if argv and argv[0] == "sync":
        from labnet.cli.sync import sync_command

        return sync_command(argv[1:])
    if argv and argv[0] == "resume":
        from labnet.cli.resume import resume_argv

        if len(argv) < 2 or argv[1] in ("-h", "--help"):
            print("usage: labnet resume FOLDER [OVERRIDES ...]  (continue an interrupted run in its folder)")
            return 0 if len(argv) > 1 else 2
        try:
            argv = resume_argv(Path(argv[1]), argv[2:])
        except LabnetError as err:
            print(f"labnet: error: {err}", file=sys.stderr)
            return 2
        print(f"labnet: resuming: labnet {' '.join(argv)}", file=sys.stderr)
    if "--help" in argv or "-h" in argv:
        from labnet.cli.help import help_text

        print(help_text())
        return 0
    try:
        from labnet.sweeps.callback import SweepAborted
        from labnet.sweeps.identity import expand_replicates

        argv = expand_replicates(argv)
    except LabnetError as err:
        print(f"labnet: error: {err}", file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0]] + argv
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us; we decide what to show
    try:
        _run_hydra()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except KeyboardInterrupt:
        from labnet.sweeps.processes import stop_children

        left = stop_children()
        print("labnet: interrupted" + (f"; stopped {left} worker process(es)" if left else ""), file=sys.stderr)
        return 143 if _terminated else 130
    except SweepAborted as aborted:
        message, code = explain(aborted.error, argv)
        print(f"labnet: error: {message}", file=sys.stderr)
        return code
    except Exception as err:
        if debug:
            raise
        message, code = explain(err, argv)
        print(f"labnet: error: {message}", file=sys.stderr)
        if code == 1 and not isinstance(err, LabnetError):  # not a user mistake: perhaps a bug
            print("(set LABNET_DEBUG=1 to see the traceback)", file=sys.stderr)
        return code
    return 0


_terminated = False


def _on_sigterm(signum, frame) -> None:
    """SIGTERM to a sweep's launching process ends it like Ctrl-C: its jobs are stopped, none is left behind."""
    global _terminated
    _terminated = True
    raise KeyboardInterrupt


def _run_hydra() -> None:
    import hydra

    from labnet.app import task

    global _terminated
    _terminated = False
    sweep = any(a in ("-m", "--multirun") for a in sys.argv[1:])
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if sweep else None  # (a run's trainer handles it)
    try:
        conf = prepare_hydra(sys.argv[1:])
        hydra.main(version_base=None, config_path=str(conf), config_name="config")(task)()
    finally:
        if previous is not None:  # (``main`` called in a process that goes on: a notebook, a test)
            signal.signal(signal.SIGTERM, previous)


def prepare_hydra(argv: list[str]) -> Path:
    """What Hydra needs before it composes labnet's config, for the CLI and ``labnet.run`` alike: the run
    folder resolver, and config nodes for the components of the plugins ``argv`` does not block. Returns conf/."""
    from labnet.config import config_dirs, plugin_config_dirs, register_component_configs
    from labnet.plugins import Registry, get_plugin_manager
    from labnet.record.files import register_resolvers

    register_resolvers()
    conf, _ = config_dirs()
    manager = get_plugin_manager(block=_blocked_plugins(argv))
    register_component_configs(Registry(manager), [conf, *plugin_config_dirs(manager)])
    return conf


def _blocked_plugins(argv: list[str]) -> list[str]:
    """``plugins.block=[a,b]`` from the command line, needed before Hydra composes (a clash must be blockable)."""
    import yaml

    for arg in argv:
        if arg.startswith("plugins.block="):
            value = yaml.safe_load(arg.split("=", 1)[1])
            return [str(v) for v in (value if isinstance(value, list) else [value]) if v]
    return []


#: Hydra plugins labnet's configs build on, and how to get them
HYDRA_PLUGIN_EXTRAS = {
    "hydra/launcher/ray": ("Ray launcher (hydra-ray-launcher)", "pip install 'labnet[ray]'"),
    "hydra/launcher/joblib": ("joblib launcher (hydra-joblib-launcher)", "pip install hydra-joblib-launcher"),
    "hydra/sweeper/optuna": ("Optuna sweeper (hydra-optuna-sweeper)", "pip install hydra-optuna-sweeper"),
}


def explain(err: BaseException, argv: list[str]) -> tuple[str, int]:
    """A user-facing message and exit code for an exception that ended the app."""
    from labnet.errors import LabnetError
    from labnet.train.trainer import Interrupted

    if isinstance(err, Interrupted):
        return str(err), 130 if err.signum == 2 else 143
    from labnet.config_checks import yaml_error_message

    if (yaml_message := yaml_error_message(err)) is not None:
        return yaml_message, 2
    if isinstance(err, LabnetError):
        from labnet.errors import ConfigError

        return str(err), 2 if isinstance(err, ConfigError) else 1  # (a plugin's own ConfigError subclass too)
    from hydra.errors import HydraException

    if isinstance(err, HydraException):
        text = str(err)
        match = re.search(r"Could not override '([^']+)'", text)
        if match and "." in match.group(1):
            return _unknown_key_message(match.group(1), argv) or text, 2
        plugin = re.search(r"Could not load '(hydra/(?:launcher|sweeper)/\w+)'", text)
        if plugin and plugin.group(1) in HYDRA_PLUGIN_EXTRAS:
            package, install = HYDRA_PLUGIN_EXTRAS[plugin.group(1)]
            text = text.split("\nConfig search path:")[0].strip()
            return f"{text}: Hydra's {package} is not installed here; install it with: {install}", 2
        missing = re.search(r"Could not find '([^/']+)/([^']+)'", text)
        if missing:
            listed = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)+)", text)
            options = listed.group(1).split() if listed else _group_options(missing.group(1))
            text = f"unknown {missing.group(1)} {missing.group(2)!r}; available: {', '.join(options) or 'none'}"
        return text.split("\nConfig search path:")[0].strip(), 2
    return f"{type(err).__name__}: {err}", 1


def _group_options(group: str) -> list[str]:
    """Config names in ``group`` across labnet's folders, the experiments and plugin config folders."""
    from labnet.config import config_dirs, plugin_config_dirs

    conf, experiments = config_dirs()
    folders = [experiments] if group == "experiment" else [conf / group]
    folders += [d / group for d in plugin_config_dirs()]
    return sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")})


def _unknown_key_message(key: str, argv: list[str]) -> str | None:
    """For `group.key=value` with a misspelt key: the message listing the group's valid keys."""
    from hydra import compose, initialize_config_dir

    from labnet.config import config_dirs

    group, _, name = key.rpartition(".")
    rest = [a for a in argv if not a.startswith(key + "=") and not a.startswith("-")]
    try:
        with initialize_config_dir(config_dir=str(config_dirs()[0]), version_base=None):
            cfg = compose("config", overrides=rest)
        node = cfg.select(group) if hasattr(cfg, "select") else None
    except Exception:
        return None
    from omegaconf import OmegaConf

    node = OmegaConf.select(cfg, group)
    if node is None or not hasattr(node, "keys"):
        return None
    component = f" ({node.name})" if "name" in node else ""
    valid = ", ".join(k for k in node.keys() if k != "name")
    if not valid:
        return f"unknown key {key!r}: {group}{component} takes no options"
    return f"unknown key {key!r} in {group}{component}; valid keys: {valid}"


if __name__ == "__main__":
    sys.exit(main())
