"""Profilers switched on and off at epoch boundaries, inside the training process.

A plan says which tools run in which epoch: `dcnprobe profile-epoch 3` profiles epoch 3
and epoch 1 as the baseline; the overhead benchmark alternates tools with bare epochs.
The profiler is a probe listener, so it works the same under the built-in trainer, a
script using the Probe API, or an unmodified script with the probe attached from outside.
Profilers cover the epoch's training batches only (not validation). A tool that cannot
run here is dropped with one line saying what to do; the others still run.

What each epoch produced is written to `OUT/manifest.json` as it is produced, so the
launcher, in another process, builds the report from files.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcnprobe.hooks import ProbeListener
from dcnprobe.profiling.memray_capture import MemrayCapture
from dcnprobe.profiling.pyspy import PySpyRecorder
from dcnprobe.profiling.tools import ToolUnavailable, check
from dcnprobe.profiling.torch_capture import TorchCapture

MANIFEST = "manifest.json"
ORDER = ("pyspy", "memray", "torch")  # samplers first, exporters last: no tool records another's clean-up


def _warn(line: str) -> None:
    print(f"dcnprobe: note: {line}", file=sys.stderr, flush=True)


class EpochProfiler(ProbeListener):
    def __init__(self, plan: Mapping[int, tuple[str, ...]], out: Path, warn: Callable[[str], None] = _warn,
                 torch_active: int = 5) -> None:
        self.plan = {int(e): tuple(t) for e, t in plan.items()}
        self.out, self.warn, self.torch_active = Path(out), warn, torch_active
        self.unavailable: dict[str, str] = {}
        self.artefacts: dict[int, dict[str, Any]] = {}  # epoch -> tool -> what it produced
        self._running: dict[str, Any] = {}
        self._epoch: int | None = None
        for tool in sorted({t for tools in self.plan.values() for t in tools}, key=ORDER.index):
            try:
                check(tool)
            except ToolUnavailable as exc:
                self._drop(tool, str(exc))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EpochProfiler:
        """From the attach config's `profile` entry: {"epochs": {"2": ["pyspy"]}, "out": DIR}."""
        return cls({int(e): tuple(t) for e, t in config["epochs"].items()}, Path(config["out"]),
                   torch_active=int(config.get("torch_active", 5)))

    def _drop(self, tool: str, message: str) -> None:
        if tool not in self.unavailable:
            self.unavailable[tool] = message
            self.warn(message)
            self._write_manifest()

    def tools_for(self, epoch: int) -> tuple[str, ...]:
        return tuple(t for t in self.plan.get(epoch, ()) if t not in self.unavailable)

    def on_epoch_start(self, epoch: int) -> None:
        self._epoch = epoch
        tools = self.tools_for(epoch)
        if not tools:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        for tool in tools:
            base = self.out / f"epoch{epoch}-{tool}"
            try:
                if tool == "pyspy":
                    recorder = PySpyRecorder()
                    recorder.start(base.with_suffix(".collapsed.txt"))
                    self._running[tool] = recorder
                elif tool == "memray":
                    capture = MemrayCapture()
                    capture.start(base.with_suffix(".bin"))
                    self._running[tool] = capture
                elif tool == "torch":
                    capture = TorchCapture(active=self.torch_active)
                    capture.start(base)
                    self._running[tool] = capture
            except ToolUnavailable as exc:
                self._drop(tool, str(exc))

    def on_batch(self, record: Mapping[str, Any]) -> None:
        capture = self._running.get("torch")
        if capture is not None:
            capture.step()

    def on_epoch_end(self, epoch: int) -> None:
        if not self._running:
            return
        produced: dict[str, Any] = {}
        for tool, running in sorted(self._running.items(), key=lambda item: ORDER.index(item[0])):
            base = self.out / f"epoch{epoch}-{tool}"
            if tool == "pyspy":
                produced[tool] = running.stop()
                if produced[tool] is None:
                    self._drop(tool, "py-spy wrote no samples for this epoch (skipping py-spy)")
            elif tool == "memray":
                running.stop()
                produced[tool] = base.with_suffix(".bin")
            elif tool == "torch":
                running.stop()
                produced[tool] = TorchResult(running.files, running.operators)
        self._running = {}
        self.artefacts[epoch] = {k: v for k, v in produced.items() if v is not None}
        self._write_manifest()

    def on_finish(self, status: str) -> None:
        if self._running and self._epoch is not None:  # the run ended inside a profiled epoch
            self.on_epoch_end(self._epoch)

    def _write_manifest(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        data = {
            "unavailable": self.unavailable,
            "epochs": {str(e): {tool: _to_json(v) for tool, v in tools.items()} for e, tools in self.artefacts.items()},
        }
        tmp = self.out / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.out / MANIFEST)


@dataclass
class TorchResult:
    files: dict[str, Path] = field(default_factory=dict)
    operators: dict[str, float] = field(default_factory=dict)  # self CPU microseconds per active step


@dataclass
class Profiles:
    """What a profiled run produced, read back from its manifest."""

    unavailable: dict[str, str]
    artefacts: dict[int, dict[str, Any]]  # epoch -> "pyspy"/"memray": Path, "torch": TorchResult


def _to_json(value: Any) -> Any:
    if isinstance(value, Path):
        return value.name
    if isinstance(value, TorchResult):
        return {"files": {k: p.name for k, p in value.files.items()}, "operators": value.operators}
    return value


def read_profiles(out: Path) -> Profiles:
    """The manifest an EpochProfiler wrote under `out`; empty when none ran."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return Profiles({}, {})
    data = json.loads(path.read_text())
    artefacts: dict[int, dict[str, Any]] = {}
    for epoch, tools in data.get("epochs", {}).items():
        entry: dict[str, Any] = {}
        for tool, value in tools.items():
            if tool == "torch":
                entry[tool] = TorchResult({k: path.parent / n for k, n in value["files"].items()}, value["operators"])
            else:
                entry[tool] = path.parent / value
        artefacts[int(epoch)] = entry
    return Profiles(dict(data.get("unavailable", {})), artefacts)
