"""A clean training run must not get slower or grow: (a) the epoch-2 / epoch-1 median
batch-time ratio, and (c) memory growth per epoch of the main process plus its
DataLoader workers. Measured on real runs in fresh processes, analysed by dcnprobe."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from dcnprobe.analysis.signals import steady_batches
from dcnprobe.analysis.stats import ratio_ci
from dcnprobe.harness import TrialSpec, run_trial
from dcnprobe.records import read_run
from dcnprobe.settings import Settings

MB = 1 << 20


def epoch_ratio(faults: tuple[str, ...] = (), max_batches: int = 100, data: str = "synthetic",
                batch_size: int = 4096) -> dict[str, Any]:
    """The ratio of a 2-epoch run with default settings (plus any planted faults)."""
    spec = TrialSpec(settings=Settings(device="cpu", batch_size=batch_size), faults=faults, epochs=2,
                     max_batches=max_batches, data=data)
    with tempfile.TemporaryDirectory() as out:
        result = run_trial(spec, Path(out))
        steady = steady_batches(read_run(out).batches)
    # The median ratio itself, whichever statistic the analysis chose to report.
    first, second = (steady.loc[steady["epoch"] == e, "total"].to_numpy() for e in (1, 2))
    ratio, low, high = ratio_ci(first, second, "median")
    return {"value": ratio, "unit": "ratio",
            "detail": {"ratio_ci": [low, high], "status": result.status, "faults": list(faults),
                       "cause": result.cause, "stopped": result.stopped, "batches": [len(first), len(second)]}}


def memory_growth(max_batches: int = 100) -> dict[str, Any]:
    """MB per epoch, main process (glibc in use) plus every worker (USS), 2 persistent workers."""
    spec = TrialSpec(settings=Settings(device="cpu", num_workers=2, persistent_workers=True), epochs=3,
                     max_batches=max_batches)
    with tempfile.TemporaryDirectory() as out:
        run_trial(spec, Path(out))
        run = read_run(out)
    memory = run.memory.dropna(subset=["workers_uss"])
    per_epoch = memory.groupby("epoch")[["malloc_in_use", "workers_uss"]].last()
    # Epoch 1 includes warm-up; growth is judged from the end of epoch 1 onwards.
    steady = per_epoch.loc[per_epoch.index >= 1]
    epochs = len(steady) - 1
    growth = (steady.iloc[-1] - steady.iloc[0]) / max(epochs, 1) / MB if epochs else steady.iloc[0] * 0
    return {"value": float(growth.sum()), "unit": "MB/epoch",
            "detail": {"main_in_use_mb_per_epoch": float(growth["malloc_in_use"]),
                       "workers_uss_mb_per_epoch": float(growth["workers_uss"]), "epochs": int(epochs)}}


def run(profile: str) -> dict[str, Any]:
    batches = 100 if profile == "quick" else 200
    return {"epoch_ratio": epoch_ratio(max_batches=batches), "memory_growth": memory_growth(max_batches=batches // 2)}
