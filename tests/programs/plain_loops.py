"""Hand-written PyTorch training loops in the shapes people write them, one per --shape.
Knows nothing of dcnprobe; writes what it did to truth.json (see ground_truth.py).

    accumulate   gradient accumulation: a step every 4 batches; the last 2 batches of each
                 epoch only accumulate (62 batches, 15 steps an epoch)
    amp-skip     an AMP GradScaler that skips the step of one batch whose gradients are inf
    lbfgs        LBFGS, whose step calls a closure that runs forward and backward several times
    eval-mode    validates under model.eval() after each epoch and forgets model.train():
                 epochs 2 and 3 train with the model in eval mode (a classic bug)
    iterable     an IterableDataset with no length, served by 2 workers
    new-loader   a new DataLoader built for every epoch
    val-inside   validation every 16 batches inside the epoch, and after it
"""

from __future__ import annotations

import argparse

import torch
from ground_truth import Truth, counted_steps
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset, get_worker_info

SHAPES = ("accumulate", "amp-skip", "lbfgs", "eval-mode", "iterable", "new-loader", "val-inside")
FEATURES = 16


class Stream(IterableDataset):
    """Rows generated on the fly, split between the workers that serve them."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        generator = torch.Generator().manual_seed(start)
        for _ in range(start, self.rows, step):
            x = torch.randn(FEATURES, generator=generator)
            yield x, x[:1] * 2.0


def tensors(rows: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, FEATURES, generator=generator)
    return TensorDataset(x, x[:, :1] * 2.0 - x[:, 1:2])


def validate(model: nn.Module, loader: DataLoader, truth: Truth) -> None:
    model.eval()
    truth.validation_begin()
    with torch.no_grad():
        for x, y in loader:
            nn.functional.mse_loss(model(x), y)
            truth.validation_batch()
    truth.validation_end()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--truth", default=None, help="where to write truth.json [$PROGRAM_TRUTH or ./truth.json]")
    args = parser.parse_args()

    torch.manual_seed(0)
    truth = Truth(args.truth)
    model = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 1))
    if args.shape == "lbfgs":
        optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=4)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    counted_steps(optimizer, truth)
    batch_size = 16
    rows = {"accumulate": 62 * batch_size}.get(args.shape, 40 * batch_size)
    train_data = Stream(rows) if args.shape == "iterable" else tensors(rows, 0)
    workers = 2 if args.shape == "iterable" else 0
    val = DataLoader(tensors(4 * batch_size, 1), batch_size=batch_size)
    scaler = torch.amp.GradScaler("cpu") if args.shape == "amp-skip" else None

    def loader() -> DataLoader:
        return DataLoader(train_data, batch_size=batch_size, shuffle=args.shape != "iterable", num_workers=workers)

    train = loader()
    model.train()
    for epoch in range(1, args.epochs + 1):
        if args.shape == "new-loader":
            train = loader()
        if args.shape != "eval-mode":
            model.train()  # the eval-mode shape forgets this after its first validation
        truth.epoch_begin()
        for batch, (x, y) in enumerate(train):
            truth.batch()
            if args.shape == "lbfgs":
                def closure(x=x, y=y):
                    optimizer.zero_grad()
                    loss = nn.functional.mse_loss(model(x), y)
                    loss.backward()
                    return loss

                optimizer.step(closure)
            elif args.shape == "accumulate":
                (nn.functional.mse_loss(model(x), y) / 4).backward()
                if (batch + 1) % 4 == 0:
                    optimizer.step()
                    optimizer.zero_grad()
            elif scaler is not None:
                loss = nn.functional.mse_loss(model(x), y)
                if epoch == 2 and batch == 5:
                    loss = loss * float("inf")  # the scaler finds inf gradients and skips this step
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
            else:
                loss = nn.functional.mse_loss(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if args.shape == "val-inside" and (batch + 1) % 16 == 0:
                validate(model, val, truth)
                model.train()
        validate(model, val, truth)
        last = truth.epochs[-1]
        print(f"epoch {epoch}: {last['batches']} batches, {last['steps']} steps", flush=True)
    truth.write()


if __name__ == "__main__":
    main()
