"""What the Python runtime and the operating system say about the run: garbage
collection, CPU use, threads, context switches and open descriptors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dcnprobe.analysis.signals.epochs import EpochSignal
from dcnprobe.analysis.signals.steady import SteadyBatches
from dcnprobe.analysis.stats import Slope, linear_slope, mad_outliers
from dcnprobe.runs import Run


@dataclass(frozen=True)
class Gc:
    seconds: float  # GC seconds over the steady batches
    share: float  # of batch time
    trend: Slope  # GC seconds per batch against the step
    gen2_collections: int  # steady batches that ran a generation-2 collection
    outlier_batches: int  # the slowest batches (MAD outliers)
    outliers_with_gen2: int  # ... of which ran a generation-2 collection
    gen2_rate: float  # base rate of generation-2 collections per batch
    max_gc_s: float
    # Collections per generation over the run, from the collector's own counters where the
    # sampler read them (None: not recorded). Generation 2 never running while the heap
    # grows is a collector switched off or starved.
    gen0_runs: int | None
    gen2_runs: int | None


@dataclass(frozen=True)
class Cpu:
    cores: int
    system_share: float  # kernel share of the main process's CPU time
    max_threads: int  # main process + workers, at the busiest sample
    involuntary_switches_per_s: float  # main process
    utilisation: float  # main process CPU over wall time and all cores


@dataclass(frozen=True)
class Fds:
    """Open descriptors: all processes together (main + workers) in the first and last
    epoch's typical sample, and `growth`, those the processes opened and kept."""

    start: int
    end: int
    growth: int


def gc(run: Run, steady: SteadyBatches) -> Gc | None:
    if steady.empty or "gc_s" not in steady:
        return None
    collections = {}
    samples = run.samples
    for generation in range(3):
        column = f"gc_count_{generation}"
        if not samples.empty and column in samples and samples[column].notna().sum() >= 2:
            values = samples[column].dropna().to_numpy(float)
            collections[generation] = int(values[-1] - values[0])
    gc_s = steady["gc_s"].to_numpy(float)
    outliers = mad_outliers(steady["total"].to_numpy(float))
    with_gen2 = steady["gc_gen2"].to_numpy() > 0 if "gc_gen2" in steady else np.zeros(len(steady), bool)
    return Gc(
        seconds=float(gc_s.sum()),
        share=float(gc_s.sum() / steady["total"].sum()),
        trend=linear_slope(steady["step"].to_numpy(float), gc_s),
        gen2_collections=int(with_gen2.sum()),
        outlier_batches=int(outliers.sum()),
        outliers_with_gen2=int((outliers & with_gen2).sum()),
        gen2_rate=float(with_gen2.mean()),
        max_gc_s=float(gc_s.max()),
        gen0_runs=collections.get(0),
        gen2_runs=collections.get(2, int(with_gen2.sum())),
    )


def cpu(run: Run) -> Cpu | None:
    samples = run.samples
    if samples.empty or "main_cpu_user" not in samples or len(samples) < 2:
        return None
    first, last = samples.iloc[0], samples.iloc[-1]
    elapsed = float(last["t"] - first["t"]) or 1.0
    user = float(last["main_cpu_user"] - first["main_cpu_user"])
    system = float(last["main_cpu_system"] - first["main_cpu_system"])
    threads = samples["main_threads"].to_numpy(float)
    workers = run.workers
    worker_threads = workers.groupby("t")["threads"].sum() if not workers.empty else pd.Series(dtype=float)
    cores = run.header.get("environment", {}).get("cpu_count") or 1
    return Cpu(
        cores=int(cores),
        system_share=system / (user + system) if user + system > 0 else 0.0,
        max_threads=int(np.nanmax(threads) + (worker_threads.max() if len(worker_threads) else 0)),
        involuntary_switches_per_s=float(last["main_ctx_involuntary"] - first["main_ctx_involuntary"]) / elapsed,
        utilisation=(user + system) / elapsed / cores,
    )


def fds(run: Run, epochs: tuple[EpochSignal, ...]) -> Fds | None:
    """A process is born holding its parent's open descriptors: a DataLoader worker forked
    while other workers are alive inherits their pipes, and a second loader's workers (an
    evaluation loader's, kept alive) add theirs. Totals over processes rise with each extra
    process, and fall again, with no leak. A leak is a process whose own count rises: the
    main process from the first epoch's typical sample to the last's, and each worker over
    its own life."""
    totals = [e.open_fds for e in epochs if e.open_fds is not None]
    samples = run.samples
    if not totals or "main_fds" not in samples:
        return None
    main = samples.dropna(subset=["main_fds"]).groupby("epoch")["main_fds"].median()
    growth = float(main.iloc[-1] - main.iloc[0]) if len(main) else 0.0
    workers = run.workers
    if not workers.empty and "fds" in workers:
        lives = workers.dropna(subset=["fds"]).sort_values("t").groupby("pid")["fds"]
        growth += float((lives.last() - lives.first()).clip(lower=0).sum())
    return Fds(totals[0], totals[-1], round(growth))
