"""Starting a command with the probe attached, isolated, and killing it with everything it
started.

A run is `CMD` in a new process (not a fork of dcnprobe) and a new session, so its
DataLoader workers share its process group and die with it; on Linux it also asks to be
killed when dcnprobe dies, even by SIGKILL, so that no orphaned run keeps the CPU busy.
Not every process of a run stays in its group: torchrun starts each rank in a session of
its own, so a kill also finds every descendant first (before the launcher dies and its
children are re-parented out of reach) and kills each of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import IO

import psutil

from dcnprobe.contract import AttachConfig, launch_env
from dcnprobe.errors import UsageError

_PR_SET_PDEATHSIG = 1


def start(argv: Sequence[str], config: AttachConfig, output: IO | None = None) -> subprocess.Popen:
    """Run `argv` with the probe attached; its output goes to `output` (a file), or to
    ours when None. A command that cannot be started at all is a UsageError."""
    words = list(argv)
    if words and words[0] in ("python", "python3"):
        words[0] = sys.executable  # the Python that has dcnprobe (and torch), not the first on PATH
    try:
        return subprocess.Popen(words, stdout=output, stderr=subprocess.STDOUT if output else None,
                                start_new_session=True, env=launch_env(config), preexec_fn=_die_with_parent)
    except OSError as exc:
        raise UsageError(f"cannot start {words[0]}: {exc.strerror or exc}") from None


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the run's whole process group (the command and its DataLoader workers) and
    every other process it started (torchrun's ranks, in sessions of their own)."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()


def interrupt(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Ctrl-C for the run: SIGINT to its group, so that it writes its footer, then SIGKILL
    for whatever is left after the grace period."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    kill(proc)


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGKILL when dcnprobe dies. (Its DataLoader
    workers notice that their parent is gone and exit.) Elsewhere there is no such request."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
