"""A clock that can be held at an earlier reading for the length of a call.

The attach often learns where a batch or an epoch ended only after the fact: a framework
whose loader fetches ahead runs out of data before its last batch is trained, and the
pass is over only when the loop moves on (the next pass starts, the run ends). The
batch and the epoch are then closed as of the last optimizer step or backward seen,
by handing the probe this clock held at that reading, so that the probe's own timer
and record fields need no second code path for "ended earlier". Only the holding thread
reads the held time: the memory sampler stamps its samples with the running clock meanwhile.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from threading import get_ident

_RUNNING = contextlib.nullcontext()


class HeldClock:
    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self._held: float | None = None
        self._holder: int | None = None  # the thread that holds it; others read the running clock

    def __call__(self) -> float:
        held = self._held
        if held is None or self._holder != get_ident():
            return self.clock()
        return held

    def held_at(self, reading: float | None) -> contextlib.AbstractContextManager[None]:
        """Within the block, the clock reads `reading` in this thread (None: the clock runs
        as usual; the common case, every batch, costs no generator)."""
        return _RUNNING if reading is None else self._held_at(reading)

    @contextlib.contextmanager
    def _held_at(self, reading: float) -> Iterator[None]:
        previous = self._held, self._holder  # a hold inside another gives the outer one back
        self._held, self._holder = reading, get_ident()
        try:
            yield
        finally:
            self._held, self._holder = previous
