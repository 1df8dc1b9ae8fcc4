"""What a test program saw of its own training, written down as `truth.json`.

Every program in this folder counts, in its own terms, the epochs it trained, the batches
it iterated and the optimizer steps it took in each, and every validation pass (where it
ran: in which epoch, after how many optimizer steps of it; and how many batches it took).
Tests compare a run record with this file, never with numbers typed into the test.

This module knows nothing of dcnprobe; the programs import it from their own folder.

    {"program": "lightning_fit.py --accumulate 4",
     "epochs": [{"epoch": 1, "batches": 60, "steps": 15}, ...],
     "validations": [{"epoch": 0, "after_steps": 0, "batches": 2}, ...]}

`epoch` of a validation is the training epoch it ran in or after (0: before the first);
`after_steps` is how many optimizer steps of that epoch came before it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

TRUTH_ENV = "PROGRAM_TRUTH"  # where to write truth.json when --truth is not given


class Truth:
    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path or os.environ.get(TRUTH_ENV) or "truth.json")
        self.epochs: list[dict[str, int]] = []
        self.validations: list[dict[str, int]] = []
        self._validation: dict[str, int] | None = None

    # -- training -------------------------------------------------------------------------

    def epoch_begin(self) -> None:
        self.epochs.append({"epoch": len(self.epochs) + 1, "batches": 0, "steps": 0})

    def batch(self) -> None:
        """One batch the training loop took from its data."""
        self.epochs[-1]["batches"] += 1

    def step(self) -> None:
        """One optimizer step that really updated the parameters."""
        self.epochs[-1]["steps"] += 1

    @property
    def epoch(self) -> int:
        return len(self.epochs)

    # -- validation -------------------------------------------------------------------------

    def validation_begin(self) -> None:
        steps = self.epochs[-1]["steps"] if self.epochs else 0
        self._validation = {"epoch": self.epoch, "after_steps": steps, "batches": 0}

    def validation_batch(self) -> None:
        self._validation["batches"] += 1

    def validation_end(self) -> None:
        self.validations.append(self._validation)
        self._validation = None

    @property
    def validating(self) -> bool:
        return self._validation is not None

    # -- the file --------------------------------------------------------------------------------

    def write(self, **extra) -> None:
        program = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"program": program, "epochs": self.epochs,
                                         "validations": self.validations, **extra}, indent=1))


def counted_steps(optimizer, truth: Truth) -> None:
    """Count the optimizer's real steps through its own (per-instance) step hook: a step
    that a GradScaler or an accumulation wrapper skipped never reaches it."""
    optimizer.register_step_post_hook(lambda *_: truth.step())
