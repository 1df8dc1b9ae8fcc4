"""Stall detection: a run that finishes no batch for many times its running median batch
time is declared stalled, the stacks of the main process and every worker are captured
beside the record, and the run is stopped. A hang never means waiting forever.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import statistics
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from dcnprobe.executables import find_tool

DEFAULT_STALL_FACTOR = 50.0
DEFAULT_STALL_FLOOR_S = 30.0
PY_SPY_TIMEOUT_S = 20


class StallWatchdog:
    """Calls `on_stall(waited_s, median_s)` once when progress stops for too long.

    The limit is max(floor_s, factor x median of recent batch times); for the first batch
    of each pass over the loader, whose wait includes starting workers (seconds with
    'spawn'), it is first_batch_s. The watchdog is only armed while batches are being
    iterated: validation and checkpoints between epochs may take as long as they take.
    """

    def __init__(self, on_stall: Callable[[float, float | None], None], *, factor: float = DEFAULT_STALL_FACTOR,
                 floor_s: float = DEFAULT_STALL_FLOOR_S, first_batch_s: float = 300.0, poll_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.on_stall, self.factor, self.floor_s = on_stall, factor, floor_s
        self.first_batch_s, self.poll_s, self.clock = first_batch_s, poll_s, clock
        self._recent: deque[float] = deque(maxlen=64)
        self._last = clock()
        self._armed = False
        self._first = True
        self._fired = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self) -> None:
        self._last = self.clock()
        self._armed = True
        self._first = True

    def disarm(self) -> None:
        self._armed = False

    def progress(self, batch_seconds: float) -> None:
        self._recent.append(batch_seconds)
        self._last = self.clock()
        self._first = False

    def limit(self) -> float:
        if self._first:
            return max(self.first_batch_s, self.floor_s)
        return max(self.floor_s, self.factor * statistics.median(self._recent))

    def check(self) -> bool:
        """True (once) when the run has stalled; called by the thread, or by tests."""
        if not self._armed or self._fired:
            return False
        waited = self.clock() - self._last
        if waited <= self.limit():
            return False
        self._fired = True
        self.on_stall(waited, statistics.median(self._recent) if self._recent else None)
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dcnprobe-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check()


def capture_stacks(directory: Path, main_pid: int, worker_pids: list[int], job_pids: Sequence[int] = ()) -> list[str]:
    """Dump every process's Python stacks into `directory`; returns the file names.
    `job_pids`: a distributed job's other ranks (and their workers), dumped right after the
    main process: a launcher like torchrun ends them as soon as this rank exits.

    py-spy reads another process's memory, so it needs ptrace permission (root on
    macOS; CAP_SYS_PTRACE in some containers). Native frames are tried first and dropped
    where not permitted. The main process falls back to faulthandler, which needs none.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for role, pid in [("main", main_pid), *(("job", p) for p in job_pids), *(("worker", p) for p in worker_pids)]:
        name = f"stack-{role}-{pid}.txt"
        text = py_spy_dump(pid)
        if text is None and pid == os.getpid():
            with open(directory / name, "w") as f:
                f.write("# py-spy unavailable; faulthandler dump of all threads\n")
                f.flush()
                faulthandler.dump_traceback(file=f, all_threads=True)
            written.append(name)
            continue
        (directory / name).write_text(text if text is not None else "# py-spy could not read this process (permission?)\n")
        written.append(name)
    return written


def py_spy_dump(pid: int) -> str | None:
    exe = find_tool("py-spy")
    if exe is None:
        return None
    for extra in (["--native"], []):
        try:
            done = subprocess.run([exe, "dump", "--pid", str(pid), *extra], capture_output=True, text=True,
                                  timeout=PY_SPY_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip():
            return (f"# py-spy dump {' '.join(extra)}\n" if extra else "# py-spy dump\n") + done.stdout
    return None


def kill_processes(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
