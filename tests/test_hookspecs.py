"""The plugin contract is documented whole: every hook in the plugin guide (docs/plugins.md) with the
arguments it has, every argument and every field of the Run the hooks receive described in
labnet/hookspecs.py, and no field named there that a Run does not have."""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
from pathlib import Path

import pluggy

from labnet import hookspecs

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
RUN_FIELD = re.compile(r"``run\.(\w+)")


def specs(module) -> dict[str, inspect.Signature]:
    """The hooks a hookspec module declares, by name, with their signatures."""
    return {
        name: inspect.signature(f)
        for name, f in vars(module).items()
        if name.startswith("labnet_") and callable(f) and hasattr(f, "labnet_spec")
    }


def undocumented(module, guide: str) -> list[str]:
    """What a hookspec module leaves undescribed: a hook missing from the guide (or shown there with other
    arguments), a hook without a docstring, an argument that is neither ``:param NAME:`` of its hook nor
    one of the shared nouns the module's docstring names (``NAME``), a Run field the module never names."""
    shared = module.__doc__ or ""
    problems = []
    for name, signature in specs(module).items():
        shown = f"`{name}({', '.join(signature.parameters)})`"
        if shown not in guide:
            problems.append(f"{name}: the guide shows no {shown}")
        doc = inspect.getdoc(getattr(module, name)) or ""
        if not doc:
            problems.append(f"{name}: no docstring")
        for arg in signature.parameters:
            if f":param {arg}:" not in doc and f"``{arg}``" not in shared:
                problems.append(f"{name}: argument {arg!r} is not described")
    named = set(RUN_FIELD.findall(shared)) | set(RUN_FIELD.findall(inspect.getdoc(module.Run) or ""))
    problems += [f"Run.{f.name} is not described" for f in dataclasses.fields(module.Run) if f.name not in named]
    return problems


def test_every_hook_its_arguments_and_the_runs_fields_are_documented():
    assert len(specs(hookspecs)) >= 13
    assert undocumented(hookspecs, GUIDE.read_text()) == []


def test_the_contract_names_only_fields_a_run_has():
    fields = {f.name for f in dataclasses.fields(hookspecs.Run)}
    texts = [hookspecs.__doc__, *(inspect.getdoc(f) for f in vars(hookspecs).values() if hasattr(f, "labnet_spec"))]
    named = {name for text in texts for name in RUN_FIELD.findall(text or "")}
    assert named - fields == set(), f"hookspecs.py names fields a Run does not have: {sorted(named - fields)}"


def test_the_check_finds_an_undocumented_hook_argument_and_run_field():
    """The guard itself: a contract with a hook missing from the guide, one without a docstring, an argument
    nobody describes and a Run field never named is reported on each count."""
    hookspec = pluggy.HookspecMarker("labnet")
    module = types.ModuleType("contract", "The same nouns: ``run`` and ``run.name``.")

    @dataclasses.dataclass
    class Run:
        name: str
        secret: int = 0

    @hookspec
    def labnet_documented(run, epoch) -> None:
        """Shown.

        :param epoch: the epoch.
        """

    @hookspec
    def labnet_silent(run, weights) -> None:
        pass

    module.Run = Run
    module.labnet_documented, module.labnet_silent = labnet_documented, labnet_silent
    guide = "| `labnet_documented(run, epoch)` | ... |"
    assert undocumented(module, guide) == [
        "labnet_silent: the guide shows no `labnet_silent(run, weights)`",
        "labnet_silent: no docstring",
        "labnet_silent: argument 'weights' is not described",
        "Run.secret is not described",
    ]
    assert undocumented(module, guide.replace("epoch)", "epoch, optimizer)"))[0].startswith("labnet_documented")
