"""What every bench target shares: the machine, CPU time, and the printed table + JSON line."""
from __future__ import annotations

import json
import os
import platform
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from pipeline.core.parallel import cores

LOAD_AT_START = os.getloadavg()[0]  # read when `lincir perf` starts, before it loads the machine itself


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def n_process_arg(value: str) -> int | str:
    """--n-process: a count, or auto (params keywords.n_process)."""
    return value if value == "auto" else int(value)


def machine(device: str = "cpu") -> dict:
    info = {"cpu": cpu_model(), "cores": cores(), "load_avg_1m_start": round(LOAD_AT_START, 2),
            "load_avg_1m_end": round(os.getloadavg()[0], 2)}
    if device == "cuda":
        import torch

        info["gpu"] = torch.cuda.get_device_name()
    return info


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Measure:
    wall: float = 0.0
    cpu: float = 0.0
    extra: dict = field(default_factory=dict)


@contextmanager
def measure():
    """Wall and CPU seconds of the block: `with measure() as m: ...; m.wall, m.cpu`."""
    m = Measure()
    wall, cpu = time.perf_counter(), cpu_seconds()
    yield m
    m.wall, m.cpu = time.perf_counter() - wall, cpu_seconds() - cpu


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def report(bench: str, setup: dict, columns: list[str], rows: list[dict], ratio: dict, notes: list[str] = (),
           device: str = "cpu", ratio_label: str = "optimised / reference", printer=print) -> dict:
    """Prints one table (a row per path, then the ratios and notes) and one JSON line; returns the record."""
    record = {"bench": bench, **setup, "machine": machine(device), "rows": rows, "ratio": ratio}
    head = ", ".join(f"{k}={v}" for k, v in setup.items())
    m = record["machine"]
    printer(f"lincir perf {bench}: {head}")
    printer(f"machine: {m['cpu']}, {m['cores']} cores, 1-min load average {m['load_avg_1m_start']} at start, "
            f"{m['load_avg_1m_end']} at end (this bench included)"
            + (f", GPU {m['gpu']}" if "gpu" in m else ""))
    cells = [["path", *columns]] + [[row["path"], *(fmt(row.get(c, "")) for c in columns)] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for r in cells:
        printer("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if ratio:
        printer(f"ratio ({ratio_label}): " + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items()))
    for note in notes:
        printer(note)
    printer(json.dumps(record))
    return record
