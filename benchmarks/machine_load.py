"""How busy the machine was with work other than the benchmark, while it ran.

A ratio measured within one run survives a machine that is uniformly slow, but not one
whose other load changes halfway (epoch 1 quiet, epoch 2 shared). When a measure fails,
the first question is whether the machine was shared; this answers it from the kernel's
CPU accounting (/proc/stat, Linux) minus the CPU time of this process and its children.
Elsewhere it reports nothing rather than a guess.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuMark:
    wall: float
    machine_busy: float | None  # seconds of CPU busy on the whole machine, steal included
    own: float  # seconds of CPU used by this process and its waited-for children


def mark() -> CpuMark:
    t = os.times()
    return CpuMark(time.monotonic(), _machine_busy(), t.user + t.system + t.children_user + t.children_system)


def other_load(start: CpuMark, end: CpuMark) -> float | None:
    """The share of all CPUs used by others between two marks (0 = we had the machine)."""
    if start.machine_busy is None or end.machine_busy is None:
        return None
    capacity = (end.wall - start.wall) * (os.cpu_count() or 1)
    if capacity <= 0:
        return None
    others = (end.machine_busy - start.machine_busy) - (end.own - start.own)
    return min(1.0, max(0.0, others / capacity))


def _machine_busy() -> float | None:
    try:
        fields = PROC_STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    ticks = [int(v) for v in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")
