"""Ordered map over worker processes with a bounded number of tasks in flight.

The preprocessing stages (keywords, tokens) cut a corpus into chunks and map a function
over them. `multiprocessing.Pool.imap` would read the whole task iterable ahead of the
workers, so memory would grow with the corpus; here at most 2 tasks a worker are
submitted before the oldest result is taken back, so the stages' peak memory does not
depend on the corpus size. Results come back in task order: outputs are identical for
any number of processes.
"""
from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pipeline.core.errors import PipelineError

IN_FLIGHT_PER_WORKER = 2  # one being worked on, one waiting: workers never idle on the parent


def cores() -> int:
    """The cores this process may use (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def processes(n_process: int | str, param: str) -> int:
    """A process-count param: a positive count, or "auto" for the cores this process may use."""
    if n_process == "auto":
        return cores()
    if isinstance(n_process, bool) or not isinstance(n_process, int) or n_process < 1:
        raise PipelineError(f"params {param} must be a positive integer or 'auto', not {n_process!r}")
    return n_process


def ordered_map(fn: Callable[[Any], Any], tasks: Iterable, n_process: int,
                initializer: Callable | None = None, initargs: tuple = ()) -> Iterator:
    """fn(task) for every task, in order; in this process when n_process is 1.

    `fn` and `initializer` must be module-level functions (workers may be spawned, not forked).
    """
    if n_process == 1:
        if initializer:
            initializer(*initargs)
        yield from map(fn, tasks)
        return
    pool = multiprocessing.Pool(n_process, initializer, initargs)
    try:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(fn, (task,)))
            if len(pending) >= IN_FLIGHT_PER_WORKER * n_process:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    finally:
        pool.terminate()  # also when the consumer stops early or a task raised
