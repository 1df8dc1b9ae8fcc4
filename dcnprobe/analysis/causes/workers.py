"""Causes in the DataLoader's worker processes: state they carry, and their start-up."""

from __future__ import annotations

from pathlib import Path

from dcnprobe.analysis import thresholds as th
from dcnprobe.analysis.causes.readings import has_workers, time_grows, workers_displace
from dcnprobe.analysis.causes.registry import Finding, cause
from dcnprobe.analysis.causes.wording import mb, ratio_text
from dcnprobe.analysis.signals import Signals


@cause("worker-memory-growth",
       sees="DataLoader worker USS grows (copy-on-read of Python objects after fork: grows in epoch 1 then plateaus; "
            "or state carried by persistent workers: steps up across epochs); worker CPU per batch rises; the loop "
            "waits longer for data, or, when the run keeps every core busy, the main process's own phases slow "
            "instead (the workers' added CPU per batch, spread over the cores, covers at least half the added batch "
            "time).",
       fix="keep dataset storage in numpy/Arrow/tensors rather than Python objects; do not accumulate state in "
           "workers, or let them restart each epoch (persistent_workers=false)",
       reference="pytorch/pytorch#13246 (copy-on-read); pytorch/pytorch#62066 (persistent workers).")
def worker_memory_growth(s: Signals, run_dir: Path | None) -> Finding | None:
    """Workers accumulate something: memory (copy-on-read pages, caches, histories) or
    per-batch work carried across epochs by persistent workers."""
    if not has_workers(s):
        return None
    growth = s.memory.workers_grew()
    memory_grew = growth >= th.WORKER_GROWTH_MIN
    cpu = [e.worker_cpu_per_batch for e in s.epochs if e.worker_cpu_per_batch is not None]
    cpu_rose = len(cpu) >= 2 and cpu[0] > 0 and cpu[-1] / cpu[0] > th.WORKER_CPU_ROSE
    slower = time_grows(s)
    loading_slower = slower and s.timing.grew == "data_wait"
    if not (memory_grew or loading_slower or (slower and cpu_rose)):
        return None
    displacing = slower and workers_displace(s)
    per_worker = s.memory.per_worker_growth or {}
    main_growth, _, _ = s.memory.retained()
    memory_text = (f"DataLoader worker memory grew {mb(growth)} in total"
                   + (f" ({', '.join(mb(g) for g in per_worker.values())} per worker)" if per_worker else "")
                   + f", the main process {mb(main_growth)}")
    evidence = []
    if loading_slower:
        wait = (s.timing.phase_growth or {}).get("data_wait", 0.0)
        evidence.append(f"the loop waits longer for the loader: data_wait +{wait * 1000:.0f} ms per batch; "
                        + ratio_text(s))
    if memory_grew:
        evidence.append(memory_text)
    if cpu_rose:
        evidence.append(f"worker CPU per batch rose {cpu[0] * 1000:.0f} -> {cpu[-1] * 1000:.0f} ms across epochs: "
                        "workers do more work per batch as their state grows")
    if displacing:
        first, later = s.first_and_compared
        evidence.append(f"the run kept the machine's {s.cpu.cores} cores busy ({later.utilisation:.0%}): the "
                        f"workers' extra {(later.worker_cpu_per_batch - first.worker_cpu_per_batch) * 1000:.0f} ms of "
                        "CPU per batch took cores from the main process, whose batches grew "
                        f"{(later.times.median - first.times.median) * 1000:.0f} ms "
                        f"(in '{s.timing.grew}': where the main process happened to be, not what grew)")
    if not memory_grew:  # after the work that grew: bytes are not what the workers carry
        evidence.append(memory_text + ": the state the workers carry is work, not bytes")
    if slower and not loading_slower:
        evidence.append(ratio_text(s) + (f"; the time went to '{s.timing.grew}'" if s.timing.grew else ""))
    elif not slower and s.timing.ratio is not None and s.timing.ratio < 1:
        evidence.append(f"epoch 1 was the slower one ({ratio_text(s)}): pages copied on first touch")
    if len(s.epochs) >= 2 and all(e.worker_pids == s.epochs[0].worker_pids for e in s.epochs):
        evidence.append("the same worker processes served every epoch (persistent workers carry their state)")
    score = th.SCORE_WORKERS_MEMORY if memory_grew else th.SCORE_WORKERS_WORK
    if (memory_grew and slower and (cpu_rose or loading_slower)) or displacing:
        score = th.SCORE_WORKERS_BOTH
    return Finding("worker-memory-growth", score, tuple(evidence))


@cause("worker-respawn",
       sees="the first batch of every later epoch waits a long time for the loader (at least 5% of an epoch and 5 "
            "batches' worth), and new worker processes appear each epoch (a process that lives throughout, such as "
            "spawn's resource tracker, does not hide them). Epoch 1 pays the same start, so the epoch ratio may not "
            "move: the cause is the wait itself.",
       fix="persistent_workers=true, and a dataset that is cheap to pickle",
       reference="pytorch/pytorch#103117, pytorch/pytorch#70344.")
def worker_respawn(s: Signals, run_dir: Path | None) -> Finding | None:
    first = s.epochs[0] if s.epochs else None
    later = [e for e in s.epochs[1:] if e.first_wait_s]
    batch_s = s.timing.batch_seconds
    if first is None or not later or not first.worker_pids or not batch_s:
        return None
    # New processes appear in a later epoch. Not "all processes new": under spawn a
    # multiprocessing resource tracker (a python child too) lives through every epoch.
    new_workers = any(set(e.worker_pids) - set(first.worker_pids) for e in later)
    waits = [e.first_wait_s for e in later]
    share = max(waits) / (batch_s * first.batches)  # of a full epoch, even when later ones were cut short
    if not new_workers or share < th.RESPAWN_SHARE or max(waits) < th.RESPAWN_BATCHES * batch_s:
        return None
    return Finding("worker-respawn", min(th.SCORE_RESPAWN_MAX, th.SCORE_RESPAWN_BASE + share), (
        f"each later epoch's first batch waited {', '.join(f'{w:.1f} s' for w in waits)} for the loader "
        f"(up to {share:.0%} of an epoch; a batch takes {batch_s:.2f} s)",
        "new worker processes started every epoch (persistent_workers=false)",
    ))
