"""``labnet resume FOLDER [OVERRIDES ...]``: continue an interrupted run in its own folder, with the
config it was started with (read from its journal), from its last checkpoint."""

from __future__ import annotations

from pathlib import Path

from labnet.record.journal import read_state


def resume_argv(folder: Path, extra: list[str]) -> list[str]:
    """The command line that continues the run in ``folder``: its own overrides, its folder, its checkpoint."""
    from labnet.errors import ConfigError

    start = read_state(folder).start
    checkpoint = folder / "checkpoint.npz"
    if not start:
        raise ConfigError(f"{folder} holds no labnet run (no readable journal.jsonl)")
    if not checkpoint.is_file():
        raise ConfigError(f"{folder} has no checkpoint.npz to resume from (trainer.checkpoint_every=0?)")
    argv = [a for a in start.get("overrides", []) if not a.startswith(("trainer.resume=", "hydra.run.dir="))]
    if start.get("config_dir"):
        argv = ["--config-dir", start["config_dir"], *argv]
    return [*argv, f"hydra.run.dir={folder}", f"trainer.resume={checkpoint}", *extra]
