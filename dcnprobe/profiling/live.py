"""py-spy in the training process's own run, for `on_slowdown=profile`: a short capture in
epoch 1 as the baseline, then the slow epoch once the early warning finds it; DIR/profile.md
compares the two, written by a child process (`python -m dcnprobe.profiling DIR`) after the
run so that the training process never loads the record reader.

Captures never block the training thread: they are started and stopped from helper threads
(PySpyRecorder waits a second for py-spy to attach, and stopping waits for it to write its
file), and bounded in time.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dcnprobe.contract import ENV
from dcnprobe.executables import python_module
from dcnprobe.processes import run_helper
from dcnprobe.profiling.pyspy import PySpyRecorder
from dcnprobe.profiling.tools import ToolUnavailable

PROFILES_DIR = "profiles"
LIVE_FILE = "live.json"  # what the live captures produced, for the report built after the run
PROFILE_REPORT_TIMEOUT_S = 300.0


class LiveProfiler:
    """py-spy for `on_slowdown=profile`: a short baseline in epoch 1 (after its warm-up, so
    that worker start-up is not what gets compared), then the slow epoch once found."""

    def __init__(self, run_dir: Path, clock: Callable[[], float], emit: Callable[[str], None],
                 baseline_s: float, target_s: float, finish_wait_s: float = 10.0) -> None:
        self.out = Path(run_dir) / PROFILES_DIR
        self.clock, self.emit, self.baseline_s, self.target_s = clock, emit, baseline_s, target_s
        self.finish_wait_s = finish_wait_s
        self.captures: dict[int, Any] = {}  # epoch -> BackgroundCapture
        self.windows: dict[int, dict[str, Any]] = {}  # epoch -> first/last batch and seconds captured
        self._running: tuple[int, float, float] | None = None  # (epoch, started, limit)
        self._target: int | None = None

    def on_batch(self, epoch: int, batch: int) -> None:
        if epoch == 1 and 1 not in self.captures and batch >= 10:
            self._start(1, self.baseline_s, batch + 1)
        if self._running is not None:
            running_epoch, started, limit = self._running
            self.windows[running_epoch]["last_batch"] = batch
            if self.clock() - started > limit:
                self._stop()

    def slow(self, epoch: int) -> None:
        if self._target is None and 1 in self.captures:
            self._target = epoch
            if self._running is not None:
                self._stop()
            self._start(epoch, self.target_s, None)

    def on_epoch_end(self, epoch: int) -> None:
        if self._running is not None and self._running[0] == epoch:
            self._stop()

    def _start(self, epoch: int, limit: float, first_batch: int | None) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.captures[epoch] = BackgroundCapture(self.out / f"epoch{epoch}-pyspy.collapsed.txt")
        self.windows[epoch] = {"first_batch": first_batch, "last_batch": None, "started": self.clock()}
        self._running = (epoch, self.clock(), limit)

    def _stop(self) -> None:
        if self._running is None:
            return
        epoch, started, _ = self._running
        self.windows[epoch]["seconds"] = self.clock() - started
        self.captures[epoch].stop()
        self._running = None

    def finish(self, run_dir: Path) -> None:
        """Write DIR/profile.md, epoch target against epoch 1, once both captures are in."""
        self._stop()
        if self._target is None:
            return
        files = {epoch: capture.wait(self.finish_wait_s + 50) for epoch, capture in self.captures.items()}
        (self.out / LIVE_FILE).write_text(json.dumps({"target": self._target, "windows": self.windows,
                                                      "files": {e: str(p) for e, p in files.items()}}, indent=2))
        errors = [c.error for c in self.captures.values() if c.error]
        if errors or not files.get(1) or not files.get(self._target):
            self.emit(f"dcnprobe: note: no profile written: {errors[0] if errors else 'py-spy wrote no samples'}")
            return
        # The comparison reads the whole record: a child process builds it, not this one.
        env = {k: v for k, v in os.environ.items() if k != ENV}
        done = run_helper([*python_module("dcnprobe.profiling"), str(run_dir)], timeout=PROFILE_REPORT_TIMEOUT_S,
                          env=env)
        self.emit(done.stdout.strip() or done.stderr.strip() or "dcnprobe: note: no profile written")


class BackgroundCapture:
    """One py-spy recording of this process and its DataLoader workers."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.error: str | None = None
        self.result: Path | None = None
        self._recorder = PySpyRecorder()
        self._started = threading.Thread(target=self._start, name="dcnprobe-capture", daemon=True)
        self._stopped: threading.Thread | None = None
        self._started.start()

    def _start(self) -> None:
        try:
            self._recorder.start(self.out)
        except ToolUnavailable as exc:
            self.error = str(exc)

    def stop(self) -> None:
        """Ask py-spy to write its file; returns at once."""
        if self._stopped is None:
            self._stopped = threading.Thread(target=self._stop, name="dcnprobe-capture-stop", daemon=True)
            self._stopped.start()

    def _stop(self) -> None:
        self._started.join()
        self.result = self._recorder.stop()

    def wait(self, timeout: float) -> Path | None:
        """The collapsed stacks once written (stop() first), or None."""
        self.stop()
        assert self._stopped is not None
        self._stopped.join(timeout)
        return self.result
