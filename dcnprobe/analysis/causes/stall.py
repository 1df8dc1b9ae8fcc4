"""A run that stopped making progress: where every process waits, from its stacks."""

from __future__ import annotations

import sys
from pathlib import Path

from dcnprobe.analysis import thresholds as th
from dcnprobe.analysis.causes.registry import Finding, cause
from dcnprobe.analysis.signals import Signals


@cause("stall",
       sees="no batch finishes for far longer than usual; the stacks of the main process and every worker are "
            "written beside the record.",
       fix="read the stacks written beside the record: the frame each process waits in names the lock, queue or "
           "I/O; for fork-with-threads deadlocks use persistent workers or the 'spawn' start method",
       reference="none in the design table; the stacks come from `py-spy dump` (github.com/benfred/py-spy).")
def stall(s: Signals, run_dir: Path | None) -> Finding | None:
    if not s.stalls and s.status != "stalled":
        return None
    evidence = []
    for record in s.stalls:
        median = record.get("median_batch_s")
        evidence.append(
            f"no batch finished for {record['waited_s']:.1f} s at epoch {record['epoch']} batch {record['batch']}"
            + (f" (median batch {median:.3f} s)" if median else "")
        )
        for name in record.get("stacks", []):
            where = blocked_at(run_dir / "stacks" / name) if run_dir else None
            if where:
                evidence.append(f"{name}: {where}")
    return Finding("stall", th.SCORE_STALL, tuple(evidence) or ("the run ended with status 'stalled'",))


def blocked_at(path: Path) -> str | None:
    """Where a py-spy dump's main thread is: its innermost frame outside the standard
    library (the caller that matters), and the native call it waits in, if any."""
    if not path.is_file():
        return None
    python_frames, native = [], []
    in_main = False
    for line in path.read_text().splitlines():
        if line.startswith("Thread "):
            if in_main:
                break
            in_main = "MainThread" in line
        elif in_main and line.startswith("    "):
            frame = line.strip()
            if ".py:" in frame:
                python_frames.append(frame)
            elif not python_frames:
                native.append(frame.split(" ")[0])
    own = [f for f in python_frames if not _is_stdlib(f)]
    if not own:
        return None
    waits = [n for n in native if any(w in n.lower() for w in ("acquire", "poll", "wait", "select", "read"))]
    return f"in {own[0]}" + (f", waiting in {waits[-1]}" if waits else "")


def _is_stdlib(frame: str) -> bool:
    """'Queue.get (multiprocessing/queues.py:113)' is the standard library's."""
    where = frame[frame.rfind("(") + 1:]
    top = where.split("/")[0].split(".py")[0]
    return top in sys.stdlib_module_names
