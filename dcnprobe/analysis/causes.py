"""From signals to causes: each rule reads the measurements (never a scenario's name) and
returns a score in (0, 1] with the evidence behind it, or nothing.

Cause ids are stable; docs/causes.md describes each one (CAUSE_IDS below is the list,
and a test keeps the two in step). Every number a rule compares against lives in
dcnprobe.analysis.thresholds.

Outside CPU load is never blamed on the user's code: when other processes' load
explains the timing (signals.contended and not signals.slowdown), the rules that read
timing stay silent and machine-contention is named instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dcnprobe.analysis import thresholds as th
from dcnprobe.analysis.formatting import format_ratio
from dcnprobe.analysis.signals import COMPUTE, Signals
from dcnprobe.analysis.thresholds import MB

CAUSE_IDS = (
    "graph-retention", "metric-accumulation", "periodic-work", "gc-pressure", "worker-memory-growth",
    "worker-respawn", "thread-oversubscription", "machine-contention", "device-allocator-retention",
    "memory-pressure", "allocator-fragmentation", "cache-clearing-cost", "shape-cache", "fd-leak",
    "thermal-throttling", "stall", "none",
)


@dataclass
class Finding:
    id: str
    score: float
    evidence: list[str] = field(default_factory=list)
    # Read from the run's own memory or file descriptors, not from its timing: another
    # process's CPU can slow a run but cannot make it hold bytes or files.
    timing_free: bool = False

    @property
    def advice(self) -> str:
        from dcnprobe.analysis.advice import advice_for

        return advice_for(self.id)

    def to_dict(self) -> dict:
        return {"id": self.id, "score": round(self.score, 3), "evidence": self.evidence, "advice": self.advice}


def rank(signals: Signals, run_dir: Path | None = None) -> list[Finding]:
    findings = [f for rule in RULES if (f := rule(signals, run_dir)) is not None and f.score > 0]
    findings.sort(key=lambda f: (_tier(f, signals), f.score), reverse=True)
    if not findings:
        findings.append(Finding("none", 1.0, [_no_cause_evidence(signals)]))
    return findings


def _tier(finding: Finding, signals: Signals) -> int:
    """Outside load that explains the timing comes before every cause read from timing,
    whatever the scores: the user's code must not be blamed for another process's CPU.
    Findings that outside load cannot produce (timing_free) keep their place ahead of it:
    on a busy machine they are the part of the measurements that still holds."""
    if finding.timing_free:
        return 2
    return 1 if finding.id == "machine-contention" and _contention_explains(signals) else 0


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
    """The run's own batches take longer. Never true when other processes' load explains
    the timing: every rule that reads timing goes through here."""
    if _contention_explains(signals):
        return False
    trend = signals.time_trend
    rising = (trend is not None and trend.t > th.STRONG_TREND_T
              and trend.growth > th.TREND_MIN_GROWTH * (signals.batch_seconds or 1))
    return signals.slowdown or (rising and (signals.within_epoch_rise or 0) > th.WITHIN_EPOCH_RISE)


def _paging(signals: Signals) -> bool:
    """Memory has run out: pages are read back in (swap-ins, or major faults in the steady batches)."""
    return (signals.memory.get("swap_in", 0.0) > th.SWAP_IN_MIN
            or signals.memory.get("major_faults", 0) > th.MAJOR_FAULTS_MIN)


def _slower_while_paging(signals: Signals) -> bool:
    """Paging measured, and the later epoch's ratio above the threshold even if its interval
    still reaches below: paging is direct evidence, so the estimate is enough to name it."""
    return (_paging(signals) and not _contention_explains(signals)
            and signals.ratio is not None and signals.ratio > signals.threshold)


def _contention_explains(signals: Signals) -> bool:
    return signals.contended and not signals.slowdown


def _ratio_text(signals: Signals) -> str:
    if signals.ratio is None:
        return "only one epoch was measured"
    low, high = signals.ratio_ci
    return (f"epoch {signals.compared_epoch}/epoch 1 {signals.ratio_stat} batch time "
            f"{format_ratio(signals.ratio, low, high, signals.confidence)}")


def _shape_text(signals: Signals) -> str:
    """How the batch time moved, in words that match the data: a change point says which
    way, and 'stayed up' only where the end of the run is still up."""
    change, where = signals.change, signals.change_epoch_batch
    if change is not None and where is not None:
        epoch, batch = where
        if change.kind == "ramp":
            return f"batch time starts rising at epoch {epoch}, batch {batch}"
        moved = "jumped" if change.direction == "up" else "fell"
        levels = f"{change.before * 1000:.0f} -> {change.after * 1000:.0f} ms median"
        if change.direction == "up" and signals.change_stayed:
            return f"batch time jumped at epoch {epoch}, batch {batch} and stayed up ({levels})"
        if change.direction == "up":
            return f"batch time jumped at epoch {epoch}, batch {batch} ({levels}), and came back down by the end"
        return f"batch time {moved} at epoch {epoch}, batch {batch} ({levels})"
    trend = signals.time_trend
    if trend is not None and trend.per_step > 0:
        return f"batch time rises steadily with every step: +{trend.per_step * 100 * 1000:.1f} ms per 100 batches"
    return "batch time is higher in the later epoch"


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
    return Finding("stall", th.SCORE_STALL, evidence or ["the run ended with status 'stalled'"])


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
    if growth < th.RETAINED_MIN or per_batch < th.RETAINED_PER_BATCH or _time_grows(signals):
        return None
    if _slower_while_paging(signals):
        return None  # the retained memory has run out: memory-pressure
    blocks = max(_per_batch(signals, "python_blocks"), 1.0)
    bytes_per_object = per_batch / blocks
    if bytes_per_object < th.TENSOR_BYTES_PER_BLOCK:
        return None  # many small objects: a Python heap, not tensors
    evidence = [
        f"{label} grew {_mb(growth)} ({_mb(per_batch)} per batch) and does not come back",
        f"held in few, large objects: {bytes_per_object / 1024:,.0f} KB per new Python object (tensors or arrays)",
        f"batch time did not grow: {_ratio_text(signals)}",
    ]
    if "live_tensors" in signals.memory:
        evidence.append(f"live tensors grew by {_growth(signals, 'live_tensors'):,.0f}")
    return Finding("graph-retention", min(1.0, th.SCORE_GRAPH_RETENTION + 0.1 * growth / th.PRESSURE_MEMORY_MIN), evidence,
                   timing_free=True)


def memory_pressure(signals: Signals, run_dir: Path | None) -> Finding | None:
    growth, per_batch, label = _retained(signals)
    swap_in = signals.memory.get("swap_in", 0.0)
    majors = signals.memory.get("major_faults", 0)
    if not (_time_grows(signals) or _slower_while_paging(signals)):
        return None
    swapping = _paging(signals)
    if not (swapping or (growth >= th.PRESSURE_MEMORY_MIN and per_batch >= th.PRESSURE_PER_BATCH)):
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
    return Finding("memory-pressure", th.SCORE_SWAPPING if swapping else th.SCORE_MEMORY_PRESSURE, evidence)


def metric_accumulation(signals: Signals, run_dir: Path | None) -> Finding | None:
    """Work per batch grows while memory barely does: something re-processes an ever
    longer history (a metric buffer, a log, a list scanned every step)."""
    slower = _time_grows(signals)
    own_code = _own_code_grew(signals)
    if not (slower or own_code) or signals.grew == "cache_clear":
        return None
    growth, per_batch, _ = _retained(signals)
    if growth >= th.PRESSURE_MEMORY_MIN and per_batch >= th.PRESSURE_PER_BATCH:
        return None  # memory-pressure explains it
    if _has_workers(signals) and (signals.grew == "data_wait" or _workers_displace(signals)):
        return None  # the workers' side: see worker_memory_growth
    if _bursts_explain(signals):
        return None  # spikes at a period: periodic-work, not a history that grows
    if not slower:
        before, after = own_code
        return Finding("metric-accumulation", th.SCORE_METRICS_NOT_YET_SLOW, [
            f"the loop's own code (outside forward, backward and the optimizer: metrics, logging, bookkeeping) grew "
            f"{before * 1000:.0f} -> {after * 1000:.0f} ms per batch ({after / before:.1f}x), though the batch as a whole "
            f"is not slow yet ({_ratio_text(signals)}): work that grows with the run shows first here",
            f"memory grows little ({_mb(per_batch)} per batch): the work per batch grows, not the data",
        ])
    evidence = [f"{_shape_text(signals)}; {_ratio_text(signals)}"]
    if signals.within_epoch_rise and signals.within_epoch_rise > th.WITHIN_EPOCH_RISE:
        evidence.append(f"within an epoch the last quarter is {signals.within_epoch_rise:.2f}x the first")
    evidence.append(f"memory grows little ({_mb(per_batch)} per batch): the work per batch grows, not the data")
    if signals.grew:
        where = {"other": " (the loop's own code outside forward, backward and the optimizer: metrics, logging, bookkeeping)",
                 "data_wait": " (the dataset's own code, in the main process)"}.get(signals.grew, "")
        evidence.append(f"the time went to '{signals.grew}'{where}")
    score = th.SCORE_METRICS_IN_LOOP if signals.grew == "other" else th.SCORE_METRICS_ELSEWHERE
    gc_trend = signals.gc.get("trend") if signals.gc else None
    if (gc_trend is not None and gc_trend.t > th.GC_TREND_T
            and gc_trend.growth > th.GC_EXPLAINS_GROWTH * (signals.phase_growth.get("other") or 0)):
        score -= th.SCORE_GC_EXPLAINS_METRICS  # garbage collection explains much of it: gc-pressure
    return Finding("metric-accumulation", score, evidence)


def _own_code_grew(signals: Signals) -> tuple[float, float] | None:
    """(before, after) median seconds per batch of the loop's own code ('other') when it at
    least doubled and grew by TREND_MIN_GROWTH of a batch: a history re-processed every step
    shows here before the whole batch is slow. Never under outside load."""
    first, later = _first_and_compared(signals)
    if first is None or later is None or _contention_explains(signals):
        return None
    before, after = first.phases.get("other"), later.phases.get("other")
    if not before or not after or before <= 0:
        return None
    if after - before >= th.TREND_MIN_GROWTH * first.times.median and after >= th.OWN_CODE_ROSE * before:
        return before, after
    return None


def _has_workers(signals: Signals) -> bool:
    return bool(signals.epochs and signals.epochs[0].worker_pids)


def gc_pressure(signals: Signals, run_dir: Path | None) -> Finding | None:
    gc = signals.gc
    blocks = _per_batch(signals, "python_blocks")
    if not gc or blocks < th.PYTHON_BLOCKS_PER_BATCH:
        return None
    never = _gc_never_runs(signals)
    if never:
        return never
    trend = gc["trend"]
    growing_pauses = trend.t > th.GC_TREND_T and trend.per_step > 0 and not _contention_explains(signals)
    aligned = (gc["outlier_batches"] >= th.GC_ALIGNED_MIN
               and gc["outliers_with_gen2"] / gc["outlier_batches"] > max(th.GC_ALIGNED_SHARE, 2 * gc["gen2_rate"]))
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
    score = th.SCORE_GC_BASE + th.SCORE_GC_EACH_SIGN * (growing_pauses + aligned)
    return Finding("gc-pressure", score, evidence)


def _gc_never_runs(signals: Signals) -> Finding | None:
    """No generation-2 collection while the Python heap grows by half its size or more
    (so one was due), or no collection of any generation at all: the collector is off
    or starved, and cycles pile up."""
    gc = signals.gc
    heap = signals.memory.get("python_blocks")
    if not heap or gc.get("gen2_runs") != 0:
        return None
    switched_off = gc.get("gen0_runs") == 0
    due = heap["start"] > 0 and heap["growth"] >= th.GC_NEVER_HEAP_GROWTH * heap["start"]
    if not (switched_off or due):
        return None
    growth, per_batch, label = _retained(signals)
    evidence = [
        f"no generation-2 collection ran while the Python heap grew by {heap['growth']:,.0f} objects "
        f"({heap['per_batch']:,.0f} per batch)" + ("; no collection of any generation ran: gc is disabled" if switched_off else ""),
        f"{label} grew {_mb(growth)}: reference cycles are not being freed",
    ]
    return Finding("gc-pressure", th.SCORE_GC_NEVER_RUNS, evidence)


def worker_memory_growth(signals: Signals, run_dir: Path | None) -> Finding | None:
    """Workers accumulate something: memory (copy-on-read pages, caches, histories) or
    per-batch work carried across epochs by persistent workers."""
    if not _has_workers(signals):
        return None
    growth = _workers_grew(signals)
    memory_grew = growth >= th.WORKER_GROWTH_MIN
    cpu = [e.worker_cpu_per_batch for e in signals.epochs if e.worker_cpu_per_batch is not None]
    cpu_rose = len(cpu) >= 2 and cpu[0] > 0 and cpu[-1] / cpu[0] > th.WORKER_CPU_ROSE
    slower = _time_grows(signals)
    loading_slower = slower and signals.grew == "data_wait"
    if not (memory_grew or loading_slower or (slower and cpu_rose)):
        return None
    displacing = slower and _workers_displace(signals)
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
    if memory_grew:
        evidence.append(memory_text)
    if cpu_rose:
        evidence.append(f"worker CPU per batch rose {cpu[0] * 1000:.0f} -> {cpu[-1] * 1000:.0f} ms across epochs: "
                        "workers do more work per batch as their state grows")
    if displacing:
        first, later = _first_and_compared(signals)
        evidence.append(f"the run kept the machine's {signals.cpu['cores']} cores busy ({later.utilisation:.0%}): the "
                        f"workers' extra {(later.worker_cpu_per_batch - first.worker_cpu_per_batch) * 1000:.0f} ms of CPU "
                        "per batch took cores from the main "
                        f"process, whose batches grew {(later.times.median - first.times.median) * 1000:.0f} ms "
                        f"(in '{signals.grew}': where the main process happened to be, not what grew)")
    if not memory_grew:  # after the work that grew: bytes are not what the workers carry
        evidence.append(memory_text + ": the state the workers carry is work, not bytes")
    if slower and not loading_slower:
        evidence.append(_ratio_text(signals) + (f"; the time went to '{signals.grew}'" if signals.grew else ""))
    elif not slower and signals.ratio is not None and signals.ratio < 1:
        evidence.append(f"epoch 1 was the slower one ({_ratio_text(signals)}): pages copied on first touch")
    same_workers = len(signals.epochs) >= 2 and all(e.worker_pids == signals.epochs[0].worker_pids for e in signals.epochs)
    if same_workers:
        evidence.append("the same worker processes served every epoch (persistent workers carry their state)")
    score = th.SCORE_WORKERS_MEMORY if memory_grew else th.SCORE_WORKERS_WORK
    if (memory_grew and slower and (cpu_rose or loading_slower)) or displacing:
        score = th.SCORE_WORKERS_BOTH
    return Finding("worker-memory-growth", score, evidence)


def _workers_displace(signals: Signals) -> bool:
    """The run keeps every core busy and the workers' added CPU per batch, spread over
    the cores, accounts for at least WORKERS_DISPLACE_SHARE of the added batch time: the
    workers' growing work, not the main process's own code, made the batches longer."""
    first, later = _first_and_compared(signals)
    if (first is None or later is None or not signals.cpu or later.utilisation is None
            or later.utilisation < th.SATURATED or first.worker_cpu_per_batch is None
            or later.worker_cpu_per_batch is None):
        return False
    rise = later.times.median - first.times.median
    displaced = (later.worker_cpu_per_batch - first.worker_cpu_per_batch) / signals.cpu["cores"]
    return rise > 0 and displaced >= th.WORKERS_DISPLACE_SHARE * rise


def worker_respawn(signals: Signals, run_dir: Path | None) -> Finding | None:
    first, later = signals.epochs[0] if signals.epochs else None, [e for e in signals.epochs[1:] if e.first_wait_s]
    if first is None or not later or not first.worker_pids or not signals.batch_seconds:
        return None
    # New processes appear in a later epoch. Not "all processes new": under spawn a
    # multiprocessing resource tracker (a python child too) lives through every epoch.
    new_workers = any(set(e.worker_pids) - set(first.worker_pids) for e in later)
    waits = [e.first_wait_s for e in later]
    epoch_s = signals.batch_seconds * first.batches  # a full epoch, even when later ones were cut short
    share = max(waits) / epoch_s
    if not new_workers or share < th.RESPAWN_SHARE or max(waits) < th.RESPAWN_BATCHES * signals.batch_seconds:
        return None
    return Finding("worker-respawn", min(th.SCORE_RESPAWN_MAX, th.SCORE_RESPAWN_BASE + share), [
        f"each later epoch's first batch waited {', '.join(f'{w:.1f} s' for w in waits)} for the loader "
        f"(up to {share:.0%} of an epoch; a batch takes {signals.batch_seconds:.2f} s)",
        "new worker processes started every epoch (persistent_workers=false)",
    ])


def thread_oversubscription(signals: Signals, run_dir: Path | None) -> Finding | None:
    """More runnable threads than cores: they queue, spin and switch. Rising between
    epochs (torch.set_num_threads raised mid-run, workers each with a full thread pool),
    it shows as more threads, more kernel time and more involuntary switches, with the
    extra time in compute phases."""
    first, later = _first_and_compared(signals)
    cores = signals.cpu.get("cores") if signals.cpu else None
    if not cores or first is None or _contention_explains(signals):
        return None  # other processes' load also raises switches and kernel time
    threads = max((e.threads or 0) for e in signals.epochs)
    if threads < th.THREADS_PER_CORE * cores:
        return None
    if later is not None and _time_grows(signals):
        signs = []
        if later.threads is not None and first.threads is not None and later.threads - first.threads > th.THREADS_ROSE_BY_CORES * cores:
            signs.append(f"threads rose from {first.threads} in epoch {first.epoch} to {later.threads} in epoch "
                         f"{later.epoch}, on {cores} cores")
        if _rose(first.system_share, later.system_share, add=th.SYSTEM_SHARE_ROSE):
            signs.append(f"kernel share of CPU time rose {first.system_share:.0%} -> {later.system_share:.0%}")
        if _rose(first.involuntary_per_s, later.involuntary_per_s, times=th.SWITCHES_ROSE):
            signs.append(f"involuntary context switches rose {first.involuntary_per_s:,.0f} -> "
                         f"{later.involuntary_per_s:,.0f} per second")
        compute = sum(max(signals.phase_growth.get(p, 0.0), 0.0) for p in COMPUTE)
        extra = sum(max(v, 0.0) for v in signals.phase_growth.values())
        compute_inflates = extra > 0 and compute >= th.COMPUTE_SHARE_OF_GROWTH * extra
        if compute_inflates and len(signs) >= 2:
            return Finding("thread-oversubscription", th.SCORE_THREADS_RISING, [
                f"{threads} threads on {cores} cores; " + "; ".join(signs),
                f"the extra time is in compute (forward, backward, optimizer: +{compute * 1000:.0f} ms per batch); "
                + _ratio_text(signals),
            ])
    cpu = signals.cpu
    if cpu["max_threads"] < th.THREADS_PER_CORE * cores or cpu["system_share"] < th.SYSTEM_SHARE_HIGH:
        return None
    return Finding("thread-oversubscription", th.SCORE_THREADS_STATIC, [
        f"{cpu['max_threads']} threads on {cores} cores, {cpu['system_share']:.0%} of CPU time in the kernel, "
        f"{cpu['involuntary_switches_per_s']:.0f} involuntary context switches per second",
    ])


def _first_and_compared(signals: Signals):
    if not signals.epochs:
        return None, None
    later = next((e for e in signals.epochs if e.epoch == signals.compared_epoch), None)
    return signals.epochs[0], later


def _rose(before: float | None, after: float | None, *, add: float = 0.0, times: float = 1.0) -> bool:
    if before is None or after is None:
        return False
    return after > before * times + add if times != 1.0 else after > before + add


def machine_contention(signals: Signals, run_dir: Path | None) -> Finding | None:
    """Other processes took CPU that the run needed. Named instead of any cause in the
    user's code; the run is not called slow for it."""
    if not signals.contended:
        return None
    loads = ", ".join(f"epoch {e}: {share:.0%}" for e, share in sorted(signals.outside_load.items()))
    evidence = [f"CPU used by processes outside the run (share of all cores): {loads}"]
    if signals.ratio is not None:
        evidence.append(f"{_ratio_text(signals)}; that change in outside load alone would make the run "
                        f"{signals.contention_ratio:.2f}x slower")
    evidence.append("the timings say nothing about the code: rerun on a quiet machine")
    return Finding("machine-contention", th.SCORE_CONTENTION, evidence)


def periodic_work(signals: Signals, run_dir: Path | None) -> Finding | None:
    """Every k batches something else runs inside the loop (evaluation, logging, a
    checkpoint): spikes at a period. The median hardly moves; the mean does."""
    if _contention_explains(signals) or not _bursts_explain(signals):
        return None
    first, later = _first_and_compared(signals)
    b = later.bursts
    periods = ", ".join(f"epoch {e.epoch}: " + (f"every {e.bursts.period} batches" if e.bursts.period else
                                                 f"{e.bursts.count} slow batches")
                        for e in signals.epochs if e.bursts is not None)
    evidence = [
        f"every {b.period} batches one batch takes {b.burst_s * 1000:.0f} ms against a median of "
        f"{later.times.median * 1000:.0f} ms: {b.count} of {later.batches} batches ({b.share:.0%}), "
        f"{b.time_share:.0%} of epoch {later.epoch}'s time",
        f"the period per epoch: {periods}",
    ]
    mean, median = signals.ratios.get("mean"), signals.ratios.get("median")
    if mean and median:
        evidence.append(f"the mean batch time moved {format_ratio(*mean, signals.confidence)} while the median moved "
                        f"{format_ratio(*median, signals.confidence)}: bursts on an unchanged level")
    return Finding("periodic-work", th.SCORE_PERIODIC, evidence)


def _bursts_explain(signals: Signals) -> bool:
    """The compared epoch has periodic spikes that take a real share of its time, and
    more of it than epoch 1's spikes did: they are where the extra time went."""
    first, later = _first_and_compared(signals)
    if later is None or later.bursts is None or later.bursts.period is None:
        return False
    gc = signals.gc
    if gc and gc["outlier_batches"] and gc["outliers_with_gen2"] / gc["outlier_batches"] > th.GC_ALIGNED_SHARE:
        return False  # the spikes are garbage collections: gc-pressure
    grew = later.bursts.time_share - (first.bursts.time_share if first.bursts else 0.0)
    return later.bursts.time_share >= th.BURST_TIME_SHARE and grew > 0 and signals.ratios.get("mean", (0,))[0] > 1


def thermal_throttling(signals: Signals, run_dir: Path | None) -> Finding | None:
    """Compute gets slower while memory stays flat and the clock falls. Without a clock
    reading there is no telling throttling from anything else: no finding."""
    first, later = _first_and_compared(signals)
    if later is None or first.cpu_freq_mhz is None or later.cpu_freq_mhz is None or not _time_grows(signals):
        return None
    if later.cpu_freq_mhz > first.cpu_freq_mhz * (1 - th.FREQUENCY_FELL):
        return None
    growth, per_batch, label = _retained(signals)
    if growth >= th.RETAINED_MIN:
        return None  # memory grows: a memory cause explains it better
    compute = sum(max(signals.phase_growth.get(p, 0.0), 0.0) for p in COMPUTE)
    extra = sum(max(v, 0.0) for v in signals.phase_growth.values())
    if extra <= 0 or compute < th.COMPUTE_SHARE_OF_GROWTH * extra:
        return None
    return Finding("thermal-throttling", th.SCORE_THERMAL, [
        f"CPU clock fell {first.cpu_freq_mhz:,.0f} -> {later.cpu_freq_mhz:,.0f} MHz from epoch {first.epoch} to {later.epoch}",
        f"compute (forward, backward, optimizer) grew +{compute * 1000:.0f} ms per batch; {_ratio_text(signals)}",
        f"memory stayed flat ({label} {_mb(growth)})",
    ])


def fd_leak(signals: Signals, run_dir: Path | None) -> Finding | None:
    if not signals.fds or signals.fds["growth"] < th.FDS_ROSE:
        return None
    return Finding("fd-leak", th.SCORE_FD_LEAK, [
        f"open file descriptors (main process + workers) rose {signals.fds['start']} -> {signals.fds['end']}: "
        "something keeps files or shared-memory segments open; it ends in 'too many open files' or a hang",
    ], timing_free=True)


def device_allocator_retention(signals: Signals, run_dir: Path | None) -> Finding | None:
    for held, used, names in (("device_driver", "device_current", ("driver", "current")),
                              ("device_reserved", "device_allocated", ("reserved", "allocated"))):
        if held in signals.memory and used in signals.memory:
            held_growth, used_growth = _growth(signals, held), _growth(signals, used)
            if held_growth >= th.RETAINED_MIN and used_growth < th.DEVICE_USED_SHARE * held_growth:
                return Finding("device-allocator-retention", th.SCORE_DEVICE_RETENTION, [
                    f"device {names[0]} memory grew {_mb(held_growth)} while {names[1]} memory changed {_mb(used_growth)}: "
                    "the allocator keeps memory the program no longer uses",
                ], timing_free=True)
    return None


def allocator_fragmentation(signals: Signals, run_dir: Path | None) -> Finding | None:
    retries = signals.memory.get("device_alloc_retries", 0)
    if retries > 0:
        return Finding("allocator-fragmentation", th.SCORE_CUDA_RETRIES,
                       [f"the CUDA caching allocator retried {retries:.0f} allocations"], timing_free=True)
    rss = _growth(signals, "main_rss")
    if "main_in_use" not in signals.memory or rss < th.FRAGMENTATION_RSS_MIN:
        return None
    in_use = _growth(signals, "main_in_use")
    if in_use > th.FRAGMENTATION_IN_USE_SHARE * rss:
        return None
    return Finding("allocator-fragmentation", th.SCORE_FRAGMENTATION, [
        f"RSS grew {_mb(rss)} while memory in use changed {_mb(in_use)}: glibc holds freed memory "
        f"(free but held: {_mb(_growth(signals, 'main_allocator_held'))} more); RSS alone would be a false leak alarm",
    ])


def cache_clearing_cost(signals: Signals, run_dir: Path | None) -> Finding | None:
    share = signals.cache_clear_share
    if share < th.CACHE_CLEAR_SHARE:
        return None
    evidence = [f"clearing caches costs {share:.0%} of batch time, the clear calls and the batch after each clear together"]
    if signals.cache_clear_after_s:
        evidence.append(f"the batch after each of the {signals.cache_clears} clears spends +{signals.cache_clear_after_s * 1000:.0f} ms "
                        "more in compute: its forward re-fills what the clear threw away (the cost is not in the clear call)")
    elif signals.cache_clears >= sum(e.batches for e in signals.epochs) // 2:
        # Every batch (or nearly) follows a clear: no batch is left to compare with, so the
        # forward's share of the cost cannot be told apart within this run.
        evidence.append("nearly every batch follows a clear, so what the next forward pays to re-fill cannot be measured "
                        "in this run, only the clear calls: compare with a run that clears once per epoch")
    evidence.append("clearing per batch throws away what the allocator would reuse next batch; clear once per epoch")
    return Finding("cache-clearing-cost", min(1.0, th.SCORE_CACHE_CLEAR_BASE + 2 * share), evidence)


def shape_cache(signals: Signals, run_dir: Path | None) -> Finding | None:
    """Many batch shapes; named with confidence when the first batch of each new shape is
    the slow one (a graph compiled or a plan made per shape, then cached)."""
    shapes = signals.shapes
    if not shapes or shapes["distinct"] < th.DISTINCT_SHAPES:
        return None
    evidence = [f"{shapes['distinct']} distinct batch shapes: each new shape recompiles or re-plans"]
    new_s, repeat_s = shapes.get("new_shape_batch_s"), shapes.get("repeat_shape_batch_s")
    spikes = (new_s is not None and repeat_s and new_s >= th.NEW_SHAPE_SLOWER * repeat_s
              and shapes["new_shape_share"] >= th.NEW_SHAPE_TIME_SHARE and not _contention_explains(signals))
    if spikes:
        evidence.append(f"the first batch of each of {shapes['new_shape_batches']} new shapes spent {new_s:.2f} s in compute "
                        f"(median) against {repeat_s:.2f} s for a shape seen before: {shapes['new_shape_share']:.0%} of batch "
                        "time went to new shapes")
        if signals.ratio is not None:
            evidence.append(_ratio_text(signals))
    return Finding("shape-cache", th.SCORE_SHAPES_SPIKES if spikes else th.SCORE_SHAPES, evidence)


def _no_cause_evidence(signals: Signals) -> str:
    if signals.ratio is None:
        return "nothing stands out in the measurements"
    if signals.slowdown:
        return f"{_ratio_text(signals)}; no rule matched the measurements"
    return f"no slowdown: {_ratio_text(signals)}; memory and GC show nothing unusual"


RULES: tuple[Callable[[Signals, Path | None], Finding | None], ...] = (
    stall, machine_contention, graph_retention, memory_pressure, metric_accumulation, periodic_work, gc_pressure,
    worker_memory_growth, worker_respawn, thread_oversubscription, device_allocator_retention,
    allocator_fragmentation, cache_clearing_cost, shape_cache, fd_leak, thermal_throttling,
)
