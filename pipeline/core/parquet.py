"""Streaming reads of Parquet tables in bounded memory."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def stream(path: Path | str, batch_size: int, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The table's record batches in order, one row group in memory at a time.

    pre_buffer off: with it (pyarrow's default) the reader keeps the buffers of row groups already
    read, so its memory grows with the table; without it, one row group's worth at a time.
    """
    return pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=batch_size, columns=columns)
