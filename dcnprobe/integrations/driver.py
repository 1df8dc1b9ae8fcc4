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

Phases as the attach times them, from the framework's hooks where it has them and from
the model's and optimizer's own hooks otherwise: data_wait from the end of the last
batch to the framework's batch start (it fetches in between); forward, the outermost
forward of the model (and of its direct children); backward between the backward
events; optimizer from the optimizer's step hooks, less the step's closure (Lightning's
training_step); other, the rest (the training step's own code, the framework's).
"""

from __future__ import annotations

from typing import Any

from dcnprobe.attach import active
from dcnprobe.attach.notes import PASS_RECORD, VALIDATION_RECORD
from dcnprobe.attach.phases import PhaseSpans, with_timed_closure
from dcnprobe.attach.ranks import this_rank
from dcnprobe.distributed.layout import RANK, rank_dir
from dcnprobe.hooks import DATA_WAIT
from dcnprobe.launched import warn_on_slowdown
from dcnprobe.probe import Probe


def framework_probe(out_dir: Any, on_slowdown: str | None, **options: Any) -> Probe:
    """The callbacks' Probe. Under a launcher (`dcnprobe run`, a trial) the launch sets where
    it records and adds the early warning; on its own, the callback adds the warning. A rank
    of a distributed job (a DDP strategy) records into OUT/rankN."""
    rank = this_rank()
    probe = Probe(rank_dir(out_dir, rank[RANK]) if rank else out_dir, **options)
    if on_slowdown and active.current() is None:
        warn_on_slowdown(probe, on_slowdown)
    return probe


class EventDriver:
    def __init__(self, probe: Any, framework: str) -> None:
        self.probe, self.timer, self.clock = probe, probe.timer, probe.clock
        self.framework = framework
        self.spans = PhaseSpans(self.clock, self.timer.add)
        self.epoch = 0
        self.epoch_open = False
        self.in_pass = False  # the epoch's training batches are under way
        self.items = self.steps = 0  # in the open batch record
        self.worked = False  # a backward or a step in the open record
        self.epoch_items = self.epoch_steps = 0
        self.edge = 0.0  # the end of the last batch: data wait counts from here
        self._validation: dict[str, Any] | None = None

    # -- the run --------------------------------------------------------------------------------

    def start(self, boundaries: dict[str, str], info: dict[str, Any]) -> None:
        self.probe.start({**(this_rank() or {}), "boundaries": {"batch": "optimizer-step", **boundaries}, **info})

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
        self.timer.add(DATA_WAIT, self.clock() - self.edge)

    def loader_batch(self) -> None:
        """One batch from the training loader went into the open record."""
        self.items += 1
        self.epoch_items += 1

    def batch_end(self) -> None:
        """A framework batch (or step group) ended: the record closes if it had its step."""
        if self.in_pass and self.timer.in_batch and self.steps:
            self._close()
            self._open()
        self.edge = self.clock()

    # -- phases -----------------------------------------------------------------------------------

    def forward_begin(self) -> None:
        self.spans.forward_begin(timed=True)

    def forward_end(self) -> None:
        self.spans.forward_end()

    def backward_begin(self) -> None:
        self.spans.backward_begin()

    def backward_end(self) -> None:
        if self.spans.backward_depth and self.spans.backward_end() is not None:
            self.worked = True

    def step_begin(self, args: tuple = (), kwargs: dict | None = None) -> tuple[tuple, dict] | None:
        """An optimizer step pre-hook: returns the step's arguments with its closure timed."""
        self.spans.step_begin()
        return with_timed_closure(self.spans, args, kwargs or {})

    def step_end(self) -> None:
        if self.spans.step_end() is not None:
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
