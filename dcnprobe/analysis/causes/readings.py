"""How several rules read the signals: shared judgements, each defined once.

Outside CPU load is never blamed on the user's code: `time_grows` is false when other
processes' load explains the timing, and every rule that reads timing goes through it.
"""

from __future__ import annotations

from dcnprobe.analysis import thresholds as th
from dcnprobe.analysis.signals import COMPUTE, Signals


def time_grows(s: Signals) -> bool:
    """The run's own batches take longer: slow by the interval, or a strong steady rise
    within epochs. Never when other processes' load explains the timing."""
    if s.contention_explains:
        return False
    trend = s.trend.time_trend
    rising = (trend is not None and trend.t > th.STRONG_TREND_T
              and trend.growth > th.TREND_MIN_GROWTH * (s.timing.batch_seconds or 1))
    return s.slowdown or (rising and (s.trend.within_epoch_rise or 0) > th.WITHIN_EPOCH_RISE)


def paging(s: Signals) -> bool:
    """Memory has run out: pages are read back in (swap-ins, or major faults in the steady batches)."""
    return (s.memory.swap_in or 0.0) > th.SWAP_IN_MIN or s.memory.major_faults > th.MAJOR_FAULTS_MIN


def slower_while_paging(s: Signals) -> bool:
    """Paging measured, and the later epoch's ratio above the threshold even if its interval
    still reaches below: paging is direct evidence, so the estimate is enough to name it."""
    return (paging(s) and not s.contention_explains and s.timing.ratio is not None
            and s.timing.ratio > s.timing.threshold)


def memory_grows_fast(s: Signals) -> bool:
    """Retained memory grows enough, and fast enough, to push a machine into paging."""
    growth, per_batch, _ = s.memory.retained()
    return growth >= th.PRESSURE_MEMORY_MIN and per_batch >= th.PRESSURE_PER_BATCH


def own_code_grew(s: Signals) -> tuple[float, float] | None:
    """(before, after) median seconds per batch of the loop's own code ('other') when it at
    least doubled and grew by TREND_MIN_GROWTH of a batch: a history re-processed every step
    shows here before the whole batch is slow. Never under outside load."""
    first, later = s.first_and_compared
    if first is None or later is None or s.contention_explains:
        return None
    before, after = first.phases.get("other"), later.phases.get("other")
    if not before or not after or before <= 0:
        return None
    if after - before >= th.TREND_MIN_GROWTH * first.times.median and after >= th.OWN_CODE_ROSE * before:
        return before, after
    return None


def has_workers(s: Signals) -> bool:
    return bool(s.epochs and s.epochs[0].worker_pids)


def workers_displace(s: Signals) -> bool:
    """The run keeps every core busy and the workers' added CPU per batch, spread over
    the cores, accounts for at least WORKERS_DISPLACE_SHARE of the added batch time: the
    workers' growing work, not the main process's own code, made the batches longer."""
    first, later = s.first_and_compared
    if (first is None or later is None or s.cpu is None or later.utilisation is None
            or later.utilisation < th.SATURATED or first.worker_cpu_per_batch is None
            or later.worker_cpu_per_batch is None):
        return False
    rise = later.times.median - first.times.median
    displaced = (later.worker_cpu_per_batch - first.worker_cpu_per_batch) / s.cpu.cores
    return rise > 0 and displaced >= th.WORKERS_DISPLACE_SHARE * rise


def bursts_explain(s: Signals) -> bool:
    """The compared epoch has periodic spikes that take a real share of its time, and
    more of it than epoch 1's spikes did: they are where the extra time went."""
    first, later = s.first_and_compared
    if later is None or later.bursts is None or later.bursts.period is None:
        return False
    gc = s.gc
    if gc and gc.outlier_batches and gc.outliers_with_gen2 / gc.outlier_batches > th.GC_ALIGNED_SHARE:
        return False  # the spikes are garbage collections
    grew = later.bursts.time_share - (first.bursts.time_share if first.bursts else 0.0)
    mean = (s.timing.ratios or {}).get("mean", (0,))[0]
    return later.bursts.time_share >= th.BURST_TIME_SHARE and grew > 0 and mean > 1


def compute_growth(s: Signals) -> tuple[float, float]:
    """(seconds per batch the compute phases added, seconds per batch all phases added)."""
    growth = s.timing.phase_growth or {}
    compute = sum(max(growth.get(p, 0.0), 0.0) for p in COMPUTE)
    return compute, sum(max(v, 0.0) for v in growth.values())


def rose(before: float | None, after: float | None, *, add: float = 0.0, times: float = 1.0) -> bool:
    if before is None or after is None:
        return False
    return after > before * times + add if times != 1.0 else after > before + add
