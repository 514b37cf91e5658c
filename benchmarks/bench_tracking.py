"""What tracking and checkpoints cost a run, measured side by side in one call, alternating.

    python benchmarks/bench_tracking.py [--repeats 5] [--skip-checkpoints]

1. Wall time of `python -m labnet` (the default run) and of `+experiment=mnist_two_layer`, with MLflow
   tracking (the default: the command does not wait for MLflow) against `tracking=none`, in pairs.
   After each tracked run the benchmark waits until MLflow holds the whole run (the background syncer
   is done) and prints how long after the command's return that was: a run's sync never runs into the
   next measurement. Targets: default run within +10%, mnist_two_layer within +5%.
2. The checkpoint's cost per epoch (`trainer.checkpoint_every=1` against `0`) at 300 and 3,000 epochs of
   the spiral run: flat, because a checkpoint no longer holds the run's history.

Each figure is the median of the repeats, with the min and max beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed_run(cwd: Path, args: list[str], **env_extra: str) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("LABNET_DATA_DIR", str(REPO.parent / "shared" / "data"))
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(LABNET_SYNC="background", **env_extra)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "labnet", *args], cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"run failed: {' '.join(args)}\n{proc.stderr[-2000:]}")
    return elapsed


def mirrored_after(cwd: Path, timeout: float = 300) -> float:
    """Seconds until MLflow holds every run of ``cwd`` (the pending markers are gone)."""
    from labnet.tracking.syncer import pending, syncer_running

    start = time.perf_counter()
    while pending(cwd) and time.perf_counter() - start < timeout:
        time.sleep(0.05)
    done = time.perf_counter() - start
    while syncer_running(cwd) and time.perf_counter() - start < timeout:  # (it lingers; let it go quietly)
        time.sleep(0.05)
    return done


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def tracking_overhead(name: str, base: list[str], repeats: int, target: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        print(f"\n{name}: warm-up (creates the store, fills the data cache)...", flush=True)
        timed_run(cwd, [*base, "trainer.epochs=1"])
        mirrored_after(cwd)
        none, tracked, ratios, lags = [], [], [], []
        for i in range(repeats):
            none.append(timed_run(cwd, [*base, "tracking=none"]))
            tracked.append(timed_run(cwd, base))
            lags.append(mirrored_after(cwd))
            ratios.append(tracked[-1] / none[-1])
            print(
                f"  repeat {i + 1}: tracking=none {none[-1]:6.2f} s  mlflow {tracked[-1]:6.2f} s  "
                f"ratio {ratios[-1]:.3f}  in MLflow {lags[-1]:.2f} s after the command returned",
                flush=True,
            )
        overhead = 100 * (statistics.median(ratios) - 1)
        print(
            f"{name}: tracking=none {spread(none)} s, mlflow {spread(tracked)} s; overhead {overhead:+.1f}% "
            f"(ratios {spread(ratios, '{:.3f}')}; target <= +{target:.0f}%); the run was in MLflow "
            f"{spread(lags)} s after the command returned"
        )


def checkpoint_cost(repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        print("\ncheckpoint cost per epoch (spiral, tracking=none):", flush=True)
        for epochs in (300, 3000):
            per_epoch = []
            for _ in range(repeats):
                base = ["tracking=none", f"trainer.epochs={epochs}", "trainer.progress=false"]
                without = timed_run(cwd, [*base, "trainer.checkpoint_every=0"])
                with_ = timed_run(cwd, [*base, "trainer.checkpoint_every=1"])
                per_epoch.append(1e3 * (with_ - without) / epochs)
            print(f"  {epochs:5d} epochs: {spread(per_epoch, '{:.3f}')} ms per epoch", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-checkpoints", action="store_true")
    args = parser.parse_args()
    tracking_overhead("default run", [], args.repeats, 10)
    tracking_overhead("mnist_two_layer", ["+experiment=mnist_two_layer"], args.repeats, 5)
    if not args.skip_checkpoints:
        checkpoint_cost(args.repeats)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
