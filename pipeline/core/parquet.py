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


def row_ranges(path: Path | str, rows: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of `rows` rows covering the table: the blocks a cluster's workers read."""
    n = pq.ParquetFile(path).metadata.num_rows
    return [(start, min(start + rows, n)) for start in range(0, n, rows)]


def read_range(path: Path | str, start: int, stop: int, columns: Sequence[str] | None = None) -> pa.Table:
    """Rows [start, stop) of the table, reading only the row groups they lie in."""
    file = pq.ParquetFile(path, pre_buffer=False)
    groups, first, offset = [], None, 0
    for i in range(file.metadata.num_row_groups):
        n = file.metadata.row_group(i).num_rows
        if offset < stop and offset + n > start:
            groups.append(i)
            first = offset if first is None else first
        offset += n
    if not groups:
        return file.schema_arrow.empty_table().select(columns) if columns else file.schema_arrow.empty_table()
    return file.read_row_groups(groups, columns=columns).slice(start - first, stop - start)
