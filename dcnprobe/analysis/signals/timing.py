"""Timing signals: is a later epoch slower than epoch 1 (ratio, interval, which phase
grew), did other processes' load change between them (contention), and how the batch
time moved within the run (trend, change point)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dcnprobe.analysis import thresholds as th
from dcnprobe.analysis.signals.epochs import TIMED, EpochSignal
from dcnprobe.analysis.signals.steady import SteadyBatches
from dcnprobe.analysis.stats import ChangePoint, Slope, change_point, linear_slope
from dcnprobe.ratios import ratio_ci

Interval = tuple[float, float, float]  # (ratio, low, high)


@dataclass(frozen=True)
class Timing:
    """The compared epoch against epoch 1 (the later epoch whose interval's low end is highest)."""

    threshold: float
    confidence: float = th.CONFIDENCE
    compared_epoch: int | None = None
    ratio: float | None = None  # of the statistic in ratio_stat
    ratio_ci: tuple[float, float] | None = None
    ratio_stat: str = "median"  # "mean" when the mean moved and the median did not (bursty batches)
    ratios: dict[str, Interval] | None = None  # statistic -> (ratio, low, high) for the compared epoch
    slow_by_interval: bool = False  # the whole interval above the threshold, with enough batches
    phase_growth: dict[str, float] | None = None  # seconds per batch (ratio_stat), compared epoch - epoch 1
    grew: str | None = None  # the phase that took most of the extra time
    batch_seconds: float | None = None  # steady median over the run


@dataclass(frozen=True)
class Contention:
    """Other processes' CPU load per epoch, and whether it, not the run, explains the timing.

    A run that wants every core gets (1 - load) of them; going from load o1 to o2 makes it
    at least (1 - o1) / (1 - o2) times slower with no change in its code, and synchronised
    intra-op threads lose far more than that fair share."""

    outside_load: dict[int, float]  # epoch -> share of all cores used by other processes
    contended: bool = False  # outside load differed between the epochs compared, or explains the ratio
    contention_ratio: float | None = None  # the slowdown the change in outside load alone would cause


@dataclass(frozen=True)
class Trend:
    time_trend: Slope | None = None  # batch total against step, steady batches
    within_epoch_rise: float | None = None  # last-quarter / first-quarter median, averaged over epochs
    change: ChangePoint | None = None
    change_step: int | None = None
    change_epoch_batch: tuple[int, int] | None = None
    change_stayed: bool = False  # after the change, the run's last quarter is still away from the earlier level


def compare_epochs(steady: SteadyBatches, threshold: float) -> Timing:
    """Each later epoch against epoch 1, by median and by mean. The median is reported,
    unless the mean moved where the median did not (bursts: in-loop evaluation, logging,
    a loader that delivers in lumps): then the mean, with its interval, even when that
    interval reaches below the threshold. Among epochs, the one with the highest lower bound."""
    if steady.empty:
        return Timing(threshold)
    batch_seconds = float(steady["total"].median())
    groups = dict(steady.epochs())
    first_epoch = min(groups)
    base = groups[first_epoch]
    by_epoch: dict[int, dict[str, Interval]] = {}
    for epoch, group in groups.items():
        if epoch == first_epoch or min(len(group), len(base)) < th.MIN_BATCHES_TO_COMPARE:
            continue
        by_epoch[epoch] = {stat: ratio_ci(base["total"].to_numpy(), group["total"].to_numpy(), stat, th.CONFIDENCE)
                           for stat in ("median", "mean")}
    if not by_epoch:
        return Timing(threshold, batch_seconds=batch_seconds)

    def reported(epoch: int) -> str:
        median, mean = by_epoch[epoch]["median"], by_epoch[epoch]["mean"]
        median_slow = median[1] > threshold
        mean_moved = mean[1] > th.MEAN_MOVES_LOW and mean[0] - median[0] >= th.MEAN_MOVES_BY
        return "mean" if mean_moved and not median_slow else "median"

    epoch = max(by_epoch, key=lambda e: by_epoch[e][reported(e)][1])
    stat = reported(epoch)
    ratio, low, high = by_epoch[epoch][stat]
    later = groups[epoch]
    enough = min(len(base), len(later)) >= th.MIN_BATCHES_TO_CALL_SLOW
    reduce = pd.Series.median if stat == "median" else pd.Series.mean
    growth = {p: float(reduce(later[p]) - reduce(base[p])) for p in TIMED if p in later}
    total_growth = float(reduce(later["total"]) - reduce(base["total"]))
    top = max(growth, key=growth.get) if growth else None
    grew = top if top is not None and total_growth > 0 and growth[top] >= 0.3 * total_growth else None
    return Timing(threshold, th.CONFIDENCE, epoch, ratio, (low, high), stat, by_epoch[epoch],
                  low > threshold and enough, growth, grew, batch_seconds)


def contention(epochs: tuple[EpochSignal, ...], timing: Timing) -> Contention:
    loads = {e.epoch: e.outside_load for e in epochs if e.outside_load is not None}
    if timing.compared_epoch is None or not epochs:
        return Contention(loads)
    first, later = loads.get(epochs[0].epoch), loads.get(timing.compared_epoch)
    if first is None or later is None:
        return Contention(loads)
    shift = later - first
    fair_share = (1 - first) / max(1 - later, 0.05)
    if shift > 0 and timing.ratio_ci is not None and timing.ratio_ci[1] < timing.threshold:
        # More outside load in the later epoch can only have made it slower: an epoch
        # that is clearly not slow even so is healthy, whatever the load did. (Bisect
        # reran such trials as contended, a trial's worth of batches each time.)
        return Contention(loads, False, fair_share)
    very_different = abs(shift) >= th.OUTSIDE_LOAD_SHIFT
    explains = shift >= th.OUTSIDE_LOAD_MIN_SHIFT and timing.ratio <= fair_share * th.CONTENTION_SLACK
    # Contended timings say nothing about the code, however large the ratio: measured on
    # 2 cores, one busy-loop on one core made a clean loop's barrier-synchronised intra-op
    # threads 30-65x slower, far beyond any fair-share bound. Rerun, don't judge.
    return Contention(loads, very_different or explains, fair_share)


def trend(steady: SteadyBatches, timing: Timing) -> Trend:
    if steady.empty:
        return Trend()
    time_trend = linear_slope(steady["step"].to_numpy(), steady["total"].to_numpy())
    rises = []
    for _, group in steady.epochs():
        quarter = len(group) // 4
        if quarter >= 3:
            totals = group["total"].to_numpy()
            rises.append(np.median(totals[-quarter:]) / np.median(totals[:quarter]))
    within = float(np.mean(rises)) if rises else None
    if not (timing.slow_by_interval or (within or 0) > timing.threshold):
        return Trend(time_trend, within)
    totals = steady["total"].to_numpy()
    found = change_point(totals)
    if found is None:
        return Trend(time_trend, within)
    row = steady.row(found.index)
    # "Stayed up" (or down) only if the end of the run is still on the far side.
    tail = float(np.median(totals[-max(len(totals) // 4, 1):]))
    stayed = tail > found.before * th.STAYED_UP if found.direction == "up" else tail < found.before / th.STAYED_UP
    return Trend(time_trend, within, found, int(row["step"]), (int(row["epoch"]), int(row["batch"])), stayed)
