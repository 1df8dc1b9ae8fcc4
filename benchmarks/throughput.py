"""How fast the trainer is against the compute it cannot avoid.

- samples/s at batch 4096 with the default preset (num_workers=0);
- step_vs_compute: a full training step (load from the memory-mapped store, to device,
  forward, backward, clip, step, bookkeeping) over a pure-compute step on tensors
  already in memory, as a ratio of median batch times (target <= 1.10), measured in
  alternating blocks and judged on its bootstrap interval over (full, compute) block
  pairs, each pair levelled by its own median as the probe overhead is: two long blocks
  gave point ratios of 0.94-1.12 for the same code;
- data_wait_share: time blocked on the loader over total batch time, from the probe's
  records, with num_workers=0 (target <= 2 %).
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
from dcnprobe.benchmarks.timing import WARMUP_BATCHES, batch_times, paired_ratio, step_times
from dcnprobe.model.data.loader import EpochBatchSampler, make_dataset
from dcnprobe.model.data.source import load_data
from dcnprobe.model.trainer import TrainJob, build_model

from dcnprobe.devices import resolve_device
from dcnprobe.probe import Probe
from dcnprobe.runs import read_run
from dcnprobe.settings import Settings


def pure_compute_times(job: TrainJob, batches: int) -> np.ndarray:
    """Forward, backward, clip and step on batches already in memory: the floor."""
    settings, hp = job.settings, job.hyperparams
    device = resolve_device(settings.device)
    data = load_data(job.data)
    dataset = make_dataset(data.train, "batched")
    sampler = EpochBatchSampler(len(data.train), settings.batch_size, settings.seed, batches)
    loaded = [tuple(t.to(device) for t in dataset[index]) for index in sampler]
    model, optimizer, config = build_model(job, settings, data.schema, device)
    return step_times(model, model, optimizer, loaded, hp, config.tri_bce)


def data_wait_share(job: TrainJob) -> float:
    with tempfile.TemporaryDirectory() as out:
        batch_times(job, probe=Probe(out))
        batches = read_run(out).batches.iloc[WARMUP_BATCHES:]
    return float(batches["data_wait"].sum() / batches["total"].sum())


SETTINGS = Settings(device="cpu", num_workers=0, batch_size=4096)
BLOCKS = {"quick": (6, 12), "full": (12, 20)}  # (full, compute) block pairs, batches per block


def step_vs_compute(profile: str, faults: tuple[str, ...] = ()) -> dict[str, Any]:
    """Full step over pure compute, alternating blocks in this process; also what the gate
    measures again when unsure."""
    blocks, batches = BLOCKS[profile]
    job = TrainJob(settings=SETTINGS, epochs=1, max_batches=batches)
    segments: list[tuple[bool, list[float]]] = []
    for _ in range(blocks):
        segments.append((True, list(batch_times(job))))
        segments.append((False, list(pure_compute_times(job, batches))))
    result = paired_ratio(segments)
    result["detail"]["block_pairs"] = blocks
    return result


def run(profile: str) -> dict[str, Any]:
    step = step_vs_compute(profile)
    full_median = step["detail"]["measured_median_s"]
    job = TrainJob(settings=SETTINGS, epochs=1, max_batches=BLOCKS[profile][1])
    return {
        "samples_per_s": {"value": SETTINGS.batch_size / full_median, "unit": "samples/s",
                          "detail": {"median_batch_s": full_median, "batches": step["detail"]["batches_each"]}},
        "step_vs_compute": step,
        "data_wait_share": {"value": data_wait_share(job), "unit": "fraction", "detail": {"num_workers": 0}},
    }
