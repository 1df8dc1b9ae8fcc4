"""A child memory cgroup for the current process: join it, limit it, read what it holds,
leave it. Used by the memory-knee scenario to make memory run out for real.

cgroup v2 (`memory.high`: reclaim above it, no OOM kill) is used where this process's
group delegates the memory controller to children; otherwise cgroup v1
(`memory.limit_in_bytes`). Either needs write access to the hierarchy (root, or a
delegated subtree). Without one, find_memory_group() says why, in one line.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
PREFIX = "dcnprobe-knee-"


class MemoryGroup:
    def __init__(self, parent: Path, version: int) -> None:
        self.parent, self.version = parent, version
        self.path = parent / f"{PREFIX}{os.getpid()}"

    def join(self) -> None:
        _remove_stale(self.parent)
        self.path.mkdir(exist_ok=True)
        (self.path / "cgroup.procs").write_text(str(os.getpid()))  # the whole process, every thread

    def limit(self, nbytes: int) -> None:
        name = "memory.high" if self.version == 2 else "memory.limit_in_bytes"
        (self.path / name).write_text(str(int(nbytes)))

    def usage(self) -> int:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return int((self.path / name).read_text())

    def file_bytes(self) -> int:
        """Page cache charged to the group: what the limit can still take back without swap."""
        key = "file" if self.version == 2 else "cache"
        for line in (self.path / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
        return 0

    def leave(self) -> None:
        try:
            (self.parent / "cgroup.procs").write_text(str(os.getpid()))
            self.path.rmdir()  # charges left behind go to the parent
        except OSError:
            pass  # a group that cannot be removed now is removed by the next join (_remove_stale)


def find_memory_group() -> tuple[MemoryGroup | None, str]:
    """A group this process can create a limited child of, or None and the reason."""
    own = _own_groups()
    if "" in own:  # cgroup v2 entry "0::/path"
        for root in V2_ROOTS:
            parent = root / own[""].lstrip("/")
            controls = parent / "cgroup.subtree_control"
            if controls.is_file() and "memory" in controls.read_text().split() and os.access(parent, os.W_OK):
                return MemoryGroup(parent, 2), ""
    if "memory" in own and (V1_ROOT / "memory.limit_in_bytes").is_file():
        parent = V1_ROOT / own["memory"].lstrip("/")
        if parent.is_dir() and os.access(parent, os.W_OK):
            return MemoryGroup(parent, 1), ""
        return None, f"no write access to the memory cgroup {parent} (needs root or a delegated subtree)"
    return None, "no memory cgroup controller this process can use (cgroup v2 memory not delegated, no cgroup v1 memory)"


def _own_groups() -> dict[str, str]:
    """controller -> this process's group path, from /proc/self/cgroup ('' for cgroup v2)."""
    groups = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return groups
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


def _remove_stale(parent: Path) -> None:
    """Groups left by runs that were killed before they could clean up (empty ones only)."""
    for stale in parent.glob(f"{PREFIX}*"):
        pid = stale.name[len(PREFIX):]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):  # not empty, or gone already: leave it
                stale.rmdir()
