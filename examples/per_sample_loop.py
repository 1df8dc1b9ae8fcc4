"""A plain PyTorch training loop, the way most user code is written: a per-sample
`Dataset` (`__getitem__` per row, the default collate), a DataLoader, an MLP, AdamW.
It knows nothing of dcnprobe; attach the probe from outside:

    dcnprobe run --out runs/plain -- python examples/per_sample_loop.py --workers 2
    dcnprobe run --out runs/scan -- python examples/per_sample_loop.py --fault history-scan

Planted faults (--fault), each a real way for later epochs to get slower:
    worker-history  each DataLoader worker remembers every sample it served and checks
                    each new one against all of them, field by field (12 fields; about
                    2x at 100 batches an epoch on 2 cores). New workers start empty each epoch;
                    persistent workers (--persistent-workers) carry the history on, so later
                    epochs wait longer for data (the loader, not the model, slows down).
    history-scan    the loop keeps every prediction of the run and recomputes a running
                    ranking metric over all of them each batch (`scan_history`): time in
                    the loop's own code grows with every batch.
    hang            from epoch 2, workers block for good after a few samples: the loop
                    waits forever on the loader (a stall; needs --workers > 0 to be a
                    worker's fault, else the main process blocks itself).
    worker-leak     each DataLoader worker keeps a copy of every sample it serves, widened
                    to 4 KB (a per-worker cache of decoded samples that is never read back
                    nor evicted): worker memory grows with every batch, the work does not.
                    New workers start empty each epoch; persistent workers keep growing.

--log-batches FILE appends the wall-clock time at the end of each batch (one per line), so
that what an observer costs the run can be measured from the run's own timestamps.

It prints its own counts ("epoch 2: 64 batches") so that a record can be checked against them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, get_worker_info

FAULTS = ("worker-history", "history-scan", "hang", "worker-leak")
HANG_AFTER_SAMPLES = 200  # per worker, in the epoch the hang starts
KEY_FIELDS = 12  # worker-history compares this many fields of each sample with its history
LEAK_WIDTH = 32  # worker-leak keeps each sample repeated this many times: 32 x 32 floats = 4 KB


class Rows(Dataset):
    """Synthetic rows with a learnable target, served one at a time."""

    def __init__(self, rows: int, features: int, seed: int, fault: str | None) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(rows, features, generator=generator)
        weights = torch.randn(features, 1, generator=generator)
        self.y = (self.x @ weights + 0.1 * torch.randn(rows, 1, generator=generator) > 0).float()
        self.fault = fault
        # The epoch, shared with worker processes (forked or spawned) so they can see it.
        self.epoch = multiprocessing.RawValue("i", 1)  # no lock: it has one writer, and fits any start method
        self.served = 0  # per process: each worker has its own copy
        self.history: list[list[float]] = []  # per worker: see --fault worker-history
        self.kept: list[torch.Tensor] = []  # per worker: see --fault worker-leak

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        x, y = self.x[index], self.y[index]
        if self.fault == "worker-history" and get_worker_info() is not None:
            key = x[:KEY_FIELDS].tolist()
            for field, value in enumerate(key):  # "served before?", field by field, against everything
                sum(1 for seen in self.history if seen[field] == value)
            self.history.append(key)
        elif self.fault == "worker-leak" and get_worker_info() is not None:
            self.kept.append(x.repeat(LEAK_WIDTH))  # "cached", never read again
        elif self.fault == "hang" and self.epoch.value >= 2:
            self.served += 1
            if self.served > HANG_AFTER_SAMPLES:
                threading.Event().wait()  # blocks for good: nothing will ever set it
        return x, y


def scan_history(predictions: list[float], labels: list[float]) -> float:
    """A running ranking metric over every prediction so far: the share of positives
    ranked above the median. Sorting the whole history each batch is the planted cost."""
    ranked = sorted(zip(predictions, labels))
    top = ranked[len(ranked) // 2:]
    return sum(label for _, label in top) / max(1, len(top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    # 200 batches of a few milliseconds of compute each: enough batches for an epoch's
    # statistics, and enough work per batch that timer and scheduling noise stay small.
    parser.add_argument("--rows", type=int, default=12800)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--persistent-workers", action="store_true")
    parser.add_argument("--fault", choices=FAULTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps: where the model runs (the data is served on the CPU)")
    parser.add_argument("--log-batches", metavar="FILE", help="append each batch's end (wall-clock seconds) to FILE")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    dataset = Rows(args.rows, args.features, args.seed, args.fault)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        persistent_workers=args.persistent_workers and args.workers > 0)
    model = nn.Sequential(nn.Linear(args.features, args.hidden), nn.ReLU(), nn.Linear(args.hidden, args.hidden), nn.ReLU(),
                          nn.Linear(args.hidden, 1)).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    predictions: list[float] = []
    labels: list[float] = []
    steps = 0
    # Line-buffered: each batch's time reaches the file at once, for a reader measuring while we run.
    batch_log = open(args.log_batches, "a", buffering=1) if args.log_batches else None  # noqa: SIM115
    for epoch in range(1, args.epochs + 1):
        dataset.epoch.value = epoch
        model.train()
        batches, loss_sum = 0, 0.0
        for x, y in loader:
            x, y = x.to(args.device), y.to(args.device)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            if args.fault == "history-scan":
                predictions += logits.detach().flatten().tolist()
                labels += y.flatten().tolist()
                scan_history(predictions, labels)
            batches += 1
            steps += 1
            if batch_log is not None:
                batch_log.write(f"{time.time():.6f}\n")
        print(f"epoch {epoch}: {batches} batches, loss {loss_sum / max(1, batches):.4f}", flush=True)
    print(f"done: {args.epochs} epochs, {steps} steps", flush=True)


if __name__ == "__main__":
    main()
