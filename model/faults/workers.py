"""Scenarios inside DataLoader workers.

Each wraps the dataset. The wrappers keep the indexing contract of the wrapped dataset
(a batch of indices in the `batched` style, one index in `per-sample`), so they work
with either loader style.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch
from dcnprobe.model.faults.base import Fault
from torch.utils.data import Dataset

from dcnprobe import Settings


class _RowObjects(Dataset):
    """The table held as one Python bytes object per row, as datasets built from lists of
    records are. Reading a row bumps its refcount, which writes to the page holding it:
    in a forked worker that page is then copied (copy-on-read), so worker memory grows
    with every distinct row read although nothing is stored."""

    def __init__(self, inner: Dataset) -> None:
        from dcnprobe.model.data.loader import BatchedDataset

        table = inner.table
        self.batched = isinstance(inner, BatchedDataset)
        self.cat_width, self.num_width = table.categorical.shape[1], table.numeric.shape[1]
        packed = np.concatenate(
            [np.asarray(table.categorical).view(np.uint8).reshape(len(table), -1),
             np.asarray(table.numeric).view(np.uint8).reshape(len(table), -1),
             np.asarray(table.label).view(np.uint8).reshape(len(table), -1)], axis=1)
        self.rows = [row.tobytes() for row in packed]

    def __len__(self) -> int:
        return len(self.rows)

    def _decode(self, index) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        indices = np.atleast_1d(index)
        raw = np.frombuffer(b"".join([self.rows[i] for i in indices]), dtype=np.uint8).reshape(len(indices), -1)
        cut = 4 * self.cat_width
        categorical = raw[:, :cut].copy().view(np.int32)
        numeric = raw[:, cut : cut + 4 * self.num_width].copy().view(np.float32)
        label = raw[:, cut + 4 * self.num_width :].copy().view(np.float32).reshape(-1)
        return torch.from_numpy(categorical), torch.from_numpy(numeric), torch.from_numpy(label)

    def __getitem__(self, index):
        categorical, numeric, label = self._decode(index)
        if self.batched:
            return categorical, numeric, label
        return categorical[0], numeric[0], label[0]


class WorkerCopyOnRead(Fault):
    name = "worker-copy-on-read"
    cause = "worker-memory-growth"
    summary = "dataset of Python objects: forked workers copy every page they read"
    shows_with = {"num_workers": 2, "persistent_workers": True}

    def wrap_dataset(self, dataset: Dataset, settings: Settings) -> Dataset:
        return _RowObjects(dataset)


# Per-worker state, made by the worker init hook in each worker process; never set in
# the main process. It survives across epochs only when the workers do.
_history: list[tuple[tuple[torch.Tensor, ...], list[np.ndarray]]] | None = None
_KEY_FIELDS = 8


class _History(Dataset):
    """Each worker keeps every batch it produced and checks each new batch against all of
    them, field by field on eight ID fields (a "never repeat a sample" filter)."""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index):
        item = self.inner[index]
        if _history is not None:
            fields = item[0].reshape(-1, item[0].shape[-1]).numpy()
            keys = [fields[:, f] for f in range(_KEY_FIELDS)]
            for _, seen in _history:
                for key, old in zip(keys, seen):
                    np.isin(key, old, kind="sort")  # the per-batch work that grows with the history
            _history.append((tuple(t.clone() for t in item), [np.sort(k) for k in keys]))
        return item


class WorkerStall(Fault):
    name = "worker-stall"
    cause = "worker-memory-growth"
    summary = "workers keep every batch they made and check new ones against all of it"
    shows_with = {"num_workers": 4, "persistent_workers": True}

    def wrap_dataset(self, dataset: Dataset, settings: Settings) -> Dataset:
        return _History(dataset)

    def worker_init(self, worker_id: int) -> None:
        global _history
        _history = []


# A lock taken by a background "log flusher" thread of the main process. A process
# forked while another thread holds a lock inherits the lock held, with no thread left
# to release it: the classic fork-with-threads deadlock.
_LOG_LOCK = threading.Lock()


class _LogsEveryFewBatches(Dataset):
    EVERY = 8

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner
        self.served = 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index):
        self.served += 1
        if self.served % self.EVERY == 0:
            with _LOG_LOCK:  # append a line to the shared log
                pass
        return self.inner[index]


class WorkerHang(Fault):
    """From epoch 2 a background thread flushes logs under a lock for a few seconds at
    each epoch start, exactly when non-persistent workers are forked. Those workers
    inherit the lock held and block forever the first time they log: a worker stops
    producing and the loop waits on it."""

    name = "worker-hang"
    cause = "stall"
    summary = "workers forked while a lock is held deadlock on it: the loader stops producing"
    shows_with = {"num_workers": 2, "persistent_workers": False}
    FLUSH_S = 3.0

    def wrap_dataset(self, dataset: Dataset, settings: Settings) -> Dataset:
        return _LogsEveryFewBatches(dataset)

    def on_epoch_start(self, epoch: int) -> None:
        if epoch < 2:
            return
        holding = threading.Event()

        def flush() -> None:
            with _LOG_LOCK:
                holding.set()
                time.sleep(self.FLUSH_S)

        threading.Thread(target=flush, name="log-flusher", daemon=True).start()
        holding.wait()
