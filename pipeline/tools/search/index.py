"""An image folder -> image latents + a FAISS index + a Parquet table of paths, in one folder.

    <out>/index.json      root folder, backbone identity, phi (path, sha256, widths), index kind,
                          files skipped as unreadable
    <out>/images.parquet  path (relative to root), size, mtime_ns: row i of the index is image i
    <out>/latents.npy     unnormalised image latents (phi reads them; the index holds them normalised)
    <out>/gallery.faiss   pipeline.evaluation.gallery.build_index over them (flat, ivf or hnsw)

Updating is incremental: a file whose size and modification time are unchanged keeps its
latent, new or changed files are embedded, removed ones dropped; unreadable ones are listed
in index.json and skipped. The backbone is recorded so that the query side (`lincir search`)
always uses the one that embedded the gallery.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from pipeline.core import io
from pipeline.core.errors import PipelineError
from pipeline.data.images import SUFFIXES, ImageSource
from pipeline.evaluation import gallery
from pipeline.model import backbone as backbones
from pipeline.model.phi import check_widths, load_phi, read_phi_checkpoint, widths
from pipeline.model.text_encoder import text_tower

# what PIL decodes; matched case-insensitively
RECORD, TABLE, LATENTS, FAISS = "index.json", "images.parquet", "latents.npy", "gallery.faiss"


def scan(folder: Path) -> pl.DataFrame:
    """Every image file under `folder` (recursively), sorted by path."""
    rows = []
    for path in folder.rglob("*"):
        if path.suffix.lower() in SUFFIXES and path.is_file():
            stat = path.stat()
            rows.append({"path": path.relative_to(folder).as_posix(), "size": stat.st_size,
                         "mtime_ns": stat.st_mtime_ns})
    return pl.DataFrame(rows, schema={"path": pl.String, "size": pl.Int64, "mtime_ns": pl.Int64}).sort("path")


def load_checked_phi(path: Path, backbone: backbones.Backbone, device: str = "cpu"):
    """phi from `path` (either checkpoint format), refused unless its widths are the backbone's."""
    phi = load_phi(path, device)
    check_widths(phi, backbones.embed_dim(backbone), text_tower(backbone.model, backbone.tokenizer).width, f"phi {path}")
    return phi


def phi_record(path: Path, backbone: backbones.Backbone) -> dict:
    """phi's file, hash and widths, after checking the widths against the backbone's."""
    config, _ = read_phi_checkpoint(path)
    d, w = widths(load_checked_phi(path, backbone))
    return {"path": str(Path(path).resolve()), "sha256": io.file_sha256(path), "variant": config["variant"],
            "embed_dim": d, "token_width": w}


@dataclass
class Stored:
    record: dict
    table: pl.DataFrame
    latents: np.ndarray


def read(out: Path) -> Stored:
    out = Path(out)
    if not (out / RECORD).is_file():
        raise PipelineError(f"{out} is not an index (no {RECORD}): build one with `lincir index <folder> --out {out}`")
    return Stored(json.loads((out / RECORD).read_text()), pl.read_parquet(out / TABLE), np.load(out / LATENTS))


def update(folder: Path, out: Path, *, backbone_file: Path, phi: Path, kind: str, batch_size: int = 64,
           num_workers: int = 0, device: str = "cpu") -> dict:
    """Brings the index at `out` up to date with `folder`; returns what changed."""
    folder, out = Path(folder).resolve(), Path(out)
    if not folder.is_dir():
        raise PipelineError(f"{folder} is not a folder of images")
    gallery.INDEX.get(kind)  # a wrong kind fails before any model work
    identity = backbones.read_identity(backbone_file)
    # backbone.json holds the weights' path relative to the repository: search may run elsewhere
    identity["pretrained"] = str(Path(identity["pretrained"]).resolve())
    previous = read(out) if (out / RECORD).is_file() else None
    same = lambda a, b: (a["model"], a["sha256"]) == (b["model"], b["sha256"])  # noqa: E731  (a moved file is fine)
    if previous and not same(previous.record["backbone"], identity):
        raise PipelineError(f"{out} was built with backbone {previous.record['backbone']}, not {identity} "
                            f"({backbone_file}): its latents cannot be mixed; index into a new --out")
    backbones.check_weights(identity, f"{backbone_file}: re-run the backbone stage")
    identity["stat"] = io.file_stat(identity["pretrained"])  # searches skip re-hashing an unchanged file
    backbone = backbones.from_identity(identity, device)
    record = {"root": str(folder), "backbone": identity, "phi": phi_record(phi, backbone), "index": kind}

    files = scan(folder)
    old = previous.table.with_row_index("old_row") if previous and previous.record["root"] == str(folder) else None
    if old is not None:
        files = files.join(old.select("path", "size", "mtime_ns", "old_row"), on=["path", "size", "mtime_ns"],
                           how="left")
    else:
        files = files.with_columns(old_row=pl.lit(None, pl.UInt32))
    reused = files.filter(pl.col("old_row").is_not_null())
    todo = files.filter(pl.col("old_row").is_null())
    new_latents, rows, problems = gallery.embed_readable(
        backbone.model, backbone.preprocess, [ImageSource(folder / p) for p in todo["path"]],
        batch_size=batch_size, num_workers=num_workers, device=device, skip_unreadable=True)
    embedded = todo[rows]
    table = pl.concat([reused, embedded]).drop("old_row")
    parts = ([previous.latents[reused["old_row"].to_numpy()]] if len(reused) else []) + ([new_latents] if rows else [])
    if not parts:
        raise PipelineError(f"no readable image under {folder} (looked for {', '.join(SUFFIXES)})"
                            + (f"; {len(problems)} unreadable" if problems else ""))
    latents = np.concatenate(parts)
    order = np.argsort(table["path"].to_numpy(), kind="stable")  # rows sorted by path, whatever was re-embedded
    table, latents = table[order], latents[order]
    record["skipped"] = {todo["path"][i]: message for i, message in sorted(problems.items())}
    record["images"] = len(table)
    write(out, record, table, latents, gallery.build_index(latents, np.arange(len(table)), kind))
    removed = len(set(previous.table["path"]) - set(files["path"])) if old is not None else 0
    return {"images": len(table), "embedded": len(rows), "reused": len(reused), "removed": removed,
            "skipped": record["skipped"]}


def write(out: Path, record: dict, table: pl.DataFrame, latents: np.ndarray, index: faiss.Index) -> None:
    """index.json goes first and comes back last: after an interrupted write there is no record,
    and the next run embeds everything again rather than trust a half-written table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / RECORD).unlink(missing_ok=True)
    table.write_parquet(out / TABLE)
    np.save(out / LATENTS, latents)
    faiss.write_index(index, str(out / FAISS))
    (out / RECORD).write_text(json.dumps(record, indent=2) + "\n")


def load_faiss(out: Path) -> faiss.Index:
    return faiss.read_index(str(Path(out) / FAISS))
