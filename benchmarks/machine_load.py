"""Moved to dcnprobe.machine_load (the probe records the same figure); kept so that
`from benchmarks import machine_load` still works."""

import os  # noqa: F401 - tests patch machine_load.os.cpu_count

from dcnprobe.machine_load import (
    PROC_STAT,
    CpuMark,
    machine_busy_seconds,
    mark,
    other_load,
    outside_share,
)

__all__ = ["PROC_STAT", "CpuMark", "machine_busy_seconds", "mark", "other_load", "outside_share"]
