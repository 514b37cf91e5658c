"""HookRecorder: every hook call a plugin manager makes, with its arguments and each plugin's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class HookCall:
    """One call of a hook: its name, the keyword arguments, the plugins called and what they returned."""

    hook: str
    kwargs: dict[str, Any]
    plugins: list[str]
    results: list[Any] | None = None
    error: BaseException | None = None


@dataclass
class HookRecorder:
    """Records the hook calls made on ``manager`` while it is entered::

        with HookRecorder(manager) as recorder:
            trainer.fit(run)
        assert [c["epoch"] for c in recorder.of("labnet_epoch_end")] == [1, 2]

    Calls to registration hooks (``labnet_layers`` ...) are recorded too; filter with :meth:`of`.
    """

    manager: Any
    calls: list[HookCall] = field(default_factory=list)

    def __enter__(self) -> HookRecorder:
        self._open: list[HookCall] = []
        self._undo = self.manager.pm.add_hookcall_monitoring(self._before, self._after)
        return self

    def __exit__(self, *exc) -> None:
        self._undo()

    def _before(self, hook_name, hook_impls, kwargs) -> None:
        call = HookCall(hook_name, dict(kwargs), [impl.plugin_name for impl in hook_impls])
        self.calls.append(call)
        self._open.append(call)

    def _after(self, outcome, hook_name, hook_impls, kwargs) -> None:
        call = self._open.pop()
        if outcome.exception is not None:
            call.error = outcome.exception
        else:
            call.results = outcome.get_result()

    def of(self, hook: str) -> list[dict[str, Any]]:
        """The keyword arguments of every call of ``hook``, in call order."""
        return [c.kwargs for c in self.calls if c.hook == hook]

    def names(self) -> list[str]:
        """The hooks called, in order (one entry per call)."""
        return [c.hook for c in self.calls]
