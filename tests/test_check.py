"""`labnet plugins check`: every built-in passes its contract checks, a plugin layer with a wrong
backward (tests/plugins/labnet-badgrad, pip-installed into a temporary folder as in
test_plugins.py) fails by name, a data set without its files is SKIPPED, `--json` parses and the
exit code says whether anything failed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import labnet
from labnet.cli.check import check_command
from labnet.errors import ConfigError
from labnet.nn.layer import Layer
from labnet.nn.layers import Affine
from labnet.nn.optimizers import SGD, Optimizer
from labnet.plugins import Provider, get_plugin_manager, get_registry
from labnet.testing.contracts import CheckResult, run_checks

pytestmark = pytest.mark.xdist_group("check")  # one worker: plugins pip-installed once

REPO = Path(__file__).resolve().parents[1]

CHECKS = {
    "layer": {"gradcheck", "gradcheck (eval)", "modes"},
    "loss": {"gradcheck (labels)", "gradcheck (one-hot)"},
    "optimizer": {"zero gradient", "state_dict", "state slots", "weight decay"},
    "dataset": {"load", "same seed", "shapes", "dtypes", "labels"},
}


# --------------------------------------------------------------------------- installing labnet-badgrad


@pytest.fixture(scope="module")
def badgrad(tmp_path_factory, install_test_plugins):
    """labnet-badgrad installed for this module; yields its site-packages folder."""
    with install_test_plugins(["labnet-badgrad"], tmp_path_factory.mktemp("badgrad")) as target:
        yield target


def by_check(results: list[CheckResult]) -> dict[tuple[str, str], CheckResult]:
    return {(r.component, r.check): r for r in results}


# --------------------------------------------------------------------------- the built-ins


@pytest.fixture(scope="module")
def builtin_results(builtin_components):
    names = [n for names in builtin_components.values() for n in names]
    return run_checks(get_registry(get_plugin_manager()), names)


def test_every_builtin_passes(builtin_components, builtin_results):
    seen = {(r.kind, r.component): set() for r in builtin_results}
    for r in builtin_results:
        seen[(r.kind, r.component)].add(r.check)
        assert r.provider == f"labnet {labnet.__version__}", r
        if (r.component, r.result) == ("fashion_mnist", "SKIP"):
            continue  # its files are not in the shared data folder (see the next test)
        assert r.result == "PASS", r
        if r.check.startswith("gradcheck"):
            assert r.error is not None and r.error < 1e-6, r
    for kind, names in builtin_components.items():
        for name in names:
            if name != "fashion_mnist":
                assert seen[(kind, name)] == CHECKS[kind], (kind, name)


def test_gradcheck_reports_every_parameter_and_the_input(builtin_results):
    detail = by_check(builtin_results)[("affine", "gradcheck")].detail
    assert detail.startswith("input: ") and "W: " in detail and "b: " in detail, detail


def test_a_dataset_without_its_files_is_skipped_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("LABNET_DATA_DIR", str(tmp_path))
    results = run_checks(get_registry(get_plugin_manager()), ["mnist", "fashion_mnist", "spiral"])
    rows = by_check(results)
    for name, folder in (("mnist", "mnist"), ("fashion_mnist", "fashion_mnist")):
        assert [r.check for r in results if r.component == name] == ["load"]
        skipped = rows[(name, "load")]
        assert skipped.result == "SKIP", skipped
        assert str(tmp_path / folder) in skipped.detail and "train-images-idx3-ubyte.gz" in skipped.detail
    assert rows[("spiral", "labels")].result == "PASS"
    assert check_command(["mnist", "spiral"]) == 0, "a SKIP is not a failure"


def test_mnist_is_checked_when_its_files_are_present(builtin_results):
    rows = by_check(builtin_results)
    assert rows[("mnist", "load")].result == "PASS"
    assert "input_shape (784,), 10 classes" in rows[("mnist", "load")].detail


# --------------------------------------------------------------------------- failing components


def test_the_bad_plugin_fails_by_name(badgrad):
    registry = get_registry(get_plugin_manager())
    assert registry.component("layer", "bad_scale").provider.dist == "labnet-badgrad"
    rows = by_check(run_checks(registry, ["bad_scale", "affine"]))
    bad = rows[("bad_scale", "gradcheck")]
    assert bad.result == "FAIL" and bad.provider == "labnet-badgrad 0.0.2"
    assert bad.error == pytest.approx(0.2, rel=1e-6)  # |1.5 - 1| / (1.5 + 1): the input gradient misses s
    assert "input" in bad.detail and "backward is wrong" in bad.detail
    assert "s: " in bad.detail and " s," not in bad.detail.split("(")[0], "the parameter gradient is right"
    assert rows[("bad_scale", "modes")].result == "PASS"
    assert rows[("affine", "gradcheck")].result == "PASS"


def test_labnet_plugins_check_exits_1_naming_the_bad_plugin(badgrad, tmp_path, cli):
    result = cli(tmp_path, "plugins", "check", "bad_scale", "relu", path=(badgrad,))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    failing = [line for line in lines if line[:1] == ["bad_scale"] and "FAIL" in line]
    assert failing and {"layer", "labnet-badgrad", "0.0.2", "gradcheck"} <= set(failing[0]), result.stdout
    assert any(line[:1] == ["relu"] and line[-1] == "PASS" for line in lines), result.stdout
    assert "2 failed" in result.stdout  # its backward is wrong in training and in evaluation mode


def test_labnet_plugins_check_json(badgrad, tmp_path, cli):
    result = cli(tmp_path, "plugins", "check", "--json", "bad_scale", "sgd", "spiral", path=(badgrad,))
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    rows = {(r["component"], r["check"]): r for r in data["results"]}
    assert rows[("bad_scale", "gradcheck")]["result"] == "FAIL"
    assert rows[("bad_scale", "gradcheck")]["provider"] == "labnet-badgrad 0.0.2"
    assert rows[("sgd", "state_dict")] | {"detail": ""} == {
        "component": "sgd",
        "kind": "optimizer",
        "provider": f"labnet {labnet.__version__}",
        "check": "state_dict",
        "result": "PASS",
        "error": 0.0,
        "detail": "",
    }
    assert rows[("bad_scale", "gradcheck (eval)")]["result"] == "FAIL"
    assert data["summary"]["FAIL"] == 2 and data["summary"]["PASS"] == len(data["results"]) - 2


def test_exit_codes(capsys, tmp_path, cli):
    assert check_command(["relu", "sgd", "logic_gates", "mse"]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "FAIL" not in out
    assert check_command(["no_such_layer"]) == 2
    err = capsys.readouterr().err
    assert "'no_such_layer'" in err and "affine" in err
    assert cli(tmp_path, "plugins", "check", "relu", "--json").returncode == 0


# --------------------------------------------------------------------------- the example_args convention


class NeedsUnits(Layer):
    name = "needs_units"

    def __init__(self, units: int) -> None:
        super().__init__()
        self.affine = Affine(units)

    def build(self, input_shape, rng, dtype):
        out = self.affine.build(input_shape, rng, dtype)
        super().build(input_shape, rng, dtype)
        self.params, self.grads = self.affine.params, self.affine.grads
        return out

    def forward(self, x, train=True):
        return self.affine.forward(x, train)

    def backward(self, dout):
        return self.affine.backward(dout)


class DeclaresUnits(NeedsUnits):
    name = "declares_units"
    example_args = {"units": 3}
    example_input_shape = (2, 5)


class DriftingSgd(SGD):
    """Moves the parameters on a zero gradient."""

    name = "drifting_sgd"

    def update(self, key, p, g):
        p -= self.lr * (g + 1.0)


class NoDecay(Optimizer):
    name = "no_decay"

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__(lr)

    def update(self, key, p, g):
        p -= self.lr * g


class InlinePlugin:
    @labnet.hookimpl
    def labnet_layers(self):
        return [NeedsUnits, DeclaresUnits]

    @labnet.hookimpl
    def labnet_optimizers(self):
        return [DriftingSgd, NoDecay]


@pytest.fixture
def inline_registry(pm):
    pm.register(InlinePlugin(), "inline", Provider("inline", "inline-dist", "1.0"))
    try:
        yield get_registry(pm)
    finally:
        pm.unregister("inline")


def test_a_layer_needing_arguments_must_declare_example_args(inline_registry):
    rows = by_check(run_checks(inline_registry, ["needs_units", "declares_units"]))
    missing = rows[("needs_units", "build")]
    assert missing.result == "FAIL" and missing.provider == "inline-dist 1.0"
    assert "units" in missing.detail and "example_args" in missing.detail
    # declared: built with units=3 on samples of shape (2, 5), which an affine refuses
    declared = rows[("declares_units", "gradcheck")]
    assert declared.result == "FAIL" and "ShapeError" in declared.detail, declared


class TrainingCacheScale(Layer):
    """y = 3x in training, 2x at evaluation; backward multiplies by the factor the last training forward
    cached, the mistake batch norm made: right in training, wrong after an evaluation forward."""

    name = "training_cache_scale"

    def forward(self, x, train=True):
        if train:
            self.factor = 3.0
        return x * (self.factor if train else 2.0)

    def backward(self, dout):
        return dout * self.factor


def test_a_backward_that_ignores_evaluation_mode_fails_the_eval_gradcheck(pm):
    class Plugin:
        @labnet.hookimpl
        def labnet_layers(self):
            return [TrainingCacheScale]

    pm.register(Plugin(), "cacher", Provider("cacher", "cacher-dist", "0.1"))
    try:
        rows = by_check(run_checks(get_registry(pm), ["training_cache_scale"]))
    finally:
        pm.unregister("cacher")
    assert rows[("training_cache_scale", "gradcheck")].result == "PASS"
    failed = rows[("training_cache_scale", "gradcheck (eval)")]
    assert failed.result == "FAIL" and failed.error > 1e-2 and "input" in failed.detail, failed


def test_optimizer_checks_catch_a_drifting_update(inline_registry):
    rows = by_check(run_checks(inline_registry, ["drifting_sgd", "no_decay"]))
    assert rows[("drifting_sgd", "zero gradient")].result == "FAIL"
    assert rows[("drifting_sgd", "zero gradient")].error == pytest.approx(3 * 0.01)
    assert rows[("drifting_sgd", "state_dict")].result == "PASS"
    assert rows[("no_decay", "weight decay")].result == "SKIP"
    assert rows[("no_decay", "zero gradient")].result == "PASS"


def test_a_constructor_error_is_a_failure_not_a_crash(pm):
    class Refuses(Layer):
        name = "refuses"

        def __init__(self) -> None:
            raise ConfigError("refuses: cannot be built")

    class Plugin:
        @labnet.hookimpl
        def labnet_layers(self):
            return [Refuses]

    pm.register(Plugin(), "refuser", Provider("refuser", "refuser-dist", "0.1"))
    try:
        results = run_checks(get_registry(pm), ["refuses"])
    finally:
        pm.unregister("refuser")
    assert {r.result for r in results} == {"FAIL"}
    assert all("cannot be built" in r.detail for r in results), results


def test_the_checks_leave_numpy_error_state_alone():
    before = np.geterr()
    run_checks(get_registry(get_plugin_manager()), ["softmax"])
    assert np.geterr() == before
