"""Which process of a launched command records: the first to claim the run directory.

Every Python process of the command inherits the launcher's environment, so a training
script's nested helpers (a `python prepare.py` it runs, a wrapper that itself starts the
real training) get the agent too. The first of them to start training creates the claim
file, atomically (O_EXCL), and records; the others find it taken and stay out of the way.
The file is named by the launch, so a directory reused by a later launch holds no stale claim.
"""

from __future__ import annotations

import os
from pathlib import Path


def claim_path(run_dir: str | Path, launch_id: str) -> Path:
    return Path(run_dir) / f".attach-{launch_id}.claim"


def claim_run(run_dir: str | Path, launch_id: str) -> bool:
    """True for the one process that gets the run; False for every later one."""
    path = claim_path(run_dir, launch_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    return True
