"""`--memory`: memray injected into the running processes for the attach window.

`memray attach` stops the target under a debugger (gdb or lldb), loads memray into it and
starts a Tracker there; the target must be able to `import memray` (the same environment)
and the debugger must be allowed to trace it. Here injecting took about 10 s per
process, so all of them are injected at once, before the window starts. Captures are
aggregated (memory held at the end and at the peak, per allocation site: a small file,
and cheap for the target) and stop by themselves after the window (`--duration`). A
DataLoader worker that ends during the window exits without writing its capture (worker
processes leave through os._exit, which skips memray's exit handler).

Every failure is one line and the diagnosis goes on without it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcnprobe.profiling.memray_capture import allocation_sites
from dcnprobe.profiling.tools import ToolUnavailable, check

INJECT_TIMEOUT_S = 120
SETTLE_S = 2.0  # after a capture's duration: time for the target to write it
TOP_SITES = 5


@dataclass
class Capture:
    pid: int
    role: str
    path: Path
    injected_at: float | None = None  # monotonic time the tracker started
    problem: str | None = None


@dataclass
class MemrayWindow:
    directory: Path
    duration_s: float
    captures: list[Capture] = field(default_factory=list)

    def inject(self, processes: list[tuple[int, str]]) -> list[str]:
        """Start a tracker in each (pid, role), all at once; returns the one-line problems."""
        try:
            check("memray")
        except ToolUnavailable as exc:
            return [str(exc).replace("(skipping memray)", "(no memory capture)")]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.captures = [
            Capture(pid, role, (self.directory / f"memray-{role}-{pid}.bin").resolve())
            for pid, role in processes
        ]
        threads = [
            threading.Thread(target=self._inject, args=(c,), daemon=True) for c in self.captures
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(INJECT_TIMEOUT_S + 5)
        return [
            f"memray could not capture {c.role} {c.pid}: {c.problem}"
            for c in self.captures
            if c.problem
        ]

    def _inject(self, capture: Capture) -> None:
        command = [
            sys.executable,
            "-m",
            "memray",
            "attach",
            "--aggregate",
            "--no-compress",
            "-f",
            "--duration",
            str(max(1, round(self.duration_s))),
            "-o",
            str(capture.path),
            str(capture.pid),
        ]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=INJECT_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            capture.problem = f"memray attach did not finish in {INJECT_TIMEOUT_S} s"
            return
        if done.returncode != 0:
            capture.problem = _last_line(done.stderr or done.stdout)
            return
        capture.injected_at = time.monotonic()

    def collect(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Wait for the captures to end, then the allocation sites still holding memory at
        the end of each; returns (summaries, one-line problems)."""
        started = [c for c in self.captures if c.injected_at is not None]
        if started:
            ends = max(c.injected_at for c in started) + self.duration_s + SETTLE_S
            time.sleep(max(0.0, ends - time.monotonic()))
        summaries, problems = [], []
        for capture in started:
            if not capture.path.exists():
                problems.append(
                    f"memray wrote no capture for {capture.role} {capture.pid} (it ended during the "
                    "window, or could not write there)"
                )
                continue
            try:
                sites = allocation_sites(capture.path, leaked=True)
            except Exception as exc:  # a torn or unreadable capture must not lose the diagnosis
                problems.append(
                    f"memray capture of {capture.role} {capture.pid} is unreadable: {_last_line(str(exc))}"
                )
                continue
            top = sorted(sites.items(), key=lambda kv: -kv[1])[:TOP_SITES]
            summaries.append(
                {
                    "pid": capture.pid,
                    "role": capture.role,
                    "file": capture.path.name,
                    "held_at_end": [[site, size] for site, size in top],
                }
            )
        return summaries, problems


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
