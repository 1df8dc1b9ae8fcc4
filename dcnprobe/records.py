"""Run records: one versioned JSONL file per run, `DIR/run.jsonl`, safe against sudden death.

Record types, in the order they appear (constants below; every field in `COLUMNS`):
    header    schema version, settings, job, device, sync mode, environment
    batch     one per batch: every phase time, total, main RSS, GC time, page faults
    memory    background samples: main and per-worker RSS/USS, CPU, threads, swap,
              system memory, device memory, allocator and Python heap figures
    loop_end  a pass over the loader ended (validation and checkpoints come after)
    epoch     one per epoch: the trainer's metrics plus batch-time statistics
    warning   the live monitor found a later epoch clearly slower than epoch 1
    stall     a hang was detected; stacks were written beside the record
    footer    status (ok, slow, crashed, interrupted, stalled) and totals
Every line is written whole and flushed at once, so a run killed at any moment is
readable up to its last complete line; readers ignore a torn last line. `read_run`
loads a whole record; `RecordFollower` follows one that is still growing.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dcnprobe.errors import UsageError

SCHEMA_VERSION = 1
RUN_FILE = "run.jsonl"

HEADER = "header"
BATCH = "batch"
MEMORY = "memory"
LOOP_END = "loop_end"
EPOCH = "epoch"
WARNING = "warning"
STALL = "stall"
FOOTER = "footer"
RECORD_TYPES = (HEADER, BATCH, MEMORY, LOOP_END, EPOCH, WARNING, STALL, FOOTER)

# Footer statuses. `slow`: the probe ended the run itself (on_slowdown=stop).
FOOTER_STATUSES = ("ok", "slow", "crashed", "interrupted", "stalled")

# The one table of fields, per record type. Times are seconds, memory bytes; `t` is
# seconds since the probe started. A field ending in `*` names a family (`main_*`: the
# fields of processes.ProcessReader.stats for the main process). Loops may add fields of
# their own to batch and epoch records (the trainer's metrics, `rows`).
COLUMNS: dict[str, dict[str, str]] = {
    HEADER: {
        "schema": "run-record schema version (readers refuse newer ones)",
        "created": "local time the probe started", "pid": "training process id", "argv": "its command line",
        "device": "torch device probed", "sync": "device sync mode: batch, phase or none",
        "sample_interval": "seconds between memory samples", "phases": "phase names timed",
        "environment": "machine, versions, CPU count", "settings": "dcnprobe.settings.Settings as a dict",
        "batches_per_epoch": "batches in a pass, when the loop knows (optional)",
        "attached": "true: the probe attached to a command dcnprobe ran; \"pid\": `dcnprobe attach PID` from outside "
                    "(no batches; see dcnprobe.outside.record)",
        "boundaries": "how batches and epochs were found (\"none\": not seen, attached from outside)",
        "outside": "attach from outside: the run found (main pid, command, cwd, window; outside.record.OUTSIDE_HEADER)",
    },
    BATCH: {
        "epoch": "epoch, from 1", "batch": "batch within the epoch, from 0", "step": "batch over the run, from 0",
        "t": "when it ended", "data_wait": "blocked in next() on the loader", "to_device": "phase time",
        "forward": "phase time", "backward": "phase time", "optimizer": "phase time", "cache_clear": "phase time",
        "other": "loop time outside any phase", "total": "the whole batch", "rss": "main-process RSS",
        "in_use": "glibc bytes in use at batch end", "py_blocks": "sys.getallocatedblocks()",
        "gc_s": "GC seconds during the batch", "gc_gen2": "generation-2 collections during the batch",
        "minflt": "minor page faults during the batch", "majflt": "major page faults during the batch",
    },
    MEMORY: {
        "t": "when sampled", "epoch": "epoch then", "step": "steps done then",
        "in_loop": "sampled while batches were iterated (not validation)",
        "main_*": "main process: rss, uss, threads, cpu_user, cpu_system, ctx_involuntary, fds, minflt, majflt",
        "workers": "list: one main_*-like dict per DataLoader worker, with its pid",
        "others": "attach from outside: the run's other child processes (role helper or other), main_*-like",
        "attach_cpu_s": "attach from outside: CPU seconds of the attach and its py-spy (not other programs' load)",
        "main_swap": "attach from outside, also per worker: bytes in swap (VmSwap)",
        "main_ctx_voluntary": "attach from outside, also per worker: voluntary context switches",
        "main_runqueue_wait_s": "attach from outside, also per worker: seconds its threads waited for a CPU",
        "sys_available": "system memory available", "swap_used": "swap in use",
        "swap_in": "bytes swapped in since boot", "swap_out": "bytes swapped out since boot",
        "machine_busy_s": "machine-wide busy CPU seconds", "cpu_freq_mhz": "mean clock frequency",
        "device_*": "device allocator: allocated, reserved, alloc_retries (CUDA); current, driver (MPS)",
        "malloc_*": "glibc mallinfo2: in_use, free_held, ...", "py_blocks": "sys.getallocatedblocks()",
        "gc_count_*": "collections per generation", "gc_time_*": "GC seconds per generation",
        "live_tensors": "live torch tensors (only with live_tensors=True)",
        "sampler_error": "a sample failed; this says why",
    },
    LOOP_END: {"t": "when the pass ended", "epoch": "its epoch", "batches": "batches in the pass"},
    EPOCH: {
        "epoch": "epoch", "batches": "batches", "t_start": "when it began", "t_end": "when it ended",
        "median_batch_s": "median batch time", "p90_batch_s": "90th percentile batch time",
    },
    WARNING: {
        "t": "when written", "epoch": "epoch found slow", "batch": "batches of that epoch seen",
        "kind": "slowdown", "statistic": "median, mean or time", "ratio": "later epoch / epoch 1",
        "ratio_ci": "[low, high] at 99% confidence (null for the time rule)", "threshold": "ratio called slow",
        "grew": "phase that added the most time per batch", "grew_s": "seconds per batch it added",
        "cause": "likely cause id (docs/causes.md), or null", "advice": "what to do", "action": "warn, stop or profile",
        "message": "the line printed to stderr",
    },
    STALL: {
        "t": "when declared", "epoch": "epoch", "batch": "batch being waited for", "step": "steps done",
        "waited_s": "seconds without a finished batch", "median_batch_s": "recent median batch time",
        "workers": "worker pids", "stacks": "stack files written under DIR/stacks",
        "seen_from": "\"outside\": found by `attach PID` (no CPU used, main stack unchanged; epoch and batch null)",
        "waits_on": "attach from outside: [{pid, role}] of the process(es) the run waits on",
    },
    FOOTER: {
        "status": "one of FOOTER_STATUSES", "t": "when the run ended", "epochs": "epochs begun",
        "steps": "batches done", "reason": "why the probe ended the run (status slow or stalled)",
        "observed_s": "attach from outside: seconds watched", "ended_by": "attach from outside: window or exited",
    },
}


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
        line = self._line(kind, record)
        with self._lock:
            self._append(line)

    def write_footer(self, status: str, **fields: Any) -> None:
        """The last line of a run, then the file is closed. Written once: a second call
        (a stall racing the normal end of the run) finds the file closed and does nothing."""
        line = self._line(FOOTER, {"status": status, **fields})
        with self._lock:
            self._append(line)
            self._file.close()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    @staticmethod
    def _line(kind: str, record: dict[str, Any]) -> str:
        return json.dumps({"type": kind, **_clean(record)}, separators=(",", ":"), default=str)

    def _append(self, line: str) -> None:
        if self._file.closed:
            return
        self._file.write(line + "\n")
        self._file.flush()


class RecordFollower:
    """The records appended to a run file since the last call, for live readers (the
    harness, the probe's early warning, `dcnprobe watch`).

    Reads from where it stopped, never the whole file again. A torn last line (the
    writer is mid-line, or died there) waits for its end; a line that is not a JSON
    object is skipped and counted. `path` is a run directory or the file itself; it may
    not exist yet.
    """

    def __init__(self, path: str | Path, offset: int = 0, chunk_bytes: int = 1 << 22) -> None:
        path = Path(path)
        self.path = path / RUN_FILE if path.is_dir() or not path.suffix else path
        self.offset = offset  # bytes consumed: everything before it has been returned
        self.chunk_bytes = chunk_bytes  # read at most this much per call: a huge record streams in
        self.started = False  # some record has been read
        self.skipped = 0  # lines that were not records
        self._partial = b""

    @property
    def torn(self) -> bool:
        """The file ends in an incomplete line (so far)."""
        return bool(self._partial)

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset + len(self._partial):  # truncated or replaced: start again
                    self.offset, self._partial = 0, b""
                f.seek(self.offset + len(self._partial))
                chunk = f.read(self.chunk_bytes)
        except FileNotFoundError:
            return []
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the rest
        self.offset += len(data) - len(self._partial)
        records = []
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                self.skipped += 1
        self.started = self.started or bool(records)
        return records


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
    warnings: list[dict[str, Any]] = field(default_factory=list)
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
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                truncated = True  # the process died while writing this line
                break
            raise UsageError(f"{file}: line {number} is corrupt") from None
        if not isinstance(record, dict):
            raise UsageError(f"{file}: line {number} is not a record (a JSON {type(record).__name__}, not an object)")
        records.append(record)
    if not records or records[0].get("type") != HEADER:
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
    samples = by_type.get(MEMORY, [])
    footers = by_type.get(FOOTER, [])
    return Run(
        path=file,
        header=header,
        batches=_frame(by_type.get(BATCH, [])),
        memory=_memory_frame(samples),
        workers=_workers_frame(samples),
        epochs=_frame(by_type.get(EPOCH, [])),
        stalls=by_type.get(STALL, []),
        warnings=by_type.get(WARNING, []),
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
