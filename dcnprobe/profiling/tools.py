"""Which profilers can run here, and the one line that says what to do when one cannot."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import sys

from dcnprobe.executables import find_tool

TOOLS = ("pyspy", "memray", "torch")


class ToolUnavailable(Exception):
    """A profiler that cannot run here; the message is the one line to show."""


def check(tool: str) -> None:
    if tool == "pyspy" and find_tool("py-spy") is None:
        raise ToolUnavailable("py-spy is not installed: pip install py-spy (skipping py-spy)")
    if tool == "memray":
        if sys.platform == "win32":
            raise ToolUnavailable("memray does not run on Windows (skipping memray)")
        if importlib.util.find_spec("memray") is None:
            raise ToolUnavailable("memray is not installed: pip install memray (skipping memray)")


def allow_ptrace_from_children() -> None:
    """py-spy runs as our child and reads our memory. Under Linux's Yama ptrace_scope=1 a
    child may not trace its parent unless the parent says so (PR_SET_PTRACER)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PTRACER, _PR_SET_PTRACER_ANY, 0, 0, 0)


_PR_SET_PTRACER = 0x59616D61
_PR_SET_PTRACER_ANY = ctypes.c_ulong(-1).value

PERMISSION_HINT = ("py-spy cannot read the training process (ptrace not permitted): on macOS run as root "
                   "(sudo), in Docker add --cap-add SYS_PTRACE, on Linux check /proc/sys/kernel/yama/ptrace_scope")
