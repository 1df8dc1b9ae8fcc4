"""What DataLoader.__iter__ returns while the probe is attached: the real iterator, with
every next() reported to the agent, which times how long it blocked (data_wait) and sees
where each pass over the loader begins and ends.
"""

from __future__ import annotations

from typing import Any

from dcnprobe.attach.states import PassKind


class LoaderPass:
    """One pass over a DataLoader, as the attach classifies it (dcnprobe.attach.states)."""

    __slots__ = ("kind", "why", "loader_id", "loader_number", "started", "first_wait_from", "items", "steps",
                 "exhausted", "ended", "cut", "touched", "eval_forwards", "fetches_ahead", "worked_since_item", "length")

    def __init__(self, kind: PassKind, started: float, loader_id: int, loader_number: int | None,
                 why: str | None = None, length: int | None = None) -> None:
        self.kind = kind
        self.why = why  # the state it began in: inference_mode, no_grad, eval-mode, or None
        self.loader_id, self.loader_number = loader_id, loader_number
        self.started = started
        self.length = length  # batches in a full pass, when the loader knows
        self.first_wait_from: float | None = started  # the first batch waits from iter() on: worker start-up
        self.items = 0  # loader batches it gave
        self.steps = 0  # optimizer steps while it was the training pass
        self.exhausted = False  # the loader ran out (or max_batches cut it); the loop may still be at work
        self.ended = False
        self.cut = False  # max_batches ended it early
        self.touched = started  # last sign of life: an item, a forward (a validation pass's end)
        self.eval_forwards = 0  # forwards with gradients of a module in eval mode, while training
        # The loop asked for another batch before doing any work on the last one: it fetches
        # ahead (accelerate's DataLoaderShard, the Trainer's accumulation groups), so the
        # loader runs out before the last batches are trained.
        self.fetches_ahead = False
        self.worked_since_item = True

    def __repr__(self) -> str:
        return f"LoaderPass({self.kind.value}, loader {self.loader_number}, {self.items} items)"


class TimedIterator:
    __slots__ = ("_iterator", "_pass", "_agent", "__weakref__")

    def __init__(self, iterator: Any, loader_pass: LoaderPass, agent: Any) -> None:
        self._iterator, self._pass, self._agent = iterator, loader_pass, agent

    def __iter__(self) -> TimedIterator:
        return self

    def __next__(self) -> Any:
        return self._agent.next_item(self._pass, self._iterator)

    def __len__(self) -> int:
        return len(self._iterator)

    def __getattr__(self, name: str) -> Any:  # anything else a loop asks of the real iterator
        return getattr(self._iterator, name)

    def __del__(self) -> None:
        # A loop that breaks out of the pass, or a framework done with it, drops its iterator.
        if not self._pass.ended:
            self._agent.pass_dropped(self._pass)
