"""A slowdown that dcnprobe does not know, planted from outside the project the way a
user would: a file passed as `--fault tests/plugins/slow_loader.py:SlowPersistentLoader`.

Each DataLoader worker counts the batches it has served since it started and sleeps a
little longer for every one: only workers that live across epochs get slow.
"""

import time

from dcnprobe.model.plugins import TrainerPlugin

_served = None  # per worker process; None in the main process


class _Counting:
    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        global _served
        if _served is not None:
            _served += 1
            time.sleep(0.02 * _served)
        return self.inner[index]


class SlowPersistentLoader(TrainerPlugin):
    def wrap_dataset(self, dataset, settings):
        return _Counting(dataset)

    def worker_init(self, worker_id):
        global _served
        _served = 0


class SlowerEachEpoch(TrainerPlugin):
    """Epoch 2 and later sleep in the loop: a plain step slowdown in the main process."""

    def __init__(self):
        self.epoch = 1

    def on_epoch_start(self, epoch):
        self.epoch = epoch

    def after_step(self, epoch, batch, logit, loss, label):
        if epoch >= 2:
            time.sleep(0.03)
