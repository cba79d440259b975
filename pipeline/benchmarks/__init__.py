"""The benchmarks by name, and the two things every caller does first with one.

    bench = load_benchmark("cirr", root=Path("datasets/CIRR"), split="val")
    check_images(bench)              # before any model work
    image = open_image(bench.images[name])

Readers live one per module (circo, cirr, fashioniq, genecis); `groups` selects FashionIQ
categories or GeneCIS tasks.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.benchmarks.base import MAX_LISTED, Benchmark, ImageSource, Query
from pipeline.benchmarks.circo import read_circo
from pipeline.benchmarks.cirr import read_cirr
from pipeline.benchmarks.fashioniq import read_fashioniq
from pipeline.benchmarks.genecis import crop_to_box, read_genecis
from pipeline.core.errors import PipelineError, quoted
from pipeline.core.params import typed
from pipeline.core.registry import Registry

__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkEntry", "ImageSource", "MissingImagesError", "Query",
           "check_benchmarks", "check_images", "check_paths", "from_params", "load_benchmark", "open_image", "to_rgb"]

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
        checked[name] = typed(BenchmarkEntry, entry, f"benchmarks.{name}")
    return checked


def from_params(params: dict, name: str, split: str | None = None) -> Benchmark:
    """The benchmark `name` of params.yaml's `benchmarks` list, read from its root; its own
    split unless `split` is given (`lincir submit` reads the test split)."""
    entries = check_benchmarks(params.get("benchmarks"))
    if name not in entries:
        raise PipelineError(f"no benchmark named {quoted(name)} in params.yaml; names: {', '.join(entries)}")
    b = entries[name]
    return load_benchmark(b.kind, Path(b.root), split or b.split, b.groups)


class MissingImagesError(PipelineError):
    """Images a benchmark needs that are absent or cannot be opened; `.problems` lists them all."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


def check_images(bench: Benchmark, workers: int = 8) -> None:
    """Raises MissingImagesError naming the missing or unreadable image files and their count.

    Each file must exist and decode whole with PIL (a truncated body is found here, before
    any model work, not half-way through embedding); JPEGs decode at reduced scale, which
    still reads every byte. Files are checked once even where several crops share one.
    """
    check_paths([source.path for source in bench.images.values()], f"{bench.name} {bench.split}", workers)


def check_paths(paths: Sequence[Path], what: str, workers: int = 8) -> None:
    """check_images for a list of image files; `what` names them in the message."""
    paths = sorted(set(paths))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = [p for p in pool.map(_image_problem, paths) if p]
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise MissingImagesError(
            f"{what}: {len(problems)} of {len(paths)} image files are missing or unreadable:\n  {listed}{more}",
            problems,
        )


# PIL's errors for a file it cannot decode; DecompressionBombError is none of the others
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _image_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path} (missing)"
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale, every byte is still read
            image.load()
    except IMAGE_ERRORS as e:
        return f"{path} (unreadable: {type(e).__name__}: {str(e)[:200]})"
    return None


def open_image(source: ImageSource) -> Image.Image:
    """The pixels of one benchmark image: the file, cropped where the source has a box (boxes
    come from GeneCIS attribute tasks, whose official crop is dilated and padded to square)."""
    try:
        with Image.open(source.path) as image:
            image.load()
            return crop_to_box(image, source.box) if source.box else image.copy()
    except IMAGE_ERRORS as e:
        raise PipelineError(f"cannot read image {source.path}: {type(e).__name__}: {str(e)[:200]}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB. 16- and 32-bit greyscale (PNG "I;16", "I") are scaled to 8 bits; PIL's
    convert("RGB") would clip every value above 255 to white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(values * (255.0 if values.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")
