"""Python stacks of another process, read with `py-spy dump` from outside.

py-spy reads the target's memory, which the kernel allows only to a tracer: root, the
same user where Yama's ptrace_scope is 0, or a process with CAP_SYS_PTRACE. Where it is
refused, `StacksUnavailable` carries the one line that says so and what to do; the
attach goes on without stacks.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dcnprobe.executables import find_tool
from dcnprobe.outside.frames import Frame

DUMP_TIMEOUT_S = 20
PTRACE_FIX = (
    "run the attach with sudo, or allow tracing with `sudo sysctl kernel.yama.ptrace_scope=0`, "
    "or in Docker add --cap-add SYS_PTRACE"
)
# How py-spy says the kernel refused (its own words, then the OS error it passes on), lower case.
_DENIED = ("permission denied", "operation not permitted", "os error 1)", "os error 13)")


class StacksUnavailable(Exception):
    """py-spy cannot read the run's stacks; the message is the one line to show."""


@dataclass(frozen=True)
class ThreadStack:
    name: str
    tid: int | None
    active: bool
    frames: tuple[Frame, ...]  # innermost first

    @property
    def is_main(self) -> bool:
        return self.name == "MainThread"


@dataclass(frozen=True)
class Dump:
    pid: int
    threads: tuple[ThreadStack, ...]

    @property
    def main_thread(self) -> ThreadStack | None:
        return next(
            (t for t in self.threads if t.is_main), self.threads[0] if self.threads else None
        )

    def text(self, header: str, cwd: str | None) -> str:
        """The dump as py-spy prints it, with file names shortened for people."""
        lines = [header]
        for thread in self.threads:
            state = "active" if thread.active else "idle"
            lines.append(f'Thread {thread.tid} ({state}): "{thread.name}"')
            lines += [f"    {frame.name(cwd)}" for frame in thread.frames]
        return "\n".join(lines) + "\n"


def py_spy() -> str:
    exe = find_tool("py-spy")
    if exe is None:
        raise StacksUnavailable(
            "py-spy is not installed (pip install py-spy): going on without stacks"
        )
    return exe


def dump(pid: int) -> Dump | None:
    """Every thread's stack of process `pid`, or None when it could not be read this time
    (the process ended, or py-spy caught it mid-change). Refused permission raises."""
    # Non-blocking: the run is not paused to be read. A stack read while it changes can come
    # out torn (py-spy then fails, and this dump is None); a hung process does not change.
    command = [py_spy(), "dump", "--pid", str(pid), "--json", "--full-filenames", "--nonblocking"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=DUMP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        check_permission(done.stderr + done.stdout, pid)
        return None
    try:
        threads = json.loads(done.stdout)
    except json.JSONDecodeError:
        return None
    return Dump(pid, tuple(_thread(t) for t in threads if isinstance(t, dict)))


def check_permission(message: str, pid: int) -> None:
    """Raise StacksUnavailable when py-spy's error output says the kernel refused it."""
    if any(marker in message.lower() for marker in _DENIED):
        raise StacksUnavailable(
            f"py-spy may not read process {pid} (ptrace not permitted): {PTRACE_FIX}; "
            "going on without stacks"
        )


def _thread(data: dict) -> ThreadStack:
    frames = tuple(
        Frame(f.get("name", "?"), f.get("filename") or "", f.get("line"))
        for f in data.get("frames") or []
    )
    return ThreadStack(
        name=data.get("thread_name") or "",
        tid=data.get("os_thread_id"),
        active=bool(data.get("active")),
        frames=frames,
    )


def write_dump(directory: Path, name: str, text: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return name
