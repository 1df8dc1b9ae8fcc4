"""Continuing a trial of the built-in trainer from its last per-epoch checkpoint.

The trainer writes `checkpoints/epoch-N.pt` (atomically) after each epoch, and
`--resume` continues from the newest one exactly as if never interrupted. What the
harness has to do before such a rerun is to make the trial's run record agree with the
checkpoint: keep the records of the finished epochs (epoch 1 stays the baseline the
slowdown statistics compare with) and drop whatever the killed run wrote after them, so
that no epoch is counted twice and no torn line is left in the middle of the file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from dcnprobe.records import EPOCH, RUN_FILE

CHECKPOINTS = "checkpoints"  # the built-in trainer's layout: checkpoints/epoch-N.pt
_CHECKPOINT_NAME = re.compile(r"epoch-(\d+)\.pt$")


def last_checkpoint_epoch(directory: Path) -> int | None:
    """The newest epoch with a checkpoint in a trial directory, or None."""
    folder = directory / CHECKPOINTS
    if not folder.is_dir():
        return None
    epochs = [int(m.group(1)) for p in folder.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return max(epochs) if epochs else None


def trim_record(directory: Path, epoch: int) -> None:
    """Cut DIR/run.jsonl just after the summary record of `epoch`. A record without that
    epoch's summary cannot be continued consistently and is set aside (run.jsonl.old)."""
    path = directory / RUN_FILE
    if not path.is_file():
        return
    lines = path.read_bytes().split(b"\n")
    keep = None
    for number, line in enumerate(lines):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and record.get("type") == EPOCH and record.get("epoch") == epoch:
            keep = number + 1
    if keep is None:
        os.replace(path, path.with_name(RUN_FILE + ".old"))
        return
    tmp = path.with_name(RUN_FILE + ".tmp")
    tmp.write_bytes(b"\n".join(lines[:keep]) + b"\n")
    os.replace(tmp, path)
