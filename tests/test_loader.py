import numpy as np
import torch
from dcnprobe.model.data.loader import EpochBatchSampler, make_dataset, make_loader
from dcnprobe.model.data.source import load_data

from dcnprobe.settings import Settings


def batches(table, **settings):
    s = Settings(batch_size=1000, **settings)
    loader = make_loader(make_dataset(table, s.loader), s, max_batches=4)
    return loader, [tuple(t.clone() for t in b) for b in loader]


def test_sampler_depends_only_on_seed_and_epoch():
    a = EpochBatchSampler(1000, 100, seed=3)
    b = EpochBatchSampler(1000, 100, seed=3)
    first = [x.tolist() for x in a]
    assert first == [x.tolist() for x in b]
    a.set_epoch(2)
    second = [x.tolist() for x in a]
    assert first != second
    assert sorted(sum(second, [])) == list(range(1000))  # a permutation: every row once


def test_max_batches_caps_each_epoch():
    assert len(EpochBatchSampler(10_000, 100, seed=0, max_batches=7)) == 7
    assert len(list(EpochBatchSampler(250, 100, seed=0))) == 3  # last batch is partial


def test_batched_and_per_sample_styles_give_identical_batches(tiny_data):
    table = load_data(tiny_data).train
    _, fast = batches(table)
    _, rows = batches(table, loader="per-sample")
    assert len(fast) == len(rows) == 4
    for (c1, n1, y1), (c2, n2, y2) in zip(fast, rows):
        assert torch.equal(c1, c2) and torch.equal(n1, n2) and torch.equal(y1, y2)
        assert c1.shape == (1000, 16) and n1.dtype == torch.float32 and y1.shape == (1000,)


def test_workers_deliver_the_same_batches_as_the_main_process(tiny_data):
    table = load_data(tiny_data).train
    _, inline = batches(table)
    _, workers = batches(table, num_workers=2)
    for a, b in zip(inline, workers):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_persistent_workers_survive_epochs(tiny_data):
    """A real DataLoader: persistent workers are the same processes in epoch 2."""
    table = load_data(tiny_data).train
    s = Settings(batch_size=1000, num_workers=2, persistent_workers=True)
    loader = make_loader(PidDataset(table), s, max_batches=4)
    epoch1 = {int(pid) for _, pid in loader}
    epoch2 = {int(pid) for _, pid in loader}
    assert len(epoch1) == 2 and epoch1 == epoch2
    fresh = make_loader(PidDataset(table), Settings(batch_size=1000, num_workers=2), max_batches=4)
    assert {int(p) for _, p in fresh}.isdisjoint({int(p) for _, p in fresh})


class PidDataset(torch.utils.data.Dataset):
    def __init__(self, table):
        self.table = table

    def __len__(self):
        return len(self.table)

    def __getitem__(self, index):
        import os

        return torch.from_numpy(np.asarray(index)), torch.tensor(os.getpid())
