"""The output of a command run with the probe attached: kept whole in a log file, and
shown on our terminal once the command has started training.

Until its first training step, the command's output is held back: a script that fails
on start (a bad argument, a missing module) then costs one line from dcnprobe, not its
traceback; the whole output stays in the log. Once the run record exists, everything
held back is shown, and the rest as it comes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO


class OutputRelay:
    def __init__(self, log: Path, started: Callable[[], bool], terminal: IO[str]) -> None:
        """`started`: whether the run record has been begun (any rank's, in a distributed run)."""
        self.log, self.started, self.terminal = log, started, terminal
        self.released = False
        self._offset = 0
        self._held: list[str] = []

    def pump(self) -> None:
        """Move whatever the command wrote since the last call."""
        if not self.released and self.started():
            self.release()
        text = self._read_new()
        if not text:
            return
        if self.released:
            self.terminal.write(text)
            self.terminal.flush()
        else:
            self._held.append(text)

    def release(self) -> None:
        self.released = True
        if self._held:
            self.terminal.write("".join(self._held))
            self.terminal.flush()
            self._held.clear()

    def last_line(self) -> str:
        """The last non-empty line the command wrote: for a crash, usually the error."""
        try:
            lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines()]
        except OSError:
            return ""
        return next((line for line in reversed(lines) if line), "")

    def _read_new(self) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return ""
        # Stop at the last newline: a line the command is still writing waits for its end.
        end = data.rfind(b"\n") + 1
        self._offset += end
        return data[:end].decode(errors="replace")

    def flush_rest(self) -> None:
        """After the command ended: whatever is left, complete lines or not."""
        text = self._read_new()
        try:
            with open(self.log, "rb") as f:
                f.seek(self._offset)
                tail = f.read().decode(errors="replace")
        except OSError:
            tail = ""
        self._offset += len(tail.encode())
        rest = text + tail
        if self.released and rest:
            self.terminal.write(rest)
            self.terminal.flush()
        elif rest:
            self._held.append(rest)
