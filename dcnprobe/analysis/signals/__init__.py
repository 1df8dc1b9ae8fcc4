"""The measurements of one run, reduced to the signals that causes are judged on.

Each family is a frozen dataclass computed by a pure function of the run (and of the
families it builds on): epochs, then timing, contention and trend; memory, the runtime
(GC, CPU, descriptors) and the loop's own habits (cache clearing, shapes) on their own.
This package only measures; dcnprobe.analysis.causes decides what the signals mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dcnprobe.analysis import thresholds as th
from dcnprobe.analysis.signals.epochs import (
    COMPUTE,
    TIMED,
    EpochSignal,
    SampledEpoch,
    epoch_signals,
)
from dcnprobe.analysis.signals.loop import CacheClearing, Shapes, cache_clearing, shapes
from dcnprobe.analysis.signals.memory import Growth, Memory, memory
from dcnprobe.analysis.signals.runtime import Cpu, Fds, Gc, cpu, fds, gc
from dcnprobe.analysis.signals.steady import SteadyBatches, steady_batches
from dcnprobe.analysis.signals.timing import (
    Contention,
    Timing,
    Trend,
    compare_epochs,
    contention,
    trend,
)
from dcnprobe.runs import Run

__all__ = ["COMPUTE", "TIMED", "CacheClearing", "Contention", "Cpu", "EpochSignal", "Fds", "Gc", "Growth", "Memory",
           "SampledEpoch", "Shapes", "Signals", "SteadyBatches", "Timing", "Trend", "measure", "steady_batches"]


@dataclass(frozen=True)
class Signals:
    status: str  # the record's footer status (ok, slow, crashed, interrupted, stalled, incomplete)
    epochs: tuple[EpochSignal, ...]
    timing: Timing
    contention: Contention
    trend: Trend
    memory: Memory
    gc: Gc | None
    cpu: Cpu | None
    fds: Fds | None
    cache: CacheClearing
    shapes: Shapes | None
    stalls: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    damaged_lines: int = 0  # lines of the record skipped as damage

    @property
    def slowdown(self) -> bool:
        """Slow, and of the run's own making: never when other processes' load explains it."""
        return self.timing.slow_by_interval and not self.contention.contended

    @property
    def contention_explains(self) -> bool:
        """Other processes' load, not the run, explains the timing: every rule that reads
        timing stays silent, and the user's code is not blamed."""
        return self.contention.contended and not self.slowdown

    @property
    def first_and_compared(self) -> tuple[EpochSignal | None, EpochSignal | None]:
        if not self.epochs:
            return None, None
        later = next((e for e in self.epochs if e.epoch == self.timing.compared_epoch), None)
        return self.epochs[0], later


def measure(run: Run, threshold: float = th.DEFAULT_THRESHOLD) -> Signals:
    batches = run.batches
    if "step" in batches and not batches["step"].is_monotonic_increasing:
        batches = batches.sort_values("step")
    steady = SteadyBatches(batches)
    epochs = epoch_signals(run, batches, steady)
    timing = compare_epochs(steady, threshold)
    return Signals(
        status=run.status,
        epochs=epochs,
        timing=timing,
        contention=contention(epochs, timing),
        trend=trend(steady, timing),
        memory=memory(run, steady),
        gc=gc(run, steady),
        cpu=cpu(run),
        fds=fds(run, epochs),
        cache=cache_clearing(steady),
        shapes=shapes(batches),
        stalls=tuple(run.stalls),
        damaged_lines=run.damaged,
    )
