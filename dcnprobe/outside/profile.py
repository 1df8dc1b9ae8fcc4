"""One `py-spy record` over the attach window, of the main process and every process it
starts (`--subprocesses`), and what it says about each process.

Sampling is non-blocking (the run is never paused) and includes idle threads (`--idle`):
a main process blocked on its DataLoader is exactly what is looked for, and without
`--idle` py-spy drops the samples of a thread that waits. Shares are of the main
thread's samples of each process (a process's other threads, mostly idle queue feeders,
would drown it), in wall-clock terms: where the thread is, working or waiting.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcnprobe.outside.frames import FETCH_FILE, Frame, dataloader_state, innermost_own, worker_part
from dcnprobe.outside.stacks import StacksUnavailable, check_permission, py_spy

RATE = 20
START_WAIT_S = 0.5  # py-spy refuses at once (well within this) when it may not read the process
STOP_TIMEOUT_S = 30
TOP = 5
_PROCESS = re.compile(r"^process (?P<pid>\d+):")


class WindowRecorder:
    def __init__(self, rate: int = RATE) -> None:
        self.rate = rate
        self._proc: subprocess.Popen | None = None
        self.output: Path | None = None
        self.log: Path | None = None

    def start(self, pid: int, output: Path) -> None:
        """Start sampling; StacksUnavailable (one line) when py-spy cannot."""
        exe = py_spy()
        output.parent.mkdir(parents=True, exist_ok=True)
        self.output, self.log = output, output.with_suffix(".log")
        command = [
            exe,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--idle",
            "--nonblocking",
            "--full-filenames",
            "--format",
            "raw",
            "--rate",
            str(self.rate),
            "--output",
            str(output),
        ]
        with open(self.log, "w") as log:
            self._proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline and self._proc.poll() is None:
            time.sleep(0.05)
        if self._proc.poll() is not None:
            message = self.log.read_text(errors="replace")
            self._proc = None
            check_permission(message, pid)
            last = message.strip().splitlines()[-1] if message.strip() else "no output"
            raise StacksUnavailable(
                f"py-spy record did not start ({last}): no profile of the window"
            )

    def stop(self) -> Path | None:
        """Stop sampling (SIGINT makes py-spy write its file); the raw file, if written."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        return self.output if self.output is not None and self.output.exists() else None


@dataclass
class ProcessProfile:
    pid: int
    samples: int = 0  # all threads
    main_samples: int = 0  # the main thread
    leaves: Counter | None = None  # innermost function of the main thread -> samples
    own: Counter | None = None  # innermost frame in the program's own code -> samples
    dataloader: Counter | None = None  # 'waiting' / 'loading' -> main-thread samples
    fetching: int = (
        0  # main-thread samples in a DataLoader fetch (the dataset's and collate's code)
    )

    def to_dict(self, role: str, cwd: str | None) -> dict[str, Any]:
        n = max(self.main_samples, 1)

        def top(counter: Counter | None) -> list[list[Any]]:
            return [
                [name, round(count / n, 4)]
                for name, count in (counter or Counter()).most_common(TOP)
            ]

        dl = self.dataloader or Counter()
        return {
            "pid": self.pid,
            "role": role,
            "samples": self.samples,
            "main_thread_samples": self.main_samples,
            "top_functions": top(self.leaves),
            "top_own_code": top(self.own),
            "dataloader_next_share": round((dl["waiting"] + dl["loading"]) / n, 4),
            "waiting_for_workers_share": round(dl["waiting"] / n, 4),
            "fetching_share": round(self.fetching / n, 4),
        }


def parse_raw(text: str, cwd: str | None = None) -> dict[int, ProcessProfile]:
    """py-spy raw output ('process 1:"cmd";process 7:"cmd";root;...;leaf COUNT' per line,
    root first; a child's stacks are prefixed with its parents') by process."""
    profiles: dict[int, ProcessProfile] = {}
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        pid = None
        while parts and (match := _PROCESS.match(parts[0])):
            pid = int(match.group("pid"))
            parts.pop(0)
        if pid is None:
            continue
        n = int(count)
        profile = profiles.setdefault(
            pid, ProcessProfile(pid, leaves=Counter(), own=Counter(), dataloader=Counter())
        )
        profile.samples += n
        frames = [Frame.parse(p) for p in parts]
        if not frames or frames[0].is_thread_root:
            continue  # a thread other than the main one
        profile.main_samples += n
        innermost = frames[::-1]
        profile.leaves[innermost[0].name(cwd, with_line=False)] += n
        inner = worker_part(innermost)
        own = innermost_own(inner)
        if any(f.file.endswith(FETCH_FILE) for f in inner):
            profile.fetching += n
        if own is not None:
            profile.own[own.name(cwd, with_line=False)] += n
        state = dataloader_state(innermost)
        if state is not None:
            profile.dataloader[state] += n
    return profiles


def summarise(raw: Path, roles: dict[int, str], cwd: str | None) -> list[dict[str, Any]]:
    """Each process's profile, main process first, then workers, then the rest."""
    profiles = parse_raw(raw.read_text(errors="replace"), cwd)
    order = {"main": 0, "worker": 1}
    return [
        p.to_dict(roles.get(p.pid, "other"), cwd)
        for p in sorted(
            profiles.values(), key=lambda p: (order.get(roles.get(p.pid, "other"), 2), p.pid)
        )
    ]


def shortened(stacks: dict[tuple[str, ...], int], cwd: str | None) -> dict[tuple[str, ...], int]:
    """Collapsed stacks with file names shortened for people (process frames kept as they are)."""
    result: dict[tuple[str, ...], int] = {}
    for frames, count in stacks.items():
        key = tuple(f if _PROCESS.match(f) else Frame.parse(f).name(cwd) for f in frames)
        result[key] = result.get(key, 0) + count
    return result
