"""Run records as Chrome Trace Event JSON (the Trace Event Format that chrome://tracing and
Perfetto open), one trace per rank and one merged trace of every rank.

What goes where (one process per rank's main process and per DataLoader worker):
    main process, track "steps"       each batch as a complete slice ('X') over [t - total, t],
                                      its phases nested inside it
    main process, track "epochs"      each epoch's training pass; warnings and stalls as instants
    main process, track "validation"  validation passes
    main process and each worker      memory (RSS, USS) and CPU as counters ('C')
    every process and track           names and order as metadata ('M')

A record holds each phase's duration, not its start, so the phases are laid out inside
their batch one after another in the order a step runs them (PHASE_ORDER); `other`, loop
time outside every phase, goes last. The trace's `otherData` says so.

Timestamps are microseconds of unix time (t0_unix + t) less `baseTimeNanoseconds` / 1000,
the same convention torch.profiler's Chrome traces use (torch/profiler/_chrome_trace_export.py:
event ns from CLOCK_REALTIME on Linux, written relative to a base that is unix time floored
to a 7889238-second "trimonth"). Two traces from the same trimonth share the base, so
their timestamps compare directly; in general, unix µs = ts + baseTimeNanoseconds / 1000.
A record without t0_unix (written before the field) keeps probe time: it aligns with
nothing, and `otherData.clock` says so.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcnprobe.distributed.layout import RankInfo, rank_dirs, rank_info
from dcnprobe.errors import UsageError
from dcnprobe.hooks import COLLECTIVE, DATA_WAIT, PHASES
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
    RecordFollower,
)
from dcnprobe.runs import MOSTLY_DAMAGED

# The order a training step runs its phases in: DDP's last gradient all-reduce ends
# backward, the optimizer steps after it. `other` has no place of its own: it goes last.
_AFTER_BACKWARD = PHASES.index("backward") + 1
PHASE_ORDER = (DATA_WAIT, *PHASES[:_AFTER_BACKWARD], COLLECTIVE, *PHASES[_AFTER_BACKWARD:], "other")
VALIDATION = "validation"  # the attach's record of a validation pass (dcnprobe.attach.notes)
TRIMONTH_S = 7889238  # torch.profiler's (and libkineto's) base-time interval
MB = 1 << 20

# Tracks (tids) inside a rank's main process; real thread ids are never this small.
STEPS_TID, EPOCHS_TID, VALIDATION_TID = 1, 2, 3
TRACKS = {STEPS_TID: "steps (batches, phases laid out in step order)", EPOCHS_TID: "epochs",
          VALIDATION_TID: "validation passes"}
SYNTHETIC_PID = 10_000_000  # first pid handed out where a real one is unknown or taken


def base_time_ns(t0_unix: float) -> int:
    """torch.profiler's base: unix time floored to a trimonth, in nanoseconds."""
    return int(t0_unix) // TRIMONTH_S * TRIMONTH_S * 1_000_000_000


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every whole record of a run file (a torn last line, the writer's death, is left
    out; so are damaged lines). Bad input, as read_run judges it, is a UsageError."""
    follower = RecordFollower(path)
    records: list[dict[str, Any]] = []
    while True:
        offset = follower.offset
        records += follower.read()
        if follower.offset == offset:
            break
    # As read_run does: a damaged line costs that line; a record mostly of damage is refused.
    if follower.skipped > MOSTLY_DAMAGED * (follower.skipped + len(records)):
        raise UsageError(f"{path}: {follower.skipped} of {follower.skipped + len(records)} lines are damaged; "
                         "too little of the record is readable")
    if not records or records[0].get("type") != HEADER:
        raise UsageError(f"{path}: not a dcnprobe run record (no header line)")
    version = records[0].get("schema")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UsageError(f"{path}: written with run-record schema {version}, this dcnprobe reads up to "
                         f"{SCHEMA_VERSION}; upgrade dcnprobe")
    return records


class Pids:
    """Trace pids for the processes of every rank: the real pid where it is known and no
    other process of the trace has it (so rows match a torch.profiler trace of the same
    process), otherwise one handed out from SYNTHETIC_PID."""

    def __init__(self) -> None:
        self._given: dict[tuple[int, str, int | None], int] = {}
        self._taken: set[int] = set()
        self._next = SYNTHETIC_PID

    def get(self, rank: int, role: str, real: int | None) -> int:
        key = (rank, role, real)
        if key not in self._given:
            pid = real if isinstance(real, int) and real > 0 and real not in self._taken else None
            if pid is None:
                pid = self._next
                self._next += 1
            self._taken.add(pid)
            self._given[key] = pid
        return self._given[key]


@dataclass
class Trace:
    """Trace events and what they amount to."""

    events: list[dict[str, Any]] = field(default_factory=list)
    clocks: dict[int, str] = field(default_factory=dict)  # rank -> "unix" or "probe"
    base_ns: int = 0

    @property
    def rows(self) -> dict[str, int]:
        """Rows a viewer draws: slice tracks (pid, tid) and counter tracks (pid, name)."""
        slices = {(e["pid"], e["tid"]) for e in self.events if e["ph"] in ("X", "i")}
        counters = {(e["pid"], e["name"]) for e in self.events if e["ph"] == "C"}
        processes = {e["pid"] for e in self.events if e["ph"] != "M"}
        return {"processes": len(processes), "slice_tracks": len(slices), "counter_tracks": len(counters),
                "rows": len(slices) + len(counters)}

    def document(self) -> dict[str, Any]:
        ordered = sorted(self.events, key=lambda e: (e["ph"] != "M", e.get("ts", 0.0), -e.get("dur", 0.0)))
        clocks = set(self.clocks.values())
        return {
            "traceEvents": ordered,
            "displayTimeUnit": "ms",
            "baseTimeNanoseconds": self.base_ns,
            "otherData": {
                "producer": "dcnprobe export --format chrome",
                "clock": ("unix: ts + baseTimeNanoseconds/1000 is unix time in microseconds, as in "
                          "torch.profiler traces" if clocks == {"unix"} else
                          "probe: some ranks' records have no t0_unix; their ts is microseconds since their "
                          "probe started and lines up with nothing else"),
                "phase_layout": ("a record holds phase durations, not start times: each batch's phases are laid "
                                 "out inside [t - total, t] in step order " + ", ".join(PHASE_ORDER)
                                 + "; 'other' (loop time outside any phase) is placed last"),
            },
        }


def rank_trace(records: Iterable[Mapping[str, Any]], pids: Pids, base_ns: int | None = None) -> Trace:
    """The trace events of one rank's record. `base_ns`: the merged trace's base (default:
    this record's own)."""
    records = list(records)
    header = next((r for r in records if r.get("type") == HEADER), {})
    info = rank_info(header)
    unix = info.t0_unix is not None
    if base_ns is None:
        base_ns = base_time_ns(info.t0_unix) if unix else 0
    trace = Trace(clocks={info.rank: "unix" if unix else "probe"}, base_ns=base_ns)
    offset_us = (info.t0_unix * 1e6 - base_ns / 1000) if unix else 0.0
    builder = _Builder(trace.events, info, pids, offset_us, header)
    for record in records:
        builder.add(record)
    builder.finish()
    return trace


def merge(traces: Iterable[Trace]) -> Trace:
    merged = Trace()
    for trace in traces:
        merged.events += trace.events
        merged.clocks.update(trace.clocks)
        merged.base_ns = trace.base_ns
    return merged


def merge_foreign(trace: Trace, document: Mapping[str, Any]) -> int:
    """Add another Chrome trace's events (a torch.profiler trace), moved onto this trace's
    base time. Returns how many were added."""
    events = document.get("traceEvents") if isinstance(document, Mapping) else None
    if not isinstance(events, list):
        raise ValueError("not a Chrome trace (no traceEvents list)")
    shift_us = (int(document.get("baseTimeNanoseconds") or 0) - trace.base_ns) / 1000
    added = 0
    for event in events:
        if isinstance(event, dict) and isinstance(event.get("ph"), str):
            event = dict(event)
            if isinstance(event.get("ts"), (int, float)):
                event["ts"] = event["ts"] + shift_us
            trace.events.append(event)
            added += 1
    return added


def write_trace(trace: Trace, path: Path) -> Path:
    """Write the trace; gzip-compressed when the name ends in .gz (both viewers read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(trace.document(), separators=(",", ":"))
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".gz":
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


class _Builder:
    """Turns one rank's records into events, in one pass."""

    def __init__(self, events: list[dict[str, Any]], info: RankInfo, pids: Pids, offset_us: float,
                 header: Mapping[str, Any]) -> None:
        self.events, self.info, self.pids, self.offset_us = events, info, pids, offset_us
        self.rank = info.rank
        self.main = pids.get(self.rank, "main", header.get("pid") if isinstance(header.get("pid"), int) else None)
        self.workers: dict[int, int] = {}  # real worker pid -> trace pid
        self.epochs: dict[int, list[float]] = {}  # epoch -> [first batch start, last batch end] (probe s)
        self.epoch_records: dict[int, Mapping[str, Any]] = {}
        self.last_cpu: dict[int, tuple[float, float]] = {}  # trace pid -> (t, cpu seconds)
        # A single-process record (no rank in its header) is just "main process".
        self.label = f"rank {self.rank}" + (f" on {info.host}" if info.host else "") + ": " \
            if header.get("rank") is not None else ""
        real = f" (pid {header['pid']})" if header.get("pid") else ""
        self._process(self.main, f"{self.label}main process{real}", self.rank * 1000)
        for tid, name in TRACKS.items():
            self._meta("thread_name", self.main, tid, {"name": name})
            self._meta("thread_sort_index", self.main, tid, {"sort_index": tid})

    def us(self, t: float) -> int:
        # Whole microseconds: nesting is then exact in every viewer (a float end a hair past
        # its parent's reads as a broken nesting), and 1 us is far below a phase's length.
        return int(round(self.offset_us + t * 1e6))

    def add(self, record: Mapping[str, Any]) -> None:
        kind = record.get("type")
        if kind == BATCH:
            self._batch(record)
        elif kind == MEMORY:
            self._memory(record)
        elif kind == EPOCH:
            self.epoch_records[int(record.get("epoch", 0))] = record
        elif kind == VALIDATION:
            self._validation(record)
        elif kind in (WARNING, STALL, FOOTER):
            self._instant(kind, record)

    def finish(self) -> None:
        for epoch, (start, end) in sorted(self.epochs.items()):
            record = self.epoch_records.get(epoch, {})
            start = record.get("t_start", start) if isinstance(record.get("t_start"), (int, float)) else start
            self._slice(self.main, EPOCHS_TID, f"epoch {epoch}", "epoch", start, end,
                        {"epoch": epoch, "batches": record.get("batches")})

    # -- records -------------------------------------------------------------------------

    def _batch(self, record: Mapping[str, Any]) -> None:
        t, total = record.get("t"), record.get("total")
        if not isinstance(t, (int, float)) or not isinstance(total, (int, float)) or total < 0:
            return
        start, end = self.us(t - total), self.us(t)
        epoch = int(record.get("epoch", 0))
        span = self.epochs.setdefault(epoch, [t - total, t])
        span[1] = t
        args = {k: record.get(k) for k in ("epoch", "batch", "step") if k in record}
        self.events.append({"ph": "X", "name": f"batch {record.get('batch', '?')}", "cat": "batch",
                            "pid": self.main, "tid": STEPS_TID, "ts": start, "dur": end - start,
                            "args": {**args, "total_ms": round(total * 1000, 3)}})
        cursor = t - total
        for phase in PHASE_ORDER:
            seconds = record.get(phase)
            if not isinstance(seconds, (int, float)) or seconds <= 0:
                continue
            begin, stop = self.us(cursor), min(end, self.us(cursor + seconds))
            cursor += seconds
            if stop > begin:  # phases that overrun the batch (timer rounding) are cut at its end
                self.events.append({"ph": "X", "name": phase, "cat": "phase", "pid": self.main, "tid": STEPS_TID,
                                    "ts": begin, "dur": stop - begin,
                                    "args": {"ms": round(seconds * 1000, 3)}})

    def _memory(self, record: Mapping[str, Any]) -> None:
        t = record.get("t")
        if not isinstance(t, (int, float)):
            return
        self._process_counters(self.main, t, record.get("main_rss"), record.get("main_uss"),
                               _cpu(record.get("main_cpu_user"), record.get("main_cpu_system")))
        device = {k[len("device_"):]: v / MB for k, v in record.items()
                  if k.startswith("device_") and isinstance(v, (int, float)) and k != "device_alloc_retries"}
        if device:
            self._counter(self.main, "device memory (MB)", t, device)
        for worker in record.get("workers") or []:
            real = worker.get("pid")
            if real not in self.workers:
                pid = self.workers[real] = self.pids.get(self.rank, "worker", real)
                self._process(pid, f"{self.label}DataLoader worker (pid {real})",
                              self.rank * 1000 + 1 + len(self.workers))
            self._process_counters(self.workers[real], t, worker.get("rss"), worker.get("uss"),
                                   _cpu(worker.get("cpu_user"), worker.get("cpu_system")))

    def _validation(self, record: Mapping[str, Any]) -> None:
        t, duration = record.get("t"), record.get("duration_s")
        if isinstance(t, (int, float)) and isinstance(duration, (int, float)) and duration >= 0:
            self._slice(self.main, VALIDATION_TID, "validation", "validation", t - duration, t,
                        {k: record.get(k) for k in ("epoch", "batches", "why") if k in record})

    def _instant(self, kind: str, record: Mapping[str, Any]) -> None:
        t = record.get("t")
        if isinstance(t, (int, float)):
            name = {WARNING: "slowdown warning", STALL: "stall", FOOTER: f"run ended: {record.get('status')}"}[kind]
            args = {k: v for k, v in record.items() if k in ("epoch", "batch", "ratio", "message", "waited_s",
                                                             "status", "reason")}
            self.events.append({"ph": "i", "s": "p", "name": name, "cat": kind, "pid": self.main,
                                "tid": EPOCHS_TID, "ts": self.us(t), "args": args})

    # -- events --------------------------------------------------------------------------

    def _process_counters(self, pid: int, t: float, rss: Any, uss: Any, cpu_s: float | None) -> None:
        memory = {name: value / MB for name, value in (("rss", rss), ("uss", uss)) if isinstance(value, (int, float))}
        if memory:
            self._counter(pid, "memory (MB)", t, memory)
        if cpu_s is not None:
            last = self.last_cpu.get(pid)
            self.last_cpu[pid] = (t, cpu_s)
            if last is not None and t > last[0]:
                # CPU seconds per second since the last sample: 100% is one core busy.
                self._counter(pid, "cpu (% of a core)", t, {"cpu": max(0.0, (cpu_s - last[1]) / (t - last[0]) * 100)})

    def _counter(self, pid: int, name: str, t: float, values: Mapping[str, float]) -> None:
        self.events.append({"ph": "C", "name": name, "pid": pid, "tid": 0, "ts": self.us(t),
                            "args": {k: round(float(v), 3) for k, v in values.items()}})

    def _slice(self, pid: int, tid: int, name: str, cat: str, start: float, end: float,
               args: Mapping[str, Any]) -> None:
        begin = self.us(start)
        self.events.append({"ph": "X", "name": name, "cat": cat, "pid": pid, "tid": tid, "ts": begin,
                            "dur": max(0, self.us(end) - begin), "args": dict(args)})

    def _process(self, pid: int, name: str, order: int) -> None:
        self._meta("process_name", pid, 0, {"name": name})
        self._meta("process_sort_index", pid, 0, {"sort_index": order})

    def _meta(self, name: str, pid: int, tid: int, args: Mapping[str, Any]) -> None:
        self.events.append({"ph": "M", "name": name, "pid": pid, "tid": tid, "args": dict(args)})


def _cpu(user: Any, system: Any) -> float | None:
    if isinstance(user, (int, float)):
        return float(user) + (float(system) if isinstance(system, (int, float)) else 0.0)
    return None


TRACE_FILE = "trace.json"


@dataclass(frozen=True)
class Exported:
    merged: Path
    per_rank: dict[int, Path]
    events: int
    rows: dict[str, int]
    clocks: dict[int, str]
    foreign_events: int = 0


def export_run(run_dir: str | Path, out: Path | None = None, with_trace: Path | None = None) -> Exported:
    """Write RUN/rankN/trace.json for each rank of a distributed run and the merged trace
    (default RUN/trace.json; a single run's only trace). `with_trace`: a Chrome trace to
    merge in, moved onto this trace's base time (a torch.profiler trace of the same run)."""
    run_dir = Path(run_dir)
    sources = {r: d / RUN_FILE for r, d in rank_dirs(run_dir).items() if (d / RUN_FILE).is_file()}
    single = run_dir / RUN_FILE if run_dir.is_dir() else run_dir
    if not sources:
        if not single.is_file():
            raise UsageError(f"no run record at {run_dir} (expected {RUN_FILE}, or rank0/{RUN_FILE}, ...)")
        sources = {None: single}
    records = {}
    for rank, path in sources.items():
        records[rank] = read_records(path)
    # One base for every rank: the earliest rank's, so that all timestamps compare.
    starts = [rank_info(r[0]).t0_unix for r in records.values() if rank_info(r[0]).t0_unix is not None]
    base_ns = base_time_ns(min(starts)) if starts else 0
    pids = Pids()
    traces = {rank: rank_trace(recs, pids, base_ns) for rank, recs in records.items()}
    per_rank = {}
    if None not in traces:
        per_rank = {rank: write_trace(trace, sources[rank].parent / TRACE_FILE) for rank, trace in traces.items()}
    merged = merge(traces.values())
    merged.base_ns = base_ns
    foreign = 0
    if with_trace is not None:
        try:
            foreign = merge_foreign(merged, json.loads(_read_text(with_trace)))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{with_trace}: cannot merge it: {exc}") from None
    target = out or run_dir / TRACE_FILE
    write_trace(merged, target)
    return Exported(target, per_rank, len(merged.events), merged.rows, merged.clocks, foreign)


def _read_text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    return path.read_text(encoding="utf-8")
