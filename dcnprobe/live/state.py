"""What a live view knows about a run, built record by record as a RecordFollower hands
them over: nothing is re-read, and memory series are kept short (the view draws the
latest stretch of them)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcnprobe.errors import UsageError
from dcnprobe.ratios import ratio_ci, warmup_batches
from dcnprobe.records import (
    BATCH,
    EPOCH,
    FOOTER,
    HEADER,
    LOOP_END,
    MEMORY,
    STALL,
    WARNING,
    RecordFollower,
)
from dcnprobe.slowdown import PHASE_NAMES

SERIES_LENGTH = 120  # memory samples kept per series: the sparklines' width, and more
RECENT_BATCHES = 20  # the "present rate": median of the latest batches
VIEW_CONFIDENCE = 0.95  # the interval shown, as `dcnprobe analyze` quotes it
VIEW_BOOTSTRAP = 400  # resamples: the view redraws every second, the verdict is the analysis's job
MIN_BATCHES_FOR_INTERVAL = 5
MEMORY_SERIES = ("main", "workers", "device", "swap")
DEVICE_FIELDS = ("device_driver", "device_reserved", "device_current", "device_allocated")


@dataclass
class EpochView:
    epoch: int
    totals: list[float] = field(default_factory=list)
    phase_sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASE_NAMES, 0.0))
    done: bool = False
    started_t: float | None = None  # probe time at the start of its first batch
    ended_t: float | None = None


class RunState:
    def __init__(self) -> None:
        self.header: dict[str, Any] | None = None
        self.epochs: dict[int, EpochView] = {}
        self.memory: dict[str, deque[float]] = {name: deque(maxlen=SERIES_LENGTH) for name in MEMORY_SERIES}
        self.warnings: list[dict[str, Any]] = []
        self.stalls: list[dict[str, Any]] = []
        self.footer: dict[str, Any] | None = None
        self.last_t: float | None = None  # probe time of the newest record with one
        self._ratios: dict[int, tuple[int, tuple[float, float, float]]] = {}  # epoch -> (batches, ratio)

    # -- input -------------------------------------------------------------------------

    def feed(self, records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Take new records; returns those worth a line of their own (epochs ending,
        warnings, stalls, the footer), for the plain view."""
        events = []
        for record in records:
            kind = record.get("type")
            if self.header is None:
                if kind != HEADER:
                    raise UsageError("not a dcnprobe run record (no header line)")
                self.header = dict(record)
                continue
            if isinstance(record.get("t"), (int, float)):
                self.last_t = float(record["t"])
            if kind == BATCH:
                self._batch(record)
            elif kind == MEMORY:
                self._memory(record)
            elif kind in (LOOP_END, EPOCH):
                epoch = self.epochs.get(int(record.get("epoch", 0)))
                if epoch is not None and not epoch.done:
                    epoch.done, epoch.ended_t = True, record.get("t", record.get("t_end"))
                    events.append(record)
            elif kind == WARNING:
                self.warnings.append(dict(record))
                events.append(record)
            elif kind == STALL:
                self.stalls.append(dict(record))
                events.append(record)
            elif kind == FOOTER:
                self.footer = dict(record)
                events.append(record)
        return events

    def _batch(self, record: Mapping[str, Any]) -> None:
        number = int(record["epoch"])
        epoch = self.epochs.get(number)
        if epoch is None:
            epoch = self.epochs[number] = EpochView(number)
            if isinstance(record.get("t"), (int, float)):
                epoch.started_t = float(record["t"]) - float(record["total"])
        epoch.totals.append(float(record["total"]))
        for name in PHASE_NAMES:
            value = record.get(name)
            if isinstance(value, (int, float)):
                epoch.phase_sums[name] += value

    def _memory(self, record: Mapping[str, Any]) -> None:
        if record.get("main_rss") is not None:
            self.memory["main"].append(float(record["main_rss"]))
        workers = record.get("workers") or []
        self.memory["workers"].append(float(sum(w.get("rss") or 0 for w in workers)))
        device = next((record[k] for k in DEVICE_FIELDS if record.get(k) is not None), None)
        if device is not None:
            self.memory["device"].append(float(device))
        if record.get("swap_used") is not None:
            self.memory["swap"].append(float(record["swap_used"]))

    # -- derived --------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.footer is not None

    @property
    def current(self) -> EpochView | None:
        return self.epochs[max(self.epochs)] if self.epochs else None

    @property
    def batches_per_epoch(self) -> int | None:
        expected = (self.header or {}).get("batches_per_epoch")
        if expected:
            return int(expected)
        first = self.epochs.get(1)
        return len(first.totals) if first is not None and first.done else None

    def median(self, epoch: int) -> float | None:
        totals = self._steady(epoch)
        return float(np.median(totals)) if totals.size else None

    def ratio(self, epoch: int) -> tuple[float, float, float] | None:
        """This epoch over epoch 1 by median steady batch time, with a 95% interval;
        recomputed only when the epoch has new batches."""
        if epoch == 1 or 1 not in self.epochs or epoch not in self.epochs:
            return None
        base, later = self._steady(1), self._steady(epoch)
        if min(base.size, later.size) < MIN_BATCHES_FOR_INTERVAL:
            return None
        seen = len(self.epochs[epoch].totals)
        cached = self._ratios.get(epoch)
        if cached is None or cached[0] != seen:
            cached = (seen, ratio_ci(base, later, "median", confidence=VIEW_CONFIDENCE, samples=VIEW_BOOTSTRAP))
            self._ratios[epoch] = cached
        return cached[1]

    def phase_means(self, epoch: int) -> dict[str, float]:
        view = self.epochs[epoch]
        n = max(1, len(view.totals))
        return {name: total / n for name, total in view.phase_sums.items()}

    def recent_rate(self) -> float | None:
        """Median of the current epoch's latest batches: seconds per batch now."""
        current = self.current
        if current is None or not current.totals:
            return None
        return float(np.median(current.totals[-RECENT_BATCHES:]))

    def eta_s(self) -> float | None:
        """Seconds left in the current epoch at the present rate, when its size is known."""
        current, expected, rate = self.current, self.batches_per_epoch, self.recent_rate()
        if current is None or current.done or expected is None or rate is None:
            return None
        return max(0, expected - len(current.totals)) * rate

    def _steady(self, epoch: int) -> np.ndarray:
        totals = self.epochs[epoch].totals
        expected = self.batches_per_epoch or len(totals)
        return np.asarray(totals[warmup_batches(expected):], dtype=float)


def catch_up(follower: RecordFollower, state: RunState,
             each: Callable[[], None] | None = None) -> list[Mapping[str, Any]]:
    """Everything appended since the last look, fed a chunk at a time (`each` is called
    after every chunk that is not the last: a live view redraws while it catches up); the
    events worth a line. A chunk per look took minutes to reach the end of a long run's
    record (4 MB a look, a look a second: 220 looks for a million batches)."""
    events = []
    while True:
        events += state.feed(follower.read())
        if follower.caught_up:
            return events
        if each is not None:
            each()
