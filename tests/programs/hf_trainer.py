"""A Hugging Face Trainer program with a plain nn.Module (nothing downloaded), in the shapes
Trainer users run, chosen by flags. Knows nothing of dcnprobe (unless
--dcnprobe-callback adds its callback); writes what it did to truth.json (see
ground_truth.py), counted in its own model and TrainerCallback.

    default                      3 epochs of 60 batches, evaluation after each epoch
    --eval-strategy steps        evaluation every --eval-steps optimizer steps instead
    --accumulate K               gradient_accumulation_steps: a step every K batches
    --workers N                  dataloader_num_workers (accelerate's DataLoaderShard
                                 wraps the loader either way; the optimizer is stepped
                                 through accelerate's AcceleratedOptimizer)

Planted slowdowns (--fault):
    callback-history   a TrainerCallback records a weight histogram at every step and
                       rewrites its whole history to a JSON file each time
    worker-history     each DataLoader worker compares every sample with all it served
                       before; persistent workers (--persistent-workers) keep that history
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

# Nothing is downloaded: the model is a plain nn.Module, and the hub is never asked.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402
from ground_truth import Truth, counted_steps  # noqa: E402
from rows import FEATURES, Rows  # noqa: E402
from torch import nn  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402


class DictRows(Rows):
    """Rows as the Trainer's default collator expects them (a dict per sample)."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x, y = self.row(index)
        return {"x": x, "labels": y}


class Classifier(nn.Module):
    """A plain module in the Trainer's convention: returns the loss when given labels.
    It counts its own batches: a forward in train mode is a training batch, one in eval
    mode an evaluation batch."""

    def __init__(self, hidden: int, truth: Truth) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.truth = truth

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.training:
            self.truth.batch()
        else:
            if not self.truth.validating:
                self.truth.validation_begin()
            self.truth.validation_batch()
        logits = self.net(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        return out


class Counts(TrainerCallback):
    """The program's epochs, evaluations and its own clock per optimizer step."""

    def __init__(self, truth: Truth) -> None:
        self.truth = truth
        self.step_started: list[float] = []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.truth.epoch_begin()
        self.step_started = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_started.append(time.perf_counter())

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = self.truth.epochs[-1]
        intervals = [b - a for a, b in zip(self.step_started, self.step_started[1:])]
        epoch["median_step_s"] = statistics.median(intervals) if intervals else None
        print(f"epoch {epoch['epoch']}: {epoch['batches']} batches, {epoch['steps']} steps", flush=True)

    def on_evaluate(self, args, state, control, **kwargs):
        self.truth.validation_end()


class HistoryFile(TrainerCallback):
    """--fault callback-history: a monitoring callback that records a histogram of the first
    layer's weights at every step and rewrites its whole history as JSON each time (so that
    the file is always complete): the work per step grows with the steps so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.history: list[dict] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        weights = next(model.parameters()).detach()
        self.history.append({"step": state.global_step, "histogram": torch.histc(weights, bins=256).tolist()})
        self.path.write_text(json.dumps(self.history))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=60, help="batches in the training loader")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--val-batches", type=int, default=4)
    parser.add_argument("--eval-strategy", choices=("epoch", "steps", "no"), default="epoch")
    parser.add_argument("--eval-steps", type=int, default=25)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--persistent-workers", action="store_true")
    parser.add_argument("--fault", choices=("callback-history", "worker-history"))
    parser.add_argument("--dcnprobe-callback", action="store_true",
                        help="measure with dcnprobe.integrations.transformers instead of leaving it to an attach")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads: one for a model this small on a shared CPU")
    parser.add_argument("--truth", default=None, help="where to write truth.json [$PROGRAM_TRUTH or ./truth.json]")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    truth = Truth(args.truth)
    model = Classifier(args.hidden, truth)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    counted_steps(optimizer, truth)
    with tempfile.TemporaryDirectory() as out:
        callbacks: list[TrainerCallback] = [Counts(truth)]
        if args.fault == "callback-history":
            callbacks.append(HistoryFile(Path(out) / "weights-history.json"))
        if args.dcnprobe_callback:
            from dcnprobe.integrations.transformers import DcnprobeCallback

            callbacks.append(DcnprobeCallback())
        training = TrainingArguments(
            output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size, gradient_accumulation_steps=args.accumulate,
            eval_strategy=args.eval_strategy, eval_steps=args.eval_steps, save_strategy="no", report_to="none",
            logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=0, remove_unused_columns=False,
            dataloader_num_workers=args.workers, dataloader_persistent_workers=args.persistent_workers and args.workers > 0,
            dataloader_pin_memory=False,
        )
        trainer = Trainer(model=model, args=training, train_dataset=DictRows(args.batches * args.batch_size, 0, args.fault),
                          eval_dataset=DictRows(args.val_batches * args.batch_size, 1, None),
                          optimizers=(optimizer, None), callbacks=callbacks)
        trainer.train()
    truth.write()


if __name__ == "__main__":
    main()
