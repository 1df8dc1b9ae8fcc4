"""The trainer's step against the same model written plainly: a gate CI can always run.

trainer_vs_fuxictr (benchmarks/reference.py) needs FuxiCTR's DCNv3 class, which no
package on PyPI ships, so CI cannot run it. This measure holds the trainer against the
model as the textbook writes it, which costs what FuxiCTR's DCNv3 costs on this CPU
(their steps measured within 1% of each other before the step work: 190 and 192 ms):

- plain: the same GatedDCNv3 parameters, each cross network run on its own with autograd
  (CrossNetwork's maths op by op, torch's own F.dropout), the deep branch and gate with
  F.dropout, torch's default AdamW; batches already in memory, so its loading is free;
- ours: the real trainer, `fit()` with its loader and bookkeeping, as in reference.py.

The ratio is plain's median step time over ours (above 1: the trainer is faster), in
alternating rounds with a bootstrap interval over round pairs (timing.paired_ratio). A
change that gives back the step work's speed-up fails the gate.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from dcnprobe.benchmarks.reference import DATA, ROUNDS, SAME_ARCHITECTURE, SETTINGS, THREADS
from dcnprobe.benchmarks.timing import batch_times, paired_ratio, step_times
from dcnprobe.model.data.loader import EpochBatchSampler, make_dataset
from dcnprobe.model.data.source import load_data
from dcnprobe.model.gated_dcnv3 import GatedDCNv3, ModelConfig, ModelOutput
from dcnprobe.model.layers import MLP, CrossNetwork
from dcnprobe.model.trainer import TrainJob, build_model
from torch import nn

# The data, batch, threads and rounds are the reference benchmark's, so that the two gates
# measure the same step.


def plain_cross(net: CrossNetwork, x0: torch.Tensor) -> torch.Tensor:
    """CrossNetwork.forward's maths, op by op, with torch's dropout."""
    x = x0
    for weight, norm, bias in zip(net.weights, net.norms, net.biases):
        h = weight(x)
        c = torch.cat([h, h * torch.relu(norm(h))], dim=-1)
        base = x0 if net.kind == "linear" else x
        x = F.dropout(base * (c + bias) + x, net.dropout.p, net.training)
    return net.logit(x).squeeze(-1)


def plain_mlp(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    for block in mlp.net:
        x = F.dropout(x, block.p, mlp.training) if isinstance(block, nn.Dropout) else block(x)
    return x


def plain_forward(model: GatedDCNv3, categorical: torch.Tensor, numeric: torch.Tensor) -> ModelOutput:
    """GatedDCNv3.forward's maths as the textbook writes it."""
    e = model.embedding(categorical, numeric).flatten(1)
    z_ecn, z_lcn = plain_cross(model.ecn, e), plain_cross(model.lcn, e)
    z_dcnv3 = 0.5 * (z_ecn + z_lcn)
    if model.deep is None:
        return ModelOutput(z_dcnv3, torch.ones_like(z_dcnv3), z_ecn, z_lcn, torch.zeros_like(z_dcnv3))
    z_deep, z_gate = plain_mlp(model.deep, e).squeeze(-1), plain_mlp(model.gate, e).squeeze(-1)
    g = torch.sigmoid(z_gate)
    return ModelOutput(g * z_dcnv3 + (1 - g) * z_deep, g, z_ecn, z_lcn, z_deep)


def plain_times(job: TrainJob, batches: list[tuple[torch.Tensor, ...]], model: GatedDCNv3,
                optimizer: torch.optim.Optimizer) -> np.ndarray:
    """Seconds of each plain step, warm-up dropped."""
    torch.set_num_threads(THREADS)  # fit() of the other side sets it per run

    def forward(categorical: torch.Tensor, numeric: torch.Tensor) -> ModelOutput:
        return plain_forward(model, categorical, numeric)

    return step_times(forward, model, optimizer, batches, job.hyperparams, job.model.tri_bce)


def compare(model: ModelConfig, profile: str, preset: str = "phase3-revised") -> dict[str, Any]:
    rounds, count = ROUNDS[profile]
    job = TrainJob(settings=SETTINGS, preset=preset, epochs=1, max_batches=count, model=model, data=DATA,
                   checkpoints=False)
    data = load_data(DATA)
    dataset = make_dataset(data.train, "batched")
    sampler = EpochBatchSampler(len(data.train), SETTINGS.batch_size, SETTINGS.seed, count)
    batches = [dataset[index] for index in sampler]
    plain_model, _, _ = build_model(job, SETTINGS, data.schema, torch.device("cpu"))
    hp = job.hyperparams
    optimizer = torch.optim.AdamW(plain_model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
    load_before = os.getloadavg()
    # (True, plain) then (False, ours) in each pair: measured/bare is plain's time over ours.
    segments: list[tuple[bool, list[float]]] = []
    for _ in range(rounds):
        segments.append((True, list(plain_times(job, batches, plain_model, optimizer))))
        segments.append((False, list(batch_times(job))))
    result = paired_ratio(segments)
    detail = result["detail"]
    result["detail"] = {
        "what": "the trainer's samples/s over the same model written plainly (above 1: the trainer is faster)",
        "ours_samples_per_s": round(SETTINGS.batch_size / detail["bare_median_s"]),
        "plain_samples_per_s": round(SETTINGS.batch_size / detail["measured_median_s"]),
        "pooled_median_ratio": detail["pooled_median_ratio"], "round_pairs": rounds,
        "batches_each": detail["batches_each"], "batch_size": SETTINGS.batch_size, "threads": THREADS,
        "preset": preset, "model": {"gated": model.gated, "tri_bce": model.tri_bce},
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    return result


def measure_same_architecture(profile: str, faults: tuple[str, ...] = ()) -> dict[str, Any]:
    return compare(SAME_ARCHITECTURE, profile)


def run(profile: str) -> dict[str, Any]:
    """Quick: FuxiCTR's architecture (the gate). Full: also the gated model."""
    results = {"trainer_vs_plain": measure_same_architecture(profile)}
    if profile == "full":
        results["gated_vs_plain"] = compare(ModelConfig(), profile)
    return results
