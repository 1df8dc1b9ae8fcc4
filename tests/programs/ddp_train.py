"""A DistributedDataParallel program on gloo (CPU), for `torchrun --nproc-per-node N` or,
with --spawn, starting its own ranks with torch.multiprocessing. Knows nothing of dcnprobe.

Each rank counts its own epochs, batches and optimizer steps and writes them down
(truth-rank{R}.json beside --truth; see ground_truth.py), with its own median step time per
epoch by its own clock. Planted faults, each on one rank only:

    --slow-rank R --slow-ms M      rank R sleeps M ms in its loop before each step, from
                                   --slow-from-epoch on (the others wait for it in DDP's all-reduce)
    --leak-rank R                  rank R's dataset keeps a history in each DataLoader worker
                                   (a per-worker cache; none without workers) and, for every
                                   row, waits on a lookup that grows with it (--leak-us per entry)
                                   (--leak-kind wait: off the CPU, as a remote store would) or
                                   scans it (scan: CPU, which on a small machine slows every
                                   rank alike): with persistent workers the history, and the
                                   cost per row, grow epoch after epoch
    --crash-rank R                 rank R raises at --crash-batch of --crash-epoch
    --hang-rank R                  rank R blocks forever at --crash-batch of --crash-epoch
    --metric-allreduce             every rank all-reduces its loss after each step (an explicit
                                   collective, as a metric logger does)
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ground_truth import Truth, counted_steps
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

FEATURES = 32


class Rows(Dataset):
    def __init__(self, count: int, seed: int, leak: str | None, leak_us: float) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(count, FEATURES, generator=generator)
        self.y = (self.x[:, :1] - self.x[:, 1:2] > 0).float()
        self.leak, self.leak_us = leak, leak_us
        self.history: list[float] = []  # per worker process: kept for the worker's life

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.leak is None or get_worker_info() is None:
            pass
        elif self.leak == "wait":
            self.history.append(float(i))
            time.sleep(len(self.history) * self.leak_us * 1e-6)  # a lookup whose cost grows with the history
        else:
            self.history.extend([float(i)] * 64)
            sum(self.history)  # a statistic over everything seen, recomputed per row
        return self.x[i], self.y[i]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=40, help="batches per epoch on each rank")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--persistent-workers", action="store_true")
    parser.add_argument("--slow-rank", type=int, default=None)
    parser.add_argument("--slow-ms", type=float, default=20.0)
    parser.add_argument("--slow-from-epoch", type=int, default=2)
    parser.add_argument("--leak-rank", type=int, default=None)
    parser.add_argument("--leak-kind", choices=("wait", "scan"), default="wait")
    parser.add_argument("--leak-us", type=float, default=0.6)
    parser.add_argument("--crash-rank", type=int, default=None)
    parser.add_argument("--hang-rank", type=int, default=None)
    parser.add_argument("--crash-epoch", type=int, default=2)
    parser.add_argument("--crash-batch", type=int, default=10)
    parser.add_argument("--metric-allreduce", action="store_true")
    parser.add_argument("--spawn", type=int, default=None, metavar="N",
                        help="start N ranks with torch.multiprocessing instead of under torchrun")
    parser.add_argument("--truth", default="truth.json", help="truth-rank{R}.json are written beside this path")
    return parser.parse_args()


def train(rank: int, world: int, args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    truth = Truth(Path(args.truth).with_name(f"truth-rank{rank}.json"))
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    counted_steps(optimizer, truth)
    data = Rows(args.batches * args.batch_size * world, 0, leak=args.leak_kind if rank == args.leak_rank else None,
                leak_us=args.leak_us)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        persistent_workers=args.persistent_workers and args.workers > 0)
    loss_fn = nn.BCEWithLogitsLoss()
    medians, step_times = [], []
    for epoch in range(1, args.epochs + 1):
        sampler.set_epoch(epoch)
        truth.epoch_begin()
        model.train()
        steps = []
        began = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            truth.batch()
            if epoch == args.crash_epoch and i == args.crash_batch:
                if rank == args.crash_rank:
                    truth.write(rank=rank, world_size=world, crashed_at={"epoch": epoch, "batch": i})
                    raise RuntimeError(f"rank {rank}: planted crash at epoch {epoch}, batch {i}")
                if rank == args.hang_rank:
                    truth.write(rank=rank, world_size=world, hung_at={"epoch": epoch, "batch": i})
                    threading.Event().wait()  # blocks for good: the others wait in the all-reduce
            if rank == args.slow_rank and epoch >= args.slow_from_epoch:
                time.sleep(args.slow_ms / 1000)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if args.metric_allreduce:
                dist.all_reduce(loss.detach())
            now = time.perf_counter()
            steps.append(now - began)  # batch to batch, its wait for data included
            began = now
        medians.append(statistics.median(steps))
        step_times.append(steps)
    truth.write(rank=rank, world_size=world, median_step_s=medians, step_s=step_times)
    dist.destroy_process_group()


def main() -> None:
    args = parse()
    if args.spawn:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
        mp.spawn(train, args=(args.spawn, args), nprocs=args.spawn)
    else:  # torchrun: RANK and WORLD_SIZE from the environment
        train(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), args)


if __name__ == "__main__":
    main()
