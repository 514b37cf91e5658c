"""``labnet_epoch_end`` with an argument ``epochs`` the spec does not have: pluggy refuses the plugin."""

from __future__ import annotations

import labnet


@labnet.hookimpl
def labnet_epoch_end(run, epochs):
    pass
