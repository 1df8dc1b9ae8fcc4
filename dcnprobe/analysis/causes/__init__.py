"""From signals to causes. Each cause is one unit, defined once in the module of its family
(memory, loop, workers, machine, stall): its id, what the probe sees, the fix, a
reference, and the rule that reads the signals (never a scenario's name) and returns a
score in (0, 1] with the evidence behind it, or nothing. The ranking (PRECEDENCE) says
which causes explain others. Every number a rule compares against lives in
dcnprobe.analysis.thresholds.

To add a cause: write its rule with `@cause(...)` in its family's module, give it a
place in ranking.PRECEDENCE, and regenerate docs/causes.md
(`python -m dcnprobe.analysis.causes.catalogue > docs/causes.md`); tests say what is missing.
"""

from __future__ import annotations

# The families register their causes when imported; the order here is the registry's.
from dcnprobe.analysis.causes import loop, machine, memory, stall, workers  # noqa: F401
from dcnprobe.analysis.causes.ranking import PRECEDENCE, rank
from dcnprobe.analysis.causes.registry import CAUSES, Cause, Finding

CAUSE_IDS: tuple[str, ...] = tuple(CAUSES)

__all__ = ["CAUSES", "CAUSE_IDS", "PRECEDENCE", "Cause", "Finding", "advice_for", "rank"]


def advice_for(cause_id: str) -> str:
    """What to do about a cause (its `fix`), or "" for an id that is not one."""
    cause = CAUSES.get(cause_id)
    return cause.fix if cause else ""
