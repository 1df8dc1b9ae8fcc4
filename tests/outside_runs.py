"""Training runs started without dcnprobe, for `dcnprobe attach PID` to find: the real
examples/per_sample_loop.py in a session of its own (so that stopping it stops its
DataLoader workers too), logging the end of each batch so a test knows it is training."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# A run whose persistent DataLoader workers keep every sample they serve (per_sample_loop.py
# --fault worker-leak), long enough to attach to in the middle.
LEAKING_WORKERS = ("--fault", "worker-leak", "--workers", "2", "--persistent-workers", "--hidden", "64",
                   "--epochs", "1000")


def batches_logged(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


@contextlib.contextmanager
def training(
    tmp_path: Path, *args: str, after_batches: int = 3, timeout: float = 120
) -> Iterator[subprocess.Popen]:
    """`python examples/per_sample_loop.py ARGS --log-batches FILE`, yielded once it has
    finished `after_batches` batches; stopped (with its workers) on the way out."""
    log = tmp_path / "batches.txt"
    command = [
        sys.executable,
        str(EXAMPLES / "per_sample_loop.py"),
        *args,
        "--log-batches",
        str(log),
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + timeout
        while batches_logged(log) < after_batches:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the training script ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {after_batches} batches in {timeout} s")
            time.sleep(0.1)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def workers_of(pid: int, timeout: float = 30) -> list[int]:
    """The DataLoader worker PIDs of a running script (torch names them pt_data_worker)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [c.pid for c in psutil.Process(pid).children() if c.name() == "pt_data_worker"]
        if found:
            return sorted(found)
        time.sleep(0.1)
    raise RuntimeError(f"process {pid} started no DataLoader workers")
