"""Statistics over batch records, as pure functions of numpy arrays.

Everything here is deterministic (bootstrap resampling uses a fixed seed) and tested on
synthetic series with known answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 2000


def warmup_batches(n: int) -> int:
    """Batches dropped at the start of an epoch: allocator and cache warm-up, worker start."""
    return int(min(10, max(2, n // 20))) if n > 6 else 0


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
    return Summary(int(values.size), float(np.median(values)), float(np.percentile(values, 90)),
                   float(values.max()), float(values.mean()))


def median_ratio_ci(baseline: np.ndarray, later: np.ndarray, confidence: float = 0.95,
                    samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """median(later) / median(baseline) with a percentile-bootstrap confidence interval.

    The two samples are resampled independently; returns (ratio, low, high).
    """
    return ratio_ci(baseline, later, "median", confidence, samples, seed)


def ratio_ci(baseline: np.ndarray, later: np.ndarray, statistic: str = "median", confidence: float = 0.95,
             samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """statistic(later) / statistic(baseline), statistic 'median' or 'mean', with a
    percentile-bootstrap confidence interval. The median ignores rare long batches; the
    mean counts them, which matters when a slowdown arrives in bursts (a loader that
    delivers three batches at once, then makes the loop wait)."""
    reduce = {"median": np.median, "mean": np.mean}[statistic]
    baseline = np.asarray(baseline, dtype=float)
    later = np.asarray(later, dtype=float)
    ratio = float(reduce(later) / reduce(baseline))
    rng = np.random.default_rng(seed)
    base_stats = reduce(baseline[rng.integers(0, baseline.size, (samples, baseline.size))], axis=1)
    later_stats = reduce(later[rng.integers(0, later.size, (samples, later.size))], axis=1)
    ratios = later_stats / base_stats
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return ratio, float(low), float(high)


@dataclass(frozen=True)
class Slope:
    per_step: float  # units of y per unit of x
    t: float  # slope / standard error; large |t| = a clear trend
    growth: float  # fitted change over the whole x range
    r2: float


def linear_slope(x: np.ndarray, y: np.ndarray) -> Slope:
    """Least-squares slope of y on x with its t statistic and the fitted total change."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0:
        return Slope(0.0, 0.0, 0.0, 0.0)
    xc = x - x.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (y - y.mean()) / sxx)
    residual = y - y.mean() - slope * xc
    ss_res = float(residual @ residual)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    se = np.sqrt(ss_res / (x.size - 2) / sxx) if ss_res > 0 else 0.0
    t = slope / se if se > 0 else (np.inf if slope else 0.0)
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else 0.0
    return Slope(slope, float(t), slope * float(np.ptp(x)), float(r2))


@dataclass(frozen=True)
class ChangePoint:
    index: int  # first element of the changed regime
    kind: str  # "step" (level shift) or "ramp" (a linear rise starts)
    gain: float  # fraction of the constant model's squared error that the change explains


def change_point(values: np.ndarray, min_size: int = 5) -> ChangePoint | None:
    """Where a series leaves its starting level, or None when nothing changes clearly.

    Fits a constant, every single level shift ("step") and every flat-then-linear hinge
    ("ramp") by least squares, and keeps the best change if it beats the constant by
    the BIC: n log(SSE/n) must fall by more than k log(n) for the extra parameters.
    """
    y = np.asarray(values, dtype=float)
    n = y.size
    if n < 2 * min_size:
        return None
    sse_constant = float(((y - y.mean()) ** 2).sum())
    if sse_constant == 0:
        return None
    candidates: list[tuple[float, int, str]] = []
    # Level shifts: prefix sums give every split's SSE in O(n).
    csum, csq = np.cumsum(y), np.cumsum(y * y)
    for k in range(min_size, n - min_size + 1):
        left = csq[k - 1] - csum[k - 1] ** 2 / k
        right = (csq[-1] - csq[k - 1]) - (csum[-1] - csum[k - 1]) ** 2 / (n - k)
        candidates.append((left + right, k, "step"))
    # Hinges y = a + b * max(0, i - k): least squares per k.
    index = np.arange(n, dtype=float)
    for k in range(0, n - min_size):
        h = np.maximum(0.0, index - k)
        hc = h - h.mean()
        denominator = float(hc @ hc)
        if denominator == 0:
            continue
        b = float(hc @ (y - y.mean())) / denominator
        residual = y - y.mean() - b * hc
        if b > 0:
            candidates.append((float(residual @ residual), k, "ramp"))
    sse, k, kind = min(candidates)
    extra_parameters = 2  # the change's position and size
    if sse <= 0 or n * np.log(sse_constant / sse) <= extra_parameters * np.log(n):
        return None
    return ChangePoint(index=int(k), kind=kind, gain=float(1 - sse / sse_constant))


def mad_outliers(values: np.ndarray, k: float = 5.0) -> np.ndarray:
    """Mask of values more than k robust standard deviations above the median."""
    values = np.asarray(values, dtype=float)
    median = np.median(values)
    mad = np.median(np.abs(values - median)) * 1.4826
    if mad == 0:
        return values > median * 1.5
    return values > median + k * mad
