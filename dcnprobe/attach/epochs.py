"""Where epochs begin and end: one strategy per EpochMode, all of them here.

    LoaderPassEpochs  dataloader-pass: an epoch is one pass over the training DataLoader.
    EveryNSteps       epoch-every: an epoch every N optimizer steps (loops with no loader).
    MarkedEpochs      mark_epoch: the script says where epochs end (dcnprobe.mark_epoch()).

Each strategy hears the same events from dcnprobe.attach.recorder.Recorder (a pass over a
loader starts, the loop asks it for data, it runs out or is dropped, training work
starts, the script marks an epoch, the run ends) and decides batch and epoch boundaries
through the recorder. Modes change in one place, Recorder.switch_mode: a script that
calls mark_epoch() in dataloader-pass mode, or a loader loop after a warm-up step.

How dataloader-pass mode finds an epoch in the loops people run (docs/frameworks.md):
- A top-level pass is UNDECIDED until a backward or an optimizer step happens in it,
  which makes it the epoch (opened as of the pass's start); one that ends with neither
  is a validation pass. The state a pass begins in (no_grad, inference_mode, the model
  in eval mode) is only a hint: Hugging Face's Trainer begins each epoch with the model
  still in eval mode from the evaluation before, and a loop that forgot model.train()
  trains in eval mode.
- A pass begun inside the epoch's pass is FEED (more data for the same batches), or,
  begun under no_grad, inference_mode or in eval mode, VALIDATION: the open batch is
  closed first, so that validation inside an epoch (Lightning's val_check_interval,
  the Trainer's eval_strategy="steps") is not counted in a training batch.
- A pass ends when its loader runs out, when the loop drops its iterator, or when the
  loop evidently moved on: another pass begins after it gave all the batches its loader
  has (Lightning stops at the known length without exhausting the loader, and keeps the
  iterator), a new pass over the same loader (the same, cut short by
  limit_train_batches), a new pass in another state than an undecided one that gave
  batches (Lightning's sanity check, then training). A loader that fetches ahead (accelerate's DataLoaderShard, the
  Trainer's accumulation groups) runs out before its last batches are trained: such a
  pass drains until the loop moves on, and the epoch is closed as of its last backward
  or optimizer step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dcnprobe.attach.loader_proxy import LoaderPass
from dcnprobe.attach.states import EpochMode, PassKind

if TYPE_CHECKING:
    from dcnprobe.attach.recorder import Recorder

# Why a training pass ended (its `train_pass` record's `ended_by`).
RAN_OUT = "loader ran out"
DRAINED = "loader ran out before its last batches; ended when the loop moved on"
COMPLETE = "it had given all its batches; another pass began"
SAME_LOADER = "a new pass over the same loader began"
LEFT = "the loop began another pass"
DROPPED = "the loop dropped the iterator"
MAX_BATCHES = "max_batches"
MARKED = "mark_epoch()"
RUN_END = "the run ended"


class EpochStrategy:
    mode: EpochMode
    top: LoaderPass | None = None  # dataloader-pass mode: the pass that is (or may become) the epoch
    # Whether a forward is training work to this strategy: if not, the recorder does not
    # call training_work("forward") at all (every outermost forward of every batch).
    forward_is_work = False

    def __init__(self, recorder: Recorder) -> None:
        self.rec = recorder

    def pass_started(self, p: LoaderPass) -> None:
        """Set p.kind; open or end batches and epochs as the new pass implies."""
        raise NotImplementedError

    def item_requested(self, p: LoaderPass) -> bool:
        """The loop asks p for data. True: p is cut here (max_batches), give it no more."""
        return False

    def counts_items(self, p: LoaderPass) -> bool:
        """Whether p's batches are the `loader_batches` of the batch records."""
        return False

    def pass_exhausted(self, p: LoaderPass) -> None:
        pass

    def pass_dropped(self, p: LoaderPass) -> None:
        pass

    def training_work(self, what: str) -> None:
        """A forward in train mode with gradients (if forward_is_work), a backward or an
        optimizer step begins."""

    def mark(self) -> None:
        pass

    def finish(self) -> None:
        pass


class LoaderPassEpochs(EpochStrategy):
    mode = EpochMode.LOADER_PASS

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(recorder)
        self.top = None

    def pass_started(self, p: LoaderPass) -> None:
        top = self.top
        if top is not None:
            ended_by = self._moved_on(top, p)
            if ended_by is None:  # begun inside the top pass
                p.kind = PassKind.VALIDATION if p.why else PassKind.FEED
                if p.kind is PassKind.VALIDATION:
                    self.rec.ledger_pause()
                return
            self._end_top(ended_by)
        if p.why is None:  # it looks like training: a bound from outside may end the run first
            self.rec.check_epochs_bound()
        p.kind = PassKind.UNDECIDED
        self.top = p
        self.rec.ledger.begin(at=p.started)  # the first batch waits from iter() on

    @staticmethod
    def _moved_on(top: LoaderPass, p: LoaderPass) -> str | None:
        """Why a new pass p shows that the loop is done with the top pass (None: p is inside it)."""
        if top.exhausted:
            return DRAINED
        if top.kind is PassKind.TRAINING and top.length is not None and top.items >= top.length:
            return COMPLETE  # Lightning stops at the known length and keeps the iterator
        if p.loader_id == top.loader_id:
            return SAME_LOADER
        if top.kind is PassKind.UNDECIDED and top.items and p.why != top.why:
            return LEFT
        return None

    def counts_items(self, p: LoaderPass) -> bool:
        return p is self.top

    def item_requested(self, p: LoaderPass) -> bool:
        ledger = self.rec.ledger
        if p is not self.top:
            if p.kind is PassKind.FEED and not ledger.open:
                ledger.begin()
            return False
        limit = self.rec.config.max_batches
        if limit is not None and p.items >= limit and (p.kind is PassKind.TRAINING or p.why is None):
            p.cut = True
            self.pass_exhausted(p)
            return True
        if ledger.open and ledger.steps:  # stepped
            ledger.close()
        if not ledger.open:
            ledger.begin()
        return False

    def pass_exhausted(self, p: LoaderPass) -> None:
        if p is not self.top:
            return
        p.exhausted = True
        if not p.fetches_ahead:  # the loop trained on every batch before asking for another
            self._end_top(MAX_BATCHES if p.cut else RAN_OUT, at_last_work=False)

    def pass_dropped(self, p: LoaderPass) -> None:
        if p is self.top:
            self._end_top(DRAINED if p.exhausted else DROPPED)

    def training_work(self, what: str) -> None:
        # A forward alone decides nothing here (forward_is_work is False): validation may
        # run with gradients.
        top = self.top
        if top is None:
            return
        if top.kind is PassKind.UNDECIDED:
            if self.rec.epochs_bound_reached():  # the run ends here: this pass is neither epoch nor validation
                self.top = None
                self.rec.ledger.drop()
                self.rec.check_epochs_bound()
            top.kind = PassKind.TRAINING
            self.rec.begin_epoch(at=top.started)
        if not self.rec.ledger.open:  # work resumed after a validation pass, before asking for data
            self.rec.ledger.begin()

    def mark(self) -> None:
        top = self.top
        self.top = None
        if top is not None and top.kind is PassKind.TRAINING:
            # The script marks the epoch's end mid-pass: the epoch ends here, the pass feeds on.
            self.rec.ledger.settle(at=self.rec.ledger.last_work_at if top.exhausted else None)
            self.rec.end_epoch(top, MARKED)
        elif top is not None:
            self.rec.ledger.drop()
        if top is not None and not top.exhausted:
            top.kind = PassKind.FEED
        self.rec.switch_mode(EpochMode.MARKED)

    def finish(self) -> None:
        if self.top is not None:
            self._end_top(RUN_END)

    def _end_top(self, ended_by: str, at_last_work: bool = True) -> None:
        """The top pass is over. Told later than it happened, the batch and epoch are
        closed as of the last backward or optimizer step."""
        rec = self.rec
        rec.end_validations()  # a validation pass inside the epoch ends with it
        top, self.top = self.top, None
        top.ended = True
        if top.kind is PassKind.TRAINING:
            at = rec.ledger.last_work_at if at_last_work else None
            rec.ledger.settle(at)
            rec.end_epoch(top, ended_by, at=at)
        else:
            rec.ledger.drop()
            rec.validation_done(top)


class _StepEpochs(EpochStrategy):
    """epoch-every and mark_epoch: batches open at training work and close at the next
    after an optimizer step; loader passes only feed them (or are validation)."""

    forward_is_work = True  # a loop with no loader starts its batch with the forward

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(recorder)
        self.epoch_open = False

    def pass_started(self, p: LoaderPass) -> None:
        p.kind = PassKind.VALIDATION if p.why else PassKind.FEED

    def counts_items(self, p: LoaderPass) -> bool:
        return p.kind is PassKind.FEED

    def item_requested(self, p: LoaderPass) -> bool:
        if p.kind is PassKind.FEED:
            self.next_batch()
        return False

    def training_work(self, what: str) -> None:
        if what == "step" and self.rec.ledger.open:
            return  # the step of the batch under way
        self.next_batch()

    def next_batch(self) -> None:
        """The loop starts on a batch: close the one that has had its step, end the
        epoch if it is due, and open a batch if none is open."""
        ledger = self.rec.ledger
        if ledger.open:
            if not ledger.stepped:
                return
            ledger.close()
        if self.epoch_open and self.epoch_due():
            self.close_epoch()
        if not self.epoch_open:
            self.rec.check_epochs_bound()
            self.rec.begin_epoch()
            self.epoch_open = True
        ledger.begin()

    def epoch_due(self) -> bool:
        return False

    def close_epoch(self, ended_by: str = MARKED) -> None:
        self.rec.ledger.settle()
        if self.epoch_open:
            self.epoch_open = False
            self.rec.end_epoch(None, ended_by)

    def finish(self) -> None:
        self.close_epoch(RUN_END)


class EveryNSteps(_StepEpochs):
    mode = EpochMode.EVERY_N_STEPS

    def epoch_due(self) -> bool:
        return self.rec.epoch_steps >= self.rec.config.epoch_every

    def mark(self) -> None:
        self.rec.note_once("mark_epoch(): epochs come from --epoch-every")


class MarkedEpochs(_StepEpochs):
    mode = EpochMode.MARKED

    def pass_started(self, p: LoaderPass) -> None:
        if p.why is None and not self.rec.mark_called:
            # Claimed by a step before any loader, and no mark_epoch() yet: a loader loop
            # after all (that was a warm-up step). Its epochs are the loader's passes.
            self.close_epoch()
            self.rec.switch_mode(EpochMode.LOADER_PASS)
            self.rec.epochs.pass_started(p)
            return
        super().pass_started(p)

    def mark(self) -> None:
        self.close_epoch()


STRATEGIES: dict[EpochMode, type[EpochStrategy]] = {
    EpochMode.LOADER_PASS: LoaderPassEpochs,
    EpochMode.EVERY_N_STEPS: EveryNSteps,
    EpochMode.MARKED: MarkedEpochs,
}
