"""Fused training per core: 12 members trained as one stacked model against 12 separate labnet Trainers.

    LABNET_DATA_DIR=/path/to/data python benchmarks/bench_fused_core.py [--repeats 3] [--train-samples 55000]

The 12-job grid of issue 20 (mnist_two_layer: 784-50-10 ReLU, init std 0.01, batch 100; optimizers sgd,
momentum, adagrad, adam x lr 0.001, 0.01, 0.1), float32, one BLAS thread (threadpoolctl). Each repeat trains
one epoch fused (FusedGroup) and one epoch of each of the 12 single runs (labnet.train.trainer.Trainer), the
order of the two alternating between repeats; only the training loops are timed (each trainer's
``epoch_seconds``: no start-up, data loading or evaluation). Prints steps per second (member steps: 12 per
fused step) per repeat, their medians and spread, and the ratio fused / separate within each repeat.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import labnet  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

from threadpoolctl import threadpool_limits  # noqa: E402

from labnet.data.base import DataSplits, Split  # noqa: E402
from labnet.fused.group import FusedGroup  # noqa: E402
from labnet.train.trainer import Run, Trainer  # noqa: E402

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")
LRS = (0.001, 0.01, 0.1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="fused / separate pairs, alternating order")
    p.add_argument("--train-samples", type=int, default=55_000, help="training images per epoch (55,000: all)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (threadpoolctl)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    return p.parse_args(argv)


def compose_members(experiment: str, grid, dtype: str, *extra: str):
    """One composed config per (optimizer, lr) of ``grid``: ``experiment`` for one epoch, untracked, in ``dtype``."""
    from hydra import compose, initialize_config_dir

    from labnet.config import config_dirs

    with initialize_config_dir(config_dir=str(config_dirs()[0]), version_base=None):
        return [
            compose(
                "config",
                overrides=[
                    "tracking=none",
                    "health=off",
                    f"+experiment={experiment}",
                    f"optimizer={name}",
                    f"optimizer.lr={lr}",
                    "trainer.epochs=1",
                    f"trainer.dtype={dtype}",
                    *extra,
                ],
            )
            for name, lr in grid
        ]


def compose_grid(dtype: str):
    return compose_members("mnist_two_layer", [(name, lr) for name in OPTIMIZERS for lr in LRS], dtype)


def truncated(group: FusedGroup, samples: int) -> None:
    """The group's training split cut to its first ``samples`` images (same object for members sharing it)."""
    cut: dict[int, DataSplits] = {}
    for j, data in enumerate(group.data):
        if id(data) not in cut:
            train = Split(data.train.x[:samples], data.train.y[:samples])
            cut[id(data)] = DataSplits(train, data.val, None, data.input_shape, data.num_classes)
        group.data[j] = cut[id(data)]


def fused_seconds(cfgs, samples: int) -> tuple[float, int]:
    group = FusedGroup(cfgs)
    truncated(group, samples)
    group.fit()
    steps = group.runs[0].step
    return group.runs[0].history[0]["epoch_seconds"], steps * len(cfgs)


def separate_seconds(cfgs, samples: int) -> tuple[float, int]:
    group = FusedGroup(cfgs)  # the members built exactly as their single runs (the same code path)
    truncated(group, samples)
    total, steps = 0.0, 0
    for j in range(len(cfgs)):
        trainer = Trainer(
            group.models[j], group.losses[j], group.optimizers[j], group.data[j], group.config, group.rngs[j]
        )
        run = Run(f"member{j}", Path("."))
        trainer.fit(run)
        total += run.history[0]["epoch_seconds"]
        steps += run.step
    return total, steps


def main(argv=None) -> int:
    args = parse_args(argv)
    cfgs = compose_grid(args.dtype)
    fused_sps, separate_sps, ratios = [], [], []
    with threadpool_limits(limits=args.threads):
        for repeat in range(args.repeats):
            order = ("fused", "separate") if repeat % 2 == 0 else ("separate", "fused")
            seconds = {}
            for which in order:
                start = time.perf_counter()
                fn = fused_seconds if which == "fused" else separate_seconds
                seconds[which] = fn(cfgs, args.train_samples)
                print(
                    f"  repeat {repeat + 1} {which:<8} {seconds[which][1] / seconds[which][0]:9.0f} member steps/s "
                    f"(training {seconds[which][0]:.2f} s, whole {time.perf_counter() - start:.1f} s)",
                    flush=True,
                )
            fused_sps.append(seconds["fused"][1] / seconds["fused"][0])
            separate_sps.append(seconds["separate"][1] / seconds["separate"][0])
            ratios.append(fused_sps[-1] / separate_sps[-1])

    def show(name, values, unit):
        spread = f"{min(values):.2f}-{max(values):.2f}" if unit == "x" else f"{min(values):.0f}-{max(values):.0f}"
        median = statistics.median(values)
        print(
            f"{name:<28} median {median:.2f}{unit}  (spread {spread}, {len(values)} repeats)"
            if unit == "x"
            else f"{name:<28} median {median:.0f} {unit}  (spread {spread}, {len(values)} repeats)"
        )

    print(
        f"12 members, mnist_two_layer, {args.dtype}, {args.threads} BLAS thread(s), {args.train_samples} images/epoch"
    )
    show("fused", fused_sps, "member steps/s")
    show("12 separate Trainers", separate_sps, "member steps/s")
    show("fused / separate", ratios, "x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
