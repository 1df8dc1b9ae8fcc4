"""py-spy captures that never block the training thread: started and stopped from a
helper thread (PySpyRecorder waits a second for py-spy to attach, and stopping waits
for it to write its file), bounded in time, for `on_slowdown=profile`."""

from __future__ import annotations

import threading
from pathlib import Path

from dcnprobe.profiling.pyspy import PySpyRecorder
from dcnprobe.profiling.tools import ToolUnavailable


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
