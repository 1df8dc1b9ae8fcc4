"""A cause of slowdown as one unit: its id, what the probe sees, the usual fix, a public
reference to check it against, and the rule that reads the signals. Defining a cause with
`@cause(...)` registers it; the id list, the advice the CLI prints and docs/causes.md are
all derived from the registry (dcnprobe.analysis.causes.catalogue).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dcnprobe.analysis.signals import Signals

Rule = Callable[["Signals", "Path | None"], "Finding | None"]


@dataclass(frozen=True)
class Finding:
    """A rule's judgement: a score in (0, 1] that orders causes against each other (not a
    probability), and the measurements behind it, in words."""

    id: str
    score: float
    evidence: tuple[str, ...]
    # Read from the run's own memory or file descriptors, not from its timing: another
    # process's CPU can slow a run but cannot make it hold bytes or files.
    timing_free: bool = False

    @property
    def advice(self) -> str:
        return CAUSES[self.id].fix if self.id in CAUSES else ""

    def to_dict(self) -> dict:
        return {"id": self.id, "score": round(self.score, 3), "evidence": list(self.evidence), "advice": self.advice}


@dataclass(frozen=True)
class Cause:
    id: str
    sees: str  # what the probe sees: the catalogue's words
    fix: str  # what to do: printed under the verdict, and in the catalogue
    reference: str  # a public reference to check the cause against
    rule: Rule | None = field(default=None, compare=False)  # None: named by the ranking, not by a rule


CAUSES: dict[str, Cause] = {}


def cause(id: str, *, sees: str, fix: str, reference: str) -> Callable[[Rule], Rule]:
    """Register the decorated rule as the one that names `id`."""

    def register(rule: Rule) -> Rule:
        if id in CAUSES:
            raise ValueError(f"cause {id!r} is registered twice")
        CAUSES[id] = Cause(id, sees, fix, reference, rule)
        return rule

    return register


def register_unruled(id: str, *, sees: str, fix: str, reference: str) -> None:
    """A cause no rule names by reading signals ("none": what the ranking says when no rule matched)."""
    CAUSES[id] = Cause(id, sees, fix, reference)
