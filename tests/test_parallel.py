"""ordered_map: results in task order, few tasks in flight, worker errors surface."""
import os
import time

import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.parallel import IN_FLIGHT_PER_WORKER, ordered_map, processes

_OFFSET = {}


def _set_offset(value):
    _OFFSET["value"] = value


def _work(x):
    if x == "boom":
        raise ValueError("task boom failed")
    return x * x + _OFFSET["value"], os.getpid()


def _slow_work(x):
    time.sleep(0.1)  # longer than a worker takes to start: on a loaded machine, too, both get tasks
    return _work(x)


@pytest.mark.parametrize("n_process", [1, 2])
def test_results_in_task_order_with_the_initializer(n_process):
    results = list(ordered_map(_slow_work, range(25), n_process, _set_offset, (1,)))
    assert [r for r, _ in results] == [x * x + 1 for x in range(25)]
    assert (len({pid for _, pid in results}) > 1 or n_process == 1) and \
        (os.getpid() in {pid for _, pid in results}) == (n_process == 1)


def test_tasks_are_read_lazily():
    drawn = []

    def tasks():
        for x in range(1000):
            drawn.append(x)
            yield x

    taken = 0
    for _ in ordered_map(_work, tasks(), 2, _set_offset, (0,)):
        taken += 1
        assert len(drawn) <= taken + IN_FLIGHT_PER_WORKER * 2  # bounded, not the whole iterable
        if taken == 10:
            break
    assert len(drawn) < 20


def test_a_failing_task_raises_in_the_parent():
    with pytest.raises(ValueError, match="task boom failed"):
        list(ordered_map(_work, [1, "boom", 2], 2, _set_offset, (0,)))


def test_processes_param():
    assert processes("auto", "x.n_process") == len(os.sched_getaffinity(0)) and processes(3, "x.n_process") == 3
    for bad in (0, -1, "two", 1.5, True, None):
        with pytest.raises(PipelineError, match=r"params keywords.n_process must be a positive integer or 'auto', "):
            processes(bad, "keywords.n_process")
