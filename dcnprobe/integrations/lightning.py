"""A PyTorch Lightning Callback that records the run with dcnprobe's Probe, from Lightning's
own events: its epochs, batches, backward and validation loops (the sanity check too),
and the optimizers' step hooks. No guessing: where the attach infers a boundary from
DataLoader passes, this reads it from the Trainer.

    from dcnprobe.integrations.lightning import DcnprobeCallback
    trainer = pl.Trainer(callbacks=[DcnprobeCallback("runs/mine")])

Under `dcnprobe run` (or a bisect trial) the launcher's run directory and options win,
and the attach leaves the run to this callback. Works with `pytorch_lightning` and with
`lightning.pytorch`: the one the program already imported, else whichever is installed.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Any

from dcnprobe.integrations.driver import EventDriver, framework_probe


def _lightning() -> Any:
    for name in ("lightning.pytorch", "pytorch_lightning"):
        if name in sys.modules:
            return sys.modules[name]
    try:
        return importlib.import_module("pytorch_lightning")
    except ImportError:
        return importlib.import_module("lightning.pytorch")


pl = _lightning()

BOUNDARIES = {
    "epoch": "lightning: on_train_epoch_start to the epoch's last training batch",
    "validation": "lightning: on_validation_start to on_validation_end (the sanity check is epoch 0)",
    "forward": "the outermost forward of the LightningModule or its children",
    "backward": "lightning: on_before_backward to on_after_backward",
}


class DcnprobeCallback(pl.Callback):
    def __init__(self, out_dir: str | Path | None = None, on_slowdown: str | None = "warn",
                 **probe_options: Any) -> None:
        """on_slowdown: the live early warning (warn, stop, profile; None: off), as for
        `dcnprobe train`; probe_options go to dcnprobe.Probe."""
        super().__init__()
        self.out_dir = Path(out_dir) if out_dir else Path("runs") / time.strftime("lightning-%Y%m%d-%H%M%S")
        self.on_slowdown, self.probe_options = on_slowdown, probe_options
        self.driver: EventDriver | None = None
        self._handles: list[Any] = []

    # -- the run ---------------------------------------------------------------------------------

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Before any DataLoader is iterated (the sanity check): made here, the Probe tells an
        # attach in this process to leave the run to it.
        if stage == "fit" and self.driver is None:
            probe = framework_probe(self.out_dir, self.on_slowdown, **self.probe_options)
            self.driver = EventDriver(probe, "lightning")

    def on_fit_start(self, trainer, pl_module) -> None:
        driver = self.driver
        driver.start(BOUNDARIES, {"framework": {"name": pl.__name__, "version": pl.__version__},
                                  "max_epochs": trainer.max_epochs})
        # A training_step calls the module itself or one of its children: the outermost of
        # those forwards is `forward` (the rest of the training_step is the loop's own code).
        for module in (pl_module, *pl_module.children()):
            self._handles += [module.register_forward_pre_hook(lambda *_: driver.forward_begin()),
                              module.register_forward_hook(lambda *_: driver.forward_end(), always_call=True)]
        for optimizer in trainer.optimizers:
            self._handles += [
                optimizer.register_step_pre_hook(lambda _, args, kwargs: driver.step_begin(args, kwargs)),
                optimizer.register_step_post_hook(lambda *_: driver.step_end()),
            ]

    def on_fit_end(self, trainer, pl_module) -> None:
        self._finish("ok")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._finish("interrupted" if isinstance(exception, KeyboardInterrupt) else "crashed")

    def _finish(self, status: str) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.driver is not None:
            self.driver.finish(status)
            self.driver = None

    # -- training ------------------------------------------------------------------------------------

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.driver.epoch_begin()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.driver.data_ready()

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.driver.backward_begin()

    def on_after_backward(self, trainer, pl_module) -> None:
        self.driver.backward_end()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        driver = self.driver
        driver.loader_batch()
        driver.batch_end()
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            driver.training_done("lightning: the epoch's last batch")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.driver.epoch_end("lightning: on_train_epoch_end")

    # -- validation ------------------------------------------------------------------------------------

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.driver is not None:
            self.driver.validation_begin("sanity check" if trainer.sanity_checking else "lightning validation loop")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.driver is not None:
            self.driver.validation_batch()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.driver is not None:
            self.driver.validation_end()
