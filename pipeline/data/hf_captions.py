"""Hugging Face Hub access for `hf:` caption sources (pipeline/data/ingest.py reads the captions).

A dataset's Parquet files are found on its `refs/convert/parquet` revision: the Hub's dataset
viewer converts (almost) every dataset to Parquet there, laid out `{config}/{split}/NNNN.parquet`,
or `{config}/partial-{split}/NNNN.parquet` when only the first 5 GB of a split were converted. So
datasets published as .txt or .csv (e.g. FredZhang7/stable-diffusion-prompts-2.47M) are read the
same way as Parquet ones, and without the `datasets` package: files are opened through
huggingface_hub's fsspec `HfFileSystem`, whose files fetch byte ranges on demand, so pyarrow reads
one row group's caption column at a time and memory does not grow with the dataset.

Offline (HF_HUB_OFFLINE=1) or unreachable Hub: a PipelineError that names the dataset and says how
to make a local copy for a `path:` source.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import quote

from pipeline.core.errors import PipelineError
from pipeline.core.io import offline

PARQUET_REVISION = "refs/convert/parquet"


@dataclass(frozen=True)
class HfSplit:
    """One split of one config of a Hub dataset, at a revision of its Parquet conversion."""
    dataset: str
    config: str = "default"
    split: str = "train"
    revision: str = PARQUET_REVISION  # or a commit of that branch, to pin the captions

    def __str__(self) -> str:
        at = "" if self.revision == PARQUET_REVISION else f", revision {self.revision}"
        return f"Hugging Face dataset {self.dataset} (config {self.config}, split {self.split}{at})"

    @property
    def root(self) -> str:
        """The repository at the revision, as an HfFileSystem path."""
        return f"datasets/{self.dataset}@{quote(self.revision, safe='')}"

    def local_copy_hint(self) -> str:
        return (f"To make a local copy where there is network: hf download {self.dataset} --repo-type dataset "
                f"--revision {self.revision} --include '{self.config}/{self.split}/*.parquet' --local-dir DIR, "
                f"then replace this source in params.yaml ingest.sources by a `path:` source per downloaded file "
                f"(path: DIR/{self.config}/{self.split}/0000.parquet, ... with the same `column:`)")


def filesystem():
    """The fsspec filesystem holding the Hub's files (tests put a local folder in its place)."""
    from huggingface_hub import HfFileSystem  # here: only `hf:` sources need it

    return HfFileSystem()


def parquet_files(ref: HfSplit) -> list[str]:
    """The Parquet files of the split, in order; a PipelineError if there are none or the Hub is out of reach."""
    if offline():
        raise PipelineError(_unreachable(ref, "HF_HUB_OFFLINE is set"))
    fs = filesystem()
    with hub_errors(ref):
        for folder in (ref.split, f"partial-{ref.split}"):
            try:
                names = fs.ls(f"{ref.root}/{ref.config}/{folder}", detail=False)
            except FileNotFoundError:
                continue
            files = sorted(name for name in names if name.endswith(".parquet"))  # not index.duckdb
            if files:
                if folder != ref.split:
                    print(f"note: {ref}: the Hub converted only the first 5 GB of this split to Parquet; "
                          f"those captions are read", file=sys.stderr)
                return files
        raise PipelineError(_not_found(fs, ref))


def open_file(path: str) -> BinaryIO:
    """A file of `parquet_files`, opened for reading (seekable: pyarrow fetches the ranges it needs)."""
    return filesystem().open(path, "rb")


@contextmanager
def hub_errors(ref: HfSplit) -> Iterator[None]:
    """Turns the ways a Hub request or a remote Parquet read fails into one PipelineError naming the dataset."""
    import pyarrow as pa
    from huggingface_hub.errors import HfHubHTTPError, HTTPError  # HTTPError: the HTTP client's base error

    try:
        yield
    except HfHubHTTPError as e:  # the Hub answered, with an error status
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise PipelineError(f"{ref}: the Hub refused access ({status}); if the dataset is gated, accept its "
                                f"terms on huggingface.co/datasets/{ref.dataset} and log in with `hf auth login`") from None
        raise PipelineError(f"{ref}: the Hub answered with an error: {e}") from None
    except (HTTPError, ConnectionError, TimeoutError) as e:  # no answer: offline, DNS, refused, timed out
        raise PipelineError(_unreachable(ref, f"{type(e).__name__}: {e}")) from None
    except (pa.ArrowException, OSError) as e:  # pyarrow re-raises a file object's own errors as they are
        raise PipelineError(f"{ref} could not be read as Parquet: {e}") from None


def _unreachable(ref: HfSplit, reason: str) -> str:
    return (f"{ref} could not be reached ({reason}): an `hf:` caption source needs network access to the "
            f"Hugging Face Hub, or a local copy. {ref.local_copy_hint()}")


def _not_found(fs, ref: HfSplit) -> str:
    """Says which of dataset, revision, config or split is missing, listing what there is instead."""
    for folder, what, there in ((f"{ref.root}/{ref.config}", f"split {ref.split!r}", "splits"),
                                (ref.root, f"config {ref.config!r}", "configs")):
        try:
            entries = fs.ls(folder, detail=True)
        except FileNotFoundError:
            continue
        names = sorted({e["name"].rstrip("/").rsplit("/", 1)[-1].removeprefix("partial-")
                        for e in entries if e["type"] == "directory"})
        return (f"{ref} has no Parquet files: no {what} at revision {ref.revision}; its {there} are: "
                f"{', '.join(names) or 'none'}. Set `config:`/`split:` of this source in params.yaml ingest.sources")
    return (f"{ref}: not found on the Hub at revision {ref.revision}. Check the dataset id (owner/name); a private "
            f"or gated dataset needs `hf auth login`; a dataset without the Hub's automatic Parquet conversion "
            f"needs a local copy of its files and a `path:` source")
