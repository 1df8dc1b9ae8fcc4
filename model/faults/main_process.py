"""Scenarios in the training process itself."""

from __future__ import annotations

import numpy as np
import torch
from dcnprobe.model.faults.base import Fault
from dcnprobe.model.metrics import roc_auc
from torch import nn

from dcnprobe import Settings


class GraphRetention(Fault):
    """Keeps every batch's field embeddings "for a later plot", forgetting .detach():
    each kept tensor holds its storage and autograd node. Memory grows by ~3 MB per
    batch at batch 4096; compute per batch does not change."""

    name = "graph-retention"
    cause = "graph-retention"
    summary = "keeps each batch's embeddings without .detach(): memory grows, time does not"

    def __init__(self) -> None:
        self.kept: list[torch.Tensor] = []

    def on_train_start(self, model: nn.Module) -> None:
        model.embedding.register_forward_hook(lambda module, inputs, output: self.kept.append(output))


class UnboundedMetric(Fault):
    """A running train AUC recomputed every batch over a prediction buffer that is never
    reset: each batch sorts everything seen so far, so batch time rises linearly."""

    name = "unbounded-metric"
    cause = "metric-accumulation"
    summary = "recomputes a train AUC over an ever-growing, never-reset buffer every batch"

    def __init__(self) -> None:
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.running_auc = float("nan")

    def after_step(self, epoch, batch, logit, loss, label) -> None:
        self.scores.append(logit.detach().float().cpu().numpy())
        self.labels.append(label.detach().cpu().numpy())
        self.running_auc = roc_auc(np.concatenate(self.scores), np.concatenate(self.labels))


class HeapGrowth(Fault):
    """Keeps a small Python list per sample ("per-row debug log"): millions of tracked
    objects, so every generation-2 collection walks a bigger heap and pauses longer."""

    name = "heap-growth"
    cause = "gc-pressure"
    summary = "keeps a small Python object per sample: GC pauses grow with the heap"

    def __init__(self) -> None:
        self.log: list[list[float]] = []

    def after_step(self, epoch, batch, logit, loss, label) -> None:
        self.log.extend([epoch, batch, score] for score in logit.detach().tolist())


class MemoryPressure(Fault):
    """Leaks 8 MiB per batch and touches everything leaked so far every batch, as a cache
    that is scanned but never evicted would: the cost grows with the leak. This is the
    CPU analogue of the report's unified memory over-committed into swap."""

    name = "memory-pressure"
    cause = "memory-pressure"
    summary = "leaks 8 MiB per batch and rereads all of it every batch: cost grows with the leak"
    CHUNK = 8 << 20

    def __init__(self) -> None:
        self.leaked: list[np.ndarray] = []

    def after_step(self, epoch, batch, logit, loss, label) -> None:
        self.leaked.append(np.ones(self.CHUNK // 8))
        for chunk in self.leaked:  # read and write every page, as paging it back in would
            chunk += 1.0


class CacheThrash(Fault):
    """Releases cached memory after every batch (gc.collect + malloc_trim on the CPU,
    empty_cache on a GPU), as a loop that calls torch.mps.empty_cache() per batch does."""

    name = "cache-thrash"
    cause = "cache-clearing-cost"
    summary = "clears caches after every batch"

    def configure(self, settings: Settings) -> Settings:
        return settings.with_changes({"cache_clear": "every:1"})
