"""Forward, backward and optimizer time, from the start and end calls of the hooks.

Only the outermost call of each counts: a module's forward calls its children's, a
backward may recompute forwards (checkpointing), a wrapper optimizer calls the one it
wraps. An optimizer step may run the loop's own work inside it, through a closure (LBFGS,
and every automatically optimized Lightning step, whose closure is the whole
training_step): the closure's forward and backward are timed as such, the rest of it is
the loop's own code (`other`), and the step's `optimizer` time is the step less its
closures.

Time blocked in a collective (a rank waiting for the others) is its own phase,
`collective`, taken out of the forward, backward or step it happened in: a backward that
waited for DDP's gradient all-reduce counts only its compute as `backward`.
"""

from __future__ import annotations

from collections.abc import Callable

from dcnprobe.hooks import COLLECTIVE

AddTime = Callable[[str, float], None]


class PhaseSpans:
    __slots__ = ("clock", "add", "forward_depth", "backward_depth", "step_depth", "closure_depth", "_closure_began",
                 "forward_from", "backward_from", "step_from", "inside_step", "collective_in_span")

    def __init__(self, clock: Callable[[], float], add: AddTime) -> None:
        self.clock, self.add = clock, add
        self.forward_depth = 0
        self.backward_depth = 0
        self.step_depth = 0
        self.closure_depth = 0
        self._closure_began: float | None = None
        # When the open outermost forward, backward and step began (None: none, or untimed),
        # and what they hold: public for the recorder's steady path (Recorder, "the steady
        # state"), which does the outermost calls' arithmetic inline.
        self.forward_from: float | None = None
        self.backward_from: float | None = None
        self.step_from: float | None = None
        self.inside_step = 0.0  # the loop's own seconds within the open step: closures, forwards, backwards
        self.collective_in_span = 0.0  # collective seconds within the open forward or backward

    @property
    def in_step(self) -> bool:
        return self.step_depth > 0

    # Each *_begin returns whether the call is an outermost one (which the caller acts on).

    def forward_begin(self, timed: bool) -> bool:
        depth = self.forward_depth
        self.forward_depth = depth + 1
        if depth or self.backward_depth:  # a child module, or a recomputation inside backward
            return False
        self.forward_from = self.clock() if timed else None
        return True

    def forward_end(self) -> float | None:
        """The outermost forward ended: when, if it was timed."""
        self.forward_depth -= 1
        if self.forward_depth:
            return None
        began, self.forward_from = self.forward_from, None
        return self._outermost_ended("forward", began)

    def backward_begin(self) -> bool:
        depth = self.backward_depth
        self.backward_depth = depth + 1
        if depth:
            return False
        self.backward_from = self.clock()
        return True

    def backward_end(self) -> float | None:
        self.backward_depth -= 1
        if self.backward_depth:
            return None
        began, self.backward_from = self.backward_from, None
        return self._outermost_ended("backward", began)

    def step_begin(self) -> bool:
        depth = self.step_depth
        self.step_depth = depth + 1
        if depth:
            return False
        self.step_from, self.inside_step = self.clock(), 0.0
        return True

    def step_end(self) -> float | None:
        self.step_depth -= 1
        if self.step_depth or self.step_from is None:
            return None
        now = self.clock()
        self.add("optimizer", max(0.0, now - self.step_from - self.inside_step))
        self.step_from = None
        return now

    def closure_begin(self) -> None:
        depth = self.closure_depth
        self.closure_depth = depth + 1
        if not depth and self.step_depth:
            self._closure_began = self.clock()

    def closure_end(self) -> None:
        self.closure_depth -= 1
        if not self.closure_depth and self._closure_began is not None:
            self.inside_step += self.clock() - self._closure_began
            self._closure_began = None

    def collective(self, seconds: float) -> None:
        """`seconds` blocked in a collective, just ended."""
        self.add(COLLECTIVE, seconds)
        if self.forward_depth or self.backward_depth:
            self.collective_in_span += seconds  # not that forward's or backward's own time
        if self.step_depth and not self.closure_depth:
            self.inside_step += seconds  # nor the optimizer's (a closure's time is taken whole)

    def _outermost_ended(self, phase: str, began: float | None) -> float | None:
        """An outermost forward or backward ended: its time (if it was timed), less the
        collective waits inside it; returns when, if timed."""
        waited, self.collective_in_span = self.collective_in_span, 0.0
        if began is None:
            return None
        now = self.clock()
        seconds = now - began - waited
        self.add(phase, seconds)
        if self.step_depth and not self.closure_depth:  # a closure's time is taken whole
            self.inside_step += seconds
        return now


def with_timed_closure(spans: PhaseSpans, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """An optimizer step pre-hook's answer: the step's closure wrapped so that its time is
    known, or None when the step has no closure. (Optimizer.step(closure) takes it as the
    first argument after the optimizer, or by name.)"""
    if callable(kwargs.get("closure")):
        closure, where = kwargs["closure"], "kwargs"
    elif len(args) > 1 and callable(args[1]):
        closure, where = args[1], "args"
    else:
        return None

    def timed_closure(*a, **k):
        spans.closure_begin()
        try:
            return closure(*a, **k)
        finally:
            spans.closure_end()

    if where == "kwargs":
        return args, {**kwargs, "closure": timed_closure}
    return (args[0], timed_closure, *args[2:]), kwargs
