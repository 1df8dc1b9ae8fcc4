"""A Hugging Face TrainerCallback that records the run with dcnprobe's Probe, from the
Trainer's own events: its epochs, optimizer steps (one batch record per step group, the
unit the attach uses too), evaluations, and the forward and step hooks of the model and
optimizer it trains. No guessing: where the attach infers a boundary from DataLoader
passes, this reads it from the Trainer.

    from dcnprobe.integrations.transformers import DcnprobeCallback
    trainer = Trainer(model=model, args=args, ..., callbacks=[DcnprobeCallback("runs/mine")])

Under `dcnprobe run` (or a bisect trial) the launcher's run directory and options win,
and the attach leaves the run to this callback. The Trainer has no backward event:
`backward` is the time from the end of a micro-batch's forward to the next micro-batch,
or to the optimizer step (gradient clipping included).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import TrainerCallback

from dcnprobe.integrations.driver import EventDriver, framework_probe

BOUNDARIES = {
    "epoch": "transformers: on_epoch_begin to on_epoch_end",
    "validation": "transformers: an evaluation's prediction steps to on_evaluate",
    "forward": "transformers: the model's forward hooks",
    "backward": "transformers: a forward's end to the next micro-batch or on_pre_optimizer_step",
}


class DcnprobeCallback(TrainerCallback):
    def __init__(self, out_dir: str | Path | None = None, on_slowdown: str | None = "warn",
                 **probe_options: Any) -> None:
        """on_slowdown: the live early warning (warn, stop, profile; None: off), as for
        `dcnprobe train`; probe_options go to dcnprobe.Probe."""
        self.out_dir = Path(out_dir) if out_dir else Path("runs") / time.strftime("trainer-%Y%m%d-%H%M%S")
        self.on_slowdown, self.probe_options = on_slowdown, probe_options
        self.driver: EventDriver | None = None
        self._handles: list[Any] = []
        self._model: Any = None

    # -- the run ---------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        probe = framework_probe(self.out_dir, self.on_slowdown, **self.probe_options)
        self.driver = driver = EventDriver(probe, "transformers")
        driver.start(BOUNDARIES, {"framework": {"name": "transformers", "version": transformers.__version__},
                                  "gradient_accumulation_steps": args.gradient_accumulation_steps})
        self._model = model
        if model is not None:
            self._handles += [model.register_forward_pre_hook(self._forward_begin),
                              model.register_forward_hook(self._forward_end)]
        inner = _innermost(optimizer)
        if inner is not None:
            self._handles += [inner.register_step_pre_hook(lambda _, args, kwargs: driver.step_begin(args, kwargs)),
                              inner.register_step_post_hook(lambda *_: driver.step_end())]

    def on_train_end(self, args, state, control, **kwargs):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.driver is not None:
            self.driver.finish("ok")
            self.driver = None

    def _forward_begin(self, module, args) -> None:
        if module.training and self.driver is not None and self.driver.in_pass:
            self.driver.loader_batch()  # one micro-batch from the training loader
            self.driver.forward_begin()

    def _forward_end(self, module, args, output) -> None:
        if module.training and self.driver is not None and self.driver.in_pass:
            self.driver.forward_end()
            self.driver.backward_begin()  # the Trainer backpropagates next; no event says when

    # -- training ------------------------------------------------------------------------------------

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.driver.epoch_begin()

    def on_step_begin(self, args, state, control, **kwargs):
        self.driver.data_ready()  # the step group's micro-batches were fetched just before

    def on_substep_end(self, args, state, control, **kwargs):
        self.driver.backward_end()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.driver.backward_end()

    def on_step_end(self, args, state, control, **kwargs):
        self.driver.batch_end()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.driver.epoch_end("transformers: on_epoch_end")

    # -- evaluation ------------------------------------------------------------------------------------

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.driver is not None:
            self.driver.validation_begin("trainer evaluation")
            self.driver.validation_batch()

    def on_evaluate(self, args, state, control, **kwargs):
        if self.driver is not None:
            self.driver.validation_end()


def _innermost(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer inside accelerate's AcceleratedOptimizer (which skips its step
    while accumulating): its own step hooks fire only for real steps."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None
