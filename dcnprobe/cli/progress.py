"""Progress lines for long work: rewritten in place on a terminal, every few seconds in a log."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, stream: TextIO | None = None, interval: float | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (0.5 if self.tty else 15.0)
        self._last = 0.0
        self._shown = False

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self._shown = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False


class BatchProgress:
    """on_batch callback for the trainer: 'epoch 2: 120/514 batches, 8.1 batch/s'."""

    def __init__(self, line: ProgressLine | None = None) -> None:
        self.line = line or ProgressLine()
        self._epoch = 0
        self._start = 0.0
        self._first = 0

    def __call__(self, epoch: int, done: int, total: int) -> None:
        now = time.monotonic()
        if epoch != self._epoch:  # the first batch of an epoch starts the rate clock
            self._epoch, self._start, self._first = epoch, now, done
            return
        rate = (done - self._first) / (now - self._start) if now > self._start else 0.0
        self.line.show(f"epoch {epoch}: {done}/{total} batches, {rate:.1f} batch/s")

    def clear(self) -> None:
        self.line.clear()
