"""A run record loaded for analysis: `read_run(DIR)` -> `Run`, its records as DataFrames.

Reading is for records of any length: a five-epoch run of 50,000 batches per epoch is a
few hundred MB of JSON lines, and one pass over it must not cost more than the run is
worth waiting for.

- The batches come from the writer's columnar table (records.BATCH_TABLE) when it agrees
  with the record (one row per complete batch line); their lines are then counted, never
  parsed. Otherwise they are parsed from the lines, a chunk of rows at a time. Either way
  `Run.batches` holds the standard fields (records.BATCH_COLUMNS) in compact types;
  `read_run(..., extra_fields=True)` parses every line and keeps the fields a loop added.
- Background samples beyond MAX_SAMPLES are thinned evenly (between MAX_SAMPLES and twice
  that are kept): while reading, every stride-th sample is parsed, and whenever twice
  MAX_SAMPLES are held every other one is dropped and the stride doubles. The analysis reads cumulative counters (CPU, faults,
  swap) as differences and memory as slopes, which thinning does not change.
- A damaged line (not JSON, not an object, or not fitting its record type: a disk error, a
  second writer, garbage bytes) costs that line, not the run: it is skipped and counted in
  `Run.damaged`, and the verdict says so. Only a record whose header is unreadable, or one
  that is mostly damage, is refused. A torn last line (the process died mid-write) is the
  normal end of a killed run: `Run.truncated`, not damage.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dcnprobe.errors import UsageError
from dcnprobe.records import (
    BATCH,
    BATCH_COLUMNS,
    BATCH_TABLE,
    EPOCH,
    FOOTER,
    HEADER,
    MEMORY,
    RUN_FILE,
    SCHEMA_VERSION,
    STALL,
    WARNING,
    parse_record,
)

MAX_SAMPLES = 10_000  # background samples kept whole: 83 minutes at the default 0.5 s; thinned evenly beyond
CHUNK_ROWS = 20_000  # batch rows parsed before they become a table: bounds what is held as dicts
TABLE_CHUNK_ROWS = 100_000  # rows of the writer's table converted at a time
READ_BYTES = 1 << 24
MOSTLY_DAMAGED = 0.5  # refuse a record in which more than half the lines are damage
_BATCH_LINE = b'{"type":"' + BATCH.encode() + b'"'  # how the probe's writer starts a batch line
_SAMPLE_LINE = b'{"type":"' + MEMORY.encode() + b'"'
# The newline before a line that is neither a batch nor a background sample.
_OTHER_LINE = re.compile(rb"\n(?!" + re.escape(_BATCH_LINE) + rb"|" + re.escape(_SAMPLE_LINE) + rb")")
# Compact types for the batch table: counts as 32-bit integers, durations and memory in
# float32 (a microsecond in a second, 64 bytes in a gigabyte), the clock in float64 (a
# microsecond after days).
_INTEGER_COLUMNS = ("epoch", "batch", "step", "gc_gen2", "minflt", "majflt", "rows")
_WIDE_COLUMNS = ("t",)


@dataclass
class Run:
    """A run record: the header, and a table per kind of record."""

    path: Path
    header: dict[str, Any]
    batches: pd.DataFrame  # one row per batch: phases, total, main-process figures
    samples: pd.DataFrame  # one row per background sample: main process, system, device, allocator, GC
    workers: pd.DataFrame  # the samples' DataLoader workers, long format: one row per (sample, worker)
    epochs: pd.DataFrame
    stalls: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    others: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # record types the tables do not hold
    footer: dict[str, Any] | None = None
    truncated: bool = False  # the last line was torn: the run died mid-write
    damaged: int = 0  # lines skipped as damage
    samples_read: int = 0  # background samples in the file (the table may hold fewer: MAX_SAMPLES)

    @property
    def status(self) -> str:
        return self.footer["status"] if self.footer else "incomplete"

    @property
    def settings(self) -> dict[str, Any]:
        return self.header.get("settings", {})


def run_file(path: str | Path) -> Path:
    path = Path(path)
    return path / RUN_FILE if path.is_dir() else path


def read_run(path: str | Path, *, extra_fields: bool = False) -> Run:
    """Load DIR/run.jsonl (or the file itself). Bad input is a one-line UsageError."""
    file = run_file(path)
    if not file.is_file():
        raise UsageError(f"no run record at {file} (expected a directory written by the probe)")
    table = None if extra_fields else _batch_table(file.parent / BATCH_TABLE)
    reading = _Reading(file, extra_fields)
    reading.read(skip_batches=table is not None)
    if table is not None and len(table) != reading.batch_lines:
        # The table disagrees with the record (written elsewhere, damaged, edited): the lines decide.
        reading = _Reading(file, extra_fields)
        reading.read(skip_batches=False)
        table = None
    return reading.run(table)


class _Reading:
    """One pass over a record: its lines into tables, damage counted."""

    def __init__(self, file: Path, extra_fields: bool) -> None:
        self.file, self.extra_fields = file, extra_fields
        self.header: dict[str, Any] | None = None
        self.lines = self.damaged = self.batch_lines = 0
        self.truncated = False
        self.batch_rows: list[dict[str, Any]] = []
        self.batch_frames: list[pd.DataFrame] = []
        self.samples: list[dict[str, Any]] = []
        self.samples_seen = 0
        self.stride = 1
        self.epochs: list[dict[str, Any]] = []
        self.stalls: list[dict[str, Any]] = []
        self.warnings: list[dict[str, Any]] = []
        self.footer: dict[str, Any] | None = None
        self.others: dict[str, list[dict[str, Any]]] = {}

    def read(self, skip_batches: bool) -> None:
        for line, last in self._lines(skip_batches):
            self.lines += 1
            if self.header is None:
                self.header = parse_record(line)
                if self.header is None or self.header["type"] != HEADER:
                    raise UsageError(f"{self.file}: not a dcnprobe run record (its first line is not a readable "
                                     "header)")
                continue
            record = parse_record(line)
            if last and (record is None or (skip_batches and record["type"] == BATCH)):
                self.truncated = True  # the process died while writing this line (and before its table row)
                continue
            if record is None:
                self.damaged += 1
                continue
            self._add(record)
        if self.header is None:
            raise UsageError(f"{self.file}: not a dcnprobe run record (no header line)")
        lines = self.lines + self.batch_lines  # the batch lines counted, not read, are lines too
        if self.damaged > MOSTLY_DAMAGED * lines:
            raise UsageError(f"{self.file}: {self.damaged} of {lines} lines are damaged; too little of the "
                             "record is readable")
        version = self.header.get("schema")
        if version > SCHEMA_VERSION:
            raise UsageError(f"{self.file}: written with run-record schema {version}, this dcnprobe reads up to "
                             f"{SCHEMA_VERSION}; upgrade dcnprobe")

    def _lines(self, skip_batches: bool) -> Iterator[tuple[bytes, bool]]:
        """Every non-empty line but the background samples thinning leaves out, and whether
        it is the file's last one with no newline after it (a line torn by a crash is that
        one). With skip_batches, complete batch lines are counted (self.batch_lines), not
        yielded, and the rest are found by searching rather than line by line. Each chunk is
        taken with the newline before its first line, so that every line is found the same
        way, as the line after a newline."""
        with open(self.file, "rb") as f:
            rest = b"\n"
            while chunk := f.read(READ_BYTES):
                data = rest + chunk
                end = data.rfind(b"\n")  # the newline that starts the next (perhaps unfinished) line
                data, rest = data[:end], data[end:]
                if skip_batches:
                    self.batch_lines += data.count(b"\n" + _BATCH_LINE)
                    yield from ((line, False) for line in _lines_after(data, _OTHER_LINE.finditer(data)))
                    yield from ((line, False) for line in _lines_after(data, self._wanted_samples(data)))
                else:
                    yield from ((line, False) for line in data.split(b"\n")
                                if line.strip() and not (line.startswith(_SAMPLE_LINE) and not self._wanted_sample()))
            if rest[1:].strip():
                yield rest[1:], True

    def _wanted_samples(self, data: bytes) -> Iterator[int]:
        """Where the wanted background samples of `data` start (the newline before each)."""
        marker = b"\n" + _SAMPLE_LINE
        position = data.find(marker)
        while position >= 0:
            if self._wanted_sample():
                yield position
            position = data.find(marker, position + 1)

    def _wanted_sample(self) -> bool:
        """Every stride-th background sample: the ones kept, evenly spaced."""
        wanted = self.samples_seen % self.stride == 0
        self.samples_seen += 1
        return wanted

    def _add(self, record: dict[str, Any]) -> None:
        kind = record.pop("type")
        if kind == BATCH:
            self.batch_rows.append(record)
            if len(self.batch_rows) >= CHUNK_ROWS:
                self._flush_batches()
        elif kind == MEMORY:
            self.samples.append(record)
            if len(self.samples) >= 2 * MAX_SAMPLES:
                self.samples = self.samples[::2]
                self.stride *= 2
        elif kind == EPOCH:
            self.epochs.append(record)
        elif kind == STALL:
            self.stalls.append(record)
        elif kind == WARNING:
            self.warnings.append(record)
        elif kind == FOOTER:
            self.footer = record
        else:
            self.others.setdefault(kind, []).append(record)

    def _flush_batches(self) -> None:
        rows = self.batch_rows
        if rows:
            self.batch_frames.append(pd.DataFrame(rows) if self.extra_fields else
                                     batch_frame({name: [row.get(name) for row in rows] for name in BATCH_COLUMNS}))
            self.batch_rows = []

    def run(self, table: pd.DataFrame | None) -> Run:
        if table is None:
            self._flush_batches()
            frames = self.batch_frames
            table = pd.DataFrame() if not frames else frames[0] if len(frames) == 1 else pd.concat(frames,
                                                                                               ignore_index=True)
        samples, workers = _sample_tables(self.samples)
        header = {k: v for k, v in self.header.items() if k != "type"}
        return Run(path=self.file, header=header, batches=table, samples=samples, workers=workers,
                   epochs=pd.DataFrame(self.epochs), stalls=self.stalls, warnings=self.warnings, others=self.others,
                   footer=self.footer, truncated=self.truncated, damaged=self.damaged,
                   samples_read=self.samples_seen)


def _lines_after(data: bytes, newlines: Iterator[Any]) -> Iterator[bytes]:
    """The non-empty line after each newline position (an int, or a match's start)."""
    for found in newlines:
        start = (found if isinstance(found, int) else found.start()) + 1
        stop = data.find(b"\n", start)
        line = data[start:stop if stop >= 0 else len(data)]
        if line.strip():
            yield line


def _batch_table(path: Path) -> pd.DataFrame | None:
    """The writer's batch table, if there is one that reads as the writer wrote it. Whether
    it agrees with the record (as many rows as complete batch lines) is the caller's check.
    Read TABLE_CHUNK_ROWS rows at a time into the compact columns, so that the float64 rows
    of a long run are never all in memory at once."""
    if not path.is_file():
        return None
    width = len(BATCH_COLUMNS)
    rows = path.stat().st_size // (8 * width)  # a row torn by a crash is left out
    if rows == 0:
        return None
    columns = {name: np.empty(rows, dtype=np.float32 if _is_duration(name) else np.float64) for name in BATCH_COLUMNS}
    with open(path, "rb") as f:
        for start in range(0, rows, TABLE_CHUNK_ROWS):
            count = min(TABLE_CHUNK_ROWS, rows - start)
            values = np.fromfile(f, dtype="<f8", count=count * width).reshape(count, width)
            if not (np.isfinite(values[:, BATCH_COLUMNS.index("epoch")]).all()
                    and np.isfinite(values[:, BATCH_COLUMNS.index("total")]).all()):
                return None  # not what the writer wrote: read the lines
            for i, name in enumerate(BATCH_COLUMNS):
                columns[name][start:start + count] = values[:, i]
    return batch_frame(columns)


def _is_duration(name: str) -> bool:
    return name not in _INTEGER_COLUMNS and name not in _WIDE_COLUMNS


def batch_frame(columns: dict[str, Any]) -> pd.DataFrame:
    """The batches table in compact types: integer counts (where complete), float32
    durations, float64 clock and memory. Columns no batch had are left out."""
    frame = {}
    for name, values in columns.items():
        values = np.asarray(values, dtype=np.float32 if _is_duration(name) else np.float64)
        missing = np.isnan(values)
        if missing.all():
            continue
        if name in _INTEGER_COLUMNS and not missing.any():
            values = values.astype(np.int32)
        frame[name] = values
    return pd.DataFrame(frame, copy=False)


def _sample_tables(samples: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The background samples, one row each with their workers' sums, and the workers in
    long format."""
    rows, workers = [], []
    for sample in samples:
        listed = sample.pop("workers", None) or []
        sample["workers"] = len(listed)
        sample["workers_rss"] = sum(w.get("rss") or 0 for w in listed)
        uss = [w.get("uss") for w in listed]
        sample["workers_uss"] = sum(uss) if listed and all(u is not None for u in uss) else None
        rows.append(sample)
        workers += [{"t": sample.get("t"), "epoch": sample.get("epoch"), "step": sample.get("step"), **w}
                    for w in listed]
    return pd.DataFrame(rows), pd.DataFrame(workers)
