"""The batch the attach is recording, and what went into it.

A batch record is the work around one optimizer step (the header's `boundaries.batch`,
`optimizer-step`): it opens when the loop asks for data (or, with no DataLoader, at the
first forward, backward or step) and closes when the loop asks for more after a step.
It counts both units a user may mean by "a batch":

    loader_batches   batches the training DataLoader gave during it (what the program
                     iterates: 4 with gradient accumulation over 4 batches)
    optimizer_steps  optimizer steps in it (0 for the batches of an epoch's end that only
                     accumulated, or a step a GradScaler skipped; 2 with two optimizers)
"""

from __future__ import annotations

from typing import Any

from dcnprobe.attach.clock import HeldClock
from dcnprobe.hooks import DATA_WAIT


class BatchLedger:
    __slots__ = ("probe", "timer", "clock", "items", "steps", "worked", "open", "last_work_at")

    def __init__(self, probe: Any, clock: HeldClock) -> None:
        self.probe, self.timer, self.clock = probe, probe.timer, clock
        self.items = 0
        self.steps = 0
        self.worked = False  # a backward or an optimizer step since it opened
        # The timer has a batch open: the timer's state, kept here as a plain attribute
        # because every hook reads it (the ledger alone begins and ends the timer's batches).
        self.open = False
        self.last_work_at: float | None = None  # when the last backward or step ended (any batch)

    @property
    def stepped(self) -> bool:
        return self.steps > 0

    def begin(self, at: float | None = None) -> None:
        if at is None:  # every batch: no hold to set up
            self.timer.begin()
        else:
            with self.clock.held_at(at):
                self.timer.begin()
        self.open = True
        self.items, self.steps, self.worked = 0, 0, False

    def item(self, waited: float) -> None:
        self.timer.add(DATA_WAIT, waited)
        self.items += 1

    def work_done(self, now: float, step: bool) -> None:
        """A backward or (step=True) an optimizer step ended."""
        self.last_work_at = now
        if self.open:
            self.worked = True
            self.steps += step

    def close(self, at: float | None = None) -> None:
        """Record the batch, as of `at` if given (its last work, learnt later)."""
        self.open = False  # before the probe's listeners, which may end the run (StopRun)
        if at is None:
            self.probe.end_batch(loader_batches=self.items, optimizer_steps=self.steps)
        else:
            with self.clock.held_at(at):
                self.probe.end_batch(loader_batches=self.items, optimizer_steps=self.steps)
        self.items, self.steps, self.worked = 0, 0, False

    def drop(self) -> None:
        """No work was done in it (an exhausted loader's last request, a pass that was
        not training): nothing to record."""
        self.open = False
        self.timer.cancel()
        self.items, self.steps, self.worked = 0, 0, False

    def settle(self, at: float | None = None) -> None:
        """A pass or an epoch ends: keep the open batch if work was done in it."""
        if not self.open:
            return
        if self.worked:
            self.close(at)
        else:
            self.drop()
