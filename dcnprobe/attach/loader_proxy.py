"""What DataLoader.__iter__ returns while the probe is attached: the real iterator, with
every next() reported to the agent, which times how long it blocked (data_wait) and sees
where each pass over the loader begins and ends.
"""

from __future__ import annotations

from typing import Any


class LoaderPass:
    """One pass over a DataLoader, as the agent classifies it."""

    TRAIN = "train"  # the training loop's pass: in dataloader-pass mode, an epoch
    FEED = "feed"  # feeds training but defines no epoch (a second loader, or epochs come from elsewhere)
    VALIDATION = "validation"  # under no_grad / inference_mode, or the model in eval mode

    __slots__ = ("kind", "why", "loader_number", "started", "first_wait_from", "items", "steps_at_start", "ended")

    def __init__(self, kind: str, started: float, loader_number: int | None, steps_at_start: int,
                 why: str | None = None) -> None:
        self.kind, self.why, self.loader_number = kind, why, loader_number
        self.started = started
        self.first_wait_from: float | None = started  # the first batch waits from iter() on: worker start-up
        self.items = 0
        self.steps_at_start = steps_at_start
        self.ended = False


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
        # A loop that breaks out of the pass drops its iterator: the pass ends there.
        loader_pass = self._pass
        if not loader_pass.ended:
            self._agent.pass_ended(loader_pass)
