"""Per-batch phase timers with an injected clock and device synchronisation.

On asynchronous devices (CUDA, MPS) a wall clock is only honest at a synchronisation
point: without one, device work spills into the next batch's data wait and makes the
loader look guilty. Sync modes:
    batch  one sync at batch end (default): totals are honest, phases approximate;
    phase  a sync after every phase: honest attribution, at some cost;
    none   no sync at all.
The clock and the sync function are arguments, so tests drive them exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dcnprobe.hooks import DATA_WAIT, PHASES

SYNC_MODES = ("batch", "phase", "none")
_TIMED = (DATA_WAIT, *PHASES)
Clock = Callable[[], float]


class PhaseTimer:
    __slots__ = ("clock", "sync", "mode", "_start", "times")

    def __init__(self, clock: Clock = time.perf_counter, sync: Callable[[], None] | None = None,
                 mode: str = "batch") -> None:
        if mode not in SYNC_MODES:
            raise ValueError(f"sync mode must be one of {SYNC_MODES}, not {mode!r}")
        self.clock, self.sync, self.mode = clock, sync, mode
        self._start: float | None = None
        # The open batch's seconds per phase: a new dict each batch (end() hands it over).
        # The attach's steady path adds to it directly (dcnprobe.attach.recorder).
        self.times: dict[str, float] = {}

    @property
    def in_batch(self) -> bool:
        return self._start is not None

    def begin(self) -> None:
        """A batch starts when the loop asks the loader for it."""
        self._start = self.clock()
        self.times = dict.fromkeys(_TIMED, 0.0)

    def waited(self) -> None:
        """The loader returned the batch: everything since begin() was data wait."""
        self.times[DATA_WAIT] = self.clock() - self._start

    def cancel(self) -> None:
        """The loader was exhausted: there is no batch to record."""
        self._start = None

    def add(self, name: str, seconds: float) -> None:
        """Add time to a phase of the open batch. The attach measures phases between hook
        calls rather than around blocks, so it hands over durations."""
        if self._start is not None:
            try:  # the phases begin() knows: one lookup, at every hook of the attach
                self.times[name] += seconds
            except KeyError:
                self.times[name] = seconds

    def phase(self, name: str) -> _PhaseSpan:
        return _PhaseSpan(self, name)

    def end(self) -> dict[str, Any]:
        """Close the batch; returns every phase, `other` and `total`, in seconds."""
        if self.sync is not None and self.mode == "batch":
            self.sync()
        end = self.clock()
        times = self.times
        total = end - self._start
        times["other"] = total - sum(times.values())
        times["total"] = total
        self._start = None
        return times


class _PhaseSpan:
    """`with timer.phase("forward"):` adds the block's duration to that phase."""

    __slots__ = ("timer", "name", "began")

    def __init__(self, timer: PhaseTimer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.began = self.timer.clock()

    def __exit__(self, *exc: object) -> None:
        timer = self.timer
        if timer.mode == "phase" and timer.sync is not None:
            timer.sync()
        if timer._start is not None:
            timer.times[self.name] = timer.times.get(self.name, 0.0) + timer.clock() - self.began
