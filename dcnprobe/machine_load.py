"""How busy the machine was with work other than ours.

A ratio measured within one run survives a machine that is uniformly slow, but not one
whose other load changes halfway (epoch 1 quiet, epoch 2 shared). The kernel's CPU
accounting (/proc/stat, Linux) says how many CPU-seconds the whole machine was busy;
less the CPU time of our own processes, the rest is someone else's. Elsewhere this
reports nothing rather than a guess.

Two ways to use it:
    start = mark(); ...; other_load(start, mark())     # this process and its waited-for children
    outside_share(busy_delta, own_delta, wall_delta, cores)   # own CPU counted by the caller
                                                              # (the probe: main process + workers)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from dcnprobe import procfs

PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuMark:
    wall: float
    machine_busy: float | None  # seconds of CPU busy on the whole machine, steal included
    own: float  # seconds of CPU used by this process and its waited-for children


def mark() -> CpuMark:
    t = os.times()
    return CpuMark(time.monotonic(), machine_busy_seconds(), t.user + t.system + t.children_user + t.children_system)


def other_load(start: CpuMark, end: CpuMark) -> float | None:
    """The share of all CPUs used by others between two marks (0 = we had the machine)."""
    if start.machine_busy is None or end.machine_busy is None:
        return None
    return outside_share(end.machine_busy - start.machine_busy, end.own - start.own, end.wall - start.wall,
                         os.cpu_count() or 1)


def outside_share(busy_s: float, own_s: float, wall_s: float, cores: int) -> float | None:
    """CPU-seconds the machine was busy beyond our own, as a share of all cores over wall_s
    (0..1). Clipped: accounting ticks and sampling edges can make the difference slightly
    negative, and a share above 1 means nothing."""
    capacity = wall_s * max(cores, 1)
    if capacity <= 0:
        return None
    return min(1.0, max(0.0, (busy_s - own_s) / capacity))


def machine_busy_seconds() -> float | None:
    """CPU-seconds the whole machine has been busy since boot, or None off Linux."""
    try:
        fields = procfs.read(PROC_STAT).split(b"\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    ticks = [int(v) for v in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")
