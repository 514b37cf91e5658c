"""``labnet.run`` and ``labnet.sweep`` are modules (the run lifecycle, the sweep machinery) and also the
functions of the Python API (``labnet.api``): a submodule, once imported, is what ``labnet.run`` names, so
the module itself is made callable rather than shadowed by a function of the same name."""

from __future__ import annotations

import sys
import types


class CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        """Calls ``labnet.api.run`` / ``labnet.api.sweep`` (see their docstrings)."""
        from labnet import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


def make_callable(module_name: str) -> None:
    """Make the module ``module_name`` callable as the ``labnet.api`` function of its last name."""
    sys.modules[module_name].__class__ = CallableModule
