"""A sweep's jobs in worker processes of their own, where a worker that dies (SIGKILL, the OOM killer)
costs only the job it was running.

Hydra's joblib launcher runs jobs in joblib's loky pool, which treats a dead worker as a broken pool:
it kills the other workers and fails every unfinished job with ``TerminatedWorkerError``, so one killed
job aborted the sweep. Here each worker is watched on its own: the job of a dead worker ends KILLED (its
journal ended, its result written: the sweep's report and the MLflow mirror say so), a new worker takes
the jobs still to run, and the other jobs go on. Workers start as loky starts them (a fresh interpreter,
with loky's limits on BLAS threads), run job after job, and end with the launch.

What a worker runs at a time is a :class:`Unit`: one job (the joblib launcher), or a fused group of jobs
trained together (the fused launcher, ``labnet.fused.workers``).
"""

from __future__ import annotations

import math
import pickle
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

#: how a worker runs one unit: ``execute(num, payload, hydra_context, config, task, singleton_state)``, which
#: returns its JobReturn (a list of them for a unit of several jobs); hydra-joblib-launcher's ``execute_job``
#: (the payload: the job's overrides). ``task`` is a :class:`Task`.
Execute = Callable[..., Any]


@dataclass
class Unit:
    """What one worker runs at a time: one job, or several trained together (a fused group)."""

    positions: list[int]  # in the launch's list of jobs
    nums: list[int]  # Hydra's job numbers
    overrides: list[Sequence[str]]
    payload: Any  # what ``execute`` gets after the first job's number
    folders: list[str] | None = None  # the jobs' output folders, once their runs started
    starts: int = 0  # workers that died before its runs started

    def label(self) -> str:
        if len(self.nums) == 1:
            return f"job {self.nums[0]} [{' '.join(self.overrides[0])}]"
        return f"the fused group of jobs {self.nums}"


@dataclass
class Worker:
    process: Any
    conn: Connection
    job: Unit | None = None


def run_jobs(
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    n_workers: int,
    execute: Execute,
    shared: tuple,
    env: dict[str, str],
) -> list[Any]:
    """Run every job on at most ``n_workers`` worker processes; their ``JobReturn``s in the jobs' order.
    ``shared`` is what every job gets after its overrides (Hydra's context, config, task, singletons)."""
    units = [Unit([i], [initial_job_idx + i], [list(o)], list(o)) for i, o in enumerate(job_overrides)]
    returns = run_units(units, n_workers, execute, shared, env)
    return [returns[i] for i in range(len(job_overrides))]


def worker_env(n_workers: int) -> dict[str, str]:
    """What ``n_workers`` workers start with: loky's limits on BLAS threads (cores / workers, each)."""
    from joblib._parallel_backends import LokyBackend

    return LokyBackend()._prepare_worker_env(n_workers)


def run_units(units: Sequence[Unit], n_workers: int, execute: Execute, shared: tuple, env: dict[str, str]) -> dict:
    """Run ``units`` in their order on at most ``n_workers`` worker processes; each job's ``JobReturn`` by its
    position."""
    import cloudpickle  # (a dependency of joblib: what loky pickles with)
    from joblib.externals.loky.backend.context import get_context

    context = get_context("loky")
    payload = cloudpickle.dumps((execute, shared))
    todo = deque(units)
    returns: dict[int, Any] = {}
    workers: list[Worker] = []
    try:
        while todo or any(w.job for w in workers):
            while todo and len(workers) < n_workers:
                workers.append(_start_worker(context, payload, env))
            for worker in workers:
                if worker.job is None and todo:
                    worker.job = todo.popleft()
                    worker.conn.send((worker.job.nums[0], worker.job.payload))
            ready = wait([w.conn for w in workers] + [w.process.sentinel for w in workers])
            for worker in list(workers):
                if worker.conn in ready or worker.process.sentinel in ready:
                    if not _receive(worker, returns):
                        workers.remove(worker)
                        _worker_died(worker, todo, returns)
    except BaseException:
        _stop(workers)  # Ctrl-C, SIGTERM, an error: each worker checkpoints its job and ends it KILLED
        raise
    _close(workers)
    return returns


def _start_worker(context, payload: bytes, env: dict[str, str]) -> Worker:
    parent_end, child_end = context.Pipe()
    process = context.Process(target=serve, args=(child_end, payload), name="labnet-sweep-worker", env=env)
    process.start()
    child_end.close()
    return Worker(process, parent_end)


def _receive(worker: Worker, returns: dict[int, Any]) -> bool:
    """Read what ``worker`` sent; False once it is gone (its pipe closed)."""
    try:
        while worker.conn.poll():
            kind, num, value = pickle.loads(worker.conn.recv_bytes())
            if kind == "started":
                worker.job.folders = value
            elif kind == "done":
                values = value if isinstance(value, list) else [value]
                returns.update(zip(worker.job.positions, values, strict=True))
                worker.job = None
            elif kind == "interrupted":  # its job was stopped by a signal of its own: the sweep stops
                raise KeyboardInterrupt
            else:  # an error outside the job's task (Hydra could not set the job up): as with any launcher
                raise value
    except (EOFError, OSError):
        return False
    return worker.process.is_alive()


def _worker_died(worker: Worker, todo: deque[Unit], returns: dict[int, Any]) -> None:
    worker.process.join()
    worker.conn.close()
    job = worker.job
    if job is None:  # idle: nothing lost
        return
    code = worker.process.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"ended with exit code {code}"
    reason = f"its worker process (pid {worker.process.pid}) was {how}"
    if job.folders is None:
        job.starts += 1
        if job.starts > 1:
            raise RuntimeError(f"{job.label()} could not start: {reason}, twice")
        todo.appendleft(job)  # it had not begun: a new worker runs it
        return
    from hydra.core.utils import JobReturn, JobStatus

    from labnet.sweeps.jobs import record_killed_job

    for position, num, overrides, folder in zip(job.positions, job.nums, job.overrides, job.folders, strict=True):
        record_killed_job(folder, num, list(overrides), reason)
        returns[position] = JobReturn(
            overrides=list(overrides), working_dir=folder, status=JobStatus.COMPLETED, _return_value=math.nan
        )


def _stop(workers: list[Worker]) -> None:
    from labnet.sweeps.processes import stop_processes

    stop_processes([w.process.pid for w in workers if w.process.is_alive()])
    for worker in workers:
        worker.conn.close()


def _close(workers: list[Worker]) -> None:
    for worker in workers:
        try:
            worker.conn.send(None)
        except OSError:
            pass
    for worker in workers:
        worker.process.join(timeout=30)
    _stop(workers)  # (one that did not end)


def serve(conn: Connection, payload: bytes) -> None:
    """A worker: run the jobs it is sent, one at a time, until it is sent None."""
    execute, shared = pickle.loads(payload)
    hydra_context, config, task_function, singletons = shared

    def reply(kind: str, num: int, value: Any) -> None:
        import cloudpickle  # (a dependency of joblib: what loky pickles with)

        try:
            data = cloudpickle.dumps((kind, num, value))
        except Exception as err:  # e.g. an exception that does not pickle: its text does
            data = cloudpickle.dumps((kind, num, _plain_failure(value, err)))
        conn.send_bytes(data)

    while True:
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        num, unit = message
        try:
            ret = execute(num, unit, hydra_context, config, Task(task_function, reply, num), singletons)
        except KeyboardInterrupt:
            reply("interrupted", num, None)
            sys.exit(130)
        except Exception as err:
            reply("error", num, err)
            continue
        reply("done", num, ret)


class Task:
    """The sweep's task as a worker runs it: it tells the launching process where a job's run is once it starts
    (a worker that dies then leaves that run KILLED; before, its unit goes to a new worker)."""

    def __init__(self, task_function: Callable[[Any], Any], reply: Callable[[str, int, Any], None], num: int) -> None:
        self.task_function, self.reply, self.num = task_function, reply, num

    def __call__(self, cfg: Any) -> Any:
        from labnet.run_policy import hydra_runtime

        self.started([str(hydra_runtime().runtime.output_dir)])
        return self.task_function(cfg)

    def started(self, folders: list[str]) -> None:
        """The unit's runs start in ``folders`` (one per job of the unit, in its order)."""
        self.reply("started", self.num, folders)


def _plain_failure(value: Any, err: Exception) -> Any:
    """``value`` (a JobReturn, a list of them, or an exception) with its exceptions replaced by ones that pickle."""
    from hydra.core.utils import JobReturn

    if isinstance(value, list):
        return [v if not isinstance(v, JobReturn) or _pickles(v) else _plain_failure(v, err) for v in value]
    if isinstance(value, JobReturn):
        value.return_value = RuntimeError(f"{type(value._return_value).__name__}: {value._return_value}")
        value.cfg = value.hydra_cfg = None
        return value
    return RuntimeError(f"{type(value).__name__}: {value} (and it could not be sent back: {err})")


def _pickles(value: Any) -> bool:
    import cloudpickle

    try:
        cloudpickle.dumps(value)
    except Exception:
        return False
    return True
