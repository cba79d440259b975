"""The benchmarks by name, and the two things every caller does first with one.

    bench = load_benchmark("cirr", root=Path("datasets/CIRR"), split="val")
    check_images(bench)              # before any model work
    image = open_image(bench.images[name])   # pipeline.data.images

Readers live one per module (circo, cirr, fashioniq, genecis); `groups` selects FashionIQ
categories or GeneCIS tasks.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import PipelineError, quoted
from pipeline.core.params import typed
from pipeline.core.registry import Registry
from pipeline.data.images import check_paths
from pipeline.evaluation.benchmarks.base import Benchmark, Query
from pipeline.evaluation.benchmarks.circo import CIRCO, read_circo
from pipeline.evaluation.benchmarks.cirr import CIRR, read_cirr
from pipeline.evaluation.benchmarks.fashioniq import FashionIQ, read_fashioniq
from pipeline.evaluation.benchmarks.genecis import GeneCIS, read_genecis

__all__ = ["BENCHMARKS", "CLASSES", "Benchmark", "BenchmarkEntry", "Query", "check_benchmarks", "check_dev",
           "check_images", "from_params", "load_benchmark"]

BENCHMARKS: Registry[Callable[..., Benchmark]] = Registry("benchmark")
BENCHMARKS.register("circo")(read_circo)
BENCHMARKS.register("cirr")(read_cirr)
BENCHMARKS.register("fashioniq")(read_fashioniq)
BENCHMARKS.register("genecis")(read_genecis)

# The class each kind's reader makes: its metric names are known before any data is read.
CLASSES: dict[str, type[Benchmark]] = {"circo": CIRCO, "cirr": CIRR, "fashioniq": FashionIQ, "genecis": GeneCIS}

# Readers that take `groups`, and what a group is there.
GROUPED = {"fashioniq": "category", "genecis": "task"}


def load_benchmark(kind: str, root: Path, split: str, groups: Sequence[str] | None = None) -> Benchmark:
    """The benchmark `kind` read from its official layout under `root`.

    `groups` restricts FashionIQ to some categories or GeneCIS to some tasks (default: all).
    """
    reader = BENCHMARKS.get(kind)
    if groups is None:
        return reader(Path(root), split)
    if kind not in GROUPED:
        raise PipelineError(f"{kind} has no groups to select; only {', '.join(GROUPED)} do")
    return reader(Path(root), split, groups=tuple(groups))


# A benchmark's name becomes part of a dvc.yaml command line and of output paths
# (stages/embed.py NAME -> data/embed/NAME): letters, digits, `_` and `-` only.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass
class BenchmarkEntry:
    """One entry of params.yaml `benchmarks`."""

    kind: str
    root: str
    split: str
    groups: list[str] | None = None

    def check(self) -> None:
        BENCHMARKS.get(self.kind)
        if self.groups is not None and self.kind not in GROUPED:
            raise PipelineError(f"{self.kind} has no groups to select; only {', '.join(GROUPED)} do")


def check_benchmarks(entries) -> dict[str, BenchmarkEntry]:
    """params.yaml `benchmarks`, checked: safe names, known kinds, the keys each entry takes."""
    if not isinstance(entries, dict) or not entries:
        raise PipelineError("params.yaml: benchmarks must map names to {kind, root, split}, e.g. "
                            "world_circo: {kind: circo, root: data/world/benchmarks/circo, split: val}")
    checked = {}
    for name, entry in entries.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise PipelineError(f"params.yaml: benchmark name {quoted(name)} is not allowed: names go into dvc.yaml "
                                f"command lines and output paths, so use letters, digits, '_' and '-' "
                                f"(at most 64, starting with a letter or digit)")
        checked[name] = typed(BenchmarkEntry, entry, f"benchmarks.{name}", complete=False)  # groups: optional
    return checked


def check_dev(params: dict, name: str, metric: str) -> None:
    """`train.validate_on` and `train.validate_metric`, before any work: the dev benchmark is an entry of
    params.yaml's `benchmarks`, the metric is one it reports, and no other entry scores the same
    queries. Every entry gets an evaluate@ stage, and every one but the dev entry reports results:
    one that scored the dev queries would report phi on the queries it was selected on."""
    checked = check_benchmarks(params.get("benchmarks"))
    if name not in checked:
        raise PipelineError(f"params.yaml: train.validate_on {quoted(name)} is not an entry of benchmarks "
                            f"({', '.join(checked)})")
    dev = checked[name]
    valid = CLASSES[dev.kind].metric_names(dev.groups)
    if metric not in valid:
        raise PipelineError(f"params.yaml: train.validate_metric {quoted(metric)} is not a metric of {name} "
                            f"({dev.kind}); valid: {', '.join(valid)}")
    for other, entry in checked.items():
        if other != name and _same_queries(dev, entry):
            raise PipelineError(f"params.yaml: benchmarks.{other} scores the queries phi is selected on "
                                f"(train.validate_on: {name}, {dev.kind} {dev.split} of {dev.root}), so its results "
                                f"would be measured on the queries phi was chosen by; select phi on a split no "
                                f"other entry scores")


def _same_queries(a: BenchmarkEntry, b: BenchmarkEntry) -> bool:
    if (a.kind, a.split, Path(a.root).resolve()) != (b.kind, b.split, Path(b.root).resolve()):
        return False
    every = CLASSES[a.kind].GROUPS  # FashionIQ's categories, GeneCIS' tasks: entries may take disjoint ones
    return not every or bool(set(a.groups or every) & set(b.groups or every))


def from_params(params: dict, name: str, split: str | None = None) -> Benchmark:
    """The benchmark `name` of params.yaml's `benchmarks` list, read from its root; its own
    split unless `split` is given (`lincir submit` reads the test split)."""
    entries = check_benchmarks(params.get("benchmarks"))
    if name not in entries:
        raise PipelineError(f"no benchmark named {quoted(name)} in params.yaml; names: {', '.join(entries)}")
    b = entries[name]
    return load_benchmark(b.kind, Path(b.root), split or b.split, b.groups)


def check_images(bench: Benchmark, workers: int = 8) -> None:
    """Raises MissingImagesError naming the missing or unreadable image files and their count.

    Each file must exist and decode whole with PIL (a truncated body is found here, before
    any model work, not half-way through embedding); JPEGs decode at reduced scale, which
    still reads every byte. Files are checked once even where several crops share one.
    """
    check_paths([source.path for source in bench.images.values()], f"{bench.name} {bench.split}", workers)
