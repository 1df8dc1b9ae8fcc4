"""Run records: one versioned JSONL file per run, `DIR/run.jsonl`, safe against sudden death.

Line types, in the order they appear:
    header   schema version, settings, job, device, sync mode, environment
    batch    one per batch: every phase time, total, main RSS, GC time, page faults
    memory   background samples: main and per-worker RSS/USS, CPU, threads, swap,
             system memory, device memory, allocator and Python heap figures
    epoch    one per epoch: the trainer's metrics plus batch-time statistics
    stall    a hang was detected; stacks were written beside the record
    footer   status (ok, crashed, interrupted, stalled) and totals
Every line is written whole and flushed at once, so a run killed at any moment is
readable up to its last complete line; the reader ignores a torn last line.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dcnprobe.errors import UsageError

SCHEMA_VERSION = 1
RUN_FILE = "run.jsonl"


def _clean(value: Any) -> Any:
    """NaN and infinities become null: the file stays strict JSON for any reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class RunWriter:
    """Appends one JSON object per line and flushes it; safe to call from several threads."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / RUN_FILE
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run
        self._lock = threading.Lock()

    def write(self, kind: str, record: dict[str, Any]) -> None:
        line = json.dumps({"type": kind, **_clean(record)}, separators=(",", ":"), default=str)
        with self._lock:
            if self._file.closed:
                return
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


@dataclass
class Run:
    """A run record loaded into DataFrames."""

    path: Path
    header: dict[str, Any]
    batches: pd.DataFrame
    memory: pd.DataFrame
    workers: pd.DataFrame  # long format: one row per (sample, worker)
    epochs: pd.DataFrame
    stalls: list[dict[str, Any]] = field(default_factory=list)
    footer: dict[str, Any] | None = None
    truncated: bool = False  # the last line was torn: the run died mid-write

    @property
    def status(self) -> str:
        return self.footer["status"] if self.footer else "incomplete"

    @property
    def settings(self) -> dict[str, Any]:
        return self.header.get("settings", {})


def read_run(path: str | Path) -> Run:
    """Load DIR/run.jsonl (or the file itself). Bad input is a one-line UsageError."""
    path = Path(path)
    file = path / RUN_FILE if path.is_dir() else path
    if not file.is_file():
        raise UsageError(f"no run record at {file} (expected a directory written by the probe)")
    lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
    records, truncated = [], False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                truncated = True  # the process died while writing this line
                break
            raise UsageError(f"{file}: line {number} is corrupt") from None
    if not records or records[0].get("type") != "header":
        raise UsageError(f"{file}: not a dcnprobe run record (no header line)")
    header = records[0]
    version = header.get("schema")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UsageError(
            f"{file}: written with run-record schema {version}, this dcnprobe reads up to {SCHEMA_VERSION}; upgrade dcnprobe"
        )
    by_type: dict[str, list[dict[str, Any]]] = {}
    for record in records[1:]:
        by_type.setdefault(record.get("type", "?"), []).append(record)
    samples = by_type.get("memory", [])
    footers = by_type.get("footer", [])
    return Run(
        path=file,
        header=header,
        batches=_frame(by_type.get("batch", [])),
        memory=_memory_frame(samples),
        workers=_workers_frame(samples),
        epochs=_frame(by_type.get("epoch", [])),
        stalls=by_type.get("stall", []),
        footer=footers[-1] if footers else None,
        truncated=truncated,
    )


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records)
    return frame.drop(columns=["type"]) if "type" in frame else frame


def _memory_frame(samples: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for sample in samples:
        row = {k: v for k, v in sample.items() if k not in ("type", "workers")}
        workers = sample.get("workers") or []
        row["workers"] = len(workers)
        row["workers_rss"] = sum(w.get("rss") or 0 for w in workers)
        uss = [w.get("uss") for w in workers]
        row["workers_uss"] = sum(uss) if workers and all(u is not None for u in uss) else None
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def _workers_frame(samples: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [
        {"t": s.get("t"), "epoch": s.get("epoch"), "step": s.get("step"), **w}
        for s in samples
        for w in s.get("workers") or []
    ]
    return pd.DataFrame.from_records(rows)
