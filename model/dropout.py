"""Dropout whose masks are drawn fast on the CPU.

PyTorch's CPU dropout decides each element with its own draw from the default mt19937
generator, one element at a time under the generator's lock: ATen's serial Bernoulli
kernel, two 32-bit draws per element, on every CPU that does not take its Intel-MKL path
(this machine's AMD EPYC among them). On the trainer's step that was a third of the time:
6 masks of 4096 x 192 cost 61 ms of a 190 ms step on 2 threads, while the other core
waited. FuxiCTR's DCNv3 pays the same.

Here a mask's keep decisions come from numpy's PCG64, seeded by one 64-bit draw from
torch's default generator, 16 random bits per element: about 10 ms for the same 6 masks.
Seeding from torch's generator keeps what the trainer promises: torch.manual_seed fixes
every mask, and a run resumed from a checkpoint (which saves torch's generator state)
draws the masks it would have drawn. The keep probability is rounded to 1/65536
(0.8 -> 0.800003) and the kept elements are scaled by the reciprocal of the rounded
probability, so a mask's expectation stays exactly 1, as F.dropout's.

On other devices masks come from the device's own Bernoulli, which is already fast there.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

RESOLUTION = 1 << 16  # 16 random bits decide an element


def keep_masks(shape: tuple[int, ...], keep: float, device: torch.device) -> torch.Tensor:
    """A float32 tensor of `shape`: 0 where dropped, 1/keep where kept, each element kept
    with probability `keep` (0 < keep <= 1)."""
    return fill_keep_mask_(torch.empty(shape, device=device), keep)


def fill_keep_mask_(out: torch.Tensor, keep: float) -> torch.Tensor:
    """keep_masks into `out` (a contiguous float tensor), which it returns."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if keep == 1.0:
        return out.fill_(1.0)
    if out.device.type != "cpu":
        return out.bernoulli_(keep).div_(keep)
    threshold = max(1, round(keep * RESOLUTION))
    count = out.numel()
    # One draw from torch's generator seeds the mask: manual_seed and a restored
    # generator state decide it, as they decide torch's own dropout.
    seed = int(torch.empty((), dtype=torch.int64).random_())
    words = np.random.PCG64(seed).random_raw((count + 3) // 4)  # 4 x 16 bits per word
    kept = torch.from_numpy(words.view(np.uint16)[:count] < threshold)
    return out.copy_(kept.view(out.shape)).mul_(RESOLUTION / threshold)


class Dropout(nn.Dropout):
    """nn.Dropout drawing its masks with keep_masks (same argument, same state_dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p >= 1.0:
            return x * 0.0
        return x * keep_masks(tuple(x.shape), 1.0 - self.p, x.device)
