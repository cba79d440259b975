"""Streaming reads of Parquet tables in bounded memory."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def stream(path: Path | str, batch_size: int, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The table's record batches in order, one row group in memory at a time.

    pre_buffer off: with it (pyarrow's default) the reader kept buffers of row groups
    already read, and its memory grew with the table (74 -> 152 MB of Arrow memory over
    2M keyword rows); without it, 10 MB throughout.
    """
    return pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=batch_size, columns=columns)
