"""Samples of a training run's processes taken from outside, in the run record's own
`memory` format (see dcnprobe.records.COLUMNS), so that every reader of records reads them.

Per process, on top of what the probe's ProcessReader reads (RSS, USS, CPU, threads,
involuntary switches, open files, page faults): swap, voluntary switches, and the time
its threads waited for a CPU while runnable (the kernel's schedstat): a run that waits
for CPUs is short of them, whether other programs or its own threads took them.

The attach's own CPU (this process and the py-spy it drives) is sampled too, so that it
is not counted as other programs' load.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

from dcnprobe.machine_load import machine_busy_seconds
from dcnprobe.outside.tree import MAIN, WORKER, Member, Tree, descendants
from dcnprobe.processes import ProcessReader, cpu_frequency_mhz, system_memory

_IS_LINUX = sys.platform.startswith("linux")


class OutsideSampler:
    def __init__(
        self, tree: Tree, *, clock: Callable[[], float] = time.monotonic, uss_every_s: float = 2.0
    ) -> None:
        self.tree = tree
        self.clock = clock
        self.t0 = clock()
        self.reader = ProcessReader(tree.main_pid)
        # USS makes the kernel walk each process's page tables (measured here: 150 ms for a
        # training process of 400 MB on a busy machine, with the process's memory map locked),
        # so it is read at most this often, RSS every sample.
        self.uss_every_s = uss_every_s
        self._uss_at: float | None = None
        # USS needs the kernel's page maps, which only the owner (or root) may read; where they
        # are closed the whole ProcessReader.stats read would fail, so it is not asked for.
        self.uss_readable = _can_read_uss(tree.main_pid)
        self.members: list[Member] = []

    def sample(self) -> dict[str, Any] | None:
        """One `memory` record, or None once the main process is gone."""
        self.members = self.tree.members()
        if not self.members:
            return None
        now = self.clock()
        with_uss = self.uss_readable and (
            self._uss_at is None or now - self._uss_at >= self.uss_every_s - 1e-6
        )
        if with_uss:
            self._uss_at = now
        record: dict[str, Any] = {"t": now - self.t0}
        main = self._stats(self.tree.main_pid, with_uss)
        if main is None:
            return None
        record.update({f"main_{k}": v for k, v in main.items()})
        record.update(system_memory())
        record["machine_busy_s"] = machine_busy_seconds()
        record["cpu_freq_mhz"] = cpu_frequency_mhz()
        record["attach_cpu_s"] = own_cpu_seconds()
        workers, others = [], []
        for member in self.members:
            if member.role == MAIN:
                continue
            stats = self._stats(member.pid, with_uss and member.role == WORKER)
            if stats is None:
                continue
            entry = {"pid": member.pid, **stats}
            if member.role == WORKER:
                workers.append(entry)
            else:
                others.append({"role": member.role, "name": member.name, **entry})
        self.reader.forget_others([m.pid for m in self.members])
        record["workers"] = workers
        record["others"] = others
        return record

    def _stats(self, pid: int, with_uss: bool) -> dict[str, Any] | None:
        stats = self.reader.stats(pid, with_uss)
        if stats is None:
            return None
        stats.update(extra_stats(pid, self.reader.handle(pid)))
        return stats


def extra_stats(pid: int, proc: psutil.Process | None) -> dict[str, Any]:
    """swap (bytes), ctx_voluntary, runqueue_wait_s (all threads, seconds since start)."""
    if not _IS_LINUX:
        switches = _safe(proc.num_ctx_switches) if proc is not None else None
        return {
            "swap": None,
            "ctx_voluntary": getattr(switches, "voluntary", None),
            "runqueue_wait_s": None,
        }
    swap = voluntary = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmSwap:"):
                    swap = int(line.split()[1]) * 1024
                elif line.startswith("voluntary_ctxt_switches:"):
                    voluntary = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {"swap": swap, "ctx_voluntary": voluntary, "runqueue_wait_s": runqueue_wait_seconds(pid)}


def runqueue_wait_seconds(pid: int) -> float | None:
    """Seconds the process's live threads have spent runnable but waiting for a CPU
    (/proc/PID/task/TID/schedstat, second field, nanoseconds). Threads that ended take
    their share with them: differences between samples are clipped at zero by readers."""
    total, read = 0, False
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
                read = True
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9 if read else None


def own_cpu_seconds() -> float:
    """CPU seconds of the attach itself and everything it started (py-spy, memray)."""
    times = psutil.Process().cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for pid in descendants(os.getpid()):
        child_times = _safe(lambda pid=pid: psutil.Process(pid).cpu_times())
        if child_times is not None:
            total += child_times.user + child_times.system
    return total


def _can_read_uss(pid: int) -> bool:
    try:
        psutil.Process(pid).memory_full_info()
    except (psutil.Error, OSError):
        return False
    return True


def _safe(fn, default=None):
    try:
        return fn()
    except (psutil.Error, OSError):
        return default
