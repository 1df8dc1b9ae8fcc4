"""A run record loaded for analysis: `read_run(DIR)` -> `Run`, its records as DataFrames.

Reading is for records of any length. A five-epoch run of 50,000 batches per epoch is a
few hundred MB of JSON lines; the reader streams the file in chunks, builds each table a
chunk of rows at a time (never one dict per line for the whole run), and keeps at most
MAX_SAMPLES background samples, evenly spaced: the analysis reads cumulative counters
(CPU, faults, swap) as differences and memory as slopes, which thinning does not change.

A damaged line (not JSON, not an object, or not fitting its record type: a disk error, a
second writer, garbage bytes) costs that line, not the run: it is skipped and counted in
`Run.damaged`, and the verdict says so. Only a record whose header is unreadable, or one
that is mostly damage, is refused. A torn last line (the process died mid-write) is the
normal end of a killed run: `Run.truncated`, not damage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dcnprobe.errors import UsageError
from dcnprobe.records import (
    BATCH,
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

MAX_SAMPLES = 20_000  # background samples kept: 2.8 hours at the default 0.5 s, thinned evenly beyond
CHUNK_ROWS = 50_000  # rows parsed before they become a table: bounds what is held as dicts
READ_BYTES = 1 << 24
MOSTLY_DAMAGED = 0.5  # refuse a record in which more than half the lines are damage
_TYPE_PREFIX = b'{"type":"'  # how the probe's writer starts every line


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


def read_run(path: str | Path) -> Run:
    """Load DIR/run.jsonl (or the file itself). Bad input is a one-line UsageError."""
    file = run_file(path)
    if not file.is_file():
        raise UsageError(f"no run record at {file} (expected a directory written by the probe)")
    keep_every = max(1, -(-_count_samples(file) // MAX_SAMPLES))
    tables = _Tables(keep_every)
    lines = damaged = 0
    truncated = False
    header: dict[str, Any] | None = None
    for line, last in _lines(file):
        lines += 1
        if header is None:
            header = parse_record(line)
            if header is None or header["type"] != HEADER:
                raise UsageError(f"{file}: not a dcnprobe run record (its first line is not a readable header)")
            continue
        if tables.skip_sample(line):
            continue
        record = parse_record(line)
        if record is None:
            if last:
                truncated = True  # the process died while writing this line
            else:
                damaged += 1
            continue
        tables.add(record)
    if header is None:
        raise UsageError(f"{file}: not a dcnprobe run record (no header line)")
    if damaged > MOSTLY_DAMAGED * lines:
        raise UsageError(f"{file}: {damaged} of {lines} lines are damaged; too little of the record is readable")
    version = header.get("schema")
    if version > SCHEMA_VERSION:
        raise UsageError(
            f"{file}: written with run-record schema {version}, this dcnprobe reads up to {SCHEMA_VERSION}; upgrade dcnprobe"
        )
    return tables.run(file, header, truncated, damaged)


def _lines(file: Path) -> Iterator[tuple[bytes, bool]]:
    """Every non-empty line, and whether it is the file's last one with no newline after
    it (a line torn by a crash is that one)."""
    with open(file, "rb") as f:
        rest = b""
        while chunk := f.read(READ_BYTES):
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            for part in parts:
                if part.strip():
                    yield part, False
        if rest.strip():
            yield rest, True


def _count_samples(file: Path) -> int:
    """Background samples in the file, counted without parsing them."""
    marker = b"\n" + _TYPE_PREFIX + MEMORY.encode() + b'"'
    count, tail = 0, b""
    with open(file, "rb") as f:
        while chunk := f.read(READ_BYTES):
            count += (tail + chunk).count(marker)
            tail = chunk[-len(marker):]
    return count


class _Tables:
    """Records, a chunk at a time, into the tables of a Run."""

    def __init__(self, keep_every: int) -> None:
        self.keep_every = keep_every
        self.samples_seen = 0
        self._sample_marker = _TYPE_PREFIX + MEMORY.encode() + b'"'
        self.pending: dict[str, list[dict[str, Any]]] = {BATCH: [], MEMORY: [], "workers": []}
        self.frames: dict[str, list[pd.DataFrame]] = {BATCH: [], MEMORY: [], "workers": []}
        self.epochs: list[dict[str, Any]] = []
        self.stalls: list[dict[str, Any]] = []
        self.warnings: list[dict[str, Any]] = []
        self.footer: dict[str, Any] | None = None
        self.others: dict[str, list[dict[str, Any]]] = {}

    def skip_sample(self, line: bytes) -> bool:
        """Thinning: every keep_every-th background sample is parsed, the rest are not."""
        if self.keep_every == 1 or not line.startswith(self._sample_marker):
            return False
        self.samples_seen += 1
        return (self.samples_seen - 1) % self.keep_every != 0

    def add(self, record: dict[str, Any]) -> None:
        kind = record.pop("type")
        if kind == BATCH:
            self._pend(BATCH, record)
        elif kind == MEMORY:
            if self.keep_every == 1:
                self.samples_seen += 1
            self._sample(record)
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

    def _sample(self, sample: dict[str, Any]) -> None:
        workers = sample.pop("workers", None) or []
        sample["workers"] = len(workers)
        sample["workers_rss"] = sum(w.get("rss") or 0 for w in workers)
        uss = [w.get("uss") for w in workers]
        sample["workers_uss"] = sum(uss) if workers and all(u is not None for u in uss) else None
        self._pend(MEMORY, sample)
        for worker in workers:
            self._pend("workers", {"t": sample.get("t"), "epoch": sample.get("epoch"), "step": sample.get("step"),
                                   **worker})

    def _pend(self, table: str, row: dict[str, Any]) -> None:
        rows = self.pending[table]
        rows.append(row)
        if len(rows) >= CHUNK_ROWS:
            self._flush(table)

    def _flush(self, table: str) -> None:
        rows = self.pending[table]
        if rows:
            self.frames[table].append(pd.DataFrame(rows))
            rows.clear()

    def table(self, name: str) -> pd.DataFrame:
        self._flush(name)
        frames = self.frames[name]
        if not frames:
            return pd.DataFrame()
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def run(self, file: Path, header: dict[str, Any], truncated: bool, damaged: int) -> Run:
        header = {k: v for k, v in header.items() if k != "type"}
        return Run(path=file, header=header, batches=self.table(BATCH), samples=self.table(MEMORY),
                   workers=self.table("workers"), epochs=pd.DataFrame(self.epochs), stalls=self.stalls,
                   warnings=self.warnings, others=self.others, footer=self.footer, truncated=truncated,
                   damaged=damaged, samples_read=self.samples_seen)
