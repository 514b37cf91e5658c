"""What MLflow tracking adds to the wall time of a run: `tracking=none` vs `tracking=mlflow`, side by side.

    python benchmarks/bench_tracking.py [--repeats 8] [--experiment mnist_two_layer] [overrides ...]

Each repeat runs both variants as a user would (`python -m labnet ...` in a fresh process),
alternating, against one SQLite store created by a warm-up run (so MLflow's one-time schema
creation is not counted). Prints each pair and the median ratio.
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


def timed_run(cwd: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("LABNET_DATA_DIR", str(REPO.parent / "shared" / "data"))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "labnet", *args], cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"run failed: {' '.join(args)}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--experiment", default="mnist_two_layer")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        base = [f"+experiment={args.experiment}", *args.overrides]
        tracked = [*base, f"tracking.uri=sqlite:///{cwd / 'mlflow.db'}"]
        print("warm-up (creates the store)...", flush=True)
        timed_run(cwd, [*tracked, "trainer.epochs=1"])
        ratios, pairs = [], []
        for i in range(args.repeats):
            t_none = timed_run(cwd, [*base, "tracking=none"])
            t_mlflow = timed_run(cwd, tracked)
            ratios.append(t_mlflow / t_none)
            pairs.append((t_none, t_mlflow))
            print(
                f"repeat {i + 1}: tracking=none {t_none:6.2f} s   tracking=mlflow {t_mlflow:6.2f} s   "
                f"ratio {ratios[-1]:.3f}",
                flush=True,
            )
        extra = statistics.median(t_m - t_n for t_n, t_m in pairs)
        print(
            f"median overhead of tracking: {100 * (statistics.median(ratios) - 1):+.1f}% (target: <= +5%), "
            f"{extra:+.2f} s per run; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )


if __name__ == "__main__":
    main()
