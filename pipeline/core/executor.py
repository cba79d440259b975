"""Where a stage's ordered map runs: `local` (this machine's process pool, pipeline/core/parallel.py)
or `ray` (a Ray cluster, through Ray Data). params.yaml `executor` picks one; the outputs are the same
either way (same rows, same order, same bytes), so stages list it as UNTRACKED and switching does not
re-run them.

A stage describes its work as a `Job` twice: `local`, whose tasks carry the rows the parent read (as
before Ray), and `remote`, whose tasks are small descriptors (a row range, a batch of image paths)
from which a worker reads its own rows, so the driver never ships a 700M-caption corpus. On Ray the
remote tasks become a Ray Data dataset in blocks of one task, `map_batches` runs them in an actor
pool (each actor runs the job's initializer once: spaCy, the tokenizer or the image tower loaded once
per actor), and the results come back in task order (`preserve_order`). Ray Data restarts a killed
actor and retries its tasks, so a lost worker costs time, not rows. docs/ray.md says how to start a
cluster and how its workers reach the files.
"""
from __future__ import annotations

import logging
import pickle
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.core.parallel import ordered_map
from pipeline.core.params import at_least
from pipeline.core.registry import Registry

CONNECT_TIMEOUT_S = 5  # a head node that does not answer in this long is reported, not waited for
EXECUTORS = Registry("executor")


@dataclass
class ExecutorConfig:
    """params.yaml `executor` (keywords, tokens, embed@..., `lincir index`)."""

    kind: str = "local"
    address: str = "auto"  # ray: the head's host:port (ray start --head --port), or auto (RAY_ADDRESS / this machine's)
    block_rows: int = 10_000  # ray: captions a task reads and processes (a retried task redoes this many)

    def check(self) -> None:
        EXECUTORS.get(self.kind)
        at_least("executor.block_rows", self.block_rows, 1)
        if not isinstance(self.address, str) or not self.address:
            raise PipelineError(f"params executor.address must be 'auto' or a cluster's host:port, not {self.address!r}")


@dataclass
class Job:
    """`fn(task)` for every task, in order; each worker first runs `initializer(*initargs)`.
    Functions must be module-level (workers import them by name)."""

    fn: Callable[[Any], Any]
    tasks: Iterable
    initializer: Callable | None = None
    initargs: tuple = ()
    gpus: bool = False  # remote only: an actor takes a GPU where the cluster has them


def run(config: ExecutorConfig | None, local: Job, remote: Job, n_process: int = 1) -> Iterator:
    """The results of `local` (on this machine, `n_process` processes) or of `remote` (on the cluster)."""
    config = config or ExecutorConfig()
    return EXECUTORS.get(config.kind)(config, local, remote, n_process)


@EXECUTORS.register("local")
def run_local(config: ExecutorConfig, local: Job, remote: Job, n_process: int) -> Iterator:
    return ordered_map(local.fn, local.tasks, n_process, local.initializer, local.initargs)


def answers(address: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise PipelineError(f"params executor.address {address!r} is not host:port (the head's GCS port, 6379 by "
                            f"default) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
        return True
    except OSError:
        return False


def connect(config: ExecutorConfig):
    """ray, connected to the cluster at `config.address`: a head that does not answer is one error line
    within seconds (ray.init itself would retry for a minute)."""
    try:
        import ray
    except ImportError:
        raise PipelineError("params executor.kind is ray but Ray is not installed: pip install -e '.[ray]'") from None
    if ray.is_initialized():
        return ray
    if config.address != "auto" and not answers(config.address):
        raise PipelineError(f"no Ray cluster answers at {config.address} (params executor.address): start one "
                            f"(docs/ray.md) or set executor.kind: local")
    try:
        ray.init(address=config.address, logging_level="ERROR", log_to_driver=False,
                 configure_logging=True, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise PipelineError(f"cannot join the Ray cluster at {config.address}: {str(e).splitlines()[0][:200]}") from None
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not a line per dataset: the stage draws its bar
    return ray


class _Worker:
    """One actor of the pool: the job's initializer once, then its function on each task."""

    def __init__(self, job: bytes, threads: int | None):
        from pipeline.core import exact

        exact.pin_environment()  # before the job loads torch: the kernels a local stage computes with
        job = pickle.loads(job)
        self.fn = job.fn
        if job.initializer:
            job.initializer(*job.initargs)
        if threads and "torch" in sys.modules:
            # the driver's thread count, not Ray's one a CPU: a convolution adds in another order otherwise
            sys.modules["torch"].set_num_threads(threads)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        results = [pickle.dumps(self.fn(pickle.loads(task)), protocol=5) for task in batch["task"]]
        return {"result": np.array(results, dtype=object)}


@EXECUTORS.register("ray")
def run_ray(config: ExecutorConfig, local: Job, remote: Job, n_process: int) -> Iterator:
    ray = connect(config)
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.execution_options.preserve_order = True  # results in task order: the outputs equal local's
    context.enable_progress_bars = False  # the stage draws its own bar
    context.print_on_execution_start = False
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if remote.gpus else 0
    actors = max(1, gpus or int(resources.get("CPU", 1)))
    tasks = [pickle.dumps(task, protocol=5) for task in remote.tasks]
    if not tasks:
        return iter(())
    job = pickle.dumps(Job(remote.fn, (), remote.initializer, remote.initargs), protocol=5)
    # one task a block and a batch: a retried task redoes one task's rows
    dataset = ray.data.from_items([{"task": t} for t in tasks],
                                  override_num_blocks=len(tasks))
    threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    dataset = dataset.map_batches(_Worker, fn_constructor_args=(job, threads), batch_size=1, batch_format="numpy",
                                  compute=ActorPoolStrategy(size=min(actors, len(tasks))),
                                  num_cpus=1, num_gpus=1 if gpus else 0)
    return _results(dataset)


def _results(dataset) -> Iterator:
    """The tasks' results in order; a worker's PipelineError (bad input) is raised here as one line."""
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            yield from (pickle.loads(result) for result in batch["result"])
    except Exception as e:
        cause = e
        while cause is not None and not isinstance(cause, PipelineError):
            cause = cause.__cause__
        if cause is None:
            raise
        lines = [line for line in str(cause).splitlines() if "PipelineError: " in line] or str(cause).splitlines()
        raise PipelineError(lines[-1].split("PipelineError: ", 1)[-1].strip()) from None
