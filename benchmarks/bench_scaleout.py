"""Sweep throughput: a 4-job sweep one job after another versus `hydra/launcher=joblib` with 2 jobs at a time.

    python benchmarks/bench_scaleout.py [--repeats 3] [--epochs 2] [--n-jobs 2] [--tracking none|mlflow] [overrides ...]

Each variant is the whole `python -m labnet -m +experiment=mnist_two_layer trainer.epochs=E optimizer.lr=...`
command, as a user runs it (start-up, data loading and the sweep's end included), in a fresh process, alternating
between variants. The sequential sweep runs with labnet's default BLAS threads (all cores but one) and with one
thread per core; the parallel one gets cores / n_jobs threads per job from labnet. Prints each repeat, the machine's
load average around it (the machine may be shared: a busy one makes every ratio worse) and the median throughput
ratio. Goal on 2 cores: >= 1.7x. It also measures how many cores two processes get at that moment (a pure-Python
loop, one process versus two at once): ~2 on an idle 2-core machine, ~1 when other work holds a core, and no sweep
can gain more than that.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LRS = ("0.05", "0.1", "0.15", "0.2", "0.25", "0.3", "0.35", "0.4")


def timed_sweep(cwd: Path, args: list[str]) -> tuple[float, float]:
    """Wall time of the sweep command, and the summed training time its jobs report."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("LABNET_DATA_DIR", str(REPO.parent / "shared" / "data"))
    env.setdefault("MPLBACKEND", "Agg")
    sweep_dir = Path(tempfile.mkdtemp(dir=cwd, prefix="sweep"))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "labnet", "-m", *args, f"hydra.sweep.dir={sweep_dir}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"sweep failed: {' '.join(args)}\n{proc.stderr[-2000:]}")
    train = 0.0
    for path in sweep_dir.glob("*/result.json"):
        train += sum(h.get("epoch_seconds", 0.0) for h in json.loads(path.read_text()).get("history", []))
    return elapsed, train


SPIN = "import time; t = time.perf_counter(); sum(range(30_000_000)); print(time.perf_counter() - t)"


def free_cores() -> float:
    """How many cores two processes get right now: ~2 on an idle 2-core machine, ~1 when others hold one."""
    one = float(subprocess.run([sys.executable, "-c", SPIN], capture_output=True, text=True).stdout)
    procs = [subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    both = max(float(p.communicate()[0]) for p in procs)
    return 2 * one / both


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:4.1f} (5 min {five:4.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=4, help="jobs in the sweep (learning rates)")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel jobs of the joblib launcher")
    parser.add_argument("--tracking", default="none", choices=("none", "mlflow"))
    parser.add_argument(
        "--skip-default-threads",
        action="store_true",
        help="leave out the sequential sweep with a BLAS thread per core (slow on a busy machine)",
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    import numpy  # noqa: F401  (loads BLAS, for threadpool_info)
    from threadpoolctl import threadpool_info

    blas = ", ".join(
        f"{i['internal_api']} {i.get('architecture', '')} {i['num_threads']} threads" for i in threadpool_info()
    )
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    print(f"{os.cpu_count()} cores; BLAS: {blas or 'none found'}; OPENBLAS_CORETYPE={coretype}")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        tracking = ["tracking=none"] if args.tracking == "none" else [f"tracking.uri=sqlite:///{cwd / 'mlflow.db'}"]
        base = [
            "+experiment=mnist_two_layer",
            f"trainer.epochs={args.epochs}",
            "trainer.checkpoint_every=0",
            f"optimizer.lr={','.join(LRS[: args.jobs])}",
            *tracking,
            *args.overrides,
        ]
        parallel = [*base, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"]
        print(f"two processes get {free_cores():.2f} cores now (the most parallel jobs can gain)", flush=True)
        print(f"{args.jobs} jobs of mnist_two_layer, {args.epochs} epochs each; warm-up...", flush=True)
        timed_sweep(cwd, [*base[:3], "optimizer.lr=0.1", "trainer.epochs=1", *tracking])
        cores = os.cpu_count() or 1
        variants = {
            f"sequential, all {cores} cores": [*base, f"trainer.threads={cores}"],
            "sequential (default threads)": base,
            f"joblib n_jobs={args.n_jobs}": parallel,
        }
        if args.skip_default_threads:
            del variants[f"sequential, all {cores} cores"]
        times: dict[str, list[float]] = {name: [] for name in variants}
        for i in range(args.repeats):
            before = load()
            for name, variant in variants.items():
                wall, train = timed_sweep(cwd, variant)
                times[name].append(wall)
                print(
                    f"repeat {i + 1}: {name:28s} {wall:6.1f} s  {args.jobs / wall:.3f} jobs/s  "
                    f"(training {train:5.1f} s summed over jobs)",
                    flush=True,
                )
            print(f"          [{before} -> {load()}; two processes get {free_cores():.2f} cores]", flush=True)
        parallel_name = f"joblib n_jobs={args.n_jobs}"
        for name in variants:
            if name != parallel_name:
                ratio = statistics.median(a / b for a, b in zip(times[name], times[parallel_name], strict=True))
                print(f"median throughput ratio, {parallel_name} / {name}: x{ratio:.2f}")


if __name__ == "__main__":
    main()
