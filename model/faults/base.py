"""What a slowdown scenario is: a trainer plugin that reproduces one real mechanism and
declares the cause id (dcnprobe.analysis.causes) that the analysis should name for it.

Scenarios act only through the trainer's extension points (model.plugins), so the
training loop has no special cases for them, and the analysis never sees their names:
it has to find the cause from the measurements alone.
"""

from __future__ import annotations

from typing import Any, ClassVar

from dcnprobe.model.plugins import TrainerPlugin


class Fault(TrainerPlugin):
    name: ClassVar[str]
    cause: ClassVar[str]  # the cause id this scenario reproduces
    summary: ClassVar[str]
    # Settings under which the mechanism shows (e.g. workers for worker faults). Used by
    # the validation runs; a user may of course run a fault under any settings.
    shows_with: ClassVar[dict[str, Any]] = {}

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this machine cannot reproduce the mechanism (it then plants nothing), or None."""
        return None
