"""The verdict on a run seen from outside: the causes of the catalogue (docs/causes.md)
whose signals an outside view can see, each with its evidence and what to do; what was
seen that names no cause; and what cannot be judged without batch timings, with the one
command that would measure them.

Rules read measurements only. Other programs' CPU load is named as `machine-contention`
and never read as a fault of the run's code: the rules that read CPU stay silent under it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The one import of the cause catalogue's advice (it may move into the cause units).
from dcnprobe.analysis.causes import advice_for
from dcnprobe.outside import thresholds as th
from dcnprobe.outside.frames import Frame, innermost_own, worker_part
from dcnprobe.outside.signals import OutsideRecord, OutsideSignals, Stall, load, measure

ANALYSIS_FILE = "analysis.json"
# Causes whose signals are batch times (or need them to tell one cause from another).
NEEDS_BATCH_TIMES = (
    "periodic-work",
    "metric-accumulation",
    "gc-pressure",
    "graph-retention",
    "worker-respawn",
    "cache-clearing-cost",
    "shape-cache",
    "thermal-throttling",
    "device-allocator-retention",
    "allocator-fragmentation",
)
NOT_JUDGED = (
    "whether later epochs are slower than the first, by how much and from which batch, and which phase "
    "(data wait, forward, backward, optimizer, the loop's own code) took the extra time"
)
STACK_LINES = 8  # frames of each process's main thread shown for a stall


@dataclass(frozen=True)
class OutsideFinding:
    id: str
    score: float
    evidence: tuple[str, ...]

    @property
    def advice(self) -> str:
        return advice_for(self.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": round(self.score, 3),
            "evidence": list(self.evidence),
            "advice": self.advice,
        }


@dataclass
class OutsideVerdict:
    record: OutsideRecord
    signals: OutsideSignals
    causes: list[OutsideFinding]
    seen: list[str] = field(default_factory=list)

    @property
    def top(self) -> OutsideFinding | None:
        return self.causes[0] if self.causes else None

    @property
    def headline(self) -> str:
        s, top = self.signals, self.top
        window = f"over {s.window_s:.0f} s seen from outside"
        if top is None:
            return (
                f"No cause {window}: nothing that can be seen without batch timings points to one "
                "(memory steady, no paging, no stall, no other program competing for the CPUs)."
            )
        if top.id == "stall":  # what stopped, and who everyone waits on
            parts = [e for e in top.evidence[:3] if not e.startswith("every process's stack")]
            return f"Stalled: {'; '.join(parts)}."
        return f"Most likely cause {window}: {top.id} - {top.evidence[0]}."

    def to_json(self) -> dict[str, Any]:
        s = self.signals
        outside = self.record.outside
        return {
            "attached": "pid",
            "main_pid": s.main_pid,
            "command": outside.get("command"),
            "window_s": s.window_s,
            # Not measurable from outside: batch times. Null, never false: "not slow" is not known.
            "slowdown": None,
            "ratio": None,
            "ratio_ci": None,
            "verdict": self.headline,
            "causes": [c.to_dict() for c in self.causes]
            or [
                {
                    "id": "none",
                    "score": 1.0,
                    "evidence": ["nothing seen from outside points to a cause"],
                    "advice": advice_for("none"),
                }
            ],
            "seen": self.seen,
            "not_judged": {
                "needs_batch_times": list(NEEDS_BATCH_TIMES),
                "what": NOT_JUDGED,
                "rerun": outside.get("rerun"),
            },
            "cpu": {
                "main": s.main_cpu,
                "workers": {str(k): v for k, v in s.worker_cpu.items()},
                "run": s.tree_cpu,
                "kernel_share": s.kernel_share,
                "involuntary_per_s": s.involuntary_per_s,
                "runqueue_wait_per_s": s.runqueue_wait,
                "cores": s.cores,
                "threads": s.threads,
            },
            "outside_load": s.outside_load,
            "attach_load": s.attach_load,
            "memory": {
                "workers": {str(pid): r.__dict__ for pid, r in s.worker_memory.items()},
                "workers_rate_per_s": s.workers_rate,
                "workers_growth": s.workers_growth,
                "main": s.main_memory.__dict__ if s.main_memory else None,
                "workers_replaced": s.workers_replaced,
            },
            "paging": s.paging,
            "fds": s.fds,
            "profile": self.record.profile,
            "memray": self.record.memray,
            "stall": _stall_json(s.stall) if s.stall else None,
            "notes": self.record.notes,
        }


def judge(
    directory: str | Path | OutsideRecord, stall_after_s: float | None = None
) -> OutsideVerdict:
    record = directory if isinstance(directory, OutsideRecord) else load(directory)
    signals = measure(record, stall_after_s)
    causes = [f for rule in RULES.values() if (f := rule(signals)) is not None]
    causes.sort(key=lambda f: f.score, reverse=True)
    return OutsideVerdict(record, signals, causes, _seen(signals, causes))


def write_verdict(verdict: OutsideVerdict) -> Path:
    path = verdict.record.directory / ANALYSIS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(verdict.to_json(), indent=2, default=float))
    os.replace(tmp, path)
    return path


# -- helpers -------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / th.MB:,.0f} MB" if abs(n) >= 10 * th.MB else f"{n / th.MB:,.1f} MB"


def _rate(per_s: float) -> str:
    return (
        f"{per_s / th.MB:,.2f} MB/s" if abs(per_s) >= th.MB / 10 else f"{per_s / th.KB:,.0f} KB/s"
    )


def _signed_rate(per_s: float) -> str:
    return f"{'+' if per_s >= 0 else ''}{_rate(per_s)}"


def _cpu(cores: float | None) -> str:
    return "?" if cores is None else f"{cores:.0%}"


def _contended(s: OutsideSignals) -> bool:
    return s.outside_load is not None and s.outside_load >= th.OUTSIDE_BUSY


def _queues_for_cpus(s: OutsideSignals) -> bool:
    return s.runqueue_wait is None or s.runqueue_wait >= th.RUNQUEUE_WAIT_MIN


def _loader_bound(s: OutsideSignals) -> bool:
    busy = [v for v in s.worker_cpu.values()]
    share = s.waiting_share
    return (
        share is not None
        and share >= th.WAITING_SHARE
        and bool(busy)
        and sum(busy) / len(busy) >= th.WORKERS_BUSY
    )


def _starved(s: OutsideSignals) -> bool:
    """The main process queues for CPUs its own busy workers hold, other programs aside."""
    busy = list(s.worker_cpu.values())
    return (
        not _contended(s)
        and s.main_runqueue_wait is not None
        and s.main_runqueue_wait >= th.MAIN_STARVED_WAIT
        and bool(busy)
        and sum(busy) / len(busy) >= th.WORKERS_BUSY
    )


def _starved_text(s: OutsideSignals) -> str:
    return (
        f"the main process waited for a CPU {s.main_runqueue_wait:.2f} s per second while its workers used "
        f"{sum(s.worker_cpu.values()):.1f} cores (other programs {s.outside_load or 0:.0%} of them): "
        "the workers take the cores it needs"
    )


def _where(frames: list[Frame], cwd: str | None) -> str:
    """'in Rows.__getitem__ (examples/x.py:68), waiting in Event.wait (threading.py:327)'."""
    if not frames:
        return "at an unreadable place"
    own = innermost_own(frames)
    text = f"in {(own or frames[0]).name(cwd)}"
    if own is not None and own is not frames[0]:
        text += f", waiting in {frames[0].name(cwd)}"
    return text


# -- rules ----------------------------------------------------------------------------------------


def stall(s: OutsideSignals) -> OutsideFinding | None:
    st = s.stall
    if st is None:
        return None
    still = (
        f"and the main process's stack did not change in {st.same_stack_rounds} dumps"
        if st.same_stack_rounds >= 2
        else "(its stacks could not be compared)"
        if not st.stacks_read
        else ""
    )
    evidence = [
        f"no process of the run used CPU for {st.idle_s:.0f} s ({st.tree_cpu:.1%} of a core together) {still}".strip()
    ]
    cwd = s.cwd
    workers = [(pid, frames) for pid, role, frames in st.waited_on if role == "worker"]
    if st.main_waits_for_workers:
        waits = next((f for f in st.main_frames if f.in_dataloader_next), None)
        evidence.append(
            "the main process waits for a batch from its DataLoader workers"
            + (f" (in {waits.function})" if waits else "")
            + (
                ""
                if workers
                else ", which no worker is working on (every worker is idle, waiting for "
                "work): a worker died, or a batch was lost"
            )
        )
        evidence += [
            f"worker {pid} is blocked {_where(worker_part(frames), cwd)}" for pid, frames in workers
        ]
    else:
        evidence += [
            f"the main process {pid} is blocked {_where(frames, cwd)}"
            for pid, role, frames in st.waited_on
        ]
    if st.files:
        evidence.append(f"every process's stack: {', '.join('stacks/' + f for f in st.files)}")
    return OutsideFinding("stall", th.SCORE_STALL, tuple(evidence))


def worker_memory_growth(s: OutsideSignals) -> OutsideFinding | None:
    rate = s.workers_rate
    if rate is None:
        return None
    loader_bound = _loader_bound(s) and not _contended(s)
    starved = _starved(s)
    paced = (
        loader_bound or starved
    )  # the workers hold the run's pace: waited on, or taking its cores
    big = s.workers_growth >= th.WORKER_GROWTH_MIN
    fast = rate >= th.WORKER_RATE_MIN and s.workers_steady
    moderate = rate >= th.WORKER_RATE_LOADER_BOUND and s.workers_steady and paced
    if not (big or fast or moderate):
        return None
    kind = next(iter(s.worker_memory.values())).kind.upper()
    per_worker = ", ".join(
        f"worker {pid} {'+' if r.per_s >= 0 else ''}{_rate(r.per_s)}"
        for pid, r in sorted(s.worker_memory.items())
    )
    together = rate * len(s.worker_memory)
    evidence = [
        f"the DataLoader workers' memory ({kind}) grows steadily: {per_worker} "
        f"({_mb(together * 60)} per minute together, {_mb(together * 3600)} per hour if it goes on)"
    ]
    if s.main_memory is not None:
        evidence.append(
            f"the main process meanwhile {'+' if s.main_memory.per_s >= 0 else ''}{_rate(s.main_memory.per_s)}"
        )
    if loader_bound:
        evidence.append(
            f"the main thread waited for a worker's batch (DataLoader.__next__) in {s.waiting_share:.0%} of its "
            f"samples while the workers used {', '.join(_cpu(c) for c in s.worker_cpu.values())} of a core: "
            "the loader sets the pace, and state that grows with every sample makes each one slower"
        )
    if starved:
        evidence.append(_starved_text(s))
    if s.workers_replaced:
        evidence.append(
            "workers were replaced during the window (new ones each epoch): growth is measured per worker, "
            "over its own life"
        )
    else:
        evidence.append("the same worker processes lived through the whole window")
    score = th.SCORE_WORKERS_LOADER_BOUND
    if big or fast:
        score = th.SCORE_WORKERS_BOTH if paced else th.SCORE_WORKERS_MEMORY
    return OutsideFinding("worker-memory-growth", score, tuple(evidence))


def memory_pressure(s: OutsideSignals) -> OutsideFinding | None:
    p = s.paging
    if not p:
        return None
    run_swap = p["run_swap_end"] - p["run_swap_start"]
    swapping_in = p["swap_in_per_s"] >= th.SWAP_IN_RATE
    if not (swapping_in or run_swap >= th.SWAP_GROWTH_MIN):
        return None
    evidence = []
    if swapping_in:
        evidence.append(
            f"the machine read {_mb(p['swap_in'])} back from swap during the window ({_rate(p['swap_in_per_s'])}): "
            "memory has run out and pages are being paged"
        )
    evidence.append(
        f"the run's own pages in swap: {_mb(p['run_swap_start'])} -> {_mb(p['run_swap_end'])}; "
        f"{p['major_faults']:,.0f} major page faults in its processes ({p['major_faults_per_s']:.0f} per s); "
        f"available memory as low as {_mb(p['sys_available_min'])}"
    )
    return OutsideFinding("memory-pressure", th.SCORE_SWAPPING, tuple(evidence))


def machine_contention(s: OutsideSignals) -> OutsideFinding | None:
    """Other programs use the CPUs and the run's threads queue for them. A run that waits
    for no CPU (stalled, or idle) is not held back by anyone's load."""
    if not _contended(s) or s.stall is not None or not _queues_for_cpus(s):
        return None
    evidence = [
        f"other programs used {s.outside_load:.0%} of the machine's {s.cores} cores during the window "
        f"(the attach itself, py-spy included, used {s.attach_load or 0:.0%} and is not counted)"
    ]
    if s.runqueue_wait is not None:
        evidence.append(
            f"the run's threads waited for a CPU {s.runqueue_wait:.2f} s per second of the window"
        )
    evidence.append(
        "that slows the run whatever its code does: do not change the code on the strength of "
        "timings taken now; rerun on a quiet machine"
    )
    return OutsideFinding("machine-contention", th.SCORE_CONTENTION, tuple(evidence))


def thread_oversubscription(s: OutsideSignals) -> OutsideFinding | None:
    if _contended(s) or s.threads is None or s.kernel_share is None:
        return None  # other programs' load also raises switches and kernel time
    if s.threads < th.THREADS_PER_CORE * s.cores or s.kernel_share < th.SYSTEM_SHARE_HIGH:
        return None
    evidence = [
        f"{s.threads} threads in the run on {s.cores} cores ({s.threads_main} in the main process), "
        f"{s.kernel_share:.0%} of its CPU time in the kernel, {s.involuntary_per_s or 0:,.0f} involuntary "
        "context switches per second"
    ]
    if s.runqueue_wait is not None:
        evidence.append(
            f"its threads waited for a CPU {s.runqueue_wait:.2f} s per second, with other programs using "
            f"{s.outside_load or 0:.0%} of the cores: they queue behind each other"
        )
    return OutsideFinding("thread-oversubscription", th.SCORE_THREADS, tuple(evidence))


def fd_leak(s: OutsideSignals) -> OutsideFinding | None:
    if not s.fds or s.fds["growth"] < th.FDS_ROSE:
        return None
    return OutsideFinding(
        "fd-leak",
        th.SCORE_FD_LEAK,
        (
            f"open file descriptors of the main process and workers rose {s.fds['start']} -> {s.fds['end']} in "
            f"{s.window_s:.0f} s: something keeps files or shared-memory segments open",
        ),
    )


# The causes of the catalogue judged from outside, each by its rule; the rest need batch
# times (NEEDS_BATCH_TIMES), and a test keeps the two lists covering the catalogue.
RULES = {
    "stall": stall,
    "memory-pressure": memory_pressure,
    "worker-memory-growth": worker_memory_growth,
    "fd-leak": fd_leak,
    "thread-oversubscription": thread_oversubscription,
    "machine-contention": machine_contention,
}


def _seen(s: OutsideSignals, causes: list[OutsideFinding]) -> list[str]:
    """What was measured that names no cause by itself."""
    named = {c.id for c in causes}
    seen = []
    cpu = f"the main process used {_cpu(s.main_cpu)} of a core"
    if s.worker_cpu:
        cpu += f", its {len(s.worker_cpu)} DataLoader worker(s) {', '.join(_cpu(c) for c in s.worker_cpu.values())}"
    if s.outside_load is not None and "machine-contention" not in named:
        cpu += f"; other programs {s.outside_load:.0%} of the {s.cores} cores"
        if _contended(s):
            cpu += (
                ", but the run's threads hardly waited for a CPU "
                f"({s.runqueue_wait or 0:.2f} s per second): it was not held back by them"
            )
    seen.append(cpu)
    if "worker-memory-growth" not in named and s.workers_rate is not None:
        late = sum(r.late_per_s for r in s.worker_memory.values()) / len(s.worker_memory)
        each = s.workers_growth / len(s.worker_memory)
        if each < th.FLAT_GROWTH and abs(late) < th.WORKER_RATE_MIN / 4:
            seen.append(f"workers' memory flat: {_mb(each)} each over the window")
        elif s.workers_steady:
            seen.append(
                f"workers' memory {_signed_rate(s.workers_rate)} each, steadily: below what counts as growth "
                f"here ({_rate(th.WORKER_RATE_MIN)})"
            )
        else:
            seen.append(
                f"workers' memory changed {_mb(s.workers_growth / len(s.worker_memory))} each over the window, "
                f"not steadily ({_signed_rate(late)} each over its second half): a rise that levelled off "
                "or came in one step, not growth that goes on"
            )
    main = s.main_memory
    if main is not None and main.steady and main.per_s >= th.MAIN_RATE_SEEN:
        seen.append(
            f"the main process's memory grows {_rate(main.per_s)} ({_mb(main.per_s * 60)} per minute): from "
            "outside it cannot be told whether tensors (graph-retention) or Python objects (metric-accumulation, "
            "gc-pressure) hold it; --memory names the lines that allocated it"
        )
    if _starved(s) and not named & {"worker-memory-growth", "stall"}:
        seen.append(_starved_text(s))
    share = s.waiting_share
    if (
        share is not None
        and share >= th.WAITING_SHARE
        and not named & {"worker-memory-growth", "stall"}
    ):
        seen.append(
            f"the main thread waited for its workers in {share:.0%} of its samples: loading is the bottleneck "
            "now; whether it got worse over the epochs needs batch timings"
        )
    return seen


def _stall_json(st: Stall) -> dict[str, Any]:
    return {
        "idle_s": st.idle_s,
        "tree_cpu": st.tree_cpu,
        "same_stack_rounds": st.same_stack_rounds,
        "main_waits_for_workers": st.main_waits_for_workers,
        "waited_on": [
            {"pid": pid, "role": role, "frames": [f.name() for f in frames[:STACK_LINES]]}
            for pid, role, frames in st.waited_on
        ],
        "files": st.files,
    }


# -- the printed report ----------------------------------------------------------------------------


def report_lines(verdict: OutsideVerdict) -> list[str]:
    s, record = verdict.signals, verdict.record
    outside = record.outside
    cwd = outside.get("cwd")
    given = outside.get("given_pid")
    workers = len(s.worker_pids)
    lines = [
        f"attached from outside to PID {given}"
        + (
            f" (a DataLoader worker of PID {s.main_pid})"
            if outside.get("given_role") == "worker"
            else ""
        )
        + f": `{outside.get('command')}`, {s.window_s:.1f} s, the main process and {workers} DataLoader worker(s)"
        + (" (replaced during the window)" if s.workers_replaced else "")
        + (
            "; the run ended during the window"
            if (record.footer or {}).get("ended_by") == "exited"
            else ""
        ),
        "",
        _relative(verdict.headline, cwd),
        "",
    ]
    if verdict.causes:
        lines.append("causes seen from outside, most likely first:")
        for finding in verdict.causes:
            lines.append(f"  {finding.id} (score {finding.score:.2f})")
            lines += [f"    - {_relative(e, cwd)}" for e in finding.evidence]
        lines += ["", "what to do:"]
        lines += [f"  {f.id}: {f.advice}" for f in verdict.causes if f.advice]
        lines.append("  (every cause, its signals and references: docs/causes.md)")
        lines.append("")
    lines.append("seen:")
    lines += [f"  - {line}" for line in verdict.seen]
    if s.stall is not None:
        lines += ["", "stacks at the end (main thread of each process, innermost first):"]
        lines += _stack_lines(record, cwd)
    lines += _profile_lines(record, cwd)
    lines += [_relative(line, cwd) for line in _memray_lines(record)]
    lines += [
        "",
        f"cannot be judged from outside (needs batch timings): {NOT_JUDGED}; and the causes "
        f"{', '.join(NEEDS_BATCH_TIMES)}",
        "to measure them, run it under the probe:",
        f"  {outside.get('rerun')}",
    ]
    if not cwd:
        lines.append(
            "  (from the folder the run was started in: its working folder could not be read)"
        )
    if record.notes:
        lines += ["", "notes:"] + [f"  - {n}" for n in record.notes]
    return lines


def _relative(text: str, cwd: str | None) -> str:
    return text.replace(cwd.rstrip("/") + "/", "") if cwd else text


def _stack_lines(record: OutsideRecord, cwd: str | None) -> list[str]:
    if not record.rounds:
        return ["  (no stacks could be read)"]
    lines = []
    for entry in record.rounds[-1].get("processes", []):
        frames = [Frame.parse(f) for f in entry.get("main_thread") or []]
        shown = worker_part(frames) if entry.get("role") == "worker" else frames
        lines.append(
            f"  {entry.get('role')} {entry.get('pid')} ({'idle' if not entry.get('active') else 'active'}), "
            f"stacks/{entry.get('file')}:"
        )
        lines += [f"      {f.name(cwd)}" for f in shown[:STACK_LINES]]
    return lines


def _profile_lines(record: OutsideRecord, cwd: str | None) -> list[str]:
    if record.profile is None:
        return []
    if not record.profile:
        return ["", "where each process spends its time: py-spy recorded no samples"]
    lines = [
        "",
        "where each process spends its time (py-spy over the window, main thread of each process, "
        "share of its samples):",
    ]
    for p in record.profile:
        head = f"  {p['role']} {p['pid']} ({p['main_thread_samples']} samples)"
        if p["role"] == "main":
            head += (
                f": {p['waiting_for_workers_share']:.0%} waiting for a worker's batch in DataLoader.__next__"
                f" ({p['dataloader_next_share']:.0%} inside it in all)"
            )
        elif p["role"] == "worker" and "fetching_share" in p:
            head += f": {p['fetching_share']:.0%} fetching (the dataset's and collate's code), the rest waiting for work"
        lines.append(head)
        if p["top_functions"]:
            lines.append(
                "      top: "
                + ", ".join(f"{name} {share:.0%}" for name, share in p["top_functions"])
            )
        if p["top_own_code"]:
            lines.append(
                "      own code: "
                + ", ".join(f"{name} {share:.0%}" for name, share in p["top_own_code"])
            )
    return lines


def _memray_lines(record: OutsideRecord) -> list[str]:
    if not record.memray:
        return []
    lines = ["", "memory still held at the end of the window, by allocation site (memray):"]
    for capture in record.memray:
        sites = (
            ", ".join(f"{site} {_mb(size)}" for site, size in capture["held_at_end"][:3])
            or "nothing"
        )
        lines.append(f"  {capture['role']} {capture['pid']}: {sites} (memray/{capture['file']})")
    return lines
