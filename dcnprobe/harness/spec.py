"""A trial: one training run under one settings object, and the key that caches it."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcnprobe.settings import Settings, to_cli_args
from model.presets import DEFAULT_PRESET

PACKAGES = ("dcnprobe", "model")


@dataclass(frozen=True)
class TrialSpec:
    settings: Settings = field(default_factory=Settings)
    faults: tuple[str, ...] = ()
    preset: str = DEFAULT_PRESET
    epochs: int = 2
    max_batches: int | None = 200
    data: str = "synthetic"
    replicate: int = 0  # > 0: a fresh run of the same settings, to re-check a noisy verdict

    def describe(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            "faults": list(self.faults),
            "preset": self.preset,
            "epochs": self.epochs,
            "max_batches": self.max_batches,
            "data": self.data,
            "replicate": self.replicate,
        }

    def key(self) -> str:
        """Settings plus code version: a cached result is reused only for the same code."""
        text = json.dumps([self.describe(), code_version()], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def train_args(self, out: Path, stall_after: float) -> list[str]:
        args = ["train", *to_cli_args(self.settings), "--preset", self.preset, "--epochs", str(self.epochs),
                "--data", self.data, "--out", str(out), "--stall-after", str(stall_after), "--no-checkpoints"]
        if self.max_batches is not None:
            args += ["--max-batches", str(self.max_batches)]
        for fault in self.faults:
            args += ["--fault", fault]
        return args + ["--quiet"]


@functools.cache
def code_version() -> str:
    """A hash of every source file of the packages that a trial runs."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[2]
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
