"""docs/plugins.md: its python blocks run, its layer passes gradcheck and registers (that every hook is documented
there is a core test: tests/test_hookspecs.py)."""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import pytest
from labnet.nn.gradcheck import gradcheck
from labnet.nn.layer import Layer
from labnet.plugins import DEFAULT_PLUGINS, Provider, Registry, get_plugin_manager

DOC = Path(__file__).resolve().parents[3] / "docs" / "plugins.md"  # plugins/labnet-example/tests -> repo
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


@pytest.fixture(scope="module")
def doc() -> str:
    if not DOC.is_file():
        pytest.skip(f"{DOC} not found (this test belongs to the labnet repository)")
    return DOC.read_text()


@pytest.fixture(scope="module")
def module(doc) -> types.ModuleType:
    """Every ```python block of the page, run in order in one fresh module like a plugin module (```py: shown only)."""
    blocks = BLOCK.findall(doc)
    assert blocks, "docs/plugins.md has no ```python blocks"
    module = types.ModuleType("labnet_docs_example")
    for index, source in enumerate(blocks):
        exec(compile(source, f"{DOC}:python block {index + 1}", "exec"), module.__dict__)
    return module


def layers_of(module) -> list[type]:
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Layer) and obj.__module__ == module.__name__
    ]


def test_the_documented_layer_passes_gradcheck(module):
    layers = layers_of(module)
    assert layers, "the docs define no Layer subclass"
    for cls in layers:
        for seed in range(3):
            x = np.random.default_rng(seed).standard_normal((4, *cls.example_input_shape))
            errors = gradcheck(cls(), x, seed=seed)
            assert max(errors.values()) < 1e-6, (cls.name, errors)


def test_the_documented_tests_pass(module):
    tests = [f for name, f in vars(module).items() if name.startswith("test_") and callable(f)]
    assert tests, "the docs show no test function"
    for test in tests:
        test()


def test_the_documented_plugin_registers_and_its_hook_stops_a_run(module):
    manager = get_plugin_manager(block=DEFAULT_PLUGINS, entry_points=False)  # built-in lifecycle hooks need real runs
    manager.register(module, "docs-example", Provider("docs-example", "labnet-docs-example", "0.0"))
    manager.pm.check_pending()
    registry = Registry(manager)
    for cls in layers_of(module):
        component = registry.component("layer", cls.name)
        assert component.cls is cls and component.provider.dist == "labnet-docs-example"
    run = types.SimpleNamespace(stop_reason=None)
    manager.hook.labnet_epoch_end(run=run, epoch=1, metrics={"val_accuracy": 0.5}, model=None, optimizer=None)
    assert run.stop_reason is None
    manager.hook.labnet_epoch_end(run=run, epoch=2, metrics={"val_accuracy": 0.995}, model=None, optimizer=None)
    assert "0.995" in run.stop_reason


def test_the_documented_optimizer_passes_the_checks_and_the_lr_hook_logs(module):
    from labnet.testing import HookRecorder, fresh_manager
    from labnet.testing.contracts import check_optimizer

    rows = check_optimizer(module.Lion, "lion")
    assert [(check, result) for check, result, _, _ in rows if result != "PASS"] == [], rows
    manager = fresh_manager(builtins=False)
    manager.register(module.LearningRateLog(), "lrlog", Provider("lrlog", "labnet-docs-example", "0.0"))
    metrics = {}
    with HookRecorder(manager) as recorder:
        manager.hook.labnet_epoch_end(run=None, epoch=1, metrics=metrics, model=None, optimizer=module.Lion(lr=3e-4))
    assert metrics == {"lr": 3e-4} and recorder.names() == ["labnet_epoch_end"]
