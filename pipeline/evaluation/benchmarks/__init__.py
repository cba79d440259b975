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
from pipeline.evaluation.benchmarks.circo import read_circo
from pipeline.evaluation.benchmarks.cirr import read_cirr
from pipeline.evaluation.benchmarks.fashioniq import read_fashioniq
from pipeline.evaluation.benchmarks.genecis import read_genecis

__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkEntry", "Query", "check_benchmarks", "check_images", "from_params",
           "load_benchmark"]

BENCHMARKS: Registry[Callable[..., Benchmark]] = Registry("benchmark")
BENCHMARKS.register("circo")(read_circo)
BENCHMARKS.register("cirr")(read_cirr)
BENCHMARKS.register("fashioniq")(read_fashioniq)
BENCHMARKS.register("genecis")(read_genecis)

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
