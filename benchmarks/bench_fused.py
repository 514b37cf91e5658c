"""A fused sweep against the same sweep run job by job, whole commands: the 12-job grid of issue 20.

    LABNET_DATA_DIR=/path/to/data python benchmarks/bench_fused.py [--repeats 3] [--epochs 6] [--tracking both]

    e.g. in-process fused groups against the same groups on two workers (two groups of 12, 10,000 images):
    python benchmarks/bench_fused.py --launchers fused fused_jobs2 --tracking none --epochs 2 \\
        --extra trainer.batch_size=50,100 dataset.val_size=50000

    python -m labnet -m +experiment=mnist_two_layer optimizer=sgd,momentum,adagrad,adam \\
        optimizer.lr=0.001,0.01,0.1 trainer.epochs=6 [tracking=none]  + one of
    fused:       hydra/launcher=labnet_fused      (stacked models in the launching process, one per core)
    fused1:      ... hydra.launcher.stacks=1      (one stacked model, one thread; only with --launchers)
    fused_jobs2: ... hydra.launcher.n_jobs=2      (the fused groups in two worker processes, one stack each; only
                 with --launchers, and only worth it with two groups or more: --extra trainer.batch_size=50,100)
    sequential:  hydra/launcher=labnet_basic      (labnet's default launcher: each job composed once, 12 runs in turn)
    hydra_basic: hydra/launcher=hydra_basic       (Hydra's own: each job composed twice; only with --launchers)
    joblib:      hydra/launcher=joblib hydra.launcher.n_jobs=2   (12 runs, two processes at a time)

Each repeat runs the three commands in a rotating order, each in a fresh folder (with tracking: its own SQLite
MLflow store, so no job is skipped as already finished), timing the whole command from start to exit. Prints each
command's seconds per repeat, the ratios of each command to fused within each repeat (median and range), each
member's test accuracy beside its separate (sequential) run's, and where the sequential sweep's time goes: each
job's training (its epochs' ``epoch_seconds``), the rest of its run (start_time to end_time: data, model,
evaluation, checkpoints, results) and what lies between runs (composing the job, Hydra's run_job, start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GRID = [
    "-m",
    "+experiment=mnist_two_layer",
    "optimizer=sgd,momentum,adagrad,adam",
    "optimizer.lr=0.001,0.01,0.1",
]
LAUNCHERS = {
    "fused": ["hydra/launcher=labnet_fused"],
    "fused1": ["hydra/launcher=labnet_fused", "hydra.launcher.stacks=1"],
    "fused_jobs2": ["hydra/launcher=labnet_fused", "hydra.launcher.n_jobs=2"],
    "sequential": ["hydra/launcher=labnet_basic"],
    "hydra_basic": ["hydra/launcher=hydra_basic"],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="rounds of the three commands, in rotating order")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--tracking", choices=("none", "mlflow", "both"), default="both")
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for every command (e.g. to shrink it)")
    p.add_argument(
        "--launchers",
        nargs="+",
        default=["fused", "sequential", "joblib"],
        choices=list(LAUNCHERS),
        help="the commands to compare (fused first: the ratios are to it)",
    )
    return p.parse_args(argv)


def run_command(launcher: str, tracking: str, epochs: int, extra: list[str]) -> tuple[float, float, dict[int, dict]]:
    """Seconds the whole command took, the CPU seconds its processes used (user + system: what a loaded
    machine changes least) and each job's result.json."""
    with tempfile.TemporaryDirectory(prefix=f"bench-fused-{launcher}-") as tmp:
        cwd = Path(tmp)
        args = [*GRID, f"trainer.epochs={epochs}", *LAUNCHERS[launcher], *extra]
        args.append("tracking=none" if tracking == "none" else f"tracking.uri=sqlite:///{cwd / 'mlflow.db'}")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
        env.pop("MLFLOW_TRACKING_URI", None)
        start, cpu = time.perf_counter(), _children_cpu()
        proc = subprocess.run([sys.executable, "-m", "labnet", *args], cwd=cwd, env=env, capture_output=True, text=True)
        seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
        if proc.returncode != 0:
            sys.exit(f"{launcher} ({tracking}) failed:\n{proc.stderr[-3000:]}")
        results = {}
        for path in cwd.glob("multirun/*/*/*/result.json"):
            result = json.loads(path.read_text())
            results[int(result["job"])] = result
        return seconds, cpu, results


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (range {min(values):.2f}-{max(values):.2f}, n={len(values)})"


def breakdown(seconds: float, results: dict[int, dict]) -> str:
    """Per job of a sequential sweep: training, the rest of its run, and the time between runs (the
    command's wall time not inside any run, start-up included, spread over the jobs)."""
    n = len(results)
    train = sum(sum(h.get("epoch_seconds", 0.0) for h in r["history"]) for r in results.values()) / n
    in_run = sum(r["end_time"] - r["start_time"] for r in results.values()) / n - train
    between = seconds / n - train - in_run
    return (
        f"per job: training {train:.2f} s, rest of the run {in_run:.2f} s, between runs {between:.2f} s; "
        f"outside training {(in_run + between) / train:.2f}x the training time"
    )


def bench(tracking: str, args) -> None:
    names = list(args.launchers)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    last: dict[str, dict[int, dict]] = {}
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            s, c, last[name] = run_command(name, tracking, args.epochs, args.extra)
            seconds[name].append(s)
            cpu[name].append(c)
            load = os.getloadavg()[0]
            print(f"  [{tracking}] repeat {r + 1}: {name:10s} {s:7.1f} s, CPU {c:6.1f} s (load {load:.1f})", flush=True)
            if name in ("sequential", "hydra_basic"):
                print(f"      {breakdown(s, last[name])}", flush=True)
    print(f"\ntracking={tracking}: seconds per whole command")
    for name in names:
        print(f"  {name:10s} {spread(seconds[name])}; CPU seconds {spread(cpu[name])}")
    for other in names[1:]:
        ratios = [o / f for o, f in zip(seconds[other], seconds[names[0]], strict=True)]
        print(f"  {other} / {names[0]}: {spread(ratios)}")
    print(f"\ntracking={tracking}: test accuracy, fused member vs its separate run (last repeat)")
    if "sequential" not in last:
        return
    fused, separate = last[names[0]], last["sequential"]
    worst = 0.0
    for job in sorted(separate):
        p = separate[job]["params"]
        a = fused[job]["metrics"].get("test_accuracy", float("nan"))
        b = separate[job]["metrics"].get("test_accuracy", float("nan"))
        worst = max(worst, abs(a - b))
        print(f"  job {job:2d} {p['optimizer.name']:8s} lr={p['optimizer.lr']:<6g} fused {a:.4f}  separate {b:.4f}")
    print(f"  largest difference: {100 * worst:.2f} points")


def main(argv=None) -> None:
    args = parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {os.getloadavg()}")
    for tracking in ("none", "mlflow") if args.tracking == "both" else (args.tracking,):
        bench(tracking, args)
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
