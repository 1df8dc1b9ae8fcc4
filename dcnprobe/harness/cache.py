"""Completed trials, cached under the output directory by the hash of their spec and the
code version, so an interrupted bisect or sweep resumes where it stopped."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from dcnprobe.harness.resume import last_checkpoint_epoch, trim_record
from dcnprobe.harness.runner import RESULT_FILE, TrialResult
from dcnprobe.harness.spec import TrialSpec


class TrialCache:
    def __init__(self, root: Path) -> None:
        self.root = root / "trials"

    def directory(self, spec: TrialSpec) -> Path:
        return self.root / spec.key()

    def get(self, spec: TrialSpec) -> TrialResult | None:
        path = self.directory(spec) / RESULT_FILE
        if not path.is_file():
            return None
        try:
            result = TrialResult.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError):
            return None  # torn or foreign: run the trial again
        # Where the trial's records are now: the saved path was relative to wherever the
        # earlier command ran, and a resumed bisect may run from elsewhere.
        result.run_dir = str(self.directory(spec))
        return result

    def prepare(self, spec: TrialSpec, keep: bool = False) -> Path:
        """A clean directory for a trial that has to run (a previous, unfinished try is
        removed), or with `keep` the previous try's checkpoints and the records of the
        epochs they cover, for a trial that continues where it stopped."""
        directory = self.directory(spec)
        epoch = last_checkpoint_epoch(directory) if keep else None
        if epoch is None:
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            return directory
        (directory / RESULT_FILE).unlink(missing_ok=True)  # an earlier verdict is about to be replaced
        trim_record(directory, epoch)
        return directory

    def put(self, result: TrialResult) -> None:
        directory = self.root / result.key
        tmp = directory / (RESULT_FILE + ".tmp")
        tmp.write_text(json.dumps(result.to_json(), indent=2))
        os.replace(tmp, directory / RESULT_FILE)
