"""Extension points of the trainer.

A plugin can change the settings it runs under, wrap the dataset, run code in each
DataLoader worker, and act at epoch and step boundaries. dcnprobe's slowdown scenarios
(`--fault`) are plugins: they reproduce a mechanism through these points, so the
training loop carries no special cases for them. With no plugins the loop pays nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from dcnprobe import Settings


class TrainerPlugin:
    """Every hook is a no-op; override the ones you need."""

    def configure(self, settings: Settings) -> Settings:
        """Settings this plugin needs, stated, not toggled: applying it twice changes nothing."""
        return settings

    def wrap_dataset(self, dataset: Dataset, settings: Settings) -> Dataset:
        return dataset

    def worker_init(self, worker_id: int) -> None:
        """Runs inside each DataLoader worker process when it starts."""

    def on_train_start(self, model: nn.Module) -> None:
        pass

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def after_step(self, epoch: int, batch: int, logit: torch.Tensor, loss: torch.Tensor, label: torch.Tensor) -> None:
        """After the optimizer step of every batch, inside the batch's timing."""

    def on_epoch_end(self, epoch: int) -> None:
        pass


def configured(settings: Settings, plugins: Sequence[TrainerPlugin]) -> Settings:
    """The settings a run uses once every plugin has stated what it needs."""
    for plugin in plugins:
        settings = plugin.configure(settings)
    return settings


class WorkerInit:
    """A picklable worker_init_fn that runs every plugin's worker hook (spawn needs pickling)."""

    def __init__(self, plugins: Sequence[TrainerPlugin]) -> None:
        self.plugins = tuple(plugins)

    def __call__(self, worker_id: int) -> None:
        for plugin in self.plugins:
            plugin.worker_init(worker_id)
