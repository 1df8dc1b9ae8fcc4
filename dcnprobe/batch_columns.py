"""Run.batches in compact columns, from the writer's batch table (records.BATCH_TABLE) or
from batch records parsed from the lines, the same types and values either way.

A million batches are 168 MB as the table's float64 rows and about 85 MB here: counts as
int32 (float64 once one is missing), durations and memory as float32 (a microsecond in a
second, 64 bytes in a gigabyte), the clock as float64 (a microsecond after days). Rows are
converted a chunk at a time into columns allocated once where the row count is known, so
that the float64 rows of a long run are never all held, nor copied on the way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dcnprobe.records import BATCH, BATCH_COLUMNS, BATCH_ROW, batch_row, parse_record

CHUNK_ROWS = 20_000  # batch lines parsed before they become compact columns: bounds what is held as rows
TABLE_CHUNK_ROWS = 100_000  # rows of the writer's table converted at a time
_INTEGER_COLUMNS = ("epoch", "batch", "step", "gc_gen2", "minflt", "majflt", "rows")
_WIDE_COLUMNS = ("t",)


class BatchRows:
    """Batch records into Run.batches, CHUNK_ROWS at a time: their standard fields as rows of
    the writer's table (records.batch_row: a missing field, or one that is not a number, is
    NaN), so that a record read from its lines gives what its table would; with
    extra_fields, every field as written."""

    def __init__(self, extra_fields: bool) -> None:
        self.extra_fields = extra_fields
        self.rows: list[Any] = []
        self.count = 0
        self.columns = CompactColumns(CHUNK_ROWS)
        self.frames: list[pd.DataFrame] = []

    def add(self, record: dict[str, Any]) -> None:
        self.rows.append(record if self.extra_fields else batch_row(record))
        self.count += 1
        if len(self.rows) >= CHUNK_ROWS:
            self._flush()

    def columns_after_flush(self) -> CompactColumns:
        self._flush()
        return self.columns

    def _flush(self) -> None:
        if self.rows and self.extra_fields:
            self.frames.append(pd.DataFrame(self.rows))
        elif self.rows:
            self.columns.add(np.frombuffer(b"".join(self.rows), dtype="<f8").reshape(len(self.rows), -1))
        self.rows = []

    def frame(self) -> pd.DataFrame:
        self._flush()
        if not self.extra_fields:
            return self.columns.frame()
        if not self.frames:
            return pd.DataFrame()
        return self.frames[0] if len(self.frames) == 1 else pd.concat(self.frames, ignore_index=True)


class CompactColumns:
    """Rows in the writer's table layout (float64, records.BATCH_COLUMNS) written into the
    compact columns of Run.batches a chunk at a time, so that the float64 rows of a long
    run are never all held: an integer column is int32 while complete (float64 once a value
    is missing), durations and memory are float32, the clock float64. The columns are
    allocated once where the row count is known (the writer's table); otherwise they grow
    by half, a column at a time."""

    def __init__(self, capacity: int) -> None:
        self.size = 0
        self.columns = {name: np.empty(capacity, dtype=_compact_type(name)) for name in BATCH_COLUMNS}

    def add(self, rows: np.ndarray) -> None:
        count = len(rows)
        capacity = len(self.columns["epoch"])
        if self.size + count > capacity:
            self._resize(max(self.size + count, capacity + capacity // 2))
        for i, name in enumerate(BATCH_COLUMNS):
            values = rows[:, i]
            column = self.columns[name]
            if column.dtype.kind == "i" and np.isnan(values).any():  # a missing count: the column needs NaN
                column = self.columns[name] = column.astype(np.float64)
            column[self.size:self.size + count] = values  # into int32 as astype would: truncated
        self.size += count

    def extend(self, other: CompactColumns) -> None:
        """Another's rows after these (an integer column that is float64 in either is in both)."""
        if self.size + other.size > len(self.columns["epoch"]):
            self._resize(self.size + other.size)
        for name, column in self.columns.items():
            theirs = other.columns[name][:other.size]
            if column.dtype != theirs.dtype and column.dtype.kind == "i":
                column = self.columns[name] = column.astype(theirs.dtype)
            column[self.size:self.size + other.size] = theirs
        self.size += other.size

    def _resize(self, capacity: int) -> None:
        for name, column in self.columns.items():
            grown = np.empty(capacity, dtype=column.dtype)
            grown[:self.size] = column[:self.size]
            self.columns[name] = grown

    def frame(self) -> pd.DataFrame:
        if self.size == 0:
            return pd.DataFrame()
        if self.size < len(self.columns["epoch"]):
            self._resize(self.size)
        columns, self.columns = self.columns, {}
        return batch_frame(columns)


def table_rows(path: Path) -> int:
    """Rows in the writer's batch table (0: none); a row torn by a crash is left out."""
    return path.stat().st_size // BATCH_ROW.size if path.is_file() else 0


def table_batches(path: Path, covered: int, lines: Mapping[int, bytes], after: BatchRows) -> pd.DataFrame | None:
    """The batches: the table's first `covered` rows (the batch lines it covers), then
    `after`'s, parsed from the lines after them; None where the table does not read as the
    writer wrote it, or does not agree with the record (its first and last covered rows
    against those `lines`, by batch line index). The table is read TABLE_CHUNK_ROWS rows at
    a time (through one buffer) into the compact columns."""
    if covered == 0:
        return after.frame()
    width = len(BATCH_COLUMNS)
    columns = CompactColumns(covered + after.count)
    epoch, total = BATCH_COLUMNS.index("epoch"), BATCH_COLUMNS.index("total")
    buffer = np.empty((min(covered, TABLE_CHUNK_ROWS), width), dtype="<f8")
    with open(path, "rb", buffering=0) as f:
        for start in range(0, covered, TABLE_CHUNK_ROWS):
            values = buffer[:min(TABLE_CHUNK_ROWS, covered - start)]
            if f.readinto(memoryview(values).cast("B")) != values.nbytes:
                return None  # shorter than it was a moment ago: not to be trusted
            if not (np.isfinite(values[:, epoch]).all() and np.isfinite(values[:, total]).all()):
                return None  # not what the writer wrote
            for index in {0, covered - 1} & set(range(start, start + len(values))):
                if not _agrees(values[index - start], lines[index]):
                    return None  # not this record's table
            columns.add(values)
    columns.extend(after.columns_after_flush())
    return columns.frame()


def _agrees(row: np.ndarray, line: bytes) -> bool:
    """A row of the table holds what its batch line holds, in the compact types: a numpy
    float32 is written to the line as its shortest decimal and to the table as its double,
    which differ as doubles and are the same float32."""
    record = parse_record(line)
    if record is None or record["type"] != BATCH:
        return False
    written = np.frombuffer(batch_row(record), dtype="<f8")
    for i, name in enumerate(BATCH_COLUMNS):
        kind = np.float32 if _is_duration(name) else np.float64
        a, b = kind(row[i]), kind(written[i])
        if a != b and not (np.isnan(a) and np.isnan(b)):
            return False
    return True


def _compact_type(name: str) -> type:
    return np.int32 if name in _INTEGER_COLUMNS else np.float32 if _is_duration(name) else np.float64


def _is_duration(name: str) -> bool:
    return name not in _INTEGER_COLUMNS and name not in _WIDE_COLUMNS


def batch_frame(columns: dict[str, Any]) -> pd.DataFrame:
    """The batches table in compact types: integer counts (where complete), float32
    durations and memory, float64 clock. Columns no batch had are left out. Arrays already
    in those types (integer arrays: complete counts) are used as they are, not copied."""
    frame = {}
    for name, values in columns.items():
        values = np.asarray(values)
        if values.dtype.kind not in "iu":
            values = values.astype(np.float32 if _is_duration(name) else np.float64, copy=False)
            missing = np.isnan(values)
            if missing.all():
                continue
            if name in _INTEGER_COLUMNS and not missing.any():
                values = values.astype(np.int32)
        frame[name] = values
    return pd.DataFrame(frame, copy=False)
