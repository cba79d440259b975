"""Where an image's true object mask lives: masks/<the image's path>, beside the table that
lists the image. The world writes them for its pairs images (pipeline/world); the CAM check
(pipeline/cam.py) and the masked-inversion oracle (pipeline/methods/masked_inversion.py) read them."""
from __future__ import annotations

from pathlib import Path


def mask_file(image_file: str | Path) -> Path:
    """The object mask of an image, both relative to the table's folder."""
    return Path("masks") / image_file
