"""Causes read from memory: what the run keeps (tensors, Python objects, descriptors) and
what its allocators hold."""

from __future__ import annotations

from pathlib import Path

from dcnprobe.analysis import thresholds as th
from dcnprobe.analysis.causes.readings import paging, slower_while_paging, time_grows
from dcnprobe.analysis.causes.registry import Finding, cause
from dcnprobe.analysis.causes.wording import mb, ratio_text
from dcnprobe.analysis.signals import Signals


@cause("graph-retention",
       sees="memory in use (glibc, or device memory) grows every batch and does not come back; held in few large "
            "objects (tensors); batch time flat until memory runs out.",
       fix="store scalars, not tensors: `loss.item()`, `out.detach()`; find the list or hook keeping them "
           "(`total += loss`, `retain_graph=True`)",
       reference='PyTorch FAQ, "My model reports cuda runtime error(2): out of memory" (accumulating history '
                 "across the training loop).")
def graph_retention(s: Signals, run_dir: Path | None) -> Finding | None:
    growth, per_batch, label = s.memory.retained()
    if growth < th.RETAINED_MIN or per_batch < th.RETAINED_PER_BATCH or time_grows(s):
        return None  # its signature is memory that grows while the batches do not slow down
    bytes_per_object = per_batch / max(s.memory.per_batch("python_blocks"), 1.0)
    if bytes_per_object < th.TENSOR_BYTES_PER_BLOCK:
        return None  # many small objects: a Python heap (gc-pressure), not tensors
    evidence = [
        f"{label} grew {mb(growth)} ({mb(per_batch)} per batch) and does not come back",
        f"held in few, large objects: {bytes_per_object / 1024:,.0f} KB per new Python object (tensors or arrays)",
        f"batch time did not grow: {ratio_text(s)}",
    ]
    if s.memory.live_tensors is not None:
        evidence.append(f"live tensors grew by {s.memory.growth('live_tensors'):,.0f}")
    return Finding("graph-retention", min(1.0, th.SCORE_GRAPH_RETENTION + 0.1 * growth / th.PRESSURE_MEMORY_MIN),
                   tuple(evidence), timing_free=True)


@cause("memory-pressure",
       sees="batch time grows as memory grows; or a knee where batch time jumps and stays up, with swap-ins or major "
            "page faults (over 1000 in the steady batches): memory ran out and pages are read back from disk "
            "(unified memory over-committed on macOS; a memory limit on Linux). With paging measured, a later "
            "epoch whose ratio is above the threshold is enough, even where its interval still reaches below it.",
       fix="free what is leaking; on Apple silicon lower PYTORCH_MPS_HIGH_WATERMARK_RATIO and close other programs "
           "so that unified memory is not paged; clear caches per epoch",
       reference="pytorch/pytorch PR #165522.")
def memory_pressure(s: Signals, run_dir: Path | None) -> Finding | None:
    if not (time_grows(s) or slower_while_paging(s)):
        return None
    growth, per_batch, label = s.memory.retained()
    swapping = paging(s)
    if not (swapping or (growth >= th.PRESSURE_MEMORY_MIN and per_batch >= th.PRESSURE_PER_BATCH)):
        return None
    evidence = [
        f"batch time grows as memory grows: {ratio_text(s)}",
        f"{label} grew {mb(growth)} ({mb(per_batch)} per batch); correlation of batch time with RSS "
        f"{s.memory.time_correlation or 0:.2f}",
    ]
    if swapping:
        evidence.append(f"swap-in {mb(s.memory.swap_in or 0.0)}, {s.memory.major_faults:,} major page faults: "
                        "memory is being paged")
    if s.timing.grew:
        evidence.append(f"the time went to '{s.timing.grew}'")
    return Finding("memory-pressure", th.SCORE_SWAPPING if swapping else th.SCORE_MEMORY_PRESSURE, tuple(evidence))


@cause("gc-pressure",
       sees="the Python heap grows and GC pauses grow with it, lining up with the slowest batches; or no "
            "generation-2 collection runs at all while the heap grows (gc disabled or starved) and memory grows.",
       fix="stop keeping a Python object per sample; `gc.freeze()` after set-up moves long-lived objects out of the "
           "collector's way; if gc was disabled, re-enable it or call gc.collect() each epoch",
       reference="pytorch/pytorch#95462.")
def gc_pressure(s: Signals, run_dir: Path | None) -> Finding | None:
    gc = s.gc
    blocks = s.memory.per_batch("python_blocks")
    if gc is None or blocks < th.PYTHON_BLOCKS_PER_BATCH:
        return None
    never = _gc_never_runs(s)
    if never:
        return never
    growing_pauses = gc.trend.t > th.GC_TREND_T and gc.trend.per_step > 0 and not s.contention_explains
    aligned = (gc.outlier_batches >= th.GC_ALIGNED_MIN
               and gc.outliers_with_gen2 / gc.outlier_batches > max(th.GC_ALIGNED_SHARE, 2 * gc.gen2_rate))
    if not (growing_pauses or aligned):
        return None
    shares = [e.gc_share for e in s.epochs]
    evidence = [
        f"the Python heap grows by {blocks:,.0f} objects per batch",
        f"GC time per epoch: {', '.join(f'{x:.1%}' for x in shares)} of batch time; longest GC in one batch "
        f"{gc.max_gc_s:.2f} s",
    ]
    if aligned:
        evidence.append(f"{gc.outliers_with_gen2} of the {gc.outlier_batches} slowest batches ran a generation-2 "
                        f"collection (base rate {gc.gen2_rate:.1%})")
    return Finding("gc-pressure", th.SCORE_GC_BASE + th.SCORE_GC_EACH_SIGN * (growing_pauses + aligned),
                   tuple(evidence))


def _gc_never_runs(s: Signals) -> Finding | None:
    """No generation-2 collection while the Python heap grows by half its size or more
    (so one was due), or no collection of any generation at all: the collector is off
    or starved, and cycles pile up."""
    heap = s.memory.python_blocks
    if heap is None or s.gc.gen2_runs != 0:
        return None
    switched_off = s.gc.gen0_runs == 0
    due = heap.start > 0 and heap.growth >= th.GC_NEVER_HEAP_GROWTH * heap.start
    if not (switched_off or due):
        return None
    growth, _, label = s.memory.retained()
    return Finding("gc-pressure", th.SCORE_GC_NEVER_RUNS, (
        f"no generation-2 collection ran while the Python heap grew by {heap.growth:,.0f} objects "
        f"({heap.per_batch:,.0f} per batch)" + ("; no collection of any generation ran: gc is disabled" if switched_off else ""),
        f"{label} grew {mb(growth)}: reference cycles are not being freed",
    ))


@cause("allocator-fragmentation",
       sees="RSS ratchets while memory in use (glibc) is flat; or CUDA allocation retries rise and reserved minus "
            "allocated grows.",
       fix="RSS that gc.collect + malloc_trim give back is not a leak (`malloc_trim` or jemalloc on Linux); with "
           "CUDA, PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True and fixed shapes",
       reference="glibc malloc documentation (`mallopt`, `malloc_trim`); pytorch/pytorch#35901.")
def allocator_fragmentation(s: Signals, run_dir: Path | None) -> Finding | None:
    retries = s.memory.device_alloc_retries or 0
    if retries > 0:
        return Finding("allocator-fragmentation", th.SCORE_CUDA_RETRIES,
                       (f"the CUDA caching allocator retried {retries:.0f} allocations",), timing_free=True)
    rss = s.memory.growth("main_rss")
    if s.memory.main_in_use is None or rss < th.FRAGMENTATION_RSS_MIN:
        return None
    in_use = s.memory.growth("main_in_use")
    if in_use > th.FRAGMENTATION_IN_USE_SHARE * rss:
        return None
    return Finding("allocator-fragmentation", th.SCORE_FRAGMENTATION, (
        f"RSS grew {mb(rss)} while memory in use changed {mb(in_use)}: glibc holds freed memory "
        f"(free but held: {mb(s.memory.growth('main_allocator_held'))} more); RSS alone would be a false leak alarm",
    ))


@cause("device-allocator-retention",
       sees="MPS `driver_allocated_memory` (or CUDA reserved memory) grows while current allocated memory is flat, "
            "then swap.",
       fix="upgrade torch; `torch.mps.empty_cache()` (or `torch.cuda.empty_cache()`) once per epoch, not per batch",
       reference="ultralytics/ultralytics#24065.")
def device_allocator_retention(s: Signals, run_dir: Path | None) -> Finding | None:
    for held, used, names in (("device_driver", "device_current", ("driver", "current")),
                              ("device_reserved", "device_allocated", ("reserved", "allocated"))):
        if getattr(s.memory, held) is not None and getattr(s.memory, used) is not None:
            held_growth, used_growth = s.memory.growth(held), s.memory.growth(used)
            if held_growth >= th.RETAINED_MIN and used_growth < th.DEVICE_USED_SHARE * held_growth:
                return Finding("device-allocator-retention", th.SCORE_DEVICE_RETENTION, (
                    f"device {names[0]} memory grew {mb(held_growth)} while {names[1]} memory changed "
                    f"{mb(used_growth)}: the allocator keeps memory the program no longer uses",
                ), timing_free=True)
    return None


@cause("fd-leak",
       sees='open file descriptors of the main process and workers only rise; later "too many open files" or a hang.',
       fix="do not keep tensors that came from the loader beyond the batch; "
           "`torch.multiprocessing.set_sharing_strategy('file_system')`; close files the dataset opens",
       reference="pytorch/pytorch#973, pytorch/pytorch#11201.")
def fd_leak(s: Signals, run_dir: Path | None) -> Finding | None:
    if s.fds is None or s.fds.growth < th.FDS_ROSE:
        return None
    return Finding("fd-leak", th.SCORE_FD_LEAK, (
        f"{s.fds.growth} file descriptors opened and kept (by the main process, and by each worker over its "
        f"own life; all processes together {s.fds.start} -> {s.fds.end}): "
        "something keeps files or shared-memory segments open; it ends in 'too many open files' or a hang",
    ), timing_free=True)
