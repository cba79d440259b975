"""Answering a query from an index built by `lincir index`.

A query has a reference image, a condition text, or both (SEARCH_MODES):
- composed: LinCIR's `a photo of $ that {condition}` with `$` = phi(reference latent)
  (pipeline.evaluation.queries.composed_queries, the benchmarks' own query);
- image: the reference latent alone (nearest images);
- text: the condition alone (text -> image retrieval).
The reference is an entry of the index (its stored latent; it is left out of its own
results) or an image file / uploaded bytes, embedded like the gallery was.
"""
from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import torch

from pipeline.core import io
from pipeline.core.errors import PipelineError, quoted
from pipeline.core.placeholder import PLACEHOLDER
from pipeline.core.registry import Registry
from pipeline.data.images import ImageSource
from pipeline.evaluation import gallery
from pipeline.evaluation.queries import TEMPLATE, QueryContext, composed_queries, encode_texts, query_context
from pipeline.model import backbone as backbones
from pipeline.tools.search import index as search_index

SEARCH_MODES = Registry("search mode")
MEASURE = 1000  # tokens a condition is measured to (longer ones are refused, not cut)


@dataclass
class Searcher:
    root: Path  # the indexed folder
    paths: list[str]  # index row -> path under root
    row: dict[str, int]
    index: object  # faiss index over the normalised latents, ids = rows
    ctx: QueryContext  # latents, text tower, template
    phi: torch.nn.Module
    backbone: backbones.Backbone
    record: dict


@dataclass
class Reference:
    latent: np.ndarray  # [d], unnormalised
    row: int | None  # index row when the reference is an index entry


def open_index(out: Path, phi: Path | None = None, device: str = "cpu", template: str = TEMPLATE) -> Searcher:
    """The index at `out` with the backbone that built it and the phi recorded with it (or
    `phi`, checked against that backbone); refuses files that changed since."""
    stored = search_index.read(out)
    record = stored.record
    ident = record["backbone"]
    backbones.check_weights(ident, f"{out / search_index.RECORD}: rebuild the index with `lincir index`")
    phi_path = Path(phi or record["phi"]["path"])
    if phi is None and (not phi_path.is_file() or io.file_sha256(phi_path) != record["phi"]["sha256"]):
        raise PipelineError(f"phi {phi_path} recorded in {out / search_index.RECORD} is missing or changed since indexing: "
                            f"re-run `lincir index` or pass --phi")
    backbone = backbones.from_identity(ident, device)
    if stored.latents.shape[1] != backbones.embed_dim(backbone):
        raise search_index.DamagedIndex(out, f"{out / search_index.LATENTS} holds latents of width "
                                             f"{stored.latents.shape[1]}, not the backbone's")
    model_phi = search_index.load_checked_phi(phi_path, backbone, device)
    paths = stored.table["path"].to_list()
    ctx = query_context(backbone, paths, stored.latents, {"trained": model_phi}, template=template,
                        normalize_image_latent=False, device=device)
    return Searcher(Path(record["root"]), paths, ctx.row, gallery.on_gpus(stored.index), ctx, model_phi,
                    backbone, record)


def reference(s: Searcher, image) -> Reference:
    """`image`: an index entry (its path under the root), an image file, or uploaded bytes."""
    entry = None if isinstance(image, bytes) else _entry(s, image)
    if entry is not None:
        return Reference(np.array(s.ctx.latents[s.row[entry]]), s.row[entry])  # a copy of one row of the mapped file
    if isinstance(image, bytes):
        source = BytesIO(image)
    elif Path(image).is_file():
        source = Path(image)
    else:
        raise PipelineError(f"reference {image!r} is neither an entry of the index nor an image file")
    latents, _, problems = gallery.embed_readable(
        s.backbone.model, s.backbone.preprocess, [ImageSource(source)], batch_size=1, num_workers=0,
        device=s.ctx.device, skip_unreadable=True, progress=False)
    if problems:
        raise PipelineError(f"reference is not a readable image: {problems[0]}")
    return Reference(latents[0], None)


def _entry(s: Searcher, image) -> str | None:
    """The index entry `image` names: a path as listed, or the file's own path under the root."""
    if str(image) in s.row:
        return str(image)
    try:
        relative = Path(image).resolve().relative_to(s.root).as_posix()
    except (ValueError, OSError):
        return None
    return relative if relative in s.row else None


SEARCH_MODES.register("composed")(
    lambda s, ref, text: composed_queries(s.ctx, ref.latent[None], [text], s.phi)[0])
SEARCH_MODES.register("image")(lambda s, ref, text: ref.latent)
SEARCH_MODES.register("text")(lambda s, ref, text: encode_texts(s.ctx, [text])[0])


def mode_of(has_image: bool, has_text: bool) -> str:
    if not (has_image or has_text):
        raise PipelineError("a query needs a reference image, a condition text, or both")
    return {(True, True): "composed", (True, False): "image", (False, True): "text"}[has_image, has_text]


def check_condition(s: Searcher, text: str, composed: bool) -> None:
    """A condition the text encoder reads whole and as written: none cut at the context length
    without a word, no `$`, which the query's template turns into phi's token (ingestion strips it
    from every training caption for the same reason)."""
    ids = s.ctx.tokenizer([text], context_length=MEASURE)[0]
    if (ids == s.ctx.tower.placeholder_id).any():
        raise PipelineError(f"the condition {quoted(text)} contains '{PLACEHOLDER}', which stands for the reference "
                            f"image in the query; leave it out")
    prompt = s.ctx.template.format(text) if composed else text
    length = int(torch.count_nonzero(s.ctx.tokenizer([prompt], context_length=MEASURE)[0]))
    context = s.ctx.tower.module.positional_embedding.shape[0]
    if length > context:
        raise PipelineError(f"the query {quoted(prompt)} is {length} tokens long, more than the {context} the text "
                            f"encoder reads: shorten the condition (it would be cut without a word)")


def search(s: Searcher, image=None, text: str | None = None, k: int = 20) -> tuple[str, list[tuple[str, float]]]:
    """(mode, [(path, cosine similarity)] best first). The reference, when it is an index
    entry, is left out of its own results (as CIRR does)."""
    text = (text or "").strip() or None
    if k < 1:
        raise PipelineError(f"k must be at least 1, not {k}")
    mode = mode_of(image is not None, text is not None)
    if text is not None:
        check_condition(s, text, mode == "composed")
    ref = reference(s, image) if image is not None else None
    feature = gallery.normalise(SEARCH_MODES.get(mode)(s, ref, text)[None].astype(np.float32))
    skip = ref.row if ref is not None else None
    scores, rows = s.index.search(feature, min(k + (skip is not None), s.index.ntotal))
    hits = [(s.paths[r], float(c)) for r, c in zip(rows[0], scores[0]) if r >= 0 and r != skip]
    return mode, hits[:k]
