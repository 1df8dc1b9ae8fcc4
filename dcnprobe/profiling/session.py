"""Profilers switched on and off at epoch boundaries, as a trainer plugin.

A plan says which tools run in which epoch: `dcnprobe profile-epoch 3` profiles epoch 3
and epoch 1 as the baseline; the overhead benchmark alternates tools with bare epochs.
Profilers cover the epoch's training batches only (not validation). A tool that cannot
run here is dropped with one line saying what to do; the others still run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dcnprobe.profiling.memray_capture import MemrayCapture
from dcnprobe.profiling.pyspy import PySpyRecorder
from dcnprobe.profiling.tools import ToolUnavailable, check
from dcnprobe.profiling.torch_capture import TorchCapture
from model.plugins import TrainerPlugin


class ProfilingPlugin(TrainerPlugin):
    def __init__(self, plan: Mapping[int, tuple[str, ...]], out: Path, warn: Callable[[str], None] = print,
                 torch_active: int = 5) -> None:
        self.plan, self.out, self.warn = dict(plan), out, warn
        self.torch_active = torch_active
        self.unavailable: dict[str, str] = {}
        for tool in {t for tools in self.plan.values() for t in tools}:
            try:
                check(tool)
            except ToolUnavailable as exc:
                self._drop(tool, str(exc))
        self.artefacts: dict[int, dict[str, Any]] = {}  # epoch -> tool -> what it produced
        self._running: dict[str, Any] = {}

    def _drop(self, tool: str, message: str) -> None:
        if tool not in self.unavailable:
            self.unavailable[tool] = message
            self.warn(message)

    def tools_for(self, epoch: int) -> tuple[str, ...]:
        return tuple(t for t in self.plan.get(epoch, ()) if t not in self.unavailable)

    def on_epoch_start(self, epoch: int) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for tool in self.tools_for(epoch):
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

    def after_step(self, epoch, batch, logit, loss, label) -> None:
        capture = self._running.get("torch")
        if capture is not None:
            capture.step()

    def on_epoch_end(self, epoch: int) -> None:
        produced: dict[str, Any] = {}
        # Samplers first, exporters last: no profiler records another one's clean-up.
        order = sorted(self._running.items(), key=lambda item: ("pyspy", "memray", "torch").index(item[0]))
        for tool, running in order:
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
                produced[tool] = running
        self._running = {}
        if produced:
            self.artefacts[epoch] = produced
