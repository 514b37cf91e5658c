"""Fused conv sweeps: k members of labnet-conv's SimpleConvNet trained as one stacked model against member by member.

    LABNET_DATA_DIR=/path/to/data python benchmarks/bench_fused_conv.py [--members 4] [--repeats 5]
        [--train-samples 3000] [--threads 1 2]

The members are the first k of the grid optimizer (adam, sgd, momentum, adagrad) x lr (0.001, 0.01) of
``+experiment=mnist_convnet`` (conv 30x5x5 -> ReLU -> max pool 2 -> affine 100 -> ReLU -> affine 10, batch 100,
one seed: the members share every minibatch), float32, one epoch on the first ``--train-samples`` training
images, no validation split (nothing is evaluated). Each repeat trains the epoch stacked (FusedGroup) and member by
member (each member's single-run Trainer, in this process), the order alternating between repeats. Timed: each
trainer's ``epoch_seconds`` (the training loop's wall time) and the CPU seconds of its ``fit`` (the steadier
figure on a shared machine at one BLAS thread; at two it adds both threads). For each BLAS thread count it prints
member steps per second per repeat, their medians and spread, the ratios stacked / member by member within each
repeat, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import labnet  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_fused_core import compose_members, truncated  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from labnet.fused.group import FusedGroup  # noqa: E402
from labnet.train.trainer import Run, Trainer  # noqa: E402

GRID = [(name, lr) for name in ("adam", "sgd", "momentum", "adagrad") for lr in (0.001, 0.01)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=4, help=f"k, at most {len(GRID)}")
    p.add_argument("--repeats", type=int, default=5, help="stacked / member-by-member pairs, alternating order")
    p.add_argument("--train-samples", type=int, default=3000, help="training images in the epoch")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="BLAS thread counts (threadpoolctl)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = p.parse_args(argv)
    if not 1 <= args.members <= len(GRID):
        p.error(f"--members {args.members}: must be 1 to {len(GRID)}")
    return args


def stacked_run(cfgs, samples: int) -> tuple[float, float, int]:
    """(wall seconds of the training loop, CPU seconds of fit, member steps) of one epoch trained stacked."""
    group = FusedGroup(cfgs)
    assert group.why_member_by_member is None, group.why_member_by_member
    truncated(group, samples)
    cpu = time.process_time()
    group.fit()
    cpu = time.process_time() - cpu
    return group.runs[0].history[0]["epoch_seconds"], cpu, group.runs[0].step * len(cfgs)


def one_by_one_run(cfgs, samples: int) -> tuple[float, float, int]:
    """The same for each member's single-run Trainer, one after another."""
    group = FusedGroup(cfgs)  # the members built exactly as their single runs (the same code path)
    truncated(group, samples)
    wall = cpu = 0.0
    steps = 0
    for j in range(len(cfgs)):
        trainer = Trainer(
            group.models[j], group.losses[j], group.optimizers[j], group.data[j], group.config, group.rngs[j]
        )
        run = Run(f"member{j}", Path("."))
        start = time.process_time()
        trainer.fit(run)
        cpu += time.process_time() - start
        wall += run.history[0]["epoch_seconds"]
        steps += run.step
    return wall, cpu, steps


def show(name: str, values: list[float], unit: str) -> None:
    median = statistics.median(values)
    if unit == "x":
        print(f"  {name:<34} median {median:.2f}x  (spread {min(values):.2f}-{max(values):.2f}, {len(values)} repeats)")
    else:
        print(f"  {name:<34} median {median:.1f} {unit}  (spread {min(values):.1f}-{max(values):.1f})")


def main(argv=None) -> int:
    args = parse_args(argv)
    # (dataset.val_size=0: nothing to evaluate, fit is the training loop)
    cfgs = compose_members("mnist_convnet", GRID[: args.members], args.dtype, "dataset.val_size=0")
    runs = {"stacked": stacked_run, "one by one": one_by_one_run}
    for threads in args.threads:
        load_before = os.getloadavg()[0]
        rates = {(which, clock): [] for which in runs for clock in ("wall", "cpu")}
        with threadpool_limits(limits=threads):
            for repeat in range(args.repeats):
                order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
                for which in order:
                    wall, cpu, steps = runs[which](cfgs, args.train_samples)
                    rates[which, "wall"].append(steps / wall)
                    rates[which, "cpu"].append(steps / cpu)
                    print(
                        f"  {threads} thread(s) repeat {repeat + 1} {which:<10} {steps / wall:6.1f} member steps/s "
                        f"(training {wall:.2f} s wall, {cpu:.2f} s CPU, load {os.getloadavg()[0]:.2f})",
                        flush=True,
                    )
        print(
            f"{args.members} members of mnist_convnet, {args.dtype}, {threads} BLAS thread(s), "
            f"{args.train_samples} images/epoch, load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}"
        )
        for clock in ("wall", "cpu"):
            stacked, single = rates["stacked", clock], rates["one by one", clock]
            show(f"stacked ({clock})", stacked, "member steps/s")
            show(f"member by member ({clock})", single, "member steps/s")
            show(f"stacked / member by member ({clock})", [a / b for a, b in zip(stacked, single, strict=True)], "x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
