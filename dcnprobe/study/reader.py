"""Loading a study trial's metrics: the built-in trainer's summary.json in its directory."""

from __future__ import annotations

import json
from pathlib import Path

from dcnprobe.study.summary import SeedRun

SUMMARY_FILE = "summary.json"  # written by the trainer after every epoch


def read_seed_run(run_dir: str | Path, preset: str, seed: int, planned_epochs: int) -> SeedRun:
    """The trial's epochs so far; none when the trial wrote no summary (it died before its
    first epoch ended) or the file cannot be read."""
    run = SeedRun(preset, seed, planned_epochs)
    try:
        summary = json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return run
    run.epochs = list(summary.get("epochs") or [])
    run.hyperparams = dict((summary.get("job") or {}).get("hyperparams") or {})
    return run
