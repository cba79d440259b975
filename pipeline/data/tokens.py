"""Token ids of every caption and of its masked version: what training φ reads.

Written to one folder (`data/tokens/`), row i = caption id i of the ingest table:
    ids.npy      uint16 [N, C]  the caption, open_clip layout: SOT ... EOT, then 0 padding
    masked.npy   uint16 [N, C]  the same with each masked span as ONE placeholder token
    lengths.npy  uint8 [N, 2]   (int16 where C > 255) tokens incl. SOT and EOT of ids, masked
    meta.json    placeholder/SOT/EOT ids, context length, model, strategy, counts
C is the tokenizer's context length. Token 0 is a real token (`!`), so a row's end is its
EOT (`lengths`), never its first 0.

Captions longer than C are truncated as open_clip's tokenizer does (the first C tokens,
the last one replaced by EOT) and counted. A masked caption whose every placeholder was
cut off by truncation becomes `a photo of $`, as in the official LinCIR code (fallback
kind `truncated`; the other kinds are in pipeline/data/masking.py).

Every row is checked: the original has no placeholder id, and the masked one has exactly
one per masked span before truncation; anything else is a bug and raises.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.core import executor as executors
from pipeline.core.errors import PipelineError
from pipeline.core.io import atomic, write_json
from pipeline.core.parallel import processes
from pipeline.core.parquet import read_range, row_ranges, stream
from pipeline.data import masking

CHUNK = 10_000  # captions per tokenizer call and per write
FALLBACK_KINDS = masking.FALLBACK_KINDS + ("truncated",)


@dataclass
class TokensConfig:
    """params.yaml `tokens` (stages/tokens.py)."""

    n_process: int | str = "auto"

    def check(self) -> None:
        processes(self.n_process, "tokens.n_process")


@dataclass(frozen=True)
class Specials:
    sot: int
    eot: int
    placeholder: int


def specials(tokenizer, context_length: int) -> Specials:
    """SOT, EOT and placeholder ids, looked up from the tokenizer itself."""
    empty, one, two, glued = tokenizer(["", masking.PLACEHOLDER, f"{masking.PLACEHOLDER} {masking.PLACEHOLDER}",
                                        masking.PLACEHOLDER * 2], context_length=context_length).tolist()
    sot, eot = empty[0], empty[1]
    if one[:3] != [sot, one[1], eot] or one[1] in (sot, eot):
        raise PipelineError(f"the tokenizer does not encode the placeholder {masking.PLACEHOLDER!r} as one token "
                            f"({one[:4]}...): the masked captions would not work with this backbone")
    placeholder = one[1]
    if two[:4] != [sot, placeholder, placeholder, eot] or placeholder in glued:
        raise PipelineError("the tokenizer merges space-separated placeholders: masking needs one token per placeholder")
    return Specials(sot, eot, placeholder)


def encode(tokenizer, texts: list[str], context_length: int, special: Specials) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows [B, C] truncated as open_clip does, whether each was truncated, and each untruncated
    caption's count of placeholder tokens.

    One tokenizer call for the batch at C + 1 tokens tells which rows are longer than C (EOT
    at position C); only those are encoded again, one by one and untruncated, to count all
    their placeholders.
    """
    c = context_length
    wide = tokenizer(texts, context_length=c + 1).numpy()
    truncated = wide[:, c] == special.eot
    rows = wide[:, :c].copy()
    rows[truncated, c - 1] = special.eot
    placeholders = (wide == special.placeholder).sum(1)
    for i in np.flatnonzero(truncated):
        # a token covers at least one UTF-8 byte of the cleaned text: 2x bytes + 8 is ample
        bound = 2 * len(texts[i].encode("utf-8", "surrogatepass")) + 8
        (full,) = tokenizer([texts[i]], context_length=bound).numpy()
        assert full[-1] != special.eot, "a caption longer than its byte-length bound"
        placeholders[i] = (full == special.placeholder).sum()
    return rows, truncated, placeholders


def read_rows(captions: Path, keywords: Path, batch_size: int) -> Iterator[tuple[int, str, dict]]:
    """(id, text, keyword row) of every caption: the two tables are read side by side, in order."""
    text_batches = stream(captions, batch_size, ["id", "text"])
    keyword_batches = stream(keywords, batch_size)
    texts = ((i, t) for b in text_batches for i, t in zip(b.column("id").to_pylist(), b.column("text").to_pylist()))
    rows = (row for b in keyword_batches for row in b.to_pylist())
    for (caption_id, text), row in zip(texts, rows):
        if row["id"] != caption_id:
            raise PipelineError(f"{keywords} does not match {captions} (id {row['id']} beside {caption_id}): "
                                f"re-run the keywords stage")
        yield caption_id, text, row


def mask_chunk(rows: list[tuple[int, str, dict]], strategy, params: dict) -> tuple[list[str], list[str], np.ndarray, list]:
    """Texts, masked texts, placeholders expected in each, and the fallback kind taken (or None)."""
    texts, masked, expected, kinds = [], [], [], []
    for caption_id, text, row in rows:
        words = masking.words_of(text, row["word_start"], row["word_end"], row["word_pos"])
        spans = list(zip(row["span_start"], row["span_end"]))
        chosen, kind = masking.select(strategy, words, spans, masking.caption_rng(params["seed"], caption_id), params)
        texts.append(text)
        masked.append(masking.mask_text(text, chosen))
        expected.append(len(chosen) or 1)  # no span: FALLBACK_CAPTION has one placeholder
        kinds.append(kind)
    return texts, masked, np.array(expected), kinds


class NpyWriter:
    """A .npy file of known shape written row block by row block, in order.

    Not a writable memmap: the pages of a mapped output count in the process's RSS until
    the kernel writes them back (+670 MB at 2M captions), plain writes leave them to the
    page cache, so the stage's memory does not grow with the corpus.
    """

    def __init__(self, path: str, dtype, shape: tuple[int, int]):
        self.dtype, self.shape, self.rows = np.dtype(dtype), shape, 0
        self.file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.file, header)  # the header np.save / open_memmap write

    def write(self, block: np.ndarray) -> None:
        assert block.shape[1:] == self.shape[1:] and self.rows + len(block) <= self.shape[0], "rows past the shape"
        self.file.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        self.rows += len(block)

    def close(self) -> None:
        self.file.close()


@dataclass
class Chunk:
    """A chunk's token rows and what happened to them."""

    ids: np.ndarray
    masked: np.ndarray
    truncated: dict[str, int]
    fallbacks: dict[str, int]


_WORK: dict = {}  # what tokenize_chunk needs besides the rows: set once a process by _start


def _start(tokenizer, strategy, params: dict, context_length: int, special: Specials, fallback_row) -> None:
    _WORK.update(tokenizer=tokenizer, strategy=strategy, params=params, c=context_length, special=special,
                 fallback_row=fallback_row)


def _start_remote(model_name: str, strategy, params: dict, context_length: int, special: Specials, fallback_row) -> None:
    """_start on a cluster worker: the tokenizer is built there from its name (a few MB not shipped)."""
    from pipeline.model.backbone import get_tokenizer

    _start(get_tokenizer(model_name), strategy, params, context_length, special, fallback_row)


def tokenize_range(task: tuple) -> Chunk:
    """A cluster worker's task: it reads rows [start, stop) of both tables itself, then tokenizes them."""
    captions, keywords, start, stop = task
    texts, rows = read_range(captions, start, stop, ["id", "text"]), read_range(keywords, start, stop).to_pylist()
    batch = list(zip(texts.column("id").to_pylist(), texts.column("text").to_pylist(), rows))
    for caption_id, _, row in batch:
        if row["id"] != caption_id:
            raise PipelineError(f"{keywords} does not match {captions} (id {row['id']} beside {caption_id}): "
                                f"re-run the keywords stage")
    return tokenize_chunk(batch)


def tokenize_chunk(batch: list[tuple[int, str, dict]]) -> Chunk:
    """Masks and tokenizes a chunk of (id, text, keyword row); runs in a worker process when n_process > 1."""
    w = _WORK
    texts, masked_texts, expected, kinds = mask_chunk(batch, w["strategy"], w["params"])
    ids, ids_cut, in_ids = encode(w["tokenizer"], texts, w["c"], w["special"])
    masked, masked_cut, in_masked = encode(w["tokenizer"], masked_texts, w["c"], w["special"])
    check_placeholders(batch, texts, masked_texts, in_ids, in_masked, expected)
    cut_away = (masked == w["special"].placeholder).sum(1) == 0  # every placeholder past the context
    masked[cut_away] = w["fallback_row"]  # the official fallback
    fallbacks = dict.fromkeys(FALLBACK_KINDS, 0)
    for kind in kinds:
        if kind:
            fallbacks[kind] += 1
    fallbacks["truncated"] += int(cut_away.sum())
    if max(ids.max(), masked.max()) >= 1 << 16:
        raise PipelineError(f"token id {max(ids.max(), masked.max())} does not fit in uint16")
    return Chunk(ids.astype(np.uint16), masked.astype(np.uint16),
                 {"ids": int(ids_cut.sum()), "masked": int(masked_cut.sum())}, fallbacks)


def tokenize_captions(captions: Path, keywords: Path, out_dir: Path, tokenizer, params: dict, model_name: str,
                      context_length: int | None = None, chunk: int = CHUNK, n_process: int | str = 1,
                      progress: Callable[[int], object] | None = None,
                      executor: executors.ExecutorConfig | None = None) -> dict:
    """Writes ids/masked/lengths .npy and meta.json to `out_dir`; returns meta.

    `params` is the `masking` section of params.yaml (strategy, n, seed). With n_process > 1
    (or "auto"), chunks are tokenized in worker processes (open_clip's tokenizer is Python:
    one core does ~8k captions/s) and written in order: the same arrays for any count. On a Ray
    `executor`, each task is a block of rows its worker reads from both tables (paths every node
    sees), with the tokenizer of `model_name` built once per worker.
    """
    strategy = masking.check_params(params)
    n_process = processes(n_process, "tokens.n_process")
    c = int(context_length or tokenizer.context_length)
    if getattr(tokenizer, "vocab_size", 0) > 1 << 16:
        raise PipelineError(f"the {model_name} tokenizer has {tokenizer.vocab_size} tokens: ids do not fit in uint16")
    special = specials(tokenizer, c)
    (fallback_row,), _, _ = encode(tokenizer, [masking.FALLBACK_CAPTION], c, special)
    n = pq.ParquetFile(captions).metadata.num_rows
    if n == 0:
        raise PipelineError(f"{captions} has no captions: check params ingest.sources")
    if pq.ParquetFile(keywords).metadata.num_rows != n:
        raise PipelineError(f"{keywords} and {captions} differ in rows: re-run the keywords stage")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    length_dtype = np.uint8 if c <= 255 else np.int16
    files = {name: out_dir / f"{name}.npy" for name in ("ids", "masked", "lengths")}
    fallbacks = dict.fromkeys(FALLBACK_KINDS, 0)
    truncated = {"ids": 0, "masked": 0}
    placeholders = 0
    source = read_rows(captions, keywords, chunk)
    batches = iter(lambda: [row for _, row in zip(range(chunk), source)], [])
    start = (tokenizer, strategy, params, c, special, fallback_row)
    blocks = [(str(Path(captions).resolve()), str(Path(keywords).resolve()), a, b)
              for a, b in row_ranges(captions, (executor or executors.ExecutorConfig()).block_rows)]
    parts = executors.run(executor, executors.Job(tokenize_chunk, batches, _start, start),
                          executors.Job(tokenize_range, blocks, _start_remote, (model_name, *start[1:])), n_process)
    with ExitStack() as outputs:  # the three arrays appear together, when all are complete
        tmp = {name: outputs.enter_context(atomic(path)) for name, path in files.items()}
        arrays = {"ids": NpyWriter(tmp["ids"], np.uint16, (n, c)), "masked": NpyWriter(tmp["masked"], np.uint16, (n, c)),
                  "lengths": NpyWriter(tmp["lengths"], length_dtype, (n, 2))}
        try:
            for part in parts:
                for kind, count in part.fallbacks.items():
                    fallbacks[kind] += count
                for kind, count in part.truncated.items():
                    truncated[kind] += count
                placeholders += int((part.masked == special.placeholder).sum())
                arrays["ids"].write(part.ids)
                arrays["masked"].write(part.masked)
                arrays["lengths"].write(np.stack([(part.ids == special.eot).argmax(1) + 1,
                                                  (part.masked == special.eot).argmax(1) + 1], axis=1))
                if progress:
                    progress(len(part.ids))
        finally:
            for array in arrays.values():
                array.close()
        if arrays["ids"].rows != n:
            raise PipelineError(f"{keywords} ended after {arrays['ids'].rows} of {n} captions: "
                                f"re-run the keywords stage")
    meta = {
        "model": model_name, "context_length": c, "rows": n,
        "placeholder_id": special.placeholder, "sot_id": special.sot, "eot_id": special.eot,
        "strategy": params["strategy"], "n": params.get("n"), "seed": params["seed"],
        "fallbacks": fallbacks, "truncated": truncated, "placeholders_per_caption_mean": placeholders / n,
    }
    write_json(out_dir / "meta.json", meta)
    return meta


def check_placeholders(batch, texts, masked_texts, in_ids: np.ndarray, in_masked: np.ndarray, expected: np.ndarray) -> None:
    """Placeholders: none in a caption, exactly one per masked span in its masked version."""
    for i in np.flatnonzero((in_ids != 0) | (in_masked != expected)):
        raise RuntimeError(f"bug: caption {batch[i][0]} {texts[i]!r} has {in_ids[i]} placeholder tokens (0 expected); "
                           f"masked {masked_texts[i]!r} has {in_masked[i]} ({expected[i]} expected)")


@dataclass
class Tokens:
    """What the tokens stage wrote, memory-mapped: rows are read from disk as they are indexed."""

    ids: np.ndarray  # uint16 [N, C]
    masked: np.ndarray  # uint16 [N, C]
    lengths: np.ndarray  # [N, 2]: tokens incl. SOT and EOT of ids and of masked
    meta: dict

    @property
    def placeholder_id(self) -> int:
        return self.meta["placeholder_id"]

    def __len__(self) -> int:
        return len(self.ids)


def load(out_dir: Path, mmap: bool = True) -> Tokens:
    out_dir = Path(out_dir)
    if not (out_dir / "meta.json").is_file():
        raise PipelineError(f"{out_dir}/meta.json not found: run the tokens stage (dvc repro tokens)")
    mode = "r" if mmap else None
    return Tokens(
        ids=np.load(out_dir / "ids.npy", mmap_mode=mode),
        masked=np.load(out_dir / "masked.npy", mmap_mode=mode),
        lengths=np.load(out_dir / "lengths.npy", mmap_mode=mode),
        meta=json.loads((out_dir / "meta.json").read_text()),
    )

