"""An image folder -> image latents + a FAISS index + a Parquet table of paths, in one folder.

    <out>/index.json      root folder, backbone identity, phi (path, sha256, widths), index kind,
                          files skipped as unreadable, and the size, mtime and sha256 of each part below
    <out>/images.parquet  path (relative to root), size, mtime_ns: row i of the index is image i
    <out>/latents.npy     unnormalised image latents (phi reads them; the index holds them normalised)
    <out>/gallery.faiss   pipeline.evaluation.gallery.build_index over them (flat, ivf or hnsw)

Updating is incremental: a file whose size and modification time are unchanged keeps its
latent, new or changed files are embedded, removed ones dropped; unreadable ones (and names that
are not UTF-8) are listed in index.json and skipped. The backbone is recorded so that the query
side (`lincir search`) always uses the one that embedded the gallery.

The parts are trusted only together: each is checked against what index.json recorded of it (its
size and mtime, or else its sha256, as make and DVC trust a file) and against the others (rows,
widths, ids), so a part from another index, a truncated one or one edited by hand is refused, never
searched. An update writes every file under a temporary name first and renames them only when all
are written, index.json last: a failed update (a full disk) leaves the previous index as it was. An
index that cannot be trusted is embedded again in full by the next `lincir index`.
"""
from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from pipeline.core import io
from pipeline.core.errors import PipelineError, quoted
from pipeline.core.executor import ExecutorConfig
from pipeline.data.images import SUFFIXES, ImageSource
from pipeline.evaluation import gallery
from pipeline.evaluation.ivfpq import DEFAULT_BUDGET_GB
from pipeline.model import backbone as backbones
from pipeline.model.phi import check_widths, load_phi, read_phi_checkpoint, widths
from pipeline.model.text_encoder import text_tower

RECORD, TABLE, LATENTS, FAISS = "index.json", "images.parquet", "latents.npy", "gallery.faiss"
PARTS = (TABLE, LATENTS, FAISS)
OUTSIDE = r"^/|(^|/)\.\.(/|$)|\x00"  # a table path that is absolute or climbs out of the indexed folder
COLUMNS = {"path": pl.String, "size": pl.Int64, "mtime_ns": pl.Int64}


def scan(folder: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    """Every image file under `folder` (recursively; suffixes matched case-insensitively), sorted by
    path, and the files skipped because their names are not UTF-8 (no table or JSON can hold them)."""
    rows, skipped = [], {}
    for path in folder.rglob("*"):
        if path.suffix.lower() not in SUFFIXES:
            continue
        relative = path.relative_to(folder).as_posix()
        try:
            relative.encode("utf-8")
            stat = path.stat() if path.is_file() else None
        except UnicodeEncodeError:
            shown = os.fsencode(relative).decode("utf-8", "backslashreplace")
            skipped[shown] = "the file name is not valid UTF-8: rename the file to index it"
            continue
        except OSError:  # gone since the listing, or a link to nowhere
            continue
        if stat is not None:
            rows.append({"path": relative, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return pl.DataFrame(rows, schema=COLUMNS).sort("path"), skipped


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
    index: faiss.Index | None = None  # read for a search; an update builds its own


class DamagedIndex(PipelineError):
    """An index whose files cannot be trusted together: searches refuse it, `lincir index` embeds anew."""

    def __init__(self, out: Path, why: str):
        super().__init__(f"{why}: the index at {out} cannot be trusted; build it again with "
                         f"`lincir index <folder> --out {out}`")
        self.why = why


def read(out: Path, with_index: bool = True) -> Stored:
    """The index at `out`, each part checked against index.json and against the others."""
    out = Path(out)
    if not (out / RECORD).is_file():
        raise PipelineError(f"{out} is not an index (no {RECORD}): build one with `lincir index <folder> --out {out}`")
    record = _record(out)
    for name in PARTS if with_index else (TABLE, LATENTS):
        _check_part(out, name, record["parts"].get(name))
    table = _load(out, TABLE, pl.read_parquet)
    # mapped, not read: a search reads a reference's row, an ivfpq index holds the rest compressed
    latents = _load(out, LATENTS, lambda path: np.load(path, allow_pickle=False, mmap_mode="r"))
    n = record["images"]
    if dict(table.schema) != COLUMNS or len(table) != n:
        raise DamagedIndex(out, f"{out / TABLE} has columns {dict(table.schema)} and {len(table)} rows; "
                                f"{RECORD} says {n} rows of {COLUMNS}")
    path = table["path"]  # polars, not a Python loop: an index may hold millions
    if not (path.is_sorted() and path.is_unique().all()) or path.str.contains(OUTSIDE).any():
        raise DamagedIndex(out, f"{out / TABLE}: paths are not sorted, unique and inside the indexed folder")
    # finite values were checked when written (update), and the file is the one written
    if latents.ndim != 2 or latents.dtype != np.float32 or len(latents) != n:
        raise DamagedIndex(out, f"{out / LATENTS} holds {latents.dtype} {latents.shape}, not {n} float32 rows")
    index = None
    if with_index:
        index = _load(out, FAISS, lambda path: faiss.read_index(str(path)))
        ids = faiss.vector_to_array(index.id_map) if hasattr(index, "id_map") else None
        if index.ntotal != n or index.d != latents.shape[1] or ids is None or not np.array_equal(ids, np.arange(n)):
            raise DamagedIndex(out, f"{out / FAISS} holds {index.ntotal} vectors of width {index.d}, not the "
                                    f"{n} rows of width {latents.shape[1]} of {LATENTS} with ids 0..{n - 1}")
    return Stored(record, table, latents, index)


# what index.json holds: dotted key -> type
RECORD_KEYS = {"root": str, "backbone": dict, "backbone.model": str, "backbone.pretrained": str,
               "backbone.sha256": str, "phi": dict, "phi.path": str, "phi.sha256": str, "index": str,
               "images": int, "skipped": dict, "parts": dict}
KIND_NAMES = {str: "a string", int: "a whole number", dict: "a mapping"}


def _record(out: Path) -> dict:
    try:
        record = json.loads((out / RECORD).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DamagedIndex(out, f"{out / RECORD} is not JSON ({str(e)[:100]})") from None
    for key, kind in RECORD_KEYS.items():
        node = record
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, bool) or not isinstance(node, kind):
            raise DamagedIndex(out, f"{out / RECORD}: {key} is {quoted(node)}, not {KIND_NAMES[kind]}")
    return record


def _check_part(out: Path, name: str, recorded) -> None:
    """`out/name` is the file index.json recorded: the same size and mtime, or else the same sha256
    (a copied index has new mtimes and is hashed once a search)."""
    path = out / name
    if not isinstance(recorded, dict) or not {"size", "mtime_ns", "sha256"} <= set(recorded):
        raise DamagedIndex(out, f"{out / RECORD} records no size and sha256 of {name} (an index written by an "
                                f"earlier version, or edited)")
    if not path.is_file():
        raise DamagedIndex(out, f"{path} is missing")
    if io.file_stat(path) == [recorded["size"], recorded["mtime_ns"]]:
        return
    if path.stat().st_size != recorded["size"] or io.file_sha256(path) != recorded["sha256"]:
        raise DamagedIndex(out, f"{path} is not the file this index wrote (truncated, edited, or another index's)")


def _load(out: Path, name: str, load):
    try:
        return load(out / name)
    except Exception as e:  # noqa: BLE001  (parquet, numpy and faiss each raise their own kinds)
        raise DamagedIndex(out, f"{out / name} cannot be read ({type(e).__name__}: {str(e)[:100]})") from None


def update(folder: Path, out: Path, *, backbone_file: Path, phi: Path, kind: str, batch_size: int = 64,
           num_workers: int = 0, device: str = "cpu", executor: ExecutorConfig | None = None,
           memory_gb: float = DEFAULT_BUDGET_GB) -> dict:
    """Brings the index at `out` up to date with `folder`; returns what changed. A Ray `executor`
    embeds the new images on its cluster; the index is built here."""
    folder, out = Path(folder).resolve(), Path(out)
    if not folder.is_dir():
        raise PipelineError(f"{folder} is not a folder of images")
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out {out} is a file: an index is a folder; give a new folder or an index's")
    gallery.INDEX.get(kind)  # a wrong kind fails before any model work
    identity = backbones.read_identity(backbone_file)
    # backbone.json holds the weights' path relative to the repository: search may run elsewhere
    identity["pretrained"] = str(Path(identity["pretrained"]).resolve())
    previous = None
    if (out / RECORD).is_file():
        try:
            previous = read(out, with_index=False)
        except DamagedIndex as e:
            print(f"warning: {e.why}; embedding every image into {out} again", file=sys.stderr)
    same = lambda a, b: (a["model"], a["sha256"]) == (b["model"], b["sha256"])  # noqa: E731  (a moved file is fine)
    if previous and not same(previous.record["backbone"], identity):
        raise PipelineError(f"{out} was built with backbone {previous.record['backbone']}, not {identity} "
                            f"({backbone_file}): its latents cannot be mixed; index into a new --out")
    backbones.check_weights(identity, f"{backbone_file}: re-run the backbone stage")
    identity["stat"] = io.file_stat(identity["pretrained"])  # searches skip re-hashing an unchanged file
    backbone = backbones.from_identity(identity, device)
    record = {"root": str(folder), "backbone": identity, "phi": phi_record(phi, backbone), "index": kind}
    writable(out)  # after the checks above, which leave nothing behind; before hours of embedding

    files, misnamed = scan(folder)
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
        batch_size=batch_size, num_workers=num_workers, device=device, skip_unreadable=True, executor=executor,
        identity=identity)
    finite = np.isfinite(new_latents).all(axis=1) if rows else np.zeros(0, bool)
    for r in np.flatnonzero(~finite):  # a model that gives NaN for some picture: never into the index
        problems[rows[r]] = "the backbone's latent of this image is not finite (NaN or inf)"
    rows, new_latents = [r for r, ok in zip(rows, finite) if ok], new_latents[finite] if rows else new_latents
    embedded = todo[rows]
    table = pl.concat([reused, embedded]).drop("old_row")
    parts = ([previous.latents[reused["old_row"].to_numpy()]] if len(reused) else []) + ([new_latents] if rows else [])
    if not parts:
        raise PipelineError(f"no readable image under {folder} (looked for {', '.join(SUFFIXES)})"
                            + (f"; {len(problems) + len(misnamed)} unreadable" if problems or misnamed else ""))
    latents = np.concatenate(parts)
    order = np.argsort(table["path"].to_numpy(), kind="stable")  # rows sorted by path, whatever was re-embedded
    table, latents = table[order], latents[order]
    record["skipped"] = dict(sorted({**misnamed, **{todo["path"][i]: m for i, m in problems.items()}}.items()))
    record["images"] = len(table)
    write(out, record, table, latents, gallery.build_index(latents, np.arange(len(table)), kind, memory_gb))
    removed = len(set(previous.table["path"]) - set(files["path"])) if old is not None else 0
    return {"images": len(table), "embedded": len(rows), "reused": len(reused), "removed": removed,
            "skipped": record["skipped"]}


def writable(out: Path) -> None:
    """Creates `out` and writes a file there, or says why it cannot."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".lincir-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PipelineError(f"cannot write the index to {out}: {e.strerror}") from None


def write(out: Path, record: dict, table: pl.DataFrame, latents: np.ndarray, index: faiss.Index) -> None:
    """Every file under a temporary name first, then renamed: the parts, and index.json (which records
    them) last. A write that fails (a full disk) leaves the previous index whole."""
    try:
        with ExitStack() as stack:  # renames in reverse order of entry: the record last
            tmp = {name: stack.enter_context(io.atomic(out / name)) for name in (RECORD, *PARTS)}
            table.write_parquet(tmp[TABLE])
            with open(tmp[LATENTS], "wb") as f:  # a file: np.save would add ".npy" to the temporary name
                np.save(f, latents)
            faiss.write_index(index, str(tmp[FAISS]))
            record["parts"] = {name: {"size": io.file_stat(tmp[name])[0], "mtime_ns": io.file_stat(tmp[name])[1],
                                      "sha256": io.file_sha256(tmp[name])} for name in PARTS}
            tmp[RECORD].write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except (RuntimeError, pl.exceptions.PolarsError) as e:  # faiss and polars report a failed write so
        raise io.write_error(out, e) from None


def load_faiss(out: Path) -> faiss.Index:
    return read(out).index
