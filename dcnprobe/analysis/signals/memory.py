"""Memory signals over the steady part of a run: how each series grew (main process,
glibc, the Python heap, workers, device, swap), paging, and whether batch time moved with
memory."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from dcnprobe.analysis.signals.steady import SteadyBatches
from dcnprobe.analysis.stats import linear_slope
from dcnprobe.runs import Run


@dataclass(frozen=True)
class Growth:
    """A series against the step: least-squares slope and what it adds up to."""

    per_batch: float
    growth: float  # fitted change over the steady batches
    t: float  # slope / standard error
    r2: float
    start: float
    end: float


@dataclass(frozen=True)
class Memory:
    main_rss: Growth | None = None
    python_blocks: Growth | None = None  # sys.getallocatedblocks(): the Python heap in objects
    main_in_use: Growth | None = None  # glibc bytes in use (at batch end where recorded)
    main_allocator_held: Growth | None = None  # glibc bytes free but held
    main_uss: Growth | None = None
    workers_uss: Growth | None = None
    workers_rss: Growth | None = None
    device_allocated: Growth | None = None  # CUDA
    device_reserved: Growth | None = None
    device_current: Growth | None = None  # MPS
    device_driver: Growth | None = None
    live_tensors: Growth | None = None
    swap_used: Growth | None = None
    swap_in: float | None = None  # bytes paged back in over the steady batches
    device_alloc_retries: float | None = None
    sys_available_min: float | None = None
    per_worker_growth: dict[int, float] | None = None  # each worker's growth over its life (USS, else RSS)
    major_faults: int = 0  # in the steady batches
    time_correlation: float | None = None  # of batch time with main-process RSS

    def growth(self, name: str) -> float:
        series = getattr(self, name)
        return float(series.growth) if series else 0.0

    def per_batch(self, name: str) -> float:
        series = getattr(self, name)
        return float(series.per_batch) if series else 0.0

    def retained(self) -> tuple[float, float, str]:
        """Real retention: bytes in use by the allocator (or the device), not RSS: growth,
        growth per batch, and what was read."""
        for name, label in (("device_allocated", "device memory allocated"), ("device_current", "device memory in use"),
                            ("main_in_use", "memory in use (glibc)")):
            if getattr(self, name) is not None:
                return self.growth(name), self.per_batch(name), label
        return self.growth("main_rss"), self.per_batch("main_rss"), "RSS"

    def workers_grew(self) -> float:
        """Each worker's own growth over its life, added up. (The sum over workers at each
        sample would jump whenever non-persistent workers are replaced.)"""
        return sum(max(g, 0.0) for g in (self.per_worker_growth or {}).values())

    def present(self) -> dict[str, object]:
        """The fields that were measured, for JSON."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


# Sample columns read as growth series: record column -> Memory field.
SAMPLED_SERIES = (("malloc_in_use", "main_in_use"), ("malloc_free_held", "main_allocator_held"),
                  ("main_uss", "main_uss"), ("workers_uss", "workers_uss"), ("workers_rss", "workers_rss"),
                  ("device_allocated", "device_allocated"), ("device_reserved", "device_reserved"),
                  ("device_current", "device_current"), ("device_driver", "device_driver"),
                  ("live_tensors", "live_tensors"), ("swap_used", "swap_used"))


def memory(run: Run, steady: SteadyBatches) -> Memory:
    if steady.empty:
        return Memory()
    found: dict[str, object] = {}
    step = steady["step"].to_numpy(float)
    for column, name in (("rss", "main_rss"), ("py_blocks", "python_blocks")):
        if column in steady:
            found[name] = growth_of(step, steady[column].to_numpy(float))
    if "in_use" in steady and steady["in_use"].notna().sum() >= 3:
        found["main_in_use"] = growth_of(step, steady["in_use"].to_numpy(float))
    samples = _steady_samples(run, int(steady["step"].min()))
    if not samples.empty:
        s = samples["step"].to_numpy(float)
        for column, name in SAMPLED_SERIES:
            if found.get(name) is None and column in samples and samples[column].notna().sum() >= 3:
                found[name] = growth_of(s, samples[column].to_numpy(float))
        for column in ("swap_in", "device_alloc_retries"):
            if column in samples and samples[column].notna().any():
                values = samples[column].dropna().to_numpy(float)
                found[column] = float(values[-1] - values[0])
        if "sys_available" in samples:
            found["sys_available_min"] = float(samples["sys_available"].min())
        found["per_worker_growth"] = _per_worker_growth(run, steady) or None
    found["major_faults"] = int(steady["majflt"].sum()) if "majflt" in steady else 0
    rss = steady["rss"].to_numpy(float) if "rss" in steady else None
    totals = steady["total"].to_numpy(float)
    if rss is not None and np.ptp(rss) > 0 and np.ptp(totals) > 0:
        found["time_correlation"] = float(np.corrcoef(rss, totals)[0, 1])
    return Memory(**{k: v for k, v in found.items() if v is not None})


def growth_of(x: np.ndarray, y: np.ndarray) -> Growth | None:
    keep = np.isfinite(y)
    if keep.sum() < 3:
        return None
    if not keep.all():
        x, y = x[keep], y[keep]
    slope = linear_slope(x, y)
    return Growth(slope.per_step, slope.growth, slope.t, slope.r2, float(y[0]), float(y[-1]))


def _steady_samples(run: Run, first_steady: int) -> pd.DataFrame:
    samples = run.samples
    if not samples.empty and "step" in samples:
        samples = samples[samples["step"] >= first_steady]
    if not samples.empty and "in_loop" in samples:
        samples = samples[samples["in_loop"].fillna(True).astype(bool)]  # not validation's memory
    return samples


def _per_worker_growth(run: Run, steady: SteadyBatches) -> dict[int, float]:
    """Each worker's growth from the end of the warm-up of the epoch it was born in: a
    worker started in a later epoch (not persistent) is measured once it serves batches,
    not while it imports and unpickles (a spawned worker's start is hundreds of MB)."""
    workers = run.workers
    if workers.empty:
        return {}
    column = "uss" if "uss" in workers and workers["uss"].notna().any() else "rss"
    steady_from = {epoch: group["step"].min() for epoch, group in steady.epochs()}
    first_steady = int(steady["step"].min())
    growth = {}
    for pid, rows in workers.groupby("pid"):
        born = rows["epoch"].dropna().min() if "epoch" in rows else None
        start = steady_from.get(born, first_steady) if born is not None and not pd.isna(born) else first_steady
        values = rows[rows["step"] >= start][column].dropna().to_numpy(float)
        if values.size >= 2:
            growth[int(pid)] = float(values[-1] - values[0])
    return growth
