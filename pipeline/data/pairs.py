"""Image–caption pairs, prepared once for every objective that learns from images: the
captions as the table the keywords and tokens code reads (one row a caption, in order),
`image_of` mapping each caption row to its image, and the images' latents.

A pairs table is a Parquet or CSV file with an image-path column (relative to the table's
folder, or absolute) and a caption column holding a caption or a list of captions; the
world's `data/world/pairs.parquet` is the default. Rows can be restricted to one value of a
`split` column. `path` may also be a webdataset shard (`.tar`) or a folder of them
(pipeline/data/shards.py): their images are written out once, under the stage's output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.core.errors import PipelineError, quoted
from pipeline.core.params import at_least
from pipeline.data.images import mask_file
from pipeline.data.ingest import SCHEMA, normalise
from pipeline.data.shards import read_shards


@dataclass
class PairsConfig:
    """params.yaml `pairs` (stages/pairs.py)."""

    path: str = "data/world/pairs.parquet"
    image_column: str = "file"
    caption_column: str = "captions"  # for shards: the field of each sample's .json (when it has no .txt)
    split: str = "train"  # rows whose `split` column is this; "" takes every row
    views: int = 4  # augmented views of each image embedded (pipeline/data/views.py: Pic2Word's crops); 0: none
    view_scale: list[float] = field(default_factory=lambda: [0.9, 1.0])  # the crops' area range (Pic2Word's)
    view_seed: int = 0  # the crops drawn

    def check(self) -> None:
        at_least("pairs.views", self.views, 0)
        at_least("pairs.view_seed", self.view_seed, 0)
        if len(self.view_scale) != 2 or not 0 < self.view_scale[0] <= self.view_scale[1] <= 1:
            raise PipelineError(f"params.yaml: pairs.view_scale must be [low, high] with 0 < low <= high <= 1 "
                                f"(the fraction of the image a crop covers), not {self.view_scale!r}")


def read_pairs(cfg: PairsConfig, into: Path | None = None) -> tuple[list[Path], list[list[str]], int]:
    """(image paths, captions of each image, samples skipped), in the table's or the shards'
    order. Shards' images are written under `into`; a table's rows are never skipped."""
    path = Path(cfg.path)
    readers = {".parquet": lambda p: pq.read_table(p), ".csv": lambda p: pacsv.read_csv(p)}
    if not path.exists():
        raise PipelineError(f"pairs.path {path} not found (for the world, run the world stage)")
    if path.is_dir() or path.suffix == ".tar":
        if cfg.split:
            raise PipelineError(f"pairs.path {path}: webdataset shards have no `split` column: set pairs.split to \"\"")
        if into is None:
            raise PipelineError("webdataset shards need a folder to write their images to")
        return read_shards(path, cfg.caption_column, into)
    if path.suffix not in readers:
        raise PipelineError(f"pairs.path {path}: a .parquet or .csv table of image paths and captions, "
                            "or webdataset shards (a .tar, or a folder of them)")
    try:
        table = readers[path.suffix](path)
    except (pa.ArrowInvalid, OSError) as e:
        raise PipelineError(f"{path} could not be read: {str(e)[:200]}") from None
    for column in (cfg.image_column, cfg.caption_column):
        if column not in table.column_names:
            raise PipelineError(f"{path} has no column {column!r}; its columns: {', '.join(table.column_names)}")
    if cfg.split:
        if "split" not in table.column_names:
            raise PipelineError(f"{path} has no `split` column: set pairs.split to \"\" to take every row")
        table = table.filter(pa.compute.equal(table["split"], cfg.split))
    if table.num_rows == 0:
        raise PipelineError(f"{path} has no pairs{f' with split {cfg.split!r}' if cfg.split else ''}")
    images, captions = [], []
    for row, (image, caption) in enumerate(zip(table[cfg.image_column].to_pylist(),
                                               table[cfg.caption_column].to_pylist())):
        texts = [caption] if isinstance(caption, str) else caption
        if not isinstance(image, str) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise PipelineError(f"{path} row {row}: expected an image path and a caption or a list of captions, "
                                f"got {quoted(image)} and {quoted(caption)}")
        images.append(Path(image) if Path(image).is_absolute() else path.parent / image)
        captions.append(texts)
    return images, captions, 0


def write_captions(captions: list[list[str]], out: Path) -> np.ndarray:
    """The captions table (ingest's schema, every caption kept, normalised like ingest does);
    returns image_of: the image row of each caption row."""
    texts = [normalise(t)[0] for cs in captions for t in cs]
    image_of = np.repeat(np.arange(len(captions)), [len(cs) for cs in captions])
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": pa.array(np.arange(len(texts)), pa.int64()), "text": pa.array(texts, pa.string()),
                             "source": pa.array(["pairs"] * len(texts), pa.string())}, schema=SCHEMA), out)
    return image_of


def mask_path(image: Path, cfg: PairsConfig) -> Path | None:
    """Where an image's true object mask would be (pipeline/data/images.py); None for an image
    outside the table's folder."""
    table = Path(cfg.path).parent
    try:
        return table / mask_file(image.relative_to(table))
    except ValueError:  # an absolute path outside the table's folder: no mask by this convention
        return None


def write_images(images: list[Path], cfg: PairsConfig, out: Path) -> None:
    pq.write_table(pa.table({"path": [str(p) for p in images], "mask": [str(mask_path(p, cfg) or "") for p in images]}), out)


def caption_nouns(pairs: Path) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """(captions, the character spans of each caption's NOUN words), from the pairs stage's
    captions.parquet and keywords.parquet (spaCy's universal POS)."""
    texts = pq.read_table(pairs / "captions.parquet", columns=["text"])["text"].to_pylist()
    tags = pq.read_table(pairs / "keywords.parquet", columns=["word_start", "word_end", "word_pos"]).to_pylist()
    spans = [[(a, b) for a, b, pos in zip(t["word_start"], t["word_end"], t["word_pos"]) if pos == "NOUN"]
             for t in tags]
    return texts, spans
