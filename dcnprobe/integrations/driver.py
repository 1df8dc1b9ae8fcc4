"""A Probe driven by a training framework's own events: what the Lightning and Hugging
Face callbacks share. The record is the attach's (dcnprobe.attach.agent), unit for unit:

    batch       optimizer-step: a batch record closes at the end of a framework batch (or
                step group) in which an optimizer step happened; batches that only
                accumulate gradients fold into the next; each record counts its
                loader_batches and optimizer_steps.
    epoch       from the framework's epoch start to the end of its last training batch
                (the epoch record itself is written at the framework's epoch end, after
                any validation that closes the epoch).
    validation  each run of the framework's validation loop, a `validation` record.

Phases come from the framework's hooks where it has them: data_wait from the end of the
last batch to the framework's batch start (it fetches in between); forward to the
backward (or from the model's forward hooks); backward between the backward hooks;
optimizer from the optimizer's own step hooks, less a closure's forward and backward.
"""

from __future__ import annotations

from typing import Any

from dcnprobe.attach.notes import PASS_RECORD, VALIDATION_RECORD
from dcnprobe.hooks import DATA_WAIT


class EventDriver:
    def __init__(self, probe: Any, framework: str) -> None:
        self.probe, self.timer, self.clock = probe, probe.timer, probe.clock
        self.framework = framework
        self.epoch = 0
        self.epoch_open = False
        self.in_pass = False  # the epoch's training batches are under way
        self.items = self.steps = 0  # in the open batch record
        self.worked = False  # a backward or a step in the open record
        self.epoch_items = self.epoch_steps = 0
        self.edge = 0.0  # the last phase boundary: time since it belongs to the next phase
        self._step_began: float | None = None
        self._inside_step = 0.0  # forward and backward time within the open step (a closure)
        self._validation: dict[str, Any] | None = None

    # -- the run --------------------------------------------------------------------------------

    def start(self, boundaries: dict[str, str], info: dict[str, Any]) -> None:
        self.probe.start({"boundaries": {"batch": "optimizer-step", **boundaries}, **info})

    def finish(self, status: str) -> None:
        if self._validation is not None:
            self.validation_end()
        if self.in_pass or self.epoch_open:
            self.epoch_end()
        self.probe.finish(status)

    # -- epochs -----------------------------------------------------------------------------------

    def epoch_begin(self) -> None:
        if self.in_pass or self.epoch_open:  # the framework skipped its epoch end
            self.epoch_end()
        self.epoch += 1
        self.epoch_items = self.epoch_steps = 0
        self.probe.epoch_start(self.epoch)
        self.epoch_open = True
        self.probe.begin_pass()
        self.in_pass = True
        self._open()

    def training_done(self, ended_by: str) -> None:
        """The epoch's last training batch has ended; validation may follow."""
        if not self.in_pass:
            return
        self.in_pass = False
        self._settle()
        self.probe.end_pass()
        self.probe.event(PASS_RECORD, epoch=self.epoch, loader=None, loader_batches=self.epoch_items,
                         optimizer_steps=self.epoch_steps, began_as=None, ended_by=ended_by, cut=False,
                         eval_forwards=0)

    def epoch_end(self, ended_by: str = "the framework's epoch end") -> None:
        self.training_done(ended_by)
        if self.epoch_open:
            self.epoch_open = False
            self.probe.epoch_end(self.epoch)

    # -- batches ------------------------------------------------------------------------------------

    def _open(self) -> None:
        self.timer.begin()
        self.edge = self.clock()
        self.items = self.steps = 0
        self.worked = False

    def _settle(self) -> None:
        """Close the open record if anything happened in it, else drop it."""
        if not self.timer.in_batch:
            return
        if self.worked or self.items:
            self._close()
        else:
            self.timer.cancel()

    def _close(self) -> None:
        self.probe.end_batch(loader_batches=self.items, optimizer_steps=self.steps)
        self.items = self.steps = 0
        self.worked = False

    def data_ready(self) -> None:
        """The framework has fetched the batch (or step group) and starts on it."""
        if self.in_pass and not self.timer.in_batch:
            self._open()
        now = self.clock()
        self.timer.add(DATA_WAIT, now - self.edge)
        self.edge = now

    def loader_batch(self) -> None:
        """One batch from the training loader went into the open record."""
        self.items += 1
        self.epoch_items += 1

    def batch_end(self) -> None:
        """A framework batch (or step group) ended: the record closes if it had its step."""
        if self.in_pass and self.timer.in_batch and self.steps:
            self._close()
            self._open()

    # -- phases -----------------------------------------------------------------------------------

    def _spent(self, phase: str) -> None:
        now = self.clock()
        seconds = now - self.edge
        self.timer.add(phase, seconds)
        if self._step_began is not None:
            self._inside_step += seconds
        self.edge = now

    def forward_begin(self) -> None:
        self.edge = self.clock()  # the time before it is the loop's own

    def forward_end(self) -> None:
        self._spent("forward")

    def backward_begin(self) -> None:
        """From the last boundary to here was the training step's forward (frameworks
        with a backward hook but none for the forward: Lightning)."""
        self._spent("forward")

    def backward_end(self) -> None:
        self._spent("backward")
        self.worked = True

    def step_begin(self) -> None:
        self._step_began = self.edge = self.clock()
        self._inside_step = 0.0

    def step_end(self) -> None:
        if self._step_began is None:
            return
        now = self.clock()
        self.timer.add("optimizer", max(0.0, now - self._step_began - self._inside_step))
        self._step_began, self.edge = None, now
        self.steps += 1
        self.epoch_steps += 1
        self.worked = True

    # -- validation -------------------------------------------------------------------------------

    def validation_begin(self, why: str) -> None:
        if self._validation is not None:
            return
        if self.timer.in_batch:  # validation inside the epoch is in no training batch
            self._settle()
        self._validation = {"started": self.clock(), "batches": 0, "why": why}

    def validation_batch(self) -> None:
        if self._validation is not None:
            self._validation["batches"] += 1

    def validation_end(self) -> None:
        validation, self._validation = self._validation, None
        if validation is None:
            return
        self.probe.event(VALIDATION_RECORD, epoch=self.epoch, loader=None, batches=validation["batches"],
                         duration_s=self.clock() - validation["started"], why=validation["why"],
                         after_steps=self.epoch_steps)
        if self.in_pass:
            self._open()
