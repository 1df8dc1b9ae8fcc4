"""Scenarios for the causes documented on the seed report's platform (Apple MPS, macOS),
reproduced as honestly as a Linux CPU machine allows. Each docstring says what it
stands for and where it differs from the real thing.

MPS allocator retention has no scenario here: driver memory that the allocator keeps
needs the MPS driver. It is tested against a fake torch.mps module instead
(tests/test_devices.py), and said to be a fake there.
"""

from __future__ import annotations

import atexit
import mmap
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from dcnprobe.model.faults.base import Fault
from dcnprobe.model.faults.cgroup import MemoryGroup, find_memory_group
from torch import nn
from torch.utils.data import Dataset

from dcnprobe import Settings

# -- workers re-spawned each epoch ------------------------------------------------------


class _HeavyPickle(Dataset):
    """The dataset plus a vocabulary held as a Python dict of tuples (an id -> (id, token,
    weight) table, as text pipelines build). Cheap to fork, costly to pickle: under
    `spawn` every new worker receives and unpickles the whole graph before its first batch."""

    ENTRIES = 600_000

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner
        self.vocabulary = {i: (i, f"token-{i}", i / self.ENTRIES) for i in range(self.ENTRIES)}

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index):
        self.vocabulary.get(int(np.atleast_1d(index)[0]))  # the lookup the table exists for
        return self.inner[index]


class SpawnRespawn(Fault):
    """Stands for: DataLoader workers started with `spawn` (macOS's default) and not kept
    across epochs. Every epoch starts new workers; each starts a fresh interpreter,
    re-imports torch and the dataset's module, and unpickles the dataset, before its
    first batch (pytorch/pytorch#103117, #70344).

    Real here: the spawn start method, the per-worker import and the unpickling of a
    dataset that holds a large Python object graph. Differs: macOS's spawn is the
    default there, set explicitly here; and its import costs (framework loading, code
    signing checks) are not the same as Linux's.

    The cost lands at every epoch start, epoch 1 included, so the epoch-over-epoch ratio
    hardly moves: the analysis must find it from each epoch's first wait for data."""

    name = "spawn-respawn"
    cause = "worker-respawn"
    summary = "workers spawned afresh each epoch, each unpickling a large Python vocabulary"
    shows_with = {"num_workers": 2, "persistent_workers": False, "start_method": "spawn"}

    def wrap_dataset(self, dataset: Dataset, settings: Settings) -> Dataset:
        return _HeavyPickle(dataset)


# -- a graph cache that grows with distinct batch shapes --------------------------------


class _VaryingBatches(Dataset):
    """From epoch 2, each batch is cut to one of a few sizes just under the configured
    one (as the last batch of a bucket, or padding by sequence length, would make):
    a handful of new shapes the model has not seen. Epoch 1 keeps the full size."""

    SIZES = 12  # distinct sizes in later epochs
    STEP = 8  # rows between sizes

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner
        self.epoch = 1  # set from the main process; the scenario runs without workers

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index):
        item = self.inner[index]
        if self.epoch < 2 or np.ndim(index) == 0:
            return item
        which = int(np.random.default_rng([self.epoch, int(np.atleast_1d(index)[0])]).integers(1, self.SIZES + 1))
        keep = max(1, len(item[-1]) - self.STEP * which)
        return tuple(t[:keep] for t in item)


class ShapeRecompile(Fault):
    """Stands for: the MPS graph cache, which compiles one Metal graph per distinct input
    shape and keeps them all (pytorch/pytorch#77753, #181213): every batch of a shape
    never seen before pays a compilation inside its forward.

    Real here: the model's forward goes through `torch.compile(dynamic=False)` (the
    dynamo front end, eager back end), which specialises on shapes and recompiles for
    every new batch size, keeping each compiled graph; the limit on recompilations is
    raised, as MPS has none. Differs: MPS compiles Metal kernels and its cache grows
    driver memory, which a CPU cannot show; here the cost is the graph capture per shape,
    and only batch sizes vary (from epoch 2, a dozen sizes just under the configured one).
    Batched loader style only (the per-sample style leaves the batch size alone)."""

    name = "shape-recompile"
    cause = "shape-cache"
    summary = "model compiled per batch shape; from epoch 2 batch sizes vary: each new shape recompiles"
    shows_with = {"num_workers": 0}
    RECOMPILE_LIMIT = 1024

    def __init__(self) -> None:
        self.datasets: list[_VaryingBatches] = []

    def wrap_dataset(self, dataset: Dataset, settings: Settings) -> Dataset:
        wrapped = _VaryingBatches(dataset)
        self.datasets.append(wrapped)
        return wrapped

    def on_train_start(self, model: nn.Module) -> None:
        import torch._dynamo

        config = torch._dynamo.config
        for limit in ("cache_size_limit", "recompile_limit"):  # the name changed across torch versions
            if hasattr(config, limit):
                setattr(config, limit, self.RECOMPILE_LIMIT)
        model.forward = torch.compile(model.forward, backend="eager", dynamic=False)

    def on_epoch_start(self, epoch: int) -> None:
        for dataset in self.datasets:
            dataset.epoch = epoch


# -- memory over-committed: a knee, not a slope ------------------------------------------


COPY_PREFIX = "dcnprobe-knee-"


def _remove_stale_copies() -> None:
    """Data copies left by knee runs that were killed (by the OOM killer, say) before exit."""
    for stale in Path(tempfile.gettempdir()).glob(f"{COPY_PREFIX}*-*"):
        pid = stale.name[len(COPY_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)


class MemoryKnee(Fault):
    """Stands for: unified memory over-committed on macOS (pytorch/pytorch PR #165522):
    nothing changes until memory runs out, then the system pages and every batch waits
    on the disk. A knee in batch time, with page-ins, not a slope.

    Real here: the trial runs under a memory limit, a child memory cgroup it moves
    itself into at start (cgroup v2 `memory.high` where the machine has a usable one,
    else v1 `memory.limit_in_bytes`), over a private copy of the memory-mapped data
    store whose pages are charged to that group. From epoch 2 it leaks anonymous memory
    each batch until the group's file pages fall to a floor below the data's working
    set (released at each epoch end, before validation's bigger batches): the kernel
    then reclaims data pages and each batch faults them back in from
    disk (major page faults; the copy is mapped MADV_RANDOM, so a miss reads its page,
    as a page-in does, not the disk's whole read-ahead window). Reclaim, not extra work,
    is what slows it. Differs: there is no swap here, so it is file pages, not the
    program's own memory, that are paged; macOS compresses memory before it swaps; the
    knee's depth depends on this disk (a virtual disk whose host caches it: shallow).

    Needs root and a memory controller: without them it says so in one line and plants
    nothing (the run is then healthy). The group and the copy are removed at exit."""

    name = "memory-knee"
    cause = "memory-pressure"
    summary = ("under a cgroup memory limit, leaks from epoch 2 until the data store's pages are reclaimed "
               "and re-read each batch (needs root and a memory cgroup; else skipped, said in one line)")
    shows_with = {"num_workers": 0}
    HEADROOM = 768 << 20  # above the group's usage at train start: epoch 1's own allocations fit
    CHUNK = 128 << 20  # leaked at most per batch of later epochs: the knee comes within a few batches
    FLOOR = 64 << 20  # file pages left to the group: well under the data's working set (~200 MB)

    @classmethod
    def unavailable(cls) -> str | None:
        group, why_not = find_memory_group()
        return None if group is not None else why_not

    def __init__(self) -> None:
        self.group: MemoryGroup | None = None
        self.copy: Path | None = None
        self.leaked: list[np.ndarray] = []
        self.epoch = 1

    def wrap_dataset(self, dataset: Dataset, settings: Settings) -> Dataset:
        from dcnprobe.model.data.loader import make_dataset
        from dcnprobe.model.data.table import Table

        table = getattr(dataset, "table", None)
        if not isinstance(table, Table):
            print(f"memory-knee: skipped: needs the built-in dataset, got {type(dataset).__name__}", file=sys.stderr)
            return dataset
        group, why_not = find_memory_group()
        if group is None:
            print(f"memory-knee: skipped: {why_not}", file=sys.stderr)
            return dataset
        group.join()
        self.group = group
        atexit.register(self._clean_up)
        # A private copy, read and written by this process inside the group: its page cache
        # is charged here, so the limit can reclaim it (pages of the shared store are
        # charged to whoever read them first, out of the limit's reach).
        self.copy = Path(tempfile.mkdtemp(prefix=f"{COPY_PREFIX}{os.getpid()}-"))
        _remove_stale_copies()
        for path in table.root.iterdir():
            shutil.copyfile(path, self.copy / path.name)
        private = Table(self.copy, table.start, table.stop)
        for array in (private.categorical, private.numeric, private.label):
            # Page in what each access needs, as a swapped-out page comes back on macOS,
            # not the disk's read-ahead window around it (8 MB on this machine's disk:
            # a miss would re-read most of the file in a handful of faults).
            array._mmap.madvise(mmap.MADV_RANDOM)
        return make_dataset(private, settings.loader)

    def on_train_start(self, model: nn.Module) -> None:
        if self.group is not None:
            self.group.limit(self.group.usage() + self.HEADROOM)

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def after_step(self, epoch, batch, logit, loss, label) -> None:
        if self.group is None or self.epoch < 2:
            return
        cached = self.group.file_bytes()
        grow = min(self.CHUNK, cached - self.FLOOR)  # never below the floor in one step
        if grow >= 8 << 20:
            self.leaked.append(np.ones(grow // 8))  # touched: resident, and never reclaimable without swap
        elif cached < self.FLOOR and self.leaked:
            self.leaked.pop()  # give some back: without swap, a group out of file pages is OOM-killed, not slowed

    def on_epoch_end(self, epoch: int) -> None:
        # Validation takes bigger batches than training: with the leak still held the
        # group would be OOM-killed there (measured). The leak grows again next epoch.
        self.leaked.clear()

    def _clean_up(self) -> None:  # at exit; a killed run's leftovers go at the next run's start
        self.leaked.clear()
        if self.group is not None:
            self.group.leave()
            self.group = None
        if self.copy is not None:
            shutil.rmtree(self.copy, ignore_errors=True)
            self.copy = None


