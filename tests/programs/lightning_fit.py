"""A PyTorch Lightning program in the loop shapes Lightning users run, chosen by flags.
Knows nothing of dcnprobe (unless --dcnprobe-callback adds its callback); writes what it
did to truth.json (see ground_truth.py), counted in the LightningModule's own hooks.

    default                    3 epochs of 60 batches, a sanity check of 2 validation
                               batches, validation after each epoch; max_epochs ends the fit
    --limit-train-batches N    each epoch stops after N batches (the loader has more)
    --val-check-interval F     validation inside the epoch too (every F of its batches)
    --accumulate K             accumulate_grad_batches: an optimizer step every K batches
    --two-optimizers           manual optimization with two optimizers, both stepped each batch

Planted slowdowns (--fault):
    step-outputs     the module keeps every step's predictions for its epoch-end hook and
                     never clears them, and logs a running ranking metric over all it kept
                     each step: the loop's own work grows with every batch of the run
    worker-history   each DataLoader worker compares every sample with all it served
                     before; persistent workers (--persistent-workers) carry that history
                     into later epochs, so later epochs wait longer for data
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from ground_truth import Truth, counted_steps
from rows import FEATURES, Rows
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*The number of training batches.*")

import pytorch_lightning as pl  # noqa: E402 - after the warning filters


def ranking_metric(predictions: list[float], labels: list[float]) -> float:
    """Share of positives among the upper half of all predictions kept so far."""
    ranked = sorted(zip(predictions, labels))
    top = ranked[len(ranked) // 2:]
    return sum(label for _, label in top) / max(1, len(top))


class Classifier(pl.LightningModule):
    def __init__(self, args: argparse.Namespace, truth: Truth) -> None:
        super().__init__()
        self.args, self.truth = args, truth
        self.net = nn.Sequential(nn.Linear(FEATURES, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 1))
        self.critic = nn.Linear(FEATURES, 1)  # the second optimizer's model (--two-optimizers)
        self.automatic_optimization = not args.two_optimizers
        self.step_outputs: list[tuple[list[float], list[float]]] = []  # for on_train_epoch_end
        self.batch_started: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # -- the program's own counts ------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self.truth.epoch_begin()
        self.batch_started = []

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.batch_started.append(time.perf_counter())

    def on_train_epoch_end(self) -> None:
        kept = [p for preds, _ in self.step_outputs for p in preds]
        intervals = [b - a for a, b in zip(self.batch_started, self.batch_started[1:])]
        epoch = self.truth.epochs[-1]
        epoch["median_batch_s"] = statistics.median(intervals) if intervals else None
        print(f"epoch {epoch['epoch']}: {epoch['batches']} batches, {epoch['steps']} steps, "
              f"{len(kept)} predictions kept", flush=True)
        if self.args.fault != "step-outputs":
            self.step_outputs.clear()  # the planted fault forgets this

    def on_validation_epoch_start(self) -> None:
        self.truth.validation_begin()

    def on_validation_epoch_end(self) -> None:
        self.truth.validation_end()

    # -- training ----------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        self.truth.batch()
        x, y = batch
        logits = self(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
        self.step_outputs.append((logits.detach().flatten().tolist(), y.flatten().tolist()))
        if self.args.fault == "step-outputs":
            predictions = [p for preds, _ in self.step_outputs for p in preds]
            labels = [t for _, targets in self.step_outputs for t in targets]
            self.log("ranking_so_far", ranking_metric(predictions, labels), prog_bar=True)
        if not self.args.two_optimizers:
            return loss
        model_opt, critic_opt = self.optimizers()
        model_opt.zero_grad()
        self.manual_backward(loss)
        model_opt.step()
        critic_loss = nn.functional.mse_loss(self.critic(x), y)
        critic_opt.zero_grad()
        self.manual_backward(critic_loss)
        critic_opt.step()
        return None

    def validation_step(self, batch, batch_idx):
        self.truth.validation_batch()
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(self(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.net.parameters(), lr=0.05)
        counted_steps(optimizer, self.truth)
        if not self.args.two_optimizers:
            return optimizer
        critic = torch.optim.SGD(self.critic.parameters(), lr=0.05)
        counted_steps(critic, self.truth)
        return [optimizer, critic]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=60, help="batches in the training loader")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--val-batches", type=int, default=4)
    parser.add_argument("--sanity-steps", type=int, default=2)
    parser.add_argument("--limit-train-batches", type=int, default=None)
    parser.add_argument("--val-check-interval", type=float, default=None)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--two-optimizers", action="store_true")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--persistent-workers", action="store_true")
    parser.add_argument("--fault", choices=("step-outputs", "worker-history"))
    parser.add_argument("--dcnprobe-callback", action="store_true",
                        help="measure with dcnprobe.integrations.lightning instead of leaving it to an attach")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads: one for a model this small on a shared CPU")
    parser.add_argument("--devices", type=int, default=1,
                        help="more than 1: a DDP strategy on CPU, one process per device (truth-rankN.json each)")
    parser.add_argument("--truth", default=None, help="where to write truth.json [$PROGRAM_TRUTH or ./truth.json]")
    args = parser.parse_args()

    pl.seed_everything(0, verbose=False)
    torch.set_num_threads(args.threads)
    truth = Truth(args.truth)
    train = Rows(args.batches * args.batch_size, 0, args.fault)
    generator = torch.Generator().manual_seed(1)
    val_x = torch.randn(args.val_batches * args.batch_size, FEATURES, generator=generator)
    val = TensorDataset(val_x, (val_x[:, :1] - val_x[:, 1:2] > 0).float())
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                              persistent_workers=args.persistent_workers and args.workers > 0)
    val_loader = DataLoader(val, batch_size=args.batch_size)
    callbacks = []
    if args.dcnprobe_callback:
        from dcnprobe.integrations.lightning import DcnprobeCallback

        callbacks.append(DcnprobeCallback())
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator="cpu", devices=args.devices, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=args.sanity_steps,
        limit_train_batches=args.limit_train_batches, val_check_interval=args.val_check_interval,
        accumulate_grad_batches=1 if args.two_optimizers else args.accumulate, callbacks=callbacks,
        # the critic head trains only with --two-optimizers: DDP must be told of unused parameters
        **({"strategy": "ddp_find_unused_parameters_true"} if args.devices > 1 else {}),
    )
    trainer.fit(Classifier(args, truth), train_loader, val_loader)
    if args.devices > 1:  # every rank counted its own
        truth.path = truth.path.with_name(f"{truth.path.stem}-rank{trainer.global_rank}{truth.path.suffix}")
    truth.write()


if __name__ == "__main__":
    main()
