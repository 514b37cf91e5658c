"""labnet's training speed side by side with a hand-written NumPy loop and PyTorch CPU.

    LABNET_DATA_DIR=/path/to/data python benchmarks/bench_speed.py [--iterations 10000] [--repeats 3]

For each net the three trainers run one after another in a rotating order, repeat after
repeat, from the same initial weights and the same minibatch order; the ratios are taken
within a repeat (so a burst of load on a shared machine hits the compared runs alike) and
their median is printed. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
try:
    import labnet  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from hand_loop import HandMLP  # noqa: E402

from labnet.build import build_model  # noqa: E402
from labnet.config import build_component  # noqa: E402
from labnet.plugins import Registry, get_plugin_manager  # noqa: E402
from labnet.train.metrics import evaluate  # noqa: E402
from labnet.train.trainer import Run, Trainer, TrainerConfig  # noqa: E402

NETS = {
    "two_layer": {
        "title": "784-50-10 ReLU, init std 0.01, SGD lr 0.1, batch 100 (the book's TwoLayerNet)",
        "model": {"hidden_sizes": [50], "activation": "relu", "init": "std"},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "batch_size": 100,
    },
    "mlp5": {
        "title": "784-100x4-10 ReLU, He init, Adam lr 0.001, batch 128 (the book's optimizer comparison)",
        "model": {"hidden_sizes": [100, 100, 100, 100], "activation": "relu", "init": "he"},
        "optimizer": {"name": "adam", "lr": 0.001},
        "batch_size": 128,
    },
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iterations", type=int, default=10_000, help="training steps per run (rounded to whole epochs)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each trainer per net, alternating")
    p.add_argument("--nets", default="two_layer,mlp5", help=f"comma-separated, from {', '.join(NETS)}")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch column even if torch is installed")
    p.add_argument("--threads", type=int, default=None, help="BLAS / torch threads for all (default: library default)")
    p.add_argument("--eval-repeats", type=int, default=3, help="timed passes of the 70,000-sample evaluation")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS run of `python -m labnet`")
    p.add_argument(
        "--no-eval-background",
        action="store_true",
        help="skip the labnet run that evaluates all 70,000 samples every epoch in the background",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# -- the three trainers ----------------------------------------------------------------------------
def initial_weights(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) of every affine layer of a labnet model, copied."""
    return [(layer.params["W"].copy(), layer.params["b"].copy()) for layer in model.layers if "W" in layer.params]


def generator_like(state) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


def run_labnet(ctx, net, epochs, seed, full_eval=False):
    """The app's path: build_model through the registry, registry optimizer and loss, Trainer.fit.

    ``full_eval``: every epoch evaluates all 70,000 samples (train, val and test splits) in the background
    (trainer.eval_train, eval_test, eval_background), the run the 10% target is about; else the training
    split only, evaluation timed on its own."""
    registry, manager, data = ctx["registry"], ctx["manager"], ctx["data"]
    rng = np.random.default_rng(seed)
    model = build_model(dict(net["model"]), data, registry, rng, np.float32)
    opt_cfg = dict(net["optimizer"])
    optimizer = build_component(registry.get("optimizer", opt_cfg["name"]), "optimizer", opt_cfg)
    loss = build_component(registry.get("loss", "softmax_cross_entropy"), "loss", {})
    if full_eval:
        config = TrainerConfig(
            epochs=epochs,
            batch_size=net["batch_size"],
            progress=False,
            checkpoint_every=0,
            eval_train=True,
            eval_test=True,
            eval_background=True,
        )
        trainer = Trainer(model, loss, optimizer, data, config, rng, hook=manager.hook)
    else:
        train_only = dataclasses.replace(data, val=None, test=None)  # evaluation is timed on its own below
        config = TrainerConfig(epochs=epochs, batch_size=net["batch_size"], progress=False, checkpoint_every=0)
        trainer = Trainer(model, loss, optimizer, train_only, config, rng, hook=manager.hook)
    with tempfile.TemporaryDirectory(prefix="labnet-bench-") as tmp:
        # the lifecycle the app drives: every plugin but the tracker (as with tracking=none) sees the run
        run = Run("bench", Path(tmp))
        run.info.update(data=data, loss=loss, optimizer=optimizer, registry=registry, manager=manager)
        manager.call("labnet_run_start", run=run, cfg=None, model=model)
        t0, c0 = time.perf_counter(), time.process_time()
        final = trainer.fit(run)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        manager.call("labnet_run_end", run=run, status="FINISHED", metrics=final, model=model, error=None)
    _, acc = evaluate(model, loss, data.test, config.eval_batch_size)
    if full_eval:
        evaluated = sum(len(split) for split in (data.train, data.val, data.test)) * len(run.history)
        return {"steps": run.step, "seconds": seconds, "cpu": cpu, "accuracy": acc, "evaluated": evaluated}
    # the full evaluation the book does each epoch (every training and test sample), best of a few passes,
    # and the one labnet's trainer does each epoch (the validation split; train metrics come from the steps)
    full, val, held_out = [], [], []
    for _ in range(ctx["eval_repeats"]):
        t = time.perf_counter()
        evaluate(model, loss, data.val, config.eval_batch_size)
        t_val = time.perf_counter()
        evaluate(model, loss, data.test, config.eval_batch_size)
        t_test = time.perf_counter()
        evaluate(model, loss, data.train, config.eval_batch_size)
        full.append(time.perf_counter() - t)
        val.append(t_val - t)
        held_out.append(t_test - t)
    return {
        "steps": run.step,
        "seconds": seconds,
        "cpu": cpu,
        "accuracy": acc,
        "eval_seconds": min(full),
        "val_seconds": min(val),
        "held_out_seconds": min(held_out),
    }


def run_reference(cls, ctx, net, epochs, weights, rng_state):
    data = ctx["data"]
    trainer = cls(weights, net["batch_size"])
    t0, c0 = time.perf_counter(), time.process_time()
    losses = trainer.fit(data.train.x, data.train.y, epochs, generator_like(rng_state), net["optimizer"])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    acc = trainer.accuracy(data.test.x, data.test.y)
    return {"steps": len(losses), "seconds": seconds, "cpu": cpu, "accuracy": acc}


def bench_net(ctx, name, args, torch_cls):
    net = NETS[name]
    data = ctx["data"]
    n_batches = -(-len(data.train) // net["batch_size"])
    epochs = max(1, round(args.iterations / n_batches))
    print(f"\n## {name}: {net['title']}")
    print(f"{epochs} epochs x {n_batches} batches = {epochs * n_batches} steps per run, {args.repeats} repeats")
    names = ["labnet", "hand", "torch"] if torch_cls else ["labnet", "hand"]
    if not args.no_eval_background:
        names.append("labnet+eval")
    results: dict[str, list[dict]] = {k: [] for k in names}
    for r in range(args.repeats):
        seed = args.seed + r
        # the start both references share with labnet: its initial weights and its generator after building
        rng = np.random.default_rng(seed)
        probe = build_model(dict(net["model"]), data, ctx["registry"], rng, np.float32)
        weights, rng_state = initial_weights(probe), rng.bit_generator.state
        order = names[r % len(names) :] + names[: r % len(names)]
        for who in order:
            if who == "labnet":
                res = run_labnet(ctx, net, epochs, seed)
            elif who == "labnet+eval":
                res = run_labnet(ctx, net, epochs, seed, full_eval=True)
            elif who == "hand":
                res = run_reference(HandMLP, ctx, net, epochs, weights, rng_state)
            else:
                res = run_reference(torch_cls, ctx, net, epochs, weights, rng_state)
            res["its"] = res["steps"] / res["seconds"]
            results[who].append(res)
        line = "  ".join(f"{who} {results[who][-1]['its']:7.0f} it/s" for who in names)
        print(f"  repeat {r + 1}: {line}", flush=True)

    def med(who, key):
        return statistics.median(x[key] for x in results[who])

    print(f"\n  {'':8} {'it/s median':>12} {'test acc mean':>14}   it/s per repeat | test acc per repeat")
    for who in names:
        runs = results[who]
        acc = statistics.fmean(x["accuracy"] for x in runs)
        per = " ".join(f"{x['its']:.0f}" for x in runs)
        accs = " ".join(f"{x['accuracy']:.4f}" for x in runs)
        print(f"  {who:8} {med(who, 'its'):12.0f} {acc:14.4f}   {per} | {accs}")
    summary = {"net": name}
    for other in [who for who in names[1:] if who != "labnet+eval"]:
        pairs = list(zip(results["labnet"], results[other], strict=True))
        ratios = [a["its"] / b["its"] for a, b in pairs]
        cpu_ratios = [(b["cpu"] / b["steps"]) / (a["cpu"] / a["steps"]) for a, b in pairs]
        summary[other] = statistics.median(ratios)
        print(
            f"  labnet/{other:6} {summary[other]:.2f}x  (per repeat: {' '.join(f'{q:.2f}' for q in ratios)});"
            f"  by CPU time per step: {statistics.median(cpu_ratios):.2f}x"
            f" ({' '.join(f'{q:.2f}' for q in cpu_ratios)})"
        )
    summary["dacc"] = statistics.fmean(x["accuracy"] for x in results["labnet"]) - statistics.fmean(
        x["accuracy"] for x in results["hand"]
    )
    print(f"  test accuracy labnet - hand: {summary['dacc'] * 100:+.2f} points")
    epoch_seconds = statistics.median(x["seconds"] / epochs for x in results["labnet"])
    eval_seconds = statistics.median(x["eval_seconds"] for x in results["labnet"])
    val_seconds = statistics.median(x["val_seconds"] for x in results["labnet"])
    held_out_seconds = statistics.median(x["held_out_seconds"] for x in results["labnet"])
    summary["eval"] = eval_seconds / epoch_seconds
    summary["monitor"] = held_out_seconds / epoch_seconds
    summary["val"] = val_seconds / epoch_seconds
    n_eval = len(data.train) + len(data.val) + len(data.test)
    print(
        f"  evaluation of {n_eval:,} samples (train+val+test): {eval_seconds:.3f} s = "
        f"{summary['eval']:.1%} of a labnet training epoch ({epoch_seconds:.3f} s); "
        f"the trainer's own per-epoch evaluation ({len(data.val):,} val samples): {val_seconds / epoch_seconds:.1%}; "
        f"with trainer.eval_test ({len(data.val) + len(data.test):,} val+test samples evaluated, the "
        f"{len(data.train):,} train samples measured by the steps themselves): {summary['monitor']:.1%}"
    )
    if "labnet+eval" in results:
        costs = [
            b["seconds"] / a["seconds"] - 1 for a, b in zip(results["labnet"], results["labnet+eval"], strict=True)
        ]
        summary["background"] = statistics.median(costs)
        print(
            f"  evaluation of all {n_eval:,} samples every epoch in the background (trainer.eval_train, eval_test, "
            f"eval_background): +{summary['background']:.1%} wall time over training alone "
            f"(per repeat: {' '.join(f'{c:+.1%}' for c in costs)}; BLAS threads: training's and one evaluating)"
        )
    return summary


def print_targets(summaries: list[dict], peak_mb: float | None) -> None:
    """The issue's targets, each marked met or missed (on this run's figures)."""
    print("\n## targets")

    def mark(ok: bool) -> str:
        return "met   " if ok else "MISSED"

    for s in summaries:
        print(f"  {mark(s['hand'] >= 0.8)} {s['net']}: labnet/hand {s['hand']:.2f}x >= 0.8x")
        if "torch" in s:
            print(f"  {mark(s['torch'] >= 2.0)} {s['net']}: labnet/torch {s['torch']:.2f}x >= 2x")
        dacc = f"{s['dacc'] * 100:+.2f}"
        print(f"  {mark(abs(s['dacc']) <= 0.003)} {s['net']}: test accuracy labnet - hand {dacc} points, within 0.3")
        if "background" in s:
            print(
                f"  {mark(s['background'] < 0.10)} {s['net']}: evaluation of 70,000 samples every epoch, in the "
                f"background, {s['background']:+.1%} < 10% of training time"
            )
        print(
            f"  (info) {s['net']}: the same evaluation in line on the training core: {s['eval']:.1%} of an epoch; "
            f"the default per-epoch evaluation (5,000 val samples): {s['val']:.1%}"
        )
    if peak_mb is not None:
        print(f"  {mark(peak_mb < 600)} peak RSS of the app {peak_mb:.0f} MB < 600 MB")


#: run by a small intermediate interpreter: RUSAGE_CHILDREN's ru_maxrss is the largest RSS of any waited-for
#: descendant, and Linux folds the RSS a child had *before* exec (a fork or vfork of this process, with its data
#: and torch loaded) into that figure, so the app must be started from a process that is itself small.
_MEMORY_PROBE = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": proc.returncode, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "seconds": time.perf_counter() - t0, "stdout": proc.stdout[-4000:], "stderr": proc.stderr[-4000:]}))
"""


def peak_memory() -> float | None:
    """Peak RSS of the app running the book's MNIST experiment, in a child process."""
    import json

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="labnet-bench-") as tmp:
        app = [
            sys.executable,
            "-m",
            "labnet",
            "+experiment=mnist_two_layer",
            "tracking=none",
            "trainer.progress=false",
            f"hydra.run.dir={tmp}/run",
        ]
        print(f"\n## memory: python {' '.join(app[1:5])}")
        probe = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, *app], cwd=tmp, env=env, capture_output=True)
    try:
        res = json.loads(probe.stdout)
    except ValueError:
        print(f"  FAILED to measure: {probe.stderr.decode(errors='replace')[-2000:]}")
        return None
    if res["rc"] != 0:
        print(f"  FAILED (exit {res['rc']}):\n{res['stderr'][-2000:]}")
        return None
    lines = res["stdout"].strip().splitlines()
    print(f"  peak RSS {res['maxrss_kib'] / 1024:.0f} MB (limit 600 MB), wall {res['seconds']:.1f} s")
    if lines:
        print(f"  {lines[-1][:300]}")
    return res["maxrss_kib"] / 1024


def main(argv=None) -> int:
    args = parse_args(argv)
    unknown = [n for n in args.nets.split(",") if n not in NETS]
    if unknown:
        raise SystemExit(f"unknown net {unknown[0]!r}; choose from {', '.join(NETS)}")
    torch_cls = None
    if not args.no_torch:
        try:
            from torch_loop import TorchMLP

            torch_cls = TorchMLP
        except ImportError:
            print("torch is not installed: the PyTorch column is skipped")
    limiter = None
    if args.threads:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=args.threads)
        if torch_cls is not None:
            import torch

            torch.set_num_threads(args.threads)
    import platform

    from threadpoolctl import threadpool_info

    blas = ", ".join(
        f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info() if i["user_api"] == "blas"
    )
    print(
        f"# labnet speed benchmark: numpy {np.__version__}"
        + (f", torch {__import__('torch').__version__}" if torch_cls else "")
        + f", python {platform.python_version()}, {os.cpu_count()} cores, BLAS: {blas or '?'}"
        + (f", torch threads {__import__('torch').get_num_threads()}" if torch_cls else "")
        + f"\n# load average at the start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    manager = get_plugin_manager(block=["mlflow_tracker"])  # as with tracking=none
    registry = Registry(manager)
    data = registry.get("dataset", "mnist")().load(np.random.default_rng(args.seed), dtype=np.float32)
    ctx = {"registry": registry, "manager": manager, "data": data, "eval_repeats": args.eval_repeats}
    summaries = [bench_net(ctx, name, args, torch_cls) for name in args.nets.split(",")]
    if limiter is not None:
        limiter.unregister()
    peak_mb = None if args.no_memory else peak_memory()
    print_targets(summaries, peak_mb)
    print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
