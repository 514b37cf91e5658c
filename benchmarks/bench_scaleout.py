"""Sweep throughput: a 4-job sweep one job after another versus `hydra/launcher=joblib` with 2 jobs at a time.

    python benchmarks/bench_scaleout.py [--repeats 5] [--epochs 6] [--n-jobs 2] [--tracking none|mlflow] [overrides ...]

Each variant is the whole `python -m labnet -m +experiment=mnist_two_layer trainer.epochs=E optimizer.lr=...`
command, as a user runs it, in a fresh process, alternating between variants. The sequential sweep runs with
labnet's default BLAS threads (all cores but one) and with a thread per core; the parallel one gets
cores / n_jobs threads per job from labnet.

Each job writes its wall-clock start and end in its result.json, so a sweep splits into its start-up (Python,
Hydra composing the config, and for joblib loky starting its workers), its jobs (first job's start to the last
one's end) and its end. Two ratios are printed, medians over the repeats:

- throughput: jobs per second while the jobs run, what a sweep of many jobs gets. Goal on 2 cores: >= 1.7x.
- whole command: wall time of the 4-job sweep, where the start-up paid once per sweep weighs on short jobs.

The machine may be shared: it prints the load average around each repeat and how many cores two processes get
at that moment (a pure-Python loop, one process versus two at once): ~2 on an idle 2-core machine, ~1 when other
work holds a core, and no sweep can gain more than that.
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LRS = ("0.05", "0.1", "0.15", "0.2", "0.25", "0.3", "0.35", "0.4")


@dataclass
class SweepTiming:
    """One sweep command on a timeline: start-up before its first job, the jobs, and the end after the last."""

    wall: float
    startup: float  # command start -> first job's start (Python, Hydra's composes; joblib: spawning its workers)
    jobs: float  # first job's start -> last job's end: what the launcher's throughput is measured on
    train: float  # training time summed over the jobs (their epochs)

    @property
    def end(self) -> float:
        return self.wall - self.startup - self.jobs


def timed_sweep(cwd: Path, args: list[str]) -> SweepTiming:
    """Run the sweep command; lay its jobs on one clock from their result.json (start_time, end_time)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("LABNET_DATA_DIR", str(REPO.parent / "shared" / "data"))
    env.setdefault("MPLBACKEND", "Agg")
    sweep_dir = Path(tempfile.mkdtemp(dir=cwd, prefix="sweep"))
    start_clock, start = time.time(), time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "labnet", "-m", *args, f"hydra.sweep.dir={sweep_dir}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"sweep failed: {' '.join(args)}\n{proc.stderr[-2000:]}")
    results = [json.loads(path.read_text()) for path in sweep_dir.glob("*/result.json")]
    first, last = min(r["start_time"] for r in results), max(r["end_time"] for r in results)
    train = sum(h.get("epoch_seconds", 0.0) for r in results for h in r.get("history", []))
    return SweepTiming(wall=wall, startup=first - start_clock, jobs=last - first, train=train)


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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per job (6: 3,300 steps; the book runs 10,000)")
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
        timings: dict[str, list[SweepTiming]] = {name: [] for name in variants}
        for i in range(args.repeats):
            before = load()
            for name, variant in variants.items():
                t = timed_sweep(cwd, variant)
                timings[name].append(t)
                print(
                    f"repeat {i + 1}: {name:28s} {t.wall:5.1f} s = start-up {t.startup:4.2f} + jobs {t.jobs:5.2f}"
                    f" + end {t.end:4.2f}  {args.jobs / t.jobs:.3f} jobs/s while running"
                    f"  (training {t.train:5.1f} s summed over jobs)",
                    flush=True,
                )
            print(f"          [{before} -> {load()}; two processes get {free_cores():.2f} cores]", flush=True)
        parallel_name = f"joblib n_jobs={args.n_jobs}"
        parallel = timings[parallel_name]
        for name in variants:
            if name == parallel_name:
                continue
            ours = timings[name]
            throughput = statistics.median(a.jobs / b.jobs for a, b in zip(ours, parallel, strict=True))
            whole = statistics.median(a.wall / b.wall for a, b in zip(ours, parallel, strict=True))
            startup = statistics.median(b.startup - a.startup for a, b in zip(ours, parallel, strict=True))
            print(f"{parallel_name} / {name}:")
            print(
                f"  throughput ratio x{throughput:.2f}  (jobs per second from the first job's start to the last "
                f"job's end; goal on 2 cores: >= 1.7)"
            )
            print(f"  whole command    x{whole:.2f}  (its start-up and end included, paid once per sweep)")
            print(
                f"  joblib's start-up costs {startup:+.2f} s more (loky starts {args.n_jobs} Pythons that import "
                f"joblib, Hydra and labnet, then compose their job's config)"
            )


if __name__ == "__main__":
    main()
