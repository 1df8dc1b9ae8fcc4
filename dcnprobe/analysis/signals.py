"""The measurements of one run, reduced to the signals that causes are judged on.

This module only measures; dcnprobe.analysis.causes decides what the signals mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dcnprobe.analysis import thresholds as th
from dcnprobe.analysis.stats import (
    Bursts,
    ChangePoint,
    Slope,
    Summary,
    change_point,
    linear_slope,
    mad_outliers,
    periodic_bursts,
    ratio_ci,
    summarize,
    warmup_batches,
)
from dcnprobe.hooks import DATA_WAIT, PHASES
from dcnprobe.machine_load import outside_share
from dcnprobe.records import Run

TIMED = (DATA_WAIT, *PHASES, "other")
COMPUTE = ("forward", "backward", "optimizer")
MIN_BATCHES_TO_COMPARE = th.MIN_BATCHES_TO_COMPARE
MIN_BATCHES_TO_CALL_SLOW = th.MIN_BATCHES_TO_CALL_SLOW


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
    between_epochs_s: float | None = None  # previous epoch's last batch end to this epoch's first batch start
    bursts: Bursts | None = None  # slow batches in this epoch and their period
    # From the background samples (None where the records lack them):
    threads: int | None = None  # threads alive, main process + workers (median sample of the epoch)
    system_share: float | None = None  # kernel share of the run's CPU time (main + workers)
    involuntary_per_s: float | None = None  # involuntary context switches per second, main + workers
    cpu_seconds: float | None = None  # the run's own CPU time (main + workers)
    utilisation: float | None = None  # the run's own CPU over wall time and all cores
    outside_load: float | None = None  # share of all cores busy with other processes' work
    open_fds: int | None = None  # open file descriptors, main + workers (median sample of the epoch)
    cpu_freq_mhz: float | None = None  # median CPU clock


@dataclass
class Signals:
    status: str
    threshold: float
    epochs: list[EpochSignal]
    ratio: float | None = None  # worst later epoch over epoch 1, of the statistic in ratio_stat
    ratio_ci: tuple[float, float] | None = None
    ratio_stat: str = "median"  # "mean" when the mean moved and the median did not (bursty batches)
    ratios: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # compared epoch: stat -> (r, low, high)
    confidence: float = th.CONFIDENCE
    compared_epoch: int | None = None
    slowdown: bool = False  # a slowdown of the run's own making: never one that other processes' load explains
    outside_load: dict[int, float] = field(default_factory=dict)  # epoch -> share of all cores used by other processes
    contended: bool = False  # outside load differed between the epochs compared, or explains the ratio
    contention_ratio: float | None = None  # the slowdown the change in outside load alone would cause
    measured_slowdown: bool = False  # slow by the interval alone, before outside load is accounted for
    time_trend: Slope | None = None  # batch total against step, steady batches
    within_epoch_rise: float | None = None  # last-quarter / first-quarter median, averaged over epochs
    phase_growth: dict[str, float] = field(default_factory=dict)  # seconds per batch (ratio_stat), compared epoch - epoch 1
    grew: str | None = None
    change: ChangePoint | None = None
    change_step: int | None = None
    change_epoch_batch: tuple[int, int] | None = None
    change_stayed: bool = False  # after the change, the run's last quarter is still away from the earlier level
    memory: dict[str, Any] = field(default_factory=dict)
    gc: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    memory_time_correlation: float | None = None
    stalls: list[dict[str, Any]] = field(default_factory=list)
    cache_clear_share: float = 0.0  # the clear calls plus the extra time of the batch after each clear
    cache_clear_after_s: float | None = None  # extra seconds in the batch after a clear (its forward re-fills caches)
    cache_clears: int = 0
    fds: dict[str, int] = field(default_factory=dict)  # open descriptors, main + workers: start, end, growth
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


def measure(run: Run, threshold: float = th.DEFAULT_THRESHOLD) -> Signals:
    batches = run.batches.sort_values("step") if not run.batches.empty else run.batches
    steady = steady_batches(batches)
    signals = Signals(status=run.status, threshold=threshold, epochs=_epochs(run, batches, steady), stalls=run.stalls)
    if steady.empty:
        return signals
    signals.batch_seconds = float(steady["total"].median())
    _compare_epochs(signals, steady)
    _contention(signals)
    _trend(signals, steady)
    _memory(signals, run, steady)
    _gc(signals, run, steady)
    _cpu(signals, run)
    _cache_clearing(signals, steady)
    _shapes(signals, batches)
    return signals


def _epochs(run: Run, batches: pd.DataFrame, steady: pd.DataFrame) -> list[EpochSignal]:
    result = []
    previous_end = None
    for epoch, group in steady.groupby("epoch", sort=True) if not steady.empty else []:
        everything = batches[batches["epoch"] == epoch]
        first = everything.iloc[0] if len(everything) else None
        gc_share = float(group["gc_s"].sum() / group["total"].sum()) if "gc_s" in group else 0.0
        between = None
        if first is not None and previous_end is not None and "t" in everything:
            # Validation, checkpoints, loop_end bookkeeping and the next iterator's set-up
            # before its timer starts: the cost of an epoch's end and the next one's start.
            between = max(0.0, float(first["t"] - first["total"]) - previous_end)
        previous_end = float(everything.iloc[-1]["t"]) if len(everything) and "t" in everything else None
        result.append(EpochSignal(
            epoch=int(epoch),
            batches=len(everything),
            times=summarize(group["total"].to_numpy()),
            phases={p: float(group[p].median()) for p in TIMED if p in group},
            gc_share=gc_share,
            first_wait_s=float(first[DATA_WAIT]) if first is not None else None,
            between_epochs_s=between,
            bursts=periodic_bursts(group["total"].to_numpy(float), group["batch"].to_numpy()),
        ))
    _worker_epochs(run, result)
    _sampled_epochs(run, result)
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


def _sampled_epochs(run: Run, epochs: list[EpochSignal]) -> None:
    """Per-epoch CPU, threads, switches, descriptors, clock and outside load from the
    background samples. Each interval between two samples belongs to the epoch of the
    later one, so the epochs' intervals add up to the whole run."""
    samples = run.memory
    if samples.empty or "t" not in samples or "main_cpu_user" not in samples:
        return
    cores = run.header.get("environment", {}).get("cpu_count") or 1
    workers_at = {t: rows.to_dict("records") for t, rows in run.workers.groupby("t")} if not run.workers.empty else {}
    totals: dict[int, dict[str, Any]] = {}
    previous = None
    previous_workers: dict[int, dict[str, Any]] = {}
    for sample in samples.sort_values("t").to_dict("records"):
        workers = {int(w["pid"]): w for w in workers_at.get(sample["t"], [])}
        epoch = sample.get("epoch")
        if previous is not None and epoch is not None and not pd.isna(epoch):
            acc = totals.setdefault(int(epoch), {"wall": 0.0, "user": 0.0, "system": 0.0, "involuntary": 0.0,
                                                 "busy": 0.0, "busy_own": 0.0, "busy_wall": 0.0,
                                                 "threads": [], "fds": [], "freq": []})
            wall = float(sample["t"] - previous["t"])
            user = _delta(sample, previous, "main_cpu_user")
            system = _delta(sample, previous, "main_cpu_system")
            involuntary = _delta(sample, previous, "main_ctx_involuntary")
            for pid, w in workers.items():
                before = previous_workers.get(pid, {})  # a worker born since: all its CPU is new
                user += _delta(w, before, "cpu_user")
                system += _delta(w, before, "cpu_system")
                involuntary += _delta(w, before, "ctx_involuntary")
            # Workers that ended since the last sample: their whole life's CPU arrives in the
            # main process's reaped-children figure, of which the part already counted (up to
            # their last sample) is taken off. Not a clamp per interval: a worker seen gone
            # before it is reaped is made up in the next interval of the same epoch.
            reaped = _delta(sample, previous, "main_cpu_children", missing=None)
            if reaped is not None:
                counted = sum(_number(w.get("cpu_user")) + _number(w.get("cpu_system"))
                              for pid, w in previous_workers.items() if pid not in workers)
                user += reaped - counted
            acc["wall"] += wall
            acc["user"] += user
            acc["system"] += system
            acc["involuntary"] += involuntary
            busy = _delta(sample, previous, "machine_busy_s", missing=None)
            if busy is not None:
                acc["busy"] += busy
                acc["busy_own"] += user + system
                acc["busy_wall"] += wall
            acc["threads"].append(_number(sample.get("main_threads")) + sum(_number(w.get("threads")) for w in workers.values()))
            if _present(sample.get("main_fds")):
                acc["fds"].append(_number(sample.get("main_fds")) + sum(_number(w.get("fds")) for w in workers.values()))
            if _present(sample.get("cpu_freq_mhz")):
                acc["freq"].append(float(sample["cpu_freq_mhz"]))
        previous, previous_workers = sample, workers
    for signal in epochs:
        acc = totals.get(signal.epoch)
        if acc is None or acc["wall"] <= 0:
            continue
        cpu = acc["user"] + acc["system"]
        signal.cpu_seconds = cpu
        signal.utilisation = cpu / acc["wall"] / cores
        signal.system_share = acc["system"] / cpu if cpu > 0 else None
        signal.involuntary_per_s = acc["involuntary"] / acc["wall"]
        # The epoch's typical sample, not its largest: non-persistent workers overlap their
        # successors for a moment at an epoch's start (twice the threads and descriptors,
        # none of them kept).
        signal.threads = int(np.median(acc["threads"])) if acc["threads"] else None
        signal.open_fds = int(np.median(acc["fds"])) if acc["fds"] else None
        signal.cpu_freq_mhz = float(np.median(acc["freq"])) if acc["freq"] else None
        if acc["busy_wall"] > 0:
            signal.outside_load = outside_share(acc["busy"], acc["busy_own"], acc["busy_wall"], cores)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def _number(value: Any) -> float:
    return float(value) if _present(value) else 0.0


def _delta(now: dict[str, Any], before: dict[str, Any], key: str, missing: float | None = 0.0) -> float | None:
    if not _present(now.get(key)):
        return missing
    if not _present(before.get(key)):
        return float(now[key]) if missing is not None else None
    return max(0.0, float(now[key]) - float(before[key]))  # counters only rise; a reset is not negative work


def _compare_epochs(signals: Signals, steady: pd.DataFrame) -> None:
    """Each later epoch against epoch 1, by median and by mean. The median is reported,
    unless the mean moved where the median did not (bursts: in-loop evaluation, logging,
    a loader that delivers in lumps): then the mean, with its interval, even when that
    interval reaches below the threshold. Among epochs, the one with the highest lower bound."""
    groups = {int(e): g for e, g in steady.groupby("epoch", sort=True)}
    if len(groups) < 2:
        return
    first_epoch = min(groups)
    base = groups[first_epoch]
    by_epoch: dict[int, dict[str, tuple[float, float, float]]] = {}
    for epoch, group in groups.items():
        if epoch == first_epoch or len(group) < MIN_BATCHES_TO_COMPARE or len(base) < MIN_BATCHES_TO_COMPARE:
            continue
        by_epoch[epoch] = {stat: ratio_ci(base["total"].to_numpy(), group["total"].to_numpy(), stat, signals.confidence)
                           for stat in ("median", "mean")}
    if not by_epoch:
        return

    def reported(epoch: int) -> str:
        median, mean = by_epoch[epoch]["median"], by_epoch[epoch]["mean"]
        median_slow = median[1] > signals.threshold
        mean_moved = mean[1] > th.MEAN_MOVES_LOW and mean[0] - median[0] >= th.MEAN_MOVES_BY
        return "mean" if mean_moved and not median_slow else "median"

    epoch = max(by_epoch, key=lambda e: by_epoch[e][reported(e)][1])
    stat = reported(epoch)
    ratio, low, high = by_epoch[epoch][stat]
    signals.compared_epoch, signals.ratio_stat, signals.ratio, signals.ratio_ci = epoch, stat, ratio, (low, high)
    signals.ratios = by_epoch[epoch]
    later = groups[epoch]
    enough = min(len(base), len(later)) >= MIN_BATCHES_TO_CALL_SLOW
    signals.slowdown = signals.measured_slowdown = low > signals.threshold and enough
    reduce = pd.Series.median if stat == "median" else pd.Series.mean
    signals.phase_growth = {p: float(reduce(later[p]) - reduce(base[p])) for p in TIMED if p in later}
    total_growth = float(reduce(later["total"]) - reduce(base["total"]))
    top = max(signals.phase_growth, key=signals.phase_growth.get)
    if total_growth > 0 and signals.phase_growth[top] >= 0.3 * total_growth:
        signals.grew = top


def _contention(signals: Signals) -> None:
    """Other processes' CPU load per epoch, and whether it, not the run, explains the ratio.

    A run that wants every core gets (1 - load) of them; going from load o1 to o2 makes
    it at least (1 - o1) / (1 - o2) times slower with no change in its code, and
    synchronised intra-op threads lose far more than that fair share. A contended run is
    never called slow."""
    signals.outside_load = {e.epoch: e.outside_load for e in signals.epochs if e.outside_load is not None}
    if signals.compared_epoch is None or not signals.epochs:
        return
    first = signals.outside_load.get(signals.epochs[0].epoch)
    later = signals.outside_load.get(signals.compared_epoch)
    if first is None or later is None:
        return
    shift = later - first
    signals.contention_ratio = (1 - first) / max(1 - later, 0.05)
    very_different = abs(shift) >= th.OUTSIDE_LOAD_SHIFT
    explains = shift >= th.OUTSIDE_LOAD_MIN_SHIFT and signals.ratio <= signals.contention_ratio * th.CONTENTION_SLACK
    signals.contended = very_different or explains
    # Contended timings say nothing about the code, however large the ratio: measured on
    # 2 cores, one busy-loop on one core made a clean loop's barrier-synchronised intra-op
    # threads 30-65x slower, far beyond any fair-share bound. Rerun, don't judge.
    if signals.contended:
        signals.slowdown = False


def _trend(signals: Signals, steady: pd.DataFrame) -> None:
    signals.time_trend = linear_slope(steady["step"].to_numpy(), steady["total"].to_numpy())
    rises = []
    for _, group in steady.groupby("epoch"):
        quarter = len(group) // 4
        if quarter >= 3:
            totals = group["total"].to_numpy()
            rises.append(np.median(totals[-quarter:]) / np.median(totals[:quarter]))
    signals.within_epoch_rise = float(np.mean(rises)) if rises else None
    if signals.measured_slowdown or (signals.within_epoch_rise or 0) > signals.threshold:
        totals = steady["total"].to_numpy()
        found = change_point(totals)
        if found is not None:
            row = steady.iloc[found.index]
            signals.change = found
            signals.change_step = int(row["step"])
            signals.change_epoch_batch = (int(row["epoch"]), int(row["batch"]))
            # "Stayed up" (or down) only if the end of the run is still on the far side.
            tail = float(np.median(totals[-max(len(totals) // 4, 1):]))
            if found.direction == "up":
                signals.change_stayed = tail > found.before * th.STAYED_UP
            else:
                signals.change_stayed = tail < found.before / th.STAYED_UP


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
        per_worker = _per_worker_growth(run, steady)
        if per_worker:
            memory["per_worker_growth"] = per_worker
    memory["major_faults"] = int(steady["majflt"].sum()) if "majflt" in steady else 0
    signals.memory = {k: v for k, v in memory.items() if v is not None}
    rss = steady["rss"].to_numpy(float) if "rss" in steady else None
    if rss is not None and np.ptp(rss) > 0 and np.ptp(steady["total"].to_numpy()) > 0:
        signals.memory_time_correlation = float(np.corrcoef(rss, steady["total"].to_numpy(float))[0, 1])


def _per_worker_growth(run: Run, steady: pd.DataFrame) -> dict[int, float]:
    """Each worker's growth from the end of the warm-up of the epoch it was born in: a
    worker started in a later epoch (not persistent) is measured once it serves batches,
    not while it imports and unpickles (a spawned worker's start is hundreds of MB)."""
    workers = run.workers
    if workers.empty:
        return {}
    column = "uss" if workers["uss"].notna().any() else "rss"
    steady_from = steady.groupby("epoch")["step"].min().to_dict()
    first_steady = int(steady["step"].min())
    growth = {}
    for pid, rows in workers.groupby("pid"):
        born = rows["epoch"].dropna().min() if "epoch" in rows else None
        start = steady_from.get(born, first_steady) if born is not None and not pd.isna(born) else first_steady
        values = rows[rows["step"] >= start][column].dropna().to_numpy(float)
        if values.size >= 2:
            growth[int(pid)] = float(values[-1] - values[0])
    return growth


def _gc(signals: Signals, run: Run, steady: pd.DataFrame) -> None:
    if "gc_s" not in steady:
        return
    collections = {}
    samples = run.memory
    for generation in range(3):  # from the collector's own counters, where the sampler read them
        column = f"gc_count_{generation}"
        if not samples.empty and column in samples and samples[column].notna().sum() >= 2:
            values = samples[column].dropna().to_numpy(float)
            collections[generation] = int(values[-1] - values[0])
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
        # Collections per generation over the run (None: not recorded). Generation 2 never
        # running while the heap grows is a collector switched off or starved.
        "gen0_runs": collections.get(0),
        "gen2_runs": collections.get(2, int(with_gen2.sum())),
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
    fds = [e.open_fds for e in signals.epochs if e.open_fds is not None]
    if fds:
        signals.fds = {"start": fds[0], "end": fds[-1], "growth": fds[-1] - fds[0]}
    signals.cpu = {
        "cores": cores,
        "system_share": system / (user + system) if user + system > 0 else 0.0,
        "max_threads": int(np.nanmax(threads) + (worker_threads.max() if len(worker_threads) else 0)),
        "involuntary_switches_per_s": float(last["main_ctx_involuntary"] - first["main_ctx_involuntary"]) / elapsed,
        "utilisation": (user + system) / elapsed / cores,
    }


def _cache_clearing(signals: Signals, steady: pd.DataFrame) -> None:
    """What clearing caches costs: the clear call, and the batch after it, whose forward
    re-fills what was thrown away (allocator blocks, kernels, plans). The second part
    never shows in the 'cache_clear' phase."""
    if "cache_clear" not in steady:
        return
    total_time = float(steady["total"].sum())
    clear_time = float(steady["cache_clear"].sum())
    compute = steady[[p for p in COMPUTE if p in steady]].sum(axis=1)
    extra = 0.0
    for _, group in steady.groupby("epoch", sort=True):
        cleared = group["cache_clear"].to_numpy(float) > 0
        after = np.roll(cleared, 1)
        after[0] = False  # the first steady batch follows a batch the warm-up dropped
        work = compute.loc[group.index].to_numpy(float)
        normal = ~after  # a batch that clears but follows no clear is a fair baseline (clearing every 2nd batch)
        if after.any() and normal.sum() >= 3:
            extra += float(np.clip(work[after] - np.median(work[normal]), 0, None).sum())
        signals.cache_clears += int(cleared.sum())
    if signals.cache_clears:
        signals.cache_clear_after_s = extra / signals.cache_clears
    signals.cache_clear_share = (clear_time + extra) / total_time if total_time > 0 else 0.0


def _shapes(signals: Signals, batches: pd.DataFrame) -> None:
    """How many batch shapes the run saw, and what the first batch of each new shape cost
    beyond batches of shapes seen before (a compile or re-plan inside its compute).

    All batches count, warm-up included: a new shape is new wherever it falls; the run's
    very first batch is left out, as it pays every first-time cost whatever its shape.
    Compute phases are compared where recorded (a compile lands there; loader waits are
    noise here), each new-shape batch against the repeat-shape batches of its own epoch,
    so that load that differs between epochs does not pass for a compile."""
    if "rows" not in batches or batches["rows"].isna().all():
        return
    rows = batches["rows"].to_numpy()
    signals.shapes = {"distinct": int(pd.Series(rows).nunique())}
    phases = [p for p in COMPUTE if p in batches]
    work = batches[phases].sum(axis=1).to_numpy(float) if phases else batches["total"].to_numpy(float)
    first_seen = ~pd.Series(rows).duplicated().to_numpy()
    first_seen[0] = False
    repeat = ~first_seen
    repeat[0] = False
    epochs = batches["epoch"].to_numpy()
    extra, new_work, baselines = [], [], []
    for index in np.flatnonzero(first_seen):
        same_epoch = repeat & (epochs == epochs[index])
        base = work[same_epoch] if same_epoch.sum() >= 3 else work[repeat]
        if base.size < 3:
            continue
        baseline = float(np.median(base))
        new_work.append(work[index])
        baselines.append(baseline)
        extra.append(max(work[index] - baseline, 0.0))
    if not extra:
        return
    total = float(batches["total"].sum())
    signals.shapes.update({
        "new_shape_batches": len(extra),
        "new_shape_batch_s": float(np.median(new_work)),  # compute of a batch at a new shape, median
        "repeat_shape_batch_s": float(np.median(baselines)),  # compute of a batch at a shape seen before
        "new_shape_share": float(sum(extra) / total) if total > 0 else 0.0,  # of all batch time
    })
