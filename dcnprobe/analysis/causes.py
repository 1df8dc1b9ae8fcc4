"""From signals to causes: each rule reads the measurements (never a scenario's name) and
returns a score in (0, 1] with the evidence behind it, or nothing.

Cause ids are stable; they are the ids of DESIGN.md's catalogue:
    graph-retention, metric-accumulation, gc-pressure, worker-memory-growth,
    worker-respawn, thread-oversubscription, device-allocator-retention,
    memory-pressure, allocator-fragmentation, cache-clearing-cost, shape-cache,
    stall, none
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dcnprobe.analysis.signals import Signals

CAUSE_IDS = (
    "graph-retention", "metric-accumulation", "gc-pressure", "worker-memory-growth", "worker-respawn",
    "thread-oversubscription", "device-allocator-retention", "memory-pressure", "allocator-fragmentation",
    "cache-clearing-cost", "shape-cache", "stall", "none",
)

MB = 1 << 20
# Thresholds, in one place. Memory amounts are growth over the steady part of the run.
RETAINED_MIN = 64 * MB  # growth that counts as memory that does not come back
RETAINED_PER_BATCH = 256 * 1024  # ... and per batch, so slow drifts over long runs don't count
TENSOR_BYTES_PER_BLOCK = 4096  # retained bytes per new Python object: above = big buffers (tensors)
PYTHON_BLOCKS_PER_BATCH = 2000  # new Python objects per batch that make a heap grow
WORKER_GROWTH_MIN = 48 * MB  # all workers together
PRESSURE_MEMORY_MIN = 256 * MB
PRESSURE_PER_BATCH = 1 * MB
CACHE_CLEAR_SHARE = 0.05
RESPAWN_SHARE = 0.05  # of an epoch's time spent waiting for new workers
STRONG_TREND_T = 8.0  # t statistic of batch time against step


@dataclass
class Finding:
    id: str
    score: float
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"id": self.id, "score": round(self.score, 3), "evidence": self.evidence}


def rank(signals: Signals, run_dir: Path | None = None) -> list[Finding]:
    findings = [f for rule in RULES if (f := rule(signals, run_dir)) is not None and f.score > 0]
    findings.sort(key=lambda f: f.score, reverse=True)
    if not findings:
        findings.append(Finding("none", 1.0, [_no_cause_evidence(signals)]))
    return findings


# -- helpers -------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / MB:,.0f} MB" if abs(n) >= 10 * MB else f"{n / MB:,.1f} MB"


def _growth(signals: Signals, name: str) -> float:
    entry = signals.memory.get(name)
    return float(entry["growth"]) if entry else 0.0


def _per_batch(signals: Signals, name: str) -> float:
    entry = signals.memory.get(name)
    return float(entry["per_batch"]) if entry else 0.0


def _retained(signals: Signals) -> tuple[float, float, str]:
    """Real retention: bytes in use by the allocator (or the device), not RSS."""
    for name, label in (("device_allocated", "device memory allocated"), ("device_current", "device memory in use"),
                        ("main_in_use", "memory in use (glibc)")):
        if name in signals.memory:
            return _growth(signals, name), _per_batch(signals, name), label
    return _growth(signals, "main_rss"), _per_batch(signals, "main_rss"), "RSS"


def _time_grows(signals: Signals) -> bool:
    trend = signals.time_trend
    rising = trend is not None and trend.t > STRONG_TREND_T and trend.growth > 0.1 * (signals.batch_seconds or 1)
    return signals.slowdown or (rising and (signals.within_epoch_rise or 0) > 1.1)


def _ratio_text(signals: Signals) -> str:
    if signals.ratio is None:
        return "only one epoch was measured"
    low, high = signals.ratio_ci
    return (f"epoch {signals.compared_epoch}/epoch 1 {signals.ratio_stat} batch time {signals.ratio:.2f} "
            f"(95% CI {low:.2f}-{high:.2f})")


def _workers_grew(signals: Signals) -> float:
    """Each worker's own growth over its life, added up. (The sum over workers at each
    sample would jump whenever non-persistent workers are replaced.)"""
    return sum(max(g, 0.0) for g in signals.memory.get("per_worker_growth", {}).values())


# -- rules ---------------------------------------------------------------------------


def stall(signals: Signals, run_dir: Path | None) -> Finding | None:
    if not signals.stalls and signals.status != "stalled":
        return None
    evidence = []
    for record in signals.stalls:
        median = record.get("median_batch_s")
        evidence.append(
            f"no batch finished for {record['waited_s']:.1f} s at epoch {record['epoch']} batch {record['batch']}"
            + (f" (median batch {median:.3f} s)" if median else "")
        )
        for name in record.get("stacks", []):
            where = _blocked_at(run_dir / "stacks" / name) if run_dir else None
            if where:
                evidence.append(f"{name}: {where}")
    return Finding("stall", 1.0, evidence or ["the run ended with status 'stalled'"])


def _blocked_at(path: Path) -> str | None:
    """Where a py-spy dump's main thread is: its innermost frame outside the standard
    library (the caller that matters), and the native call it waits in, if any."""
    if not path.is_file():
        return None
    python_frames, native = [], []
    in_main = False
    for line in path.read_text().splitlines():
        if line.startswith("Thread "):
            if in_main:
                break
            in_main = "MainThread" in line
        elif in_main and line.startswith("    "):
            frame = line.strip()
            if ".py:" in frame:
                python_frames.append(frame)
            elif not python_frames:
                native.append(frame.split(" ")[0])
    own = [f for f in python_frames if not _is_stdlib(f)]
    if not own:
        return None
    waits = [n for n in native if any(w in n.lower() for w in ("acquire", "poll", "wait", "select", "read"))]
    return f"in {own[0]}" + (f", waiting in {waits[-1]}" if waits else "")


def _is_stdlib(frame: str) -> bool:
    """'Queue.get (multiprocessing/queues.py:113)' is the standard library's."""
    where = frame[frame.rfind("(") + 1 :]
    top = where.split("/")[0].split(".py")[0]
    return top in sys.stdlib_module_names


def graph_retention(signals: Signals, run_dir: Path | None) -> Finding | None:
    growth, per_batch, label = _retained(signals)
    if growth < RETAINED_MIN or per_batch < RETAINED_PER_BATCH or _time_grows(signals):
        return None
    blocks = max(_per_batch(signals, "python_blocks"), 1.0)
    bytes_per_object = per_batch / blocks
    if bytes_per_object < TENSOR_BYTES_PER_BLOCK:
        return None  # many small objects: a Python heap, not tensors
    evidence = [
        f"{label} grew {_mb(growth)} ({_mb(per_batch)} per batch) and does not come back",
        f"held in few, large objects: {bytes_per_object / 1024:,.0f} KB per new Python object (tensors or arrays)",
        f"batch time did not grow: {_ratio_text(signals)}",
    ]
    if "live_tensors" in signals.memory:
        evidence.append(f"live tensors grew by {_growth(signals, 'live_tensors'):,.0f}")
    return Finding("graph-retention", min(1.0, 0.6 + 0.1 * growth / (256 * MB)), evidence)


def memory_pressure(signals: Signals, run_dir: Path | None) -> Finding | None:
    growth, per_batch, label = _retained(signals)
    swap_in = signals.memory.get("swap_in", 0.0)
    majors = signals.memory.get("major_faults", 0)
    if not _time_grows(signals):
        return None
    swapping = swap_in > 64 * MB or majors > 1000
    if not (swapping or (growth >= PRESSURE_MEMORY_MIN and per_batch >= PRESSURE_PER_BATCH)):
        return None
    evidence = [
        f"batch time grows as memory grows: {_ratio_text(signals)}",
        f"{label} grew {_mb(growth)} ({_mb(per_batch)} per batch); correlation of batch time with RSS "
        f"{signals.memory_time_correlation or 0:.2f}",
    ]
    if swapping:
        evidence.append(f"swap-in {_mb(swap_in)}, {majors:,} major page faults: memory is being paged")
    if signals.grew:
        evidence.append(f"the time went to '{signals.grew}'")
    return Finding("memory-pressure", 0.95 if swapping else 0.85, evidence)


def metric_accumulation(signals: Signals, run_dir: Path | None) -> Finding | None:
    """Work per batch grows while memory barely does: something re-processes an ever
    longer history (a metric buffer, a log, a list scanned every step)."""
    if not _time_grows(signals) or signals.grew == "cache_clear":
        return None
    growth, per_batch, _ = _retained(signals)
    if growth >= PRESSURE_MEMORY_MIN and per_batch >= PRESSURE_PER_BATCH:
        return None  # memory-pressure explains it
    if signals.grew == "data_wait" and _has_workers(signals):
        return None  # the workers' side: see worker_memory_growth
    trend = signals.time_trend
    if signals.change is not None and signals.change.kind == "step" and signals.change_epoch_batch:
        epoch, batch = signals.change_epoch_batch
        shape = f"batch time jumped at epoch {epoch}, batch {batch} and stayed up"
    else:
        shape = f"batch time rises steadily with every step: +{trend.per_step * 100 * 1000:.1f} ms per 100 batches"
    evidence = [f"{shape}; {_ratio_text(signals)}"]
    if signals.within_epoch_rise and signals.within_epoch_rise > 1.1:
        evidence.append(f"within an epoch the last quarter is {signals.within_epoch_rise:.2f}x the first")
    evidence.append(f"memory grows little ({_mb(per_batch)} per batch): the work per batch grows, not the data")
    if signals.grew:
        where = {"other": " (the loop's own code outside forward, backward and the optimizer: metrics, logging, bookkeeping)",
                 "data_wait": " (the dataset's own code, in the main process)"}.get(signals.grew, "")
        evidence.append(f"the time went to '{signals.grew}'{where}")
    score = 0.8 if signals.grew == "other" else 0.5
    gc_trend = signals.gc.get("trend") if signals.gc else None
    if gc_trend is not None and gc_trend.t > 3 and gc_trend.growth > 0.5 * (signals.phase_growth.get("other") or 0):
        score -= 0.3  # garbage collection explains much of it: gc-pressure
    return Finding("metric-accumulation", score, evidence)


def _has_workers(signals: Signals) -> bool:
    return bool(signals.epochs and signals.epochs[0].worker_pids)


def gc_pressure(signals: Signals, run_dir: Path | None) -> Finding | None:
    gc = signals.gc
    blocks = _per_batch(signals, "python_blocks")
    if not gc or blocks < PYTHON_BLOCKS_PER_BATCH:
        return None
    trend = gc["trend"]
    growing_pauses = trend.t > 3 and trend.per_step > 0
    aligned = gc["outlier_batches"] >= 3 and gc["outliers_with_gen2"] / gc["outlier_batches"] > max(0.5, 2 * gc["gen2_rate"])
    if not (growing_pauses or aligned):
        return None
    shares = [e.gc_share for e in signals.epochs]
    evidence = [
        f"the Python heap grows by {blocks:,.0f} objects per batch",
        f"GC time per epoch: {', '.join(f'{s:.1%}' for s in shares)} of batch time; longest GC in one batch {gc['max_gc_s']:.2f} s",
    ]
    if aligned:
        evidence.append(f"{gc['outliers_with_gen2']} of the {gc['outlier_batches']} slowest batches ran a generation-2 collection "
                        f"(base rate {gc['gen2_rate']:.1%})")
    score = 0.5 + 0.2 * growing_pauses + 0.2 * aligned
    return Finding("gc-pressure", score, evidence)


def worker_memory_growth(signals: Signals, run_dir: Path | None) -> Finding | None:
    """Workers accumulate something: memory (copy-on-read pages, caches, histories) or
    per-batch work carried across epochs by persistent workers."""
    if not _has_workers(signals):
        return None
    growth = _workers_grew(signals)
    memory_grew = growth >= WORKER_GROWTH_MIN
    cpu = [e.worker_cpu_per_batch for e in signals.epochs if e.worker_cpu_per_batch is not None]
    cpu_rose = len(cpu) >= 2 and cpu[0] > 0 and cpu[-1] / cpu[0] > 1.3
    slower = _time_grows(signals)
    loading_slower = slower and signals.grew == "data_wait"
    if not (memory_grew or loading_slower or (slower and cpu_rose)):
        return None
    per_worker = signals.memory.get("per_worker_growth", {})
    main_growth, _, _ = _retained(signals)
    memory_text = (f"DataLoader worker memory grew {_mb(growth)} in total"
                   + (f" ({', '.join(_mb(g) for g in per_worker.values())} per worker)" if per_worker else "")
                   + f", the main process {_mb(main_growth)}")
    evidence = []
    if loading_slower:
        wait = signals.phase_growth.get("data_wait", 0.0)
        evidence.append(f"the loop waits longer for the loader: data_wait +{wait * 1000:.0f} ms per batch; "
                        + _ratio_text(signals))
    evidence.append(memory_text if memory_grew else memory_text + ": the state the workers carry is work, not bytes")
    if cpu_rose:
        evidence.append(f"worker CPU per batch rose {cpu[0] * 1000:.0f} -> {cpu[-1] * 1000:.0f} ms across epochs: "
                        "workers do more work per batch as their state grows")
    if slower and not loading_slower:
        evidence.append(_ratio_text(signals) + (f"; the time went to '{signals.grew}'" if signals.grew else ""))
    elif not slower and signals.ratio is not None and signals.ratio < 1:
        evidence.append(f"epoch 1 was the slower one ({_ratio_text(signals)}): pages copied on first touch")
    same_workers = len(signals.epochs) >= 2 and all(e.worker_pids == signals.epochs[0].worker_pids for e in signals.epochs)
    if same_workers:
        evidence.append("the same worker processes served every epoch (persistent workers carry their state)")
    score = 0.7 if memory_grew else 0.5
    if memory_grew and slower and (cpu_rose or loading_slower):
        score = 0.9
    return Finding("worker-memory-growth", score, evidence)


def worker_respawn(signals: Signals, run_dir: Path | None) -> Finding | None:
    first, later = signals.epochs[0] if signals.epochs else None, [e for e in signals.epochs[1:] if e.first_wait_s]
    if first is None or not later or not first.worker_pids or not signals.batch_seconds:
        return None
    new_workers = any(set(e.worker_pids).isdisjoint(first.worker_pids) for e in later if e.worker_pids)
    waits = [e.first_wait_s for e in later]
    epoch_s = signals.batch_seconds * first.batches  # a full epoch, even when later ones were cut short
    share = max(waits) / epoch_s
    if not new_workers or share < RESPAWN_SHARE or max(waits) < 5 * signals.batch_seconds:
        return None
    return Finding("worker-respawn", min(0.9, 0.4 + share), [
        f"each later epoch's first batch waited {', '.join(f'{w:.1f} s' for w in waits)} for the loader "
        f"(up to {share:.0%} of an epoch; a batch takes {signals.batch_seconds:.2f} s)",
        "new worker processes started every epoch (persistent_workers=false)",
    ])


def thread_oversubscription(signals: Signals, run_dir: Path | None) -> Finding | None:
    cpu = signals.cpu
    if not cpu:
        return None
    cores = cpu["cores"]
    if cpu["max_threads"] < 4 * cores or cpu["system_share"] < 0.3:
        return None
    return Finding("thread-oversubscription", 0.5, [
        f"{cpu['max_threads']} threads on {cores} cores, {cpu['system_share']:.0%} of CPU time in the kernel, "
        f"{cpu['involuntary_switches_per_s']:.0f} involuntary context switches per second",
    ])


def device_allocator_retention(signals: Signals, run_dir: Path | None) -> Finding | None:
    for held, used, names in (("device_driver", "device_current", ("driver", "current")),
                              ("device_reserved", "device_allocated", ("reserved", "allocated"))):
        if held in signals.memory and used in signals.memory:
            held_growth, used_growth = _growth(signals, held), _growth(signals, used)
            if held_growth >= RETAINED_MIN and used_growth < 0.25 * held_growth:
                return Finding("device-allocator-retention", 0.85, [
                    f"device {names[0]} memory grew {_mb(held_growth)} while {names[1]} memory changed {_mb(used_growth)}: "
                    "the allocator keeps memory the program no longer uses",
                ])
    return None


def allocator_fragmentation(signals: Signals, run_dir: Path | None) -> Finding | None:
    retries = signals.memory.get("device_alloc_retries", 0)
    if retries > 0:
        return Finding("allocator-fragmentation", 0.8, [f"the CUDA caching allocator retried {retries:.0f} allocations"])
    rss = _growth(signals, "main_rss")
    if "main_in_use" not in signals.memory or rss < RETAINED_MIN * 2:
        return None
    in_use = _growth(signals, "main_in_use")
    if in_use > 0.25 * rss:
        return None
    return Finding("allocator-fragmentation", 0.4, [
        f"RSS grew {_mb(rss)} while memory in use changed {_mb(in_use)}: glibc holds freed memory "
        f"(free but held: {_mb(_growth(signals, 'main_allocator_held'))} more); RSS alone would be a false leak alarm",
    ])


def cache_clearing_cost(signals: Signals, run_dir: Path | None) -> Finding | None:
    share = signals.cache_clear_share
    if share < CACHE_CLEAR_SHARE:
        return None
    return Finding("cache-clearing-cost", min(1.0, 0.5 + 2 * share), [
        f"clearing caches takes {share:.0%} of batch time (phase 'cache_clear')",
        "clearing per batch throws away what the allocator would reuse next batch; clear once per epoch",
    ])


def shape_cache(signals: Signals, run_dir: Path | None) -> Finding | None:
    shapes = signals.shapes
    if not shapes or shapes["distinct"] < 4:
        return None
    return Finding("shape-cache", 0.5, [f"{shapes['distinct']} distinct batch shapes: each new shape recompiles or re-plans"])


def _no_cause_evidence(signals: Signals) -> str:
    if signals.ratio is None:
        return "nothing stands out in the measurements"
    return f"no slowdown: {_ratio_text(signals)}; memory and GC show nothing unusual"


RULES: tuple[Callable[[Signals, Path | None], Finding | None], ...] = (
    stall, graph_retention, memory_pressure, metric_accumulation, gc_pressure, worker_memory_growth,
    worker_respawn, thread_oversubscription, device_allocator_retention, allocator_fragmentation,
    cache_clearing_cost, shape_cache,
)
