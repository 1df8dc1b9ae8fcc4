"""A training loop with no DataLoader: the tensors are sliced by hand each batch, as in
many quick experiments. It knows nothing of dcnprobe.

The probe still sees every optimizer step as a batch; it cannot see where an epoch
ends, so say it from outside with the number of steps per epoch:

    dcnprobe run --epoch-every 32 -- python examples/no_dataloader.py      # 2048 rows / 64

or add one line at the end of each epoch: `dcnprobe.mark_epoch()`.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.rows, args.features, generator=generator)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(args.rows, 1, generator=generator)
    model = nn.Sequential(nn.Linear(args.features, 32), nn.Tanh(), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps = 0
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(args.rows, generator=generator)
        batches = 0
        for start in range(0, args.rows, args.batch_size):
            rows = order[start:start + args.batch_size]
            loss = nn.functional.mse_loss(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batches += 1
        steps += batches
        print(f"epoch {epoch}: {batches} batches, loss {loss.item():.4f}", flush=True)
    print(f"done: {args.epochs} epochs, {steps} steps", flush=True)


if __name__ == "__main__":
    main()
