"""How long `labnet compare` takes on a sweep of 100 runs in a local SQLite store.

    python benchmarks/bench_compare.py [--runs 100] [--epochs 20] [--repeats 5] [--keep DIR]

Creates one sweep parent run and ``--runs`` child runs directly with ``MlflowClient`` (fake
metrics: a per-epoch history of train/val loss and accuracy, best_val_accuracy, test_accuracy,
and the ~45 params of a real labnet config; a few runs FAILED), then times, as a user sees it
(a fresh ``python -m labnet compare`` process each time, interpreter start and imports included):

- ``labnet compare``                  the default: a SQLite file is read directly (no MLflow import)
- ``labnet compare --mlflow-client``  the same through ``MlflowClient.search_runs`` (one query)

and ``compare_command`` called in this process (imports already paid). Prints the median and the
minimum of ``--repeats`` runs of each; the minimum is the least disturbed by other load.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
try:
    import labnet  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from labnet.cli.compare.command import compare_command  # noqa: E402

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam", "rmsprop")
LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
STATIC_PARAMS = {
    "dataset.name": "spiral",
    "dataset.noise": "0.2",
    "dataset.num_classes": "3",
    "dataset.num_per_class": "100",
    "dataset.one_hot": "False",
    "dataset.seed": "1984",
    "dataset.val_size": "60",
    "labnet.plugins": "labnet==0.1.0",
    "loss.name": "softmax_cross_entropy",
    "model.activation": "relu",
    "model.dropout": "0.0",
    "model.hidden_sizes": "[50]",
    "model.init": "he",
    "model.layers": "None",
    "model.use_batchnorm": "False",
    "model.weight_decay": "0.0",
    "optimizer.weight_decay": "0.0",
    "plugins.block": "[]",
    "sweep.fail_fast": "False",
    "sweep.replicates": "1",
    "sweep.rerun": "missing",
    "tracking.experiment": "None",
    "tracking.log_every": "50",
    "tracking.log_model": "True",
    "tracking.name": "mlflow",
    "tracking.on_error": "fail",
    "tracking.run_name": "None",
    "trainer.batch_size": "30",
    "trainer.checkpoint_every": "1",
    "trainer.dtype": "float32",
    "trainer.eval_batch_size": "10000",
    "trainer.objective": "val_accuracy",
    "trainer.patience": "None",
    "trainer.progress": "True",
    "trainer.resume": "None",
    "trainer.threads": "None",
}


def make_store(folder: Path, runs: int, epochs: int) -> str:
    import numpy as np
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("spiral")
    parent = client.create_run(
        experiment, run_name="sweep-bench", tags={"labnet.role": "sweep", "labnet.sweep_id": "bench"}
    )
    parent_id = parent.info.run_id
    rng = np.random.default_rng(0)
    now = int(time.time() * 1000)
    for i in range(runs):
        optimizer, lr = OPTIMIZERS[i // len(LRS) % len(OPTIMIZERS)], LRS[i % len(LRS)]
        seed = i // (len(LRS) * len(OPTIMIZERS))
        tags = {
            "mlflow.parentRunId": parent_id,
            "labnet.sweep_id": "bench",
            "labnet.objective": "val_accuracy",
            "labnet.version": "0.1.0",
            "labnet.overrides": f"optimizer={optimizer} optimizer.lr={lr} seed={seed}",
        }
        run = client.create_run(experiment, run_name=f"{optimizer}-lr{lr}-spiral", tags=tags, start_time=now + i)
        run_id = run.info.run_id
        params = {**STATIC_PARAMS, "optimizer.name": optimizer, "optimizer.lr": str(lr), "seed": str(seed)}
        params["trainer.epochs"] = str(epochs)
        metrics = []
        accuracy = 0.33
        for epoch in range(1, epochs + 1):
            accuracy = min(1.0, accuracy + rng.uniform(0, 0.05))
            for key, value in (
                ("train_loss", 1.1 - accuracy),
                ("train_accuracy", accuracy),
                ("val_loss", 1.15 - accuracy),
                ("val_accuracy", accuracy - 0.02),
            ):
                metrics.append(Metric(key, float(value), now + epoch, epoch))
        failed = i % 25 == 24
        if not failed:
            metrics += [
                Metric("best_val_accuracy", accuracy - 0.02, now, epochs),
                Metric("test_accuracy", accuracy - 0.03, now, epochs),
            ]
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag("labnet.error", "loss diverged")] if failed else [],
        )
        client.set_terminated(run_id, status="FAILED" if failed else "FINISHED", end_time=now + 1000 + 10 * i)
    client.set_terminated(parent_id, status="FINISHED")
    return uri


def time_subprocess(folder: Path, args: list[str], repeats: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "labnet", "compare", *args], cwd=folder, env=env, capture_output=True, text=True
        )
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"labnet compare {' '.join(args)} failed:\n{proc.stderr}")
    return times


def time_in_process(args: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = compare_command(args)
        times.append(time.perf_counter() - start)
        if code != 0:
            raise SystemExit(f"compare_command({args}) returned {code}")
    assert out.getvalue().count("\n") > 0
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the store in this folder and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        uri = make_store(folder, args.runs, args.epochs)
        print(f"store: {args.runs} runs x {args.epochs} epochs under one sweep parent, {uri}")
        print(f"       built in {time.perf_counter() - start:.1f} s with MlflowClient")
        cases = [
            ("labnet compare (process)", lambda: time_subprocess(folder, ["--tracking-uri", uri], args.repeats)),
            (
                "labnet compare --format json --plot (process)",
                lambda: time_subprocess(
                    folder, ["--tracking-uri", uri, "--format", "json", "--plot", str(folder / "p.png")], args.repeats
                ),
            ),
            (
                "labnet compare --mlflow-client (process)",
                lambda: time_subprocess(folder, ["--tracking-uri", uri, "--mlflow-client"], args.repeats),
            ),
            ("compare_command (in process)", lambda: time_in_process(["--tracking-uri", uri], args.repeats)),
            (
                "compare_command --mlflow-client (in process)",
                lambda: time_in_process(["--tracking-uri", uri, "--mlflow-client"], args.repeats),
            ),
        ]
        for name, measure in cases:
            times = measure()
            print(f"{name:48s} median {statistics.median(times):6.2f} s   min {min(times):6.2f} s")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"(load average {load:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
