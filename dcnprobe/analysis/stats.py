"""Statistics of the analysis over batch records, as pure functions of numpy arrays:
trends, change points, outliers, bursts. The epoch ratio and its interval, shared with
the live side, are in dcnprobe.ratios.

Everything here is deterministic (bootstrap resampling uses a fixed seed) and tested on
synthetic series with known answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dcnprobe.analysis.thresholds import BURST_MIN, BURST_REGULAR

FIT_CHUNK = 1 << 16  # change-point positions fitted at a time (a dozen arrays of this many)


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
    if not keep.all():
        x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0:
        return Slope(0.0, 0.0, 0.0, 0.0)
    # Two working arrays, reused in place: a million batches are 8 MB an array. The same
    # arithmetic, in the same order, as the plain expressions.
    xc = x - x.mean()
    sxx = float(xc @ xc)
    deviation = y - y.mean()
    slope = float(xc @ deviation / sxx)
    ss_tot = float(np.square(deviation).sum())
    residual = np.subtract(deviation, np.multiply(xc, slope, out=xc), out=deviation)
    ss_res = float(residual @ residual)
    se = np.sqrt(ss_res / (x.size - 2) / sxx) if ss_res > 0 else 0.0
    t = slope / se if se > 0 else (np.inf if slope else 0.0)
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else 0.0
    return Slope(slope, float(t), slope * float(np.ptp(x)), float(r2))


@dataclass(frozen=True)
class ChangePoint:
    index: int  # first element of the changed regime
    kind: str  # "step" (level shift) or "ramp" (a linear rise starts)
    gain: float  # fraction of the constant model's squared error that the change explains
    before: float = float("nan")  # median before the change
    after: float = float("nan")  # median from the change on

    @property
    def direction(self) -> str:
        """'up' or 'down': which way the time moved. Wording must follow the data."""
        return "up" if self.after > self.before else "down"


def change_point(values: np.ndarray, min_size: int = 5) -> ChangePoint | None:
    """Where a series leaves its starting level, or None when nothing changes clearly.

    Fits a constant, every single level shift ("step") and every flat-then-linear hinge
    ("ramp") by least squares, and keeps the best change if it beats the constant by
    the BIC: n log(SSE/n) must fall by more than k log(n) for the extra parameters.
    Every candidate's fit comes from prefix sums, so a million batches cost O(n) time,
    and the candidates are fitted FIT_CHUNK at a time, so memory is a few series.
    """
    y = np.asarray(values, dtype=float)
    n = y.size
    if n < 2 * min_size:
        return None
    sse_constant = float(((y - y.mean()) ** 2).sum())
    if sse_constant == 0:
        return None
    step, ramp = _best(_step_fits(y, min_size)), _best(_ramp_fits(y, min_size))
    # The best fit; on a tie the earlier position, and a ramp before a step (as min() of
    # (sse, k, kind) tuples would choose).
    candidates = [(*fit, kind) for fit, kind in ((step, "step"), (ramp, "ramp")) if fit is not None]
    if not candidates:
        return None
    sse, k, kind = min(candidates)
    extra_parameters = 2  # the change's position and size
    if sse <= 0 or n * np.log(sse_constant / sse) <= extra_parameters * np.log(n):
        return None
    return ChangePoint(index=int(k), kind=kind, gain=float(1 - sse / sse_constant),
                       before=float(np.median(y[:k])) if k else float(y[0]), after=float(np.median(y[k:])))


def _best(fits: Iterator[tuple[np.ndarray, np.ndarray]]) -> tuple[float, int] | None:
    """The lowest SSE over chunks of candidate positions, and its position: what min() and
    argmin() over all of them at once give (the first on a tie, the first NaN if any)."""
    best = None
    for sse, k in fits:
        if sse.size:
            i = int(sse.argmin())
            if best is None or sse[i] < best[0] or (np.isnan(sse[i]) and not np.isnan(best[0])):
                best = (float(sse[i]), int(k[i]))
    return best


def _step_fits(y: np.ndarray, min_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """SSE of every single level shift at k in [min_size, n - min_size]: two means; FIT_CHUNK
    positions at a time."""
    n = y.size
    csum, csq = np.cumsum(y), np.cumsum(y * y)
    for start in range(min_size, n - min_size + 1, FIT_CHUNK):
        k = np.arange(start, min(start + FIT_CHUNK, n - min_size + 1))
        left = csq[k - 1] - csum[k - 1] ** 2 / k
        right = (csq[-1] - csq[k - 1]) - (csum[-1] - csum[k - 1]) ** 2 / (n - k)
        yield left + right, k


def _ramp_fits(y: np.ndarray, min_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """SSE of every hinge y = a + b * max(0, i - k), k in [0, n - min_size), rising ones
    only (a falling ramp is not a slowdown, and a fall that matters shows as a step):
    SSE_k = SST - Sxy^2 / Sxx with h = max(0, i - k), from suffix sums of y and i*y;
    FIT_CHUNK positions at a time."""
    n = y.size
    # Suffix sums over i > k of y and of i*y.
    suffix_y = np.concatenate([np.cumsum(y[::-1])[::-1], [0.0]])
    suffix_iy = np.concatenate([np.cumsum((np.arange(n, dtype=float) * y)[::-1])[::-1], [0.0]])
    mean = y.mean()
    sst = float(((y - mean) ** 2).sum())
    for start in range(0, n - min_size, FIT_CHUNK):
        k = np.arange(start, min(start + FIT_CHUNK, n - min_size), dtype=float)
        m = n - 1 - k  # how many i > k: h is 1, 2, ..., m there
        sum_h = m * (m + 1) / 2
        sum_h2 = m * (m + 1) * (2 * m + 1) / 6
        after = k.astype(int) + 1
        sum_hy = suffix_iy[after] - k * suffix_y[after]
        sxx = sum_h2 - sum_h ** 2 / n
        sxy = sum_hy - sum_h * mean
        keep = (sxx > 0) & (sxy > 0)  # a fit at all, and rising
        sse = sst - sxy[keep] ** 2 / sxx[keep]
        yield np.maximum(sse, 0.0), k[keep].astype(int)


def mad_outliers(values: np.ndarray, k: float = 5.0) -> np.ndarray:
    """Mask of values more than k robust standard deviations above the median."""
    values = np.asarray(values, dtype=float)
    median = np.median(values)
    spread = np.abs(values - median)
    mad = np.median(spread, overwrite_input=True) * 1.4826  # its own array: partitioned in place
    if mad == 0:
        return values > median * 1.5
    return values > median + k * mad


@dataclass(frozen=True)
class Bursts:
    count: int  # slow batches (MAD outliers)
    share: float  # of the batches
    time_share: float  # of the time: the bursts' time above the median
    period: int | None  # batches between bursts, when they come at a regular period
    burst_s: float  # median time of a slow batch


def periodic_bursts(values: np.ndarray, positions: np.ndarray | None = None) -> Bursts:
    """Slow batches in a series and whether they come at a period.

    In-loop evaluation, logging or checkpointing every k batches leaves a spike every k
    batches: the median hardly moves, the mean does. Regular = most gaps between
    consecutive spikes within one batch of their median gap. Slow batches next to each
    other are one spike: the work and the batch after it, which pays for what the work
    evicted (seen on a real loop: evaluation every 10 batches read as period 9).
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return Bursts(0, 0.0, 0.0, None, float("nan"))
    positions = np.arange(values.size) if positions is None else np.asarray(positions)
    slow = mad_outliers(values)
    count = int(slow.sum())
    median = float(np.median(values))
    excess = float((values[slow] - median).sum())
    period = None
    spikes = positions[slow]
    spikes = spikes[np.insert(np.diff(spikes) > 1, 0, True)] if spikes.size else spikes
    if spikes.size >= BURST_MIN:
        gaps = np.diff(spikes)
        typical = float(np.median(gaps))
        if typical >= 2 and np.mean(np.abs(gaps - typical) <= 1) >= BURST_REGULAR:
            period = int(round(typical))
    return Bursts(count, count / values.size, excess / float(values.sum()), period,
                  float(np.median(values[slow])) if count else float("nan"))
