"""Stop a slow trial as soon as its slowdown is statistically clear.

The report's epoch 2 would have run for hours. A trial watches its own records as they
arrive and stops once a later epoch is clearly slower than epoch 1. A trial that only
has to give a verdict (bisect's) may also stop once its last epoch is clearly no slower
(SlowdownMonitor.healthy): a sequential test, ended as soon as its interval lies on
either side of the threshold. The statistics are
dcnprobe.slowdown's, the same that warn a user live from inside the probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from dcnprobe.slowdown import CONFIDENCE, DEFAULT_TIME_FACTOR, SlowdownMonitor

__all__ = ["CONFIDENCE", "EarlyStop"]


class EarlyStop:
    """`healthy_in`: the trial's last epoch, when a clearly healthy verdict may end it too
    (`decide_healthy`); None: a healthy trial runs to its end."""

    def __init__(self, threshold: float, batches_per_epoch: int | None = None,
                 time_factor: float = DEFAULT_TIME_FACTOR, clock: Callable[[], float] = time.monotonic,
                 healthy_in: int | None = None) -> None:
        self.monitor = SlowdownMonitor(threshold, batches_per_epoch=batches_per_epoch, time_factor=time_factor,
                                       clock=clock)
        self.healthy_in = healthy_in

    @property
    def batches_per_epoch(self) -> int | None:
        return self.monitor.batches_per_epoch

    @batches_per_epoch.setter
    def batches_per_epoch(self, value: int | None) -> None:
        self.monitor.batches_per_epoch = value

    @property
    def last_ratio(self) -> tuple[float, float | None, float | None] | None:
        """(ratio, low, high) of the latest median comparison; the interval is None until
        the ratio is high enough to be worth a bootstrap."""
        last = self.monitor.last
        if last is None or last.statistic == "time":
            return None
        return last.ratio, last.low, last.high

    def feed(self, record: Mapping[str, Any]) -> None:
        if record.get("type") == "batch":
            self.monitor.feed(record)

    def decide(self) -> str | None:
        """A reason to stop the trial as slow, or None to let it run."""
        evidence = self.monitor.check()
        return evidence.describe() if evidence else None

    def decide_healthy(self) -> str | None:
        """A reason to end the trial as clearly healthy, or None to let it run."""
        if self.healthy_in is None:
            return None
        evidence = self.monitor.healthy(self.healthy_in)
        return evidence.describe() if evidence else None
