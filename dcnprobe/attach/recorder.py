"""What the attach records, from events alone: passes over DataLoaders, forward, backward
and optimizer steps, the script's mark_epoch() calls. It drives a Probe (batch records,
epochs) and writes the attach's own records (validation passes, training passes).

No torch here: dcnprobe.attach.agent turns PyTorch's hooks into these calls, and tests
drive them with synthetic event sequences and an injected clock. Where epochs begin and
end is the business of one strategy per mode (dcnprobe.attach.epochs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from dcnprobe.attach.batches import BatchLedger
from dcnprobe.attach.clock import HeldClock
from dcnprobe.attach.epochs import STRATEGIES, EpochStrategy
from dcnprobe.attach.loader_proxy import LoaderPass
from dcnprobe.attach.notes import ATTACH_RECORD, PASS_RECORD, VALIDATION_RECORD
from dcnprobe.attach.phases import PhaseSpans
from dcnprobe.attach.states import EpochMode, PassKind
from dcnprobe.contract import AttachConfig
from dcnprobe.hooks import DATA_WAIT

NO_WORK = "no optimizer step or backward"  # a pass found to be validation only by what it lacked


class RunBound(Exception):
    """A bound from outside (--epochs) was reached; the default end_run raises it."""


def _raise_bound(reason: str) -> NoReturn:
    raise RunBound(reason)


class Recorder:
    def __init__(self, probe: Any, config: AttachConfig, mode: EpochMode, clock: HeldClock, *,
                 phases: PhaseSpans | None = None, clear_cache: Callable[[], float] | None = None,
                 clear_each_epoch: bool = False, clear_every: int | None = None,
                 end_run: Callable[[str], NoReturn] = _raise_bound,
                 epoch_began: Callable[[], None] = lambda: None,
                 start_record: Callable[[LoaderPass | None], None] | None = None) -> None:
        self.probe, self.config, self.clock = probe, config, clock
        # The record (its header) begins with the first epoch, so that the header describes
        # the training loader, not a validation loader iterated first (Lightning's sanity
        # check); what the attach saw before is written just after it.
        self.start_record = start_record or (lambda p: probe.start({}))
        self.started = False
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self.ledger = BatchLedger(probe, clock)
        # The agent hands over the spans it kept before the claim: forwards, backwards and
        # steps under way when recording began end in them.
        self.phases = phases or PhaseSpans(clock, probe.timer.add)
        self.phases.add = probe.timer.add
        self.clear_cache, self.clear_each_epoch, self.clear_every = clear_cache, clear_each_epoch, clear_every
        self.end_run, self.epoch_began = end_run, epoch_began
        self.epochs: EpochStrategy = STRATEGIES[mode](self)
        self.validations: list[LoaderPass] = []  # validation passes not yet ended
        self.mark_called = False
        self.steps = 0  # optimizer steps over the run
        self.epoch_steps = 0  # ... in the current (or last) epoch
        self.epochs_done = 0
        self.steps_outside_epochs = 0
        self.guesses: list[str] = []  # where the record rests on a guess, in words
        self._noted: set[str] = set()
        self._counted_inside: list[bool] = []  # per open optimizer step: a step it wraps was counted
        self.steady = True  # the steady state's inline paths (below); False: the general path always

    @property
    def mode(self) -> EpochMode:
        return self.epochs.mode

    def boundaries(self) -> dict[str, str]:
        found = {"batch": "optimizer-step", "epoch": self.mode.value, "forward": "outermost-module-hooks"}
        if self.mode is EpochMode.LOADER_PASS:
            found["pass"] = "decided by the optimizer steps and backward in it"
        return found

    def switch_mode(self, mode: EpochMode) -> None:
        """The one place where the epoch mode changes (see dcnprobe.attach.epochs)."""
        self.epochs = STRATEGIES[mode](self)
        self.note(boundaries=self.boundaries())

    # -- passes over DataLoaders ---------------------------------------------------------------

    def pass_started(self, loader_id: int, loader_number: int | None, why: str | None,
                     length: int | None = None) -> LoaderPass:
        p = LoaderPass(PassKind.UNDECIDED, self.clock(), loader_id, loader_number, why, length)
        self.end_validations()  # a new pass: the loop is done with any validation pass that gave batches
        self.epochs.pass_started(p)
        if p.kind is PassKind.VALIDATION:
            self.validations.append(p)
        return p

    def item_requested(self, p: LoaderPass) -> bool:
        """True: the pass is cut here (max_batches); the loop is told the loader ran out."""
        if self.validations and p.kind is not PassKind.VALIDATION:
            self.end_validations()  # back to training
        return self.epochs.item_requested(p)

    def item_received(self, p: LoaderPass, waited: float) -> None:
        p.items += 1
        p.touched = self.clock.clock()  # the running clock: no hold is ever taken around this call
        if p.kind is PassKind.VALIDATION:
            return
        if self.epochs.counts_items(p):
            if not p.worked_since_item:
                p.fetches_ahead = True
            p.worked_since_item = False
            ledger = self.ledger
            if ledger.open:  # BatchLedger.item, inline: every batch passes here
                self.probe.timer.times[DATA_WAIT] += waited
                ledger.items += 1
            else:
                ledger.item(waited)
        else:
            self.probe.timer.add(DATA_WAIT, waited)

    def pass_exhausted(self, p: LoaderPass) -> None:
        if p.kind is PassKind.VALIDATION:
            p.exhausted = True
            if not p.fetches_ahead:
                self._end_validation(p)
            return
        self.epochs.pass_exhausted(p)

    def pass_dropped(self, p: LoaderPass) -> None:
        if p.kind is PassKind.VALIDATION:
            self._end_validation(p)
        else:
            self.epochs.pass_dropped(p)

    def ledger_pause(self) -> None:
        """The loop leaves the training batch for a validation pass: record the batch as
        it is (if anything happened in it), so that validation is not counted in it."""
        top = self.epochs.top
        if top is not None and top.kind is not PassKind.TRAINING:
            return  # nothing is recorded of a pass not yet known to train
        if self.ledger.open and (self.ledger.worked or self.ledger.items):
            self.ledger.close()
        elif self.ledger.open:
            self.ledger.drop()

    def end_validations(self) -> None:
        for p in [v for v in self.validations if v.items]:
            self._end_validation(p)

    def _end_validation(self, p: LoaderPass) -> None:
        if p in self.validations:
            self.validations.remove(p)
            self.validation_done(p)

    def validation_done(self, p: LoaderPass) -> None:
        """Write p's validation record. In epoch: the training pass was still going on."""
        p.ended = True
        why = p.why
        if why is None:
            why = NO_WORK
            self.guess(f"a pass over DataLoader #{p.loader_number} ({p.items} batches) with no no_grad, "
                       f"inference_mode or eval mode is counted as validation: {NO_WORK} in it")
        self.event(VALIDATION_RECORD, epoch=self.probe.epoch, loader=p.loader_number, batches=p.items,
                   duration_s=p.touched - p.started, why=why, after_steps=self.epoch_steps)

    # -- epochs --------------------------------------------------------------------------------------

    def ensure_started(self, p: LoaderPass | None = None) -> None:
        """Write the header (for the training pass p, if known), then what waited for it."""
        if self.started:
            return
        self.started = True
        self.start_record(p)
        pending, self._pending = self._pending, []
        for kind, fields in pending:
            self.probe.event(kind, **fields)

    def event(self, kind: str, **fields: Any) -> None:
        if self.started:
            self.probe.event(kind, **fields)
        else:
            self._pending.append((kind, fields))

    def begin_epoch(self, at: float | None = None) -> None:
        with self.clock.held_at(at):
            self.ensure_started(self.epochs.top)
            self.probe.begin_pass()
        self.epoch_steps = 0
        self.epoch_began()

    def end_epoch(self, p: LoaderPass | None, ended_by: str, at: float | None = None) -> None:
        counted = self.epoch_steps > 0 or p is not None
        with self.clock.held_at(at):
            self.probe.end_pass(counted=counted)
        if not counted:
            return
        self.epochs_done += 1
        if p is not None:
            self.event(PASS_RECORD, epoch=self.probe.epoch, loader=p.loader_number, loader_batches=p.items,
                       optimizer_steps=p.steps, began_as=p.why, ended_by=ended_by, cut=p.cut,
                       eval_forwards=p.eval_forwards)
            if p.eval_forwards:
                self.guess(f"epoch {self.probe.epoch} trained with a module in eval mode ({p.eval_forwards} forward "
                           "passes with gradients): model.train() was not called after validation?")
        if self.clear_each_epoch and self.clear_cache is not None:
            self.clear_cache()

    def epochs_bound_reached(self) -> bool:
        return self.config.epochs is not None and self.epochs_done >= self.config.epochs

    def check_epochs_bound(self) -> None:
        """About to begin another epoch: end the run instead if --epochs of them are done."""
        if self.epochs_bound_reached():
            self.end_run(f"epochs={self.config.epochs}")

    def mark(self) -> None:
        if self.mode is not EpochMode.EVERY_N_STEPS:
            self.mark_called = True
        self.epochs.mark()

    def finish(self) -> None:
        for p in list(self.validations):
            self._end_validation(p)
        self.epochs.finish()
        self.ensure_started()  # a run that never trained still gets its record

    # -- forward, backward, optimizer ------------------------------------------------------------------
    #
    # The steady state: a training pass under way (dataloader-pass epochs), its batch open,
    # no validation pass open, at the outermost call, no collective wait, no closure or
    # wrapper optimizer around it. Nearly every hook call of a training run comes in it,
    # between a model's kernels, where each further Python call costs several us: so each
    # method below does the outermost call's arithmetic (PhaseSpans') inline there, and
    # takes the general path otherwise. Both give the same record
    # (tests/test_attach_states.py replays every sequence both ways).

    def forward_began(self, training: bool, grad: bool) -> None:
        phases = self.phases
        if training and self.steady and not (phases.forward_depth or phases.backward_depth or self.epochs.forward_is_work):
            phases.forward_depth = 1
            phases.forward_from = phases.clock() if grad else None
            return
        if not phases.forward_begin(timed=grad) or not grad:
            return
        top = self.epochs.top
        if not training and top is not None and not self.validations:
            top.eval_forwards += 1  # counted against the top pass; said only if it trained
        if training and self.epochs.forward_is_work and not phases.step_depth:
            self.epochs.training_work("forward")

    def forward_ended(self) -> None:
        phases = self.phases
        if (phases.forward_depth == 1 and self.steady and not self.validations
                and not (phases.step_depth or phases.collective_in_span)):
            phases.forward_depth = 0
            began = phases.forward_from
            if began is not None:
                phases.forward_from = None
                phases.add("forward", phases.clock() - began)
            return
        now = phases.forward_end()
        if now is not None and self.validations:
            self.validations[-1].touched = now

    def backward_began(self) -> None:
        phases = self.phases
        top = self.epochs.top
        if (not phases.backward_depth and self.steady and top is not None and top.kind is PassKind.TRAINING
                and self.ledger.open and not self.validations):
            phases.backward_depth = 1
            phases.backward_from = phases.clock()
            return
        if phases.backward_begin():
            if self.validations:
                self.end_validations()
            self.epochs.training_work("backward")

    def backward_ended(self) -> None:
        phases = self.phases
        began = phases.backward_from
        ledger = self.ledger
        if (phases.backward_depth == 1 and self.steady and began is not None and ledger.open
                and not (phases.step_depth or phases.collective_in_span)):
            phases.backward_depth = 0
            phases.backward_from = None
            now = phases.clock()
            # What phases.add and _work_done would do, inline: the batch is open, so the
            # timer's is too (the ledger alone opens and closes the timer's batches).
            self.probe.timer.times["backward"] += now - began
            ledger.last_work_at, ledger.worked = now, True
            top = self.epochs.top
            if top is not None:
                top.worked_since_item = True
            return
        now = phases.backward_end()
        if now is not None:
            self._work_done(now, step=False)

    def step_began(self) -> None:
        self._counted_inside.append(False)
        phases = self.phases
        top = self.epochs.top
        if (not phases.step_depth and self.steady and top is not None and top.kind is PassKind.TRAINING
                and self.ledger.open and not self.validations):
            phases.step_depth = 1
            phases.step_from, phases.inside_step = phases.clock(), 0.0
            return
        if phases.step_begin():
            if self.validations:
                self.end_validations()
            self.epochs.training_work("step")

    def step_ended(self, counts: bool) -> None:
        """counts: the optimizer is not a wrapper of another (accelerate's
        AcceleratedOptimizer skips its inner step while accumulating gradients)."""
        phases = self.phases
        inside = self._counted_inside
        top = self.epochs.top
        began = phases.step_from
        ledger = self.ledger
        if (counts and self.steady and phases.step_depth == 1 and len(inside) == 1 and not inside[0] and began is not None
                and top is not None and ledger.open and not self.clear_every):
            inside.pop()
            phases.step_depth = 0
            phases.step_from = None
            now = phases.clock()
            seconds = now - began - phases.inside_step
            self.probe.timer.times["optimizer"] += seconds if seconds > 0.0 else 0.0
            self.steps += 1
            self.epoch_steps += 1
            top.steps += 1
            ledger.last_work_at, ledger.worked = now, True  # _work_done, inline
            ledger.steps += 1
            top.worked_since_item = True
            return
        inner_counted = inside.pop() if inside else False
        now = phases.step_end()
        counts = counts and not inner_counted  # a wrapper whose inner step was counted already
        if counts and inside:
            inside[-1] = True
        if not counts:
            return
        self.steps += 1
        if not self.ledger.open:
            self.steps_outside_epochs += 1
            return
        self.epoch_steps += 1
        if top is not None:
            top.steps += 1
        self._work_done(now if now is not None else self.clock(), step=True)
        if self.clear_every and self.clear_cache is not None and self.steps % self.clear_every == 0:
            self.probe.timer.add("cache_clear", self.clear_cache())

    def _work_done(self, now: float, step: bool) -> None:
        self.ledger.work_done(now, step)
        top = self.epochs.top
        if top is not None:
            top.worked_since_item = True

    # -- notes ------------------------------------------------------------------------------------------

    def note(self, **fields: Any) -> None:
        self.event(ATTACH_RECORD, **fields)

    def note_once(self, text: str) -> None:
        if text not in self._noted:
            self._noted.add(text)
            self.note(ignored=text)

    def guess(self, text: str) -> None:
        if text not in self.guesses:
            self.guesses.append(text)
