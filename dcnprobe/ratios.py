"""Is a later epoch slower than epoch 1, and how sure is that: the warm-up rule, the
bootstrap interval of a ratio of medians (or means), and the default threshold.

Shared by everything that compares epochs: the analysis of a finished run, the harness's
early stop and the probe's live warning (dcnprobe.slowdown), the benchmarks' epoch gate.
It sits at the bottom of the layers (numpy only), so that the probed process can use it
without loading the analysis. Everything is deterministic (bootstrap with a fixed seed).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLD = 1.2  # later/first epoch batch time; below 1.2x, run-to-run noise and warm-up effects on 2 cores
CONFIDENCE = 0.95  # of the bootstrap interval a verdict quotes
BOOTSTRAP_SAMPLES = 2000
MAX_BOOTSTRAP_BATCHES = 4096  # per epoch resampled: beyond, an even spread of this many
BOOTSTRAP_BLOCK_VALUES = 1 << 20  # resampled values held at once (8 MB; the draws are the same whatever the block)
WARMUP_FRACTION = 20  # drop 1/20 of each epoch's batches at its start (allocator, caches, worker start)...
WARMUP_MIN, WARMUP_MAX = 2, 10  # ... at least 2, at most 10 batches
WARMUP_NONE_BELOW = 7  # epochs of 6 batches or fewer keep every batch: nothing would be left


def warmup_batches(n: int) -> int:
    """Batches dropped at the start of an epoch: allocator and cache warm-up, worker start.
    The one warm-up rule: the analysis, the harness's early stop and the benchmarks' epoch
    ratio all drop these."""
    return int(min(WARMUP_MAX, max(WARMUP_MIN, n // WARMUP_FRACTION))) if n >= WARMUP_NONE_BELOW else 0


def percentile(values, q: float) -> float:
    """The one percentile definition (numpy's default, linear interpolation between the
    two nearest ranks): it moves smoothly as batches are added, where picking an index
    jumps by a whole batch and disagrees with np.percentile on small epochs."""
    values = np.asarray(values, dtype=float)
    return float(np.percentile(values, q)) if values.size else float("nan")


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p90: float
    max: float
    mean: float


def summarize(values: np.ndarray) -> Summary:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan)
    return Summary(int(values.size), float(np.median(values)), percentile(values, 90),
                   float(values.max()), float(values.mean()))


def ratio_ci(baseline: np.ndarray, later: np.ndarray, statistic: str = "median", confidence: float = CONFIDENCE,
             samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """statistic(later) / statistic(baseline), statistic 'median' or 'mean', with a
    percentile-bootstrap confidence interval. The median ignores rare long batches; the
    mean counts them, which matters when a slowdown arrives in bursts (a loader that
    delivers three batches at once, then makes the loop wait). The two samples are
    resampled independently; returns (ratio, low, high).

    The ratio is of every batch. An epoch of more than MAX_BOOTSTRAP_BATCHES is resampled
    from that many batches spread evenly over it: a somewhat wider interval (never a
    narrower one) at a bounded cost, where 50,000-batch epochs would need gigabytes."""
    reduce = {"median": np.median, "mean": np.mean}[statistic]
    baseline = np.asarray(baseline, dtype=float)
    later = np.asarray(later, dtype=float)
    ratio = float(reduce(later) / reduce(baseline))
    base_stats, after_baseline = _baseline_draws(_spread(baseline).tobytes(), statistic, samples, seed)
    rng = copy.deepcopy(after_baseline)  # the cached generator stays where the baseline left it
    later_stats = _bootstrap(_spread(later), reduce, samples, rng)
    low, high = percentile_interval(later_stats / base_stats, confidence)
    return ratio, low, high


def _spread(values: np.ndarray) -> np.ndarray:
    if values.size <= MAX_BOOTSTRAP_BATCHES:
        return values
    return values[np.linspace(0, values.size - 1, MAX_BOOTSTRAP_BATCHES).round().astype(int)]


@functools.lru_cache(maxsize=8)
def _baseline_draws(baseline: bytes, statistic: str, samples: int, seed: int) -> tuple[np.ndarray, np.random.Generator]:
    """The baseline's resampled statistics, and the generator after them: the same epoch 1
    is compared with every later epoch, and its draws (fixed by the seed) are made once."""
    rng = np.random.default_rng(seed)
    stats = _bootstrap(np.frombuffer(baseline, dtype=float), {"median": np.median, "mean": np.mean}[statistic],
                       samples, rng)
    return stats, copy.deepcopy(rng)


def _bootstrap(values: np.ndarray, reduce, samples: int, rng: np.random.Generator) -> np.ndarray:
    """`samples` resampled statistics, drawn in blocks so that memory stays bounded. The
    same draws, in the same order, as one (samples, n) matrix would give."""
    block = max(1, BOOTSTRAP_BLOCK_VALUES // max(values.size, 1))
    return np.concatenate([reduce(values[rng.integers(0, values.size, (min(block, samples - start), values.size))],
                                  axis=1) for start in range(0, samples, block)])


def percentile_interval(resampled: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` share of bootstrap replicates: a percentile interval."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return float(low), float(high)
