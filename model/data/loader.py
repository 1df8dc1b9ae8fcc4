"""DataLoaders over a Table, in two styles, with a shuffle that is a pure function of
(seed, epoch) so that a resumed run sees exactly the batches an uninterrupted one sees.

- batched:    the sampler yields arrays of row indices; the dataset slices whole batches
              from array storage at once (no per-row Python in the hot path).
- per-sample: the sampler's batches go through `__getitem__` row by row plus the default
              collate, the way most user code is written, because that is where worker
              problems live.

Both are a real `torch.utils.data.DataLoader`, so num_workers, persistent_workers,
pin_memory and prefetch_factor mean what they mean to users. Build one loader and
iterate it every epoch: persistent workers only mean something then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from dcnprobe.model.data.table import Table
from torch.utils.data import DataLoader, Dataset, Sampler

from dcnprobe import Settings

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # categorical, numeric, label


class EpochBatchSampler(Sampler[np.ndarray]):
    """Shuffled batches of row indices; the permutation depends only on (seed, epoch)."""

    def __init__(self, rows: int, batch_size: int, seed: int, max_batches: int | None = None) -> None:
        self.rows, self.batch_size, self.seed = rows, batch_size, seed
        self.max_batches = max_batches
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        batches = -(-self.rows // self.batch_size)
        return batches if self.max_batches is None else min(batches, self.max_batches)

    def __iter__(self) -> Iterator[np.ndarray]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.rows)
        for b in range(len(self)):
            # Sorted within the batch: the batch is the same set of rows, read in
            # storage order, which makes memory-mapped reads sequential.
            yield np.sort(order[b * self.batch_size : (b + 1) * self.batch_size])


class BatchedDataset(Dataset):
    """dataset[indices] -> one whole batch, sliced from the arrays in a few numpy calls."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: np.ndarray) -> Batch:
        categorical, numeric, label = self.table.rows(index)
        return torch.from_numpy(categorical), torch.from_numpy(numeric), torch.from_numpy(label)


class RowDataset(Dataset):
    """dataset[i] -> one row as tensors; batches come from the default collate."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> Batch:
        categorical, numeric, label = self.table.rows(int(index))
        return torch.from_numpy(np.array(categorical)), torch.from_numpy(np.array(numeric)), torch.tensor(label)


def make_dataset(table: Table, style: str) -> Dataset:
    return BatchedDataset(table) if style == "batched" else RowDataset(table)


def make_loader(
    dataset: Dataset,
    settings: Settings,
    *,
    max_batches: int | None = None,
    worker_init_fn: Callable[[int], None] | None = None,
) -> DataLoader:
    sampler = EpochBatchSampler(len(dataset), settings.batch_size, settings.seed, max_batches)
    workers = settings.num_workers
    batching = (
        {"sampler": sampler, "batch_size": None}  # the dataset makes whole batches
        if settings.loader == "batched"
        else {"batch_sampler": sampler}  # rows through __getitem__, then default collate
    )
    return DataLoader(
        dataset,
        **batching,
        num_workers=workers,
        persistent_workers=settings.persistent_workers,
        pin_memory=settings.pin_memory,
        prefetch_factor=settings.prefetch_factor if workers else None,
        multiprocessing_context=settings.start_method if workers else None,
        worker_init_fn=worker_init_fn,
        # A private generator: worker seeds must not consume the global RNG that dropout
        # uses, or a resumed run would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(settings.seed),
    )


def epoch_sampler(loader: DataLoader) -> EpochBatchSampler:
    """The loader's EpochBatchSampler, wherever the style put it."""
    sampler = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
    assert isinstance(sampler, EpochBatchSampler), "loader was not made by make_loader"
    return sampler
