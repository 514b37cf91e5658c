"""Where training shows its progress: a terminal (stderr is a tty) or a Jupyter cell (stderr is the kernel's
stream, no tty, yet shown as it comes). A notebook gets a widget bar when ipywidgets is installed, else text."""

from __future__ import annotations

import importlib.util
import sys


def in_notebook() -> bool:
    """True when stderr goes to a Jupyter cell (ipykernel's stream), where bars and epoch lines are seen."""
    return type(sys.stderr).__module__.startswith("ipykernel")


def progress_shown(enabled: bool) -> bool:
    """``trainer.progress`` where someone watches: on a terminal or in a notebook (not in a log file)."""
    return enabled and (sys.stderr.isatty() or in_notebook())


def progress_bar(total: int, initial: int, desc: str):
    """A tqdm bar on stderr: a notebook widget when ipywidgets is there, else the terminal's text bar."""
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, leave=False, mininterval=0.5, file=sys.stderr)
