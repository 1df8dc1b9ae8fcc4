"""Batch timings of real training runs, for ratios measured within one process.

These machines are noisy: absolute times are not comparable between runs, so every
measure here is a ratio of two things timed in the same process, in interleaved blocks
so that drift of the machine's speed hits both sides alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from dcnprobe.hooks import ProbeLike
from model.plugins import TrainerPlugin
from model.trainer import TrainJob, fit

WARMUP_BATCHES = 3  # allocator and cache warm-up at the start of every run


def batch_times(job: TrainJob, probe: ProbeLike | None = None, plugins: Sequence[TrainerPlugin] = ()) -> np.ndarray:
    """Seconds between successive batch ends, warm-up dropped.

    The stopwatch is the trainer's on_batch callback, called after the probe's
    end_batch, so a probed run pays its probe inside these intervals.
    """
    stamps: list[float] = []
    fit(job, probe=probe, plugins=plugins, on_batch=lambda *_: stamps.append(time.perf_counter()))
    return np.diff(stamps)[WARMUP_BATCHES:]


def interleave(blocks: int, runs: dict[str, Callable[[], np.ndarray]]) -> dict[str, np.ndarray]:
    """Run each named measurement `blocks` times, alternating A B A B ..., and pool them."""
    pooled: dict[str, list[np.ndarray]] = {name: [] for name in runs}
    for _ in range(blocks):
        for name, run in runs.items():
            pooled[name].append(run())
    return {name: np.concatenate(parts) for name, parts in pooled.items()}


def median_ratio(numerator: np.ndarray, denominator: np.ndarray) -> float:
    return float(np.median(numerator) / np.median(denominator))
