"""Causes on the machine rather than in the code: other processes, too many threads for
the cores, a CPU that slows its clock."""

from __future__ import annotations

from pathlib import Path

from dcnprobe.analysis import thresholds as th
from dcnprobe.analysis.causes.readings import compute_growth, rose, time_grows
from dcnprobe.analysis.causes.registry import Finding, cause
from dcnprobe.analysis.causes.wording import mb, ratio_text
from dcnprobe.analysis.signals import Signals


@cause("machine-contention",
       sees="CPU used by processes outside the run's own tree (machine busy time from `/proc/stat` less the run's "
            "main process and workers) differs between the epochs compared, or rises enough to explain the ratio "
            "(an epoch clearly not slow while the load rose is healthy: load can only have slowed it). "
            'The run is not called slow for it (`"slowdown": false`, `"contended": true`, `outside_load` per epoch).',
       fix="rerun on a quiet machine (or pin the run to cores nothing else uses); do not change the code on the "
           "strength of these timings",
       reference="measurement hygiene (see `benchmarks/` and DESIGN.md).")
def machine_contention(s: Signals, run_dir: Path | None) -> Finding | None:
    """Other processes took CPU that the run needed. Named instead of any cause in the
    user's code; the run is not called slow for it."""
    c = s.contention
    if not c.contended:
        return None
    loads = ", ".join(f"epoch {e}: {share:.0%}" for e, share in sorted(c.outside_load.items()))
    evidence = [f"CPU used by processes outside the run (share of all cores): {loads}"]
    if s.timing.ratio is not None:
        evidence.append(f"{ratio_text(s)}; that change in outside load alone would make the run "
                        f"{c.contention_ratio:.2f}x slower")
    evidence.append("the timings say nothing about the code: rerun on a quiet machine")
    return Finding("machine-contention", th.SCORE_CONTENTION, tuple(evidence))


@cause("thread-oversubscription",
       sees="threads (main process plus workers) far above the cores; between epochs the thread count, the kernel's "
            "share of CPU time and involuntary context switches rise while compute phases (forward, backward, "
            "optimizer) inflate.",
       fix="keep torch.set_num_threads (and OMP_NUM_THREADS) at or below the cores; one intra-op thread per "
           "DataLoader worker; threads x processes no larger than the cores",
       reference="pytorch/pytorch#19825.")
def thread_oversubscription(s: Signals, run_dir: Path | None) -> Finding | None:
    """More runnable threads than cores: they queue, spin and switch. Rising between
    epochs (torch.set_num_threads raised mid-run, workers each with a full thread pool),
    it shows as more threads, more kernel time and more involuntary switches, with the
    extra time in compute phases."""
    first, later = s.first_and_compared
    cores = s.cpu.cores if s.cpu else None
    if not cores or first is None or s.contention_explains:
        return None  # other processes' load also raises switches and kernel time
    threads = max((e.threads or 0) for e in s.epochs)
    if threads < th.THREADS_PER_CORE * cores:
        return None
    if later is not None and time_grows(s):
        signs = []
        if (later.threads is not None and first.threads is not None
                and later.threads - first.threads > th.THREADS_ROSE_BY_CORES * cores):
            signs.append(f"threads rose from {first.threads} in epoch {first.epoch} to {later.threads} in epoch "
                         f"{later.epoch}, on {cores} cores")
        if rose(first.system_share, later.system_share, add=th.SYSTEM_SHARE_ROSE):
            signs.append(f"kernel share of CPU time rose {first.system_share:.0%} -> {later.system_share:.0%}")
        if rose(first.involuntary_per_s, later.involuntary_per_s, times=th.SWITCHES_ROSE):
            signs.append(f"involuntary context switches rose {first.involuntary_per_s:,.0f} -> "
                         f"{later.involuntary_per_s:,.0f} per second")
        compute, extra = compute_growth(s)
        compute_inflates = extra > 0 and compute >= th.COMPUTE_SHARE_OF_GROWTH * extra
        if compute_inflates and len(signs) >= 2:
            return Finding("thread-oversubscription", th.SCORE_THREADS_RISING, (
                f"{threads} threads on {cores} cores; " + "; ".join(signs),
                f"the extra time is in compute (forward, backward, optimizer: +{compute * 1000:.0f} ms per batch); "
                + ratio_text(s),
            ))
    cpu = s.cpu
    if cpu.max_threads < th.THREADS_PER_CORE * cores or cpu.system_share < th.SYSTEM_SHARE_HIGH:
        return None
    return Finding("thread-oversubscription", th.SCORE_THREADS_STATIC, (
        f"{cpu.max_threads} threads on {cores} cores, {cpu.system_share:.0%} of CPU time in the kernel, "
        f"{cpu.involuntary_switches_per_s:.0f} involuntary context switches per second",
    ))


@cause("thermal-throttling",
       sees="compute time drifts up with flat memory while the CPU clock frequency falls; recovers after idle. Never "
            "named where the clock cannot be read.",
       fix="cool-down A/B: rerun after the machine idles; if the clock falls again, improve cooling or cap the "
           "power profile",
       reference="pytorch/pytorch#79402.")
def thermal_throttling(s: Signals, run_dir: Path | None) -> Finding | None:
    """Compute gets slower while memory stays flat and the clock falls. Without a clock
    reading there is no telling throttling from anything else: no finding."""
    first, later = s.first_and_compared
    if later is None or first.cpu_freq_mhz is None or later.cpu_freq_mhz is None or not time_grows(s):
        return None
    if later.cpu_freq_mhz > first.cpu_freq_mhz * (1 - th.FREQUENCY_FELL):
        return None
    growth, _, label = s.memory.retained()
    if growth >= th.RETAINED_MIN:
        return None  # its signature is flat memory
    compute, extra = compute_growth(s)
    if extra <= 0 or compute < th.COMPUTE_SHARE_OF_GROWTH * extra:
        return None
    return Finding("thermal-throttling", th.SCORE_THERMAL, (
        f"CPU clock fell {first.cpu_freq_mhz:,.0f} -> {later.cpu_freq_mhz:,.0f} MHz from epoch {first.epoch} to "
        f"{later.epoch}",
        f"compute (forward, backward, optimizer) grew +{compute * 1000:.0f} ms per batch; {ratio_text(s)}",
        f"memory stayed flat ({label} {mb(growth)})",
    ))
