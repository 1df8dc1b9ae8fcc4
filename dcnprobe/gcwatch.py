"""Garbage-collector activity per generation, from `gc.callbacks`.

GC over a growing heap shows up as pauses that lengthen and line up with generation-2
collections; counting collections and their time per generation is how the probe sees it.
"""

from __future__ import annotations

import gc
import time


class GcWatch:
    def __init__(self, clock=time.perf_counter) -> None:
        self.clock = clock
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.total = 0.0  # all generations: read at every batch end, so kept rather than summed there
        self._began = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = self.clock()
        else:
            generation = info["generation"]
            seconds = self.clock() - self._began
            self.count[generation] += 1
            self.seconds[generation] += seconds
            self.total += seconds

    def start(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def snapshot(self) -> dict[str, float]:
        snap: dict[str, float] = {}
        for generation in range(3):
            snap[f"gc_count_{generation}"] = self.count[generation]
            snap[f"gc_time_{generation}"] = self.seconds[generation]
        return snap
