"""The measurements of one run, reduced to the signals that causes are judged on.

This module only measures; dcnprobe.analysis.causes decides what the signals mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dcnprobe.analysis.stats import (
    ChangePoint,
    Slope,
    Summary,
    change_point,
    linear_slope,
    mad_outliers,
    ratio_ci,
    summarize,
    warmup_batches,
)
from dcnprobe.hooks import DATA_WAIT, PHASES
from dcnprobe.records import Run

TIMED = (DATA_WAIT, *PHASES, "other")
MIN_BATCHES_TO_COMPARE = 5  # to report a ratio at all
MIN_BATCHES_TO_CALL_SLOW = 20  # a bootstrap interval from fewer batches is too optimistic to act on


@dataclass
class EpochSignal:
    epoch: int
    batches: int
    times: Summary  # steady-state batch totals
    phases: dict[str, float]  # median seconds per phase
    gc_share: float  # GC seconds over batch seconds
    first_wait_s: float | None  # data_wait of the epoch's first batch
    worker_pids: list[int] = field(default_factory=list)
    worker_cpu_per_batch: float | None = None


@dataclass
class Signals:
    status: str
    threshold: float
    epochs: list[EpochSignal]
    ratio: float | None = None  # worst later epoch over epoch 1, of the statistic in ratio_stat
    ratio_ci: tuple[float, float] | None = None
    ratio_stat: str = "median"  # "mean" when only the mean shows the slowdown (bursty batches)
    compared_epoch: int | None = None
    slowdown: bool = False
    time_trend: Slope | None = None  # batch total against step, steady batches
    within_epoch_rise: float | None = None  # last-quarter / first-quarter median, averaged over epochs
    phase_growth: dict[str, float] = field(default_factory=dict)  # seconds per batch (ratio_stat), compared epoch - epoch 1
    grew: str | None = None
    change: ChangePoint | None = None
    change_step: int | None = None
    change_epoch_batch: tuple[int, int] | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    gc: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    memory_time_correlation: float | None = None
    stalls: list[dict[str, Any]] = field(default_factory=list)
    cache_clear_share: float = 0.0
    shapes: dict[str, Any] = field(default_factory=dict)
    batch_seconds: float | None = None  # steady median over the run


def steady_batches(batches: pd.DataFrame) -> pd.DataFrame:
    """Batches after each epoch's warm-up."""
    if batches.empty:
        return batches
    parts = []
    for _, group in batches.groupby("epoch", sort=True):
        parts.append(group.iloc[warmup_batches(len(group)):])
    return pd.concat(parts) if parts else batches.iloc[0:0]


def measure(run: Run, threshold: float = 1.2) -> Signals:
    batches = run.batches.sort_values("step") if not run.batches.empty else run.batches
    steady = steady_batches(batches)
    signals = Signals(status=run.status, threshold=threshold, epochs=_epochs(run, batches, steady), stalls=run.stalls)
    if steady.empty:
        return signals
    signals.batch_seconds = float(steady["total"].median())
    _compare_epochs(signals, steady)
    _trend(signals, steady)
    _memory(signals, run, steady)
    _gc(signals, steady)
    _cpu(signals, run)
    signals.cache_clear_share = float(steady["cache_clear"].sum() / steady["total"].sum()) if "cache_clear" in steady else 0.0
    _shapes(signals, batches)
    return signals


def _epochs(run: Run, batches: pd.DataFrame, steady: pd.DataFrame) -> list[EpochSignal]:
    result = []
    for epoch, group in steady.groupby("epoch", sort=True) if not steady.empty else []:
        everything = batches[batches["epoch"] == epoch]
        first = everything.iloc[0] if len(everything) else None
        gc_share = float(group["gc_s"].sum() / group["total"].sum()) if "gc_s" in group else 0.0
        result.append(EpochSignal(
            epoch=int(epoch),
            batches=len(everything),
            times=summarize(group["total"].to_numpy()),
            phases={p: float(group[p].median()) for p in TIMED if p in group},
            gc_share=gc_share,
            first_wait_s=float(first[DATA_WAIT]) if first is not None else None,
        ))
    _worker_epochs(run, result)
    return result


def _worker_epochs(run: Run, epochs: list[EpochSignal]) -> None:
    workers = run.workers
    if workers.empty or "epoch" not in workers:
        return
    for signal in epochs:
        rows = workers[workers["epoch"] == signal.epoch]
        signal.worker_pids = sorted(int(p) for p in rows["pid"].unique())
        if rows.empty or signal.batches == 0:
            continue
        cpu = rows.assign(cpu=rows["cpu_user"] + rows["cpu_system"]).groupby("pid")["cpu"]
        spent = float((cpu.max() - cpu.min()).sum())
        signal.worker_cpu_per_batch = spent / signal.batches


def _compare_epochs(signals: Signals, steady: pd.DataFrame) -> None:
    """Each later epoch against epoch 1, by median and by mean; the comparison with the
    highest lower confidence bound is the one reported. Medians come first: a run is
    reported by its mean only when the mean shows a slowdown that the median does not."""
    groups = {int(e): g for e, g in steady.groupby("epoch", sort=True)}
    if len(groups) < 2:
        return
    first_epoch = min(groups)
    base = groups[first_epoch]
    candidates = []  # (epoch, statistic, ratio, low, high)
    for epoch, group in groups.items():
        if epoch == first_epoch or len(group) < MIN_BATCHES_TO_COMPARE or len(base) < MIN_BATCHES_TO_COMPARE:
            continue
        for stat in ("median", "mean"):
            candidates.append((epoch, stat, *ratio_ci(base["total"].to_numpy(), group["total"].to_numpy(), stat)))
    if not candidates:
        return
    slow = [c for c in candidates if c[3] > signals.threshold and len(groups[c[0]]) >= MIN_BATCHES_TO_CALL_SLOW]
    pool = [c for c in slow if c[1] == "median"] or slow or [c for c in candidates if c[1] == "median"]
    epoch, stat, ratio, low, high = max(pool, key=lambda c: c[3])
    signals.compared_epoch, signals.ratio_stat, signals.ratio, signals.ratio_ci = epoch, stat, ratio, (low, high)
    later = groups[epoch]
    enough = min(len(base), len(later)) >= MIN_BATCHES_TO_CALL_SLOW
    signals.slowdown = low > signals.threshold and enough
    reduce = pd.Series.median if stat == "median" else pd.Series.mean
    signals.phase_growth = {p: float(reduce(later[p]) - reduce(base[p])) for p in TIMED if p in later}
    total_growth = float(reduce(later["total"]) - reduce(base["total"]))
    top = max(signals.phase_growth, key=signals.phase_growth.get)
    if total_growth > 0 and signals.phase_growth[top] >= 0.3 * total_growth:
        signals.grew = top


def _trend(signals: Signals, steady: pd.DataFrame) -> None:
    signals.time_trend = linear_slope(steady["step"].to_numpy(), steady["total"].to_numpy())
    rises = []
    for _, group in steady.groupby("epoch"):
        quarter = len(group) // 4
        if quarter >= 3:
            totals = group["total"].to_numpy()
            rises.append(np.median(totals[-quarter:]) / np.median(totals[:quarter]))
    signals.within_epoch_rise = float(np.mean(rises)) if rises else None
    if signals.slowdown or (signals.within_epoch_rise or 0) > signals.threshold:
        found = change_point(steady["total"].to_numpy())
        if found is not None:
            row = steady.iloc[found.index]
            signals.change = found
            signals.change_step = int(row["step"])
            signals.change_epoch_batch = (int(row["epoch"]), int(row["batch"]))


def _series_growth(x: np.ndarray, y: np.ndarray) -> dict[str, float] | None:
    keep = np.isfinite(y)
    if keep.sum() < 3:
        return None
    slope = linear_slope(x[keep], y[keep])
    return {"per_batch": slope.per_step, "growth": slope.growth, "t": slope.t, "r2": slope.r2,
            "start": float(y[keep][0]), "end": float(y[keep][-1])}


def _memory(signals: Signals, run: Run, steady: pd.DataFrame) -> None:
    memory: dict[str, Any] = {}
    step = steady["step"].to_numpy(float)
    memory["main_rss"] = _series_growth(step, steady["rss"].to_numpy(float)) if "rss" in steady else None
    memory["python_blocks"] = _series_growth(step, steady["py_blocks"].to_numpy(float)) if "py_blocks" in steady else None
    if "in_use" in steady and steady["in_use"].notna().sum() >= 3:
        memory["main_in_use"] = _series_growth(step, steady["in_use"].to_numpy(float))
    samples = run.memory
    first_steady = int(steady["step"].min())
    if not samples.empty and "step" in samples:
        samples = samples[samples["step"] >= first_steady]
    if not samples.empty and "in_loop" in samples:
        samples = samples[samples["in_loop"].fillna(True).astype(bool)]  # not validation's memory
    if not samples.empty:
        s = samples["step"].to_numpy(float)
        for column, name in [("malloc_in_use", "main_in_use"), ("malloc_free_held", "main_allocator_held"),
                             ("main_uss", "main_uss"), ("workers_uss", "workers_uss"), ("workers_rss", "workers_rss"),
                             ("device_allocated", "device_allocated"), ("device_reserved", "device_reserved"),
                             ("device_current", "device_current"), ("device_driver", "device_driver"),
                             ("live_tensors", "live_tensors"), ("swap_used", "swap_used")]:
            if name not in memory and column in samples and samples[column].notna().sum() >= 3:
                memory[name] = _series_growth(s, samples[column].to_numpy(float))
        for column in ("swap_in", "device_alloc_retries"):
            if column in samples and samples[column].notna().any():
                values = samples[column].dropna().to_numpy(float)
                memory[column] = float(values[-1] - values[0])
        if "sys_available" in samples:
            memory["sys_available_min"] = float(samples["sys_available"].min())
        per_worker = _per_worker_growth(run, first_steady)
        if per_worker:
            memory["per_worker_growth"] = per_worker
    memory["major_faults"] = int(steady["majflt"].sum()) if "majflt" in steady else 0
    signals.memory = {k: v for k, v in memory.items() if v is not None}
    rss = steady["rss"].to_numpy(float) if "rss" in steady else None
    if rss is not None and np.ptp(rss) > 0 and np.ptp(steady["total"].to_numpy()) > 0:
        signals.memory_time_correlation = float(np.corrcoef(rss, steady["total"].to_numpy(float))[0, 1])


def _per_worker_growth(run: Run, first_steady: int) -> dict[int, float]:
    workers = run.workers
    if workers.empty:
        return {}
    column = "uss" if workers["uss"].notna().any() else "rss"
    growth = {}
    for pid, rows in workers[workers["step"] >= first_steady].groupby("pid"):
        values = rows[column].dropna().to_numpy(float)
        if values.size >= 2:
            growth[int(pid)] = float(values[-1] - values[0])
    return growth


def _gc(signals: Signals, steady: pd.DataFrame) -> None:
    if "gc_s" not in steady:
        return
    gc_s = steady["gc_s"].to_numpy(float)
    outliers = mad_outliers(steady["total"].to_numpy(float))
    with_gen2 = steady["gc_gen2"].to_numpy() > 0
    signals.gc = {
        "seconds": float(gc_s.sum()),
        "share": float(gc_s.sum() / steady["total"].sum()),
        "trend": linear_slope(steady["step"].to_numpy(float), gc_s),
        "gen2_collections": int(with_gen2.sum()),
        "outlier_batches": int(outliers.sum()),
        # Of the slowest batches, how many had a generation-2 collection, against the base rate.
        "outliers_with_gen2": int((outliers & with_gen2).sum()),
        "gen2_rate": float(with_gen2.mean()),
        "max_gc_s": float(gc_s.max()),
    }


def _cpu(signals: Signals, run: Run) -> None:
    samples = run.memory
    if samples.empty or "main_cpu_user" not in samples or len(samples) < 2:
        return
    first, last = samples.iloc[0], samples.iloc[-1]
    elapsed = float(last["t"] - first["t"]) or 1.0
    user = float(last["main_cpu_user"] - first["main_cpu_user"])
    system = float(last["main_cpu_system"] - first["main_cpu_system"])
    threads = samples["main_threads"].to_numpy(float)
    workers = run.workers
    worker_threads = workers.groupby("t")["threads"].sum() if not workers.empty else pd.Series(dtype=float)
    cores = run.header.get("environment", {}).get("cpu_count") or 1
    signals.cpu = {
        "cores": cores,
        "system_share": system / (user + system) if user + system > 0 else 0.0,
        "max_threads": int(np.nanmax(threads) + (worker_threads.max() if len(worker_threads) else 0)),
        "involuntary_switches_per_s": float(last["main_ctx_involuntary"] - first["main_ctx_involuntary"]) / elapsed,
        "utilisation": (user + system) / elapsed / cores,
    }


def _shapes(signals: Signals, batches: pd.DataFrame) -> None:
    if "rows" not in batches:
        return
    signals.shapes = {"distinct": int(batches["rows"].nunique())}
