"""Caption corpus ingestion: caption sources -> one Parquet table (`id`, `text`, `source`).

A source is a local caption file (`path:`) or a Hugging Face dataset (`hf:`, read through
pipeline/data/hf_captions.py); SOURCE_KINDS maps each kind to its checks and its reader.

Each caption is normalised once here, so every later stage sees the same text:
- HTML entities are decoded (CLIP's tokenizer decodes them too, and `&#36;` would
  otherwise come back as a `$`);
- every `$` is stripped (and the fullwidth `＄`, which the tokenizer's ftfy turns into
  `$`): `$` is the placeholder token, so the only `$` tokens are placeholders;
- whitespace runs (unicode spaces, tabs, newlines, zero-width spaces) become one space.
Empty captions and exact duplicates (after normalisation) are dropped and counted; so are
JSONL records without the caption field (`missing`). A value that is not text (a number
in a JSONL field, a numeric or list Parquet column) is an error naming file and line.

Memory does not grow with the corpus: sources are read and written in chunks, and
duplicates are found through 8-byte hashes (HashSet), never by holding the texts.
"""
from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from hashlib import blake2b
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.core.errors import PipelineError, quoted
from pipeline.core.io import atomic
from pipeline.core.placeholder import PLACEHOLDER  # stripped from every caption here
from pipeline.core.registry import Registry
from pipeline.data import hf_captions

SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string()), ("source", pa.string())])
CHUNK = 100_000  # captions per read and per Parquet row group
COMMON_KEYS = {"name", "max_captions"}  # keys of every source kind
DOLLARS = (PLACEHOLDER, "\uff04")  # `$` and FULLWIDTH DOLLAR SIGN, which ftfy maps to `$`
ZERO_WIDTH = ("\u200b", "\ufeff")  # zero-width space, BOM: not whitespace to str.split()

# A reader yields lists of raw caption values of at most `chunk` items: a str, None for a
# null, or MISSING for a JSONL record without the field (counted apart from empty ones).
class _Missing:
    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()
Reader = Callable[[Path, "str | None", int], Iterator[list]]
READERS: Registry[Reader] = Registry("caption file format")


@READERS.register(".txt")
def read_txt(path: Path, column: str | None, chunk: int) -> Iterator[list]:
    if column is not None:
        raise PipelineError(f"{path}: a .txt source has one caption a line and no columns; remove `column: {column}`")
    with open(path, encoding="utf-8-sig") as f:  # -sig: a BOM is not part of the first caption
        while lines := list(islice(f, chunk)):
            yield lines


def _read_delimited(path: Path, column: str | None, chunk: int, parse: pacsv.ParseOptions) -> Iterator[list]:
    header = pacsv.open_csv(path, parse_options=parse).schema.names
    _check_column(path, header, column)
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        parse_options=parse,
        # only the caption column is parsed, always as text (a caption "1984" stays a string)
        convert_options=pacsv.ConvertOptions(include_columns=[column], column_types={column: pa.string()}),
    )
    for batch in reader:
        values = batch.column(0).to_pylist()
        for i in range(0, len(values), chunk):
            yield values[i:i + chunk]


@READERS.register(".csv")
def read_csv(path: Path, column: str | None, chunk: int) -> Iterator[list]:
    return _read_delimited(path, column, chunk, pacsv.ParseOptions(delimiter=",", newlines_in_values=True))


@READERS.register(".tsv")
def read_tsv(path: Path, column: str | None, chunk: int) -> Iterator[list]:
    # TSV has no quoting: a `"` inside a caption is just a character
    return _read_delimited(path, column, chunk, pacsv.ParseOptions(delimiter="\t", quote_char=False))


@READERS.register(".jsonl")
def read_jsonl(path: Path, column: str | None, chunk: int) -> Iterator[list]:
    values: list = []
    checked = False
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise PipelineError(f"{path} line {number} is not JSON ({e.msg}); a .jsonl source has one JSON object a line") from None
            except RecursionError:
                raise PipelineError(f"{path} line {number} is JSON nested too deeply to be a caption record") from None
            if not isinstance(record, dict):
                raise PipelineError(f"{path} line {number} is not a JSON object")
            if not checked:  # the first record plays the part of a header
                _check_column(path, list(record), column)
                checked = True
            value = record.get(column, MISSING)
            if value is not MISSING and value is not None and not isinstance(value, str):
                raise PipelineError(f"{path} line {number}: field {column!r} holds {quoted(value)} "
                                    f"({type(value).__name__}), not a caption string")
            values.append(value)
            if len(values) == chunk:
                yield values
                values = []
    if values:
        yield values


@READERS.register(".parquet")
def read_parquet(path: Path, column: str | None, chunk: int) -> Iterator[list]:
    return _parquet_batches(path, path, column, chunk)


def _parquet_batches(file, label, column: str | None, chunk: int) -> Iterator[list]:
    """The column of a Parquet file (a path or a seekable file object), read row group by row group."""
    parquet = pq.ParquetFile(file, pre_buffer=False)  # pre-buffering grows with the file: pipeline/core/parquet.py
    _check_column(label, parquet.schema_arrow.names, column)
    kind = parquet.schema_arrow.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        # a number or a list is no caption: casting would store '1.5' or fail later
        raise PipelineError(f"{label}: column {column!r} holds {kind}, not text; point `column:` at the caption column")
    for batch in parquet.iter_batches(batch_size=chunk, columns=[column]):
        yield batch.column(0).cast(pa.string()).to_pylist()


def _check_column(label, names: list[str], column: str | None) -> None:
    if column not in names:
        what = "needs `column:` naming the caption column" if column is None else f"has no column {column!r}"
        raise PipelineError(f"{label} {what}; its columns are: {', '.join(map(str, names)) or 'none'}. "
                            f"Set `column:` of this source in params.yaml ingest.sources")


def normalise(text: str) -> tuple[str, bool]:
    """Returns the caption as stored, and whether a `$` was stripped from it."""
    if "&" in text:
        text = _unescape(text)
    stripped = False
    for dollar in DOLLARS:
        if dollar in text:
            text = text.replace(dollar, "")
            stripped = True
    for space in ZERO_WIDTH:
        if space in text:
            text = text.replace(space, " ")
    return " ".join(text.split()), stripped  # str.split() splits on every unicode whitespace


# html.unescape's own pattern of a character reference: `&` and at most 34 characters after it
# (a name of up to 32, `;`), or a run of digits that may be longer
CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")
REACH = 40  # characters a reference can span, with room to spare
PASSES = 3  # whole-text passes before the linear scan: real captions are escaped once or twice


def _unescape(text: str) -> str:
    """`text` with HTML character references decoded until html.unescape changes nothing: the
    tokenizer unescapes more than once, so `&amp;#36;` must also end as `$` here. Repeating
    html.unescape is quadratic in the nesting (a 200 KB caption of nested `&amp;` took 3.8 s), so
    after PASSES the rest is done by `_unescape_scan`, in time linear in the length."""
    for _ in range(PASSES):
        decoded = html.unescape(text)
        if decoded == text:
            return text
        text = decoded
    return _unescape_scan(text)


def _unescape_scan(text: str) -> str:
    """The fixpoint of html.unescape in one left-to-right pass: what a reference decodes to is read
    again together with what precedes it (back to the last `&` within REACH). Its result is a fixpoint
    too; where references are nested across each other (`&amp;not&#105;n;`) it may decode them in
    another order than whole-text passes would."""
    out: list[str] = []  # characters, decided
    front, i = "", 0  # what is still to read: front (decoded text read again), then text[i:]
    while front or i < len(text):
        if not front:  # plain text up to the next `&` is final as it is
            j = text.find("&", i)
            j = len(text) if j < 0 else j
            out.extend(text[i:j])
            i = j
            if i == len(text):
                break
        else:
            j = front.find("&")
            out.extend(front if j < 0 else front[:j])
            front = "" if j < 0 else front[j:]
            if not front:
                continue
        size, m = REACH, None
        while True:  # a numeric reference of many digits: widen the window until it holds them all
            window = (front + text[i:i + size])[:size]
            m = CHARREF.match(window)
            if not (m and m.end() == len(window) and len(window) == size):
                break
            size *= 2
        decoded = html.unescape(m.group(0)) if m else None
        if decoded is None or decoded == m.group(0):  # no reference here: the `&` is final
            out.append("&")
            consumed = 1
        else:
            consumed = m.end()
            k = len(out) - 1  # the last `&` in reach may now begin a reference with what was decoded
            while k >= max(0, len(out) - REACH) and out[k] != "&":
                k -= 1
            pulled = "".join(out[k:]) if k >= max(0, len(out) - REACH) else ""
            del out[len(out) - len(pulled):]
        if consumed <= len(front):
            front = front[consumed:]
        else:
            i += consumed - len(front)
            front = ""
        if decoded is not None and decoded != m.group(0):
            front = pulled + decoded + front
    return "".join(out)


def hash64(texts: list[str]) -> np.ndarray:
    """8-byte hashes: a collision among 20M captions has probability ~1e-5."""
    digests = b"".join(blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest() for t in texts)
    return np.frombuffer(digests, dtype="<u8")


class HashSet:
    """A set of uint64 hashes, 8 bytes per entry.

    A Python set of ints costs ~80 bytes per entry (1.6 GB at 20M captions). The hashes
    are kept in a few sorted numpy runs whose sizes halve from first to last; a new run
    is merged into the one before it like a binary counter carries, so there are
    O(log n) runs to search and each hash is copied O(log n) times.
    """

    def __init__(self):
        self.runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def unseen(self, hashes: np.ndarray) -> np.ndarray:
        """The mask of `hashes` seen neither in the set nor earlier in `hashes`."""
        unique, first = np.unique(hashes, return_index=True)
        fresh = np.ones(len(unique), dtype=bool)
        for run in self.runs:
            at = np.searchsorted(run, unique).clip(max=len(run) - 1)
            fresh &= run[at] != unique
        mask = np.zeros(len(hashes), dtype=bool)
        mask[first[fresh]] = True
        return mask

    def add(self, hashes: np.ndarray) -> None:
        """Adds hashes that are distinct and not in the set yet (as `unseen` selects them)."""
        if len(hashes) == 0:
            return
        self.runs.append(np.sort(hashes))
        while len(self.runs) > 1 and len(self.runs[-2]) <= len(self.runs[-1]):
            last = self.runs.pop()
            # both are sorted: the stable sort (timsort) merges them in linear time
            self.runs[-1] = np.sort(np.concatenate([self.runs[-1], last]), kind="stable")


@dataclass(frozen=True)
class SourceKind:
    """A kind of caption source, selected by its key in the source entry (`path:`, `hf:`)."""
    keys: frozenset            # its keys besides COMMON_KEYS, its own key among them
    what: str                  # for error messages: what the kind's key names
    check: Callable[[dict], dict]  # the entry -> the checked source: `default_name` and what `read` needs
    read: Callable[[dict, int], Iterator[list]]  # (checked source, chunk) -> lists of raw caption values


SOURCE_KINDS: Registry[SourceKind] = Registry("caption source kind")


def _check_path(source: dict) -> dict:
    path = Path(source["path"])
    if not path.is_file():
        raise PipelineError(f"caption source {path} not found: create it (for the synthetic world, run the world stage) "
                            f"or fix its path in params.yaml ingest.sources")
    if path.suffix.lower() not in READERS:  # fails now, not after other sources were read
        raise PipelineError(f"caption source {path}: unknown format {path.suffix!r}; valid: {', '.join(READERS.names())}")
    return {"path": path, "column": source.get("column"), "default_name": path.stem}


def _read_path(source: dict, chunk: int) -> Iterator[list]:
    path = source["path"]
    try:
        yield from READERS.get(path.suffix.lower())(path, source["column"], chunk)
    except UnicodeDecodeError as e:
        raise PipelineError(f"{path} is not UTF-8 text ({e.reason}): re-encode it, e.g. iconv -f latin1 -t utf-8") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise PipelineError(f"{path} could not be read as {path.suffix}: {e}") from None


def _check_hf(source: dict) -> dict:
    dataset = source["hf"]
    if not isinstance(dataset, str) or dataset.count("/") != 1 or "" in dataset.split("/"):
        raise PipelineError(f"ingest source {source}: `hf:` takes a Hugging Face dataset id owner/name, "
                            f"e.g. FredZhang7/stable-diffusion-prompts-2.47M")
    ref = hf_captions.HfSplit(dataset, **{k: str(source[k]) for k in ("config", "split", "revision") if k in source})
    files = hf_captions.parquet_files(ref)  # the Hub is asked now, before any source is read
    with hf_captions.hub_errors(ref), hf_captions.open_file(files[0]) as first:
        _check_column(ref, pq.ParquetFile(first).schema_arrow.names, source.get("column"))
    return {"ref": ref, "files": files, "column": source["column"], "default_name": dataset.split("/")[1]}


def _read_hf(source: dict, chunk: int) -> Iterator[list]:
    with hf_captions.hub_errors(source["ref"]):
        for path in source["files"]:
            with hf_captions.open_file(path) as file:  # row group by row group, the caption column only
                yield from _parquet_batches(file, source["ref"], source["column"], chunk)


SOURCE_KINDS.register("path")(SourceKind(frozenset({"path", "column"}), f"a local caption file ({' '.join(READERS.names())})",
                                         _check_path, _read_path))
SOURCE_KINDS.register("hf")(SourceKind(frozenset({"hf", "config", "split", "column", "revision"}),
                                       "a Hugging Face dataset id owner/name", _check_hf, _read_hf))


def _kind_of(source: dict) -> str:
    """The one dispatch point: the source kind is the one registered kind key in the entry."""
    kinds = [name for name in SOURCE_KINDS.names() if name in source]
    if len(kinds) == 1:
        return kinds[0]
    names = SOURCE_KINDS.names()
    raise PipelineError(f"ingest source {source}: give exactly one of "
                        + " or ".join(f"`{name}:` ({SOURCE_KINDS.get(name).what})" for name in names)
                        + "; keys are " + "; ".join(f"{_keys(name)} for `{name}:`" for name in names))


def _keys(kind: str) -> str:
    return ", ".join(sorted(SOURCE_KINDS.get(kind).keys | COMMON_KEYS))


def check_sources(sources) -> list[dict]:
    """Validates params `ingest.sources`; returns them checked, with `kind`, `name` and `max_captions`."""
    if not sources or not isinstance(sources, list):
        raise PipelineError("params ingest.sources must be a non-empty list of {path: ..., column: ..., name: ..., max_captions: ...} "
                            "or {hf: <dataset id>, config: ..., split: ..., column: ..., name: ..., max_captions: ...}")
    checked = []
    for source in sources:
        if isinstance(source, str):
            source = {"path": source}
        if not isinstance(source, dict):
            raise PipelineError(f"ingest source {source!r}: expected a mapping such as {{path: ..., column: ...}}")
        kind = _kind_of(source)
        unknown = set(source) - SOURCE_KINDS.get(kind).keys - COMMON_KEYS
        if unknown:
            raise PipelineError(f"ingest source {source}: unknown key {', '.join(sorted(map(str, unknown)))}; "
                                f"keys are {_keys(kind)} for `{kind}:`")
        cap = source.get("max_captions")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise PipelineError(f"ingest source {source[kind]}: max_captions must be a non-negative integer or null, not {cap!r}")
        read = SOURCE_KINDS.get(kind).check(source)
        name = str(source.get("name") or read["default_name"])
        if name in {c["name"] for c in checked}:
            raise PipelineError(f"two ingest sources are named {name!r}: give them distinct `name:`s (stats are per source)")
        checked.append({**read, "kind": kind, "name": name, "max_captions": cap})
    return checked


def ingest(sources, out: Path, chunk: int = CHUNK, progress: Callable[[int], object] | None = None) -> dict:
    """Reads every source into the Parquet table `out`; returns the counts (stats.json).

    `max_captions` caps the captions a source contributes (kept ones, after dropping).
    Duplicates across sources count against the later source.
    """
    sources = check_sources(sources)
    seen = HashSet()
    totals = dict.fromkeys(["read", "missing", "empty", "duplicate", "dollar_stripped", "kept"], 0)
    per_source = {}
    with atomic(out) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        for source in sources:
            counts = dict.fromkeys(totals, 0)
            cap = source["max_captions"]
            # closing: a source left at its cap releases its file (or Hub connection) now
            with closing(SOURCE_KINDS.get(source["kind"]).read(source, chunk)) as reader:
                for raw in reader:
                    if cap is not None and counts["kept"] >= cap:
                        break
                    texts = _drop_and_dedup(raw, seen, counts, None if cap is None else cap - counts["kept"])
                    if texts:
                        first_id = totals["kept"] + counts["kept"] - len(texts)
                        writer.write_table(pa.table({
                            "id": pa.array(np.arange(first_id, first_id + len(texts)), pa.int64()),
                            "text": pa.array(texts, pa.string()),
                            "source": pa.array([source["name"]] * len(texts), pa.string()),
                        }, schema=SCHEMA))
                    if progress:
                        progress(len(raw))
            per_source[source["name"]] = counts
            for key in totals:
                totals[key] += counts[key]
    return {**totals, "sources": per_source}


def _drop_and_dedup(raw: list, seen: HashSet, counts: dict, room: int | None) -> list[str]:
    """Normalises one chunk; drops empty and duplicate captions; stops after `room` kept ones."""
    normal = [normalise(value or "") for value in raw]
    missing = sum(value is MISSING for value in raw)
    texts = [text for text, _ in normal]
    stripped = np.fromiter((s for _, s in normal), dtype=bool, count=len(normal))
    filled = np.flatnonzero(np.fromiter(map(bool, texts), dtype=bool, count=len(texts)))
    hashes = hash64([texts[i] for i in filled])
    new = seen.unseen(hashes)
    read = len(raw)
    if room is not None and new.sum() > room:
        # the cap falls inside this chunk: what follows the last caption taken is not read
        read = int(filled[np.flatnonzero(new)[room - 1]]) + 1
        inside = filled < read
        filled, hashes, new, stripped = filled[inside], hashes[inside], new[inside], stripped[:read]
    seen.add(hashes[new])
    if read < len(raw):
        missing = sum(value is MISSING for value in raw[:read])
    counts["read"] += read
    counts["missing"] += missing
    counts["empty"] += read - len(filled) - missing
    counts["duplicate"] += len(filled) - int(new.sum())
    counts["dollar_stripped"] += int(stripped.sum())
    counts["kept"] += int(new.sum())
    return [texts[i] for i in filled[new]]
