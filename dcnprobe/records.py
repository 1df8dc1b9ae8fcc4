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
The attach adds record types of its own (validation passes, training passes, its notes:
dcnprobe.attach.notes.COLUMNS); readers skip types they do not know.
Every line is written whole. Batch lines are flushed together, at most FLUSH_EVERY_S after
they were written (a flush per batch was a write system call per batch, the dearest part
of the record); every other record flushes at once, with the batches before it, and the
memory sampler writes one every half second (up to every 2 s in a long epoch:
dcnprobe.sampler). A batch record waits as the dict it is and is encoded only when
flushed: on the sampler's thread, while the training thread runs the model, and in one
burst rather than between a loop's steps (FLUSH_EVERY_S is twice the sampler's default
interval, so that the training thread flushes only when no sampler has for that long).
So a run killed at any moment, even by SIGKILL, is readable up to its last flush, and
loses at most the batches of the last FLUSH_EVERY_S;
readers ignore a torn last line. A line that is
not a record (a disk error, a second writer, garbage bytes) is skipped and counted, never
the end of the run: `parse_record` says which lines fit.

Beside the record, the writer keeps `batches.f64`: every batch record's standard fields
(BATCH_COLUMNS) as one row of little-endian float64, appended with its line. It is an
index for readers of long runs (a million batches load in a fraction of a second instead
of being parsed line by line); run.jsonl stays the record, and a reader uses the table
only where it agrees with it: for the batches both hold (a run killed between the two
files' flushes has a few more in one of them), its rows checked against their lines.

This module is the contract and its writer, light enough for the probed process (json
and the standard library only); `dcnprobe.runs.read_run` loads a whole record into
DataFrames for analysis, and `RecordFollower` follows one that is still growing.

A run with several processes (torchrun / DDP) holds one such record per rank,
`RUN/rank0/run.jsonl`, `RUN/rank1/run.jsonl`, ... (dcnprobe.distributed.layout), each
header naming its rank; dcnprobe.distributed.reader reads them together.
"""

from __future__ import annotations

import math
import numbers
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

SCHEMA_VERSION = 1
FLUSH_EVERY_S = 1.0  # the longest a written batch line waits in memory (see the module doc)
RUN_FILE = "run.jsonl"
BATCH_TABLE = "batches.f64"

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
        "t0_unix": "time.time() when the probe started: unix time of record time t is t0_unix + t",
        # A rank of a distributed run (dcnprobe.distributed.layout; absent: rank 0 of 1).
        "rank": "this process's rank", "world_size": "ranks in the run", "local_rank": "rank on its host",
        "host": "hostname",
        "attached": "true: the probe attached to a command dcnprobe ran; \"pid\": `dcnprobe attach PID` from outside "
                    "(no batches; see dcnprobe.outside.record)",
        "boundaries": "how batches and epochs were found (\"none\": not seen, attached from outside)",
        "outside": "attach from outside: the run found (main pid, command, cwd, window; outside.record.OUTSIDE_HEADER)",
    },
    BATCH: {
        "epoch": "epoch, from 1", "batch": "batch within the epoch, from 0", "step": "batch over the run, from 0",
        "t": "when it ended", "data_wait": "blocked in next() on the loader", "to_device": "phase time",
        "forward": "phase time", "backward": "phase time", "optimizer": "phase time", "cache_clear": "phase time",
        "collective": "blocked in collectives (DDP all-reduce, all_reduce, barrier, broadcast, all_gather), "
                      "counted in no other phase; absent: no collectives",
        "other": "loop time outside any phase", "total": "the whole batch",
        "rss": "main-process RSS at a batch end (read no more often than keeps the reads within 0.1% of the "
               "loop's time: the batches between carry the last reading)",
        "in_use": "glibc bytes in use at batch end (read at most once per sample_interval; the batches between "
                  "carry the last reading)",
        "py_blocks": "sys.getallocatedblocks() as of the latest memory sample that read it (every 4th, and "
                     "each epoch's first: it walks every pymalloc arena, too dear to read per batch)",
        "gc_s": "GC seconds during the batch", "gc_gen2": "generation-2 collections during the batch",
        "minflt": "minor page faults since the last batch that read them (read with rss; the batches between "
                  "carry 0)",
        "majflt": "major page faults since the last batch that read them (as minflt)",
        # Written by the attach and the framework callbacks, whose batch is the work around an
        # optimizer step (the header's boundaries.batch): both units a user may mean.
        "loader_batches": "batches the training DataLoader gave in it (4 with gradient accumulation over 4)",
        "optimizer_steps": "optimizer steps in it (0: it only accumulated, or a skipped step; 2: two optimizers)",
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
        "machine_busy_s": "machine-wide busy CPU seconds",
        "helpers_cpu_s": "CPU seconds of the probe's own helper processes (the early warning's analysis), all so far",
        "helpers_ended_cpu_s": "the part of helpers_cpu_s from helpers that have ended (and are in main_cpu_children)",
        "job_cpu_s": "a rank's: CPU seconds of the job's other processes (other ranks, their workers)",
        "cpu_freq_mhz": "mean clock frequency (every 4th sample, each epoch's first and the run's last; absent "
                        "from the others)",
        "device_*": "device allocator: allocated, reserved, alloc_retries (CUDA); current, driver (MPS)",
        "malloc_*": "glibc mallinfo2: in_use, free_held, ...", "py_blocks": "sys.getallocatedblocks() (read as cpu_freq_mhz is)",
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
        "message": "the line printed to stderr", "rank": "the rank that wrote it (distributed runs only)",
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


_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

# The batch fields every reader needs, in the order of a row of BATCH_TABLE. A field a
# loop adds of its own (`probe.end_batch(loss=...)`) is in run.jsonl only.
BATCH_COLUMNS: tuple[str, ...] = (
    "epoch", "batch", "step", "t", "data_wait", "to_device", "forward", "backward", "optimizer", "cache_clear",
    "collective", "other", "total", "rss", "in_use", "py_blocks", "gc_s", "gc_gen2", "minflt", "majflt", "rows",
)
BATCH_ROW = struct.Struct(f"<{len(BATCH_COLUMNS)}d")


_PLAIN_NUMBERS = frozenset((int, float))
# An infinity's eight bytes, as a row holds them: a row without them has none (a match
# across two values only sends the row the long way, which gives the same row).
_INFINITIES = (struct.pack("<d", math.inf), struct.pack("<d", -math.inf))


def batch_row(record: dict[str, Any]) -> bytes:
    """A batch record's row of BATCH_TABLE: NaN where a field is absent or not a number."""
    get = record.get
    values = [get(name, math.nan) for name in BATCH_COLUMNS]
    # The sampler's thread encodes every batch: nearly all rows hold plain ints and floats
    # (NaN where absent) and no infinity, and are packed as they are.
    if _PLAIN_NUMBERS.issuperset(map(type, values)):
        row = BATCH_ROW.pack(*values)
        if _INFINITIES[0] not in row and _INFINITIES[1] not in row:
            return row
    for i, value in enumerate(values):
        # Written per batch: plain ints and finite floats (nearly every value) take the
        # cheap test; `v - v` is 0.0 for a finite float, NaN for an infinity or a NaN.
        kind = type(value)
        if kind is int or (kind is float and value - value == 0.0):
            continue
        # A number of another type (numpy's) is written to the line as a number: so to the row.
        values[i] = (float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool)
                     and math.isfinite(value) else math.nan)
    return BATCH_ROW.pack(*values)

# What a record of each known type must hold to be read at all (field -> accepted types).
# A line that parses but lacks these is damage (a second writer, a half-overwritten line),
# not a record: readers skip and count it. Types not listed here need only a `type`.
_NUMBER = (int, float)
REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    HEADER: {"schema": (int,)},
    BATCH: {"epoch": (int,), "total": _NUMBER},
    MEMORY: {"t": _NUMBER},
    LOOP_END: {"epoch": (int,)},
    EPOCH: {"epoch": (int,)},
    FOOTER: {"status": (str,)},
}


def parse_record(line: bytes | str) -> dict[str, Any] | None:
    """One line of a record as a dict, or None when it is not a record that fits the schema:
    not JSON, not an object, no `type`, or a known type without its required fields."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        return None
    for name, kinds in REQUIRED.get(record["type"], {}).items():
        value = record.get(name)
        if not isinstance(value, kinds) or isinstance(value, bool):
            return None
    return record


class RunWriter:
    """Appends one JSON object per line; safe to call from several threads. Batch lines
    (and their rows of BATCH_TABLE) are flushed at most `flush_every_s` after they were
    written; any other record is flushed at once, with whatever waited before it."""

    def __init__(self, directory: str | Path, flush_every_s: float = FLUSH_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / RUN_FILE
        self.flush_every_s, self.clock = flush_every_s, clock
        self._file = open(self.path, "ab")  # noqa: SIM115 - lives as long as the run
        self._table = None  # BATCH_TABLE, opened with the first batch
        self._waiting: deque[dict[str, Any]] = deque()  # batch records not yet encoded
        self._lock = threading.Lock()
        self._flushed_at = clock()

    def write(self, kind: str, record: dict[str, Any]) -> None:
        """Write a record; a batch's waits (unencoded) for the next flush. The caller does
        not change a record it has handed over."""
        if kind == BATCH:
            # The training thread's whole cost per batch, until a flush is due: a deque's
            # append is atomic, so no lock is taken here.
            self._waiting.append(record)
            if self.clock() - self._flushed_at < self.flush_every_s:
                return
            line = None
        else:
            line = self._line(kind, record)
        with self._lock:
            if self._file.closed:
                return
            self._write_waiting()
            if line is not None:
                self._file.write(line)
            self._flush()

    def flush(self) -> None:
        """Everything written so far, to the files now."""
        with self._lock:
            if not self._file.closed:
                self._write_waiting()
                self._flush()

    def _write_waiting(self) -> None:
        """The batch records waiting, encoded into both files (the lock is held)."""
        waiting = self._waiting
        if not waiting:
            return
        lines, rows = [], []
        while waiting:  # popleft, not a swap: a batch appended meanwhile is never lost
            record = waiting.popleft()
            lines.append(self._line(BATCH, record))
            rows.append(batch_row(record))
        self._file.write(b"".join(lines))
        if self._table is None:
            self._table = open(self.directory / BATCH_TABLE, "ab")  # noqa: SIM115 - lives as long as the run
        self._table.write(b"".join(rows))

    def _flush(self) -> None:
        # The table first: a run killed in between has more rows than batch lines, which
        # readers take for a table that does not agree, and read the lines.
        if self._table is not None:
            self._table.flush()
        self._file.flush()
        self._flushed_at = self.clock()

    def write_footer(self, status: str, **fields: Any) -> None:
        """The last line of a run, then the file is closed. Written once: a second call
        (a stall racing the normal end of the run) finds the file closed and does nothing."""
        line = self._line(FOOTER, {"status": status, **fields})
        with self._lock:
            if not self._file.closed:
                self._write_waiting()
                self._file.write(line)
            self._close_files()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._write_waiting()
            self._close_files()

    def _close_files(self) -> None:
        if self._table is not None and not self._table.closed:
            self._table.close()
        if not self._file.closed:
            self._file.close()

    @staticmethod
    def _line(kind: str, record: dict[str, Any]) -> bytes:
        # orjson writes NaN and infinities as null, numpy scalars as numbers, and is fast
        # enough to sit in a training loop; `default=str` keeps anything else readable.
        return orjson.dumps({"type": kind, **record}, default=str, option=_DUMP_OPTIONS) + b"\n"


class RecordFollower:
    """The records appended to a run file since the last call, for live readers (the
    harness, the probe's early warning, `dcnprobe watch`).

    Reads from where it stopped, never the whole file again, at most `chunk_bytes` a call:
    `caught_up` says whether that reached the end (a reader that wants everything so far
    calls again until it does). A torn last line (the writer is mid-line, or died there)
    waits for its end; a line that is not a JSON object is skipped and counted. `path` is
    a run directory or the file itself; it may not exist yet.
    """

    def __init__(self, path: str | Path, offset: int = 0, chunk_bytes: int = 1 << 22) -> None:
        path = Path(path)
        self.path = path / RUN_FILE if path.is_dir() or not path.suffix else path
        self.offset = offset  # bytes consumed: everything before it has been returned
        self.chunk_bytes = chunk_bytes  # read at most this much per call: a huge record streams in
        self.started = False  # some record has been read
        self.skipped = 0  # lines that were not records
        self.caught_up = True  # the last read reached the end of the file as it then was
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
            self.caught_up = True
            return []
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the rest
        self.offset += len(data) - len(self._partial)
        self.caught_up = self.offset + len(self._partial) >= size
        records = []
        for line in lines:
            if not line.strip():
                continue
            record = parse_record(line)
            if record is not None:
                records.append(record)
            else:
                self.skipped += 1
        self.started = self.started or bool(records)
        return records
