"""What the loop itself does around its compute: clearing caches, and batches of many
shapes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dcnprobe.analysis.signals.epochs import COMPUTE
from dcnprobe.analysis.signals.steady import SteadyBatches


@dataclass(frozen=True)
class CacheClearing:
    """What clearing caches costs: the clear call, and the batch after it, whose forward
    re-fills what was thrown away (allocator blocks, kernels, plans). The second part never
    shows in the 'cache_clear' phase."""

    share: float = 0.0  # the clear calls plus the extra time of the batch after each, of all batch time
    clears: int = 0
    after_s: float | None = None  # extra seconds in the batch after a clear


@dataclass(frozen=True)
class Shapes:
    distinct: int
    new_shape_batches: int | None = None
    new_shape_batch_s: float | None = None  # compute of a batch at a new shape, median
    repeat_shape_batch_s: float | None = None  # compute of a batch at a shape seen before
    new_shape_share: float | None = None  # the new shapes' extra seconds, of all batch time


def cache_clearing(steady: SteadyBatches) -> CacheClearing:
    if steady.empty or "cache_clear" not in steady:
        return CacheClearing()
    total_time = float(steady["total"].sum())
    clear_time = float(steady["cache_clear"].sum())
    compute = [p for p in COMPUTE if p in steady]
    extra, clears = 0.0, 0
    for _, group in steady.epochs():
        cleared = group["cache_clear"].to_numpy(float) > 0
        after = np.roll(cleared, 1)
        after[0] = False  # the first steady batch follows a batch the warm-up dropped
        work = group[compute].sum(axis=1).to_numpy(float)
        normal = ~after  # a batch that clears but follows no clear is a fair baseline (clearing every 2nd batch)
        if after.any() and normal.sum() >= 3:
            extra += float(np.clip(work[after] - np.median(work[normal]), 0, None).sum())
        clears += int(cleared.sum())
    return CacheClearing(share=(clear_time + extra) / total_time if total_time > 0 else 0.0, clears=clears,
                         after_s=extra / clears if clears else None)


def shapes(batches: pd.DataFrame) -> Shapes | None:
    """How many batch shapes the run saw, and what the first batch of each new shape cost
    beyond batches of shapes seen before (a compile or re-plan inside its compute).

    All batches count, warm-up included: a new shape is new wherever it falls; the run's
    very first batch is left out, as it pays every first-time cost whatever its shape.
    Compute phases are compared where recorded (a compile lands there; loader waits are
    noise here), each new-shape batch against the repeat-shape batches of its own epoch,
    so that load that differs between epochs does not pass for a compile."""
    if batches.empty or "rows" not in batches or batches["rows"].isna().all():
        return None
    rows = batches["rows"].to_numpy()
    distinct = int(pd.Series(rows).nunique())
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
        return Shapes(distinct)
    total = float(batches["total"].sum())
    return Shapes(distinct, len(extra), float(np.median(new_work)), float(np.median(baselines)),
                  float(sum(extra) / total) if total > 0 else 0.0)
