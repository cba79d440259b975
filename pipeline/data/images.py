"""Image files: where one's pixels come from (a path, maybe a box to crop), reading them as 8-bit
RGB, checking a list of them before any model work, and where an image's object mask lives."""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core.errors import MAX_LISTED, PipelineError

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")  # what `lincir index` looks for
DILATION = 0.7  # GeneCIS' box dilation (official DILATION, vaw_dataset.py)
# PIL's errors for a file it cannot decode; DecompressionBombError is none of the others
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImageSource:
    """Where an image's pixels come from. `box` = [x, y, w, h] crops (GeneCIS attributes)."""

    path: Path
    box: tuple[float, float, float, float] | None = None



class MissingImagesError(PipelineError):
    """Images a benchmark needs that are absent or cannot be opened; `.problems` lists them all."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


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


def crop_to_box(image: Image.Image, box: Sequence[float], dilation: float = DILATION) -> Image.Image:
    """The official GeneCIS attribute crop of `image` around `box` = [x, y, w, h].

    Note the official arithmetic, kept as is: the left/top edges move out by dilation*w/h
    (clipped at 0), and right/bottom = new left/top + (1 + dilation)*w/h (clipped at the
    image size), so the crop grows towards the top-left and ends where the box ends unless
    the left/top edge was clipped.
    """
    x, y, w, h = box
    left, top = max(0, x - dilation * w), max(0, y - dilation * h)
    right = min(image.width, left + (1 + dilation) * w)
    bottom = min(image.height, top + (1 + dilation) * h)
    return pad_to_square(image.crop((left, top, right, bottom)))


def pad_to_square(image: Image.Image) -> Image.Image:
    """Pads the shorter side with black, the image centred (official expand2square)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    background = (0,) if image.mode == "L" else (0, 0, 0)
    square = Image.new(image.mode, (side, side), background)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def mask_file(image_file: str | Path) -> Path:
    """The object mask of an image, both relative to the table's folder."""
    return Path("masks") / image_file
