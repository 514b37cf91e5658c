"""What training health (labnet.train.health) costs: training with health on and off, side by side.

    LABNET_DATA_DIR=/path/to/data python benchmarks/bench_health.py [--epochs 3] [--repeats 5]

The net is the book's TwoLayerNet on MNIST (784-50-10 ReLU, SGD lr 0.1, batch 100). Each repeat
trains once with health off and once on (the order alternating), from the same initial weights and
minibatch order, through the same hook relay as `python -m labnet` with tracking off and no
checkpoints. Printed: the wall time of each, the wall and CPU-time ratios per repeat and their
medians, and the time spent inside health's epoch-end hook measured directly: on a busy shared
machine the ratios swing by tens of percent either way, the hook time is what health adds.
Goal: at most 3% overhead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
try:
    import labnet  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

from labnet.build import build_model  # noqa: E402
from labnet.config import build_component  # noqa: E402
from labnet.plugins import Registry, get_plugin_manager  # noqa: E402
from labnet.runner import _HookRelay  # noqa: E402
from labnet.train import health  # noqa: E402
from labnet.train.trainer import Run, Trainer, TrainerConfig  # noqa: E402

MODEL = {"hidden_sizes": [50], "activation": "relu", "init": "std"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5, help="pairs of runs (off, on), order alternating")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1: steadier timings)")
    return p.parse_args(argv)


class HookTimer:
    """Wraps HealthMonitor.epoch_end to add up the seconds spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.original = health.HealthMonitor.epoch_end

    def __enter__(self):
        timer, original = self, self.original

        def timed(monitor, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(monitor, *args, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - t0

        health.HealthMonitor.epoch_end = timed
        return self

    def __exit__(self, *exc):
        health.HealthMonitor.epoch_end = self.original
        return False


def train_once(data, with_health: bool, epochs: int, seed: int, tmp: Path) -> tuple[float, float, float, dict]:
    """(wall seconds of fit, CPU seconds of fit, seconds inside health's hook, last epoch's metrics)."""
    block = ["mlflow_tracker"] + ([] if with_health else ["health"])
    manager = get_plugin_manager(block=block, entry_points=False)
    registry = Registry(manager)
    rng = np.random.default_rng(seed)
    model = build_model(MODEL, data, registry, rng, np.float32)
    loss = build_component(registry.get("loss", "softmax_cross_entropy"), "loss", {})
    optimizer = build_component(registry.get("optimizer", "sgd"), "optimizer", {"lr": 0.1})
    config = TrainerConfig(epochs=epochs, batch_size=100, progress=False, checkpoint_every=0)
    trainer = Trainer(model, loss, optimizer, data, config, rng, hook=_HookRelay(manager), checkpoint_path=None)
    run = Run(name="bench", output_dir=tmp)
    run.info.update(data=data, loss=loss, optimizer=optimizer)
    manager.call("labnet_run_start", run=run, cfg=None, model=model)
    with HookTimer() as timer:
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.fit(run)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, timer.seconds, run.history[-1]


def main(argv=None) -> int:
    args = parse_args(argv)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.threads):
        return bench(args)


def bench(args) -> int:
    registry = Registry(get_plugin_manager(entry_points=False))
    dataset = build_component(registry.get("dataset", "mnist"), "dataset", {"download": False})
    data = dataset.load(np.random.default_rng(args.seed))
    tmp = Path.cwd()
    print(
        f"784-50-10 ReLU, SGD lr 0.1, batch 100, {args.epochs} epochs of {len(data.train)} MNIST samples, "
        f"{args.threads} BLAS thread(s)"
    )
    train_once(data, True, 1, args.seed, tmp)  # warm-up: imports, BLAS, page faults
    ratios, cpu_ratios, hook_shares = [], [], []
    print(
        f"{'repeat':>6}  {'off (s)':>8}  {'on (s)':>8}  {'on/off':>7}  {'CPU on/off':>10}  "
        f"{'in hook (s)':>11}  {'hook share':>10}"
    )
    for r in range(args.repeats):
        order = (False, True) if r % 2 == 0 else (True, False)
        walls, cpus, hook, metrics = {}, {}, 0.0, {}
        for with_health in order:
            wall, cpu, in_hook, last = train_once(data, with_health, args.epochs, args.seed, tmp)
            walls[with_health], cpus[with_health] = wall, cpu
            if with_health:
                hook, metrics = in_hook, last
        ratios.append(walls[True] / walls[False])
        cpu_ratios.append(cpus[True] / cpus[False])
        hook_shares.append(hook / (walls[True] - hook))
        print(
            f"{r + 1:>6}  {walls[False]:>8.3f}  {walls[True]:>8.3f}  {ratios[-1]:>7.3f}  {cpu_ratios[-1]:>10.3f}  "
            f"{hook:>11.4f}  {hook_shares[-1]:>9.2%}"
        )
    print(f"median on/off ratio: wall {statistics.median(ratios):.3f}, CPU {statistics.median(cpu_ratios):.3f}")
    print(f"median time in health's hook: {statistics.median(hook_shares):.2%} of training (goal <= 3%)")
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("health/")}
    print(f"last epoch's health metrics: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
