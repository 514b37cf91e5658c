"""Training health: per-layer gradient norms, update/weight ratios and dead ReLU units, each epoch.

A built-in lifecycle plugin like the MLflow tracker (config group ``health``; ``health=off``
switches it off, ``plugins.block=[health]`` blocks it). At each epoch's end it adds to
``metrics``, so the tracker logs them in the same batch as the rest:

- ``health/layer<i>_<type>/grad_norm``: norm of the layer's gradient after the epoch's last step;
- ``health/layer<i>_<type>/update_ratio``: norm of the parameters' change over the epoch divided
  by their norm at the epoch's start (a per-epoch figure: the familiar ~1e-3 rule of thumb is per
  step; a layer far below the others barely learns, one near 1 or above is being thrown around);
- ``health/layer<i>_relu/dead_fraction``: the fraction of a ReLU layer's units that output zero
  for every sample of a fixed probe batch (the first ``probe_size`` training samples, one
  forward pass in evaluation mode).

The cost per epoch is one copy of the flat parameter buffer, a few norms and one forward pass
of the probe batch; nothing runs per step. With ``histograms=true`` it also writes the book's
figure, a histogram of each hidden activation layer's outputs on the probe batch, to
``<output_dir>/health/activations_epoch<N>.png`` at ``histogram_epochs`` and the last epoch, and
lists the files in ``run.info["artifacts"]`` for the tracker to log.

Parameters that became NaN or infinite stop the run with a :class:`TrainingError` naming the
layer (:func:`diagnose_non_finite`), which the trainer's own divergence error uses too.
A layer counts as an activation (for histograms) if its ``name`` is in :data:`ACTIVATIONS` or its
class sets ``is_activation = True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labnet import hookimpl
from labnet.errors import ConfigError, TrainingError

#: layer names whose outputs are a hidden layer's activations (histograms)
ACTIVATIONS = frozenset({"relu", "sigmoid", "tanh", "swish", "leaky_relu", "elu", "gelu"})


@dataclass
class HealthOptions:
    """The ``health`` config group (conf/health/on.yaml); no ``health`` node means these defaults."""

    enabled: bool = True
    probe_size: int = 256
    histograms: bool = False
    histogram_epochs: list[int] = field(default_factory=lambda: [1])

    @classmethod
    def from_cfg(cls, cfg) -> HealthOptions:
        node = cfg.get("health") if cfg is not None and hasattr(cfg, "get") else None
        if node is None:
            return cls()
        if hasattr(node, "items"):
            from omegaconf import DictConfig, OmegaConf

            values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        else:
            raise ConfigError(f"health={node!r}: use health=on or health=off")
        valid = list(cls.__dataclass_fields__)
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(f"unknown key health.{unknown[0]}; valid keys: {', '.join(valid)}")
        options = cls(**values)
        for key in ("enabled", "histograms"):
            if not isinstance(getattr(options, key), bool):
                raise ConfigError(f"health.{key}={getattr(options, key)!r}: use true or false")
        size = options.probe_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"health.probe_size={size!r}: use an integer >= 1")
        epochs = options.histogram_epochs
        if epochs is None:
            options.histogram_epochs = []
        elif not isinstance(epochs, (list, tuple)) or not all(
            isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in epochs
        ):
            raise ConfigError(f"health.histogram_epochs={epochs!r}: use a list of epoch numbers >= 1, e.g. [1, 10]")
        return options


def layer_label(index: int, layer) -> str:
    """``layer0_affine``: the metric-name part for one layer."""
    return f"layer{index}_{getattr(layer, 'name', '') or type(layer).__name__.lower()}"


def _describe(index: int, layer) -> str:
    return f"layer {index} ({getattr(layer, 'name', '') or type(layer).__name__})"


def is_activation(layer) -> bool:
    """For a layer or a layer class (``model.activation`` accepts these)."""
    cls = layer if isinstance(layer, type) else type(layer)
    return getattr(layer, "name", "") in ACTIVATIONS or getattr(cls, "is_activation", False) is True


def _flat_ranges(model) -> dict[int, list[tuple[int, int]]]:
    """Per layer index, the (start, stop) ranges its parameters occupy in ``model.flat_params``."""
    flat = model.flat_params
    base, itemsize = flat.__array_interface__["data"][0], flat.itemsize
    ranges: dict[int, list[tuple[int, int]]] = {}
    for index, layer in enumerate(model.layers):
        for p in layer.params.values():
            if p.size == 0:
                continue
            if not np.may_share_memory(p, flat) or not p.flags.c_contiguous:
                continue  # not a view into the flat buffer (a layer that rebinds params): not tracked
            start = (p.__array_interface__["data"][0] - base) // itemsize
            ranges.setdefault(index, []).append((start, start + p.size))
    return ranges


def _norm(flat: np.ndarray, spans: list[tuple[int, int]]) -> float:
    """Euclidean norm of ``flat[a:b]`` over ``spans``; exact (scaled, float64) where the plain sum overflows."""
    with np.errstate(over="ignore", invalid="ignore"):
        squares = sum(float(np.dot(flat[a:b], flat[a:b])) for a, b in spans)
    if math.isfinite(squares):
        return math.sqrt(squares)
    parts = np.concatenate([flat[a:b] for a, b in spans]).astype(np.float64)
    scale = float(np.max(np.abs(parts)))
    if not math.isfinite(scale) or scale == 0.0:
        return scale
    parts /= scale
    return scale * math.sqrt(float(np.dot(parts, parts)))


def probe_forward(model, x: np.ndarray, keep: set[int], stop: int) -> dict[int, np.ndarray]:
    """Evaluation-mode forward of ``x`` through layers 0..stop; the outputs of the layers in ``keep``.

    The returned arrays are the layers' own (reused) output buffers: use them before the next forward.
    """
    outputs = {}
    h = x
    for index, layer in enumerate(model.layers[: stop + 1]):
        h = layer.forward(h, False)
        if index in keep:
            outputs[index] = h
    return outputs


def dead_fractions(model, x: np.ndarray) -> dict[int, float]:
    """Per ReLU layer index: the fraction of its units that are zero for every sample of ``x``."""
    relus = [i for i, layer in enumerate(model.layers) if getattr(layer, "name", "") == "relu"]
    if not relus:
        return {}
    with np.errstate(all="ignore"):
        outputs = probe_forward(model, x, set(relus), relus[-1])
    return {i: float(1.0 - np.count_nonzero(out.any(axis=0)) / out[0].size) for i, out in outputs.items()}


class HealthMonitor:
    """The health state of one run: parameters at the epoch's start, the probe batch, layer ranges."""

    def __init__(self, model, options: HealthOptions, probe_x=None, probe_y=None, output_dir: Path | None = None):
        self.model, self.options = model, options
        self.probe_x, self.probe_y = probe_x, probe_y
        self.output_dir = Path(output_dir) if output_dir is not None else Path.cwd()
        self.ranges = _flat_ranges(model)
        self.labels = {i: layer_label(i, layer) for i, layer in enumerate(model.layers)}
        self.relus = [i for i, layer in enumerate(model.layers) if getattr(layer, "name", "") == "relu"]
        last = len(model.layers) - 1
        self.activations = [i for i, layer in enumerate(model.layers) if i < last and is_activation(layer)]
        self.start = model.flat_params.copy()
        self.delta = np.empty_like(self.start)
        self.drawn: set[int] = set()

    # -- per epoch ----------------------------------------------------------------------------
    def epoch_end(self, run, epoch: int, metrics: dict[str, float], model) -> None:
        """Add this epoch's ``health/...`` entries to ``metrics``, in layer order. ``model``: the weights the
        epoch ended with (the hook's; with trainer.eval_background a copy, while the run's model trains on)."""
        flat, grads = model.flat_params, model.flat_grads
        if not (np.isfinite(flat).all() and np.isfinite(grads).all()):
            self._stop_non_finite(run, epoch, model)
        dead: dict[int, float] = {}
        draw = self.options.histograms and epoch in self.options.histogram_epochs
        keep = set(self.relus) | (set(self.activations) if draw else set())
        if self.probe_x is not None and keep:
            with np.errstate(all="ignore"):
                outputs = probe_forward(model, self.probe_x, keep, max(keep))
            for i in self.relus:
                out = outputs[i]
                dead[i] = float(1.0 - np.count_nonzero(out.any(axis=0)) / out[0].size)
            if draw:
                self.draw_histograms(run, epoch, {i: outputs[i] for i in self.activations})
        np.subtract(flat, self.start, out=self.delta)
        for index in range(len(model.layers)):
            prefix = f"health/{self.labels[index]}/"
            spans = self.ranges.get(index)
            if spans:
                w = _norm(self.start, spans)
                if w == 0.0:  # a layer that started at zero: relative to where it is now
                    w = _norm(flat, spans)
                metrics[prefix + "grad_norm"] = _norm(grads, spans)
                metrics[prefix + "update_ratio"] = _norm(self.delta, spans) / w if w > 0 else 0.0
            if index in dead:
                metrics[prefix + "dead_fraction"] = dead[index]
        np.copyto(self.start, flat)

    def run_end(self, run, status: str) -> None:
        """With histograms on, draw the last epoch's (if not drawn yet) once training finished."""
        if not self.options.histograms or status != "FINISHED" or run.epoch < 1 or run.epoch in self.drawn:
            return
        if self.probe_x is None or not self.activations:
            return
        with np.errstate(all="ignore"):
            outputs = probe_forward(self.model, self.probe_x, set(self.activations), max(self.activations))
        self.draw_histograms(run, run.epoch, outputs)

    # -- histograms ---------------------------------------------------------------------------
    def draw_histograms(self, run, epoch: int, outputs: dict[int, np.ndarray]) -> Path | None:
        """The book's figure: one histogram per hidden activation layer; the PNG is listed as an artifact."""
        self.drawn.add(epoch)
        if not outputs:
            return None
        from labnet.figures import pyplot

        plt = pyplot()
        folder = self.output_dir / "health"
        folder.mkdir(parents=True, exist_ok=True)
        width = max(4.0, 2.6 * len(outputs) + 0.6)
        fig, axes = plt.subplots(1, len(outputs), figsize=(width, 2.9), squeeze=False)
        for ax, (index, out) in zip(axes[0], sorted(outputs.items()), strict=True):
            values = np.asarray(out, dtype=np.float64).ravel()
            values = values[np.isfinite(values)]
            layer = self.model.layers[index]
            bounded = getattr(layer, "name", "") == "sigmoid"
            ax.hist(values, bins=30, range=(0.0, 1.0) if bounded else None, color="tab:blue")
            ax.set_title(_describe(index, layer), fontsize=9)
            ax.tick_params(labelsize=7)
            if ax is not axes[0][0]:
                ax.set_yticks([])
        fig.suptitle(f"activations on {len(self.probe_x)} probe samples, epoch {epoch}", fontsize=10)
        fig.tight_layout()
        path = folder / f"activations_epoch{epoch}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        run.info.setdefault("artifacts", []).append(path)
        return path

    # -- divergence ---------------------------------------------------------------------------
    def _stop_non_finite(self, run, epoch: int, model) -> None:
        optimizer = run.optimizer
        lr = f" with {optimizer.name} lr={optimizer.lr}" if optimizer is not None else ""
        loss = run.loss
        diagnosis = (
            diagnose_non_finite(model, loss, self.probe_x, self.probe_y)
            if self.probe_x is not None and loss is not None
            else _non_finite_params(model)
        )
        raise TrainingError(
            f"the parameters or gradients became non-finite in epoch {epoch} (by step {run.step}){lr}: "
            f"{diagnosis}; the run diverged: lower optimizer.lr"
        )


# --------------------------------------------------------------------------- diagnosis


def _non_finite_params(model) -> str:
    largest, where = 0.0, ""
    for index, layer in enumerate(model.layers):
        for key, p in layer.params.items():
            if p.size == 0:
                continue
            bad = p.size - int(np.count_nonzero(np.isfinite(p)))
            if bad:
                return (
                    f"the first layer with non-finite parameters is {_describe(index, layer)}: "
                    f"{key} has {bad} non-finite of {p.size} values"
                )
            magnitude = float(np.max(np.abs(p)))
            if magnitude > largest:
                largest, where = magnitude, f" in {_describe(index, layer)} {key}"
    return f"all parameters are finite (largest magnitude {largest:.3g}{where})"


def _first_non_finite_step(model, loss, x: np.ndarray, y: np.ndarray) -> str:
    if not np.isfinite(x).all():
        return "the input batch holds non-finite values"
    h = x
    for index, layer in enumerate(model.layers):
        h = layer.forward(h, True)
        if not np.isfinite(h).all():
            return f"{_describe(index, layer)} produced a non-finite value in forward"
    name = getattr(loss, "name", "") or type(loss).__name__
    if not math.isfinite(loss.forward(h, y)):
        return f"the loss ({name}) produced a non-finite value in forward from finite scores"
    d = loss.backward()
    if not np.isfinite(d).all():
        return f"the loss ({name}) produced a non-finite value in backward"
    for index in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[index]
        d = layer.backward(d)
        grads_ok = all(np.isfinite(g).all() for g in layer.grads.values())
        if not grads_ok or (d is not None and not np.isfinite(d).all()):
            return f"{_describe(index, layer)} produced a non-finite value in backward"
        if d is None:
            break
    return "a re-run of the batch stayed finite in forward and backward (the update step itself overflowed?)"


def diagnose_non_finite(model, loss, x: np.ndarray, y: np.ndarray) -> str:
    """Where a non-finite value first appears: re-runs one forward and backward on copies of ``x`` and
    ``y``, layer by layer, and names the first layer whose output (forward) or gradient (backward) is
    not finite, plus the first layer whose parameters are already non-finite.

    Returns e.g. ``"layer 2 (affine) produced a non-finite value in forward; the first layer with
    non-finite parameters is layer 2 (affine): W has 3 non-finite of 2500 values"``. Gradients are
    overwritten; random generators and layer buffers (batch-norm statistics) are restored. Never raises:
    it is called while a run is failing.
    """
    rngs = {id(r): (r, r.bit_generator.state) for layer in model.layers if (r := getattr(layer, "rng", None))}
    buffers = [(layer.buffers, {k: v.copy() for k, v in layer.buffers.items()}) for layer in model.layers]
    try:
        with np.errstate(all="ignore"):
            where = _first_non_finite_step(model, loss, np.array(x, copy=True), np.array(y, copy=True))
            return f"{where}; {_non_finite_params(model)}"
    except Exception as err:  # must not hide the error being reported
        return f"the diagnosis failed ({type(err).__name__}: {err}); {_non_finite_params(model)}"
    finally:
        for rng, state in rngs.values():
            rng.bit_generator.state = state
        for store, saved in buffers:
            for k, v in saved.items():
                store[k][...] = v


# --------------------------------------------------------------------------- hooks


@hookimpl
def labnet_run_start(run, cfg, model):
    options = HealthOptions.from_cfg(cfg)
    if not options.enabled or getattr(model, "flat_params", None) is None:
        return
    data = run.data
    probe_x = probe_y = None
    if data is not None and len(data.train):
        probe_x, probe_y = data.train.x[: options.probe_size], data.train.y[: options.probe_size]
    run.info["health"] = HealthMonitor(model, options, probe_x, probe_y, run.output_dir)


@hookimpl
def labnet_epoch_end(run, epoch, metrics, model):
    monitor: Any = run.info.get("health")
    if monitor is not None:
        monitor.epoch_end(run, epoch, metrics, model)


@hookimpl
def labnet_checkpoint(run):
    monitor: Any = run.info.get("health")
    if monitor is not None:
        return {"health/epoch_start": monitor.start}  # the update ratio of the epoch under way counts from here
    return None


@hookimpl
def labnet_resume(run, state):
    monitor: Any = run.info.get("health")
    start = state.get("health/epoch_start")
    if monitor is not None and start is not None and start.shape == monitor.start.shape:
        np.copyto(monitor.start, start)


@hookimpl
def labnet_run_end(run, status):
    monitor: Any = run.info.get("health")
    if monitor is not None:
        monitor.run_end(run, status)
