"""A trial: one command run under one settings object, and the key that caches it.

For a user's script, the settings named in `applied` reach it from outside (the attach)
or through placeholders, and the run is bounded from outside (`max_batches`, `epochs`).
The built-in trainer takes every setting and bound as an option of its own.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcnprobe.command import APPLIED_FROM_OUTSIDE, Command
from dcnprobe.contract import AttachConfig
from dcnprobe.harness.resume import last_checkpoint_epoch
from dcnprobe.settings import Settings, format_value, to_cli_args


@dataclass(frozen=True)
class TrialSpec:
    command: Command
    settings: Settings = field(default_factory=Settings)
    # The settings this trial gives the command (a user's script gets only these, so that
    # what it decides for itself is left alone). The built-in trainer is given every one.
    applied: tuple[str, ...] = ()
    epochs: int = 2
    max_batches: int | None = 200
    replicate: int = 0  # > 0: a fresh run of the same settings, to re-check a noisy verdict
    # Built-in trainer only: keep a checkpoint per epoch, and continue from the last one
    # when the trial's directory holds one (a study resumes mid-trial; bisect and sweep
    # trials are short and measure speed, so they start afresh).
    checkpoints: bool = False
    # Stop the trial as soon as its last epoch is clearly healthy (harness.early_stop), as
    # it stops once clearly slow: for a trial that only has to give a verdict (bisect).
    stop_when_healthy: bool = False

    @property
    def given(self) -> dict[str, Any]:
        """The settings this trial gives its command, by name."""
        values = self.settings.to_dict()
        if self.command.builtin:
            return values
        return {name: values[name] for name in self.applied}

    def describe(self) -> dict[str, Any]:
        return {
            "command": self.command.text(),
            "builtin": self.command.builtin,
            "settings": {k: v for k, v in self.given.items()},
            "epochs": self.epochs,
            "max_batches": self.max_batches,
            "replicate": self.replicate,
            # Only when set, so that the keys of bisect and sweep trials do not change.
            **({"checkpoints": True} if self.checkpoints else {}),
            **({"stop_when_healthy": True} if self.stop_when_healthy else {}),
        }

    def key(self) -> str:
        """The command, its code, its settings and dcnprobe's own code: a cached result is
        reused only when all four are the same."""
        text = json.dumps([self.describe(), self.command.code_digest(), toolkit_version()], sort_keys=True,
                          default=format_value)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def process(self, out: Path, *, stall_after_s: float | None = None, quiet: bool = True,
                profile: Mapping[str, Any] | None = None) -> tuple[list[str], AttachConfig]:
        """The words to run and the attach config for a run of this trial into `out`."""
        argv = self.command.render(self.settings, out)
        if self.command.builtin:
            argv += [*to_cli_args(self.settings), "--epochs", str(self.epochs), "--out", str(out)]
            if not self.checkpoints:
                argv.append("--no-checkpoints")
            elif last_checkpoint_epoch(out) is not None:
                argv.append("--resume")
            if self.max_batches is not None:
                argv += ["--max-batches", str(self.max_batches)]
            if stall_after_s is not None:
                argv += ["--stall-after", str(stall_after_s)]
            if quiet:
                argv.append("--quiet")
            config = AttachConfig(run_dir=str(out), stall_after=stall_after_s, profile=dict(profile) if profile else None)
        else:
            outside = {k: format_value(v) for k, v in self.given.items() if k in APPLIED_FROM_OUTSIDE
                       and k not in self.command.placeholders}
            config = AttachConfig(run_dir=str(out), settings=outside, max_batches=self.max_batches,
                                  epochs=self.epochs, stall_after=stall_after_s,
                                  profile=dict(profile) if profile else None)
        return argv, config


@functools.cache
def toolkit_version() -> str:
    """A hash of dcnprobe's own source: the probe, the attach and the analysis shape every
    measurement, so a cached trial from other toolkit code is not reused."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
