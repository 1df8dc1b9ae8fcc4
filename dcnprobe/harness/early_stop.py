"""Stop a slow trial as soon as its slowdown is statistically clear.

The report's epoch 2 would have run for hours. A trial watches its own records as they
arrive and stops once a later epoch is clearly slower than epoch 1: the same ratio of
medians the analysis uses, at 99% confidence because it is checked repeatedly, or once
a later epoch has run for `time_factor` times the whole of epoch 1 without finishing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dcnprobe.analysis.stats import ratio_ci, warmup_batches

CHECK_EVERY = 10
MIN_BATCHES = 20
CONFIDENCE = 0.99


class EarlyStop:
    def __init__(self, threshold: float, batches_per_epoch: int | None = None, time_factor: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.time_factor, self.clock = threshold, time_factor, clock
        self.batches_per_epoch = batches_per_epoch
        self.totals: dict[int, list[float]] = {}
        self.arrived: dict[int, float] = {}  # when the first batch of each epoch was seen
        self.epoch1_s: float | None = None
        self.last_epoch = 0
        self._checked_at = 0
        self.last_ratio: tuple[float, float, float] | None = None

    def feed(self, record: dict[str, Any]) -> None:
        if record.get("type") != "batch":
            return
        epoch = int(record["epoch"])
        now = self.clock()
        if epoch not in self.totals:
            self.totals[epoch] = []
            self.arrived[epoch] = now - float(record["total"])
            if epoch > 1 and 1 in self.arrived and self.epoch1_s is None:
                self.epoch1_s = sum(self.totals[1])
        self.totals[epoch].append(float(record["total"]))
        self.last_epoch = max(self.last_epoch, epoch)

    def decide(self) -> str | None:
        """A reason to stop the trial as slow, or None to let it run."""
        epoch = self.last_epoch
        if epoch < 2 or 1 not in self.totals:
            return None
        base = _steady(self.totals[1])
        later = self.totals[epoch]
        running = self.clock() - self.arrived[epoch]
        if self.epoch1_s and running > self.time_factor * self.epoch1_s and not self._finished(epoch):
            return (f"epoch {epoch} has run {running:.0f} s, over {self.time_factor:g}x the {self.epoch1_s:.0f} s "
                    f"of epoch 1, after {len(later)} batches")
        steady = _steady(later, self.batches_per_epoch)
        if len(steady) < MIN_BATCHES or len(base) < MIN_BATCHES or len(later) - self._checked_at < CHECK_EVERY:
            return None
        self._checked_at = len(later)
        for stat in ("median", "mean"):  # as the analysis does: the mean catches bursty slowdowns
            ratio, low, high = ratio_ci(base, steady, stat, confidence=CONFIDENCE, samples=1000)
            if stat == "median":
                self.last_ratio = (ratio, low, high)
            if low > self.threshold:
                return (f"epoch {epoch} runs {ratio:.2f}x epoch 1 by {stat} batch time "
                        f"(99% CI {low:.2f}-{high:.2f}) after {len(later)} batches")
        return None

    def _finished(self, epoch: int) -> bool:
        return self.batches_per_epoch is not None and len(self.totals[epoch]) >= self.batches_per_epoch


def _steady(totals: list[float], expected: int | None = None) -> list[float]:
    return totals[warmup_batches(expected or len(totals)):]
