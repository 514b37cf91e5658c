"""Only a lifecycle hook: ``labnet plugins`` must still list it."""

from __future__ import annotations

import labnet


@labnet.hookimpl
def labnet_run_end(run, status):
    pass
