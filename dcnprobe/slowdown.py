"""Is a later epoch clearly slower than epoch 1? Decided live, from batch records as they
arrive: the one implementation behind the harness's early stop and the probe's warning.

Two rules, as the analysis reads a finished run:
  - ratio: the later epoch's steady batches over epoch 1's, by median and by mean (the mean
    catches bursty slowdowns), with a bootstrap interval at 99% confidence because the
    question is asked again and again while the epoch runs; slow when the whole interval
    lies above the threshold;
  - time: the later epoch has run `time_factor` times the whole of epoch 1 and is not
    finished (a slowdown so large that too few batches arrive to compare), and at least
    TIME_RULE_FLOOR_S: the clock here is the reader's (a harness polls the record), and
    epoch 1's length is its batches' time alone, so for epochs of a second or two the
    start-up of the next epoch's workers and the reader's delay would pass for a slowdown.

Cost: `add` is O(1). A check runs every `check_every` batches and first compares point
estimates (one median and one mean over at most `max_sample` batches); the bootstrap runs
only when a point estimate is already above the threshold, so a healthy run never pays
for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dcnprobe.hooks import BATCH_TIMES, COLLECTIVE
from dcnprobe.ratios import ratio_ci, warmup_batches

TIME_RULE_FLOOR_S = 30.0  # as long as the stall watchdog's floor: shorter waits are not evidence

CHECK_EVERY = 10  # batches between checks
MIN_BATCHES = 20  # steady batches on each side before a ratio is judged (as the analysis)
CONFIDENCE = 0.99  # checked repeatedly: a wider interval than the verdict's 95%
BOOTSTRAP_SAMPLES = 1000
MAX_SAMPLE = 1024  # batches per side given to the bootstrap: bounds a check's cost on huge epochs
DEFAULT_TIME_FACTOR = 2.0
HEALTHY_AFTER = 0.5  # share of the last epoch run before it may be called clearly healthy
SUM_EVERY = 64  # batches whose phases are added to the running sums at once
# Every phase a batch record may carry: the optional collective wait (distributed runs) too.
PHASE_NAMES = (*(name for name in BATCH_TIMES if name not in ("other", "total")), COLLECTIVE, "other")


@dataclass(frozen=True)
class Evidence:
    """One look at the current epoch against epoch 1."""

    epoch: int
    batches: int  # batches of that epoch seen so far
    statistic: str  # "median", "mean" or "time"
    ratio: float
    low: float | None = None  # the interval, when the bootstrap ran
    high: float | None = None
    running_s: float | None = None  # time rule: seconds the epoch has run...
    epoch1_s: float | None = None  # ... against the whole of epoch 1
    time_factor: float | None = None  # ... and the factor that rule allows

    def describe(self) -> str:
        if self.statistic == "time":
            return (f"epoch {self.epoch} has run {self.running_s:.0f} s, over {self.time_factor:g}x the "
                    f"{self.epoch1_s:.0f} s of epoch 1, after {self.batches} batches")
        interval = f" (99% CI {self.low:.2f}-{self.high:.2f})" if self.low is not None else ""
        return (f"epoch {self.epoch} runs {self.ratio:.2f}x epoch 1 by {self.statistic} batch time"
                f"{interval} after {self.batches} batches")


class SlowdownMonitor:
    """Fed batch records; `check()` says when the current epoch is clearly slower."""

    def __init__(self, threshold: float, *, batches_per_epoch: int | None = None,
                 time_factor: float = DEFAULT_TIME_FACTOR, clock: Callable[[], float] = time.monotonic,
                 check_every: int = CHECK_EVERY, min_batches: int = MIN_BATCHES,
                 bootstrap_samples: int = BOOTSTRAP_SAMPLES, max_sample: int = MAX_SAMPLE) -> None:
        self.threshold, self.time_factor, self.clock = threshold, time_factor, clock
        self.batches_per_epoch = batches_per_epoch
        self.check_every, self.min_batches = check_every, min_batches
        self.bootstrap_samples, self.max_sample = bootstrap_samples, max_sample
        self.totals: dict[int, list[float]] = {}
        self.arrived: dict[int, float] = {}  # clock time at which each epoch's first batch began
        self.phase_sums: dict[int, dict[str, float]] = {}
        # Batches whose phases are not yet in phase_sums: added up in bulk (a loop over the
        # phases for every batch costs the training thread more than the rest of add()).
        self._unsummed: list[tuple[int, Mapping[str, Any]]] = []
        self.epoch1_s: float | None = None
        self.last_epoch = 0
        self.last: Evidence | None = None  # the latest ratio computed, slow or not
        self._checked_at = 0
        self._healthy_at = 0  # batches of the last epoch when `healthy` last ran its bootstrap
        self._base: np.ndarray = np.empty(0)
        self._base_key: tuple[int, int] | None = None
        self._base_stats: dict[str, float] = {}  # its median and mean, computed with it

    # -- input -------------------------------------------------------------------------

    def feed(self, record: Mapping[str, Any]) -> None:
        """A record from a run file (only `batch` records count) or from the probe."""
        kind = record.get("type", "batch")
        if kind == "batch":
            self.add(int(record["epoch"]), float(record["total"]), record)

    def add(self, epoch: int, total: float, phases: Mapping[str, Any] | None = None, ended_ago: float = 0.0) -> None:
        """A batch of `total` seconds that ended `ended_ago` seconds ago (one fed later, in bulk)."""
        if epoch not in self.totals:
            self.totals[epoch] = []
            self.phase_sums[epoch] = dict.fromkeys(PHASE_NAMES, 0.0)
            self.arrived[epoch] = self.clock() - ended_ago - total
            if epoch > 1 and 1 in self.totals and self.epoch1_s is None:
                self.epoch1_s = sum(self.totals[1])
            if epoch > self.last_epoch:
                self._checked_at = 0
        self.totals[epoch].append(total)
        if phases is not None:
            self._unsummed.append((epoch, phases))
            if len(self._unsummed) >= SUM_EVERY:
                self._sum_phases()
        self.last_epoch = max(self.last_epoch, epoch)

    def _sum_phases(self) -> None:
        for epoch, phases in self._unsummed:
            sums = self.phase_sums[epoch]
            for name in PHASE_NAMES:
                value = phases.get(name)
                if value is not None:
                    sums[name] += value
        self._unsummed.clear()

    # -- decisions ------------------------------------------------------------------------

    def check(self) -> Evidence | None:
        """Evidence that the current epoch is clearly slower than epoch 1, or None."""
        epoch = self.last_epoch
        if epoch < 2 or 1 not in self.totals:
            return None
        later = self.totals[epoch]
        running = self.clock() - self.arrived[epoch]
        limit = max(self.time_factor * (self.epoch1_s or 0.0), TIME_RULE_FLOOR_S)
        if self.epoch1_s and running > limit and not self.finished(epoch):
            self.last = Evidence(epoch, len(later), "time", running / self.epoch1_s, running_s=running,
                                 epoch1_s=self.epoch1_s, time_factor=self.time_factor)
            return self.last
        if len(later) - self._checked_at < self.check_every:
            return None
        expected = self.batches_per_epoch or len(self.totals[1])
        base, steady = self._steady(self.totals[1], expected, recent=False), self._steady(later, expected, recent=True)
        if len(steady) < self.min_batches or len(base) < self.min_batches:
            return None
        self._checked_at = len(later)
        found = None
        for statistic, reduce in (("median", np.median), ("mean", np.mean)):
            point = float(reduce(steady) / self._base_stats[statistic])
            if statistic == "median":
                self.last = Evidence(epoch, len(later), statistic, point)
            # A percentile interval lies above the threshold only if the estimate does
            # (save in freak resamples): skip the bootstrap until then.
            if point <= self.threshold or found is not None:
                continue
            ratio, low, high = ratio_ci(base, steady, statistic, confidence=CONFIDENCE, samples=self.bootstrap_samples)
            evidence = Evidence(epoch, len(later), statistic, ratio, low, high)
            if statistic == "median":
                self.last = evidence
            if low > self.threshold:
                found = evidence
        return found

    def healthy(self, last_epoch: int, after: float = HEALTHY_AFTER) -> Evidence | None:
        """Evidence that the run's last epoch is clearly no slower than epoch 1: the other
        side of the sequential test, for a trial whose verdict is all that is wanted
        (bisect). Judged only in `last_epoch` (an earlier healthy epoch says nothing of
        a later one), once `after` of its batches have run (a slowdown that builds up
        within the epoch has time to show), on the same 99% intervals as `check`: both
        the median's and the mean's wholly below the threshold, and not wholly below its
        reciprocal. None until then."""
        epoch = self.last_epoch
        if epoch != last_epoch or epoch < 2 or 1 not in self.totals or not self.batches_per_epoch:
            return None
        later = self.totals[epoch]
        if len(later) < after * self.batches_per_epoch or len(later) - self._healthy_at < self.check_every:
            return None
        self._healthy_at = len(later)
        expected = self.batches_per_epoch
        base, steady = self._steady(self.totals[1], expected, recent=False), self._steady(later, expected, recent=True)
        if len(steady) < self.min_batches or len(base) < self.min_batches:
            return None
        found = None
        for statistic in ("median", "mean"):
            ratio, low, high = ratio_ci(base, steady, statistic, confidence=CONFIDENCE, samples=self.bootstrap_samples)
            # Clearly faster than epoch 1, beyond 1/threshold, is no verdict either: epoch 1
            # was then no baseline (warm-up, load that came and went), and a slowdown
            # building up after it could hide. The run goes on to be judged whole.
            if high >= self.threshold or high * self.threshold < 1:
                return None
            found = found or Evidence(epoch, len(later), statistic, ratio, low, high)
        return found

    def finished(self, epoch: int) -> bool:
        return self.batches_per_epoch is not None and len(self.totals.get(epoch, ())) >= self.batches_per_epoch

    def phase_growth(self, epoch: int | None = None) -> dict[str, float]:
        """Seconds per batch each phase added in `epoch` (default: the current one) over epoch 1,
        largest first. From running sums: no batch is kept twice."""
        epoch = epoch or self.last_epoch
        if 1 not in self.totals or epoch not in self.totals or epoch == 1:
            return {}
        self._sum_phases()
        n1, n = len(self.totals[1]), len(self.totals[epoch])
        growth = {name: self.phase_sums[epoch][name] / n - self.phase_sums[1][name] / n1 for name in PHASE_NAMES}
        return dict(sorted(growth.items(), key=lambda item: item[1], reverse=True))

    def _steady(self, totals: list[float], expected: int, recent: bool) -> np.ndarray:
        """An epoch's batches after its warm-up; at most `max_sample` of them: the latest for
        the running epoch (what it does now), an even spread for the finished baseline,
        computed once."""
        skip = warmup_batches(expected)
        if recent:
            return np.asarray(totals[max(skip, len(totals) - self.max_sample):], dtype=float)
        key = (len(totals), skip)
        if self._base_key != key:
            values = np.asarray(totals[skip:], dtype=float)
            if values.size > self.max_sample:
                values = values[:: math.ceil(values.size / self.max_sample)]
            self._base, self._base_key = values, key
            self._base_stats = {"median": float(np.median(values)), "mean": float(np.mean(values))} if values.size else {}
        return self._base
