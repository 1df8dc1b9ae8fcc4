"""An attach record (DIR/run.jsonl written from outside) reduced to the signals its
verdict is judged on. This module only measures; dcnprobe.outside.verdict decides.

Everything is per second of the window: from outside there are no batches, so no rate
per batch and no epoch to compare with another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dcnprobe.analysis.stats import linear_slope
from dcnprobe.errors import UsageError
from dcnprobe.outside import thresholds as th
from dcnprobe.outside.frames import FETCH_FILE, Frame, dataloader_state, innermost_own, worker_part
from dcnprobe.outside.record import MEMRAY, NOTES, PROFILE, STACKS, is_outside
from dcnprobe.records import FOOTER, HEADER, MEMORY, RUN_FILE, STALL, RecordFollower


@dataclass
class OutsideRecord:
    directory: Path
    header: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    profile: list[dict[str, Any]] | None = None
    memray: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stalls: list[dict[str, Any]] = field(default_factory=list)
    footer: dict[str, Any] | None = None

    @property
    def outside(self) -> dict[str, Any]:
        return self.header.get("outside") or {}

    def add(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == MEMORY:
            self.samples.append(record)
        elif kind == STACKS:
            self.rounds.append(record)
        elif kind == PROFILE:
            self.profile = record.get("processes") or []
        elif kind == MEMRAY:
            self.memray = record.get("processes") or []
        elif kind == NOTES:
            self.notes += record.get("lines") or []
        elif kind == STALL:
            self.stalls.append(record)
        elif kind == FOOTER:
            self.footer = record


def load(directory: str | Path) -> OutsideRecord:
    directory = Path(directory)
    if not (directory / RUN_FILE).is_file():
        raise UsageError(f"no run record at {directory / RUN_FILE}")
    records = RecordFollower(directory).read()
    if not records or records[0].get("type") != HEADER or not is_outside(records[0]):
        raise UsageError(f"{directory / RUN_FILE} was not written by `dcnprobe attach PID`")
    record = OutsideRecord(directory, records[0])
    for line in records[1:]:
        record.add(line)
    return record


@dataclass(frozen=True)
class Rate:
    per_s: float  # bytes per second, fitted
    t: float  # slope / its standard error
    growth: float  # fitted change over the span
    span_s: float
    points: int
    kind: str  # "uss" or "rss"
    late_per_s: float  # fitted over the second half of the span only

    @property
    def steady(self) -> bool:
        """A clear trend that is still going at the end: not a rise that has levelled off."""
        return self.t >= th.STEADY_T and self.late_per_s >= th.STILL_GROWING * self.per_s


@dataclass
class Stall:
    idle_s: float  # the run's processes used (almost) no CPU for this long, up to the window's end
    tree_cpu: float  # cores used by the whole run over that stretch
    same_stack_rounds: int  # dumps over the stretch in which the main thread's stack did not change
    stacks_read: bool
    main_frames: list[Frame]  # innermost first, from the last dump
    main_waits_for_workers: bool
    waited_on: list[
        tuple[int, str, list[Frame]]
    ]  # (pid, role, frames): the process(es) the run waits on
    files: list[str]  # the last round's stack files


@dataclass
class OutsideSignals:
    cwd: str | None = None  # the run's working folder: its own files are named relative to it
    window_s: float = 0.0  # first to last sample
    samples: int = 0
    cores: int = 1
    main_pid: int | None = None
    worker_pids: list[int] = field(default_factory=list)
    workers_replaced: bool = False  # workers ended or started during the window
    main_cpu: float | None = None  # cores, mean over the window
    worker_cpu: dict[int, float] = field(default_factory=dict)
    tree_cpu: float | None = None  # main + workers + others
    kernel_share: float | None = None
    involuntary_per_s: float | None = None
    runqueue_wait: float | None = None  # seconds per second the run's threads waited for a CPU
    main_runqueue_wait: float | None = None  # the same, the main process's threads only
    outside_load: float | None = None  # other programs' share of all cores
    attach_load: float | None = None  # the attach's own (py-spy included), share of all cores
    threads: int | None = None  # main + workers + others, median sample
    threads_main: int | None = None
    fds: dict[str, int] = field(default_factory=dict)  # start, end, growth (main + workers)
    worker_memory: dict[int, Rate] = field(default_factory=dict)
    main_memory: Rate | None = None
    paging: dict[str, float] = field(default_factory=dict)
    main_profile: dict[str, Any] | None = None
    stall: Stall | None = None

    @property
    def workers_rate(self) -> float | None:
        """Mean fitted growth per worker, bytes per second."""
        rates = [r.per_s for r in self.worker_memory.values()]
        return float(np.mean(rates)) if rates else None

    @property
    def workers_growth(self) -> float:
        return sum(max(r.growth, 0.0) for r in self.worker_memory.values())

    @property
    def workers_steady(self) -> bool:
        return bool(self.worker_memory) and sum(
            r.steady for r in self.worker_memory.values()
        ) * 2 > len(self.worker_memory)

    @property
    def waiting_share(self) -> float | None:
        return self.main_profile.get("waiting_for_workers_share") if self.main_profile else None


def measure(record: OutsideRecord, stall_after_s: float | None = None) -> OutsideSignals:
    samples = sorted(
        (s for s in record.samples if isinstance(s.get("t"), (int, float))), key=lambda s: s["t"]
    )
    signals = OutsideSignals(
        cores=int((record.header.get("environment") or {}).get("cpu_count") or 1),
        main_pid=record.outside.get("main_pid"),
        samples=len(samples),
        cwd=record.outside.get("cwd"),
    )
    if record.profile:
        signals.main_profile = next((p for p in record.profile if p.get("role") == "main"), None)
    if len(samples) < 2:
        return signals
    signals.window_s = float(samples[-1]["t"] - samples[0]["t"])
    _workers(signals, samples)
    _cpu(signals, samples)
    _memory(signals, samples)
    _paging(signals, samples)
    _threads_and_files(signals, samples)
    after = (
        stall_after_s
        if stall_after_s is not None
        else record.outside.get("stall_after_s", th.DEFAULT_STALL_AFTER_S)
    )
    signals.stall = find_stall(samples, record.rounds, after)
    return signals


# -- per process ------------------------------------------------------------------------------


MAIN_KEY = -1  # the main process's key among a sample's processes (its fields carry no pid)


def processes(sample: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """pid -> that process's fields, for every process of the run in a sample."""
    found = {MAIN_KEY: _main(sample)}
    for entry in (sample.get("workers") or []) + (sample.get("others") or []):
        found[int(entry["pid"])] = entry
    return found


def _cpu_of(stats: dict[str, Any]) -> float:
    return _number(stats.get("cpu_user")) + _number(stats.get("cpu_system"))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else 0.0


def _delta(now: dict[str, Any], before: dict[str, Any], key: str) -> float:
    a, b = now.get(key), before.get(key)
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return 0.0
    return max(0.0, float(a) - float(b))  # counters only rise; a thread gone is not negative work


def interval_cpu(before: dict[str, Any], now: dict[str, Any]) -> float:
    """CPU-seconds the run used between two samples (processes present in both)."""
    a, b = processes(before), processes(now)
    return sum(
        _delta(b[pid], a[pid], "cpu_user") + _delta(b[pid], a[pid], "cpu_system")
        for pid in b
        if pid in a
    )


def _workers(signals: OutsideSignals, samples: list[dict[str, Any]]) -> None:
    seen = [{int(w["pid"]) for w in s.get("workers") or []} for s in samples]
    signals.worker_pids = sorted(set().union(*seen))
    signals.workers_replaced = any(a != seen[0] for a in seen[1:])


def _cpu(signals: OutsideSignals, samples: list[dict[str, Any]]) -> None:
    wall = signals.window_s
    if wall <= 0:
        return
    first, last = samples[0], samples[-1]
    signals.main_cpu = (_cpu_of(_main(last)) - _cpu_of(_main(first))) / wall
    if all(isinstance(_main(x).get("runqueue_wait_s"), (int, float)) for x in (first, last)):
        signals.main_runqueue_wait = _delta(_main(last), _main(first), "runqueue_wait_s") / wall
    for pid in signals.worker_pids:
        series = [
            (s["t"], w) for s in samples for w in s.get("workers") or [] if int(w["pid"]) == pid
        ]
        if len(series) >= 2 and series[-1][0] > series[0][0]:
            signals.worker_cpu[pid] = (_cpu_of(series[-1][1]) - _cpu_of(series[0][1])) / (
                series[-1][0] - series[0][0]
            )
    tree = user = system = involuntary = runqueue = busy = attach = 0.0
    busy_wall = 0.0
    runqueue_read = False
    for before, now in zip(samples, samples[1:]):
        a, b = processes(before), processes(now)
        common = [pid for pid in b if pid in a]
        u = sum(_delta(b[p], a[p], "cpu_user") for p in common)
        s = sum(_delta(b[p], a[p], "cpu_system") for p in common)
        user, system, tree = user + u, system + s, tree + u + s
        involuntary += sum(_delta(b[p], a[p], "ctx_involuntary") for p in common)
        if any(isinstance(b[p].get("runqueue_wait_s"), (int, float)) for p in common):
            runqueue_read = True
            runqueue += sum(_delta(b[p], a[p], "runqueue_wait_s") for p in common)
        if isinstance(now.get("machine_busy_s"), (int, float)) and isinstance(
            before.get("machine_busy_s"), (int, float)
        ):
            own = _delta(now, before, "attach_cpu_s")
            busy += max(0.0, now["machine_busy_s"] - before["machine_busy_s"]) - (u + s) - own
            attach += own
            busy_wall += now["t"] - before["t"]
    signals.tree_cpu = tree / wall
    signals.kernel_share = system / tree if tree > 0 else None
    signals.involuntary_per_s = involuntary / wall
    signals.runqueue_wait = runqueue / wall if runqueue_read else None
    if busy_wall > 0:
        capacity = busy_wall * max(signals.cores, 1)
        signals.outside_load = min(1.0, max(0.0, busy / capacity))
        signals.attach_load = min(1.0, attach / capacity)


def _main(sample: dict[str, Any]) -> dict[str, Any]:
    return {k[5:]: v for k, v in sample.items() if k.startswith("main_")}


def _rate(points: list[tuple[float, dict[str, Any]]]) -> Rate | None:
    for kind in ("uss", "rss"):
        series = [(t, float(p[kind])) for t, p in points if isinstance(p.get(kind), (int, float))]
        if len(series) >= th.MIN_POINTS and series[-1][0] - series[0][0] > 0:
            t = np.array([x for x, _ in series])
            y = np.array([v for _, v in series])
            slope = linear_slope(t, y)
            late = t >= (t[0] + t[-1]) / 2
            late_slope = linear_slope(t[late], y[late]) if late.sum() >= 3 else slope
            return Rate(
                slope.per_step,
                slope.t,
                slope.growth,
                float(t[-1] - t[0]),
                len(series),
                kind,
                late_slope.per_step,
            )
    return None


def _memory(signals: OutsideSignals, samples: list[dict[str, Any]]) -> None:
    start = samples[0]["t"]
    present_at_start = {int(w["pid"]) for w in samples[0].get("workers") or []}
    for pid in signals.worker_pids:
        points = [
            (s["t"], w) for s in samples for w in s.get("workers") or [] if int(w["pid"]) == pid
        ]
        if pid not in present_at_start and points:
            # Born during the window: its first seconds copy the parent's pages as they are written.
            born = points[0][0]
            points = [(t, w) for t, w in points if t >= born + th.WORKER_WARMUP_S]
        rate = _rate(points)
        if rate is not None:
            signals.worker_memory[pid] = rate
    signals.main_memory = _rate([(s["t"], _main(s)) for s in samples if s["t"] >= start])


def _paging(signals: OutsideSignals, samples: list[dict[str, Any]]) -> None:
    first, last = samples[0], samples[-1]
    wall = max(signals.window_s, 1e-9)
    faults = 0.0
    for before, now in zip(samples, samples[1:]):
        a, b = processes(before), processes(now)
        faults += sum(_delta(b[pid], a[pid], "majflt") for pid in b if pid in a)

    def tree_swap(sample: dict[str, Any]) -> float:
        return sum(_number(p.get("swap")) for p in processes(sample).values())

    signals.paging = {
        "swap_in": _delta(last, first, "swap_in"),
        "swap_out": _delta(last, first, "swap_out"),
        "swap_in_per_s": _delta(last, first, "swap_in") / wall,
        "major_faults": faults,
        "major_faults_per_s": faults / wall,
        "run_swap_start": tree_swap(first),
        "run_swap_end": tree_swap(last),
        "sys_available_min": min(_number(s.get("sys_available")) for s in samples),
    }


def _threads_and_files(signals: OutsideSignals, samples: list[dict[str, Any]]) -> None:
    threads = [sum(_number(p.get("threads")) for p in processes(s).values()) for s in samples]
    signals.threads = int(np.median(threads))
    signals.threads_main = int(np.median([_number(s.get("main_threads")) for s in samples]))
    fds = []
    for sample in samples:
        values = [
            p.get("fds")
            for pid, p in processes(sample).items()
            if pid == MAIN_KEY or any(int(w["pid"]) == pid for w in sample.get("workers") or [])
        ]
        if values and all(isinstance(v, (int, float)) for v in values):
            fds.append(sum(values))
    if len(fds) >= 4:
        # A quarter at each end, by median: workers replaced at an epoch's end overlap their
        # successors for a moment (twice the descriptors, none of them kept).
        quarter = max(1, len(fds) // 4)
        start, end = int(np.median(fds[:quarter])), int(np.median(fds[-quarter:]))
        signals.fds = {"start": start, "end": end, "growth": end - start}


# -- stalls ----------------------------------------------------------------------------------------


def find_stall(
    samples: list[dict[str, Any]], rounds: list[dict[str, Any]], stall_after_s: float
) -> Stall | None:
    """The run has been idle up to the end of the window for at least stall_after_s: its
    processes together used under IDLE_CORES, and the main thread's stack did not change
    in the dumps of that stretch (when stacks could be read)."""
    if len(samples) < 2:
        return None
    idle_from = None
    cpu = 0.0
    for before, now in reversed(list(zip(samples, samples[1:]))):
        used = interval_cpu(before, now)
        if used / max(now["t"] - before["t"], 1e-9) >= th.IDLE_CORES:
            break
        idle_from, cpu = before["t"], cpu + used
    if idle_from is None:
        return None
    end = samples[-1]["t"]
    idle_s = end - idle_from
    if idle_s < stall_after_s:
        return None
    within = [r for r in rounds if idle_from <= r.get("t", -1) <= end + 1.0]
    stacks = [_main_frames(r) for r in within]
    stacks = [s for s in stacks if s is not None]
    if len(stacks) >= 2 and any(s != stacks[0] for s in stacks[1:]):
        return None  # idle, but moving: a process that sleeps and wakes, not one that hangs
    last = rounds[-1] if rounds else None
    main_frames = stacks[-1] if stacks else []
    waiting = dataloader_state(main_frames) == "waiting"
    return Stall(
        idle_s=idle_s,
        tree_cpu=cpu / idle_s if idle_s > 0 else 0.0,
        same_stack_rounds=len(stacks),
        stacks_read=bool(stacks),
        main_frames=main_frames,
        main_waits_for_workers=waiting,
        waited_on=_waited_on(last, waiting, main_frames) if last else [],
        files=[p["file"] for p in (last or {}).get("processes", []) if p.get("file")],
    )


def frames_of(entry: dict[str, Any]) -> list[Frame]:
    return [Frame.parse(f) for f in entry.get("main_thread") or []]


def _main_frames(round_: dict[str, Any]) -> list[Frame] | None:
    main = next((p for p in round_.get("processes", []) if p.get("role") == "main"), None)
    return frames_of(main) if main and main.get("main_thread") else None


def _waited_on(
    round_: dict[str, Any], waiting: bool, main_frames: list[Frame]
) -> list[tuple[int, str, list[Frame]]]:
    """Who the run waits on: with the main process waiting for a batch, the workers inside
    the dataset or collate code (the ones not idle waiting for work); otherwise the main
    process itself."""
    entries = round_.get("processes", [])
    main = next((p for p in entries if p.get("role") == "main"), None)
    if waiting:
        busy = [
            (p["pid"], p["role"], frames_of(p))
            for p in entries
            if p.get("role") == "worker" and _fetching(frames_of(p))
        ]
        if busy:
            return busy
    return [(main["pid"], "main", main_frames)] if main else []


def _fetching(frames: list[Frame]) -> bool:
    """A worker inside the dataset's or collate's code, not idle waiting for indices."""
    inner = worker_part(frames)
    return (
        any(f.function.endswith("fetch") and f.file.endswith(FETCH_FILE) for f in inner)
        or innermost_own(inner) is not None
    )
