"""A hand-written training loop on Hugging Face Accelerate: prepared model, optimizer and
DataLoaders (accelerate's DataLoaderShard and AcceleratedOptimizer), gradient accumulation
with `accelerator.accumulate`, validation after each epoch. Knows nothing of dcnprobe;
writes what it did to truth.json (see ground_truth.py).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from ground_truth import Truth, counted_steps  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

FEATURES = 32


def rows(count: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, FEATURES, generator=generator)
    return TensorDataset(x, (x[:, :1] - x[:, 1:2] > 0).float())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--truth", default=None, help="where to write truth.json [$PROGRAM_TRUTH or ./truth.json]")
    args = parser.parse_args()

    torch.manual_seed(0)
    truth = Truth(args.truth)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=args.accumulate)
    model = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    counted_steps(optimizer, truth)  # the real optimizer: accelerate skips its step while accumulating
    train = DataLoader(rows(args.batches * args.batch_size, 0), batch_size=args.batch_size, shuffle=True)
    val = DataLoader(rows(4 * args.batch_size, 1), batch_size=args.batch_size)
    model, optimizer, train, val = accelerator.prepare(model, optimizer, train, val)
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(1, args.epochs + 1):
        truth.epoch_begin()
        model.train()
        for x, y in train:
            truth.batch()
            with accelerator.accumulate(model):
                loss = loss_fn(model(x), y)
                accelerator.backward(loss)
                optimizer.step()  # a real step only every --accumulate batches
                optimizer.zero_grad()
        model.eval()
        truth.validation_begin()
        with torch.no_grad():
            for x, y in val:
                loss_fn(model(x), y)
                truth.validation_batch()
        truth.validation_end()
        last = truth.epochs[-1]
        print(f"epoch {epoch}: {last['batches']} batches, {last['steps']} steps", flush=True)
    truth.write()


if __name__ == "__main__":
    main()
