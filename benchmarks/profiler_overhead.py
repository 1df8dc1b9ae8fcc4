"""Each profiler's overhead, as the ratio of median batch times in one run: profiled
epochs alternate with bare ones, and each profiled epoch is compared with the bare
epochs on either side of it. torch.profiler only records a few scheduled batches, so
its ratio uses those batches alone."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from dcnprobe.benchmarks.timing import median_ratio
from dcnprobe.model.trainer import TrainJob, fit

from dcnprobe.analysis.signals import steady_batches
from dcnprobe.probe import Probe
from dcnprobe.profiling.session import EpochProfiler
from dcnprobe.profiling.torch_capture import TorchCapture
from dcnprobe.runs import read_run
from dcnprobe.settings import Settings

PLAN = {2: ("pyspy",), 4: ("memray",), 6: ("torch",)}
EPOCHS = 7
TORCH = TorchCapture()  # the schedule the plugin uses: which batches of its epoch are recorded


def run(profile: str) -> dict[str, Any]:
    batches = 30 if profile == "quick" else 60
    job = TrainJob(settings=Settings(device="cpu"), epochs=EPOCHS, max_batches=batches)
    with tempfile.TemporaryDirectory() as out:
        plugin = EpochProfiler(PLAN, Path(out) / "profiles", warn=lambda line: print(f"  note: {line}"),
                               torch_active=TORCH.active)
        fit(job, probe=Probe(out, listeners=[plugin]))
        batches_frame = read_run(out).batches
    steady = steady_batches(batches_frame)
    results = {}
    for epoch, (tool,) in PLAN.items():
        if tool in plugin.unavailable:
            continue
        bare = steady[steady["epoch"].isin([epoch - 1, epoch + 1])]["total"].to_numpy()
        profiled = batches_frame[batches_frame["epoch"] == epoch]
        if tool == "torch":
            start = TORCH.wait + TORCH.warmup
            profiled = profiled[(profiled["batch"] >= start) & (profiled["batch"] < start + TORCH.active)]
        else:
            profiled = steady[steady["epoch"] == epoch]
        times = profiled["total"].to_numpy()
        results[f"{tool}_overhead"] = {
            "value": median_ratio(times, bare), "unit": "ratio",
            "detail": {"profiled_batches": int(times.size), "bare_batches": int(bare.size),
                       "profiled_median_s": float(np.median(times)), "bare_median_s": float(np.median(bare))},
        }
    return results
