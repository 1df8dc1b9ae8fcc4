"""What an attach from outside writes into a run record (DIR/run.jsonl), beside the
record types every run has (dcnprobe.records.COLUMNS).

The header says `"attached": "pid"` and `"boundaries": {"batch": "none", "epoch": "none"}`:
from outside no batch or epoch is seen, so nothing in the record is a batch time. Its
`outside` entry describes the run found (OUTSIDE_HEADER). `memory` records are the usual
ones, with the fields only an outside view adds (see records.COLUMNS: `others`,
`attach_cpu_s`, and per process `swap`, `ctx_voluntary`, `runqueue_wait_s`).

Record types of its own (readers that do not know them skip them):
    stacks    one round of py-spy dumps: per process its role, the file written under
              DIR/stacks/ and its main thread's frames (innermost first, full file names)
    profile   the py-spy record of the window, summarised per process (profile.py)
    memray    the --memory captures: per process the sites still holding memory at the end
    notes     one-line problems met on the way (no ptrace permission, memray refused)
A `stall` record (records.COLUMNS) is written when the run is found stalled, with
`seen_from: "outside"`; then `epoch` and `batch` are null.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

from dcnprobe.outside.tree import Target
from dcnprobe.records import RUN_FILE, SCHEMA_VERSION

ATTACHED_PID = "pid"  # the header's `attached` value: the in-process attach writes true
STACKS = "stacks"
PROFILE = "profile"
MEMRAY = "memray"
NOTES = "notes"
NO_BOUNDARIES = {"batch": "none", "epoch": "none"}

OUTSIDE_HEADER = {
    "given_pid": "the PID the user named (the main process or a worker)",
    "given_role": "what it is in the run: main or worker",
    "main_pid": "the training script's process, whose children are the workers",
    "command": "its command line, as /proc gives it",
    "cwd": "its working folder (null if unreadable)",
    "user": "its owner",
    "window_s": "seconds asked to observe",
    "interval_s": "seconds between samples",
    "started_at": "wall-clock time the window began (time.time())",
    "uss": "whether USS could be read",
    "rerun": "the command that would measure batch times",
}


def header(target: Target, window_s: float, interval_s: float, uss: bool) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pid": target.main_pid,
        "argv": list(target.argv),
        "device": None,  # not visible from outside
        "sync": None,
        "sample_interval": interval_s,
        "phases": [],
        # Not environment.describe(): that imports torch, seconds of CPU taken from the run observed.
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "hostname": socket.gethostname(),
            "cpu_count": os.cpu_count(),
        },
        "settings": {},
        "attached": ATTACHED_PID,
        "boundaries": dict(NO_BOUNDARIES),
        "outside": {
            "given_pid": target.given_pid,
            "given_role": target.given_role,
            "main_pid": target.main_pid,
            "command": target.command,
            "cwd": target.cwd,
            "user": target.user,
            "window_s": window_s,
            "interval_s": interval_s,
            "started_at": time.time(),
            "uss": uss,
            "rerun": target.rerun(),
        },
    }


def is_outside(header: dict[str, Any]) -> bool:
    return header.get("attached") == ATTACHED_PID


def is_outside_dir(directory: str | Path) -> bool:
    """Whether DIR/run.jsonl was written by `dcnprobe attach PID` (reads its first line only)."""
    try:
        with open(Path(directory) / RUN_FILE, encoding="utf-8", errors="replace") as f:
            first = json.loads(f.readline() or "{}")
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(first, dict) and first.get("type") == "header" and is_outside(first)
