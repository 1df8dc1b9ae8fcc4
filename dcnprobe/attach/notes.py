"""What the attach (or a framework callback) wrote about a run, read back: how boundaries
were found, the settings applied and not applied, the DataLoaders built, the training
and validation passes in the order they happened.

The header's `attach` entry says what was known when recording began; `attach` records
add what was learnt later, the last one (`final`) the state at the end, with `guesses`:
where the record rests on an inference rather than an event (a pass counted as
validation only because nothing trained in it; an epoch trained in eval mode).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dcnprobe.records import BATCH, RUN_FILE

# Record types the attach adds to a run record (readers that do not know them skip them).
ATTACH_RECORD = "attach"  # what the attach learnt after the header: device, boundaries, settings
VALIDATION_RECORD = "validation"  # a pass over a DataLoader that was not training
PASS_RECORD = "train_pass"  # a training pass that was an epoch: its counts and how it ended

# The fields of those records (documented beside dcnprobe.records.COLUMNS).
COLUMNS: dict[str, dict[str, str]] = {
    VALIDATION_RECORD: {
        "t": "when it was recorded", "epoch": "the training epoch it ran in or after (0: before the first)",
        "after_steps": "optimizer steps of that epoch before it", "loader": "DataLoader number (build order)",
        "batches": "batches it gave", "duration_s": "from its start to its last batch or forward",
        "why": "inference_mode, no_grad, eval-mode (its state at the start), or 'no optimizer step or backward'",
    },
    PASS_RECORD: {
        "t": "when recorded", "epoch": "its epoch", "loader": "DataLoader number",
        "loader_batches": "batches the loader gave to training", "optimizer_steps": "optimizer steps in it",
        "began_as": "the state it began in (eval-mode, ...) or null", "ended_by": "what showed its end",
        "cut": "max_batches ended it", "eval_forwards": "forwards with gradients of a module in eval mode",
    },
    ATTACH_RECORD: {
        "boundaries": "how batches and epochs were found", "final": "the last note of the run",
        "guesses": "where the record rests on an inference, in words", "steps": "optimizer steps in the run",
        "steps_outside_epochs": "optimizer steps with no training pass open",
    },
}


def read_notes(run_dir: str | Path) -> dict[str, Any]:
    """{"header": the header's attach entry, "boundaries", "final": the last attach record
    (or {}), "validation": the validation records, "passes": the training-pass records,
    "timeline": batches, validation and training passes as ("batch" | "validation" |
    "train_pass", record) in file order}."""
    header: dict[str, Any] = {}
    final: dict[str, Any] = {}
    boundaries: dict[str, Any] = {}
    validation: list[dict[str, Any]] = []
    passes: list[dict[str, Any]] = []
    timeline: list[tuple[str, dict[str, Any]]] = []

    for line in (Path(run_dir) / RUN_FILE).read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        kind = record.get("type")
        if kind == "header":
            header = record.get("attach") or {}
            boundaries = record.get("boundaries") or {}
        elif kind == ATTACH_RECORD:
            boundaries = record.get("boundaries") or boundaries
            if record.get("final"):
                final = record
        elif kind == VALIDATION_RECORD:
            validation.append(record)
        elif kind == PASS_RECORD:
            passes.append(record)
        if kind in (BATCH, VALIDATION_RECORD, PASS_RECORD):
            timeline.append((kind, record))
    return {"header": header, "boundaries": boundaries, "final": final, "validation": validation,
            "passes": passes, "timeline": timeline}


def loop_shape(run_dir: str | Path) -> dict[str, list[dict[str, int]]]:
    """The run as a program would count it, from the record alone: per epoch the loader
    batches and optimizer steps of its batch records; per validation pass, in file order,
    the epoch it ran in or after, the optimizer steps of that epoch recorded before it,
    and its batches. The shape of dcnprobe's test programs' truth.json."""
    epochs: dict[int, dict[str, int]] = {}
    validations: list[dict[str, int]] = []
    last_epoch = 0
    for kind, record in read_notes(run_dir)["timeline"]:
        if kind == "batch":
            last_epoch = int(record["epoch"])
            entry = epochs.setdefault(last_epoch, {"epoch": last_epoch, "batches": 0, "steps": 0})
            entry["batches"] += int(record.get("loader_batches", 1))
            entry["steps"] += int(record.get("optimizer_steps", 1))
        elif kind == "validation":
            epoch = int(record.get("epoch", last_epoch))
            before = epochs.get(epoch, {}).get("steps", 0)
            validations.append({"epoch": epoch, "after_steps": before, "batches": int(record["batches"])})
    return {"epochs": [epochs[e] for e in sorted(epochs)], "validations": validations}
