"""Causes in the training loop's own code: work that grows with the run, work at a
period, caches thrown away, batches of ever new shapes."""

from __future__ import annotations

from pathlib import Path

from dcnprobe.analysis import thresholds as th
from dcnprobe.analysis.causes.readings import (
    bursts_explain,
    has_workers,
    memory_grows_fast,
    own_code_grew,
    time_grows,
    workers_displace,
)
from dcnprobe.analysis.causes.registry import Finding, cause
from dcnprobe.analysis.causes.wording import mb, ratio_text, shape_text
from dcnprobe.analysis.formatting import format_ratio
from dcnprobe.analysis.signals import Signals


@cause("metric-accumulation",
       sees="time in the loop's own code grows steadily with every step while memory grows little: something "
            "re-processes an ever longer history (AUC over all predictions, a list scanned each step). Named before "
            "the batch as a whole is slow when the loop's own code per batch at least doubles and grows by a tenth "
            "of a batch.",
       fix="keep running sums instead of whole histories, reset metric buffers each epoch, compute expensive metrics "
           "once per epoch (binned or streaming metrics)",
       reference="Lightning-AI/torchmetrics#1461; meta-pytorch/torchrec PR #1656.")
def metric_accumulation(s: Signals, run_dir: Path | None) -> Finding | None:
    """Work per batch grows while memory barely does: something re-processes an ever
    longer history (a metric buffer, a log, a list scanned every step)."""
    slower = time_grows(s)
    own_code = own_code_grew(s)
    if not (slower or own_code) or s.timing.grew == "cache_clear":
        return None
    if memory_grows_fast(s):
        return None  # its signature is work that grows while memory barely does
    if has_workers(s) and (s.timing.grew == "data_wait" or workers_displace(s)):
        return None  # the extra time is the workers' (waited on, or taking the cores): not the loop's own code
    _, per_batch, _ = s.memory.retained()
    if not slower:
        before, after = own_code
        return Finding("metric-accumulation", th.SCORE_METRICS_NOT_YET_SLOW, (
            f"the loop's own code (outside forward, backward and the optimizer: metrics, logging, bookkeeping) grew "
            f"{before * 1000:.0f} -> {after * 1000:.0f} ms per batch ({after / before:.1f}x), though the batch as a whole "
            f"is not slow yet ({ratio_text(s)}): work that grows with the run shows first here",
            f"memory grows little ({mb(per_batch)} per batch): the work per batch grows, not the data",
        ))
    evidence = [f"{shape_text(s)}; {ratio_text(s)}"]
    if s.trend.within_epoch_rise and s.trend.within_epoch_rise > th.WITHIN_EPOCH_RISE:
        evidence.append(f"within an epoch the last quarter is {s.trend.within_epoch_rise:.2f}x the first")
    evidence.append(f"memory grows little ({mb(per_batch)} per batch): the work per batch grows, not the data")
    if s.timing.grew:
        where = {"other": " (the loop's own code outside forward, backward and the optimizer: metrics, logging, "
                          "bookkeeping)",
                 "data_wait": " (the dataset's own code, in the main process)"}.get(s.timing.grew, "")
        evidence.append(f"the time went to '{s.timing.grew}'{where}")
    score = th.SCORE_METRICS_IN_LOOP if s.timing.grew == "other" else th.SCORE_METRICS_ELSEWHERE
    gc_trend = s.gc.trend if s.gc else None
    if (gc_trend is not None and gc_trend.t > th.GC_TREND_T
            and gc_trend.growth > th.GC_EXPLAINS_GROWTH * ((s.timing.phase_growth or {}).get("other") or 0)):
        score -= th.SCORE_GC_EXPLAINS_METRICS  # garbage collection explains much of it: gc-pressure
    return Finding("metric-accumulation", score, tuple(evidence))


@cause("periodic-work",
       sees="slow batches at a regular period (every k batches); the mean batch time moves while the median does "
            "not. Reported with the mean ratio and its interval, and the period per epoch.",
       fix="move evaluation, logging and checkpoints out of the batch loop (once per epoch), or run them every fixed "
           "k batches and compare epochs with the same k",
       reference="a common user bug; Lightning-AI/pytorch-lightning#17725 for logging.")
def periodic_work(s: Signals, run_dir: Path | None) -> Finding | None:
    """Every k batches something else runs inside the loop (evaluation, logging, a
    checkpoint): spikes at a period. The median hardly moves; the mean does."""
    if s.contention_explains or not bursts_explain(s):
        return None
    _, later = s.first_and_compared
    workers = len(later.worker_pids or ())
    if workers and s.timing.grew == "data_wait" and later.bursts.period % workers == 0:
        return None  # one wait per round of the DataLoader's workers: each worker got slower, not the loop
    b = later.bursts
    periods = ", ".join(f"epoch {e.epoch}: " + (f"every {e.bursts.period} batches" if e.bursts.period else
                                                 f"{e.bursts.count} slow batches")
                        for e in s.epochs if e.bursts is not None)
    evidence = [
        f"every {b.period} batches one batch takes {b.burst_s * 1000:.0f} ms against a median of "
        f"{later.times.median * 1000:.0f} ms: {b.count} of {later.batches} batches ({b.share:.0%}), "
        f"{b.time_share:.0%} of epoch {later.epoch}'s time",
        f"the period per epoch: {periods}",
    ]
    ratios = s.timing.ratios or {}
    mean, median = ratios.get("mean"), ratios.get("median")
    if mean and median:
        evidence.append(f"the mean batch time moved {format_ratio(*mean, s.timing.confidence)} while the median moved "
                        f"{format_ratio(*median, s.timing.confidence)}: bursts on an unchanged level")
    return Finding("periodic-work", th.SCORE_PERIODIC, tuple(evidence))


@cause("cache-clearing-cost",
       sees="clearing caches costs a share of batch time: the clear call, and above all the batch after each clear, "
            "whose forward re-fills what was thrown away.",
       fix="clear caches once per epoch (cache_clear=epoch), not every batch",
       reference="pytorch/pytorch PR #165522.")
def cache_clearing_cost(s: Signals, run_dir: Path | None) -> Finding | None:
    cache = s.cache
    if cache.share < th.CACHE_CLEAR_SHARE:
        return None
    evidence = [f"clearing caches costs {cache.share:.0%} of batch time, the clear calls and the batch after each "
                "clear together"]
    if cache.after_s:
        evidence.append(f"the batch after each of the {cache.clears} clears spends +{cache.after_s * 1000:.0f} ms more "
                        "in compute: its forward re-fills what the clear threw away (the cost is not in the clear call)")
    elif cache.clears >= sum(e.batches for e in s.epochs) // 2:
        # Every batch (or nearly) follows a clear: no batch is left to compare with, so the
        # forward's share of the cost cannot be told apart within this run.
        evidence.append("nearly every batch follows a clear, so what the next forward pays to re-fill cannot be "
                        "measured in this run, only the clear calls: compare with a run that clears once per epoch")
    evidence.append("clearing per batch throws away what the allocator would reuse next batch; clear once per epoch")
    return Finding("cache-clearing-cost", min(1.0, th.SCORE_CACHE_CLEAR_BASE + 2 * cache.share), tuple(evidence))


@cause("shape-cache",
       sees="many distinct batch shapes (from each batch's `rows`, which the built-in trainer records; your loop can "
            "pass `rows=` to `Probe.end_batch`); named with confidence when the first batch of each new shape spends "
            "at least twice the compute (forward, backward, optimizer) of a batch of a shape seen before in the same "
            "epoch and those spikes are 5% of batch time (a graph compiled per shape); on MPS, driver memory and RSS "
            "grow with the number of shapes.",
       fix="bucket or pad batches to a few fixed shapes",
       reference="pytorch/pytorch#2759 (cudnn.benchmark); pytorch/pytorch#77753, #181213 (MPS graph cache).")
def shape_cache(s: Signals, run_dir: Path | None) -> Finding | None:
    """Many batch shapes; named with confidence when the first batch of each new shape is
    the slow one (a graph compiled or a plan made per shape, then cached)."""
    shapes = s.shapes
    if shapes is None or shapes.distinct < th.DISTINCT_SHAPES:
        return None
    evidence = [f"{shapes.distinct} distinct batch shapes: each new shape recompiles or re-plans"]
    new_s, repeat_s = shapes.new_shape_batch_s, shapes.repeat_shape_batch_s
    spikes = (new_s is not None and repeat_s and new_s >= th.NEW_SHAPE_SLOWER * repeat_s
              and shapes.new_shape_share >= th.NEW_SHAPE_TIME_SHARE and not s.contention_explains)
    if spikes:
        evidence.append(f"the first batch of each of {shapes.new_shape_batches} new shapes spent {new_s:.2f} s in "
                        f"compute (median) against {repeat_s:.2f} s for a shape seen before: "
                        f"{shapes.new_shape_share:.0%} of batch time went to new shapes")
        if s.timing.ratio is not None:
            evidence.append(ratio_text(s))
    return Finding("shape-cache", th.SCORE_SHAPES_SPIKES if spikes else th.SCORE_SHAPES, tuple(evidence))
