"""A training loop that validates after every epoch, the usual way: `model.eval()` and
`torch.no_grad()` over a second DataLoader. It knows nothing of dcnprobe.

With the probe attached (`dcnprobe run -- python examples/validate_each_epoch.py`), the
validation passes are recorded as `validation` records and never counted as epochs:
the record has exactly as many epochs as the script trains. `--eval-only-mode` validates
with `model.eval()` alone (no no_grad), which the probe also recognises.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(rows: int, features: int, generator: torch.Generator) -> TensorDataset:
    x = torch.randn(rows, features, generator=generator)
    y = x[:, :1] * 2.0 - x[:, 1:2] + 0.1 * torch.randn(rows, 1, generator=generator)
    return TensorDataset(x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--val-rows", type=int, default=1024)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--eval-only-mode", action="store_true", help="validate under model.eval() without no_grad")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    train = DataLoader(make_data(args.rows, args.features, generator), batch_size=args.batch_size, shuffle=True,
                       num_workers=args.workers)
    val = DataLoader(make_data(args.val_rows, args.features, generator), batch_size=256)
    model = nn.Sequential(nn.Linear(args.features, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    steps = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        batches = 0
        for x, y in train:
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batches += 1
        steps += batches
        model.eval()
        val_loss, val_batches = 0.0, 0
        with torch.set_grad_enabled(args.eval_only_mode):
            for x, y in val:
                val_loss += nn.functional.mse_loss(model(x), y).item()
                val_batches += 1
        print(f"epoch {epoch}: {batches} batches, validation {val_batches} batches, "
              f"val loss {val_loss / val_batches:.4f}", flush=True)
    print(f"done: {args.epochs} epochs, {steps} steps", flush=True)


if __name__ == "__main__":
    main()
