"""The attach's overhead on a PyTorch Lightning program and on a Hugging Face Trainer
program, measured as benchmarks/attach_overhead.py measures it on the built-in trainer:
one attached process trains many short epochs, with the agent's hooks and sampler in
place in odd epochs and removed in even ones, so that both sides share one process, one
model and the same stretch of machine time; the stopwatch is the framework's own
batch-end callback (Lightning's on_train_batch_end, the Trainer's on_step_end), each
epoch's first batch dropped. The ratio is judged on its paired bootstrap interval over
(attached, bare) epoch pairs (benchmarks.timing.paired_ratio).

    python -m dcnprobe.benchmarks.framework_overhead [--epochs 24] [--batches 20] [--only lightning]

Needs `.[frameworks]`; not part of the CI gate, which does not install the frameworks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

from dcnprobe.benchmarks import children
from dcnprobe.benchmarks.timing import paired_ratio

FRAMEWORKS = ("lightning", "trainer")
FEATURES, HIDDEN, BATCH_SIZE = 64, 512, 256  # about 10 ms a batch on one core: a small real model


def measure(framework: str, epochs: int, batches: int) -> dict[str, Any]:
    from dcnprobe.contract import AttachConfig, launch_env

    with tempfile.TemporaryDirectory() as out:
        config = AttachConfig(run_dir=out, settings={"threads": "1"})
        times = children.run_child("dcnprobe.benchmarks.framework_overhead",
                          ["--child", framework, "--epochs", str(epochs), "--batches", str(batches)],
                          f"{framework} overhead", env=launch_env(config))
    result = paired_ratio(times["segments"][2:])  # the first pair holds the warm-up
    result["detail"].update(epochs=epochs, batches=batches, recorded_batches=times["recorded_batches"])
    return result


# -- inside the attached child ---------------------------------------------------------------


class Toggle:
    """Switches the agent's measuring on and off at each epoch's end; keeps batch intervals."""

    def __init__(self) -> None:
        from dcnprobe.attach import active

        self.agent = active.current()
        if self.agent is None:
            raise SystemExit("the attach agent is not installed in this process")
        self.segments: list[tuple[bool, list[float]]] = [(True, [])]
        self.last: float | None = None

    def batch_end(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.segments[-1][1].append(now - self.last)
        self.last = now

    def epoch_end(self) -> None:
        attached = not self.segments[-1][0]
        self.segments.append((attached, []))
        self.last = None  # the next epoch's first batch carries loader start-up and the switch
        if attached:
            self.agent.hooks.install_measuring()
            self.agent.probe.sampler.start()
        else:
            self.agent.hooks.remove_measuring()
            self.agent.probe.sampler.stop()

    def report(self) -> None:
        recorded = self.agent.probe.step if self.agent.probe is not None else 0
        children.report({"segments": [s for s in self.segments if s[1]], "recorded_batches": recorded})


def _data(batches: int):
    import torch
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batches * BATCH_SIZE, FEATURES, generator=generator)
    return x, (x[:, :1] > 0).float(), TensorDataset


def _lightning(epochs: int, batches: int) -> None:
    import pytorch_lightning as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    toggle = Toggle()

    class Switch(pl.Callback):
        def on_train_batch_end(self, *args, **kwargs) -> None:
            toggle.batch_end()

        def on_train_epoch_end(self, *args, **kwargs) -> None:
            toggle.epoch_end()

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                                     nn.Linear(HIDDEN, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.binary_cross_entropy_with_logits(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    x, y, dataset = _data(batches)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[Switch()])
    trainer.fit(Module(), DataLoader(dataset(x, y), batch_size=BATCH_SIZE, shuffle=True))
    toggle.report()


def _trainer(epochs: int, batches: int) -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from torch import nn
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    toggle = Toggle()

    class Switch(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            toggle.batch_end()

        def on_epoch_end(self, *args, **kwargs):
            toggle.epoch_end()

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                                     nn.Linear(HIDDEN, 1))

        def forward(self, x, labels=None):
            logits = self.net(x)
            return {"loss": nn.functional.binary_cross_entropy_with_logits(logits, labels), "logits": logits}

    x, y, _ = _data(batches)

    class Rows(Dataset):
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, index: int):
            return {"x": x[index], "labels": y[index]}

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=BATCH_SIZE,
                                 save_strategy="no", eval_strategy="no", report_to="none", logging_strategy="no",
                                 disable_tqdm=True, use_cpu=True, dataloader_pin_memory=False, seed=0,
                                 remove_unused_columns=False)
        model = Model()
        Trainer(model=model, args=args, train_dataset=Rows(), callbacks=[Switch()],
                optimizers=(torch.optim.AdamW(model.parameters(), lr=1e-3), None)).train()
    toggle.report()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=24, help="epochs, alternately attached and bare")
    parser.add_argument("--batches", type=int, default=20, help="batches an epoch")
    parser.add_argument("--only", choices=FRAMEWORKS, action="append")
    parser.add_argument("--child", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        {"lightning": _lightning, "trainer": _trainer}[args.child](args.epochs, args.batches)
        return 0
    results = {}
    for framework in args.only or FRAMEWORKS:
        result = measure(framework, args.epochs, args.batches)
        results[framework] = result
        low, high = result["interval"]
        print(f"{framework}: attached / bare batch time {result['value']:.3f} (95% CI {low:.3f}-{high:.3f}); "
              f"median {result['detail']['measured_median_s'] * 1000:.1f} vs "
              f"{result['detail']['bare_median_s'] * 1000:.1f} ms, {result['detail']['batches_each']} batches each",
              flush=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
