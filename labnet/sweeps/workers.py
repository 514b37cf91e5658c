"""A sweep's jobs in worker processes of their own, where a worker that dies (SIGKILL, the OOM killer)
costs only the job it was running.

Hydra's joblib launcher runs jobs in joblib's loky pool, which treats a dead worker as a broken pool:
it kills the other workers and fails every unfinished job with ``TerminatedWorkerError``, so one killed
job aborted the sweep. Here each worker is watched on its own: the job of a dead worker ends KILLED (its
journal ended, its result written: the sweep's report and the MLflow mirror say so), a new worker takes
the jobs still to run, and the other jobs go on. Workers start as loky starts them (a fresh interpreter,
with loky's limits on BLAS threads), run job after job, and end with the launch.
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

#: how a worker runs one job: ``execute(idx, overrides, hydra_context, config, task_function, singleton_state)``
#: (hydra-joblib-launcher's ``execute_job``)
Execute = Callable[..., Any]


@dataclass
class Job:
    position: int  # in the launch's list of jobs
    num: int  # Hydra's job number
    overrides: Sequence[str]
    folder: str | None = None  # the job's output folder, once its task started
    starts: int = 0  # workers that died before its task started


@dataclass
class Worker:
    process: Any
    conn: Connection
    job: Job | None = None


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
    import cloudpickle  # (a dependency of joblib: what loky pickles with)
    from joblib.externals.loky.backend.context import get_context

    context = get_context("loky")
    payload = cloudpickle.dumps((execute, shared))
    todo = deque(Job(i, initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides))
    returns: dict[int, Any] = {}
    workers: list[Worker] = []
    try:
        while todo or any(w.job for w in workers):
            while todo and len(workers) < n_workers:
                workers.append(_start_worker(context, payload, env))
            for worker in workers:
                if worker.job is None and todo:
                    worker.job = todo.popleft()
                    worker.conn.send((worker.job.num, worker.job.overrides))
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
    return [returns[i] for i in range(len(job_overrides))]


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
                worker.job.folder = value
            elif kind == "done":
                returns[worker.job.position], worker.job = value, None
            elif kind == "interrupted":  # its job was stopped by a signal of its own: the sweep stops
                raise KeyboardInterrupt
            else:  # an error outside the job's task (Hydra could not set the job up): as with any launcher
                raise value
    except (EOFError, OSError):
        return False
    return worker.process.is_alive()


def _worker_died(worker: Worker, todo: deque[Job], returns: dict[int, Any]) -> None:
    worker.process.join()
    worker.conn.close()
    job = worker.job
    if job is None:  # idle: nothing lost
        return
    code = worker.process.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"ended with exit code {code}"
    reason = f"its worker process (pid {worker.process.pid}) was {how}"
    if job.folder is None:
        job.starts += 1
        if job.starts > 1:
            raise RuntimeError(f"job {job.num} [{' '.join(job.overrides)}] could not start: {reason}, twice")
        todo.appendleft(job)  # it had not begun: a new worker runs it
        return
    from hydra.core.utils import JobReturn, JobStatus

    from labnet.sweeps.jobs import record_killed_job

    record_killed_job(job.folder, job.num, job.overrides, reason)
    returns[job.position] = JobReturn(
        overrides=job.overrides, working_dir=job.folder, status=JobStatus.COMPLETED, _return_value=math.nan
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
        num, overrides = message

        def task(cfg: Any, num: int = num) -> Any:
            from labnet.run_policy import hydra_runtime

            reply("started", num, str(hydra_runtime().runtime.output_dir))
            return task_function(cfg)

        try:
            ret = execute(num, overrides, hydra_context, config, task, singletons)
        except KeyboardInterrupt:
            reply("interrupted", num, None)
            sys.exit(130)
        except Exception as err:
            reply("error", num, err)
            continue
        reply("done", num, ret)


def _plain_failure(value: Any, err: Exception) -> Any:
    """``value`` (a JobReturn or an exception) with its exception replaced by one that pickles."""
    from hydra.core.utils import JobReturn

    if isinstance(value, JobReturn):
        value.return_value = RuntimeError(f"{type(value._return_value).__name__}: {value._return_value}")
        value.cfg = value.hydra_cfg = None
        return value
    return RuntimeError(f"{type(value).__name__}: {value} (and it could not be sent back: {err})")
