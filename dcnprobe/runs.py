"""A run record loaded for analysis: `read_run(DIR)` -> `Run`, its records as DataFrames.

Reading is for records of any length: a five-epoch run of 200,000 batches per epoch is
close to a gigabyte of JSON lines, and reading it must cost neither minutes nor gigabytes.

- One pass over the file (dcnprobe.record_scan) finds every line and its kind, a block at
  a time, without parsing it; only what is kept is parsed.
- The batches come from the writer's columnar table (records.BATCH_TABLE) for the batch
  lines it covers, which are then counted, never parsed; a run killed between the flushes
  of the two files has a few lines more than rows, or rows more than lines, and only the
  lines beyond the table are parsed. The table is used where it agrees with the record
  (its first and last covered rows against their lines); otherwise every batch line is
  parsed into a row of the table's layout (records.batch_row), so that lines and table
  give the same values. Either way `Run.batches` holds the standard fields
  (records.BATCH_COLUMNS) in compact types, built a chunk of rows at a time;
  `read_run(..., extra_fields=True)` keeps the fields a loop added too.
- Background samples beyond MAX_SAMPLES are thinned evenly: every S-th sample line is
  kept, S the smallest power of two that leaves fewer than twice MAX_SAMPLES (so between
  MAX_SAMPLES and twice that). The scan holds the positions of those only (halving them,
  and doubling S, whenever twice MAX_SAMPLES are held) and they are parsed after it. The
  analysis reads cumulative counters (CPU, faults, swap) as differences and memory as
  slopes, which thinning does not change.
- A damaged line (not JSON, not an object, or not fitting its record type: a disk error, a
  second writer, garbage bytes) costs that line, not the run: it is skipped and counted in
  `Run.damaged`, and the verdict says so. Only a record whose header is unreadable, or one
  that is mostly damage, is refused. A torn last line (the process died mid-write) is the
  normal end of a killed run: `Run.truncated`, not damage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dcnprobe.batch_columns import BatchRows, table_batches, table_rows
from dcnprobe.errors import UsageError
from dcnprobe.record_scan import BATCH_LINE, OTHER, SAMPLE_LINE, Lines, LineScanner
from dcnprobe.records import (
    BATCH,
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
READ_BYTES = 1 << 23  # the scan's block
MOSTLY_DAMAGED = 0.5  # refuse a record in which more than half the lines are damage


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
    table = file.parent / BATCH_TABLE
    rows = 0 if extra_fields else table_rows(table)
    reading = _Reading(file, extra_fields, rows)
    reading.read()
    batches = None
    if rows:
        batches = table_batches(table, min(rows, reading.batch_lines), reading.batch_line_at, reading.batches)
    if rows and batches is None:
        # The table disagrees with the record (written elsewhere, damaged, edited): the lines decide.
        reading = _Reading(file, extra_fields, 0)
        reading.read()
    return reading.run(batches)


class _Reading:
    """One pass over a record: its lines into tables, damage counted.

    The writer's table (`table_rows` rows) holds the first batches: the batch lines it
    covers are counted (batch_lines), not parsed, and the ones after it are parsed. A run
    killed between the two files' flushes has a few more of one than of the other; the
    table and the lines are two prefixes of the same batches, and the shorter one decides
    how many rows the table gives (batch_columns.table_batches, which checks that they
    agree)."""

    def __init__(self, file: Path, extra_fields: bool, table_rows: int) -> None:
        self.file, self.table_rows = file, table_rows
        self.header: dict[str, Any] | None = None
        self.lines = self.damaged = self.batch_lines = 0
        self.truncated = False
        self.batches = BatchRows(extra_fields)
        self.batch_line_at: dict[int, bytes] = {}  # the first, the table's last and the last batch line
        self.samples = _SampleTables()
        self.samples_seen = 0
        self.stride = 1  # every stride-th background sample is kept
        self.sample_spans = np.empty((0, 2), dtype=np.int64)  # the kept ones' (start, end) in the file
        self.epochs: list[dict[str, Any]] = []
        self.stalls: list[dict[str, Any]] = []
        self.warnings: list[dict[str, Any]] = []
        self.footer: dict[str, Any] | None = None
        self.others: dict[str, list[dict[str, Any]]] = {}

    def read(self) -> None:
        scanner = LineScanner(self.file, READ_BYTES)
        for block in scanner.blocks():
            self._block(block)
        if scanner.tail.strip():
            self._last_line(scanner.tail)
        self._read_samples()
        if self.header is None:
            raise UsageError(f"{self.file}: not a dcnprobe run record (no header line)")
        if self.damaged > MOSTLY_DAMAGED * self.lines:
            raise UsageError(f"{self.file}: {self.damaged} of {self.lines} lines are damaged; too little of the "
                             "record is readable")
        version = self.header.get("schema")
        if version > SCHEMA_VERSION:
            raise UsageError(f"{self.file}: written with run-record schema {version}, this dcnprobe reads up to "
                             f"{SCHEMA_VERSION}; upgrade dcnprobe")

    def _block(self, block: Lines) -> None:
        first = self._header(block) if self.header is None else 0
        kinds = block.kinds[first:]
        batches = np.flatnonzero(kinds == BATCH_LINE) + first
        counted = int(np.clip(self.table_rows - self.batch_lines, 0, batches.size))  # the table's
        self._keep_batch_lines(block, batches)
        self.batch_lines += batches.size
        self.lines += batches.size
        samples = np.flatnonzero(kinds == SAMPLE_LINE) + first
        self._keep_samples(block.offset + block.starts[samples], block.offset + block.ends[samples])
        # The lines parsed now, in the file's order: all but samples and the table's batches.
        parsed = np.union1d(np.flatnonzero(kinds == OTHER) + first, batches[counted:])
        data = memoryview(block.data)
        for start, end, kind in zip(block.starts[parsed].tolist(), block.ends[parsed].tolist(),
                                    block.kinds[parsed].tolist()):
            line = bytes(data[start:end])
            if kind == OTHER:
                if not line.strip():
                    continue
                self.lines += 1
            self._take(line)

    def _keep_batch_lines(self, block: Lines, batches: np.ndarray) -> None:
        """The batch lines held against the table's rows: the first, the table's last and the
        last so far."""
        last = self.batch_lines + batches.size - 1
        for index in (0, self.table_rows - 1, last):
            if self.batch_lines <= index <= last:
                self.batch_line_at[index] = block.line(int(batches[index - self.batch_lines]))
        self.batch_line_at = {i: line for i, line in self.batch_line_at.items() if i in (0, self.table_rows - 1, last)}

    def _header(self, block: Lines) -> int:
        """Reads the header, the record's first line that is not blank; returns the index of
        the block's line after it (the block's end while none is found)."""
        for i in range(block.starts.size):
            line = block.line(i)
            if line.strip():
                self._read_header(line)
                return i + 1
        return block.starts.size

    def _read_header(self, line: bytes) -> None:
        self.lines += 1
        self.header = parse_record(line)
        if self.header is None or self.header["type"] != HEADER:
            raise UsageError(f"{self.file}: not a dcnprobe run record (its first line is not a readable header)")

    def _last_line(self, line: bytes) -> None:
        """The file's last line, with no newline after it: torn by a crash, unless it reads
        whole (then it is a line like any other, a batch the table may hold)."""
        if self.header is None:
            self._read_header(line)
            return
        self.lines += 1
        record = parse_record(line)
        if record is None:
            self.truncated = True  # the process died while writing this line
        elif record["type"] == BATCH:
            self.batch_line_at[self.batch_lines] = line
            self.batch_lines += 1
            if self.batch_lines > self.table_rows:
                self._add(record)
        else:
            self._add(record)

    def _keep_samples(self, starts: np.ndarray, ends: np.ndarray) -> None:
        """Every stride-th background sample's place in the file: the ones kept, evenly spaced."""
        wanted = (self.samples_seen + np.arange(starts.size)) % self.stride == 0
        self.samples_seen += starts.size
        self.sample_spans = np.concatenate([self.sample_spans, np.stack([starts[wanted], ends[wanted]], axis=1)])
        while len(self.sample_spans) >= 2 * MAX_SAMPLES:
            self.sample_spans = self.sample_spans[::2]
            self.stride *= 2

    def _read_samples(self) -> None:
        with open(self.file, "rb") as f:
            for start, end in self.sample_spans.tolist():
                self.lines += 1
                f.seek(start)
                self._take(f.read(end - start))

    def _take(self, line: bytes) -> None:
        record = parse_record(line)
        if record is None:
            self.damaged += 1
        else:
            self._add(record)

    def _add(self, record: dict[str, Any]) -> None:
        kind = record.pop("type")
        if kind == BATCH:
            self.batches.add(record)
        elif kind == MEMORY:
            self.samples.add(record)
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

    def run(self, table: pd.DataFrame | None) -> Run:
        samples, workers = self.samples.frames()
        header = {k: v for k, v in self.header.items() if k != "type"}
        return Run(path=self.file, header=header, batches=self.batches.frame() if table is None else table,
                   samples=samples, workers=workers, epochs=pd.DataFrame(self.epochs), stalls=self.stalls,
                   warnings=self.warnings, others=self.others, footer=self.footer, truncated=self.truncated,
                   damaged=self.damaged, samples_read=self.samples_seen)


class _SampleTables:
    """The background samples, one row each with their workers' sums, and the workers in
    long format, held compactly until they become tables: a sample of a run with workers is
    dozens of fields, and ten to twenty thousand of them as dicts were tens of MB."""

    def __init__(self) -> None:
        self.samples, self.workers = _Rows(), _Rows()

    def add(self, sample: dict[str, Any]) -> None:
        listed = sample.pop("workers", None) or []
        sample["workers"] = len(listed)
        sample["workers_rss"] = sum(w.get("rss") or 0 for w in listed)
        uss = [w.get("uss") for w in listed]
        sample["workers_uss"] = sum(uss) if listed and all(u is not None for u in uss) else None
        self.samples.add(sample)
        for w in listed:
            self.workers.add({"t": sample.get("t"), "epoch": sample.get("epoch"), "step": sample.get("step"), **w})

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.samples.frame(), self.workers.frame()


class _Rows:
    """Records as tuples of their values, the field names shared by every record that has
    the same ones; as a table, exactly what pd.DataFrame(records) gives (the same object
    matrix goes through the same inference of column types)."""

    def __init__(self) -> None:
        self.fields: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.rows: list[tuple[tuple[str, ...], tuple[Any, ...]]] = []

    def add(self, record: dict[str, Any]) -> None:
        names = tuple(record)
        self.rows.append((self.fields.setdefault(names, names), tuple(record.values())))

    def frame(self) -> pd.DataFrame:
        rows, self.rows = self.rows, []
        if len(self.fields) == 1:  # every record has the same fields, in the same order
            return pd.DataFrame([values for _, values in rows], columns=list(next(iter(self.fields))))
        return pd.DataFrame([dict(zip(names, values)) for names, values in rows])
