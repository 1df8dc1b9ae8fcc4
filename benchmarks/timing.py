"""Batch timings of real training runs, for ratios measured within one process.

These machines are noisy: absolute times are not comparable between runs, so every
measure here is a ratio of two things timed in the same process, in interleaved blocks
so that drift of the machine's speed hits both sides alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from dcnprobe.model.gated_dcnv3 import ModelOutput, training_loss
from dcnprobe.model.plugins import TrainerPlugin
from dcnprobe.model.presets import Hyperparams
from dcnprobe.model.trainer import TrainJob, fit

from dcnprobe.hooks import ProbeLike
from dcnprobe.ratios import BOOTSTRAP_SAMPLES, CONFIDENCE, percentile_interval

WARMUP_BATCHES = 3  # allocator and cache warm-up at the start of every run


def batch_times(job: TrainJob, probe: ProbeLike | None = None, plugins: Sequence[TrainerPlugin] = ()) -> np.ndarray:
    """Seconds between successive batch ends, warm-up dropped.

    The stopwatch is the trainer's on_batch callback, called after the probe's
    end_batch, so a probed run pays its probe inside these intervals.
    """
    stamps: list[float] = []
    fit(job, probe=probe, plugins=plugins, on_batch=lambda *_: stamps.append(time.perf_counter()))
    return np.diff(stamps)[WARMUP_BATCHES:]


def step_times(forward: Callable[[torch.Tensor, torch.Tensor], ModelOutput], model: torch.nn.Module,
               optimizer: torch.optim.Optimizer, batches: Sequence[tuple[torch.Tensor, ...]], hp: Hyperparams,
               tri_bce: bool) -> np.ndarray:
    """Seconds of each training step (forward, loss, backward, clip, optimizer step) on
    batches already in memory, warm-up dropped: a step with nothing of the trainer's
    loop around it."""
    model.train()
    times = []
    for categorical, numeric, label in batches:
        began = time.perf_counter()
        loss = training_loss(forward(categorical, numeric), label, hp.label_smoothing, tri_bce)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.clip_norm)
        optimizer.step()
        times.append(time.perf_counter() - began)
    return np.array(times[WARMUP_BATCHES:])


def median_ratio(numerator: np.ndarray, denominator: np.ndarray) -> float:
    return float(np.median(numerator) / np.median(denominator))


# -- paired segments: (measured, bare) neighbours of one process, the machine's drift levelled --

Pairs = list[tuple[np.ndarray, np.ndarray]]


def segment_pairs(segments: list[tuple[bool, list[float]]]) -> Pairs:
    """(probed, bare) neighbouring segments, in that order, both non-empty."""
    return [(np.asarray(probed), np.asarray(bare)) for (on, probed), (off, bare)
            in zip(segments[::2], segments[1::2]) if on and not off and probed and bare]


def _levelled(pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's batch times divided by that pair's own median, as (pairs, longest
    segment) arrays padded with NaN."""
    width = max(max(p.size, b.size) for p, b in pairs)
    probed = np.full((len(pairs), width), np.nan)
    bare = np.full((len(pairs), width), np.nan)
    for row, (p, b) in enumerate(pairs):
        probed[row, :p.size] = p
        bare[row, :b.size] = b
    level = np.nanmedian(np.hstack([probed, bare]), axis=1, keepdims=True)
    return probed / level, bare / level


def levelled_ratio(pairs: Pairs) -> float:
    """median(probed) / median(bare) after dividing each pair's batch times by that pair's
    own median: the machine's drift between pairs (here about 8% from pair to pair, with
    10% batch-to-batch scatter) cancels, the probe's cost within a pair stays."""
    probed, bare = _levelled(pairs)
    return float(np.nanmedian(probed) / np.nanmedian(bare))


def paired_interval(segments: list[tuple[bool, list[float]]], confidence: float = CONFIDENCE,
                    samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the levelled ratio, resampling whole (probed,
    bare) segment pairs."""
    pairs = segment_pairs(segments)
    if len(pairs) < 2:
        return float("nan"), float("nan")
    probed, bare = _levelled(pairs)
    picks = np.random.default_rng(seed).integers(0, len(pairs), (samples, len(pairs)))
    ratios = (np.nanmedian(probed[picks].reshape(samples, -1), axis=1)
              / np.nanmedian(bare[picks].reshape(samples, -1), axis=1))
    return percentile_interval(ratios, confidence)


def paired_ratio(segments: list[tuple[bool, list[float]]]) -> dict[str, Any]:
    """A ratio judged like the overheads: measured over bare, levelled per segment pair,
    with its paired bootstrap interval; the pooled ratio of medians for reference."""
    return {"value": levelled_ratio(segment_pairs(segments)), "unit": "ratio",
            "interval": list(paired_interval(segments)), "detail": _pooled_detail(segments)}


def _pooled_detail(segments: list[tuple[bool, list[float]]]) -> dict[str, Any]:
    """Every measured batch against every bare one, unpaired: for reference."""
    measured = np.concatenate([t for on, t in segments if on])
    bare = np.concatenate([t for on, t in segments if not on])
    return {"pooled_median_ratio": median_ratio(measured, bare),
            "measured_median_s": float(np.median(measured)), "bare_median_s": float(np.median(bare)),
            "batches_each": int(min(measured.size, bare.size))}


# -- pairs from several processes: what differs from one process to the next counted too --

def clustered_paired_ratio(groups: list[list[tuple[bool, list[float]]]], confidence: float = CONFIDENCE,
                           samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """paired_ratio over the segments of several processes (one list each), its interval
    from a two-level bootstrap: processes resampled, then pairs within each process drawn.

    One process's pairs share its memory layout, its allocator's history, where the
    kernel placed its pages: no-op hooks measured 0.998-1.018 in six processes here, each
    with a single-process interval about ±0.5% wide, and two of those intervals did not
    overlap. Pairs resampled alone call that spread certainty; resampling processes as
    well puts it in the interval. With one process the interval is the pairs' alone (and
    `processes` in the detail says so)."""
    per_process = [pairs for pairs in (segment_pairs(g) for g in groups) if len(pairs) >= 2]
    if not per_process:
        raise ValueError("no process has two (measured, bare) pairs")
    probed, bare = _levelled([pair for pairs in per_process for pair in pairs])  # a row a pair
    sizes = np.array([len(pairs) for pairs in per_process])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed)
    ratios = np.empty(samples)
    for i in range(samples):
        picked = rng.integers(0, len(sizes), len(sizes)) if len(sizes) > 1 else [0]
        rows = np.concatenate([starts[g] + rng.integers(0, sizes[g], sizes[g]) for g in picked])
        ratios[i] = np.nanmedian(probed[rows]) / np.nanmedian(bare[rows])
    own = [slice(start, start + size) for start, size in zip(starts, sizes)]
    return {"value": float(np.nanmedian(probed) / np.nanmedian(bare)), "unit": "ratio",
            "interval": list(percentile_interval(ratios, confidence)),
            "detail": {"processes": len(sizes),
                       "process_ratios": [float(np.nanmedian(probed[rows]) / np.nanmedian(bare[rows])) for rows in own],
                       # Of means: what a cost paid at few batches (a periodic check, a flush)
                       # adds, which the medians do not see; noisier.
                       "levelled_mean_ratio": float(np.nanmean(probed) / np.nanmean(bare)),
                       **_pooled_detail([segment for group in groups for segment in group])}}
